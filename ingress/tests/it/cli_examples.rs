//! `examples/hetzner/` and `examples/scaleway/`: their files pass the checks, the Hetzner
//! schedule keeps Germany's holidays (Easter-relative ones included), and the cost
//! output pasted into their READMEs is what the `dayshift` binary prints for them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dayshift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dayshift"))
        .current_dir(repo())
        .args(args)
        .output()
        .expect("run dayshift")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

#[test]
fn scaleway_example_files_pass_the_checks_and_its_readme_the_real_estimate() {
    ok_stdout(&dayshift(&[
        "config",
        "check",
        "examples/scaleway/dayshift.toml",
    ]));
    ok_stdout(&dayshift(&[
        "schedule",
        "check",
        "examples/scaleway/schedule.toml",
        "--config",
        "examples/scaleway/dayshift.toml",
    ]));
    let blocks = readme_blocks("examples/scaleway/README.md");
    let estimates: Vec<&(String, String)> = blocks
        .iter()
        .filter(|(c, _)| c.starts_with("dayshift cost estimate"))
        .collect();
    assert_eq!(estimates.len(), 1, "{blocks:?}");
    for (cmd, pasted) in estimates {
        let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
        let real = ok_stdout(&dayshift(&args));
        assert_eq!(
            &real, pasted,
            "examples/scaleway/README.md shows other output for `{cmd}`: paste the real one"
        );
    }
}

#[test]
fn hetzner_example_files_pass_the_checks() {
    ok_stdout(&dayshift(&[
        "config",
        "check",
        "examples/hetzner/dayshift.toml",
    ]));
    ok_stdout(&dayshift(&[
        "schedule",
        "check",
        "examples/hetzner/schedule.toml",
        "--config",
        "examples/hetzner/dayshift.toml",
    ]));
}

/// Easter 2026 is on 5 April: Good Friday (3 April) and Easter Monday (6 April) have no
/// window; the other weekdays of those two weeks have one, 08:00–18:00 CEST (06:00Z–16:00Z).
#[test]
fn hetzner_schedule_skips_easter_holidays() {
    let out = ok_stdout(&dayshift(&[
        "schedule",
        "plan",
        "--schedule",
        "examples/hetzner/schedule.toml",
        "--from",
        "2026-03-30T00:00:00Z",
        "--to",
        "2026-04-11T00:00:00Z",
        "--json",
    ]));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let starts: Vec<&str> = j["intervals"]
        .as_array()
        .unwrap_or_else(|| panic!("no intervals: {j}"))
        .iter()
        .map(|i| i["start"].as_str().unwrap())
        .collect();
    let want: Vec<String> = [
        "03-30", "03-31", "04-01", "04-02", "04-07", "04-08", "04-09", "04-10",
    ]
    .iter()
    .map(|d| format!("2026-{d}T06:00:00Z"))
    .collect();
    assert_eq!(starts, want, "{j}");
}

/// A README's `$ command` blocks with their output, command by command.
fn readme_blocks(readme: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join(readme)).unwrap();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(cmd) = line.strip_prefix("$ ") {
            out.push((cmd.to_string(), String::new()));
        } else if line.starts_with("```") {
            if let Some(last) = out.last_mut()
                && !last.1.ends_with('\u{0}')
            {
                last.1.push('\u{0}');
            }
        } else if let Some(last) = out.last_mut()
            && !last.1.ends_with('\u{0}')
        {
            last.1.push_str(line);
            last.1.push('\n');
        }
    }
    out.into_iter()
        .map(|(c, o)| (c, o.trim_end_matches('\u{0}').to_string()))
        .collect()
}

#[test]
fn hetzner_readme_shows_the_real_cost_estimates() {
    let blocks = readme_blocks("examples/hetzner/README.md");
    let estimates: Vec<&(String, String)> = blocks
        .iter()
        .filter(|(c, _)| c.starts_with("dayshift cost estimate"))
        .collect();
    assert_eq!(estimates.len(), 2, "{blocks:?}");
    for (cmd, pasted) in estimates {
        let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
        let real = ok_stdout(&dayshift(&args));
        assert_eq!(
            &real, pasted,
            "examples/hetzner/README.md shows other output for `{cmd}`: paste the real one"
        );
    }
    // November 2026: 21 weekdays × 10 h × 0.85 EUR = 178.50 EUR per node.
    let out = ok_stdout(&dayshift(&[
        "cost",
        "estimate",
        "--config",
        "examples/hetzner/dayshift.toml",
        "--month",
        "2026-11",
        "--json",
    ]));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The window is elastic ("1-3"): the table counts its upper bound (3 × 178.50 =
    // 535.50 against 3 × 530.00), the floor is what the budget counts as committed.
    assert_eq!(j["total"], "535.50");
    assert_eq!(j["always_on"], "1590.00");
    assert_eq!(j["pools"][0]["servers"], 63);
    assert_eq!(j["at_floor_total"], "178.50");
}

#[test]
fn root_readme_links_the_hetzner_walkthrough() {
    let text = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        text.contains("examples/hetzner/README.md"),
        "README.md should link examples/hetzner/README.md"
    );
}
