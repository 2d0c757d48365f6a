//! `ExecutionEngine`: the four run modes around one shared run procedure.

use crate::dispatch::{dispatch, Dispatched};
use crate::error::EngineError;
use crate::logging;
use crate::plan::{plan, RunPlan, Stored};
use chrono::Utc;
use flow_core::{
    Cluster, ClusterError, ClusterFactory, ExecutionContext, FlowGraph, FlowKey, FlowRecord,
    FlowState, FlowStore, LeaseOutcome, RetryPolicy, RunMode, StepState,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument, Span};

/// Hooks for showing progress (the CLI's progress bar). Called from the
/// engine's tasks; keep them quick.
pub trait RunObserver: Send + Sync {
    fn run_started(&self, _flow: &FlowKey, _mode: RunMode, _steps_to_run: usize, _clusters: usize) {
    }
    fn step_started(&self, _step: &str, _cluster: &str) {}
    fn step_finished(&self, _step: &str, _state: StepState, _elapsed: Duration) {}
}

/// Tunables of a run.
#[derive(Clone)]
pub struct EngineOptions {
    /// Root of the per-flow log directories; `None` writes no log files.
    pub log_directory: Option<PathBuf>,
    /// A lease whose heartbeat is older than this is stale.
    pub lease_ttl: Duration,
    /// How often the lease is renewed.
    pub heartbeat_interval: Duration,
    /// Retries of transient cluster launch failures.
    pub launch_retry: RetryPolicy,
    /// Time a cancelled or timed-out action gets to stop and clean up.
    pub cancel_grace: Duration,
    pub observer: Option<Arc<dyn RunObserver>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            log_directory: None,
            lease_ttl: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(10),
            launch_retry: RetryPolicy {
                retries: 3,
                delay: Duration::from_secs(2),
                backoff: 2,
                max_delay: Duration::from_secs(30),
            },
            cancel_grace: Duration::from_secs(30),
            observer: None,
        }
    }
}

/// Figures about a run, for the benchmark and the dispatcher guard test.
#[derive(Debug, Clone, Default)]
pub struct RunMetrics {
    /// Wall time of the whole run, lease to lease.
    pub wall: Duration,
    /// For each step started by a finished dependency: from the moment it
    /// could start (its last dependency's final state stored, and a cluster
    /// free) to its start. Waiting for a busy cluster is not the engine's
    /// overhead, so it is left out.
    pub dependant_latencies: Vec<Duration>,
    /// Dependant edges the dispatcher visited.
    pub graph_visits: u64,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub flow: FlowKey,
    pub mode: RunMode,
    pub state: FlowState,
    /// The steps this run was to run, with their final states.
    pub steps: Vec<(String, StepState)>,
    pub canceled: bool,
    pub clusters_launched: usize,
    /// Why the flow failed without a failed step, e.g. no cluster launched.
    pub error: Option<String>,
    pub metrics: RunMetrics,
}

/// What the dispatcher and step runner share.
pub(crate) struct Shared {
    pub graph: Arc<FlowGraph>,
    pub context: Arc<ExecutionContext>,
    pub store: Arc<dyn FlowStore>,
    pub cancel: CancellationToken,
    pub grace: Duration,
    pub observer: Option<Arc<dyn RunObserver>>,
    pub flow_span: Span,
}

/// Runs one flow for one timeperiod. One engine value serves one
/// `[flow, timeperiod]`; it may be used for several modes one after another.
pub struct ExecutionEngine {
    graph: Arc<FlowGraph>,
    context: Arc<ExecutionContext>,
    store: Arc<dyn FlowStore>,
    clusters: Arc<dyn ClusterFactory>,
    options: EngineOptions,
    owner: String,
    cancel: CancellationToken,
}

