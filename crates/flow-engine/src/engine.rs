//! `ExecutionEngine`: the four run modes around one shared run procedure.

use crate::clusters::{self, Launch};
use crate::dispatch::{dispatch, Dispatched};
use crate::error::EngineError;
use crate::lease::{take_lease, NotTaken};
use crate::logging;
use crate::observer::{DefinitionChange, RunObserver, RunTracer};
use crate::plan::{plan, RunPlan, Stored};
use crate::run_context::RunContext;
use crate::sla::{Armed, SlaWatch};
use chrono::Utc;
use flow_core::{
    ClusterFactory, ExecutionContext, FlowGraph, FlowKey, FlowRecord, FlowState, FlowStore, Lease,
    RecordId, RetryPolicy, RunMode, RunQuery, RunRecord, RunStep, StepState, StoreError,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

/// What changed between the stored run and `graph`, if anything. The
/// stored shape hash decides whether the definition changed (a record from
/// before hashes existed counts as changed when its steps differ); the
/// step records say what changed: steps without a record (every step of a
/// run gets one) were added, records of steps the graph lacks were removed.
fn definition_change(
    graph: &FlowGraph,
    stored: Option<&FlowRecord>,
    steps: &[flow_core::StepRecord],
    shape: &str,
) -> Option<DefinitionChange> {
    let stored = stored?;
    if steps.is_empty() || stored.graph_hash.as_deref() == Some(shape) {
        return None;
    }
    let known: std::collections::HashSet<&str> =
        steps.iter().map(|s| s.step_name.as_str()).collect();
    let added: Vec<String> = graph
        .steps()
        .iter()
        .filter(|s| !known.contains(s.name.as_str()))
        .map(|s| s.name.clone())
        .collect();
    let mut removed: Vec<String> = steps
        .iter()
        .filter(|s| graph.index_of(&s.step_name).is_none())
        .map(|s| s.step_name.clone())
        .collect();
    removed.sort();
    let rewired = stored.graph_hash.as_deref().is_some_and(|h| h != shape);
    (rewired || !added.is_empty() || !removed.is_empty()).then_some(DefinitionChange {
        added,
        removed,
        rewired,
    })
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
    /// Progress hooks (the CLI's progress bar); `None` for none.
    pub observer: Option<Arc<dyn RunObserver>>,
    /// Also record every log-file line in the store (`append_logs`, in
    /// batches; see `logging`). Needs `log_directory`.
    pub record_logs: bool,
    /// Joins each run's span to its trace (`[telemetry]`); `None` keeps
    /// no trace context on the flow record.
    pub tracer: Option<Arc<dyn RunTracer>>,
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
            record_logs: true,
            tracer: None,
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
    /// The run's `[flow, timeperiod]`.
    pub flow: FlowKey,
    /// The run record's id (`flow history`, `flow logs --run`).
    pub run: RecordId,
    /// The mode that ran.
    pub mode: RunMode,
    /// The flow's state at the end.
    pub state: FlowState,
    /// The steps this run was to run, with their final states.
    pub steps: Vec<(String, StepState)>,
    /// True when the run was cancelled (its token fired).
    pub canceled: bool,
    /// Clusters the run launched (or adopted).
    pub clusters_launched: usize,
    /// Clusters the run launched but could not terminate, each as "NAME:
    /// why": they may still be up (and billing). Their records say
    /// `terminate_failed` (or still `launching`, for one left up because
    /// the run could not tell whether it still held its lease);
    /// `flow clusters --terminate-orphans` retries.
    pub clusters_left_up: Vec<String>,
    /// Why the flow failed without a failed step, e.g. no cluster launched.
    pub error: Option<String>,
    /// Figures about the run.
    pub metrics: RunMetrics,
}

/// Runs one flow for one timeperiod. One engine value serves one
/// `[flow, timeperiod]`; it may be used for several modes one after another.
///
/// Every mode takes the flow's lease in the store first (another engine
/// running the flow makes it [`EngineError::LeaseHeld`]), checks its
/// precondition (a failed one is [`EngineError::Refused`] and writes
/// nothing), and ends with a [`RunReport`]. A flow whose step failed is not
/// an error: the report's state is `invalid`.
///
/// The run modes, on the local cluster with the SQLite store:
///
/// ```
/// use flow_cluster_local::{LocalClusterFactory, LocalOptions};
/// use flow_core::actions::Identity;
/// use flow_core::{
///     ActionInstance, ExecutionContext, FlowDefinition, FlowState, Settings, StepDefinition,
///     Timeperiod,
/// };
/// use flow_engine::{EngineError, EngineOptions, ExecutionEngine, Refusal};
/// use flow_store_sqlite::{SqliteOptions, SqliteStore};
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store = SqliteStore::open(&dir.path().join("flow.db"), SqliteOptions::default())?;
/// let clusters = LocalClusterFactory::new(LocalOptions {
///     root: dir.path().to_path_buf(),
///     work_dir: dir.path().to_path_buf(),
///     state_dir: dir.path().join("state"),
///     ..LocalOptions::default()
/// });
/// let step = |name| StepDefinition::new(name, ActionInstance::new(Arc::new(Identity)));
/// let graph = FlowDefinition::new("chain")
///     .step(step("a"))
///     .step(step("b").depends_on(["a"]))
///     .step(step("c").depends_on(["b"]))
///     .build()?;
/// let timeperiod: Timeperiod = "2026112807".parse()?;
/// let context = ExecutionContext {
///     flow_name: graph.name().to_string(),
///     timeperiod,
///     start_timeperiod: timeperiod,
///     end_timeperiod: timeperiod.next(graph.time_qualifier()),
///     settings: Arc::new(Settings::new()),
///     number_of_clusters: 1,
/// };
/// let engine = ExecutionEngine::new(
///     Arc::new(graph),
///     context,
///     Arc::new(store),
///     Arc::new(clusters),
///     EngineOptions::default(),
/// );
///
/// // `recover` needs a run to recover: refused, nothing written.
/// let refused = engine.recover().await;
/// assert!(matches!(
///     refused,
///     Err(EngineError::Refused { reason: Refusal::NeverRan, .. })
/// ));
/// // `run`: every step, afresh.
/// assert_eq!(engine.run().await?.state, FlowState::Processed);
/// // `run_one`: one step alone; its dependencies are complete.
/// assert_eq!(engine.run_one("b").await?.steps.len(), 1);
/// // `run_from`: a step and everything derived from it.
/// let report = engine.run_from("b").await?;
/// let mut ran: Vec<&str> = report.steps.iter().map(|(s, _)| s.as_str()).collect();
/// ran.sort();
/// assert_eq!(ran, ["b", "c"]);
/// # Ok(())
/// # }
/// ```
pub struct ExecutionEngine {
    pub(crate) graph: Arc<FlowGraph>,
    pub(crate) context: Arc<ExecutionContext>,
    pub(crate) store: Arc<dyn FlowStore>,
    pub(crate) clusters: Arc<dyn ClusterFactory>,
    pub(crate) options: EngineOptions,
    owner: String,
    pub(crate) cancel: CancellationToken,
    /// The lease while a mode runs, for [`ExecutionEngine::lease`].
    lease: std::sync::Mutex<Option<Lease>>,
}

impl ExecutionEngine {
    /// An engine for one `[flow, timeperiod]`: `graph` run in `context`, its state kept in `store`, its clusters made by `clusters`. Nothing happens until a run mode is called.
    pub fn new(
        graph: Arc<FlowGraph>,
        context: ExecutionContext,
        store: Arc<dyn FlowStore>,
        clusters: Arc<dyn ClusterFactory>,
        options: EngineOptions,
    ) -> Self {
        let owner = format!(
            "{}:{}:{:08x}",
            hostname(),
            std::process::id(),
            fastrand::u32(..)
        );
        ExecutionEngine {
            graph,
            context: Arc::new(context),
            // Every record the engine writes has its texts masked here.
            store: Arc::new(crate::masked::MaskedStore(store)),
            clusters,
            options,
            owner,
            cancel: CancellationToken::new(),
            lease: std::sync::Mutex::new(None),
        }
    }

    /// The lease a running mode holds, e.g. to release it when the program
    /// must exit at once (a second Ctrl-C).
    pub fn lease(&self) -> Option<Lease> {
        self.lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_lease(&self, lease: Option<Lease>) {
        *self
            .lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = lease;
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

    /// The `[flow, timeperiod]` this engine runs.
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

    /// Takes the flow's lease, runs `work` with it, and releases it, unless
    /// the lease was lost (then it is not ours to release).
    pub(crate) async fn leased<T>(
        &self,
        work: impl AsyncFnOnce(&Lease, &CancellationToken) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        logging::ensure_installed();
        let key = self.key();
        if let Some(dir) = &self.options.log_directory {
            logging::check_log_directory(dir, &key.flow_name).map_err(|source| {
                EngineError::Logs {
                    flow: key.clone(),
                    source,
                }
            })?;
        }
        let ttl = self.options.lease_ttl;
        let lease = match take_lease(self.store.as_ref(), &key, &self.owner, ttl).await {
            Ok(lease) => lease,
            Err(NotTaken::Store(source)) => return Err(EngineError::Store { flow: key, source }),
            Err(NotTaken::Held {
                owner,
                heartbeat_at,
            }) => {
                return Err(EngineError::LeaseHeld {
                    flow: key,
                    owner,
                    heartbeat_at,
                    ttl,
                })
            }
        };
        let lost = CancellationToken::new();
        self.set_lease(Some(lease.clone()));
        let heartbeat = self.spawn_heartbeat(lease.clone(), lost.clone());
        let result = work(&lease, &lost).await;
        drop(heartbeat); // stops renewing before the lease is released
        self.set_lease(None);
        if lost.is_cancelled() {
            return match result {
                Err(e @ EngineError::LeaseLost { .. }) => Err(e),
                _ => Err(self.lease_lost(&lease).await),
            };
        }
        if let Err(e) = self.store.release_lease(&lease).await {
            warn!(flow = %key, "cannot release the run lease: {e}; it turns stale after {:?}", self.options.lease_ttl);
        }
        result
    }

    /// The error of a run that lost its lease, naming the new holder.
    pub(crate) async fn lease_lost(&self, lease: &Lease) -> EngineError {
        let holder = match self.store.get_lease(&lease.key).await {
            Ok(Some(info)) => info.owner,
            _ => None,
        };
        EngineError::LeaseLost {
            flow: lease.key.clone(),
            holder,
        }
    }

    /// Runs `mode` under the flow's lease.
    pub async fn execute(
        &self,
        mode: RunMode,
        step: Option<&str>,
    ) -> Result<RunReport, EngineError> {
        let started = Instant::now();
        if let Some(refused) = self.refused_before_lease(mode, step).await {
            return Err(refused);
        }
        let result = self
            .leased(async |lease, lost| self.execute_leased(mode, step, lease, lost).await)
            .await
            .map(|mut report| {
                report.metrics.wall = started.elapsed();
                report
            });
        if let Some(o) = &self.options.observer {
            o.run_finished(&self.key(), mode, &result);
        }
        result
    }

    /// The refusal of `mode` by what the store holds now, checked before the
    /// lease is taken: taking it writes (a new token), and a refused mode
    /// changes nothing. The plan is checked again under the lease, since
    /// the records may change in between; a store that cannot be read here
    /// is reported by that path.
    async fn refused_before_lease(&self, mode: RunMode, step: Option<&str>) -> Option<EngineError> {
        let key = self.key();
        let flow = self.store.get_flow(&key).await.ok()?;
        let steps = self.store.get_steps(&key).await.ok()?;
        crate::plan::refusal(
            mode,
            step,
            &self.graph,
            key.timeperiod,
            flow.as_ref(),
            steps,
        )
        .map(|reason| EngineError::Refused { flow: key, reason })
    }

    fn spawn_heartbeat(&self, lease: Lease, lost: CancellationToken) -> AbortOnDrop {
        let store = self.store.clone();
        let interval = self.options.heartbeat_interval;
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                match store.renew_lease(&lease, Utc::now()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        error!(flow = %lease.key, "lost the run lease to another engine; stopping at once, leaving running jobs to it");
                        lost.cancel();
                        return;
                    }
                    Err(e) => warn!(flow = %lease.key, "cannot renew the run lease: {e}"),
                }
            }
        }))
    }

    async fn execute_leased(
        &self,
        mode: RunMode,
        target: Option<&str>,
        lease: &Lease,
        lost: &CancellationToken,
    ) -> Result<RunReport, EngineError> {
        let key = self.key();
        let store_error = |source: StoreError| {
            if source.is_fenced() {
                lost.cancel();
                EngineError::LeaseLost {
                    flow: key.clone(),
                    holder: match &source {
                        StoreError::Fenced { holder, .. } => holder.clone(),
                        _ => None,
                    },
                }
            } else {
                EngineError::Store {
                    flow: key.clone(),
                    source,
                }
            }
        };
        let existing_flow = self.store.get_flow(&key).await.map_err(store_error)?;
        let existing_steps = self.store.get_steps(&key).await.map_err(store_error)?;
        // What the records said before this run: how a dead run's steps
        // ended, for closing its run record.
        let stored_states: HashMap<String, StepState> = existing_steps
            .iter()
            .map(|s| (s.step_name.clone(), s.state))
            .collect();
        let shape = self.graph.shape_hash();
        // A fresh run starts over; the other modes continue a stored run,
        // which may have used another version of the flow file.
        let change = match mode {
            RunMode::Nominal => None,
            _ => definition_change(&self.graph, existing_flow.as_ref(), &existing_steps, &shape),
        };
        if let (Some(change), Some(o)) = (&change, &self.options.observer) {
            o.definition_changed(&key, change);
        }
        let now = Utc::now();
        let RunPlan {
            to_run,
            count,
            purge,
            mut records,
            changed,
            retired,
            clusters,
            orphan_jobs,
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

        // The log files before any record: a log directory that cannot be
        // written refuses the run with nothing written to the store.
        let run_log = Arc::new(match &self.options.log_directory {
            Some(dir) => {
                logging::register_run(&key.flow_name, dir).map_err(|source| EngineError::Logs {
                    flow: key.clone(),
                    source,
                })?
            }
            None => logging::RunLog::none(),
        });

        // Jobs a dead run left for steps this run starts afresh end before
        // anything is written or started: one that cannot be stopped
        // refuses the run (the records keep its handle for the next try).
        if !orphan_jobs.is_empty() {
            let span = info_span!("flow", run = run_log.id(), flow = key.flow_name.as_str());
            let problems =
                clusters::cancel_orphan_jobs(&self.clusters, &self.context, orphan_jobs, &span)
                    .await;
            if !problems.is_empty() {
                span.in_scope(|| error!("nothing started: {}", problems.join("; ")));
                run_log.finish().await;
                return Err(EngineError::OrphansLeft {
                    flow: key.clone(),
                    problems,
                });
            }
        }

        let previous_state = existing_flow.as_ref().map(|f| f.state);
        let existing_for_sla = existing_flow.clone();
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
            graph_hash: None,
            sla_missed_at: None,
            trace_parent: None,
        });
        flow.graph_hash = Some(shape);
        flow.start_timeperiod = self.context.start_timeperiod;
        flow.end_timeperiod = self.context.end_timeperiod;
        flow.state = FlowState::InProgress;
        flow.run_mode = mode;
        flow.started_at = Some(now);
        flow.finished_at = None;
        let run = RunRecord {
            id: None,
            flow_name: key.flow_name.clone(),
            timeperiod: key.timeperiod,
            mode,
            target: target.map(str::to_string),
            owner: self.owner.clone(),
            token: lease.token,
            host: hostname(),
            user: username(),
            started_at: now,
            finished_at: None,
            outcome: None,
            steps: records
                .iter()
                .zip(&to_run)
                .filter(|(_, run)| **run)
                .map(|(r, _)| RunStep {
                    step_name: r.step_name.clone(),
                    state: r.state,
                })
                .collect(),
            error: None,
        };
        let to_write: Vec<_> = changed
            .iter()
            .map(|&i| records[i].clone())
            .chain(retired)
            .collect();
        // The run's span, opened before anything runs under it so that a
        // trace exporter (the observer) can join it to the trace a recover
        // continues; the flow record keeps the context it returns.
        let flow_span = info_span!(
            "flow",
            run = run_log.id(),
            flow = key.flow_name.as_str(),
            timeperiod = %key.timeperiod,
            mode = mode.as_str(),
            run_id = tracing::field::Empty,
            state = tracing::field::Empty,
            otel.name = "run",
            otel.status_code = tracing::field::Empty,
        );
        let continued = match mode {
            RunMode::Recovery => flow.trace_parent.take(),
            _ => None,
        };
        flow.trace_parent = match &self.options.tracer {
            Some(tracer) => tracer.run_span(&flow_span, continued.as_deref()),
            None => None,
        }
        .or(continued);
        let begun = self
            .store
            .begin_run(lease, &flow, purge, &to_write, &run)
            .await;
        let (mut flow, mut run) = match begun {
            Ok(begun) => begun,
            Err(e) => {
                end_span(&flow_span, "error", true);
                run_log.finish().await;
                return Err(store_error(e));
            }
        };
        for record in &mut records {
            record.related_flow = flow.id.clone();
        }
        let run_id = run.id.clone().unwrap_or_else(|| RecordId::new(""));

        if self.options.record_logs {
            run_log.record_to_store(&key, &run_id, self.store.clone(), lost.clone());
        }
        flow_span.record("run_id", run_id.as_str());
        flow_span.in_scope(|| {
            info!(
                "{mode} of {key} started (run {run_id}): {count} of {} steps on {clusters} {} cluster(s)",
                self.graph.len(),
                self.clusters.kind()
            )
        });
        if let Some(change) = &change {
            flow_span.in_scope(|| warn!("{change}"));
        }
        self.close_abandoned_runs(lease, &key, &run_id, &stored_states)
            .instrument(flow_span.clone())
            .await;
        if let Some(o) = &self.options.observer {
            o.run_started(&key, mode, count, clusters);
        }
        let sla_watch = self
            .graph
            .signals()
            .sla
            .filter(|_| crate::sla::watches(existing_for_sla.as_ref()))
            .map(|sla| {
                let period_end = key.timeperiod.next(self.graph.time_qualifier()).start();
                SlaWatch::arm(Armed {
                    sla,
                    deadline: crate::sla::deadline(&sla, period_end, now),
                    store: self.store.clone(),
                    lease: lease.clone(),
                    flow: flow.clone(),
                    run: run_id.clone(),
                    mode,
                    observer: self.options.observer.clone(),
                    span: flow_span.clone(),
                })
            });

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
            observer: self.options.observer.clone(),
            flow_span: flow_span.clone(),
            run_log: run_log.clone(),
            keep_up: Default::default(),
            unsure: Default::default(),
        });
        let launched = clusters::launch(
            &shared,
            Launch {
                factory: &self.clusters,
                retry: self.options.launch_retry,
                span: &flow_span,
            },
            clusters,
        )
        .await;
        let set = match launched {
            Ok(set) => set,
            Err(e) => {
                end_span(&flow_span, "error", true);
                run_log.finish().await;
                return Err(store_error(e));
            }
        };
        let clusters_launched = set.workers.len();
        let mut error = None;
        let outcome = if set.workers.is_empty() {
            let mut message = format!("none of {clusters} cluster(s) launched");
            if !set.failures.is_empty() {
                message = format!("{message}: {}", set.failures.join("; "));
            }
            flow_span.in_scope(|| error!("{message}"));
            error = Some(message);
            None
        } else {
            Some(dispatch(shared.clone(), &to_run, records, &set.workers).await)
        };
        let unsure = shared.recheck_lease().await.err();
        if lost.is_cancelled() {
            // The new holder adopts or terminates them.
            flow_span.in_scope(|| {
                warn!(
                    "lost the lease: leaving {} cluster(s) and any running job to the new holder",
                    set.owned.len()
                )
            });
            end_span(&flow_span, "lease_lost", true);
            run_log.finish().await;
            return Err(self.lease_lost(lease).await);
        }
        // A cluster running a job whose outcome is unknown stays up, its
        // record saying so: the next run adopts it with the job.
        let kept_up = shared.kept_up();
        let (keep, owned): (Vec<_>, Vec<_>) = set
            .owned
            .into_iter()
            .partition(|o| kept_up.contains(o.cluster.name()));
        if !keep.is_empty() {
            let names: Vec<&str> = keep.iter().map(|o| o.cluster.name()).collect();
            let message = format!(
                "left cluster(s) {} up: a job on it has an unknown outcome; `flow recover` adopts or cancels it (or `flow clusters --terminate-orphans` ends the cluster)",
                names.join(", ")
            );
            flow_span.in_scope(|| error!("{message}"));
            error = Some(message);
        }
        let mut clusters_left_up = match &unsure {
            None => clusters::terminate(&shared, owned, &flow_span).await,
            Some(why) => clusters::leave_up(owned, why, &flow_span),
        };
        clusters_left_up.extend(set.left_up);

        // Lines that could not be written make the run a failure: a run
        // whose logs are lost must not look like a success.
        let log_failure = run_log.flushed_failure();
        if let Some(failure) = &log_failure {
            let message = format!("the run's logs are incomplete: {failure}");
            flow_span.in_scope(|| error!("{message}"));
            error = Some(match error {
                Some(e) => format!("{e}; {message}"),
                None => message,
            });
        }

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
                let state = if store_error.is_some() || failed || canceled || log_failure.is_some()
                {
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
        if let Some(watch) = sla_watch {
            if let Some(at) = watch.end().await {
                flow.sla_missed_at = Some(at);
            }
        }
        flow.state = state;
        flow.finished_at = Some(Utc::now());
        match &store_failure {
            Some(_) => end_span(&flow_span, "error", true),
            None => end_span(&flow_span, state.as_str(), state == FlowState::Invalid),
        }
        let saved = self.store.save_flow(lease, &flow).await;
        run.finished_at = flow.finished_at;
        run.outcome = Some(state);
        run.steps = steps
            .iter()
            .map(|(step_name, state): &(String, StepState)| RunStep {
                step_name: step_name.clone(),
                state: *state,
            })
            .collect();
        run.error = match (&store_failure, &error) {
            (Some(e), _) => Some(e.to_string()),
            (None, Some(message)) => Some(message.clone()),
            (None, None) => None,
        };
        let finished = match &saved {
            Ok(_) => self.store.finish_run(lease, &run).await,
            Err(_) => Ok(()),
        };
        flow_span.in_scope(|| match (&store_failure, &saved, &finished) {
            (Some(e), _, _) => error!("stopped: the store failed: {e}"),
            (None, Err(e), _) => error!("cannot store the final flow state: {e}"),
            (None, Ok(_), Err(e)) => error!("cannot store the end of the run: {e}"),
            (None, Ok(_), Ok(())) if canceled => {
                warn!("{mode} of {key} cancelled: flow is {state}")
            }
            (None, Ok(_), Ok(())) => info!("{mode} of {key} finished: flow is {state}"),
        });
        if let Some(late) = run_log.finish().await.filter(|_| log_failure.is_none()) {
            // The last lines of the run could not be written.
            error = Some(format!("the run's logs are incomplete: {late}"));
        }
        if let Some(source) = store_failure {
            return Err(store_error(source));
        }
        saved.map_err(store_error)?;
        finished.map_err(store_error)?;
        Ok(RunReport {
            flow: key,
            run: run_id,
            mode,
            state,
            steps,
            canceled,
            clusters_launched,
            clusters_left_up,
            error: error.map(|e| flow_core::mask(&e).into_owned()),
            metrics,
        })
    }
}

