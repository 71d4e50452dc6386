//! Every kind of problem in a schedule or config file is reported with its file, line,
//! column and field, all of them at once.

use std::path::Path;

use dayshift_config::{Config, Problem, Schedule};

fn schedule_problems(src: &str, pools: Option<&[String]>) -> Vec<Problem> {
    match Schedule::parse("schedule.toml", src, pools) {
        Ok(_) => panic!("expected problems in:\n{src}"),
        Err(p) => p.0,
    }
}

fn config_problems(src: &str) -> Vec<Problem> {
    match Config::parse("dayshift.toml", src, Path::new("/etc/dayshift")) {
        Ok(_) => panic!("expected problems in:\n{src}"),
        Err(p) => p.0,
    }
}

fn one(problems: &[Problem]) -> &Problem {
    assert_eq!(problems.len(), 1, "expected one problem, got {problems:#?}");
    &problems[0]
}

fn at(p: &Problem, line: usize, column: usize, field: &str, needle: &str) {
    assert_eq!((p.line, p.column), (line, column), "{p}");
    assert_eq!(p.field, field, "{p}");
    assert!(
        p.message.contains(needle),
        "`{}` does not contain `{needle}`",
        p.message
    );
    assert_eq!(
        p.file,
        if p.file.ends_with("dayshift.toml") {
            "dayshift.toml"
        } else {
            "schedule.toml"
        }
    );
}

const GOOD_WINDOW: &str =
    "[[window]]\npool = \"chat\"\ndays = \"mon-fri\"\nstart = \"08:00\"\nend = \"18:00\"\n";

#[test]
fn unknown_key_suggests_the_closest_name() {
    let src = format!("timezone = \"Europe/Berlin\"\n{GOOD_WINDOW}strat = \"09:00\"\n");
    let p = schedule_problems(&src, None);
    at(one(&p), 7, 1, "window[0].strat", "did you mean `start`?");

    let p = schedule_problems("timezon = \"Europe/Berlin\"\n", None);
    // Two problems: the unknown key and the missing `timezone`.
    assert_eq!(p.len(), 2, "{p:#?}");
    at(&p[0], 1, 1, "timezon", "did you mean `timezone`?");
    at(&p[1], 1, 1, "timezone", "missing required key");
}

#[test]
fn bad_times() {
    for (bad, col) in [
        ("\"25:00\"", 9),
        ("\"8am\"", 9),
        ("\"08:60\"", 9),
        ("800", 9),
    ] {
        let src = format!(
            "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"daily\"\nstart = {bad}\nend = \"18:00\"\n"
        );
        let p = schedule_problems(&src, None);
        at(one(&p), 5, col, "window[0].start", "HH:MM");
    }
}

#[test]
fn bad_time_zone_names_the_closest() {
    let p = schedule_problems("timezone = \"Europe/Berln\"\n", None);
    at(
        one(&p),
        1,
        12,
        "timezone",
        "did you mean \"Europe/Berlin\"?",
    );
    let p = schedule_problems("timezone = \"Mars/Olympus\"\n", None);
    at(one(&p), 1, 12, "timezone", "unknown time zone");
    // A megabyte of "zone name" gets no hint (the comparison took 12 s) and is not
    // repeated whole in the message.
    let huge = "Europe/Berlin".repeat(80_000);
    let p = schedule_problems(&format!("timezone = \"{huge}\"\n"), None);
    at(one(&p), 1, 12, "timezone", "unknown time zone");
    let msg = &one(&p).message;
    assert!(!msg.contains("did you mean"), "{msg}");
    assert!(msg.len() < 300, "{} bytes", msg.len());
    assert!(msg.contains("(1040000 bytes)"), "{msg}");
}

