//! No panic on any input: random bytes and mutated valid files give problems, not crashes.

use std::path::Path;

use dayshift_config::{Config, Schedule};
use proptest::prelude::*;

const SCHEDULE: &str = include_str!("../../../examples/schedule.toml");
const CONFIG: &str = include_str!("../../../examples/dayshift.toml");

fn mutate(src: &str, ops: &[(usize, u8, u8)]) -> String {
    let mut bytes = src.as_bytes().to_vec();
    for &(pos, kind, byte) in ops {
        if bytes.is_empty() {
            break;
        }
        let i = pos % bytes.len();
        match kind % 3 {
            0 => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            _ => {
                bytes.remove(i);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(src in ".{0,400}") {
        let _ = Schedule::parse("s.toml", &src, Some(&["chat".to_string()]));
        let _ = Config::parse("c.toml", &src, Path::new("."));
    }

    #[test]
    fn mutated_files_never_panic(ops in prop::collection::vec((any::<usize>(), any::<u8>(), 0x20u8..0x7f), 1..8)) {
        let s = mutate(SCHEDULE, &ops);
        if let Ok(sched) = Schedule::parse("s.toml", &s, None) {
            // A still-valid schedule must also evaluate without panicking.
            let t = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().with_timezone(&chrono::Utc);
            let _ = sched.plan(t, t + chrono::Duration::days(3));
            let _ = sched.next_change(t);
        } else if let Err(p) = Schedule::parse("s.toml", &s, None) {
            prop_assert!(!p.0.is_empty());
            for problem in &p.0 {
                prop_assert!(problem.line >= 1 && problem.column >= 1);
            }
        }
        let c = mutate(CONFIG, &ops);
        let _ = Config::parse("c.toml", &c, Path::new("."));
    }

    #[test]
    fn random_bytes_from_disk_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let dir = std::env::temp_dir().join(format!("dayshift-nopanic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("random.toml");
        std::fs::write(&path, &bytes).unwrap();
        let _ = Schedule::load(&path, None);
        let _ = Config::load(&path);
    }
}
