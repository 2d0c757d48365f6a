//! The retry policy for transient errors of cloud APIs, through `backon`.
//!
//! An error says whether it is worth another try ([`Transient`]) and, when
//! the server said so, how long to wait (`Retry-After`). Delays grow
//! exponentially from [`RetryConfig::initial_delay`] up to
//! [`RetryConfig::max_delay`], with jitter unless turned off (jitter adds
//! up to the delay again, but never beyond `max_delay`); a
//! `Retry-After` replaces the computed delay (capped by
//! [`RetryConfig::max_retry_after`]). Sleeps go through a [`Clock`], so tests
//! check the sequence without waiting.

use crate::clock::Clock;
use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How patiently to retry a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries after the first attempt (0: never retry).
    pub max_retries: usize,
    /// The delay before the first retry.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// No computed delay is longer, jitter included.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Each delay is the previous one times this.
    pub factor: f32,
    /// Random jitter on each delay, so many clients do not retry in step.
    pub jitter: bool,
    /// The longest `Retry-After` honoured; a longer one is cut to this.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 5,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
            factor: 2.0,
            jitter: true,
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryConfig {
    /// A single attempt.
    pub fn never() -> Self {
        RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        }
    }

    /// The computed delays of one retried call, in order.
    pub(crate) fn delays(&self) -> impl Iterator<Item = Duration> {
        self.backoff().build()
    }

    /// The delay before the next retry after `e`: its `Retry-After`
    /// (capped) or the next computed delay; `None` once the retries are
    /// spent.
    pub(crate) fn next_delay<E: Transient>(
        &self,
        delays: &mut impl Iterator<Item = Duration>,
        e: &E,
    ) -> Option<Duration> {
        // backon adds its jitter after applying its cap.
        let computed = delays.next()?.min(self.max_delay);
        Some(
            e.retry_after()
                .map_or(computed, |asked| asked.min(self.max_retry_after)),
        )
    }

    fn backoff(&self) -> ExponentialBuilder {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor.max(1.0))
            .with_max_times(self.max_retries);
        if self.jitter {
            builder.with_jitter()
        } else {
            builder
        }
    }
}

/// What the retry policy needs to know about an error.
pub trait Transient {
    /// Worth another try: throttling (429), server errors (5xx), timeouts,
    /// connection failures.
    fn is_transient(&self) -> bool;
    /// How long the server asked us to wait (`Retry-After`), if it did.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// The error to return once the retries are spent on it, after
    /// `attempts` attempts (the first one included). By default the error
    /// itself; one that carries a message says how often it was tried
    /// ([`crate::errors::after_attempts`]).
    fn after_attempts(self, attempts: usize) -> Self
    where
        Self: Sized,
    {
        let _ = attempts;
        self
    }
}

/// Runs `attempt` until it succeeds, fails with an error that is not
/// transient, or `config.max_retries` retries are spent. `what` names the
/// call in the warning logged before each retry.
///
/// The delays come from backon's exponential backoff; the loop is written
/// out (rather than backon's `Retryable` with its closure adaptors) so the
/// returned future is plainly `Send` when the attempt's future is.
pub async fn retry<T, E, F, Fut>(
    config: &RetryConfig,
    clock: &Arc<dyn Clock>,
    what: &str,
    mut attempt: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Transient + std::fmt::Display,
{
    let mut delays = config.delays();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let e = match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        if !e.is_transient() {
            return Err(e);
        }
        let Some(delay) = config.next_delay(&mut delays, &e) else {
            return Err(e.after_attempts(attempts));
        };
        tracing::warn!(call = what, retry_in = ?delay, "transient failure, retrying: {e}");
        clock.sleep(delay).await;
    }
}