#[test]
fn bad_dates() {
    let src = "timezone = \"UTC\"\n[holidays]\ndates = [\"12-24\", \"2026-02-30\", \"13-01\", \"easter*2\"]\n";
    let p = schedule_problems(src, None);
    assert_eq!(p.len(), 3, "{p:#?}");
    at(&p[0], 3, 19, "holidays.dates", "no such date");
    at(&p[1], 3, 33, "holidays.dates", "no such day of the year");
    at(&p[2], 3, 42, "holidays.dates", "easter+N");

    let src = "timezone = \"UTC\"\n[[override]]\ndate = \"23.12.2026\"\nclosed = true\n";
    let p = schedule_problems(src, None);
    at(one(&p), 3, 8, "override[0].date", "YYYY-MM-DD");
}

#[test]
fn bad_days() {
    let src = "timezone = \"UTC\"\n[[window]]\npool = \"chat\"\ndays = \"mon-fir\"\nstart = \"08:00\"\nend = \"18:00\"\n";
    let p = schedule_problems(src, None);
    at(one(&p), 4, 8, "window[0].days", "mon-fri");
}

#[test]
fn unknown_pools() {
    let pools = vec!["chat".to_string(), "embed".to_string()];
    let src = "timezone = \"UTC\"\n[[window]]\npool = \"caht\"\ndays = \"daily\"\nstart = \"08:00\"\nend = \"18:00\"\n[[override]]\ndate = \"2026-12-23\"\npool = \"gpu\"\nclosed = true\n";
    let p = schedule_problems(src, Some(&pools));
    assert_eq!(p.len(), 2, "{p:#?}");
    at(&p[0], 3, 8, "window[0].pool", "did you mean \"chat\"?");
    at(
        &p[1],
        9,
        8,
        "override[0].pool",
        "the pools are: chat, embed",
    );
}

#[test]
fn zero_and_out_of_range_nodes() {
    let src = format!("timezone = \"UTC\"\n{GOOD_WINDOW}nodes = 0\n");
    let p = schedule_problems(&src, None);
    at(one(&p), 7, 9, "window[0].nodes", "at least 1");
    let src = format!("timezone = \"UTC\"\n{GOOD_WINDOW}nodes = -3\n");
    at(
        one(&schedule_problems(&src, None)),
        7,
        9,
        "window[0].nodes",
        "from 1 to 1000",
    );
    let src = format!("timezone = \"UTC\"\n{GOOD_WINDOW}nodes = \"two\"\n");
    at(
        one(&schedule_problems(&src, None)),
        7,
        9,
        "window[0].nodes",
        "a range \"MIN-MAX\"",
    );
}

#[test]
fn override_conflicts_and_missing_fields() {
    let src = "timezone = \"UTC\"\n[[override]]\ndate = \"2026-12-23\"\nclosed = true\nnodes = 2\n";
    at(
        one(&schedule_problems(src, None)),
        5,
        9,
        "override[0].nodes",
        "closed = true",
    );
    let src = "timezone = \"UTC\"\n[[override]]\ndate = \"2026-12-23\"\nstart = \"06:00\"\n";
    at(
        one(&schedule_problems(src, None)),
        2,
        1,
        "override[0].end",
        "missing required key",
    );
    let src = "timezone = \"UTC\"\n[[override]]\ndate = \"2026-12-23\"\nclosed = true\n[[override]]\ndate = \"2026-12-23\"\nclosed = true\n";
    at(
        one(&schedule_problems(src, None)),
        5,
        1,
        "override[1]",
        "second override",
    );
}

#[test]
fn syntax_error_has_a_position() {
    let p = schedule_problems("timezone = \"UTC\"\n[[window]\npool = 1\n", None);
    let p = one(&p);
    assert_eq!(p.line, 2, "{p}");
    assert!(p.message.starts_with("invalid TOML"), "{p}");
}

