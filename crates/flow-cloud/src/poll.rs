//! Waiting for many jobs of one cluster with one backend request per tick.
//!
//! A [`Poller`] belongs to one cluster (one backend connection). Callers
//! [`Poller::wait`] for a job id; a background task asks the backend about
//! **all** watched ids in one request per tick ([`JobSource::statuses`]:
//! EMR's `ListSteps` with step ids, a Dataproc `jobs.list` with a filter,
//! ...) and hands each waiter its job's terminal status.
//!
//! Timing ([`PollConfig`]): the first tick comes `floor` after the first
//! wait; ticks are `floor` apart while every watched job is younger than
//! `backoff_after`; after that each long job's interval grows by `factor`
//! per tick up to `cap`, and a tick happens when the shortest interval among
//! the watched jobs has passed, so a new job brings the floor back. Each wait
//! has an overall timeout. The number of backend requests so far is
//! [`Poller::requests`]; time comes from a [`Clock`], so tests count requests
//! instead of sleeping.

use crate::clock::Clock;
use crate::outcome::{Outcome, Phase};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// What a cloud crate supplies: one request about many jobs, and what the
/// answers mean.
#[async_trait]
pub trait JobSource: Send + Sync + 'static {
    /// A job's backend id (EMR step id, Dataproc job id, ...).
    type Id: Clone + Eq + Hash + fmt::Display + Send + Sync + 'static;
    /// What the backend says about a job (its state and any details).
    type Status: Clone + fmt::Debug + Send + 'static;
    /// A failed request (after the source's own retries of transient
    /// failures).
    type Error: fmt::Display + Send + 'static;

    /// ONE backend request about all of `ids` (a source may add one to
    /// confirm jobs that just ended, as Dataproc does, or page where the API
    /// bounds a request, as EMR does: the poller counts a tick as one).
    /// Ids missing from the answer are asked about again next tick (and fail the wait after
    /// [`PollConfig::max_failed_requests`] answers without them).
    async fn statuses(
        &self,
        ids: &[Self::Id],
    ) -> Result<Vec<(Self::Id, Self::Status)>, Self::Error>;

    /// Where a status stands; usually a [`StateTable`](crate::StateTable)
    /// lookup of its state name.
    fn phase(&self, status: &Self::Status) -> Phase;

    /// True when the source can tell whether the jobs' cluster has ended
    /// ([`JobSource::cluster_ended`]); then the cluster is asked about every
    /// [`CLUSTER_CHECK_EVERY`] ticks (see there for how).
    fn checks_cluster(&self) -> bool {
        false
    }

    /// ONE backend request about the cluster the jobs run on:
    /// `Some(reason)` when it has ended (or is ending), which ends every
    /// wait at once with [`PollError::ClusterEnded`].
    async fn cluster_ended(&self) -> Result<Option<String>, Self::Error> {
        Ok(None)
    }
}

/// Every this many ticks, a poller whose source
/// [`checks_cluster`](JobSource::checks_cluster) asks about the cluster too:
/// a job whose cluster died is failed within ten ticks (twenty when the
/// settings leave no room, below), without a job's end noticed later than
/// `cap` or more than one request per `floor` on average. Neither API can
/// say both in one request (EMR's `ListSteps` and Dataproc's `jobs.list`
/// carry no cluster state), so the tick takes the first way that keeps both
/// bounds:
/// 1. **in addition**: the cluster request, then the jobs' as usual, when
///    the requests since the last cluster check, these two included, fit
///    in one per `floor` of the time since then (jobs backing off leave
///    room);
/// 2. **instead of the jobs**: when the jobs' next request, one interval
///    later, still comes within `cap` of their last one (jobs polled at the
///    floor: two floors apart, 2 s of the 3 s cap by default);
/// 3. else the check waits for the next tick, and takes the jobs' turn
///    once [`CLUSTER_CHECK_EVERY`] ticks overdue (only where `cap` is under
///    two floors).
pub const CLUSTER_CHECK_EVERY: u64 = 10;

