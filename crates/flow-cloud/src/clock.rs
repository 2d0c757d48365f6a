//! Time as a trait: [`TokioClock`] for real runs (it also follows tokio's
//! paused time in tests), [`ManualClock`] for tests that move time by hand
//! while real I/O happens (a loopback fake, where paused tokio time would
//! fire every I/O timeout at once).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// A boxed sleep, `Send` so pollers can run on any runtime thread.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A monotonic clock with sleeps.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Time since the clock's start.
    fn now(&self) -> Duration;
    /// Completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// tokio's clock (`tokio::time`), so `#[tokio::test(start_paused = true)]`
/// controls it.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        TokioClock {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when a test calls [`ManualClock::advance`].
///
/// [`ManualClock::sleeping`] and [`ManualClock::wait_for_sleepers`] tell a
/// test when the code under test has gone back to sleep, i.e. finished what
/// the last advance made due; with them a test counts requests per tick
/// deterministically.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug, Default)]
struct ManualInner {
    state: Mutex<ManualState>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct ManualState {
    now: Duration,
    sleepers: Vec<(Duration, oneshot::Sender<()>)>,
    /// Every sleep requested, in order.
    history: Vec<Duration>,
}

impl ManualClock {
    /// A clock at zero that moves only when the test advances it.
    pub fn new() -> Self {
        ManualClock::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ManualState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves time forward and wakes every sleep that is due.
    pub fn advance(&self, by: Duration) {
        let mut state = self.state();
        state.now += by;
        let now = state.now;
        let sleepers = std::mem::take(&mut state.sleepers);
        for (deadline, wake) in sleepers {
            if deadline <= now {
                let _ = wake.send(());
            } else {
                state.sleepers.push((deadline, wake));
            }
        }
        drop(state);
        self.inner.changed.notify_waiters();
    }

    /// Sleeps currently pending (abandoned ones excluded).
    pub fn sleeping(&self) -> usize {
        let mut state = self.state();
        state.sleepers.retain(|(_, wake)| !wake.is_closed());
        state.sleepers.len()
    }

    /// The earliest pending deadline, if any.
    pub fn next_deadline(&self) -> Option<Duration> {
        let mut state = self.state();
        state.sleepers.retain(|(_, wake)| !wake.is_closed());
        state.sleepers.iter().map(|(deadline, _)| *deadline).min()
    }

    /// Every sleep duration requested so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.state().history.clone()
    }

    /// Waits until at least `count` sleeps are pending.
    pub async fn wait_for_sleepers(&self, count: usize) {
        loop {
            let notified = self.inner.changed.notified();
            if self.sleeping() >= count {
                return;
            }
            notified.await;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        self.state().now
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let (wake, woken) = oneshot::channel();
        {
            let mut state = self.state();
            state.history.push(duration);
            if duration.is_zero() {
                let _ = wake.send(());
            } else {
                let deadline = state.now + duration;
                state.sleepers.push((deadline, wake));
            }
        }
        self.inner.changed.notify_waiters();
        Box::pin(async move {
            let _ = woken.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleeps_end_when_time_reaches_them() {
        let clock = ManualClock::new();
        let short = tokio::spawn(clock.sleep(Duration::from_secs(1)));
        let long = tokio::spawn(clock.sleep(Duration::from_secs(5)));
        clock.wait_for_sleepers(2).await;
        clock.advance(Duration::from_secs(1));
        short.await.unwrap();
        assert_eq!(clock.sleeping(), 1);
        assert!(!long.is_finished());
        clock.advance(Duration::from_secs(4));
        long.await.unwrap();
        assert_eq!(clock.now(), Duration::from_secs(5));
        assert_eq!(
            clock.sleeps(),
            [Duration::from_secs(1), Duration::from_secs(5)]
        );
    }
}