#[test]
fn every_problem_is_reported_one_per_line() {
    let src = "timezone = \"Nowhere/City\"\n[[window]]\npool = \"chat\"\ndays = \"someday\"\nstart = \"8\"\nend = \"18:00\"\nnodes = 0\ncolour = \"red\"\n";
    let problems = Schedule::parse("schedule.toml", src, None).unwrap_err();
    let text = problems.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].starts_with("schedule.toml:1:12: timezone: unknown time zone"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("schedule.toml:4:8: window[0].days:"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("schedule.toml:5:9: window[0].start:"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("schedule.toml:7:9: window[0].nodes:"),
        "{text}"
    );
    assert!(
        lines[4].starts_with("schedule.toml:8:1: window[0].colour: unknown key"),
        "{text}"
    );
}

const GOOD_CONFIG: &str = r#"cluster = "office"
schedule = "schedule.toml"

[provider]
kind = "hetzner"
ssh_key = "id_ed25519"

[provider.server_types.ccx63]
hourly = "0.85"
monthly = 530.00

[pools.chat]
model = "tiny"
server_types = ["ccx63"]
"#;

#[test]
fn good_config_resolves_paths_and_defaults() {
    let c = Config::parse("dayshift.toml", GOOD_CONFIG, Path::new("/etc/dayshift")).unwrap();
    assert_eq!(c.cluster, "office");
    assert_eq!(
        c.schedule.as_deref(),
        Some(Path::new("/etc/dayshift/schedule.toml"))
    );
    assert_eq!(c.state_dir, Path::new("/etc/dayshift/state"));
    assert_eq!(c.database_url, "sqlite:///etc/dayshift/state/dayshift.db");
    assert_eq!(c.provider.token_env, "HCLOUD_TOKEN");
    let price = c.pool_price("chat").unwrap();
    assert_eq!(price.hourly.to_string(), "0.85");
    assert_eq!(price.monthly.unwrap().to_string(), "530.00");
    assert_eq!(c.pools["chat"].queue_timeout_secs, 30);
}

#[test]
fn config_errors_name_line_column_and_field() {
    let src = GOOD_CONFIG.replace(
        "server_types = [\"ccx63\"]",
        "server_types = [\"ccx36\"]\nmax_node = 2",
    );
    let p = config_problems(&src);
    assert_eq!(p.len(), 2, "{p:#?}");
    at(
        &p[0],
        14,
        17,
        "pools.chat.server_types",
        "did you mean \"ccx63\"?",
    );
    at(
        &p[1],
        15,
        1,
        "pools.chat.max_node",
        "did you mean `max_nodes`?",
    );

    let src = GOOD_CONFIG.replace("kind = \"hetzner\"", "kind = \"hetzer\"");
    at(
        one(&config_problems(&src)),
        5,
        8,
        "provider.kind",
        "did you mean \"hetzner\"?",
    );

    let src = GOOD_CONFIG.replace("hourly = \"0.85\"", "hourly = \"cheap\"");
    at(
        one(&config_problems(&src)),
        9,
        10,
        "provider.server_types.ccx63.hourly",
        "amount in EUR",
    );

    let src = GOOD_CONFIG.replace("cluster = \"office\"", "cluster = \"Office Berlin\"");
    at(
        one(&config_problems(&src)),
        1,
        11,
        "cluster",
        "not a valid cluster name",
    );

    let src = format!("{GOOD_CONFIG}[gateway]\nlisten = \"443\"\n[tls]\nmode = \"acme\"\n");
    let p = config_problems(&src);
    assert_eq!(p.len(), 2, "{p:#?}");
    at(&p[0], 16, 10, "gateway.listen", "IP:PORT");
    at(&p[1], 17, 1, "tls.domains", "at least one domain");

    let src = format!("{GOOD_CONFIG}cold_start = \"soon\"\n");
    at(
        one(&config_problems(&src)),
        15,
        14,
        "pools.chat.cold_start",
        "duration",
    );
}

#[test]
fn examples_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples");
    let c = Config::load(&root.join("dayshift.toml")).unwrap_or_else(|p| panic!("{p}"));
    let s = Schedule::load(c.schedule.as_deref().unwrap(), Some(&c.pool_names()))
        .unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(s.timezone.name(), "Europe/Berlin");
}

