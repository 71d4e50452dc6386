//! The file-only CLI: `dayshift config check`, `schedule check|plan`, `cost estimate`,
//! run as a real process of the `dayshift` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dayshift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dayshift"))
        .args(args)
        .output()
        .expect("run dayshift")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn arg(p: &Path) -> String {
    p.display().to_string()
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
fn checks_pass_on_the_examples() {
    let out = dayshift(&["config", "check", &arg(&examples().join("dayshift.toml"))]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = dayshift(&["schedule", "check", &arg(&examples().join("schedule.toml"))]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_file_gives_one_line_per_problem_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedule.toml");
    std::fs::write(
        &path,
        "timezone = \"Europe/Berln\"\n[[window]]\npool = \"chat\"\ndays = \"mon-fri\"\nstart = \"8:00\"\nend = \"18:70\"\nnodes = 0\n",
    )
    .unwrap();
    let out = dayshift(&["schedule", "check", &arg(&path)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    let file = arg(&path);
    assert!(
        lines[0].starts_with(&format!("{file}:1:12: timezone:")),
        "{err}"
    );
    assert!(
        lines[0].contains("did you mean \"Europe/Berlin\"?"),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("{file}:6:7: window[0].end:")),
        "{err}"
    );
    assert!(
        lines[2].starts_with(&format!("{file}:7:9: window[0].nodes:")),
        "{err}"
    );
    // "8:00" is accepted (one-digit hour), so there is no line for start.

    // Unknown pools are found when the config is given.
    std::fs::write(&path, "timezone = \"UTC\"\n[[window]]\npool = \"caht\"\ndays = \"daily\"\nstart = \"08:00\"\nend = \"18:00\"\n").unwrap();
    let out = dayshift(&[
        "schedule",
        "check",
        &arg(&path),
        "--config",
        &arg(&examples().join("dayshift.toml")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("window[0].pool: unknown pool \"caht\"; did you mean \"chat\"?")
    );

    // A missing file and a config with problems also exit 2.
    let out = dayshift(&["config", "check", "/nonexistent/dayshift.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let cfg = dir.path().join("dayshift.toml");
    std::fs::write(
        &cfg,
        "cluster = \"x\"\n[provider]\nkind = \"local\"\n[pools.chat]\nmodell = \"m\"\n",
    )
    .unwrap();
    let out = dayshift(&["config", "check", &arg(&cfg)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":5:1: pools.chat.modell: unknown key `modell`; did you mean `model`?"),
        "{err}"
    );
}

#[test]
fn plan_json_is_one_object_in_utc() {
    let out = dayshift(&[
        "schedule",
        "plan",
        "--schedule",
        &arg(&examples().join("schedule.toml")),
        "--from",
        "2026-11-23T07:30:00Z",
        "--to",
        "2026-11-25T00:00:00Z",
        "--json",
    ]);
    let v = stdout_json(&out);
    assert_eq!(
        v,
        serde_json::json!({
            "timezone": "Europe/Berlin",
            "intervals": [
                {"pool": "chat", "start": "2026-11-23T07:30:00Z", "end": "2026-11-23T17:00:00Z", "nodes": 1, "min_nodes": 1},
                {"pool": "chat", "start": "2026-11-24T07:00:00Z", "end": "2026-11-24T17:00:00Z", "nodes": 1, "min_nodes": 1},
            ]
        })
    );
    // The table form shows local time.
    let out = dayshift(&[
        "schedule",
        "plan",
        "--schedule",
        &arg(&examples().join("schedule.toml")),
        "--from",
        "2026-11-23T00:00:00Z",
        "--to",
        "2026-11-24T00:00:00Z",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Mon 2026-11-23 08:00 CET") && text.contains("18:00 CET"),
        "{text}"
    );
    // Bad arguments exit 2 with a clear message.
    let out = dayshift(&[
        "schedule",
        "plan",
        "--schedule",
        &arg(&examples().join("schedule.toml")),
        "--from",
        "yesterday",
        "--to",
        "2026-11-24T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from: expected an RFC 3339 time"));
    // An elastic window shows its range.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedule.toml");
    std::fs::write(
        &file,
        "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"mon-fri\"\nstart = \"08:00\"\nend = \"18:00\"\nnodes = \"1-3\"\n",
    )
    .unwrap();
    let args = [
        "schedule",
        "plan",
        "--schedule",
        &arg(&file),
        "--from",
        "2026-11-23T00:00:00Z",
        "--to",
        "2026-11-24T00:00:00Z",
    ];
    let text = String::from_utf8_lossy(&dayshift(&args).stdout).to_string();
    assert!(text.contains("1-3"), "{text}");
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let v = stdout_json(&dayshift(&json_args));
    assert_eq!(v["intervals"][0]["min_nodes"], 1, "{v}");
    assert_eq!(v["intervals"][0]["nodes"], 3, "{v}");
}

/// Worked example, by hand: the example schedule (Mon-Fri 08:00-18:00 Europe/Berlin,
/// German national holidays) in November 2026.
/// - November 2026 has no national holiday and no DST change; it starts on a Sunday.
///   Weekdays: Mondays 2, 9, 16, 23, 30 (5) + four each of Tue, Wed, Thu, Fri = 21 days.
/// - Each day is one server life of 10 hours: 21 x 10 = 210 started hours.
/// - Price of pool chat's first server type (ccx63): 0.85 EUR/h, capped at 530.00 a month.
///   One life costs 10 x 0.85 = 8.50 (under the cap); 21 lives: 178.50.
/// - 24/7: November has 30 x 24 = 720 hours; 720 x 0.85 = 612.00 > 530.00, so 530.00.
/// - Saving: (530.00 - 178.50) / 530.00 = 66.3207...% -> "66.32".
#[test]
fn cost_estimate_matches_the_worked_example() {
    let out = dayshift(&[
        "cost",
        "estimate",
        "--config",
        &arg(&examples().join("dayshift.toml")),
        "--month",
        "2026-11",
        "--json",
    ]);
    let v = stdout_json(&out);
    assert_eq!(
        v,
        serde_json::json!({
            "month": "2026-11",
            "pools": [{"pool": "chat", "billed_hours": 210, "servers": 21, "peak_nodes": 1, "cost": "178.50", "always_on": "530.00"}],
            "total": "178.50",
            "always_on": "530.00",
            "saving_percent": "66.32",
            "load_aware": null,
            "no_load_history": "no store at /var/lib/dayshift/dayshift.db yet",
        })
    );
}

/// Worked example with stacked servers and the monthly cap, in UTC, November 2026:
/// pool chat wants 1 node all the time and 2 nodes Mon-Fri 09:00-17:00.
/// - Server 1 lives all month: 720 started hours; 720 x 1.00 = 720 > 300, capped: 300.00.
/// - Server 2 lives 21 times for 8 hours: 168 hours, 168.00.
/// - Total 468.00 for 888 billed hours. 24/7 for the peak of 2 nodes: 2 x 300.00 = 600.00.
/// - Saving: 132 / 600 = 22.00 %.
///
/// Then the December 2026 run checks the month bounds in the zone: 744 hours.
#[test]
fn cost_estimate_stacks_servers_and_caps_at_the_monthly_price() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedule.toml");
    std::fs::write(
        &path,
        "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"daily\"\nstart = \"00:00\"\nend = \"00:00\"\n[[window]]\npool = \"chat\"\ndays = \"mon-fri\"\nstart = \"09:00\"\nend = \"17:00\"\nnodes = 2\n",
    )
    .unwrap();
    let out = dayshift(&[
        "cost",
        "estimate",
        "--schedule",
        &arg(&path),
        "--month",
        "2026-11",
        "--hourly",
        "1.00",
        "--monthly",
        "300",
        "--json",
    ]);
    let v = stdout_json(&out);
    assert_eq!(
        v,
        serde_json::json!({
            "month": "2026-11",
            "pools": [{"pool": "chat", "billed_hours": 888, "servers": 22, "peak_nodes": 2, "cost": "468.00", "always_on": "600.00"}],
            "total": "468.00",
            "always_on": "600.00",
            "saving_percent": "22.00",
            "load_aware": null,
            "no_load_history": "no --config naming a store",
        })
    );
    // Without a cap, December (31 days, 23 weekdays) costs 744 + 23 x 8 = 928 hours at 0.10.
    let out = dayshift(&[
        "cost",
        "estimate",
        "--schedule",
        &arg(&path),
        "--month",
        "2026-12",
        "--hourly",
        "0.10",
        "--json",
    ]);
    let v = stdout_json(&out);
    assert_eq!(v["pools"][0]["billed_hours"], 928);
    assert_eq!(v["total"], "92.80");
    assert_eq!(v["always_on"], "148.80");
    // The table form for people.
    let out = dayshift(&[
        "cost",
        "estimate",
        "--schedule",
        &arg(&path),
        "--month",
        "2026-12",
        "--hourly",
        "0.10",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Saving against 24/7: 37.63 %"));
    // Bad arguments: exit 2.
    for bad in [["--month", "2026-13"], ["--hourly", "-1"]] {
        let mut args = vec!["cost", "estimate", "--schedule"];
        let p = arg(&path);
        args.push(&p);
        if bad[0] == "--hourly" {
            args.extend(["--month", "2026-11"]);
        } else {
            args.extend(["--hourly", "1"]);
        }
        args.extend(bad);
        let out = dayshift(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}
