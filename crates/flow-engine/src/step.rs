//! Running one step: `pre` → `main` → `post`, with retries, timeouts,
//! cleanup after every action, and a store write at each phase change.

use crate::engine::Shared;
use flow_core::{
    ActionContext, ActionError, ActionInstance, ActionOutcome, ActionSetState, Cluster,
    StepDefinition, StepRecord, StepState, StoreError,
};
use futures_util::FutureExt;
use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

/// Why one attempt of a step failed.
#[derive(Debug)]
enum Failure {
    Action { action: String, source: ActionError },
    Panicked { action: String, message: String },
    Cleanup { action: String, source: ActionError },
    TimedOut { what: String, after: Duration },
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

fn group_states(record: &mut StepRecord) -> [&mut ActionSetState; 3] {
    [
        &mut record.pre_state,
        &mut record.main_state,
        &mut record.post_state,
    ]
}

/// Marks empty groups before `group` complete, `group` running, the rest
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

/// Runs step `index` on `cluster`, saving its record at each phase change.
/// Returns the final record and state, or the store error that stopped it.
pub(crate) async fn run_step(
    shared: &Shared,
    index: usize,
    cluster: &dyn Cluster,
    mut record: StepRecord,
) -> (StepRecord, Result<StepState, StoreError>) {
    let step = shared.graph.step(index);
    let started = Instant::now();
    let now = chrono::Utc::now();
    record.started_at = Some(now);
    record.finished_at = None;
    record.error = None;
    record.attempts = 0;
    if let Some(o) = &shared.observer {
        o.step_started(&step.name, cluster.name());
    }

    let state = if step.skip {
        info!("skipped");
        for s in group_states(&mut record) {
            *s = ActionSetState::Complete;
        }
        StepState::Noop
    } else {
        info!(cluster = cluster.name(), "started");
        record.state = StepState::InProgress;
        match attempts(shared, step, cluster, &mut record).await {
            Ok(state) => state,
            Err(e) => {
                error!("store failed: {e}");
                return (record, Err(e));
            }
        }
    };
    record.state = state;
    record.finished_at = Some(chrono::Utc::now());
    if let Err(e) = save(shared, &mut record).await {
        error!("store failed: {e}");
        return (record, Err(e));
    }
    let elapsed = started.elapsed();
    match state {
        StepState::Processed | StepState::Noop => info!("{state} in {}", humanize(elapsed)),
        _ => error!("{state} after {}", humanize(elapsed)),
    }
    if let Some(o) = &shared.observer {
        o.step_finished(&step.name, state, elapsed);
    }
    (record, Ok(state))
}

async fn save(shared: &Shared, record: &mut StepRecord) -> Result<(), StoreError> {
    let id = shared.store.save_step(record).await?;
    record.id = Some(id);
    Ok(())
}

/// Attempts the step until it succeeds, runs out of retries or is cancelled.
async fn attempts(
    shared: &Shared,
    step: &StepDefinition,
    cluster: &dyn Cluster,
    record: &mut StepRecord,
) -> Result<StepState, StoreError> {
    let total = step.retry.retries + 1;
    loop {
        record.attempts += 1;
        let attempt = record.attempts;
        let first_group = if step.pre.is_empty() { 1 } else { 0 };
        enter_group(record, first_group);
        save(shared, record).await?;
        if total > 1 {
            info!("attempt {attempt} of {total}");
        }
        let token = shared.cancel.child_token();
        let result = guarded(
            &token,
            step.timeout,
            shared.grace,
            run_groups(shared, step, cluster, record, &token),
        )
        .await
        .into_result(|| "step".into(), step.timeout);
        match result {
            Ok(ActionOutcome::Done) => return Ok(StepState::Processed),
            Ok(ActionOutcome::NothingToProcess) => return Ok(StepState::Noop),
            Err(Failure::Store(e)) => return Err(e),
            Err(_) if shared.cancel.is_cancelled() => {
                record.error = Some("cancelled".into());
                warn!("cancelled");
                return Ok(StepState::Canceled);
            }
            Err(failure) => {
                record.error = Some(failure.to_string());
                if attempt < total {
                    let delay = step.retry.delay_before(attempt);
                    warn!(
                        "attempt {attempt} of {total} failed: {failure}; retrying in {}",
                        humanize(delay)
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = shared.cancel.cancelled() => {
                            record.error = Some("cancelled".into());
                            return Ok(StepState::Canceled);
                        }
                    }
                }
                error!("{failure}");
                return Ok(StepState::Invalid);
            }
        }
    }
}

async fn run_groups(
    shared: &Shared,
    step: &StepDefinition,
    cluster: &dyn Cluster,
    record: &mut StepRecord,
    token: &CancellationToken,
) -> Result<ActionOutcome, Failure> {
    let groups: [&[ActionInstance]; 3] = [&step.pre, std::slice::from_ref(&step.main), &step.post];
    let first = if step.pre.is_empty() { 1 } else { 0 };
    for (g, actions) in groups.into_iter().enumerate() {
        if actions.is_empty() {
            *group_states(record)[g] = ActionSetState::Complete;
            continue;
        }
        if g != first {
            enter_group(record, g);
            save(shared, record).await.map_err(Failure::Store)?;
        }
        for instance in actions {
            match run_action(shared, step, instance, cluster, token).await {
                Ok(ActionOutcome::Done) => {}
                Ok(ActionOutcome::NothingToProcess) => {
                    *group_states(record)[g] = ActionSetState::Complete;
                    info!(action = instance.name.as_str(), "nothing to process");
                    return Ok(ActionOutcome::NothingToProcess);
                }
                Err(failure) => {
                    *group_states(record)[g] = ActionSetState::Failed;
                    return Err(failure);
                }
            }
        }
        *group_states(record)[g] = ActionSetState::Complete;
    }
    Ok(ActionOutcome::Done)
}

async fn run_action(
    shared: &Shared,
    step: &StepDefinition,
    instance: &ActionInstance,
    cluster: &dyn Cluster,
    step_token: &CancellationToken,
) -> Result<ActionOutcome, Failure> {
    let span = info_span!("action", action = instance.name.as_str());
    if instance.skip {
        span.in_scope(|| info!("skipped"));
        return Ok(ActionOutcome::Done);
    }
    let token = step_token.child_token();
    let name = &instance.name;
    let work = async {
        let cx = ActionContext {
            execution: &shared.context,
            step: &step.name,
            action: name,
            cluster,
            cancel: &token,
        };
        let result = match AssertUnwindSafe(instance.action.run(&cx))
            .catch_unwind()
            .await
        {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(ActionError::Cancelled)) => Err(Failure::Cancelled),
            Ok(Err(source)) => Err(Failure::Action {
                action: name.clone(),
                source,
            }),
            Err(panic) => Err(Failure::Panicked {
                action: name.clone(),
                message: panic_message(panic),
            }),
        };
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
    guarded(
        &token,
        instance.timeout,
        shared.grace,
        work.instrument(span),
    )
    .await
    .into_result(|| format!("action '{name}'"), instance.timeout)
}