/// How often to ask and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    /// The shortest time between two requests (and from the first wait to
    /// the first request).
    #[serde(with = "humantime_serde")]
    pub floor: Duration,
    /// A job watched for this long starts backing off.
    #[serde(with = "humantime_serde")]
    pub backoff_after: Duration,
    /// A backing-off job's interval is multiplied by this after each tick.
    pub factor: f64,
    /// No job's interval grows beyond this.
    #[serde(with = "humantime_serde")]
    pub cap: Duration,
    /// A wait gives up after this long ([`PollError::Timeout`]); `None`
    /// waits forever.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Requests failing in a row (or answers missing a job in a row) before
    /// the waits concerned fail.
    pub max_failed_requests: u32,
}

/// A 1 s floor and a 3 s cap: a job is noticed 0.5 s after its end on
/// average in its first minute and 1.5 s once it runs long (the EMR issue
/// promises 2 s median), at one request per second at most.
impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            floor: Duration::from_secs(1),
            backoff_after: Duration::from_secs(60),
            factor: 1.5,
            cap: Duration::from_secs(3),
            timeout: Some(Duration::from_secs(24 * 3600)),
            max_failed_requests: 5,
        }
    }
}

/// A job's end as the backend reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished<T> {
    /// How the job ended.
    pub outcome: Outcome,
    /// The backend's last status of the job (with its failure details).
    pub status: T,
}

/// Why a wait ended without a terminal state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    #[error("job {job}: not finished after {waited:?} (the wait timed out)")]
    /// The job did not finish within the configured time.
    Timeout {
        /// The job, as the source names it.
        job: String,
        /// How long the poller waited.
        waited: Duration,
    },
    /// Status requests kept failing.
    #[error("job {job}: {failures} status requests failed in a row; the last: {message}")]
    Backend {
        /// The job, as the source names it.
        job: String,
        /// Requests that failed in a row.
        failures: u32,
        /// The last failure.
        message: String,
    },
    #[error("job {job}: the backend's last {answers} answers did not mention it")]
    /// The backend stopped mentioning the job.
    Missing {
        /// The job, as the source names it.
        job: String,
        /// Answers in a row without it.
        answers: u32,
    },
    /// The cluster the job runs on ended.
    #[error("job {job}: its cluster ended: {reason}")]
    ClusterEnded {
        /// The job, as the source names it.
        job: String,
        /// The cluster's state and the backend's reason.
        reason: String,
    },
    #[error("job {job}: the poller stopped before the job finished")]
    /// The poller was dropped first.
    Stopped {
        /// The job, as the source names it.
        job: String,
    },
}

impl PollError {
    /// True when giving up leaves the job's outcome unknown: it may still
    /// run (requests kept failing or were throttled past their retries, the
    /// wait timed out, the poller stopped). Such a wait is not a failed
    /// attempt: a cluster reports it as `flow_core`'s
    /// `ClusterError::OutcomeUnknown`, so the engine keeps the job's handle
    /// and the next engine adopts the job or cancels it before anything is
    /// submitted again. False for [`PollError::Missing`]: the backend
    /// answered, without the job (it is lost, and that is an outcome).
    pub fn leaves_outcome_unknown(&self) -> bool {
        !matches!(self, PollError::Missing { .. })
    }
}

/// What one [`JobSource::statuses`] request returned.
type Answer<S> =
    Result<Vec<(<S as JobSource>::Id, <S as JobSource>::Status)>, <S as JobSource>::Error>;

type Reply<T> = oneshot::Sender<Result<Finished<T>, PollError>>;

struct Waiter<T> {
    reply: Reply<T>,
    started: Duration,
    deadline: Option<Duration>,
}

struct Watch<T> {
    waiters: Vec<Waiter<T>>,
    since: Duration,
    interval: Duration,
    missing: u32,
}

