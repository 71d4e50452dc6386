//! Tests of small functions of the `dayshift` library. The library has `test = false`
//! (its unit-test build recompiled the whole crate for four tests), so they live here,
//! and [`no_unit_tests_hide_in_src`] makes sure no `#[cfg(test)]` test is added to
//! `src/` where it would silently never run.

use std::path::{Path, PathBuf};

use chrono::DateTime;
use dayshift::cli::cost_load::profile;
use dayshift::cli::nodes::age;
use dayshift::cli::stored::{redact, sqlite_file};
use dayshift::elastic_view::{load_text, recent_load};
use dayshift::server::mirror::{compute_manifest, file_path, list_files};
use dayshift_scheduler::LoadSample;
use dayshift_scheduler::elastic::hour_loads;
use sha2::{Digest, Sha256};

fn load_sample(replica: &str, secs: i64, in_flight: u32, queued: u32) -> LoadSample {
    LoadSample {
        pool: "chat".into(),
        replica: replica.into(),
        at: DateTime::parse_from_rfc3339("2026-12-07T09:00:00Z")
            .unwrap()
            .to_utc()
            + chrono::Duration::seconds(secs),
        in_flight,
        queued,
        nodes: 1,
    }
}

#[test]
fn hours_in_json_keep_their_sign() {
    use dayshift::cli::output::hours_json;
    use rust_decimal::Decimal;
    assert_eq!(hours_json(Decimal::new(200, 0)), serde_json::json!(200));
    assert_eq!(hours_json(Decimal::new(-489, 0)), serde_json::json!(-489));
    assert_eq!(
        hours_json(Decimal::new(-6645, 1)),
        serde_json::json!(-664.5)
    );
    assert_eq!(hours_json(Decimal::new(24800, 3)), serde_json::json!(24.8));
}

#[test]
fn recent_load_averages_the_last_minute_of_all_replicas() {
    let now = DateTime::parse_from_rfc3339("2026-12-07T09:01:00Z")
        .unwrap()
        .to_utc();
    let s = vec![
        load_sample("a", -30, 50, 0), // older than a minute: left out
        load_sample("a", 0, 4, 1),
        load_sample("b", 1, 2, 0), // the same 5 s period as a's: 4 + 1 + 2 = 7
        load_sample("a", 30, 1, 0),
    ];
    assert_eq!(recent_load(&s, now), Some(4.0));
    assert_eq!(recent_load(&s[..1], now), None);
    assert_eq!(load_text(Some(4.0)), "4.0");
    assert_eq!(load_text(None), "-");
}

/// The weekday-and-hour profile of `cost estimate`'s load-aware view: per local hour
/// (Berlin, UTC+1 in December), periods averaged over the weeks.
#[test]
fn load_profile_averages_each_local_weekday_and_hour() {
    // 2026-12-07 is a Monday; 09:00Z is 10:00 in Berlin.
    let s = vec![
        load_sample("a", 0, 4, 0),
        load_sample("b", 2, 2, 0),         // same period: 6
        load_sample("a", 7 * 86400, 2, 0), // a week later, same hour: 2
        load_sample("a", 3600, 9, 0),      // 11:00 Berlin
    ];
    let hours = hour_loads(&s, chrono::Duration::seconds(5));
    let p = profile(&hours, chrono_tz::Europe::Berlin);
    assert_eq!(p.get(&(0, 10)), Some(&4.0));
    assert_eq!(p.get(&(0, 11)), Some(&9.0));
    assert_eq!(p.len(), 2);
}

#[test]
fn a_single_file_is_a_one_file_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("SmolLM2.Q4_1.gguf");
    std::fs::write(&f, b"GGUF-bytes").unwrap();
    let stamp = list_files(&f).unwrap();
    assert_eq!(stamp.len(), 1);
    assert_eq!(stamp[0].0, "SmolLM2.Q4_1.gguf");
    let m = compute_manifest("smol", &f, &stamp).unwrap();
    assert_eq!(m.files[0].path, "SmolLM2.Q4_1.gguf");
    assert_eq!(m.files[0].size, 10);
    assert_eq!(
        m.files[0].sha256,
        hex::encode(Sha256::digest(b"GGUF-bytes"))
    );
    assert_eq!(file_path(&f, "SmolLM2.Q4_1.gguf"), f);
    assert_eq!(file_path(dir.path(), "a/b"), dir.path().join("a/b"));
}

#[test]
fn ages_read_well() {
    let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
    let ms = |s: i64| (1_000_000 - s) * 1000;
    assert_eq!(age(now, ms(40)), "40s");
    assert_eq!(age(now, ms(7 * 60 + 12)), "7m 12s");
    assert_eq!(age(now, ms(2 * 3600 + 5 * 60)), "2h 05m");
    assert_eq!(age(now, ms(3 * 86_400 + 4 * 3600 + 59)), "3d 4h");
    assert_eq!(age(now, ms(-5)), "0s");
}

