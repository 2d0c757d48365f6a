//! The store failing mid-run, and the store calls per step.

mod support;

use async_trait::async_trait;
use flow_core::actions::Identity;
use flow_core::{
    ActionInstance, FlowDefinition, FlowKey, FlowState, FlowStore, StepDefinition, StepState,
    StoreError, StoreLayer,
};
use flow_engine::{EngineError, EngineOptions, ExecutionEngine};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_stops_the_run_and_recover_works_afterwards() {
    let bench = Bench::new();
    let db = bench.path("flow.db");
    let store = Arc::new(
        SqliteStore::open(
            &db,
            SqliteOptions {
                busy_timeout: Duration::from_millis(200),
                ..SqliteOptions::default()
            },
        )
        .unwrap(),
    );
    // `slow` runs until the store is locked.
    let hold = Hold::default();
    let graph = Arc::new(
        FlowDefinition::new("faulty")
            .step(StepDefinition::new("slow", hold.action()))
            .step(
                StepDefinition::new("after", ActionInstance::new(Arc::new(Identity)))
                    .depends_on(["slow"]),
            )
            .build()
            .unwrap(),
    );
    // A long ttl: the dead run's lease turns stale only when the test ages it.
    let options = EngineOptions {
        lease_ttl: Duration::from_secs(600),
        heartbeat_interval: Duration::from_millis(100),
        ..bench.options()
    };
    let counting = Arc::new(Counting::new(bench.local()));
    let engine = ExecutionEngine::new(
        graph.clone(),
        bench.context(&graph, TP, 1),
        store.clone(),
        counting.clone(),
        options.clone(),
    );
    let key = FlowKey::new("faulty", tp(TP));
    let running = tokio::spawn(async move { engine.run().await });
    loop {
        if store
            .get_steps(&key)
            .await
            .unwrap()
            .iter()
            .any(|s| s.state == StepState::InProgress)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Another process takes the write lock for longer than the busy timeout.
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    hold.release.cancel();
    let result = running.await.unwrap();
    match &result {
        Err(EngineError::Store {
            source: StoreError::Operation { .. },
            ..
        }) => {}
        other => panic!("expected a store error, got {other:?}"),
    }
    assert!(result.unwrap_err().to_string().contains("save_step"));
    assert_eq!(
        counting.terminated.load(Ordering::SeqCst),
        1,
        "clusters terminated after a store fault"
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);

    // The record says the flow was in progress. The locked store kept the
    // run from releasing its lease: recover is refused while it is live...
    let flow = store.get_flow(&key).await.unwrap().unwrap();
    assert_eq!(flow.state, FlowState::InProgress);
    let engine = ExecutionEngine::new(
        graph.clone(),
        bench.context(&graph, TP, 1),
        store.clone(),
        bench.local(),
        options,
    );
    match engine.recover().await {
        Err(EngineError::LeaseHeld { .. }) => {}
        other => panic!("expected the dead run's lease to hold, got {other:?}"),
    }
    // ...and takes over and finishes the flow once it is stale (its
    // heartbeat a day old, as if the ttl had passed).
    let aged = rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE lease SET heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')",
            [],
        )
        .unwrap();
    assert_eq!(aged, 1);
    let report = engine.recover().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    let states: Vec<_> = store
        .get_steps(&key)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.state)
        .collect();
    assert_eq!(states, [StepState::Processed, StepState::Processed]);
}

/// Counts the calls that reach the real store.
struct CountingStore {
    inner: Arc<SqliteStore>,
    save_step: AtomicU64,
    /// Lease reads: a run reads its lease only after a write failed.
    get_lease: AtomicU64,
    other: AtomicU64,
}

#[async_trait]
impl StoreLayer for CountingStore {
    fn inner(&self) -> &dyn FlowStore {
        &*self.inner
    }

    /// Heartbeats are not counted: their number depends on how long the
    /// run takes, not on its shape.
    fn called(&self, method: &'static str) {
        match method {
            "save_step" => self.save_step.fetch_add(1, Ordering::Relaxed),
            "get_lease" => self.get_lease.fetch_add(1, Ordering::Relaxed),
            "renew_lease" => 0,
            _ => self.other.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// (save_step calls, other store calls) for a fan-out / fan-in of `width`
/// identity steps, counted by a wrapper around the real store.
async fn costs(bench: &Bench, width: usize) -> (u64, u64) {
    let id = || ActionInstance::new(Arc::new(Identity));
    let mut flow =
        FlowDefinition::new(format!("fan{width}")).step(StepDefinition::new("root", id()));
    let mut leaves = Vec::new();
    for i in 0..width {
        leaves.push(format!("leaf{i}"));
        flow = flow.step(StepDefinition::new(format!("leaf{i}"), id()).depends_on(["root"]));
    }
    flow = flow.step(StepDefinition::new("sink", id()).depends_on(leaves));
    let graph = Arc::new(flow.build().unwrap());
    let store = Arc::new(CountingStore {
        inner: bench.store.clone(),
        save_step: AtomicU64::new(0),
        get_lease: AtomicU64::new(0),
        other: AtomicU64::new(0),
    });
    let engine = ExecutionEngine::new(
        graph.clone(),
        bench.context(&graph, TP, 4),
        store.clone(),
        bench.local(),
        EngineOptions::default(),
    );
    let report = engine.run().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(store.get_lease.load(Ordering::Relaxed), 0, "no lease read");
    (
        store.save_step.load(Ordering::Relaxed),
        store.other.load(Ordering::Relaxed),
    )
}

/// Store calls seen from outside the engine. The dispatcher's own work per
/// step (no graph scans) is timed on two graph sizes by `cargo xtask bench`
/// (target "dispatch: per-step cost of fanout-10000 <= 1.5x fanout-1000's"):
/// timing has no place in a test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_calls_per_step_do_not_grow_with_the_graph() {
    let bench = Bench::new();
    let (small_saves, small_other) = costs(&bench, 50).await;
    let (large_saves, large_other) = costs(&bench, 2000).await;
    let (small_n, large_n) = (52u64, 2002u64);
    // Two stored state changes per identity step, whatever the graph size.
    assert_eq!(small_saves, 2 * small_n);
    assert_eq!(large_saves, 2 * large_n);
    // A constant number of other store calls per run (lease, reads, begin, end).
    assert_eq!(small_other, large_other);
}
