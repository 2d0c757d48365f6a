//! Shared pieces of the engine's integration tests: real SQLite stores in
//! temporary directories, the real local cluster, and small actions that
//! leave evidence on disk.
#![allow(dead_code)]

use async_trait::async_trait;
use flow_cluster_local::{LocalClusterFactory, LocalOptions};
use flow_core::{
    Action, ActionContext, ActionError, ActionInstance, ActionOutcome, Cluster, ClusterError,
    ClusterFactory, ClusterHandle, ExecutionContext, Filesystem, FlowGraph, FlowKey, FlowRecord,
    FlowStore, Job, JobContext, JobHandle, JobStatus, Settings, StepRecord, Timeperiod,
};
use flow_engine::{EngineOptions, ExecutionEngine};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TP: &str = "2026112800";

pub fn tp(text: &str) -> Timeperiod {
    text.parse().unwrap()
}

/// A temporary home for one test: store file, logs, work dir.
pub struct Bench {
    pub dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
}

impl Bench {
    pub fn new() -> Self {
        Self::with_store_options(SqliteOptions::default())
    }

    /// A bench whose store is opened with `options` (a short busy timeout,
    /// for a test that holds the write lock from another connection).
    pub fn with_store_options(options: SqliteOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("flow.db"), options).unwrap());
        Bench { dir, store }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    pub fn local(&self) -> Arc<LocalClusterFactory> {
        Arc::new(LocalClusterFactory::new(LocalOptions {
            root: self.dir.path().to_path_buf(),
            work_dir: self.dir.path().to_path_buf(),
            state_dir: self.dir.path().join(".state"),
            ..LocalOptions::default()
        }))
    }

    pub fn context(
        &self,
        graph: &FlowGraph,
        timeperiod: &str,
        clusters: usize,
    ) -> ExecutionContext {
        let t = tp(timeperiod);
        ExecutionContext {
            flow_name: graph.name().to_string(),
            timeperiod: t,
            start_timeperiod: t,
            end_timeperiod: t.next(graph.time_qualifier()),
            settings: Arc::new(Settings::new()),
            number_of_clusters: clusters,
        }
    }

    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            log_directory: Some(self.logs()),
            cancel_grace: Duration::from_secs(5),
            ..EngineOptions::default()
        }
    }

    /// An engine on the local cluster.
    pub fn engine(
        &self,
        graph: &Arc<FlowGraph>,
        timeperiod: &str,
        clusters: usize,
    ) -> ExecutionEngine {
        self.engine_with(graph, timeperiod, clusters, self.local(), self.options())
    }

    pub fn engine_with(
        &self,
        graph: &Arc<FlowGraph>,
        timeperiod: &str,
        clusters: usize,
        factory: Arc<dyn ClusterFactory>,
        options: EngineOptions,
    ) -> ExecutionEngine {
        ExecutionEngine::new(
            graph.clone(),
            self.context(graph, timeperiod, clusters),
            self.store.clone(),
            factory,
            options,
        )
    }

    /// The flow record and step records, sorted, for before/after checks.
    pub async fn snapshot(
        &self,
        flow: &str,
        timeperiod: &str,
    ) -> (Option<FlowRecord>, Vec<StepRecord>) {
        let key = FlowKey::new(flow, tp(timeperiod));
        let f = self.store.get_flow(&key).await.unwrap();
        let mut s = self.store.get_steps(&key).await.unwrap();
        s.sort_by(|a, b| a.step_name.cmp(&b.step_name));
        (f, s)
    }

    pub async fn step_states(&self, flow: &str, timeperiod: &str) -> Vec<(String, String)> {
        self.snapshot(flow, timeperiod)
            .await
            .1
            .into_iter()
            .map(|s| (s.step_name, s.state.as_str().to_string()))
            .collect()
    }

    /// The cluster records of `flow` and `timeperiod`.
    pub async fn clusters(&self, flow: &str, timeperiod: &str) -> Vec<flow_core::ClusterRecord> {
        self.store
            .list_clusters(Some(&FlowKey::new(flow, tp(timeperiod))))
            .await
            .unwrap()
    }
}

