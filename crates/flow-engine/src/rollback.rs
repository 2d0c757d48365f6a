//! `ExecutionEngine::rollback`: undoing processed steps on request.

use crate::clusters::{self, Launch};
use crate::engine::{hostname, username, ExecutionEngine};
use crate::error::{EngineError, Refusal};
use crate::logging;
use crate::run_context::RunContext;
use crate::step::roll_back;
use chrono::Utc;
use flow_core::{
    FlowState, Lease, RecordId, RollbackCause, RunMode, RunRecord, RunStep, StepState, StoreError,
};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn};

/// What a rollback did.
#[derive(Debug, Clone)]
pub struct RollbackReport {
    /// The run record's id.
    pub run: RecordId,
    /// The steps rolled back, in the order they were, with their new state
    /// (`embryo`, or `invalid` if a rollback failed).
    pub steps: Vec<(String, StepState)>,
    /// Why the rollback stopped, if an action's rollback failed.
    pub error: Option<String>,
    /// The flow's state afterwards.
    pub flow_state: FlowState,
}

impl ExecutionEngine {
    /// Undoes processed step `step`: runs the rollback of each of its
    /// completed actions, newest first, on one cluster, and puts the step
    /// back to `embryo` (so `recover` runs it again) with the rollbacks
    /// recorded. Refused while the flow runs, for a step that is not
    /// processed, and, unless `cascade`, when a processed step depends on
    /// it; with `cascade` those dependants are rolled back first, in reverse
    /// dependency order. A failing rollback stops everything: its step is
    /// left `invalid` naming the error.
    pub async fn rollback(&self, step: &str, cascade: bool) -> Result<RollbackReport, EngineError> {
        self.leased(async |lease, lost| self.rollback_leased(step, cascade, lease, lost).await)
            .await
    }