#[test]
fn gateway_edge_settings_parse_with_defaults_and_positions() {
    let c = Config::parse("dayshift.toml", GOOD_CONFIG, Path::new("/etc/dayshift")).unwrap();
    let g = &c.gateway;
    assert_eq!(
        (
            g.header_read_timeout_secs,
            g.body_read_timeout_secs,
            g.idle_timeout_secs,
            g.max_connections_per_address
        ),
        (10, 30, 60, 256)
    );
    let src = format!(
        "{GOOD_CONFIG}[gateway]\nheader_read_timeout = \"5s\"\nbody_read_timeout = \"2m\"\n\
         idle_timeout = 90\nmax_connections_per_address = 16\n"
    );
    let c = Config::parse("dayshift.toml", &src, Path::new("/etc/dayshift")).unwrap();
    let g = &c.gateway;
    assert_eq!(
        (
            g.header_read_timeout_secs,
            g.body_read_timeout_secs,
            g.idle_timeout_secs,
            g.max_connections_per_address
        ),
        (5, 120, 90, 16)
    );
    let src = format!(
        "{GOOD_CONFIG}[gateway]\nheader_read_timeout = \"0s\"\nidle_timeout = \"soon\"\n\
         max_connections_per_address = 0\n"
    );
    let p = config_problems(&src);
    assert_eq!(p.len(), 3, "{p:#?}");
    // Lines after GOOD_CONFIG's own (`[gateway]` is the first one after it).
    let base = GOOD_CONFIG.lines().count();
    at(
        &p[0],
        base + 2,
        23,
        "gateway.header_read_timeout",
        "at least 1s",
    );
    at(&p[1], base + 3, 16, "gateway.idle_timeout", "duration");
    at(
        &p[2],
        base + 4,
        31,
        "gateway.max_connections_per_address",
        "from 1 to",
    );
}

#[test]
fn elastic_pool_settings_are_read_and_min_above_max_is_refused() {
    // GOOD_CONFIG ends inside [pools.chat].
    let line = GOOD_CONFIG.lines().count() + 1;
    let p = config_problems(&format!("{GOOD_CONFIG}max_nodes = 2\nmin_nodes = 3\n"));
    at(
        one(&p),
        line + 1,
        13,
        "pools.chat.min_nodes",
        "above max_nodes 2",
    );
    let c = Config::parse(
        "dayshift.toml",
        &format!(
            "{GOOD_CONFIG}wake_on_demand = true\nmin_nodes = 0\ntarget_in_flight = 3\n\
             scale_up_after = \"30s\"\nscale_down_after = \"10m\"\nmin_wake = \"20m\"\n"
        ),
        Path::new("/etc/dayshift"),
    )
    .unwrap();
    let p = &c.pools["chat"];
    assert!(p.wake_on_demand);
    assert_eq!(p.min_nodes, Some(0));
    assert_eq!(p.target_in_flight, 3);
    assert_eq!((p.scale_up_after_secs, p.scale_down_after_secs), (30, 600));
    assert_eq!(p.min_wake_secs, 1200);
    // min_wake defaults to one paid unit of the provider's billing rule.
    let c = Config::parse("dayshift.toml", GOOD_CONFIG, Path::new("/etc/dayshift")).unwrap();
    assert_eq!(c.pools["chat"].min_wake_secs, c.provider.billing.unit_secs);
    assert_eq!(c.pools["chat"].quantize, None);
}

#[test]
fn pool_quantize_names_a_type_and_not_a_gguf_source() {
    let line = GOOD_CONFIG.lines().count() + 1;
    let c = Config::parse(
        "dayshift.toml",
        &format!("{GOOD_CONFIG}quantize = \"q4_k\"\n"),
        Path::new("/etc/dayshift"),
    )
    .unwrap();
    assert_eq!(c.pools["chat"].quantize.as_deref(), Some("q4_k"));
    let p = config_problems(&format!("{GOOD_CONFIG}quantize = \"q3_k\"\n"));
    at(
        one(&p),
        line,
        12,
        "pools.chat.quantize",
        "not a type nodes quantize to",
    );
    let p = config_problems(&format!(
        "{GOOD_CONFIG}model_source = \"m.Q4_K_M.gguf\"\nquantize = \"q8_0\"\n"
    ));
    at(
        one(&p),
        line + 1,
        12,
        "pools.chat.quantize",
        "already quantized",
    );
}