/// Appends its step's name to `file`; fails while `fail_while` exists.
#[derive(Debug)]
pub struct Append {
    pub file: PathBuf,
    pub fail_while: Option<PathBuf>,
}

#[async_trait]
impl Action for Append {
    fn kind(&self) -> &str {
        "append"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .unwrap();
        writeln!(f, "{}", cx.step).unwrap();
        if self.fail_while.as_ref().is_some_and(|p| p.exists()) {
            return Err(ActionError::failed(format!(
                "{} exists",
                self.fail_while.as_ref().unwrap().display()
            )));
        }
        Ok(ActionOutcome::Done)
    }
}

pub fn append(file: &Path) -> ActionInstance {
    ActionInstance::new(Arc::new(Append {
        file: file.to_path_buf(),
        fail_while: None,
    }))
}

pub fn append_failing_while(file: &Path, flag: &Path) -> ActionInstance {
    ActionInstance::new(Arc::new(Append {
        file: file.to_path_buf(),
        fail_while: Some(flag.to_path_buf()),
    }))
}

/// The lines of a file, empty if it does not exist.
pub fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Runs until the test releases it (and says when it has started): a step
/// that is running for exactly as long as the test needs, where a sleep
/// would have to guess a length long enough. Ignores the step's
/// cancellation.
#[derive(Debug, Clone, Default)]
pub struct Hold {
    /// Cancelled by the test to let the action end.
    pub release: flow_core::CancellationToken,
    /// Cancelled by the action when it starts.
    pub started: flow_core::CancellationToken,
}

#[async_trait]
impl Action for Hold {
    fn kind(&self) -> &str {
        "hold"
    }
    async fn run(&self, _cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        self.started.cancel();
        self.release.cancelled().await;
        Ok(ActionOutcome::Done)
    }
}

impl Hold {
    pub fn action(&self) -> ActionInstance {
        ActionInstance::new(Arc::new(self.clone()))
    }
}

/// Records when each step ran, to measure overlap.
#[derive(Debug, Default)]
pub struct Intervals(pub Mutex<Vec<(String, Instant, Instant)>>);

#[derive(Debug)]
pub struct Timed {
    pub intervals: Arc<Intervals>,
    pub hold: Duration,
}

#[async_trait]
impl Action for Timed {
    fn kind(&self) -> &str {
        "timed"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let start = Instant::now();
        tokio::time::sleep(self.hold).await;
        self.intervals
            .0
            .lock()
            .unwrap()
            .push((cx.step.to_string(), start, Instant::now()));
        Ok(ActionOutcome::Done)
    }
}

/// The largest number of intervals open at one instant.
pub fn max_overlap(intervals: &Intervals) -> usize {
    let v = intervals.0.lock().unwrap();
    let mut edges: Vec<(Instant, i32)> =
        v.iter().flat_map(|(_, s, e)| [(*s, 1), (*e, -1)]).collect();
    edges.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut open, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        max = max.max(open);
    }
    max as usize
}

/// Wraps the real local cluster factory and counts launches, terminations
/// and the job status queries and cancellations of the clusters it makes.
pub struct Counting {
    pub inner: Arc<dyn ClusterFactory>,
    pub launched: Arc<AtomicUsize>,
    pub terminated: Arc<AtomicUsize>,
    pub cancelled: Arc<AtomicUsize>,
    pub queried: Arc<AtomicUsize>,
    pub created: Arc<AtomicUsize>,
    /// Clusters with these numbers fail to launch.
    pub failing: Vec<usize>,
    /// The name runs share the clusters by ([`Cluster::shared_name`], as
    /// EMR and Dataproc clusters are shared): the store's record of its
    /// users decides who launches and who terminates.
    pub shared: Option<String>,
    /// Called when a cluster is waited for, before the real wait; an
    /// error fails the launch with it (a test's way to act at that moment).
    pub before_ready: Option<BeforeReady>,
    /// Each cluster's `terminate` fails with this (after the real one).
    pub terminate_error: Option<String>,
    /// Each cluster's `provision` says it started, then waits for the
    /// test's release: a launch under way for as long as the test needs.
    pub provision_gate: Option<Hold>,
}

