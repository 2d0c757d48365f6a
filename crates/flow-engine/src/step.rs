//! Running one step: `pre` → `main` → `post`, with retries, timeouts,
//! cleanup after every action, and the step's record saved when it starts,
//! when an action hands a job to a cluster (the job's handle, before the
//! engine waits for it), after each action but the last, and when it ends.
//!
//! A step a dead run left half-way goes on where it stopped: the actions it
//! completed are not run again, and the job it was waiting for is adopted
//! (waited for, or taken as done if it succeeded meanwhile) instead of
//! submitted a second time. When a step fails for good, the actions it
//! completed are rolled back, newest first.

use crate::engine::end_span;
use crate::run_context::RunContext;
use async_trait::async_trait;
use chrono::Utc;
use flow_core::{
    ActionContext, ActionError, ActionInstance, ActionOutcome, ActionSetState, Cluster,
    ClusterError, JobHandle, JobRecord, JobRecorder, JobStatus, NoJobRecorder, Rollback,
    RollbackCause, RollbackRecord, StepDefinition, StepRecord, StepState, StoreError,
};
use futures_util::FutureExt;
use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

/// Why one attempt of a step failed.
#[derive(Debug)]
enum Failure {
    Action {
        action: String,
        source: ActionError,
    },
    Panicked {
        action: String,
        message: String,
    },
    Cleanup {
        action: String,
        source: ActionError,
    },
    TimedOut {
        what: String,
        after: Duration,
    },
    /// A job a dead run started ended badly while no engine watched.
    Adopted {
        action: String,
        message: String,
    },
    /// A dead run's job that may still run and could not be stopped: the
    /// step is not retried (the job would run twice at once).
    Unstoppable {
        action: String,
        message: String,
    },
    /// Following a job was given up ([`ClusterError::OutcomeUnknown`], or
    /// a dead run's job could not be asked about): not a failed attempt.
    /// The step stays in progress with the job's handle, nothing more is
    /// submitted for it, and the next engine adopts or cancels the job, as
    /// after a crash.
    Unknown {
        action: String,
        message: String,
    },
    Cancelled,
    Store(StoreError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Action { action, source } => write!(f, "action '{action}' failed: {source}"),
            Failure::Panicked { action, message } => {
                write!(f, "action '{action}' panicked: {message}")
            }
            Failure::Cleanup { action, source } => {
                write!(f, "cleanup of action '{action}' failed: {source}")
            }
            Failure::TimedOut { what, after } => {
                write!(f, "{what} timed out after {}", humanize(*after))
            }
            Failure::Adopted { action, message } | Failure::Unstoppable { action, message } => {
                write!(f, "action '{action}' failed: {message}")
            }
            Failure::Unknown { action, message } => write!(f, "action '{action}': {message}"),
            Failure::Cancelled => f.write_str("cancelled"),
            Failure::Store(e) => write!(f, "{e}"),
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn panic_message(panic: Box<dyn Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// How a guarded future ended.
enum Guarded<T> {
    Done {
        output: T,
        timed_out: bool,
    },
    /// Still running a grace period after its token fired; dropped.
    Abandoned {
        timed_out: bool,
    },
}

impl<T> Guarded<Result<T, Failure>> {
    /// The outcome as a failure: a timed-out `what` (limited to `limit`)
    /// when the timeout fired, cancelled when the work was dropped.
    fn into_result(
        self,
        what: impl FnOnce() -> String,
        limit: Option<Duration>,
    ) -> Result<T, Failure> {
        match self {
            Guarded::Done {
                output: Err(Failure::Cancelled),
                timed_out: true,
            }
            | Guarded::Abandoned { timed_out: true } => Err(Failure::TimedOut {
                what: what(),
                after: limit.unwrap_or_default(),
            }),
            Guarded::Done { output, .. } => output,
            Guarded::Abandoned { timed_out: false } => Err(Failure::Cancelled),
        }
    }
}

/// Runs `fut`. When `timeout` passes, fires `token`. Once `token` fired (by
/// the timeout or a parent's cancellation), gives `fut` `grace` to wind down
/// (cleanups run in that time), then drops it.
async fn guarded<T>(
    token: &CancellationToken,
    timeout: Option<Duration>,
    grace: Duration,
    fut: impl Future<Output = T>,
) -> Guarded<T> {
    tokio::pin!(fut);
    let mut timed_out = false;
    let timer = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        output = &mut fut => return Guarded::Done { output, timed_out },
        _ = token.cancelled() => {}
        _ = timer => {
            timed_out = true;
            token.cancel();
        }
    }
    match tokio::time::timeout(grace, &mut fut).await {
        Ok(output) => Guarded::Done { output, timed_out },
        Err(_) => Guarded::Abandoned { timed_out },
    }
}

/// The step's actions in the order they run: `pre`, `main`, `post`, each
/// with its group (0, 1, 2).
fn actions(step: &StepDefinition) -> impl Iterator<Item = (usize, &ActionInstance)> {
    step.pre
        .iter()
        .map(|a| (0, a))
        .chain(std::iter::once((1, &step.main)))
        .chain(step.post.iter().map(|a| (2, a)))
}

/// The action at `index` in running order, if the step has that many.
pub(crate) fn action_at(step: &StepDefinition, index: usize) -> Option<&ActionInstance> {
    actions(step).nth(index).map(|(_, a)| a)
}

fn action_count(step: &StepDefinition) -> usize {
    step.pre.len() + 1 + step.post.len()
}

/// The group (0 pre, 1 main, 2 post) of the action at `index`.
fn group_of(step: &StepDefinition, index: usize) -> usize {
    if index < step.pre.len() {
        0
    } else if index == step.pre.len() {
        1
    } else {
        2
    }
}

fn group_states(record: &mut StepRecord) -> [&mut ActionSetState; 3] {
    [
        &mut record.pre_state,
        &mut record.main_state,
        &mut record.post_state,
    ]
}

/// Marks groups before `group` complete, `group` running, the rest
/// pending.
fn enter_group(record: &mut StepRecord, group: usize) {
    for (i, state) in group_states(record).into_iter().enumerate() {
        *state = if i < group {
            ActionSetState::Complete
        } else if i == group {
            ActionSetState::Running
        } else {
            ActionSetState::Pending
        };
    }
}

/// The step's record while the step runs: changed in place, saved as a
/// whole. Actions reach it through [`JobSlot`] to record their jobs.
struct StepWriter<'a> {
    shared: &'a RunContext,
    record: Mutex<StepRecord>,
}

impl<'a> StepWriter<'a> {
    fn new(shared: &'a RunContext, record: StepRecord) -> Self {
        StepWriter {
            shared,
            record: Mutex::new(record),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StepRecord> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update<R>(&self, change: impl FnOnce(&mut StepRecord) -> R) -> R {
        change(&mut self.lock())
    }

    /// Saves the record under the run's lease; a fenced write means the
    /// lease is lost, which stops the run.
    async fn save(&self) -> Result<(), StoreError> {
        let snapshot = self.lock().clone();
        match self
            .shared
            .store
            .save_step(&self.shared.lease, &snapshot)
            .await
        {
            Ok(id) => {
                self.lock().id = Some(id);
                Ok(())
            }
            Err(e) => {
                self.shared.store_failed(&e);
                Err(e)
            }
        }
    }

    fn into_record(self) -> StepRecord {
        self.record
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Records the jobs one action submits in the step's record.
struct JobSlot<'a> {
    writer: &'a StepWriter<'a>,
    index: u32,
    action: &'a str,
    attempt: u32,
}

#[async_trait]
impl JobRecorder for JobSlot<'_> {
    async fn record(&self, handle: &JobHandle) -> Result<(), ActionError> {
        self.writer.update(|r| {
            r.job = Some(JobRecord {
                action_index: self.index,
                action: self.action.to_string(),
                attempt: self.attempt,
                handle: handle.clone(),
                submitted_at: Utc::now(),
                adopted: false,
            })
        });
        self.writer.save().await.map_err(ActionError::Store)
    }
}

/// Runs step `index` on `cluster`, saving its record as it goes. Returns
/// the final record and state, or the store error that stopped it.
pub(crate) async fn run_step(
    shared: &RunContext,
    index: usize,
    cluster: &dyn Cluster,
    record: StepRecord,
) -> (StepRecord, Result<StepState, StoreError>) {
    let step = shared.graph.step(index);
    let started = Instant::now();
    let resume = record.is_resumable();
    let writer = StepWriter::new(shared, record);
    let since = writer.update(|r| {
        r.finished_at = None;
        r.error = None;
        if !resume {
            r.started_at = Some(Utc::now());
            r.attempts = 0;
            r.actions_done = 0;
            r.job = None;
        }
        *r.started_at.get_or_insert_with(Utc::now)
    });
    if let Some(o) = &shared.observer {
        o.step_attempt(&step.name, since);
        o.step_started(&step.name, cluster.name());
    }

    let state = if step.skip {
        info!("skipped");
        writer.update(|r| {
            for s in group_states(r) {
                *s = ActionSetState::Complete;
            }
        });
        StepState::Noop
    } else {
        info!(cluster = cluster.name(), "started");
        writer.update(|r| r.state = StepState::InProgress);
        match attempts(shared, step, cluster, &writer, resume).await {
            Ok(state) => state,
            Err(e) => {
                error!("store failed: {e}");
                return (writer.into_record(), Err(e));
            }
        }
    };
    writer.update(|r| {
        r.state = state;
        // A step left in progress (its job's outcome unknown) has not
        // finished: the next engine takes it over.
        r.finished_at = (state != StepState::InProgress).then(Utc::now);
    });
    if let Err(e) = writer.save().await {
        error!("store failed: {e}");
        return (writer.into_record(), Err(e));
    }
    let elapsed = started.elapsed();
    match state {
        StepState::Processed | StepState::Noop => info!("{state} in {}", humanize(elapsed)),
        StepState::InProgress => error!(
            "left {state} after {}: its job's outcome is unknown; `flow recover` (or any next run) adopts or cancels the job before submitting anything for this step",
            humanize(elapsed)
        ),
        _ => error!("{state} after {}", humanize(elapsed)),
    }
    if let Some(o) = &shared.observer {
        o.step_finished(&step.name, state, elapsed);
    }
    (writer.into_record(), Ok(state))
}

/// Attempts the step until it succeeds, runs out of retries or is cancelled.
/// `resume`: the first attempt goes on with a dead run's attempt.
async fn attempts(
    shared: &RunContext,
    step: &StepDefinition,
    cluster: &dyn Cluster,
    writer: &StepWriter<'_>,
    mut resume: bool,
) -> Result<StepState, StoreError> {
    let total = step.retry.retries + 1;
    loop {
        let (attempt, adopt) = if resume {
            resume = false;
            let (attempt, done, job) = writer.update(|r| {
                r.attempts = r.attempts.max(1);
                enter_group(r, group_of(step, r.actions_done as usize));
                let job = r
                    .job
                    .clone()
                    .filter(|job| job.action_index == r.actions_done);
                (r.attempts, r.actions_done, job)
            });
            match &job {
                Some(job) => info!(
                    "resuming attempt {attempt} of a run that stopped: {done} action(s) done, {} was running",
                    job.handle
                ),
                None => info!(
                    "resuming attempt {attempt} of a run that stopped: {done} action(s) done"
                ),
            }
            (attempt, job)
        } else {
            let attempt = writer.update(|r| {
                r.attempts += 1;
                r.actions_done = 0;
                r.job = None;
                enter_group(r, group_of(step, 0));
                r.attempts
            });
            writer.save().await?;
            if total > 1 {
                info!("attempt {attempt} of {total}");
            }
            (attempt, None)
        };
        let token = shared.cancel.child_token();
        let result = guarded(
            &token,
            step.timeout,
            shared.grace,
            run_actions(shared, step, cluster, writer, &token, attempt, adopt),
        )
        .await
        .into_result(|| "step".into(), step.timeout);
        match result {
            Ok(ActionOutcome::Done) => return Ok(StepState::Processed),
            Ok(ActionOutcome::NothingToProcess) => return Ok(StepState::Noop),
            Err(Failure::Store(e)) => return Err(e),
            Err(failure @ Failure::Unknown { .. }) => {
                // Not retried and not rolled back: the job may still run.
                error!("{failure}");
                writer.update(|r| r.error = Some(failure.to_string()));
                shared.outcome_unknown(cluster.name());
                return Ok(StepState::InProgress);
            }
            Err(_) if shared.cancel.is_cancelled() => {
                writer.update(|r| r.error = Some("cancelled".into()));
                warn!("cancelled");
                return Ok(StepState::Canceled);
            }
            Err(failure) => {
                writer.update(|r| r.error = Some(failure.to_string()));
                if attempt < total && !matches!(failure, Failure::Unstoppable { .. }) {
                    let delay = step.retry.delay_before(attempt);
                    warn!(
                        "attempt {attempt} of {total} failed: {failure}; retrying in {}",
                        humanize(delay)
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = shared.cancel.cancelled() => {
                            writer.update(|r| r.error = Some("cancelled".into()));
                            return Ok(StepState::Canceled);
                        }
                    }
                }
                error!("{failure}");
                let done = writer.update(|r| r.actions_done) as usize;
                let (records, rollback_error) =
                    roll_back(shared, step, cluster, done, RollbackCause::StepFailed).await;
                writer.update(|r| {
                    r.rollbacks.extend(records);
                    if let Some(e) = rollback_error {
                        r.error = Some(format!("{failure}; {e}"));
                    }
                });
                return Ok(StepState::Invalid);
            }
        }
    }
}

/// Runs the step's actions from the first one not done yet. `adopt`: the
/// job of that action a dead run left, to take over instead of running the
/// action again.
async fn run_actions(
    shared: &RunContext,
    step: &StepDefinition,
    cluster: &dyn Cluster,
    writer: &StepWriter<'_>,
    token: &CancellationToken,
    attempt: u32,
    mut adopt: Option<JobRecord>,
) -> Result<ActionOutcome, Failure> {
    let total = action_count(step);
    let start = writer.update(|r| r.actions_done as usize);
    for (index, (group, instance)) in actions(step).enumerate().skip(start) {
        let slot = JobSlot {
            writer,
            index: index as u32,
            action: &instance.name,
            attempt,
        };
        let outcome = run_action(
            shared,
            step,
            (group, instance),
            cluster,
            token,
            &slot,
            adopt.take(),
        )
        .await;
        match outcome {
            Ok(ActionOutcome::Done) => {
                let next = index + 1;
                writer.update(|r| {
                    r.actions_done = next as u32;
                    if next < total {
                        enter_group(r, group_of(step, next));
                    } else {
                        for s in group_states(r) {
                            *s = ActionSetState::Complete;
                        }
                    }
                });
                // The last action's completion is saved with the step's end.
                if next < total {
                    writer.save().await.map_err(Failure::Store)?;
                }
            }
            Ok(ActionOutcome::NothingToProcess) => {
                writer.update(|r| {
                    *group_states(r)[group] = ActionSetState::Complete;
                    r.actions_done = index as u32 + 1;
                });
                info!(action = instance.name.as_str(), "nothing to process");
                return Ok(ActionOutcome::NothingToProcess);
            }
            Err(failure @ Failure::Unknown { .. }) => return Err(failure),
            Err(failure) => {
                writer.update(|r| *group_states(r)[group] = ActionSetState::Failed);
                return Err(failure);
            }
        }
    }
    Ok(ActionOutcome::Done)
}

/// Turns a cluster error of a job into the action's failure.
fn job_failure(action: &str, e: ClusterError) -> Failure {
    match e {
        ClusterError::Cancelled { .. } => Failure::Cancelled,
        e @ ClusterError::OutcomeUnknown { .. } => Failure::Unknown {
            action: action.to_string(),
            message: e.to_string(),
        },
        other => Failure::Action {
            action: action.to_string(),
            source: ActionError::Cluster(other),
        },
    }
}

/// Takes over the job a dead run's engine left for this action: waits for
/// it if it runs, takes it as done if it succeeded meanwhile, counts a
/// failed attempt if it failed or is lost. `None`: it was never submitted,
/// so the action runs as usual.
async fn adopt_job(
    shared: &RunContext,
    cx: &ActionContext<'_>,
    slot: &JobSlot<'_>,
    job: &JobRecord,
) -> Option<Result<ActionOutcome, Failure>> {
    let name = &job.action;
    let handle = &job.handle;
    let status = match cx.cluster.status(handle).await {
        Ok(status) => status,
        // Not knowing is no failure of the job: it may run, so nothing is
        // submitted in its place.
        Err(e) => {
            return Some(Err(Failure::Unknown {
                action: name.clone(),
                message: format!("outcome unknown: cannot ask about {handle}: {e}"),
            }))
        }
    };
    if status == JobStatus::NotSubmitted {
        info!("{handle} was prepared but never submitted: submitting it now");
        return None;
    }
    let adopted = matches!(status, JobStatus::Running | JobStatus::Succeeded);
    if adopted {
        slot.writer.update(|r| {
            if let Some(job) = &mut r.job {
                job.adopted = true;
            }
        });
        if let Err(e) = slot.writer.save().await {
            return Some(Err(Failure::Store(e)));
        }
        if let Some(o) = &shared.observer {
            o.job_adopted(cx.step, handle);
        }
    }
    // The job's span in the trace of this run: what became of it.
    let span = flow_core::JobSpan::new(cx.cluster.name(), true);
    span.handle(handle);
    Some(match status {
        JobStatus::Running => {
            info!("adopted {handle}: still running after the engine that started it stopped; waiting for it");
            let waited = cx
                .cluster
                .wait(handle, &cx.job_context())
                .instrument(span.span().clone())
                .await;
            span.end(match &waited {
                Ok(()) => flow_core::JobEnd::Succeeded,
                Err(flow_core::ClusterError::Cancelled { .. }) => flow_core::JobEnd::Cancelled,
                Err(_) => flow_core::JobEnd::Failed,
            });
            match waited {
                Ok(()) => Ok(ActionOutcome::Done),
                Err(e) => Err(job_failure(name, e)),
            }
        }
        JobStatus::Succeeded => {
            info!("adopted {handle}: it succeeded while no engine watched; not running it again");
            span.end(flow_core::JobEnd::Succeeded);
            Ok(ActionOutcome::Done)
        }
        other => {
            warn!("{handle} {other} while no engine watched");
            span.end(flow_core::JobEnd::Failed);
            let mut message = format!("its job {handle} {other} while no engine watched");
            if matches!(other, JobStatus::Lost { .. }) {
                // What the lost job started may still run: it must be gone
                // before the retry starts the job again.
                if let Err(e) = cx.cluster.cancel(handle).await {
                    message = format!(
                        "{message}, and what is left of it could not be ended ({e}): not retried, so it cannot run twice"
                    );
                    return Some(Err(Failure::Unstoppable {
                        action: name.clone(),
                        message,
                    }));
                }
            }
            Err(Failure::Adopted {
                action: name.clone(),
                message,
            })
        }
    })
}

/// Runs one attempt of an action (`group`: 0 pre, 1 main, 2 post) under
/// its own span.
async fn run_action(
    shared: &RunContext,
    step: &StepDefinition,
    (group, instance): (usize, &ActionInstance),
    cluster: &dyn Cluster,
    step_token: &CancellationToken,
    slot: &JobSlot<'_>,
    adopt: Option<JobRecord>,
) -> Result<ActionOutcome, Failure> {
    let span = info_span!(
        "action",
        action = instance.name.as_str(),
        phase = ["pre", "main", "post"][group.min(2)],
        attempt = i64::from(slot.attempt),
        state = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if instance.skip {
        span.in_scope(|| info!("skipped"));
        end_span(&span, "skipped", false);
        return Ok(ActionOutcome::Done);
    }
    let token = step_token.child_token();
    let name = &instance.name;
    let work = async {
        let cx = ActionContext {
            execution: &shared.context,
            step: &step.name,
            action: name,
            attempt: slot.attempt,
            cluster,
            cancel: &token,
            jobs: slot,
        };
        let adopted = match &adopt {
            Some(job) => adopt_job(shared, &cx, slot, job).await,
            None => None,
        };
        let result = match adopted {
            Some(result) => result,
            None => match AssertUnwindSafe(instance.action.run(&cx))
                .catch_unwind()
                .await
            {
                Ok(Ok(outcome)) => Ok(outcome),
                Ok(Err(ActionError::Cancelled)) => Err(Failure::Cancelled),
                Ok(Err(ActionError::Store(e))) => Err(Failure::Store(e)),
                Ok(Err(ActionError::Cluster(e))) if e.is_outcome_unknown() => {
                    Err(job_failure(name, e))
                }
                Ok(Err(source)) => Err(Failure::Action {
                    action: name.clone(),
                    source,
                }),
                Err(panic) => Err(Failure::Panicked {
                    action: name.clone(),
                    message: panic_message(panic),
                }),
            },
        };
        if let Err(Failure::Store(_) | Failure::Unknown { .. }) = &result {
            // The lease may be lost: no cleanup, nothing more. A job whose
            // outcome is unknown may still need what cleanup would remove:
            // as after a crash, nothing is cleaned up.
            return result;
        }
        let cleanup = match AssertUnwindSafe(instance.action.cleanup(&cx))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => None,
            Ok(Err(source)) => Some(Failure::Cleanup {
                action: name.clone(),
                source,
            }),
            Err(panic) => Some(Failure::Panicked {
                action: format!("{name} (cleanup)"),
                message: panic_message(panic),
            }),
        };
        match (result, cleanup) {
            (Ok(outcome), None) => Ok(outcome),
            (Ok(_), Some(cleanup)) => Err(cleanup),
            (Err(failure), Some(cleanup)) => {
                error!("{cleanup}");
                Err(failure)
            }
            (Err(failure), None) => Err(failure),
        }
    };
    let result = guarded(
        &token,
        instance.timeout,
        shared.grace,
        work.instrument(span.clone()),
    )
    .await
    .into_result(|| format!("action '{name}'"), instance.timeout);
    match &result {
        Ok(ActionOutcome::Done) => end_span(&span, "complete", false),
        Ok(ActionOutcome::NothingToProcess) => end_span(&span, "noop", false),
        Err(Failure::Cancelled) => end_span(&span, "canceled", false),
        Err(_) => end_span(&span, "failed", true),
    }
    result
}

/// Rolls back the first `done` actions of `step` (those that completed),
/// newest first, logging each under `STEP.ACTION.rollback`. Stops at the
/// first rollback that fails (undoing further on an inconsistent state
/// could do harm). Returns what ran and, if one failed, why.
pub(crate) async fn roll_back(
    shared: &RunContext,
    step: &StepDefinition,
    cluster: &dyn Cluster,
    done: usize,
    cause: RollbackCause,
) -> (Vec<RollbackRecord>, Option<String>) {
    let mut records = Vec::new();
    let completed: Vec<&ActionInstance> = actions(step).take(done).map(|(_, a)| a).collect();
    for instance in completed.into_iter().rev() {
        if instance.skip {
            continue;
        }
        let label = format!("{}.rollback", instance.name);
        let span = info_span!("action", action = label.as_str());
        let token = shared.cancel.child_token();
        let work = async {
            let cx = ActionContext {
                execution: &shared.context,
                step: &step.name,
                action: &label,
                attempt: 1,
                cluster,
                cancel: &token,
                jobs: &NoJobRecorder,
            };
            let result = match &instance.rollback {
                Some(undo) => {
                    let ran = AssertUnwindSafe(undo.run(&cx)).catch_unwind().await;
                    let cleaned = AssertUnwindSafe(undo.cleanup(&cx)).catch_unwind().await;
                    match (ran, cleaned) {
                        (Ok(Ok(_)), Ok(Ok(()))) => Ok(Rollback::Undone),
                        (Ok(Err(e)), _) | (Ok(Ok(_)), Ok(Err(e))) => Err(e.to_string()),
                        (Err(panic), _) | (_, Err(panic)) => {
                            Err(format!("panicked: {}", panic_message(panic)))
                        }
                    }
                }
                None => match AssertUnwindSafe(instance.action.rollback(&cx))
                    .catch_unwind()
                    .await
                {
                    Ok(Ok(outcome)) => Ok(outcome),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(panic) => Err(format!("panicked: {}", panic_message(panic))),
                },
            };
            match &result {
                Ok(Rollback::Undone) => info!("rolled back"),
                Ok(Rollback::NothingToUndo) => {}
                Err(e) => error!("rollback failed: {e}"),
            }
            result
        };
        let result = guarded(
            &token,
            instance.timeout,
            shared.grace,
            work.instrument(span),
        )
        .await;
        let result = match result {
            Guarded::Done { output, .. } => output,
            Guarded::Abandoned { .. } => Err("did not finish in its grace period".to_string()),
        };
        match result {
            Ok(Rollback::NothingToUndo) => {}
            Ok(Rollback::Undone) => records.push(RollbackRecord {
                action: instance.name.clone(),
                cause,
                at: Utc::now(),
                error: None,
            }),
            Err(e) => {
                records.push(RollbackRecord {
                    action: instance.name.clone(),
                    cause,
                    at: Utc::now(),
                    error: Some(e.clone()),
                });
                return (
                    records,
                    Some(format!(
                        "rollback of action '{}' failed: {e}",
                        instance.name
                    )),
                );
            }
        }
    }
    (records, None)
}
