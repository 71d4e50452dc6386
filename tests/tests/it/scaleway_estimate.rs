//! The Scaleway example's month under `BillingRule::SCALEWAY`, through the config crate
//! (the same worked example as `ingress/tests/cli_scaleway.rs`, without the binary).

use std::path::Path;

use dayshift_config::billing::BillingRule;
use dayshift_config::estimate::{estimate_month, parse_month};
use dayshift_config::{Config, Schedule};
use rust_decimal::Decimal;

#[test]
fn the_scaleway_example_costs_157_50_in_november_2026() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scaleway");
    let config = Config::load(&dir.join("dayshift.toml")).unwrap();
    assert_eq!(config.provider.billing, BillingRule::SCALEWAY);
    let pools = config.pool_names();
    let schedule = Schedule::load(&dir.join("schedule.toml"), Some(&pools)).unwrap();
    let price_of = |pool: &str| config.pool_price(pool);
    let est = estimate_month(
        &schedule,
        parse_month("2026-11").unwrap(),
        config.provider.billing,
        &price_of,
    )
    .unwrap();
    // 21 weekdays x 10 h x 0.75 EUR; 24/7: 720 h x 0.75 EUR, no cap.
    let d = |s: &str| s.parse::<Decimal>().unwrap();
    assert_eq!(est.pools[0].servers, 21);
    assert_eq!(est.pools[0].billed_hours, d("210"));
    assert_eq!(est.total, d("157.50"));
    assert_eq!(est.always_on, d("540.00"));
    assert_eq!(est.saving_percent, d("70.83"));
}
