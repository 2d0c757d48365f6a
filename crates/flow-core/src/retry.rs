//! Retry policy with exponential backoff, shared by step retries and cluster
//! launches.

use serde::Deserialize;
use std::time::Duration;

/// The most retries a step may have. With a zero delay, more would spin
/// through attempts as fast as the store can write them; a hundred keeps a
/// runaway retry loop short whatever the delay.
pub const MAX_RETRIES: u32 = 100;

/// How often and how patiently to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Extra attempts after the first one; at most [`MAX_RETRIES`] for a
    /// step (a flow file or a graph with more is refused).
    pub retries: u32,
    /// Delay before the first retry.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// Each later delay is the previous one times this factor.
    pub backoff: u32,
    /// No delay is longer than this.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::none()
    }
}

impl RetryPolicy {
    /// A single attempt.
    pub const fn none() -> Self {
        RetryPolicy {
            retries: 0,
            delay: Duration::from_secs(1),
            backoff: 2,
            max_delay: Duration::from_secs(300),
        }
    }

    /// The delay before retry number `retry` (1-based).
    pub fn delay_before(&self, retry: u32) -> Duration {
        let factor = u64::from(self.backoff.max(1)).saturating_pow(retry.saturating_sub(1));
        let millis = (self.delay.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(millis).min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            retries: 5,
            delay: Duration::from_millis(100),
            backoff: 3,
            max_delay: Duration::from_millis(1000),
        };
        assert_eq!(p.delay_before(1), Duration::from_millis(100));
        assert_eq!(p.delay_before(2), Duration::from_millis(300));
        assert_eq!(p.delay_before(3), Duration::from_millis(900));
        assert_eq!(p.delay_before(4), Duration::from_millis(1000));
    }
}