struct State<S: JobSource> {
    jobs: HashMap<S::Id, Watch<S::Status>>,
    driver_running: bool,
    last_tick: Option<Duration>,
    failed_requests: u32,
    /// Ticks since the cluster was last asked about (or the poller began):
    /// at [`CLUSTER_CHECK_EVERY`] a check is due.
    ticks: u64,
    /// When the jobs were last asked about (`None`: not since the driver
    /// started).
    last_jobs_request: Option<Duration>,
    /// The request budget's window: since the last cluster check or the
    /// driver's start, and the requests made in it.
    window_start: Duration,
    window_requests: u64,
}

/// What one tick asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TickPlan {
    Jobs,
    ClusterThenJobs,
    ClusterOnly,
}

struct PollerCore<S: JobSource> {
    source: S,
    config: PollConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State<S>>,
    wake: Notify,
    requests: AtomicU64,
}

/// Waits for the jobs of one cluster; cheap to clone (clones share the
/// poller). Needs a tokio runtime: the polling runs in a task spawned on the
/// first wait, which ends when nothing is watched.
pub struct Poller<S: JobSource> {
    shared: Arc<PollerCore<S>>,
}

impl<S: JobSource> Clone for Poller<S> {
    fn clone(&self) -> Self {
        Poller {
            shared: self.shared.clone(),
        }
    }
}

impl<S: JobSource> fmt::Debug for Poller<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("config", &self.shared.config)
            .field("requests", &self.requests())
            .field("watched", &self.watched())
            .finish()
    }
}

impl<S: JobSource> Poller<S> {
    /// A poller asking `source` about its jobs, paced by `config` on `clock`.
    pub fn new(source: S, config: PollConfig, clock: Arc<dyn Clock>) -> Self {
        Poller {
            shared: Arc::new(PollerCore {
                source,
                config,
                clock,
                state: Mutex::new(State {
                    jobs: HashMap::new(),
                    driver_running: false,
                    last_tick: None,
                    failed_requests: 0,
                    ticks: 0,
                    last_jobs_request: None,
                    window_start: Duration::ZERO,
                    window_requests: 0,
                }),
                wake: Notify::new(),
                requests: AtomicU64::new(0),
            }),
        }
    }

    /// The source, e.g. for its own counters in tests.
    pub fn source(&self) -> &S {
        &self.shared.source
    }

    /// Backend requests made so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Jobs being watched now.
    pub fn watched(&self) -> usize {
        self.shared.lock().jobs.len()
    }

    /// Waits for `id` to reach a terminal state, with the configured
    /// timeout. Dropping the future stops watching the job (if no one else
    /// waits for it).
    pub async fn wait(&self, id: S::Id) -> Result<Finished<S::Status>, PollError> {
        self.wait_for(id, self.shared.config.timeout).await
    }

    /// [`Poller::wait`] with its own timeout.
    pub async fn wait_for(
        &self,
        id: S::Id,
        timeout: Option<Duration>,
    ) -> Result<Finished<S::Status>, PollError> {
        let job = id.to_string();
        let (reply, answer) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            let now = self.shared.clock.now();
            let floor = self.shared.config.floor;
            state
                .jobs
                .entry(id)
                .or_insert_with(|| Watch {
                    waiters: Vec::new(),
                    since: now,
                    interval: floor,
                    missing: 0,
                })
                .waiters
                .push(Waiter {
                    reply,
                    started: now,
                    deadline: timeout.map(|t| now + t),
                });
            if !state.driver_running {
                state.driver_running = true;
                state.last_jobs_request = None;
                state.window_start = now;
                state.window_requests = 0;
                tokio::spawn(drive(self.shared.clone()));
            }
        }
        self.shared.wake.notify_one();
        answer.await.unwrap_or(Err(PollError::Stopped { job }))
    }
}

