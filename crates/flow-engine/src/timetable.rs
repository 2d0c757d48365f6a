//! The built-in timetable behind `flow schedule`: one Job per flow and
//! timeperiod in the store, each moved by managed runs ([`crate::drive`]),
//! as the Synergy Scheduler moved its Jobs.
//!
//! Every tick: embryo Jobs are created for the periods that closed (plus
//! the flow's lag) since the newest Job, oldest first, so periods missed
//! while no scheduler ran are caught up; then the active Jobs are started
//! oldest first, at most `concurrency` at a time, each once its
//! `not_before` (the garbage collector's backoff) has passed and, for an
//! embryo, once the Jobs it depends on (`depends_on_flows`) are complete.
//!
//! Several schedulers may share a store: a Job is started only under its
//! *claim*, the run lease of [`JobKey::claim_key`] (the same lease and
//! fencing tokens runs use); the claimant renews it while the run goes on,
//! and a scheduler that died has its claims taken over once they are stale.
//! Every Job transition is saved (fenced by the claim) before it has
//! effect: `in_progress` before the engine starts, the outcome after it
//! ends. A claimant that finds a run started after the Job's last recorded
//! one trusts that run's record instead of running again.
//!
//! A failed managed run leaves the Job `in_progress` with
//! `number_of_failures` counted and `run_mode_recovery` for its next run,
//! not before the backoff; past `retry_limit` failures the Job is left
//! `state_skipped` for a person (Synergy's way: only reprocessing runs it
//! again).

use crate::drive::{drive, DriveOutcome, UnitMode};
use crate::{EngineError, ExecutionEngine, Refusal};
use chrono::{DateTime, Utc};
use flow_core::clock::WallClock;
use flow_core::{
    FlowGraph, FlowState, FlowStore, JobKey, JobQuery, JobState, Lease, LeaseOutcome, RunMode,
    RunQuery, Schedule, StoreError, TimeQualifier, Timeperiod, TimetableJob,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Builds the engine of one managed run (the caller knows the settings,
/// clusters and logs).
pub trait EngineFactory: Send + Sync {
    /// An engine for `graph` at `timeperiod`.
    fn engine(&self, graph: &Arc<FlowGraph>, timeperiod: Timeperiod) -> ExecutionEngine;
}

/// Tunables of a timetable.
#[derive(Debug, Clone)]
pub struct TimetableOptions {
    /// This scheduler's claim owner id (host, pid, random part).
    pub owner: String,
    /// Managed runs at once.
    pub concurrency: usize,
    /// A claim whose heartbeat is older than this is taken over.
    pub claim_ttl: Duration,
    /// How often a running Job's claim is renewed.
    pub heartbeat: Duration,
}

/// Why a timetable cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TimetableError {
    /// A flow given has no `[schedule]`.
    #[error("flow '{0}' has no [schedule] section")]
    NotScheduled(String),
    /// A `depends_on_flows` name is not among the scheduled flows.
    #[error("flow '{flow}' depends on flow '{upstream}', which is not scheduled here (give its file too)")]
    UnknownUpstream {
        /// The dependant.
        flow: String,
        /// The missing one.
        upstream: String,
    },
    /// Two flows of one name.
    #[error("flow '{0}' is given twice")]
    Duplicate(String),
}

/// Where a Job stands for `flow jobs`: its state, and for an embryo what it
/// waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Its upstream Jobs are complete (or it has none).
    Ready,
    /// Upstream Jobs not finished yet (`flow-period` each).
    Waiting(Vec<String>),
    /// Upstream Jobs skipped or given up (`flow-period` each): it will not
    /// start until they are reprocessed.
    Blocked(Vec<String>),
}

/// One flow on the timetable.
struct Entry {
    graph: Arc<FlowGraph>,
    schedule: Schedule,
}

/// Where the Job creation of each flow stands: the next period to create.
type Cursors = HashMap<String, Timeperiod>;

/// What a tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Embryo Jobs created.
    pub created: usize,
    /// Managed runs started by this tick.
    pub started: Vec<JobKey>,
    /// Active Jobs left after the tick that can still make progress
    /// (blocked ones not counted).
    pub pending: usize,
    /// Runs of this scheduler still going.
    pub running: usize,
}