impl ExecutionEngine {
    pub fn new(
        graph: Arc<FlowGraph>,
        context: ExecutionContext,
        store: Arc<dyn FlowStore>,
        clusters: Arc<dyn ClusterFactory>,
        options: EngineOptions,
    ) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let owner = format!("{host}:{}:{:08x}", std::process::id(), fastrand::u32(..));
        ExecutionEngine {
            graph,
            context: Arc::new(context),
            store,
            clusters,
            options,
            owner,
            cancel: CancellationToken::new(),
        }
    }

    /// Fire it to cancel a run: no new steps start, running jobs are
    /// stopped, cleanups run, clusters are terminated.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// This engine's lease owner id: host, pid and a random part.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn key(&self) -> FlowKey {
        FlowKey::new(self.context.flow_name.clone(), self.context.timeperiod)
    }

    /// Fresh run: purge old step records, run every step.
    pub async fn run(&self) -> Result<RunReport, EngineError> {
        self.execute(RunMode::Nominal, None).await
    }

    /// After a failure (or a crash): keep completed steps, run the rest.
    pub async fn recover(&self) -> Result<RunReport, EngineError> {
        self.execute(RunMode::Recovery, None).await
    }

    /// Run `step` alone, on one cluster; its dependencies must be complete.
    pub async fn run_one(&self, step: &str) -> Result<RunReport, EngineError> {
        self.execute(RunMode::RunOne, Some(step)).await
    }

    /// Run `step`, everything derived from it and every unfinished step.
    pub async fn run_from(&self, step: &str) -> Result<RunReport, EngineError> {
        self.execute(RunMode::RunFrom, Some(step)).await
    }

    /// Runs `mode` under the flow's lease.
    pub async fn execute(
        &self,
        mode: RunMode,
        step: Option<&str>,
    ) -> Result<RunReport, EngineError> {
        logging::ensure_installed();
        let started = Instant::now();
        let key = self.key();
        let lease = self
            .store
            .acquire_lease(&key, &self.owner, Utc::now(), self.options.lease_ttl)
            .await
            .map_err(|source| EngineError::Store {
                flow: key.clone(),
                source,
            })?;
        if let LeaseOutcome::HeldBy {
            owner,
            heartbeat_at,
        } = lease
        {
            return Err(EngineError::LeaseHeld {
                flow: key,
                owner,
                heartbeat_at,
            });
        }
        let heartbeat = self.spawn_heartbeat(key.clone());
        let result = self.execute_leased(mode, step).await;
        drop(heartbeat); // stops renewing before the lease is released
        if let Err(e) = self.store.release_lease(&key, &self.owner).await {
            warn!(flow = %key, "cannot release the run lease: {e}; it turns stale after {:?}", self.options.lease_ttl);
        }
        result.map(|mut report| {
            report.metrics.wall = started.elapsed();
            report
        })
    }

    fn spawn_heartbeat(&self, key: FlowKey) -> AbortOnDrop {
        let store = self.store.clone();
        let owner = self.owner.clone();
        let interval = self.options.heartbeat_interval;
        let cancel = self.cancel.clone();
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                match store.renew_lease(&key, &owner, Utc::now()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        error!(flow = %key, "lost the run lease to another engine; cancelling this run");
                        cancel.cancel();
                        return;
                    }
                    Err(e) => warn!(flow = %key, "cannot renew the run lease: {e}"),
                }
            }
        }))
    }

    async fn execute_leased(
        &self,
        mode: RunMode,
        target: Option<&str>,
    ) -> Result<RunReport, EngineError> {
        let key = self.key();
        let store_error = |source| EngineError::Store {
            flow: key.clone(),
            source,
        };
        let existing_flow = self.store.get_flow(&key).await.map_err(store_error)?;
        let existing_steps = self.store.get_steps(&key).await.map_err(store_error)?;
        let now = Utc::now();
        let RunPlan {
            to_run,
            count,
            purge,
            mut records,
            changed,
            clusters,
        } = plan(
            mode,
            target,
            &self.graph,
            key.timeperiod,
            Stored {
                flow: existing_flow.as_ref(),
                steps: existing_steps,
            },
            self.context.number_of_clusters.max(1),
            now,
        )
        .map_err(|reason| EngineError::Refused {
            flow: key.clone(),
            reason,
        })?;

        let previous_state = existing_flow.as_ref().map(|f| f.state);
        let mut flow = existing_flow.unwrap_or_else(|| FlowRecord {
            id: None,
            flow_name: key.flow_name.clone(),
            timeperiod: key.timeperiod,
            start_timeperiod: self.context.start_timeperiod,
            end_timeperiod: self.context.end_timeperiod,
            state: FlowState::Embryo,
            run_mode: mode,
            created_at: now,
            started_at: None,
            finished_at: None,
        });
        flow.start_timeperiod = self.context.start_timeperiod;
        flow.end_timeperiod = self.context.end_timeperiod;
        flow.state = FlowState::InProgress;
        flow.run_mode = mode;
        flow.started_at = Some(now);
        flow.finished_at = None;
        let to_write: Vec<_> = changed.iter().map(|&i| records[i].clone()).collect();
        let mut flow = self
            .store
            .begin_run(&flow, purge, &to_write)
            .await
            .map_err(store_error)?;
        for record in &mut records {
            record.related_flow = flow.id;
        }

        let run_id = match &self.options.log_directory {
            Some(dir) => logging::register_run(&key.flow_name, dir),
            None => 0,
        };
        let flow_span = info_span!("flow", run = run_id, flow = key.flow_name.as_str());
        flow_span.in_scope(|| {
            info!(
                "{mode} of {key} started: {count} of {} steps on {clusters} {} cluster(s)",
                self.graph.len(),
                self.clusters.kind()
            )
        });
        if let Some(o) = &self.options.observer {
            o.run_started(&key, mode, count, clusters);
        }

        let shared = Arc::new(Shared {
            graph: self.graph.clone(),
            context: self.context.clone(),
            store: self.store.clone(),
            cancel: self.cancel.clone(),
            grace: self.options.cancel_grace,
            observer: self.options.observer.clone(),
            flow_span: flow_span.clone(),
        });
        let (launched, created) = self.launch_clusters(clusters, &flow_span).await;
        let clusters_launched = launched.len();
        let mut error = None;
        let outcome = if launched.is_empty() {
            let message = format!("none of {clusters} cluster(s) launched");
            flow_span.in_scope(|| error!("{message}"));
            error = Some(message);
            None
        } else {
            Some(dispatch(shared, &to_run, records, &launched).await)
        };
        self.terminate_clusters(created, &flow_span).await;

        let (state, canceled, steps, metrics, store_failure) = match outcome {
            None => (
                FlowState::Invalid,
                false,
                Vec::new(),
                RunMetrics::default(),
                None,
            ),
            Some(Dispatched {
                records,
                failed,
                canceled,
                store_error,
                latencies,
                graph_visits,
            }) => {
                let all_complete = records.iter().all(|r| r.state.is_complete());
                let state = if store_error.is_some() || failed || canceled {
                    FlowState::Invalid
                } else if all_complete && records.iter().all(|r| r.state == StepState::Noop) {
                    FlowState::Noop
                } else if all_complete {
                    FlowState::Processed
                } else {
                    // A partial run (run_one) leaves the flow as it was.
                    match previous_state {
                        Some(FlowState::InProgress) | None => FlowState::Embryo,
                        Some(s) => s,
                    }
                };
                let steps = records
                    .iter()
                    .zip(&to_run)
                    .filter(|(_, run)| **run)
                    .map(|(r, _)| (r.step_name.clone(), r.state))
                    .collect();
                let metrics = RunMetrics {
                    wall: Duration::ZERO,
                    dependant_latencies: latencies,
                    graph_visits,
                };
                (state, canceled, steps, metrics, store_error)
            }
        };
        flow.state = state;
        flow.finished_at = Some(Utc::now());
        let saved = self.store.save_flow(&flow).await;
        flow_span.in_scope(|| match (&store_failure, &saved) {
            (Some(e), _) => error!("stopped: the store failed: {e}"),
            (None, Err(e)) => error!("cannot store the final flow state: {e}"),
            (None, Ok(_)) if canceled => warn!("{mode} of {key} cancelled: flow is {state}"),
            (None, Ok(_)) => info!("{mode} of {key} finished: flow is {state}"),
        });
        logging::finish_run(run_id);
        if let Some(source) = store_failure {
            return Err(EngineError::Store { flow: key, source });
        }
        saved.map_err(|source| EngineError::Store {
            flow: key.clone(),
            source,
        })?;
        Ok(RunReport {
            flow: key,
            mode,
            state,
            steps,
            canceled,
            clusters_launched,
            error,
            metrics,
        })
    }

    /// Creates and launches `count` clusters concurrently, retrying
    /// transient failures. Returns the launched ones and every created one
    /// (all of which get terminated).
    async fn launch_clusters(
        &self,
        count: usize,
        span: &Span,
    ) -> (Vec<Arc<dyn Cluster>>, Vec<Arc<dyn Cluster>>) {
        let mut created = Vec::with_capacity(count);
        for i in 0..count {
            let name = format!("{}-{i}", self.clusters.kind());
            match self.clusters.create(&name, &self.context) {
                Ok(c) => created.push(c),
                Err(e) => {
                    span.in_scope(|| error!(cluster = name.as_str(), "cannot create cluster: {e}"))
                }
            }
        }
        let mut launches = JoinSet::new();
        for (i, cluster) in created.iter().enumerate() {
            let cluster = cluster.clone();
            let policy = self.options.launch_retry;
            let cancel = self.cancel.clone();
            let cluster_span = info_span!(parent: span, "cluster", cluster = cluster.name());
            launches.spawn(
                async move {
                    let mut retry = 0;
                    loop {
                        match cluster.launch().await {
                            Ok(()) => {
                                info!("launched");
                                return (i, true);
                            }
                            Err(ClusterError::Launch {
                                transient: true,
                                ref message,
                                ..
                            }) if retry < policy.retries && !cancel.is_cancelled() => {
                                retry += 1;
                                let delay = policy.delay_before(retry);
                                warn!(
                                    "launch failed ({message}); retry {retry} of {} in {delay:?}",
                                    policy.retries
                                );
                                tokio::select! {
                                    _ = tokio::time::sleep(delay) => {}
                                    _ = cancel.cancelled() => return (i, false),
                                }
                            }
                            Err(e) => {
                                error!("launch failed: {e}");
                                return (i, false);
                            }
                        }
                    }
                }
                .instrument(cluster_span),
            );
        }
        let mut ok = vec![false; created.len()];
        while let Some(joined) = launches.join_next().await {
            if let Ok((i, launched)) = joined {
                ok[i] = launched;
            }
        }
        let launched = created
            .iter()
            .zip(&ok)
            .filter(|(_, ok)| **ok)
            .map(|(c, _)| c.clone())
            .collect();
        (launched, created)
    }

    async fn terminate_clusters(&self, clusters: Vec<Arc<dyn Cluster>>, span: &Span) {
        let mut terminations = JoinSet::new();
        for cluster in clusters {
            let cluster_span = info_span!(parent: span, "cluster", cluster = cluster.name());
            terminations.spawn(
                async move {
                    match cluster.terminate().await {
                        Ok(()) => info!("terminated"),
                        Err(e) => error!("terminate failed: {e}"),
                    }
                }
                .instrument(cluster_span),
            );
        }
        while terminations.join_next().await.is_some() {}
    }
}

/// Aborts a background task when dropped, so no path leaves it running.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
