//! Waiting for a cluster (or an operation) to reach a state, and retrying a
//! call that must not run twice.
//!
//! Every cloud brings clusters up and down the same way: ask about the
//! resource every `interval` until it is in a wanted state, in a state it
//! will never leave for the better, or a deadline passed ([`wait_until`]).
//! And every cloud has calls that are not idempotent (EMR's `RunJobFlow`
//! and `AddJobFlowSteps`, Qubole's and Livy's submissions): after a
//! transient failure the answer may have been lost while the call took
//! effect, so the resource is looked up before the call is sent again
//! ([`retry_with_lookup`]). Both run on a [`Clock`], so tests count
//! requests ([`Requests`]) instead of sleeping.

use crate::clock::Clock;
use crate::retry::{RetryConfig, Transient};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A request counter tests read; clones share the count.
#[derive(Debug, Clone, Default)]
pub struct Requests(Arc<AtomicU64>);

impl Requests {
    /// A counter at zero.
    pub fn new() -> Self {
        Requests::default()
    }

    /// Requests counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn count(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What one look at the resource found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look<T> {
    /// In a wanted state: the wait is over.
    Ready(T),
    /// In a state it will not leave for a wanted one (`ERROR`,
    /// `TERMINATED_WITH_ERRORS`, a failed operation): the message says why.
    Failed(String),
    /// Not there yet; the state, for the timeout's message.
    Pending(String),
    /// Not there yet, and the service asked not to be asked again before
    /// this long (ARM's `Retry-After` on an operation in progress): the
    /// next look waits the longer of it and the interval.
    PendingFor(String, Duration),
}

/// How often to look and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// The time between two looks.
    pub interval: Duration,
    /// No look starts after this long; the wait then fails with
    /// [`WaitError::Timeout`].
    pub timeout: Duration,
}

/// Why [`wait_until`] ended without the wanted state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError<E> {
    /// The resource reached a failure state.
    #[error("{0}")]
    Failed(String),
    /// The deadline passed; `last` is the last state seen.
    #[error("still {last} after {}", humantime_serde::re::humantime::format_duration(*.waited))]
    Timeout {
        /// The last [`Look::Pending`] state.
        last: String,
        /// How long the wait lasted.
        waited: Duration,
    },
    /// A look failed (after the caller's own retries).
    #[error("{0}")]
    Request(E),
}

/// Looks at a resource (`look`, one request each, counted in `requests`)
/// every `wait.interval` until it is [`Look::Ready`] or [`Look::Failed`],
/// or until `wait.timeout` has passed since the first look. The first look
/// is immediate; the last one is the first at or after the deadline.
pub async fn wait_until<T, E, F, Fut>(
    clock: &Arc<dyn Clock>,
    wait: Wait,
    requests: &Requests,
    mut look: F,
) -> Result<T, WaitError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Look<T>, E>>,
{
    let started = clock.now();
    loop {
        requests.count();
        match look().await.map_err(WaitError::Request)? {
            Look::Ready(value) => return Ok(value),
            Look::Failed(message) => return Err(WaitError::Failed(message)),
            Look::Pending(last) => {
                let waited = clock.now().saturating_sub(started);
                if waited >= wait.timeout {
                    return Err(WaitError::Timeout { last, waited });
                }
                clock.sleep(wait.interval).await;
            }
            Look::PendingFor(last, asked) => {
                let waited = clock.now().saturating_sub(started);
                if waited >= wait.timeout {
                    return Err(WaitError::Timeout { last, waited });
                }
                clock.sleep(asked.max(wait.interval)).await;
            }
        }
    }
}

