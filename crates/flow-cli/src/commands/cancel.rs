//! `flow cancel`: give up on the unfinished steps of a flow that is not
//! running (Synergy's "skip job"). Takes the run lease so it cannot race a
//! live engine, cancels the jobs a dead run's steps left running (they
//! outlive their engine), and writes the flow and its steps in one
//! transaction.

use super::{hostname, parse_timeperiod, small_runtime, FlowRef};
use crate::backends;
use crate::cli::Target;
use crate::exit::{CliError, Exit};
use crate::settings::Settings;
use chrono::Utc;
use flow_core::{
    FlowKey, FlowState, FlowStore, Lease, LeaseOutcome, StepRecord, StepState, StoreError,
};
use std::path::Path;
use std::sync::Arc;

pub fn cancel(settings_path: Option<&Path>, target: &Target) -> Result<Exit, CliError> {
    let settings = Settings::load(settings_path)?;
    let flow = FlowRef::resolve(&target.flow, &settings)?;
    let timeperiod = parse_timeperiod("timeperiod", &target.timeperiod, flow.qualifier())?;
    let key = FlowKey::new(flow.name.clone(), timeperiod);
    let plan = backends::plan_store(&settings)?;
    let no_record = |location: &str| {
        CliError::bad_input(format!(
            "no record of flow {key} in the store at {location}: nothing to cancel"
        ))
    };
    if !plan.exists() {
        return Err(no_record(&plan.location()));
    }
    let factory = backends::cluster_factory(&settings)?;
    let values = Arc::new(settings.values()?);
    let store = plan.open()?;
    let owner = format!("flow-cancel:{}:{}", hostname(), std::process::id());
    let ttl = settings.lease_ttl();
    small_runtime()?.block_on(async {
        let request = CancelRequest {
            key: &key,
            graph: flow.graph.as_ref(),
            factory: &factory,
            values: &values,
            owner: &owner,
            ttl,
        };
        let outcome = match cancel_flow(&store, request).await {
            Ok(outcome) => outcome,
            Err(CancelError::NoRecord) => return Err(no_record(&plan.location())),
            Err(e @ CancelError::Held { .. }) => return Err(CliError::bad_input(e.to_string())),
            Err(e @ CancelError::Store(_)) => return Err(CliError::failed(e.to_string())),
        };
        for problem in &outcome.problems {
            errln!("warning: {problem}");
        }
        if outcome.canceled.is_empty() {
            outln!(
                "flow {} [{}]: {}; no unfinished step to cancel",
                key.flow_name,
                key.timeperiod,
                outcome.state
            );
        } else {
            outln!(
                "flow {} [{}]: {}; canceled {}",
                key.flow_name,
                key.timeperiod,
                outcome.state,
                outcome.canceled.join(", ")
            );
        }
        Ok(Exit::Success)
    })
}

/// What to cancel, and with what: shared by `flow cancel` and the viewer
/// (`flow serve`'s launcher), so both cancel the jobs a dead run left.
pub(crate) struct CancelRequest<'a> {
    pub key: &'a FlowKey,
    /// The flow file's graph, when known: steps without a record are
    /// canceled too.
    pub graph: Option<&'a flow_core::FlowGraph>,
    pub factory: &'a Arc<dyn flow_core::ClusterFactory>,
    pub values: &'a Arc<flow_core::Settings>,
    /// The lease owner id to take the flow's lease as.
    pub owner: &'a str,
    pub ttl: std::time::Duration,
}

/// What a cancel did.
#[derive(Debug)]
pub(crate) struct CancelOutcome {
    pub state: FlowState,
    /// The steps marked `state_canceled` now.
    pub canceled: Vec<String>,
    /// Jobs of a dead run that could not be cancelled (warnings).
    pub problems: Vec<String>,
}

/// Why a flow could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CancelError {
    #[error("no record of the flow: nothing to cancel")]
    NoRecord,
    #[error(
        "flow {key} is being run by {owner} (last heartbeat {heartbeat_at}); stop that run \
         with Ctrl-C or SIGTERM instead, or wait until its lease turns stale ({} without a heartbeat)",
        humantime_serde::re::humantime::format_duration(*ttl)
    )]
    Held {
        key: FlowKey,
        owner: String,
        heartbeat_at: chrono::DateTime<Utc>,
        ttl: std::time::Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Cancels `request.key` under its lease (refused while another engine
/// holds it): the jobs a dead run's steps left running are cancelled, every
/// unfinished step is marked `canceled` and the flow `invalid`, in one
/// write through `store`.
pub(crate) async fn cancel_flow(
    store: &Arc<dyn FlowStore>,
    request: CancelRequest<'_>,
) -> Result<CancelOutcome, CancelError> {
    let key = request.key;
    if store.get_flow(key).await?.is_none() {
        return Err(CancelError::NoRecord);
    }
    let lease = match store
        .acquire_lease(key, request.owner, Utc::now(), request.ttl)
        .await?
    {
        LeaseOutcome::Acquired(lease) => lease,
        LeaseOutcome::HeldBy {
            owner,
            heartbeat_at,
        } => {
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
    let problems = flow_engine::cancel_jobs(factory, context, orphans).await;
    let canceled = changed.iter().map(|s| s.step_name.clone()).collect();
    let saved = store.save_flow_and_steps(lease, &flow, &changed).await?;
    Ok(CancelOutcome {
        state: saved.state,
        canceled,
        problems,
    })
}
