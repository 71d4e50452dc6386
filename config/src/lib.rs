//! Typed dayshift config (`dayshift.toml`) and schedule (`schedule.toml`) files,
//! their validation with file:line:column errors, and the schedule's evaluation.

pub mod node;
pub mod protocol;