#[test]
fn sqlite_urls_name_their_file() {
    assert_eq!(
        sqlite_file("sqlite:///var/lib/dayshift/dayshift.db?mode=rwc"),
        Some(PathBuf::from("/var/lib/dayshift/dayshift.db"))
    );
    assert_eq!(sqlite_file("sqlite::memory:"), None);
    assert_eq!(sqlite_file("postgres://u:p@h/db"), None);
}

#[test]
fn passwords_are_not_printed() {
    assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_unit_tests_hide_in_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let marker = ["#[cfg(", "test)]"].concat();
    let hidden: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).unwrap().contains(&marker))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        hidden.is_empty(),
        "ingress/Cargo.toml has `[lib] test = false`, so these unit tests would never run: \
         move them to ingress/tests/it/ (or set test = true): {hidden:?}"
    );
}

/// A pool's `quantize` reaches the `[[models]]` entry of the node config the launcher
/// writes (and the node applies it: `dayshift-node`'s `gguf_quantize::quantize_at_load…`).
#[test]
fn a_pools_quantize_goes_into_its_nodes_model_entry() {
    let text = "cluster = \"office\"\n[provider]\nkind = \"local\"\n\
                [pools.chat]\nmodel = \"tiny\"\nmodel_source = \"/m/tiny\"\nquantize = \"q8_0\"\n\
                [pools.plain]\nmodel = \"big\"\n";
    let c = dayshift_config::settings::Config::parse("dayshift.toml", text, Path::new("/etc/d"))
        .unwrap();
    let m = dayshift::control::launcher::node_model(&c.pools["chat"]);
    assert_eq!(m.quantize.as_deref(), Some("q8_0"));
    assert_eq!(m.name, "tiny");
    assert_eq!(
        dayshift::control::launcher::node_model(&c.pools["plain"]).quantize,
        None
    );
}

/// A pool's `slots`, `context_tokens` and `prefix_cache` reach the `[engine]` of its
/// nodes' config: `max_running_sequences`, `kv_cache_tokens` = slots × context_tokens
/// (what the memory check of `dayshift config check` counts), `prefix_cache`.
#[test]
fn a_pools_slots_and_context_go_into_its_nodes_engine() {
    let text = "cluster = \"office\"\n[provider]\nkind = \"local\"\n\
                [pools.chat]\nmodel = \"tiny\"\nslots = 30\ncontext_tokens = 1280\n\
                prefix_cache = false\n\
                [pools.plain]\nmodel = \"big\"\n";
    let c = dayshift_config::settings::Config::parse("dayshift.toml", text, Path::new("/etc/d"))
        .unwrap();
    let e = dayshift::control::launcher::node_engine(&c.pools["chat"], "cuda");
    assert_eq!(
        (
            e.device.as_str(),
            e.max_running_sequences,
            e.kv_cache_tokens
        ),
        ("cuda", 30, Some(38_400))
    );
    assert!(
        !e.prefix_cache,
        "the pool turned the nodes' prefix cache off"
    );
    let e = dayshift::control::launcher::node_engine(&c.pools["plain"], "cpu");
    let d = dayshift_config::node::EngineConfig::default();
    assert_eq!(
        (e.max_running_sequences, e.kv_cache_tokens, e.prefix_cache),
        (d.max_running_sequences, None, true)
    );
}

// Conversation-affine routing (gateway::affinity, PoolRuntime::pick).

#[test]
fn the_cache_scope_is_the_key_and_the_end_user() {
    use dayshift::server::gateway::cache_scope;
    assert_eq!(cache_scope("key_1", None), "key_1");
    assert_eq!(cache_scope("key_1", Some("")), "key_1");
    assert_eq!(
        cache_scope("key_1", Some("al ice\n")),
        "key_1/616c206963650a"
    );
    assert_ne!(
        cache_scope("key_1", Some("bob")),
        cache_scope("key_1", Some("alice"))
    );
    assert!(
        cache_scope("key_1", Some("ü/\"x"))
            .parse::<axum::http::HeaderValue>()
            .is_ok()
    );
    // A long id is hashed: the header stays short, ids still differ.
    let (long_a, long_b) = ("a".repeat(5000), "b".repeat(5000));
    assert!(cache_scope("key_1", Some(&long_a)).len() < 40);
    assert_ne!(
        cache_scope("key_1", Some(&long_a)),
        cache_scope("key_1", Some(&long_b))
    );
}

