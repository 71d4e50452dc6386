//! Output helpers shared by CLI subcommands: tables for people, one JSON object for machines.

use std::process::ExitCode;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

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
