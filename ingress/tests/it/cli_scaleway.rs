//! `dayshift cost estimate` with the Scaleway example (`examples/scaleway/`), run as a
//! real process of the `dayshift` binary, against a worked example under Scaleway's rule.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dayshift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dayshift"))
        .args(args)
        .output()
        .expect("run dayshift")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scaleway")
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn the_scaleway_example_passes_the_checks() {
    for (what, file) in [("config", "dayshift.toml"), ("schedule", "schedule.toml")] {
        let path = example().join(file);
        let out = dayshift(&[what, "check", &path.display().to_string()]);
        assert!(
            out.status.success(),
            "{what} check: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Worked example, by hand: the Scaleway example (one `L4-1-24G`, Mon-Fri 08:00-18:00
/// Europe/Berlin, German national holidays) in November 2026, under Scaleway's rule for
/// GPU Instances (`BillingRule::SCALEWAY`: every started minute, no minimum, no cap).
/// - November 2026 has no national holiday and no DST change; it starts on a Sunday.
///   Weekdays: Mondays 2, 9, 16, 23, 30 (5) + four each of Tue, Wed, Thu, Fri = 21 days.
/// - Each day is one server life of 10 hours = 600 started minutes, billed exactly:
///   21 x 10 = 210 hours.
/// - Price: 0.75 EUR/h. One life costs 10 x 0.75 = 7.50; 21 lives: 157.50.
/// - 24/7: November has 30 x 24 = 720 hours; no monthly cap on GPU Instances, so
///   720 x 0.75 = 540.00.
/// - Saving: (540.00 - 157.50) / 540.00 = 70.8333...% -> "70.83".
#[test]
fn cost_estimate_matches_the_worked_example_under_scaleways_rule() {
    let config = example().join("dayshift.toml");
    let out = dayshift(&[
        "cost",
        "estimate",
        "--config",
        &config.display().to_string(),
        "--month",
        "2026-11",
        "--json",
    ]);
    let v = stdout_json(&out);
    assert_eq!(
        v,
        serde_json::json!({
            "month": "2026-11",
            "pools": [{"pool": "chat", "billed_hours": 210, "servers": 21, "peak_nodes": 1, "cost": "157.50", "always_on": "540.00"}],
            "total": "157.50",
            "always_on": "540.00",
            "saving_percent": "70.83",
            "load_aware": null,
            "no_load_history": "no store at /var/lib/dayshift/dayshift.db yet",
        })
    );
}