/// Records how a run, step or action span ended: its `state`, and, when
/// it `failed`, the error status trace exporters read
/// (`otel.status_code`, tracing-opentelemetry's convention; the engine
/// itself knows no OpenTelemetry).
pub(crate) fn end_span(span: &tracing::Span, state: &str, failed: bool) {
    span.record("state", state);
    if failed {
        span.record("otel.status_code", "error");
    }
}

impl ExecutionEngine {
    /// Closes the run records of this flow's earlier runs whose engines
    /// stopped without recording their end (killed, fenced, or the store
    /// failed): this run holds the lease, so none of them runs. Each gets
    /// an end, `state_invalid`, an error saying so, and its steps as the
    /// records left them (a step it left in progress is `canceled`), so
    /// history never shows a dead run as running or a step as in progress.
    /// A failure here is logged: it loses no work.
    async fn close_abandoned_runs(
        &self,
        lease: &Lease,
        key: &FlowKey,
        current: &RecordId,
        stored: &HashMap<String, StepState>,
    ) {
        let query = RunQuery {
            flow_name: Some(key.flow_name.clone()),
            timeperiod: Some(key.timeperiod),
            limit: Some(ABANDONED_RUNS_CLOSED),
        };
        let runs = match self.store.list_runs(&query).await {
            Ok(runs) => runs,
            Err(e) => {
                warn!("cannot list earlier runs to close abandoned ones: {e}");
                return;
            }
        };
        let now = Utc::now();
        for mut run in runs {
            if run.finished_at.is_some() || run.id.as_ref() == Some(current) {
                continue;
            }
            let id = run.id.clone().map(|id| id.to_string()).unwrap_or_default();
            run.finished_at = Some(now);
            run.outcome = Some(FlowState::Invalid);
            run.error = Some(format!(
                "abandoned: its engine ({}) stopped without recording the end; closed by run {current}",
                run.owner
            ));
            for step in &mut run.steps {
                step.state = match stored.get(&step.step_name).copied() {
                    Some(StepState::InProgress) => StepState::Canceled,
                    Some(state) => state,
                    None => step.state,
                };
            }
            match self.store.finish_run(lease, &run).await {
                Ok(()) => info!("closed run {id}, abandoned by its engine"),
                Err(e) => warn!("cannot close abandoned run {id}: {e}"),
            }
        }
    }
}