/// See [`Counting::before_ready`].
pub type BeforeReady = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

impl Counting {
    pub fn new(inner: Arc<dyn ClusterFactory>) -> Self {
        Counting {
            inner,
            launched: Default::default(),
            terminated: Default::default(),
            cancelled: Default::default(),
            queried: Default::default(),
            created: Default::default(),
            failing: Vec::new(),
            shared: None,
            before_ready: None,
            terminate_error: None,
            provision_gate: None,
        }
    }
}

struct CountingCluster {
    inner: Arc<dyn Cluster>,
    launched: Arc<AtomicUsize>,
    terminated: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
    queried: Arc<AtomicUsize>,
    fail_launch: bool,
    shared: Option<String>,
    before_ready: Option<BeforeReady>,
    terminate_error: Option<String>,
    provision_gate: Option<Hold>,
}

impl ClusterFactory for Counting {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn create(
        &self,
        name: &str,
        context: &ExecutionContext,
    ) -> Result<Arc<dyn Cluster>, ClusterError> {
        let n = self.created.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(CountingCluster {
            inner: self.inner.create(name, context)?,
            launched: self.launched.clone(),
            terminated: self.terminated.clone(),
            cancelled: self.cancelled.clone(),
            queried: self.queried.clone(),
            fail_launch: self.failing.contains(&n),
            shared: self.shared.clone(),
            before_ready: self.before_ready.clone(),
            terminate_error: self.terminate_error.clone(),
            provision_gate: self.provision_gate.clone(),
        }))
    }
}

#[async_trait]
impl Cluster for CountingCluster {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn provision(&self) -> Result<ClusterHandle, ClusterError> {
        if self.fail_launch {
            return Err(ClusterError::Launch {
                cluster: self.name().to_string(),
                message: "refused by the test".into(),
                transient: false,
            });
        }
        if let Some(gate) = &self.provision_gate {
            gate.started.cancel();
            gate.release.cancelled().await;
        }
        self.inner.provision().await
    }
    async fn wait_ready(&self) -> Result<(), ClusterError> {
        if let Some(before) = &self.before_ready {
            before().map_err(|message| ClusterError::Launch {
                cluster: self.name().to_string(),
                message,
                transient: false,
            })?;
        }
        self.inner.wait_ready().await?;
        self.launched.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn adopt(&self, handle: &ClusterHandle) -> Result<bool, ClusterError> {
        self.inner.adopt(handle).await
    }
    fn prepare(&self, job: &Job, cx: &JobContext<'_>) -> Result<JobHandle, ClusterError> {
        self.inner.prepare(job, cx)
    }
    async fn submit(
        &self,
        handle: &JobHandle,
        job: &Job,
        cx: &JobContext<'_>,
    ) -> Result<JobHandle, ClusterError> {
        self.inner.submit(handle, job, cx).await
    }
    async fn wait(&self, handle: &JobHandle, cx: &JobContext<'_>) -> Result<(), ClusterError> {
        self.inner.wait(handle, cx).await
    }
    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, ClusterError> {
        self.queried.fetch_add(1, Ordering::SeqCst);
        self.inner.status(handle).await
    }
    async fn cancel(&self, handle: &JobHandle) -> Result<(), ClusterError> {
        self.cancelled.fetch_add(1, Ordering::SeqCst);
        self.inner.cancel(handle).await
    }
    async fn terminate(&self) -> Result<(), ClusterError> {
        self.terminated.fetch_add(1, Ordering::SeqCst);
        self.inner.terminate().await?;
        match &self.terminate_error {
            Some(message) => Err(ClusterError::Terminate {
                cluster: self.name().to_string(),
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }
    fn filesystem(&self) -> &dyn Filesystem {
        self.inner.filesystem()
    }
    fn shared_name(&self) -> Option<String> {
        self.shared.clone()
    }
    fn instances(&self) -> Option<Vec<flow_core::InstanceGroup>> {
        self.inner.instances()
    }
}