/// Sends a call that must not take effect twice (`send`), retrying
/// transient failures with `config`'s backoff (honouring `Retry-After`):
/// after each transient failure it first asks whether the call took effect
/// although its answer was lost (`look_up`: the cluster carrying this
/// launch's tag, the step of this name), and returns what it finds instead
/// of sending again. `what` names the call in the retry warnings.
pub async fn retry_with_lookup<T, E, S, SFut, L, LFut>(
    config: &RetryConfig,
    clock: &Arc<dyn Clock>,
    what: &str,
    mut send: S,
    mut look_up: L,
) -> Result<T, E>
where
    S: FnMut() -> SFut,
    SFut: Future<Output = Result<T, E>>,
    L: FnMut() -> LFut,
    LFut: Future<Output = Result<Option<T>, E>>,
    E: Transient + fmt::Display,
{
    let mut delays = config.delays();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let e = match send().await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        if !e.is_transient() {
            return Err(e);
        }
        if let Some(found) = look_up().await? {
            tracing::info!(
                call = what,
                "{what} failed ({e}) but took effect; using its result"
            );
            return Ok(found);
        }
        let Some(delay) = config.next_delay(&mut delays, &e) else {
            return Err(e.after_attempts(attempts));
        };
        tracing::warn!(call = what, retry_in = ?delay, "transient failure, retrying: {e}");
        clock.sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Mutex;

    fn wait() -> Wait {
        Wait {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
        }
    }

    /// Runs a wait whose looks return `states` in turn (the last one
    /// forever), moving the manual clock each time the wait sleeps.
    async fn run(
        states: Vec<Look<&'static str>>,
    ) -> (Result<&'static str, WaitError<String>>, u64, ManualClock) {
        let manual = ManualClock::new();
        let clock: Arc<dyn Clock> = Arc::new(manual.clone());
        let requests = Requests::new();
        let states = Mutex::new(states);
        let task = wait_until(&clock, wait(), &requests, || {
            let mut states = states.lock().unwrap();
            let next = if states.len() > 1 {
                states.remove(0)
            } else {
                states[0].clone()
            };
            async move { Ok::<_, String>(next) }
        });
        tokio::pin!(task);
        let result = loop {
            tokio::select! {
                result = &mut task => break result,
                _ = manual.wait_for_sleepers(1) => {
                    let next = manual.next_deadline().unwrap() - manual.now();
                    manual.advance(next);
                }
            }
        };
        (result, requests.get(), manual)
    }

    fn pending(state: &str) -> Look<&'static str> {
        Look::Pending(state.to_string())
    }

    #[tokio::test]
    async fn a_ready_resource_ends_the_wait_after_one_request_per_interval() {
        let (result, requests, clock) = run(vec![
            pending("STARTING"),
            pending("BOOTSTRAPPING"),
            Look::Ready("WAITING"),
        ])
        .await;
        assert_eq!(result.unwrap(), "WAITING");
        assert_eq!(requests, 3);
        assert_eq!(clock.now(), Duration::from_secs(20));
    }

    #[tokio::test]
    async fn a_longer_retry_after_of_the_service_spaces_the_looks() {
        let (result, requests, clock) = run(vec![
            Look::PendingFor("InProgress".into(), Duration::from_secs(25)),
            Look::PendingFor("InProgress".into(), Duration::from_secs(3)),
            Look::Ready("Succeeded"),
        ])
        .await;
        assert_eq!(result.unwrap(), "Succeeded");
        assert_eq!(requests, 3);
        // 25 s (asked, longer than the interval), then 10 s (the interval).
        assert_eq!(clock.now(), Duration::from_secs(35));
    }

    #[tokio::test]
    async fn a_failure_state_ends_the_wait_with_its_message() {
        let (result, requests, _) = run(vec![
            pending("STARTING"),
            Look::Failed("TERMINATED_WITH_ERRORS: bootstrap failed".into()),
        ])
        .await;
        assert_eq!(
            result.unwrap_err(),
            WaitError::Failed("TERMINATED_WITH_ERRORS: bootstrap failed".into())
        );
        assert_eq!(requests, 2);
    }

    #[tokio::test]
    async fn the_deadline_ends_the_wait_after_the_last_look() {
        let (result, requests, clock) = run(vec![pending("STARTING")]).await;
        let e = result.unwrap_err();
        assert_eq!(
            e,
            WaitError::Timeout {
                last: "STARTING".into(),
                waited: Duration::from_secs(60)
            }
        );
        assert_eq!(e.to_string(), "still STARTING after 1m");
        // Looks at 0, 10, ..., 60 s: the one at the deadline is the last.
        assert_eq!(requests, 7);
        assert_eq!(clock.now(), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_failed_look_ends_the_wait() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
        let requests = Requests::new();
        let result: Result<(), _> = wait_until(&clock, wait(), &requests, || async {
            Err::<Look<()>, _>("403 forbidden".to_string())
        })
        .await;
        assert_eq!(
            result.unwrap_err(),
            WaitError::Request("403 forbidden".into())
        );
        assert_eq!(requests.get(), 1);
    }

    #[derive(Debug)]
    struct Failure(bool);

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "failure (transient: {})", self.0)
        }
    }

    impl Transient for Failure {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    fn config() -> RetryConfig {
        RetryConfig {
            max_retries: 3,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(20),
            factor: 2.0,
            jitter: false,
            max_retry_after: Duration::from_secs(60),
        }
    }

    /// Sends that fail with `errors` in turn (then succeed with "sent"),
    /// look-ups that find "found" from the `found_at`-th on; returns the
    /// result, the sends and look-ups made and the sleeps.
    async fn resend(
        errors: Vec<Failure>,
        found_at: usize,
    ) -> (Result<&'static str, Failure>, usize, usize, Vec<Duration>) {
        let manual = ManualClock::new();
        let clock: Arc<dyn Clock> = Arc::new(manual.clone());
        let errors = Mutex::new(errors.into_iter());
        let (sends, lookups) = (Mutex::new(0), Mutex::new(0));
        let config = config();
        let task = retry_with_lookup(
            &config,
            &clock,
            "RunJobFlow",
            || {
                *sends.lock().unwrap() += 1;
                let next = errors.lock().unwrap().next();
                async move { next.map_or(Ok("sent"), Err) }
            },
            || {
                let mut n = lookups.lock().unwrap();
                *n += 1;
                let found = (*n >= found_at).then_some("found");
                async move { Ok(found) }
            },
        );
        tokio::pin!(task);
        let result = loop {
            tokio::select! {
                result = &mut task => break result,
                _ = manual.wait_for_sleepers(1) => {
                    let next = manual.next_deadline().unwrap() - manual.now();
                    manual.advance(next);
                }
            }
        };
        let (sends, lookups) = (*sends.lock().unwrap(), *lookups.lock().unwrap());
        (result, sends, lookups, manual.sleeps())
    }

    #[tokio::test]
    async fn a_call_that_took_effect_is_found_instead_of_sent_again() {
        let (result, sends, lookups, sleeps) = resend(vec![Failure(true), Failure(true)], 2).await;
        assert_eq!(result.unwrap(), "found");
        assert_eq!((sends, lookups), (2, 2));
        assert_eq!(sleeps, [Duration::from_secs(1)]);
    }

    #[tokio::test]
    async fn a_call_that_did_not_take_effect_is_sent_again_with_backoff() {
        let (result, sends, lookups, sleeps) =
            resend(vec![Failure(true), Failure(true)], usize::MAX).await;
        assert_eq!(result.unwrap(), "sent");
        assert_eq!((sends, lookups), (3, 2));
        assert_eq!(sleeps, [Duration::from_secs(1), Duration::from_secs(2)]);

        let (result, sends, lookups, sleeps) =
            resend((0..9).map(|_| Failure(true)).collect(), usize::MAX).await;
        assert!(result.is_err(), "3 retries are spent");
        assert_eq!((sends, lookups), (4, 4));
        assert_eq!(sleeps.len(), 3);
    }

    #[tokio::test]
    async fn a_permanent_failure_is_neither_looked_up_nor_retried() {
        let (result, sends, lookups, sleeps) = resend(vec![Failure(false)], 1).await;
        assert!(result.is_err());
        assert_eq!((sends, lookups), (1, 0));
        assert!(sleeps.is_empty());
    }
}
