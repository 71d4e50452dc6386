//! `dayshift cost`'s arithmetic against a month worked out by hand.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use dayshift_config::billing::{BillingRule, Price, to_cents};
use dayshift_scheduler::ledger::{
    BillingInterval, KeyUsage, always_on_by_pool, by_key, local_day, node_costs, sum_by,
};
use rust_decimal::Decimal;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn interval(
    node: &str,
    pool: &str,
    hourly: &str,
    monthly: &str,
    start: &str,
    end: Option<&str>,
) -> BillingInterval {
    BillingInterval {
        node_id: node.into(),
        pool: pool.into(),
        server_type: if pool == "chat" {
            "gpu-l".into()
        } else {
            "gpu-s".into()
        },
        price: Price {
            hourly: d(hourly),
            monthly: Some(d(monthly)),
        },
        start: utc(start),
        end: end.map(utc),
    }
}

/// November 2026, Hetzner's rule (started hours, capped at the monthly price):
/// - c1, chat (1.20/h, cap 600): Mon 2 Nov 06:55Z-16:00Z = 9h05m -> 10 started h = 12.00
/// - c2, chat: Tue 3 Nov 06:57Z-16:00Z = 9h03m -> 10 h = 12.00
/// - c3, chat: Wed 4 Nov 07:00Z-12:30Z = 5h30m -> 6 h = 7.20
/// - e1, embed (0.50/h, cap 300): 2 Nov 08:00Z until after the month: cut at
///   1 Dec 00:00Z = 688 h -> 344.00, capped at 300.00
/// - e2, embed: started 31 Oct 22:00Z, deleted 1 Nov 01:30Z: in November 1h30m -> 2 h = 1.00
///
/// Total: 12 + 12 + 7.20 + 300 + 1 = 332.20.
/// By pool: chat 31.20 (10 + 10 + 6 = 26 h), embed 301.00 (688 + 2 = 690 h).
/// 24/7: chat peak 1 server x min(720 x 1.20, 600) = 600.00; embed: e2 ends before e1
/// starts, so peak 1 x min(720 x 0.50, 300) = 300.00. Sum 900.00.
/// By key on c1: alice 3000 tokens, bob 1000 tokens -> alice 9.00, bob 3.00; c2: alice
/// only -> 12.00; c3, e1, e2: no tokens -> "(idle)" 308.20.
/// alice: 21.00 for 5000 tokens = 4200.00 per million; bob 3.00 for 1000 = 3000.00.
#[test]
fn a_month_with_two_pools_matches_the_hand_worked_example() {
    let intervals = vec![
        interval(
            "c1",
            "chat",
            "1.20",
            "600",
            "2026-11-02T06:55:00Z",
            Some("2026-11-02T16:00:00Z"),
        ),
        interval(
            "c2",
            "chat",
            "1.20",
            "600",
            "2026-11-03T06:57:00Z",
            Some("2026-11-03T16:00:00Z"),
        ),
        interval(
            "c3",
            "chat",
            "1.20",
            "600",
            "2026-11-04T07:00:00Z",
            Some("2026-11-04T12:30:00Z"),
        ),
        interval("e1", "embed", "0.50", "300", "2026-11-02T08:00:00Z", None),
        interval(
            "e2",
            "embed",
            "0.50",
            "300",
            "2026-10-31T22:00:00Z",
            Some("2026-11-01T01:30:00Z"),
        ),
    ];
    let (from, to, now) = (
        utc("2026-11-01T00:00:00Z"),
        utc("2026-12-01T00:00:00Z"),
        utc("2026-12-05T00:00:00Z"),
    );
    let costs = node_costs(&intervals, from, to, now, BillingRule::HETZNER);
    let by_node: Vec<(String, Decimal)> =
        costs.iter().map(|c| (c.node_id.clone(), c.cost)).collect();
    assert_eq!(
        by_node,
        vec![
            ("c1".into(), d("12.00")),
            ("c2".into(), d("12.00")),
            ("c3".into(), d("7.20")),
            ("e1".into(), d("300")),
            ("e2".into(), d("1.00"))
        ]
    );
    let total: Decimal = costs.iter().map(|c| c.cost).sum();
    assert_eq!(to_cents(total), d("332.20"));
    let pools = sum_by(&costs, |c| c.pool.clone());
    assert_eq!(pools["chat"], (d("26"), d("31.20")));
    assert_eq!(pools["embed"], (d("690"), d("301.00")));
    let always = always_on_by_pool(&intervals, from, to, now, BillingRule::HETZNER);
    assert_eq!(always["chat"], d("600"));
    assert_eq!(always["embed"], d("300"));
    let days = sum_by(&costs, |c| local_day(c, chrono_tz::Europe::Berlin));
    assert_eq!(days.len(), 4, "1, 2, 3 and 4 November: {days:?}");
    let keys = by_key(
        &costs,
        &[
            KeyUsage {
                key: "alice".into(),
                node_id: "c1".into(),
                tokens: 3000,
            },
            KeyUsage {
                key: "bob".into(),
                node_id: "c1".into(),
                tokens: 1000,
            },
            KeyUsage {
                key: "alice".into(),
                node_id: "c2".into(),
                tokens: 2000,
            },
        ],
    );
    let k: Vec<(String, u64, Decimal, Option<Decimal>)> = keys
        .into_iter()
        .map(|k| {
            (
                k.key,
                k.tokens,
                to_cents(k.cost),
                k.per_million.map(to_cents),
            )
        })
        .collect();
    assert_eq!(
        k,
        vec![
            ("(idle)".into(), 0, d("308.20"), None),
            ("alice".into(), 5000, d("21.00"), Some(d("4200.00"))),
            ("bob".into(), 1000, d("3.00"), Some(d("3000.00"))),
        ]
    );
}