/// A timetable over some flows and one store.
#[derive(Clone)]
pub struct Timetable {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn FlowStore>,
    flows: HashMap<String, Entry>,
    clock: Arc<dyn WallClock>,
    engines: Arc<dyn EngineFactory>,
    options: TimetableOptions,
    cursors: Mutex<Cursors>,
    /// When the last tick saw the next Job fall due (a period closing plus
    /// its lag, a retry's backoff ending): the scheduler wakes then.
    next_due: Mutex<Option<DateTime<Utc>>>,
    running: Mutex<HashMap<JobKey, CancellationToken>>,
    /// Woken whenever a run of this scheduler ends.
    finished: tokio::sync::Notify,
    /// Cancels every engine when fired (SIGTERM after the grace period).
    cancel_runs: CancellationToken,
}

fn rank(q: TimeQualifier) -> u8 {
    match q {
        TimeQualifier::Hourly => 0,
        TimeQualifier::Daily => 1,
        TimeQualifier::Monthly => 2,
        TimeQualifier::Yearly => 3,
    }
}

/// The period before `tp`.
fn previous(tp: Timeperiod, q: TimeQualifier) -> Timeperiod {
    Timeperiod::containing(tp.start() - chrono::TimeDelta::seconds(1), q)
}

fn delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

impl Timetable {
    /// A timetable of `graphs` (each with a `[schedule]`) on `store`.
    pub fn new(
        graphs: Vec<Arc<FlowGraph>>,
        store: Arc<dyn FlowStore>,
        clock: Arc<dyn WallClock>,
        engines: Arc<dyn EngineFactory>,
        options: TimetableOptions,
    ) -> Result<Timetable, TimetableError> {
        let mut flows = HashMap::new();
        for graph in graphs {
            let name = graph.name().to_string();
            let schedule = graph
                .schedule()
                .cloned()
                .ok_or_else(|| TimetableError::NotScheduled(name.clone()))?;
            if flows
                .insert(name.clone(), Entry { graph, schedule })
                .is_some()
            {
                return Err(TimetableError::Duplicate(name));
            }
        }
        for (name, entry) in &flows {
            for upstream in &entry.schedule.depends_on_flows {
                if !flows.contains_key(upstream) {
                    return Err(TimetableError::UnknownUpstream {
                        flow: name.clone(),
                        upstream: upstream.clone(),
                    });
                }
            }
        }
        Ok(Timetable {
            inner: Arc::new(Inner {
                store,
                flows,
                clock,
                engines,
                options,
                cursors: Mutex::new(HashMap::new()),
                next_due: Mutex::new(None),
                running: Mutex::new(HashMap::new()),
                finished: tokio::sync::Notify::new(),
                cancel_runs: CancellationToken::new(),
            }),
        })
    }