/// How many of a flow's latest runs a new run looks at to close the ones
/// dead engines left open (each run closes those before it, so a few do).
const ABANDONED_RUNS_CLOSED: usize = 20;

/// This machine's name, for lease owners and run records.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Who started the run, for run records.
pub(crate) fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions and cannot fail.
            format!("uid {}", unsafe { libc::getuid() })
        })
}

/// Aborts a background task when dropped, so no path leaves it running.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::actions::Identity;
    use flow_core::{ActionInstance, FlowDefinition, StepDefinition, StepRecord, Timeperiod};

    /// A flow of `steps` (name, dependencies).
    fn graph(steps: &[(&str, &[&str])]) -> FlowGraph {
        steps
            .iter()
            .fold(FlowDefinition::new("f"), |flow, (name, deps)| {
                flow.step(
                    StepDefinition::new(*name, ActionInstance::new(Arc::new(Identity)))
                        .depends_on(deps.iter().copied()),
                )
            })
            .build()
            .expect("a valid flow")
    }

    fn timeperiod() -> Timeperiod {
        "2026112900".parse().expect("a timeperiod")
    }

    fn stored(hash: Option<&str>) -> FlowRecord {
        FlowRecord {
            id: None,
            flow_name: "f".into(),
            timeperiod: timeperiod(),
            start_timeperiod: timeperiod(),
            end_timeperiod: timeperiod(),
            state: FlowState::Invalid,
            run_mode: RunMode::Nominal,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            graph_hash: hash.map(str::to_string),
            sla_missed_at: None,
            trace_parent: None,
        }
    }

    fn records(names: &[&str]) -> Vec<StepRecord> {
        names
            .iter()
            .map(|n| StepRecord::embryo("f", n, timeperiod(), None, Utc::now()))
            .collect()
    }

    #[test]
    fn an_unchanged_or_new_flow_has_no_definition_change() {
        let g = graph(&[("a", &[]), ("b", &["a"])]);
        let shape = g.shape_hash();
        let steps = records(&["a", "b"]);
        assert!(
            definition_change(&g, None, &steps, &shape).is_none(),
            "never stored"
        );
        let same = stored(Some(&shape));
        assert!(
            definition_change(&g, Some(&same), &steps, &shape).is_none(),
            "same hash"
        );
        let other = stored(Some("other"));
        assert!(
            definition_change(&g, Some(&other), &[], &shape).is_none(),
            "no step records"
        );
        // A record from before hashes existed, with the same steps.
        let old = stored(None);
        assert!(
            definition_change(&g, Some(&old), &steps, &shape).is_none(),
            "old record, same steps"
        );
    }

    #[test]
    fn added_removed_and_rewired_steps_are_named() {
        let g = graph(&[("a", &[]), ("c", &["a"]), ("d", &["a"])]);
        let shape = g.shape_hash();
        let before = stored(Some("before"));
        let change = definition_change(&g, Some(&before), &records(&["z", "a", "b"]), &shape)
            .expect("a change");
        assert_eq!(change.added, ["c", "d"]);
        assert_eq!(change.removed, ["b", "z"], "sorted");
        assert!(change.rewired);
        let text = change.to_string();
        assert!(
            text.starts_with("the flow definition changed since its stored run"),
            "{text}"
        );
        assert!(
            text.contains("; added step(s) c, d: they count as never run"),
            "{text}"
        );
        assert!(
            text.contains("; removed step(s) b, z: never run again"),
            "{text}"
        );
        assert!(!text.contains("dependencies differ"), "{text}");

        // Only the dependencies changed.
        let rewired = definition_change(&g, Some(&before), &records(&["a", "c", "d"]), &shape)
            .expect("a change");
        assert!(rewired.added.is_empty() && rewired.removed.is_empty() && rewired.rewired);
        assert_eq!(
            rewired.to_string(),
            "the flow definition changed since its stored run; its dependencies differ: this run follows the new ones"
        );

        // A record from before hashes existed, with other steps: changed, not rewired.
        let old = stored(None);
        let change =
            definition_change(&g, Some(&old), &records(&["a", "c"]), &shape).expect("a change");
        assert_eq!(change.added, ["d"]);
        assert!(change.removed.is_empty());
        assert!(!change.rewired);
        let text = change.to_string();
        assert!(
            text.contains("added step(s) d") && !text.contains("removed"),
            "{text}"
        );
        assert!(!text.contains("dependencies differ"), "{text}");
        // Another hash and an added step: the added step explains it.
        let added =
            definition_change(&g, Some(&before), &records(&["a", "c"]), &shape).expect("a change");
        assert!(added.rewired);
        let text = added.to_string();
        assert!(
            text.contains("added step(s) d") && !text.contains("removed"),
            "{text}"
        );
        assert!(!text.contains("dependencies differ"), "{text}");
        let removed_only =
            definition_change(&g, Some(&old), &records(&["a", "c", "d", "e"]), &shape)
                .expect("a change");
        assert!(removed_only.added.is_empty());
        assert_eq!(removed_only.removed, ["e"]);
        let text = removed_only.to_string();
        assert!(
            text.contains("removed step(s) e") && !text.contains("added"),
            "{text}"
        );
        assert!(!text.contains("dependencies differ"), "{text}");
    }
}
