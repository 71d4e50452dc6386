//! Output helpers shared by CLI subcommands: tables for people, one JSON object for machines.

use std::process::ExitCode;

use std::str::FromStr;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use rust_decimal::Decimal;
use serde_json::json;

/// Exit code for "the input is invalid" (bad file, bad argument).
pub const EXIT_INVALID: u8 = 2;

/// A table with the given header, styled for terminals.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    t
}

/// Prints `value` as exactly one JSON object on stdout.
pub fn print_json(value: &serde_json::Value) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot encode JSON: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints each problem on its own line to stderr and returns exit code 2.
pub fn problems(p: &dayshift_config::Problems) -> ExitCode {
    for line in &p.0 {
        eprintln!("{line}");
    }
    ExitCode::from(EXIT_INVALID)
}

/// Prints a usage error (bad argument) and returns exit code 2.
pub fn invalid(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_INVALID)
}

/// Hours as a JSON number (negative ones too, e.g. a negative saving): an integer when
/// whole, else the exact decimal.
pub fn hours_json(h: Decimal) -> serde_json::Value {
    let n = h.normalize();
    if n.fract().is_zero()
        && let Ok(whole) = i64::try_from(n.trunc().mantissa())
    {
        json!(whole)
    } else {
        serde_json::Number::from_str(&n.to_string())
            .map(serde_json::Value::Number)
            .unwrap_or_else(|_| json!(n.to_string()))
    }
}