impl<S: JobSource> PollerCore<S> {
    fn lock(&self) -> MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Stops watching jobs whose every waiter went away (a dropped wait).
fn prune<S: JobSource>(state: &mut State<S>) {
    state.jobs.retain(|_, watch| {
        watch.waiters.retain(|w| !w.reply.is_closed());
        !watch.waiters.is_empty()
    });
}

/// When the next request is due: the shortest interval among the watched
/// jobs after the last tick (or after the first wait). `None` when nothing
/// is watched.
fn next_tick<S: JobSource>(state: &State<S>, config: &PollConfig) -> Option<Duration> {
    let shortest = state.jobs.values().map(|w| w.interval).min()?;
    let base = match state.last_tick {
        Some(tick) => tick,
        None => state.jobs.values().map(|w| w.since).min()?,
    };
    Some(base + shortest.max(config.floor))
}

fn next_deadline<S: JobSource>(state: &State<S>) -> Option<Duration> {
    state
        .jobs
        .values()
        .flat_map(|w| w.waiters.iter().filter_map(|x| x.deadline))
        .min()
}

async fn drive<S: JobSource>(shared: Arc<PollerCore<S>>) {
    loop {
        let wake_at = {
            let mut state = shared.lock();
            prune(&mut state);
            let Some(tick) = next_tick(&state, &shared.config) else {
                state.driver_running = false;
                state.last_tick = None;
                return;
            };
            next_deadline(&state).map_or(tick, |d| d.min(tick))
        };
        let now = shared.clock.now();
        if wake_at > now {
            tokio::select! {
                _ = shared.clock.sleep(wake_at - now) => {}
                // A new wait may bring the next tick forward.
                _ = shared.wake.notified() => continue,
            }
        }
        let now = shared.clock.now();
        let (ids, plan) = {
            let mut state = shared.lock();
            expire(&mut state, now);
            prune(&mut state);
            match next_tick(&state, &shared.config) {
                Some(tick) if tick <= now => {
                    state.last_tick = Some(now);
                    state.ticks += 1;
                    let plan = if shared.source.checks_cluster() {
                        plan_tick(&state, &shared.config, now)
                    } else {
                        TickPlan::Jobs
                    };
                    if plan != TickPlan::Jobs {
                        state.ticks = 0;
                        state.window_start = now;
                        state.window_requests = 0;
                    }
                    if plan != TickPlan::ClusterOnly {
                        state.last_jobs_request = Some(now);
                        state.window_requests += 1;
                    }
                    (state.jobs.keys().cloned().collect::<Vec<_>>(), plan)
                }
                _ => continue,
            }
        };
        if plan != TickPlan::Jobs {
            shared.requests.fetch_add(1, Ordering::SeqCst);
            match shared.source.cluster_ended().await {
                Ok(Some(reason)) => {
                    let mut state = shared.lock();
                    for id in &ids {
                        finish(&mut state, id, |job| {
                            Err(PollError::ClusterEnded {
                                job,
                                reason: reason.clone(),
                            })
                        });
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("cluster status request failed: {e}"),
            }
            if plan == TickPlan::ClusterOnly {
                continue;
            }
        }
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let answer = shared.source.statuses(&ids).await;
        let mut state = shared.lock();
        settle(&shared, &mut state, &ids, answer, now);
    }
}

/// Whether this tick asks about the cluster, and how
/// ([`CLUSTER_CHECK_EVERY`]); `state.ticks` counts this tick already.
fn plan_tick<S: JobSource>(state: &State<S>, config: &PollConfig, now: Duration) -> TickPlan {
    if state.ticks < CLUSTER_CHECK_EVERY {
        return TickPlan::Jobs;
    }
    let floor = config.floor.max(Duration::from_millis(1));
    let window = now.saturating_sub(state.window_start);
    // This tick's two requests on top of the window's.
    let requests = state.window_requests + 2;
    if floor.saturating_mul(u32::try_from(requests).unwrap_or(u32::MAX)) <= window {
        return TickPlan::ClusterThenJobs;
    }
    let last_jobs = state
        .last_jobs_request
        .unwrap_or_else(|| state.jobs.values().map(|w| w.since).min().unwrap_or(now));
    let next_interval = state
        .jobs
        .values()
        .map(|w| w.interval)
        .min()
        .unwrap_or(floor)
        .max(floor);
    let gap = now.saturating_sub(last_jobs) + next_interval;
    if gap <= config.cap.max(floor) || state.ticks >= 2 * CLUSTER_CHECK_EVERY {
        TickPlan::ClusterOnly
    } else {
        TickPlan::Jobs
    }
}

/// Ends the waits whose deadline has passed.
fn expire<S: JobSource>(state: &mut State<S>, now: Duration) {
    for (id, watch) in state.jobs.iter_mut() {
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut watch.waiters)
            .into_iter()
            .partition(|w| w.deadline.is_some_and(|d| d <= now));
        watch.waiters = kept;
        for waiter in expired {
            let _ = waiter.reply.send(Err(PollError::Timeout {
                job: id.to_string(),
                waited: now.saturating_sub(waiter.started),
            }));
        }
    }
    state.jobs.retain(|_, watch| !watch.waiters.is_empty());
}

/// Applies one answer: finished jobs get their reply, running ones back
/// off, failures are counted.
fn settle<S: JobSource>(
    shared: &PollerCore<S>,
    state: &mut State<S>,
    asked: &[S::Id],
    answer: Answer<S>,
    now: Duration,
) {
    let config = &shared.config;
    let statuses = match answer {
        Ok(statuses) => {
            state.failed_requests = 0;
            statuses
        }
        Err(e) => {
            state.failed_requests += 1;
            let failures = state.failed_requests;
            tracing::warn!(failures, "job status request failed: {e}");
            if failures >= config.max_failed_requests {
                let message = e.to_string();
                for id in asked {
                    finish(state, id, |job| {
                        Err(PollError::Backend {
                            job,
                            failures,
                            message: message.clone(),
                        })
                    });
                }
                state.failed_requests = 0;
            }
            return;
        }
    };
    let mut answered: HashMap<&S::Id, &S::Status> = HashMap::new();
    for (id, status) in &statuses {
        answered.insert(id, status);
    }
    for id in asked {
        match answered.get(id) {
            Some(status) => match shared.source.phase(status) {
                Phase::Finished(outcome) => {
                    let status = (*status).clone();
                    finish(state, id, |_| {
                        Ok(Finished {
                            outcome,
                            status: status.clone(),
                        })
                    });
                }
                Phase::Running => {
                    if let Some(watch) = state.jobs.get_mut(id) {
                        watch.missing = 0;
                        back_off(watch, config, now);
                    }
                }
            },
            None => {
                let Some(watch) = state.jobs.get_mut(id) else {
                    continue;
                };
                watch.missing += 1;
                back_off(watch, config, now);
                let answers = watch.missing;
                if answers >= config.max_failed_requests {
                    finish(state, id, |job| Err(PollError::Missing { job, answers }));
                }
            }
        }
    }
}

fn back_off<T>(watch: &mut Watch<T>, config: &PollConfig, now: Duration) {
    if now.saturating_sub(watch.since) >= config.backoff_after {
        let grown = watch.interval.mul_f64(config.factor.max(1.0));
        watch.interval = grown.min(config.cap.max(config.floor));
    }
}

/// Removes `id` and sends every waiter the reply `make` builds.
fn finish<S: JobSource>(
    state: &mut State<S>,
    id: &S::Id,
    make: impl Fn(String) -> Result<Finished<S::Status>, PollError>,
) {
    if let Some(watch) = state.jobs.remove(id) {
        for waiter in watch.waiters {
            let _ = waiter.reply.send(make(id.to_string()));
        }
    }
}
