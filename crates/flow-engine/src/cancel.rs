//! Cancelling a flow that is not running (Synergy's "skip job"), for
//! `flow cancel` and the viewer alike: under the run lease, so it cannot
//! race a live engine, it cancels the jobs a dead run's steps left running
//! (they outlive their engine), and writes the flow and its steps in one
//! transaction.

use crate::lease::{take_lease, NotTaken};
use chrono::Utc;
use flow_core::{FlowKey, FlowState, FlowStore, Lease, StepRecord, StepState, StoreError};
use std::sync::Arc;

/// What to cancel, and with what.
pub struct CancelRequest<'a> {
    /// The flow run to cancel.
    pub key: &'a FlowKey,
    /// The flow file's graph, when known: steps without a record are
    /// canceled too.
    pub graph: Option<&'a flow_core::FlowGraph>,
    /// Makes the clusters that reach the jobs a dead run left.
    pub factory: &'a Arc<dyn flow_core::ClusterFactory>,
    /// The settings values those clusters are made with.
    pub values: &'a Arc<flow_core::Settings>,
    /// The lease owner id to take the flow's lease as.
    pub owner: &'a str,
    /// How long a lease lives without a heartbeat.
    pub ttl: std::time::Duration,
}

/// What a cancel did.
#[derive(Debug)]
pub struct CancelOutcome {
    /// The flow's state afterwards.
    pub state: FlowState,
    /// The steps marked `state_canceled` now.
    pub canceled: Vec<String>,
    /// Jobs of a dead run that could not be cancelled (warnings).
    pub problems: Vec<String>,
}

/// Why a flow could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// The store has no record of the flow.
    #[error("no record of the flow: nothing to cancel")]
    NoRecord,
    #[error(
        "flow {key} is being run by {owner} (last heartbeat {heartbeat_at}); stop that run \
         with Ctrl-C or SIGTERM instead, or wait until its lease turns stale ({} without a heartbeat)",
        humantime::format_duration(*ttl)
    )]
    /// Another live engine holds the flow's lease.
    Held {
        /// The flow.
        key: FlowKey,
        /// The holder's owner id.
        owner: String,
        /// The holder's latest heartbeat.
        heartbeat_at: chrono::DateTime<Utc>,
        /// How long a lease lives without a heartbeat.
        ttl: std::time::Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Cancels `request.key` under its lease (refused while another engine
/// holds it): the jobs a dead run's steps left running are cancelled, every
/// unfinished step is marked `canceled` and the flow `invalid`, in one
/// write through `store`.
pub async fn cancel_flow(
    store: &Arc<dyn FlowStore>,
    request: CancelRequest<'_>,
) -> Result<CancelOutcome, CancelError> {
    let key = request.key;
    if store.get_flow(key).await?.is_none() {
        return Err(CancelError::NoRecord);
    }
    let lease = match take_lease(store.as_ref(), key, request.owner, request.ttl).await {
        Ok(lease) => lease,
        Err(NotTaken::Store(e)) => return Err(e.into()),
        Err(NotTaken::Held {
            owner,
            heartbeat_at,
        }) => {
            return Err(CancelError::Held {
                key: key.clone(),
                owner,
                heartbeat_at,
                ttl: request.ttl,
            })
        }
    };
    let context = flow_core::ExecutionContext {
        flow_name: key.flow_name.clone(),
        timeperiod: key.timeperiod,
        start_timeperiod: key.timeperiod,
        end_timeperiod: key.timeperiod,
        settings: request.values.clone(),
        number_of_clusters: 1,
    };
    let result = cancel_leased(store, &lease, request.graph, request.factory, &context).await;
    let released = store.release_lease(&lease).await;
    let mut outcome = result?;
    if let Err(e) = released {
        outcome
            .problems
            .push(format!("cannot release the lease of {key}: {e}"));
    }
    Ok(outcome)
}

/// Under the lease: marks every step that is not processed or noop (and,
/// when the flow file is known, every step without a record) `canceled`, and
/// the flow `invalid` unless it completed.
async fn cancel_leased(
    store: &Arc<dyn FlowStore>,
    lease: &Lease,
    graph: Option<&flow_core::FlowGraph>,
    factory: &Arc<dyn flow_core::ClusterFactory>,
    context: &flow_core::ExecutionContext,
) -> Result<CancelOutcome, StoreError> {
    let key = &lease.key;
    let Some(mut flow) = store.get_flow(key).await? else {
        return Err(StoreError::Operation {
            operation: "cancel",
            key: key.to_string(),
            message: "the flow record disappeared".into(),
        });
    };
    let now = Utc::now();
    let mut steps = store.get_steps(key).await?;
    if let Some(graph) = graph {
        for s in graph.steps() {
            if !steps.iter().any(|r| r.step_name == s.name) {
                steps.push(StepRecord::embryo(
                    &key.flow_name,
                    &s.name,
                    key.timeperiod,
                    flow.id.clone(),
                    now,
                ));
            }
        }
    }
    let mut changed = Vec::new();
    let mut orphans = Vec::new();
    for mut step in steps {
        if step.state.is_complete() || step.state == StepState::Canceled {
            continue;
        }
        if step.state == StepState::InProgress {
            if let Some(job) = &step.job {
                orphans.push((step.step_name.clone(), job.clone()));
            }
        }
        step.state = StepState::Canceled;
        // A failed step keeps the time it ended; only a step that never
        // ended ends now.
        step.finished_at.get_or_insert(now);
        changed.push(step);
    }
    if changed.is_empty() && (flow.state.is_complete() || flow.state == FlowState::Invalid) {
        return Ok(CancelOutcome {
            state: flow.state,
            canceled: Vec::new(),
            problems: Vec::new(),
        });
    }
    if !flow.state.is_complete() {
        flow.state = FlowState::Invalid;
        flow.finished_at = Some(now);
    }
    let problems = crate::clusters::cancel_jobs(factory, context, orphans).await;
    let canceled = changed.iter().map(|s| s.step_name.clone()).collect();
    let saved = store.save_flow_and_steps(lease, &flow, &changed).await?;
    Ok(CancelOutcome {
        state: saved.state,
        canceled,
        problems,
    })
}
