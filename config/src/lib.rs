//! Typed dayshift config (`dayshift.toml`) and schedule (`schedule.toml`) files,
//! their validation with file:line:column errors, and the schedule's evaluation.

pub mod billing;
pub mod calendar;
pub mod clock;
pub mod diag;
pub mod estimate;
pub mod estimate_load;
pub mod firewall;
pub mod gguf_header;
pub mod memory;
pub mod node;
pub mod pool_fit;
pub mod protocol;
pub mod schedule;
pub mod settings;
pub mod toml_read;

pub use diag::{Problem, Problems};
pub use schedule::Schedule;
pub use settings::Config;

/// Reads a config or schedule file as UTF-8 text; failures are reported as a problem
/// at line 1, column 1 of that file.
pub fn read_source(path: &std::path::Path) -> Result<String, Problems> {
    let file = path.display().to_string();
    let fail = |message: String| {
        Problems(vec![Problem {
            file: file.clone(),
            line: 1,
            column: 1,
            field: String::new(),
            message,
        }])
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let src = String::from_utf8_lossy(e.as_bytes()).into_owned();
        let (line, column) = diag::line_col(&src, at);
        Problems(vec![Problem {
            file: file.clone(),
            line,
            column,
            field: String::new(),
            message: "the file is not valid UTF-8 text".into(),
        }])
    })
}