    /// Creates the Jobs of the periods that closed, and starts what is due.
    pub async fn tick(&self) -> Result<TickReport, StoreError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut report = TickReport::default();
        let mut names: Vec<&String> = inner.flows.keys().collect();
        names.sort();
        let mut next_due: Option<DateTime<Utc>> = None;
        let mut due_at = |at: DateTime<Utc>| {
            next_due = Some(next_due.map_or(at, |n| n.min(at)));
        };
        for name in names {
            let (created, next) = inner.create_due_jobs(name, now).await?;
            report.created += created;
            due_at(next);
        }
        let active = inner
            .store
            .list_jobs(&JobQuery {
                states: vec![JobState::Embryo, JobState::InProgress, JobState::FinalRun],
                ..JobQuery::default()
            })
            .await?;
        for job in active {
            let Some(entry) = inner.flows.get(&job.process_name) else {
                continue;
            };
            if job.time_qualifier != entry.graph.time_qualifier() {
                continue;
            }
            let key = job.key();
            if inner.is_running(&key) {
                continue;
            }
            if job.state == JobState::Embryo {
                match inner.readiness(entry, job.timeperiod).await? {
                    Readiness::Ready => {}
                    Readiness::Waiting(_) => {
                        report.pending += 1;
                        continue;
                    }
                    Readiness::Blocked(_) => continue,
                }
            }
            report.pending += 1;
            if let Some(t) = job.not_before.filter(|t| *t > now) {
                due_at(t);
                continue;
            }
            if inner.running_count() >= inner.options.concurrency.max(1) {
                continue;
            }
            let Some(claim) = inner.claim(&key).await? else {
                continue;
            };
            report.pending -= 1;
            report.started.push(key.clone());
            self.spawn(key, claim);
        }
        report.running = inner.running_count();
        *inner
            .next_due
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = next_due;
        Ok(report)
    }

    /// When the next Job falls due as the last tick saw it (the next
    /// period closing plus its lag, or a retry's backoff ending), so a
    /// scheduler can tick then instead of waiting for its next poll.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        *self
            .inner
            .next_due
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(&self, key: JobKey, claim: Lease) {
        let cancel = self.inner.cancel_runs.child_token();
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), cancel.clone());
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let heartbeat = inner.spawn_heartbeat(claim.clone());
            if let Err(e) = inner.run_job(&key, &claim, &cancel).await {
                warn!(job = %key, "the Job's run could not be recorded: {e}");
            }
            heartbeat.abort();
            if let Err(e) = inner.store.release_lease(&claim).await {
                warn!(job = %key, "cannot release the Job's claim: {e}");
            }
            inner
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            inner.finished.notify_waiters();
        });
    }

    /// Runs of this scheduler still going.
    pub fn running(&self) -> usize {
        self.inner.running_count()
    }

    /// Waits until a run of this scheduler ends, or `timeout` passes.
    pub async fn wait_for_a_run(&self, timeout: Duration) {
        let notified = self.inner.finished.notified();
        if self.inner.running_count() == 0 {
            return;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
    }

    /// Waits until no run of this scheduler is going.
    pub async fn wait_idle(&self) {
        while self.inner.running_count() > 0 {
            self.wait_for_a_run(Duration::from_secs(1)).await;
        }
    }

    /// Cancels every running engine (they wind down as `flow run` does on
    /// SIGTERM) and starts no more.
    pub fn cancel_runs(&self) {
        self.inner.cancel_runs.cancel();
    }

    /// Where the Job of `flow` at `timeperiod` stands for its upstream
    /// Jobs.
    pub async fn readiness(
        &self,
        flow: &str,
        timeperiod: Timeperiod,
    ) -> Result<Readiness, StoreError> {
        match self.inner.flows.get(flow) {
            Some(entry) => self.inner.readiness(entry, timeperiod).await,
            None => Ok(Readiness::Ready),
        }
    }
}