#[test]
fn a_conversations_turns_share_their_affinity() {
    use dayshift::server::gateway::affinity;
    use serde_json::json;
    let body = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let sys = json!({"role": "system", "content": "Be brief."});
    let u1 = json!({"role": "user", "content": "Plan the audit."});
    let a1 = json!({"role": "assistant", "content": "Step one: ..."});
    let u2 = json!({"role": "user", "content": "And step two?"});
    for start in [vec![sys.clone(), u1.clone()], vec![u1.clone()]] {
        let turn1 = body(json!({"model": "m", "messages": start}));
        let mut later = start.clone();
        later.extend([a1.clone(), u2.clone()]);
        let turn2 = body(json!({"model": "m", "stream": true, "messages": later}));
        assert_eq!(affinity("key_a", &turn1), affinity("key_a", &turn2));
        assert_ne!(affinity("key_a", &turn1), affinity("key_b", &turn1));
    }
    let turn1 = body(json!({"model": "m", "messages": [sys.clone(), u1]}));
    let other = body(json!({"model": "m", "messages": [sys, u2]}));
    assert_ne!(affinity("key_a", &turn1), affinity("key_a", &other));
    // Completions: the prompt's first 512 bytes.
    let long = "x".repeat(600);
    let a = body(json!({"model": "m", "prompt": format!("{long}a")}));
    let b = body(json!({"model": "m", "prompt": format!("{long}b")}));
    let c = body(json!({"model": "m", "prompt": "short"}));
    assert_eq!(affinity("k", &a), affinity("k", &b));
    assert_ne!(affinity("k", &a), affinity("k", &c));
    // Not JSON, or no messages: the key alone decides.
    assert_eq!(
        affinity("k", b"not json"),
        affinity("k", &body(json!({"model": "m"})))
    );
}

#[test]
fn a_conversation_keeps_its_node_until_that_node_is_busier_than_the_slack() {
    use dayshift::server::registry::{AFFINITY_SLACK, InFlight, NodeHandle, PoolRuntime};
    use std::sync::Arc;
    use std::time::Duration;
    let p = PoolRuntime::new("chat".into(), "m".into(), Duration::from_secs(1));
    let nodes: Vec<Arc<NodeHandle>> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| {
            let n = Arc::new(NodeHandle::new(
                id.to_string(),
                "chat".into(),
                format!("https://{id}"),
                None,
                dayshift::server::upstream::node_client(None).expect("client"),
                format!("hash-{id}"),
                dayshift_config::protocol::Secret::new("t".repeat(40)),
            ));
            p.insert(n.clone());
            n
        })
        .collect();
    let stale = Duration::from_secs(60);
    // Conversations spread over the nodes, each always to the same one.
    let mut seen = std::collections::HashSet::new();
    for a in 0..64u64 {
        let first = p.pick(Some(a), &[], stale).unwrap().id.clone();
        assert_eq!(p.pick(Some(a), &[], stale).unwrap().id, first);
        seen.insert(first);
    }
    assert_eq!(seen.len(), 3, "64 conversations over 3 nodes");
    // Without an affinity: the least-loaded node (the first of equals).
    let busy: Vec<InFlight> = nodes[..2]
        .iter()
        .map(|n| InFlight::start(n.clone()))
        .collect();
    assert_eq!(p.pick(None, &[], stale).unwrap().id, nodes[2].id);
    drop(busy);
    // The preferred node keeps a conversation while it has at most the slack more
    // requests in flight than the least-loaded one.
    let home = p.pick(Some(7), &[], stale).unwrap();
    let held: Vec<InFlight> = (0..AFFINITY_SLACK)
        .map(|_| InFlight::start(home.clone()))
        .collect();
    assert_eq!(p.pick(Some(7), &[], stale).unwrap().id, home.id);
    let one_more = InFlight::start(home.clone());
    assert_ne!(
        p.pick(Some(7), &[], stale).unwrap().id,
        home.id,
        "busier than the slack: the least-loaded node"
    );
    drop((held, one_more));
    // In a pool whose nodes keep no prefix cache (`prefix_cache = false`), a
    // conversation has no home: the least-loaded node.
    let mut plain = PoolRuntime::new("plain".into(), "m".into(), Duration::from_secs(1));
    plain.conversation_affinity = false;
    for n in &nodes {
        plain.insert(n.clone());
    }
    let loaded: Vec<InFlight> = nodes
        .iter()
        .filter(|n| n.id != nodes[1].id)
        .map(|n| InFlight::start(n.clone()))
        .collect();
    for a in 0..16u64 {
        assert_eq!(plain.pick(Some(a), &[], stale).unwrap().id, nodes[1].id);
    }
    drop(loaded);
    // Excluded (a retry) or not routable: the conversation goes elsewhere.
    let excluded = std::slice::from_ref(&home.id);
    assert_ne!(p.pick(Some(7), excluded, stale).unwrap().id, home.id);
    home.set_draining();
    assert_ne!(p.pick(Some(7), &[], stale).unwrap().id, home.id);
    // Removing another node does not move conversations whose node stays.
    let keep: Vec<(u64, String)> = (0..64u64)
        .map(|a| (a, p.pick(Some(a), &[], stale).unwrap().id.clone()))
        .collect();
    let gone = nodes.iter().find(|n| n.id != home.id).unwrap().id.clone();
    p.remove(&gone);
    for (a, id) in keep {
        if id != gone {
            assert_eq!(p.pick(Some(a), &[], stale).unwrap().id, id);
        }
    }
}
