//! The first event of a flow run's stream does not read the run's recorded
//! lines: the server asks the store where they end (`last_log_position`,
//! an index lookup) instead of paging through them all, which took 22 s
//! for 1.36 M lines. A real server on a real SQLite store, through a
//! wrapper that notes every `read_logs` call; `cargo xtask bench` times the
//! first event of a 1 M-line run.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flow_core::{
    ClusterRecord, FlowKey, FlowQuery, FlowRecord, FlowState, FlowStore, Lease, LeaseInfo,
    LeaseOutcome, LogLine, LogQuery, RecordId, RunQuery, RunRecord, StepRecord, StoreError,
    StoredLogLine, Timeperiod,
};
use flow_server::{FlowFile, Server, ServerOptions};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The store, with the `after` of every `read_logs` call noted.
struct NotingReads {
    inner: Arc<dyn FlowStore>,
    reads: Mutex<Vec<Option<u64>>>,
}

#[async_trait]
impl FlowStore for NotingReads {
    async fn get_flow(&self, key: &FlowKey) -> Result<Option<FlowRecord>, StoreError> {
        self.inner.get_flow(key).await
    }
    async fn get_steps(&self, key: &FlowKey) -> Result<Vec<StepRecord>, StoreError> {
        self.inner.get_steps(key).await
    }
    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError> {
        self.inner.list_flows(query).await
    }
    async fn acquire_lease(
        &self,
        key: &FlowKey,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        self.inner.acquire_lease(key, owner, now, ttl).await
    }
    async fn renew_lease(&self, lease: &Lease, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.inner.renew_lease(lease, now).await
    }
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release_lease(lease).await
    }
    async fn get_lease(&self, key: &FlowKey) -> Result<Option<LeaseInfo>, StoreError> {
        self.inner.get_lease(key).await
    }
    async fn begin_run(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        purge_steps: bool,
        steps: &[StepRecord],
        run: &RunRecord,
    ) -> Result<(FlowRecord, RunRecord), StoreError> {
        self.inner
            .begin_run(lease, flow, purge_steps, steps, run)
            .await
    }
    async fn save_flow(&self, lease: &Lease, flow: &FlowRecord) -> Result<FlowRecord, StoreError> {
        self.inner.save_flow(lease, flow).await
    }
    async fn save_step(&self, lease: &Lease, step: &StepRecord) -> Result<RecordId, StoreError> {
        self.inner.save_step(lease, step).await
    }
    async fn save_flow_and_steps(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        steps: &[StepRecord],
    ) -> Result<FlowRecord, StoreError> {
        self.inner.save_flow_and_steps(lease, flow, steps).await
    }
    async fn finish_run(&self, lease: &Lease, run: &RunRecord) -> Result<(), StoreError> {
        self.inner.finish_run(lease, run).await
    }
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.list_runs(query).await
    }
    async fn save_cluster(
        &self,
        lease: &Lease,
        cluster: &ClusterRecord,
    ) -> Result<RecordId, StoreError> {
        self.inner.save_cluster(lease, cluster).await
    }
    async fn list_clusters(&self, key: Option<&FlowKey>) -> Result<Vec<ClusterRecord>, StoreError> {
        self.inner.list_clusters(key).await
    }
    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        self.inner.append_logs(lines).await
    }
    async fn read_logs(&self, query: &LogQuery) -> Result<Vec<StoredLogLine>, StoreError> {
        self.reads.lock().unwrap().push(query.after);
        self.inner.read_logs(query).await
    }
    async fn last_log_position(&self, key: &FlowKey) -> Result<u64, StoreError> {
        self.inner.last_log_position(key).await
    }
    async fn purge_logs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.purge_logs(before).await
    }
}

#[path = "../examples/support/recorded.rs"]
mod recorded;

const TP: &str = "2026112800";
/// More lines than the server ever reads in one call (10,000 for the old
/// seed), so reading them all would show as several calls.
const LINES: usize = 25_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_event_reads_no_recorded_line() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn FlowStore> =
        Arc::new(SqliteStore::open(&dir.path().join("flow.db"), SqliteOptions::default()).unwrap());
    let tp: Timeperiod = TP.parse().unwrap();
    let key = FlowKey::new("logged", tp);
    let (_, run) = recorded::record_run(&*sqlite, &key, FlowState::Processed, &[]).await;
    recorded::record_lines(&*sqlite, &key, &run, "a", LINES).await;
    let last = sqlite.last_log_position(&key).await.unwrap();
    assert!(last >= LINES as u64, "{last}");

    let store = Arc::new(NotingReads {
        inner: sqlite,
        reads: Mutex::new(Vec::new()),
    });
    let mut options = ServerOptions::new(
        store.clone(),
        vec![FlowFile {
            graph: recorded::one_step_flow("logged", "a"),
            origin: "test".into(),
        }],
    );
    options.bind = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind(options).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let serving = tokio::spawn(server.run(async move { stopped.cancelled().await }));

    let mut response = reqwest::get(format!("{base}/api/flows/logged/{TP}/events"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = response.chunk().await.unwrap().expect("the stream ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let reads = store.reads.lock().unwrap().clone();
    stop.cancel();
    drop(response);
    let _ = serving.await;

    let event = &text[..text.find("\n\n").unwrap()];
    assert!(event.contains("event: snapshot"), "{event}");
    let data = event
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .unwrap_or_else(|| panic!("no data: {event}"));
    let snapshot: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
    assert_eq!(snapshot["log_position"], last, "{snapshot}");
    // Lines after the position may be read (the watcher follows new
    // ones); none before it was.
    assert!(
        reads.iter().all(|after| after.is_some_and(|a| a >= last)),
        "the first event read recorded lines (read_logs after {reads:?}, the last line at {last})"
    );
}
