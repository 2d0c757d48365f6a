//! Wall-clock time as a trait, so a timetable's tests move time by hand
//! instead of sleeping: [`SystemClock`] for real runs, [`SetClock`] for
//! tests. (flow-cloud's `Clock` is a monotonic one for pollers; a
//! timetable needs the calendar.)

use chrono::{DateTime, Utc};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The current instant, in UTC.
pub trait WallClock: Send + Sync + fmt::Debug + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until a test sets or advances it.
#[derive(Debug, Clone)]
pub struct SetClock {
    at: Arc<Mutex<DateTime<Utc>>>,
}

impl SetClock {
    /// A clock showing `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        SetClock {
            at: Arc::new(Mutex::new(at)),
        }
    }

    /// Shows `at` from now on.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.at.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut at = self.at.lock().unwrap_or_else(PoisonError::into_inner);
        *at += chrono::TimeDelta::from_std(by).unwrap_or(chrono::TimeDelta::MAX);
    }
}

impl WallClock for SetClock {
    fn now(&self) -> DateTime<Utc> {
        *self.at.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
