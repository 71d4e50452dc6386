//! Providers' billing rules as data: the started unit, the minimum billed time and
//! whether a server's cost is capped at a monthly price; what one server life costs and
//! until when a running server is paid. Money is exact decimal.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;

/// How a provider turns a server's lifetime into money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BillingRule {
    /// Every started unit of this many seconds is billed in full (3600: hourly).
    pub unit_secs: u64,
    /// A server is billed for at least this many seconds.
    pub minimum_secs: u64,
    /// One server never costs more than its type's monthly price.
    pub monthly_cap: bool,
}

/// A server type's prices (EUR, excluding VAT unless the operator says otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// Price per hour.
    pub hourly: Decimal,
    /// Monthly cap, if the provider has one for this type.
    pub monthly: Option<Decimal>,
}

/// What one server life costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// Billed time in hours (whole started units, at least the minimum).
    pub billed_hours: Decimal,
    /// Money, exact (not yet rounded).
    pub cost: Decimal,
}

impl BillingRule {
    /// Hetzner Cloud: every started hour, capped at the monthly price.
    pub const HETZNER: BillingRule = BillingRule {
        unit_secs: 3600,
        minimum_secs: 0,
        monthly_cap: true,
    };

    /// Scaleway Instances (GPU types such as `L4-1-24G`): billed per minute of uptime,
    /// from creation (including start-up and standby) to deletion, with no minimum and no
    /// monthly cap on GPU Instances. Source: Scaleway's Instances FAQ, "How are Instances
    /// billed?" (`pages/instances/faq.mdx` in github.com/scaleway/docs-content, PR #5727,
    /// October 2025): "GPU Instances: Billed per minute of uptime (including startup and
    /// standby time), except for RENDER-S GPU Instances, which are billed per hour", and
    /// <https://www.scaleway.com/en/docs/compute/instances/reference-content/understanding-instance-pricing/>
    /// ("billing begins when you create the Instance ... ends when you delete the
    /// Instance ... no minimum commitment"). Flexible IPs and volumes are billed apart
    /// while allocated, which is why the provider deletes them with the server.
    pub const SCALEWAY: BillingRule = BillingRule {
        unit_secs: 60,
        minimum_secs: 0,
        monthly_cap: false,
    };

    /// The `local` provider: nothing is rented; prices are whatever the operator sets,
    /// billed per started hour with no cap.
    pub const LOCAL: BillingRule = BillingRule {
        unit_secs: 3600,
        minimum_secs: 0,
        monthly_cap: false,
    };

    /// The charge for one server that lived `secs` seconds.
    pub fn charge(&self, secs: i64, price: &Price) -> Charge {
        let secs = secs.max(0) as u64;
        let secs = secs.max(self.minimum_secs);
        let unit = self.unit_secs.max(1);
        let units = secs.div_ceil(unit);
        let billed_secs = Decimal::from(units) * Decimal::from(unit);
        let billed_hours = billed_secs / Decimal::from(3600u32);
        let mut cost = billed_hours * price.hourly;
        if self.monthly_cap
            && let Some(m) = price.monthly
        {
            cost = cost.min(m);
        }
        Charge { billed_hours, cost }
    }

    /// Until when a server created at `created` is paid at `now`: the end of the unit
    /// it is in (every started unit is billed in full), and at least the end of its
    /// first unit (also for a `now` before `created`).
    pub fn paid_until(&self, created: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        let unit = self.unit_secs.max(1) as i64;
        let lived = (now - created).num_seconds().max(0);
        let started_units = (lived + unit - 1) / unit;
        created + Duration::seconds(started_units.max(1) * unit)
    }
}

/// Rounds money to the cent (banker's rounding is not used: half away from zero).
pub fn to_cents(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn hetzner_bills_started_hours_with_cap() {
        let p = Price {
            hourly: d("0.49"),
            monthly: Some(d("300")),
        };
        let c = BillingRule::HETZNER.charge(3601, &p);
        assert_eq!(c.billed_hours, d("2"));
        assert_eq!(c.cost, d("0.98"));
        assert_eq!(BillingRule::HETZNER.charge(0, &p).cost, d("0"));
        assert_eq!(BillingRule::HETZNER.charge(3600 * 1000, &p).cost, d("300"));
    }

    #[test]
    fn scaleway_bills_started_minutes_without_cap() {
        let p = Price {
            hourly: d("0.75"),
            monthly: Some(d("10")),
        };
        let c = BillingRule::SCALEWAY.charge(61, &p);
        assert_eq!(c.billed_hours, d("2") / d("60"));
        assert_eq!(c.cost, d("0.025"));
        assert_eq!(BillingRule::SCALEWAY.charge(3600 * 100, &p).cost, d("75"));
    }

    #[test]
    fn minimum_and_minute_units() {
        let rule = BillingRule {
            unit_secs: 60,
            minimum_secs: 3600,
            monthly_cap: false,
        };
        let p = Price {
            hourly: d("0.75"),
            monthly: None,
        };
        assert_eq!(rule.charge(120, &p).cost, d("0.75"));
        assert_eq!(rule.charge(3600 + 61, &p).billed_hours, d("62") / d("60"));
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn paid_until_is_the_end_of_the_started_unit() {
        let created = at("2025-11-03T07:10:00Z");
        let (h, s) = (BillingRule::HETZNER, BillingRule::SCALEWAY);
        for (rule, now, paid_until) in [
            // At creation and within the first hour: paid until 08:10.
            (h, "2025-11-03T07:10:00Z", "2025-11-03T08:10:00Z"),
            (h, "2025-11-03T07:40:00Z", "2025-11-03T08:10:00Z"),
            // Exactly one hour in: the first hour is used up, no second one started yet.
            (h, "2025-11-03T08:10:00Z", "2025-11-03T08:10:00Z"),
            // One second into the second hour: paid until 09:10.
            (h, "2025-11-03T08:10:01Z", "2025-11-03T09:10:00Z"),
            // A clock behind the creation time still counts the first unit.
            (h, "2025-11-03T07:00:00Z", "2025-11-03T08:10:00Z"),
            // Scaleway's minute: 2 min 30 s in → the third minute, paid until 07:13.
            (s, "2025-11-03T07:12:30Z", "2025-11-03T07:13:00Z"),
        ] {
            assert_eq!(rule.paid_until(created, at(now)), at(paid_until), "{now}");
        }
    }
}
