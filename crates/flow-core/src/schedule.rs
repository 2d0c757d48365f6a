//! A flow file's `[schedule]`: when `flow schedule` starts the flow's
//! managed runs, how it retries them, and which other flows' Jobs a period
//! waits for. The period length is the flow's own `time_qualifier`.

use crate::timeperiod::Timeperiod;
use std::time::Duration;

/// How a flow is scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// How long after a period closes its run starts (data arriving late).
    pub lag: Duration,
    /// The first period to run; `None`: the period that closed last when
    /// the timetable was first started (no backfill).
    pub earliest_timeperiod: Option<Timeperiod>,
    /// Failed managed runs the garbage collector retries (in recovery
    /// mode) before it leaves the Job `state_skipped` for a person; 3 as in
    /// the Synergy Scheduler.
    pub retry_limit: u32,
    /// The wait before the first retry.
    pub retry_delay: Duration,
    /// Each further retry waits this many times longer ...
    pub retry_backoff: u32,
    /// ... up to this.
    pub retry_max_delay: Duration,
    /// Flows whose Jobs covering a period must be `processed` or `noop`
    /// before this flow's period starts (each must be scheduled too).
    pub depends_on_flows: Vec<String>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            lag: Duration::ZERO,
            earliest_timeperiod: None,
            retry_limit: 3,
            retry_delay: Duration::from_secs(60),
            retry_backoff: 2,
            retry_max_delay: Duration::from_secs(3600),
            depends_on_flows: Vec::new(),
        }
    }
}

impl Schedule {
    /// The wait before retry number `failures` (1 for the first).
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = u64::from(self.retry_backoff.max(1))
            .checked_pow(failures.saturating_sub(1))
            .unwrap_or(u64::MAX);
        self.retry_delay
            .checked_mul(u32::try_from(factor).unwrap_or(u32::MAX))
            .unwrap_or(self.retry_max_delay)
            .min(self.retry_max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let s = Schedule::default();
        assert_eq!(s.backoff(1), Duration::from_secs(60));
        assert_eq!(s.backoff(2), Duration::from_secs(120));
        assert_eq!(s.backoff(3), Duration::from_secs(240));
        assert_eq!(s.backoff(40), Duration::from_secs(3600));
    }
}