    async fn rollback_leased(
        &self,
        target: &str,
        cascade: bool,
        lease: &Lease,
        lost: &CancellationToken,
    ) -> Result<RollbackReport, EngineError> {
        let key = self.key();
        let refused = |reason| EngineError::Refused {
            flow: key.clone(),
            reason,
        };
        let store_error = |source: StoreError| {
            if source.is_fenced() {
                lost.cancel();
            }
            EngineError::Store {
                flow: key.clone(),
                source,
            }
        };
        let graph = &self.graph;
        let index = graph
            .index_of(target)
            .ok_or_else(|| refused(Refusal::unknown_step(graph, target)))?;
        let Some(flow) = self.store.get_flow(&key).await.map_err(store_error)? else {
            return Err(refused(Refusal::NothingToRollBack));
        };
        let mut records = self.store.get_steps(&key).await.map_err(store_error)?;
        let state_of = |name: &str, records: &[flow_core::StepRecord]| {
            records
                .iter()
                .find(|r| r.step_name == name)
                .map_or(StepState::Embryo, |r| r.state)
        };
        let target_state = state_of(target, &records);
        if !target_state.is_complete() {
            return Err(refused(Refusal::NotProcessed {
                step: target.to_string(),
                state: target_state,
            }));
        }
        let derived = graph.derived_from(index);
        let dependants: Vec<usize> = graph
            .topological_order()
            .iter()
            .copied()
            .filter(|&i| {
                i != index && derived[i] && state_of(&graph.step(i).name, &records).is_complete()
            })
            .collect();
        if !dependants.is_empty() && !cascade {
            return Err(refused(Refusal::ProcessedDependants {
                step: target.to_string(),
                dependants: dependants
                    .iter()
                    .map(|&i| graph.step(i).name.clone())
                    .collect(),
            }));
        }
        // Reverse dependency order: dependants first, the step last.
        let mut order = vec![index];
        order.extend(dependants);
        order.reverse();

        let now = Utc::now();
        let run = RunRecord {
            id: None,
            flow_name: key.flow_name.clone(),
            timeperiod: key.timeperiod,
            mode: RunMode::Rollback,
            target: Some(target.to_string()),
            owner: self.owner().to_string(),
            token: lease.token,
            host: hostname(),
            user: username(),
            started_at: now,
            finished_at: None,
            outcome: None,
            steps: order
                .iter()
                .map(|&i| RunStep {
                    step_name: graph.step(i).name.clone(),
                    state: state_of(&graph.step(i).name, &records),
                })
                .collect(),
            error: None,
        };
        // The log files before any record, as for a run.
        let run_log = Arc::new(match &self.options.log_directory {
            Some(dir) => {
                logging::register_run(&key.flow_name, dir).map_err(|source| EngineError::Logs {
                    flow: key.clone(),
                    source,
                })?
            }
            None => logging::RunLog::none(),
        });
        let begun = self.store.begin_run(lease, &flow, false, &[], &run).await;
        let (mut flow, mut run) = match begun {
            Ok(begun) => begun,
            Err(e) => {
                run_log.finish().await;
                return Err(store_error(e));
            }
        };
        let run_id = run.id.clone().unwrap_or_else(|| RecordId::new(""));
        let flow_span = info_span!("flow", run = run_log.id(), flow = key.flow_name.as_str());
        flow_span.in_scope(|| info!("rollback of {key} from step {target} started (run {run_id})"));
        let shared = Arc::new(RunContext {
            graph: self.graph.clone(),
            context: self.context.clone(),
            store: self.store.clone(),
            lease: lease.clone(),
            run: run_id.clone(),
            cancel: self.cancel.clone(),
            lost: lost.clone(),
            grace: self.options.cancel_grace,
            lease_ttl: self.options.lease_ttl,
            observer: None,
            flow_span: flow_span.clone(),
            run_log: run_log.clone(),
            keep_up: Default::default(),
            unsure: Default::default(),
        });
        let set = match clusters::launch(
            &shared,
            Launch {
                factory: &self.clusters,
                retry: self.options.launch_retry,
                span: &flow_span,
            },
            1,
        )
        .await
        {
            Ok(set) => set,
            Err(e) => {
                run_log.finish().await;
                return Err(store_error(e));
            }
        };
        let mut done = Vec::new();
        let mut failure = None;
        match set.workers.first() {
            None => failure = Some("no cluster launched".to_string()),
            Some(cluster) => {
                for &i in &order {
                    let step = graph.step(i);
                    let Some(record) = records.iter_mut().find(|r| r.step_name == step.name) else {
                        continue;
                    };
                    let completed = if record.actions_done == 0 {
                        // Written before actions were counted: all of them.
                        step.pre.len() + 1 + step.post.len()
                    } else {
                        record.actions_done as usize
                    };
                    let step_span =
                        info_span!(parent: &flow_span, "step", step = step.name.as_str());
                    let (rollbacks, error) = {
                        let _entered = step_span.enter();
                        info!("rolling back {completed} action(s)");
                        drop(_entered);
                        use tracing::Instrument;
                        roll_back(
                            &shared,
                            step,
                            cluster.as_ref(),
                            completed,
                            RollbackCause::Requested,
                        )
                        .instrument(step_span.clone())
                        .await
                    };
                    record.rollbacks.extend(rollbacks);
                    match &error {
                        None => {
                            record.reset(flow.id.clone());
                        }
                        Some(e) => {
                            record.state = StepState::Invalid;
                            record.error = Some(e.clone());
                            record.finished_at = Some(Utc::now());
                        }
                    }
                    if let Err(e) = self.store.save_step(lease, record).await {
                        shared.store_failed(&e);
                        failure = Some(e.to_string());
                        break;
                    }
                    done.push((record.step_name.clone(), record.state));
                    if let Some(e) = error {
                        step_span.in_scope(|| error!("{e}; stopping the rollback"));
                        failure = Some(e);
                        break;
                    }
                    step_span.in_scope(|| info!("rolled back: the step is {}", record.state));
                }
            }
        }
        let unsure = shared.recheck_lease().await.err();
        if lost.is_cancelled() {
            run_log.finish().await;
            return Err(self.lease_lost(lease).await);
        }
        match &unsure {
            None => clusters::terminate(&shared, set.owned, &flow_span).await,
            Some(why) => clusters::leave_up(set.owned, why, &flow_span),
        };
        if let Some(lost_lines) = run_log.flushed_failure() {
            let message = format!("the run's logs are incomplete: {lost_lines}");
            flow_span.in_scope(|| error!("{message}"));
            failure.get_or_insert(message);
        }
        if !done.is_empty() && flow.state.is_complete() {
            // Not every step is done any more: `recover` runs them again.
            flow.state = FlowState::Invalid;
        }
        flow.finished_at = Some(Utc::now());
        let saved = self.store.save_flow(lease, &flow).await;
        run.finished_at = flow.finished_at;
        run.outcome = Some(flow.state);
        run.steps = done
            .iter()
            .map(|(step_name, state)| RunStep {
                step_name: step_name.clone(),
                state: *state,
            })
            .collect();
        run.error = failure.clone();
        if saved.is_ok() {
            if let Err(e) = self.store.finish_run(lease, &run).await {
                flow_span.in_scope(|| warn!("cannot store the end of the run: {e}"));
            }
        }
        flow_span.in_scope(|| match &failure {
            Some(e) => error!("rollback of {key} stopped: {e}"),
            None => info!("rollback of {key} finished: flow is {}", flow.state),
        });
        run_log.finish().await;
        saved.map_err(store_error)?;
        Ok(RollbackReport {
            run: run_id,
            steps: done,
            error: failure,
            flow_state: flow.state,
        })
    }
}
