//! Injected time: everything that asks "what time is it" goes through a [`Clock`], so
//! schedule and lifecycle logic can be tested at any date and speed without sleeping.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// A source of the current instant.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock stopped at `t`.
    pub fn new(t: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(t))
    }

    /// Moves the clock to `t`.
    pub fn set(&self, t: DateTime<Utc>) {
        if let Ok(mut g) = self.0.lock() {
            *g = t;
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        if let Ok(mut g) = self.0.lock() {
            *g += d;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        match self.0.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }
}

/// The system's wall clock shifted by an offset that may change while it runs: rehearsals
/// and end-to-end tests run `dayshift serve` "at 07:59" or jump it to a window's end
/// (`DAYSHIFT_CLOCK_OFFSET_FILE`, see the ingress README). It runs at real speed.
#[derive(Debug, Default)]
pub struct OffsetClock(std::sync::atomic::AtomicI64);

impl OffsetClock {
    /// The wall clock shifted by `offset`.
    pub fn new(offset: Duration) -> Self {
        OffsetClock(std::sync::atomic::AtomicI64::new(offset.num_milliseconds()))
    }

    /// Changes the offset (the clock jumps).
    pub fn set_offset(&self, offset: Duration) {
        self.0.store(
            offset.num_milliseconds(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The offset now.
    pub fn offset(&self) -> Duration {
        Duration::milliseconds(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        now.checked_add_signed(self.offset()).unwrap_or(now)
    }
}