impl Inner {
    fn is_running(&self, key: &JobKey) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(key)
    }

    fn running_count(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Creates the embryo Jobs of `name`'s periods that closed (plus lag)
    /// by `now`, from its cursor on; also says when the next one is due.
    async fn create_due_jobs(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<(usize, DateTime<Utc>), StoreError> {
        let entry = &self.flows[name];
        let q = entry.graph.time_qualifier();
        let lag = delta(entry.schedule.lag);
        let cursor = self
            .cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied();
        let mut next = match cursor {
            Some(next) => next,
            None => {
                let newest = self
                    .store
                    .list_jobs(&JobQuery {
                        process_name: Some(name.to_string()),
                        time_qualifier: Some(q),
                        limit: Some(1),
                        newest_first: true,
                        ..JobQuery::default()
                    })
                    .await?;
                match (newest.first(), entry.schedule.earliest_timeperiod) {
                    (Some(job), _) => job.timeperiod.next(q),
                    (None, Some(earliest)) => earliest,
                    // No backfill: the period that closed last.
                    (None, None) => previous(Timeperiod::containing(now - lag, q), q),
                }
            }
        };
        let mut created = 0;
        while next.next(q).start() + lag <= now {
            let key = JobKey::new(name, q, next);
            let mut job = TimetableJob::embryo(&key, now);
            job.depends_on_flows = entry.schedule.depends_on_flows.clone();
            job.due_at = Some(next.next(q).start() + lag);
            self.store.create_job(&job).await?;
            created += 1;
            let after = next.next(q);
            if after == next {
                break;
            }
            next = after;
        }
        self.cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), next);
        Ok((created, next.next(q).start() + lag))
    }

    async fn readiness(&self, entry: &Entry, tp: Timeperiod) -> Result<Readiness, StoreError> {
        let upstream: HashMap<String, TimeQualifier> = entry
            .schedule
            .depends_on_flows
            .iter()
            .filter_map(|name| {
                self.flows
                    .get(name)
                    .map(|up| (name.clone(), up.graph.time_qualifier()))
            })
            .collect();
        readiness(self.store.as_ref(), &entry.graph, &upstream, tp).await
    }

    /// Takes the Job's claim, unless another live scheduler holds it.
    async fn claim(&self, key: &JobKey) -> Result<Option<Lease>, StoreError> {
        match self
            .store
            .acquire_lease(
                &key.claim_key(),
                &self.options.owner,
                Utc::now(),
                self.options.claim_ttl,
            )
            .await?
        {
            LeaseOutcome::Acquired(lease) => Ok(Some(lease)),
            LeaseOutcome::HeldBy { .. } => Ok(None),
        }
    }

    fn spawn_heartbeat(self: &Arc<Self>, claim: Lease) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let every = self.options.heartbeat;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.renew_lease(&claim, Utc::now()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        warn!(claim = %claim.key, "lost the Job's claim to another scheduler");
                        return;
                    }
                    Err(e) => warn!(claim = %claim.key, "cannot renew the Job's claim: {e}"),
                }
            }
        })
    }

    /// One claimed Job: decide, record, run, record.
    async fn run_job(
        &self,
        key: &JobKey,
        claim: &Lease,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        let Some(mut job) = self.store.get_job(key).await? else {
            return Ok(());
        };
        if job.state.is_finished() {
            return Ok(());
        }
        let entry = &self.flows[&key.process_name];
        let flow_key = key.flow_key();
        // A run that started after the one the Job records belongs to a
        // claimant that died: trust its record rather than run again.
        let newest = self
            .store
            .list_runs(&RunQuery {
                flow_name: Some(flow_key.flow_name.clone()),
                timeperiod: Some(flow_key.timeperiod),
                limit: Some(1),
            })
            .await?
            .into_iter()
            .next();
        let started_since = newest.filter(|r| {
            job.state != JobState::Embryo && r.id.is_some() && r.id != job.related_unit_of_work
        });
        let mut requested = job.run_mode;
        if let Some(run) = &started_since {
            match run.outcome {
                Some(state) if run.finished_at.is_some() && state.is_complete() => {
                    let now = self.clock.now();
                    job.related_unit_of_work = run.id.clone();
                    job.state = job_state_of(state);
                    job.run_mode = None;
                    job.not_before = None;
                    job.log_event(now, &format!(
                        "run {} of a scheduler that stopped ended {state}: taken as the Job's outcome",
                        run.id.as_ref().map_or("?", |i| i.as_str())
                    ));
                    self.store.save_job(claim, &job).await?;
                    return Ok(());
                }
                _ => requested = Some(RunMode::Recovery),
            }
        }
        // Recovery needs a run to recover.
        if requested == Some(RunMode::Recovery) && self.store.get_flow(&flow_key).await?.is_none() {
            requested = Some(RunMode::Nominal);
        }
        let now = self.clock.now();
        job.state = JobState::InProgress;
        // As the flow file says now (a Job another build or Synergy wrote
        // has none): what `flow reprocess --cascade` looks dependants up by.
        job.depends_on_flows = entry.schedule.depends_on_flows.clone();
        job.started_at.get_or_insert(now);
        job.log_event(
            now,
            &format!(
                "managed run starting ({})",
                requested.map_or(
                    "mode resolved by the flow record or the default",
                    RunMode::as_str
                )
            ),
        );
        // Recorded before the run has any effect.
        job = self.store.save_job(claim, &job).await?;
        info!(job = %key, "managed run starting");

        let engine = self.engines.engine(&entry.graph, key.timeperiod);
        let engine_cancel = engine.cancel_token();
        let watcher = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                engine_cancel.cancel();
            })
        };
        let result = drive(&engine, &UnitMode::Managed { requested }).await;
        watcher.abort();
        let now = self.clock.now();
        match result {
            Ok(driven) => {
                let report = &driven.report;
                job.related_unit_of_work = Some(report.run.clone());
                match driven.outcome {
                    DriveOutcome::Processed | DriveOutcome::Noop => {
                        job.state = if driven.outcome == DriveOutcome::Noop {
                            JobState::Noop
                        } else {
                            JobState::Processed
                        };
                        job.run_mode = None;
                        job.not_before = None;
                        job.log_event(
                            now,
                            &format!(
                                "managed run {} ({}) ended {}",
                                report.run, driven.choice.mode, report.state
                            ),
                        );
                    }
                    DriveOutcome::Invalid if cancel.is_cancelled() => {
                        job.run_mode = Some(RunMode::Recovery);
                        job.log_event(now, &format!(
                            "managed run {} cancelled by the scheduler's shutdown; the next scheduler recovers it",
                            report.run
                        ));
                    }
                    DriveOutcome::Invalid => {
                        let why = report.error.clone().unwrap_or_else(|| {
                            report
                                .steps
                                .iter()
                                .filter(|(_, s)| !s.is_complete())
                                .map(|(s, state)| format!("step '{s}' {state}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        });
                        self.failed(
                            &mut job,
                            &entry.schedule,
                            now,
                            &format!(
                                "managed run {} ({}) failed: {why}",
                                report.run, driven.choice.mode
                            ),
                        );
                    }
                }
            }
            Err(EngineError::LeaseHeld { owner, .. }) => {
                job.not_before = Some(now + delta(self.options.heartbeat));
                job.log_event(
                    now,
                    &format!(
                    "the flow is being run by {owner}: waiting for it (not counted as a failure)"
                ),
                );
            }
            Err(EngineError::Refused {
                reason: Refusal::NotFailed { state },
                ..
            }) if state.is_complete() => {
                job.state = job_state_of(state);
                job.run_mode = None;
                job.not_before = None;
                job.log_event(
                    now,
                    &format!("the flow is already {state}: taken as the Job's outcome"),
                );
            }
            Err(e) => {
                self.failed(
                    &mut job,
                    &entry.schedule,
                    now,
                    &format!("managed run refused or failed: {e}"),
                );
            }
        }
        self.store.save_job(claim, &job).await?;
        Ok(())
    }

    /// Counts a failed managed run: retried in recovery mode after the
    /// backoff, or given up (`state_skipped`) past the retry limit.
    fn failed(&self, job: &mut TimetableJob, schedule: &Schedule, now: DateTime<Utc>, why: &str) {
        job.number_of_failures += 1;
        let text = flow_core::mask(why).into_owned();
        if job.number_of_failures > schedule.retry_limit {
            job.state = JobState::Skipped;
            job.not_before = None;
            job.log_event(now, &format!(
                "{text}; gave up after {} failed runs (retry limit {}): left skipped for a person (flow reprocess)",
                job.number_of_failures, schedule.retry_limit
            ));
        } else {
            let wait = schedule.backoff(job.number_of_failures);
            job.run_mode = Some(RunMode::Recovery);
            job.not_before = Some(now + delta(wait));
            job.log_event(
                now,
                &format!(
                    "{text}; retry {} of {} in recovery mode after {}",
                    job.number_of_failures,
                    schedule.retry_limit,
                    humantime::format_duration(wait)
                ),
            );
        }
    }
}

/// Where the Job of `graph`'s period `tp` stands for its upstream Jobs:
/// for each flow of `upstream` (name and qualifier), the Jobs covering the
/// period (every finer period inside it, or the coarser period holding it)
/// must be `processed` or `noop`; a `skipped` one blocks it.
pub async fn readiness(
    store: &dyn FlowStore,
    graph: &FlowGraph,
    upstream: &HashMap<String, TimeQualifier>,
    tp: Timeperiod,
) -> Result<Readiness, StoreError> {
    let q = graph.time_qualifier();
    let mut waiting = Vec::new();
    let mut blocked = Vec::new();
    let mut names: Vec<&String> = upstream.keys().collect();
    names.sort();
    for name in names {
        let uq = upstream[name];
        let (from, to) = if rank(uq) <= rank(q) {
            (tp.within(uq), tp.next(q).within(uq))
        } else {
            let holder = tp.within(uq);
            (holder, holder.next(uq))
        };
        let jobs = store
            .list_jobs(&JobQuery {
                process_name: Some(name.clone()),
                time_qualifier: Some(uq),
                from: Some(from),
                to: Some(to),
                ..JobQuery::default()
            })
            .await?;
        let states: HashMap<Timeperiod, JobState> =
            jobs.iter().map(|j| (j.timeperiod, j.state)).collect();
        let mut period = from;
        while period < to {
            let label = format!("{name}@{period}");
            match states.get(&period) {
                Some(s) if s.is_complete() => {}
                Some(JobState::Skipped) => blocked.push(label),
                _ => waiting.push(label),
            }
            let after = period.next(uq);
            if after == period {
                break;
            }
            period = after;
        }
    }
    Ok(if !blocked.is_empty() {
        Readiness::Blocked(blocked)
    } else if !waiting.is_empty() {
        Readiness::Waiting(waiting)
    } else {
        Readiness::Ready
    })
}

/// The Job state a finished flow state stands for.
fn job_state_of(state: FlowState) -> JobState {
    if state == FlowState::Noop {
        JobState::Noop
    } else {
        JobState::Processed
    }
}

/// The finished Jobs that depend on `key`'s, directly or through other
/// dependants, upstream ones first: what `flow reprocess --cascade` sends
/// back with it. A dependant is a flow whose `depends_on_flows` names the
/// upstream: as its Jobs in the store record it (whichever host scheduled
/// them, from whatever file), or as one of `graphs` (flow files at hand,
/// for Jobs written without the record: by Synergy, or an older build)
/// says. Its Jobs are those of the periods covering the upstream's.
pub async fn cascade(
    store: &dyn FlowStore,
    key: &JobKey,
    graphs: &[Arc<FlowGraph>],
) -> Result<Vec<TimetableJob>, StoreError> {
    let mut found: Vec<TimetableJob> = Vec::new();
    let mut seen = std::collections::HashSet::from([key.clone()]);
    let mut queue = std::collections::VecDeque::from([key.clone()]);
    while let Some(upstream) = queue.pop_front() {
        for q in [
            TimeQualifier::Hourly,
            TimeQualifier::Daily,
            TimeQualifier::Monthly,
            TimeQualifier::Yearly,
        ] {
            let periods = covering(upstream.timeperiod, upstream.time_qualifier, q);
            let (Some(first), Some(last)) = (periods.first(), periods.last()) else {
                continue;
            };
            let jobs = store
                .list_jobs(&JobQuery {
                    time_qualifier: Some(q),
                    from: Some(*first),
                    to: Some(last.next(q)).filter(|end| end > last),
                    ..JobQuery::default()
                })
                .await?;
            for job in jobs {
                let by_file = || {
                    graphs.iter().any(|g| {
                        g.name() == job.process_name
                            && g.time_qualifier() == q
                            && g.schedule().is_some_and(|s| {
                                s.depends_on_flows.contains(&upstream.process_name)
                            })
                    })
                };
                let depends = job.depends_on_flows.contains(&upstream.process_name) || by_file();
                if depends && job.state.is_finished() && seen.insert(job.key()) {
                    queue.push_back(job.key());
                    found.push(job);
                }
            }
        }
    }
    Ok(found)
}

/// The periods of `dependant_q` whose Jobs cover `tp` of `q` (the inverse
/// of a dependency's covering: the coarser period holding it, or every
/// finer period inside it).
pub fn covering(tp: Timeperiod, q: TimeQualifier, dependant_q: TimeQualifier) -> Vec<Timeperiod> {
    if rank(dependant_q) >= rank(q) {
        return vec![tp.within(dependant_q)];
    }
    let mut out = Vec::new();
    let end = tp.next(q).within(dependant_q);
    let mut p = tp.within(dependant_q);
    while p < end {
        out.push(p);
        let after = p.next(dependant_q);
        if after == p {
            break;
        }
        p = after;
    }
    out
}

/// Why a freerun mode (`run_one`, `run_from`) may not run on `graph` at
/// `timeperiod`: on a scheduled flow it needs that period's Job finished
/// (processed, noop or skipped), as the Synergy Scheduler required; it never
/// changes the Job. `None`: it may run.
pub async fn freerun_refusal(
    store: &dyn FlowStore,
    graph: &FlowGraph,
    timeperiod: Timeperiod,
) -> Result<Option<String>, StoreError> {
    if graph.schedule().is_none() {
        return Ok(None);
    }
    let key = JobKey::new(graph.name(), graph.time_qualifier(), timeperiod);
    Ok(match store.get_job(&key).await? {
        Some(job) if job.state.is_finished() => None,
        Some(job) => Some(format!(
            "flow '{}' is scheduled and its Job for {timeperiod} is {}: a freerun run (run-one, run-from) needs a finished Job; wait for the timetable, or `flow skip` the Job first",
            graph.name(),
            job.state
        )),
        None => Some(format!(
            "flow '{}' is scheduled and has no Job for {timeperiod} yet: a freerun run (run-one, run-from) needs a finished Job",
            graph.name()
        )),
    })
}
