//! The schedule file (`schedule.toml`): office-hour windows per pool, holidays and
//! one-off overrides in one time zone, and its evaluation as a pure function of time.

mod days;
pub mod describe;
mod eval;
mod holidays;
mod local_time;
mod parse;

pub use days::DaySet;
pub use eval::{Interval, NodeRange};
pub use holidays::{HolidayRule, easter_sunday};
pub use local_time::{WallTime, resolve, resolve_local};

use chrono::NaiveDate;
use chrono_tz::Tz;

/// A recurring window: on `days`, from `start` to `end` local time, `nodes` nodes of `pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Pool name (a pool of `dayshift.toml`).
    pub pool: String,
    /// Start days of the window.
    pub days: DaySet,
    /// Local start time.
    pub start: WallTime,
    /// Local end time; `end <= start` means the window ends on the next day.
    pub end: WallTime,
    /// Nodes wanted during the window (at least 1); for a range (`nodes = "1-3"`) its
    /// upper bound.
    pub nodes: u32,
    /// Fewest nodes during the window: `nodes` for a fixed count; a range's lower bound
    /// (0 lets the pool go to zero when idle), within which the scheduler follows load.
    pub min_nodes: u32,
}

/// What an override does on its date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideAction {
    /// No window starts that day.
    Closed,
    /// This single window replaces the day's windows.
    Open {
        /// Local start time.
        start: WallTime,
        /// Local end time (`end <= start`: next day).
        end: WallTime,
        /// Nodes wanted (a range's upper bound).
        nodes: u32,
        /// A range's lower bound (`nodes` for a fixed count).
        min_nodes: u32,
    },
}

/// A one-off change for one date; beats holidays and windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The start day it applies to.
    pub date: NaiveDate,
    /// The pool it applies to; `None` for every pool.
    pub pool: Option<String>,
    /// Close the day or replace its windows.
    pub action: OverrideAction,
}

/// A validated schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// IANA time zone in which all times and dates are read.
    pub timezone: Tz,
    /// Recurring windows.
    pub windows: Vec<Window>,
    /// Days on which no window starts.
    pub holidays: Vec<HolidayRule>,
    /// One-off overrides.
    pub overrides: Vec<Override>,
}

impl Schedule {
    /// Parses and validates a schedule file's text. `file` names it in problems;
    /// `known_pools`, when given, are the pools a window or override may name.
    pub fn parse(
        file: &str,
        src: &str,
        known_pools: Option<&[String]>,
    ) -> Result<Schedule, crate::Problems> {
        parse::parse(file, src, known_pools, None)
    }

    /// Like [`Schedule::parse`] against `dayshift.toml`'s pools (name → `max_nodes`): a
    /// window must name one of them, and a range's lower bound may not exceed its cap.
    pub fn parse_for_pools(
        file: &str,
        src: &str,
        pools: &std::collections::BTreeMap<String, u32>,
    ) -> Result<Schedule, crate::Problems> {
        let names: Vec<String> = pools.keys().cloned().collect();
        parse::parse(file, src, Some(&names), Some(pools))
    }

    /// Reads and validates a schedule file against `dayshift.toml`'s pools (see
    /// [`Schedule::parse_for_pools`]).
    pub fn load_for_pools(
        path: &std::path::Path,
        pools: &std::collections::BTreeMap<String, u32>,
    ) -> Result<Schedule, crate::Problems> {
        let file = path.display().to_string();
        let src = crate::read_source(path)?;
        Schedule::parse_for_pools(&file, &src, pools)
    }

    /// Reads and validates a schedule file from disk.
    pub fn load(
        path: &std::path::Path,
        known_pools: Option<&[String]>,
    ) -> Result<Schedule, crate::Problems> {
        let file = path.display().to_string();
        let src = crate::read_source(path)?;
        Schedule::parse(&file, &src, known_pools)
    }

    /// True when some window or override of this schedule is a range (`nodes = "1-3"`).
    pub fn has_ranges(&self) -> bool {
        self.windows.iter().any(|w| w.min_nodes < w.nodes)
            || self.overrides.iter().any(|o| {
                matches!(o.action, OverrideAction::Open { nodes, min_nodes, .. } if min_nodes < nodes)
            })
    }

    /// This schedule with every window and opening override at its floor: what it
    /// commits to for sure (the budget's committed rest, the estimate's lower figure).
    /// `floor(pool, range)` is the pool's floor for a window of `range` (its
    /// `RangeRule`); a floor of 0 closes the window.
    pub fn at_floor(&self, floor: impl Fn(&str, NodeRange) -> u32) -> Schedule {
        let mut s = self.clone();
        for w in &mut s.windows {
            let f = floor(
                &w.pool,
                NodeRange {
                    min: w.min_nodes,
                    max: w.nodes,
                },
            );
            (w.nodes, w.min_nodes) = (f, f);
        }
        let pools = self.pools();
        for o in &mut s.overrides {
            if let OverrideAction::Open {
                nodes, min_nodes, ..
            } = &mut o.action
            {
                let r = NodeRange {
                    min: *min_nodes,
                    max: *nodes,
                };
                // An all-pools override: the lowest floor of the pools it opens for.
                let f = match &o.pool {
                    Some(p) => floor(p, r),
                    None => pools.iter().map(|p| floor(p, r)).min().unwrap_or(r.min),
                };
                (*nodes, *min_nodes) = (f, f);
            }
        }
        s
    }

    /// True when `date` is a holiday of this schedule.
    pub fn is_holiday(&self, date: NaiveDate) -> bool {
        self.holidays.iter().any(|h| h.matches(date))
    }

    /// Every pool named by a window or a pool-specific override, sorted.
    pub fn pools(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .windows
            .iter()
            .map(|w| w.pool.clone())
            .chain(self.overrides.iter().filter_map(|o| o.pool.clone()))
            .collect();
        p.sort();
        p.dedup();
        p
    }
}
