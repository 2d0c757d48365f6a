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
        let store_error = |e: StoreError| CliError::failed(e.to_string());
        if store.get_flow(&key).await.map_err(store_error)?.is_none() {
            return Err(no_record(&plan.location()));
        }
        let lease = match store
            .acquire_lease(&key, &owner, Utc::now(), ttl)
            .await
            .map_err(store_error)?
        {
            LeaseOutcome::Acquired(lease) => lease,
            LeaseOutcome::HeldBy {
                owner,
                heartbeat_at,
            } => {
                return Err(CliError::bad_input(format!(
                    "flow {key} is being run by {owner} (last heartbeat {heartbeat_at}); \
                     stop that run with Ctrl-C or SIGTERM instead, or wait until its lease \
                     turns stale ({} without a heartbeat)",
                    humantime_serde::re::humantime::format_duration(ttl)
                )))
            }
        };
        let context = flow_core::ExecutionContext {
            flow_name: key.flow_name.clone(),
            timeperiod,
            start_timeperiod: timeperiod,
            end_timeperiod: timeperiod,
            settings: values.clone(),
            number_of_clusters: 1,
        };
        let result = cancel_leased(&store, &lease, flow.graph.as_ref(), &factory, &context).await;
        if let Err(e) = store.release_lease(&lease).await {
            errln!("warning: cannot release the lease of {key}: {e}");
        }
        let (state, canceled) = result.map_err(store_error)?;
        if canceled.is_empty() {
            outln!(
                "flow {} [{}]: {state}; no unfinished step to cancel",
                key.flow_name,
                key.timeperiod
            );
        } else {
            outln!(
                "flow {} [{}]: {state}; canceled {}",
                key.flow_name,
                key.timeperiod,
                canceled.join(", ")
            );
        }
        Ok(Exit::Success)
    })
}

/// Under the lease: marks every step that is not processed or noop (and,
/// when the flow file is known, every step without a record) `canceled`, and
/// the flow `invalid` unless it completed. Returns the flow's state and the
/// steps canceled now.
async fn cancel_leased(
    store: &Arc<dyn FlowStore>,
    lease: &Lease,
    graph: Option<&flow_core::FlowGraph>,
    factory: &Arc<dyn flow_core::ClusterFactory>,
    context: &flow_core::ExecutionContext,
) -> Result<(FlowState, Vec<String>), StoreError> {
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
        return Ok((flow.state, Vec::new()));
    }
    if !flow.state.is_complete() {
        flow.state = FlowState::Invalid;
        flow.finished_at = Some(now);
    }
    for problem in flow_engine::cancel_jobs(factory, context, orphans).await {
        errln!("warning: {problem}");
    }
    let names = changed.iter().map(|s| s.step_name.clone()).collect();
    let saved = store.save_flow_and_steps(lease, &flow, &changed).await?;
    Ok((saved.state, names))
}