/// True for HTTP statuses worth retrying: 408, 429, 500, 502, 503, 504.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Parses a `Retry-After` value: seconds (`"120"`) or an HTTP date, which
/// is turned into the time left from `now` (zero if it is past).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct TestError {
        transient: bool,
        retry_after: Option<Duration>,
    }

    impl std::fmt::Display for TestError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "test error (transient: {})", self.transient)
        }
    }

    impl Transient for TestError {
        fn is_transient(&self) -> bool {
            self.transient
        }
        fn retry_after(&self) -> Option<Duration> {
            self.retry_after
        }
    }

    fn config() -> RetryConfig {
        RetryConfig {
            max_retries: 4,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            factor: 2.0,
            jitter: false,
            max_retry_after: Duration::from_secs(60),
        }
    }

    /// A clock whose sleeps end at once but are recorded.
    fn instant_clock() -> (ManualClock, Arc<dyn Clock>) {
        let manual = ManualClock::new();
        let shared: Arc<dyn Clock> = Arc::new(InstantClock(manual.clone()));
        (manual, shared)
    }

    #[derive(Debug)]
    struct InstantClock(ManualClock);

    impl Clock for InstantClock {
        fn now(&self) -> Duration {
            self.0.now()
        }
        fn sleep(&self, duration: Duration) -> crate::clock::Sleep {
            let sleep = self.0.sleep(duration);
            self.0.advance(duration);
            sleep
        }
    }

    async fn run(
        clock: &Arc<dyn Clock>,
        errors: Vec<TestError>,
    ) -> (Result<&'static str, TestError>, usize) {
        let calls = AtomicUsize::new(0);
        let errors = std::sync::Mutex::new(errors.into_iter());
        let result = retry(&config(), clock, "test", || {
            calls.fetch_add(1, Ordering::Relaxed);
            let next = errors.lock().unwrap().next();
            async move {
                match next {
                    Some(e) => Err(e),
                    None => Ok("done"),
                }
            }
        })
        .await;
        (result, calls.load(Ordering::Relaxed))
    }

    /// The sleeps in whole milliseconds (backon's f32 factor leaves a few
    /// nanoseconds of rounding).
    fn millis(clock: &ManualClock) -> Vec<u128> {
        clock
            .sleeps()
            .iter()
            .map(|d| (d.as_micros() + 500) / 1000)
            .collect()
    }

    fn transient(retry_after: Option<Duration>) -> TestError {
        TestError {
            transient: true,
            retry_after,
        }
    }

    #[tokio::test]
    async fn transient_errors_back_off_exponentially_up_to_the_cap() {
        let (manual, clock) = instant_clock();
        let (result, calls) = run(&clock, (0..3).map(|_| transient(None)).collect()).await;
        assert_eq!(result.unwrap(), "done");
        assert_eq!(calls, 4);
        assert_eq!(millis(&manual), [100, 200, 400]);

        let (manual, clock) = instant_clock();
        let (result, calls) = run(&clock, (0..9).map(|_| transient(None)).collect()).await;
        assert!(result.is_err(), "4 retries are spent");
        assert_eq!(calls, 5, "the first attempt and max_retries = 4 retries");
        assert_eq!(millis(&manual), [100, 200, 400, 500]);
    }

    #[tokio::test]
    async fn jittered_delays_never_exceed_the_cap() {
        let config = RetryConfig {
            max_retries: 8,
            jitter: true,
            ..config()
        };
        for _ in 0..20 {
            let (manual, clock) = instant_clock();
            let result: Result<(), TestError> =
                retry(&config, &clock, "test", || async { Err(transient(None)) }).await;
            assert!(result.is_err(), "8 retries are spent");
            let sleeps = manual.sleeps();
            assert_eq!(sleeps.len(), 8);
            // Jitter only lengthens: each delay is at least the computed
            // one (100, 200, 400, then the cap), and none is longer than
            // the cap.
            for (sleep, floor) in sleeps.iter().zip([100, 200, 400, 500, 500, 500, 500, 500]) {
                assert!(
                    *sleep >= Duration::from_millis(floor) - Duration::from_micros(1),
                    "{sleeps:?}"
                );
                assert!(*sleep <= config.max_delay, "{sleeps:?}");
            }
        }
    }

    #[tokio::test]
    async fn retry_after_replaces_the_computed_delay() {
        let (manual, clock) = instant_clock();
        let errors = vec![
            transient(Some(Duration::from_secs(7))),
            transient(None),
            transient(Some(Duration::from_secs(3600))),
        ];
        let (result, calls) = run(&clock, errors).await;
        assert_eq!(result.unwrap(), "done");
        assert_eq!(calls, 4);
        // The second is computed; the third is capped by max_retry_after.
        assert_eq!(millis(&manual), [7000, 200, 60_000]);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let (manual, clock) = instant_clock();
        let errors = vec![TestError {
            transient: false,
            retry_after: Some(Duration::from_secs(1)),
        }];
        let (result, calls) = run(&clock, errors).await;
        assert!(result.is_err());
        assert_eq!(calls, 1);
        assert!(manual.sleeps().is_empty());
    }

    #[test]
    fn retry_after_values_parse() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert!(is_transient_status(429) && is_transient_status(503));
        assert!(!is_transient_status(404) && !is_transient_status(403));
    }
}
