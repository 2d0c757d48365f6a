//! The first event of a flow run's stream does not read the run's recorded
//! lines: the server asks the store where they end (`last_log_position`,
//! an index lookup) instead of paging through them all, which took 22 s
//! for 1.36 M lines. A real server on a real SQLite store, through a
//! wrapper that notes every `read_logs` call; `cargo xtask bench` times the
//! first event of a 1 M-line run.

use async_trait::async_trait;
use flow_core::{
    FlowKey, FlowState, FlowStore, LogQuery, StoreError, StoreLayer, StoredLogLine, Timeperiod,
};
use flow_server::{FlowFile, Server, ServerOptions};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::{Arc, Mutex};

/// The store, with the `after` of every `read_logs` call noted.
struct NotingReads {
    inner: Arc<dyn FlowStore>,
    reads: Mutex<Vec<Option<u64>>>,
}

#[async_trait]
impl StoreLayer for NotingReads {
    fn inner(&self) -> &dyn FlowStore {
        &*self.inner
    }

    async fn read_logs(&self, query: &LogQuery) -> Result<Vec<StoredLogLine>, StoreError> {
        self.reads.lock().unwrap().push(query.after);
        self.inner.read_logs(query).await
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
