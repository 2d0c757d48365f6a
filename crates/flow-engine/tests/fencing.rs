//! Fencing inside the engine: a write with a lease that another owner took
//! over fails, and the engine stops at once without writing anything more,
//! also when its heartbeat has not noticed yet (here it never renews during
//! the test).

mod support;

use async_trait::async_trait;
use flow_core::actions::Identity;
use flow_core::{
    Action, ActionContext, ActionError, ActionInstance, ActionOutcome, FlowDefinition, FlowKey,
    FlowStore, StepDefinition,
};
use flow_engine::{EngineError, EngineOptions};
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// Takes the flow's lease over from under the running engine (as a second
/// engine would after this one stalled past the ttl), then succeeds.
#[derive(Debug)]
struct StealLease;

#[async_trait]
impl Action for StealLease {
    fn kind(&self) -> &str {
        "steal"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        // A clock an hour ahead makes the engine's lease stale for it.
        STORE
            .with(|s| s.borrow().clone())
            .expect("the test sets the store")
            .acquire_lease(
                &FlowKey::new(cx.execution.flow_name.clone(), cx.execution.timeperiod),
                "thief",
                chrono::Utc::now() + chrono::Duration::hours(1),
                Duration::from_secs(1),
            )
            .await
            .map_err(ActionError::Store)?;
        Ok(ActionOutcome::Done)
    }
}

// The test's store, for the action (the test runs on one thread).
thread_local! {
    static STORE: std::cell::RefCell<Option<Arc<dyn FlowStore>>> = const { std::cell::RefCell::new(None) };
}

#[tokio::test]
async fn a_fenced_write_stops_the_run_at_once_and_writes_nothing_more() {
    let bench = Bench::new();
    STORE.with(|s| *s.borrow_mut() = Some(bench.store.clone()));
    let id = || ActionInstance::new(Arc::new(Identity));
    let graph = Arc::new(
        FlowDefinition::new("fenced")
            .step(StepDefinition::new(
                "first",
                ActionInstance::new(Arc::new(StealLease)),
            ))
            .step(StepDefinition::new("second", id()).depends_on(["first"]))
            .build()
            .unwrap(),
    );
    let options = EngineOptions {
        // Long enough that only the fence can notice the loss.
        lease_ttl: Duration::from_secs(3600),
        heartbeat_interval: Duration::from_secs(1800),
        ..bench.options()
    };
    let counting = Arc::new(Counting::new(bench.local()));
    let engine = bench.engine_with(&graph, TP, 1, counting.clone(), options);
    let result = engine.run().await;
    match result {
        Err(EngineError::LeaseLost { holder, .. }) => {
            assert_eq!(holder.as_deref(), Some("thief"))
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    // The cluster is left to the new holder (the fenced step write alone
    // stopped the run: the heartbeat never noticed).
    assert_eq!(
        counting.launched.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(
        counting
            .terminated
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a run that lost its lease terminates no cluster"
    );
    // The first step's end could not be written, and nothing after it:
    // the records are as they were when the lease changed hands.
    let (flow, steps) = bench.snapshot("fenced", TP).await;
    assert_eq!(
        flow.unwrap().state,
        flow_core::FlowState::InProgress,
        "the final flow state was not written"
    );
    let states: Vec<_> = steps
        .iter()
        .map(|s| (s.step_name.as_str(), s.state))
        .collect();
    assert_eq!(
        states,
        [
            ("first", flow_core::StepState::InProgress),
            ("second", flow_core::StepState::Embryo)
        ]
    );
    // The thief's lease is untouched: the engine did not release it.
    assert_eq!(lease_owner(&bench).await.as_deref(), Some("thief"));
}

/// The owner of flow `fenced`'s lease as stored.
async fn lease_owner(bench: &Bench) -> Option<String> {
    bench
        .store
        .get_lease(&FlowKey::new("fenced", tp(TP)))
        .await
        .unwrap()
        .unwrap()
        .owner
}

/// Takes the lease over in the store file itself as soon as the run has
/// started, before its clusters are recorded (as another process's engine
/// would after this one stalled).
struct StealOnStart(std::path::PathBuf);

impl flow_engine::RunObserver for StealOnStart {
    fn run_started(&self, _: &FlowKey, _: flow_core::RunMode, _: usize, _: usize) {
        let taken = rusqlite::Connection::open(&self.0)
            .unwrap()
            .execute("UPDATE lease SET owner = 'thief', token = token + 1", [])
            .unwrap();
        assert_eq!(taken, 1);
    }
}

/// Flow `fenced`: one step that does nothing.
fn one_step() -> Arc<flow_core::FlowGraph> {
    one_step_of(ActionInstance::new(Arc::new(Identity)))
}

/// Flow `fenced`: one step, `only`, of `action`.
fn one_step_of(action: ActionInstance) -> Arc<flow_core::FlowGraph> {
    Arc::new(
        FlowDefinition::new("fenced")
            .step(StepDefinition::new("only", action))
            .build()
            .unwrap(),
    )
}

/// A bench whose store waits only briefly for a write lock: every write of
/// a stale engine waits this long for the thief's lock, which it holds for
/// the rest of the run, and fails.
fn briefly_waiting() -> Bench {
    Bench::with_store_options(flow_store_sqlite::SqliteOptions {
        busy_timeout: Duration::from_millis(100),
        ..Default::default()
    })
}

/// Options under which only the fence notices a lease taken over: the
/// heartbeat never runs during the test.
fn never_renewing(bench: &Bench) -> EngineOptions {
    EngineOptions {
        lease_ttl: Duration::from_secs(3600),
        heartbeat_interval: Duration::from_secs(1800),
        ..bench.options()
    }
}

#[tokio::test]
async fn a_fenced_cluster_record_names_the_new_holder() {
    let bench = Bench::new();
    let graph = one_step();
    let options = EngineOptions {
        observer: Some(Arc::new(StealOnStart(bench.path("flow.db")))),
        ..never_renewing(&bench)
    };
    let counting = Arc::new(Counting::new(bench.local()));
    let engine = bench.engine_with(&graph, TP, 1, counting.clone(), options);
    match engine.run().await {
        Err(EngineError::LeaseLost { holder, .. }) => {
            assert_eq!(holder.as_deref(), Some("thief"))
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    let (flow, steps) = bench.snapshot("fenced", TP).await;
    assert_eq!(flow.unwrap().state, flow_core::FlowState::InProgress);
    assert!(steps
        .iter()
        .all(|s| s.state == flow_core::StepState::Embryo));
    // Its first record was refused, so nobody else knows of the cluster:
    // this run ended it.
    assert_eq!(
        counting
            .terminated
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the unrecorded cluster was terminated"
    );
}

/// Takes the lease over in the store file for `thief` (as another
/// process's engine would after this one stalled) and, when `hold_lock`,
/// keeps that engine's write lock afterwards (the new holder writing), so
/// the stale engine's next write fails with SQLite's busy error rather
/// than the fence's.
struct Thief {
    db: std::path::PathBuf,
    hold_lock: bool,
    /// The thief's connection, holding the write lock until dropped.
    holding: std::sync::Mutex<Option<rusqlite::Connection>>,
}

impl Thief {
    fn new(bench: &Bench, hold_lock: bool) -> Arc<Self> {
        Arc::new(Thief {
            db: bench.path("flow.db"),
            hold_lock,
            holding: Default::default(),
        })
    }

    fn steal(&self) {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let taken = conn
            .execute("UPDATE lease SET owner = 'thief', token = token + 1", [])
            .unwrap();
        assert_eq!(taken, 1);
        if self.hold_lock {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            *self.holding.lock().unwrap() = Some(conn);
        }
    }

    /// Steals the lease when the cluster is waited for; the cluster then
    /// comes up, or fails to.
    fn before_ready(self: &Arc<Self>, fails: bool) -> BeforeReady {
        let thief = self.clone();
        Arc::new(move || {
            thief.steal();
            if fails {
                Err("refused by the test".to_string())
            } else {
                Ok(())
            }
        })
    }
}

/// Runs flow `fenced` on one cluster whose wait steals the lease for
/// `thief` (the cluster then comes up or `fails` to), with a store whose
/// busy timeout is short; checks the run stopped with the lease lost and
/// left the cluster, recorded as launching, to the new holder.
async fn lease_lost_while_the_cluster_comes_up(hold_lock: bool, fails: bool) {
    let bench = briefly_waiting();
    let thief = Thief::new(&bench, hold_lock);
    let mut counting = Counting::new(bench.local());
    counting.before_ready = Some(thief.before_ready(fails));
    let counting = Arc::new(counting);
    let engine = bench.engine_with(&one_step(), TP, 1, counting.clone(), never_renewing(&bench));
    let result = engine.run().await;
    drop(thief.holding.lock().unwrap().take());
    let case = format!("lock held: {hold_lock}, fails: {fails}");
    let clusters = bench.clusters("fenced", TP).await;
    assert_eq!(
        counting
            .terminated
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "{case}: the recorded cluster is the new holder's to end: {clusters:?}, {result:?}"
    );
    match result {
        Err(EngineError::LeaseLost { holder, .. }) => {
            assert_eq!(holder.as_deref(), Some("thief"), "{case}")
        }
        other => panic!("{case}: expected LeaseLost, got {other:?}"),
    }
    assert_eq!(clusters.len(), 1, "{case}: {clusters:?}");
    assert_eq!(
        clusters[0].state,
        flow_core::ClusterState::Launching,
        "{case}: no write after the lease changed hands"
    );
    assert_eq!(
        lease_owner(&bench).await.as_deref(),
        Some("thief"),
        "{case}"
    );
}

/// The lease taken over while the cluster comes up (after its first
/// record, so the new holder knows of it): the run stops with the lease
/// lost and leaves the cluster to the new holder, whether the cluster came
/// up or failed to.
#[tokio::test]
async fn a_lease_lost_while_a_cluster_comes_up_leaves_the_cluster_to_the_new_holder() {
    for fails in [false, true] {
        lease_lost_while_the_cluster_comes_up(false, fails).await;
    }
}

/// The same when the write after the takeover fails without being fenced
/// (the new holder keeps the write lock, so it answers SQLite's busy
/// error): the run reads the lease before it takes the cluster as its own
/// to terminate, finds it lost, and stops as if fenced.
#[tokio::test]
async fn a_lease_lost_under_the_new_holders_write_lock_leaves_the_cluster_to_it() {
    for fails in [false, true] {
        lease_lost_while_the_cluster_comes_up(true, fails).await;
    }
}

/// What [`Unanswering`] fails, besides every read of the lease.
#[derive(Clone, Copy, PartialEq)]
enum Unanswered {
    /// The writes of a cluster's state after its first record.
    ClusterStates,
    /// A step's final write.
    StepEnds,
    /// A step's write back to `embryo` (a rollback's).
    StepResets,
}

/// Fails some writes and every read of the lease, as a store that stops
/// answering would.
struct Unanswering {
    inner: Arc<flow_store_sqlite::SqliteStore>,
    fails: Unanswered,
}

fn unanswered(operation: &'static str) -> flow_core::StoreError {
    flow_core::StoreError::Operation {
        operation,
        key: "fenced".into(),
        message: "no answer (injected by the test)".into(),
    }
}

#[async_trait]
impl flow_core::StoreLayer for Unanswering {
    fn inner(&self) -> &dyn FlowStore {
        &*self.inner
    }
    async fn save_cluster(
        &self,
        lease: &flow_core::Lease,
        record: &flow_core::ClusterRecord,
    ) -> Result<flow_core::RecordId, flow_core::StoreError> {
        if self.fails == Unanswered::ClusterStates
            && record.state != flow_core::ClusterState::Launching
        {
            return Err(unanswered("save_cluster"));
        }
        self.inner.save_cluster(lease, record).await
    }
    async fn save_step(
        &self,
        lease: &flow_core::Lease,
        step: &flow_core::StepRecord,
    ) -> Result<flow_core::RecordId, flow_core::StoreError> {
        let fails = match self.fails {
            Unanswered::ClusterStates => false,
            Unanswered::StepEnds => step.state.is_complete(),
            Unanswered::StepResets => step.state == flow_core::StepState::Embryo,
        };
        if fails {
            return Err(unanswered("save_step"));
        }
        self.inner.save_step(lease, step).await
    }
    async fn get_lease(
        &self,
        _key: &FlowKey,
    ) -> Result<Option<flow_core::LeaseInfo>, flow_core::StoreError> {
        Err(unanswered("get_lease"))
    }
}

/// An engine for `graph` on `counting`'s clusters whose store fails what
/// `fails` says.
fn engine_on_unanswering(
    bench: &Bench,
    graph: Arc<flow_core::FlowGraph>,
    fails: Unanswered,
    counting: Arc<Counting>,
) -> flow_engine::ExecutionEngine {
    flow_engine::ExecutionEngine::new(
        graph.clone(),
        bench.context(&graph, TP, 1),
        Arc::new(Unanswering {
            inner: bench.store.clone(),
            fails,
        }),
        counting,
        bench.options(),
    )
}

/// When neither the cluster's state can be saved nor the lease read, the
/// run cannot tell whether the cluster is still its own or the new
/// holder's: it leaves it up under its record (for the next run or
/// `--terminate-orphans`) and says so in its report.
#[tokio::test]
async fn a_cluster_whose_owner_is_unknown_is_left_up_and_reported() {
    for fails in [false, true] {
        let bench = Bench::new();
        let mut counting = Counting::new(bench.local());
        if fails {
            counting.before_ready = Some(Arc::new(|| Err("refused by the test".to_string())));
        }
        let counting = Arc::new(counting);
        let engine = engine_on_unanswering(
            &bench,
            one_step(),
            Unanswered::ClusterStates,
            counting.clone(),
        );
        let report = engine.run().await.unwrap();
        assert_eq!(
            counting
                .terminated
                .load(std::sync::atomic::Ordering::SeqCst),
            0,
            "fails: {fails}: a cluster that may be the new holder's is not ended"
        );
        assert_eq!(
            report.clusters_left_up.len(),
            1,
            "fails: {fails}: {report:?}"
        );
        assert!(
            report.clusters_left_up[0].starts_with("local-0: left up"),
            "fails: {fails}: {report:?}"
        );
        assert_eq!(
            report.state,
            flow_core::FlowState::Invalid,
            "fails: {fails}"
        );
        let clusters = bench.clusters("fenced", TP).await;
        assert_eq!(clusters.len(), 1, "fails: {fails}: {clusters:?}");
        assert_eq!(
            clusters[0].state,
            flow_core::ClusterState::Launching,
            "fails: {fails}: its record stands for the next run"
        );
    }
}

/// Steals the lease for its thief while the step runs, then succeeds.
#[derive(Debug)]
struct StealAndSucceed(Arc<Thief>);

impl std::fmt::Debug for Thief {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Thief")
    }
}

#[async_trait]
impl Action for StealAndSucceed {
    fn kind(&self) -> &str {
        "steal-and-succeed"
    }
    async fn run(&self, _cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        self.0.steal();
        Ok(ActionOutcome::Done)
    }
}

/// The lease taken over while a step runs, the new holder keeping the
/// write lock: the step's end fails busy, not fenced. Before it ends its
/// clusters the run reads the lease, finds it lost, and leaves the cluster
/// (and the step) to the new holder.
#[tokio::test]
async fn a_step_write_failing_under_the_new_holders_lock_leaves_the_cluster_to_it() {
    let bench = briefly_waiting();
    let thief = Thief::new(&bench, true);
    let graph = one_step_of(ActionInstance::new(Arc::new(StealAndSucceed(
        thief.clone(),
    ))));
    let counting = Arc::new(Counting::new(bench.local()));
    let engine = bench.engine_with(&graph, TP, 1, counting.clone(), never_renewing(&bench));
    let result = engine.run().await;
    drop(thief.holding.lock().unwrap().take());
    let clusters = bench.clusters("fenced", TP).await;
    assert_eq!(
        counting
            .terminated
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the cluster is the new holder's to end: {clusters:?}, {result:?}"
    );
    match result {
        Err(EngineError::LeaseLost { holder, .. }) => {
            assert_eq!(holder.as_deref(), Some("thief"))
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    assert_eq!(clusters.len(), 1, "{clusters:?}");
    assert_eq!(clusters[0].state, flow_core::ClusterState::Up);
    let (flow, steps) = bench.snapshot("fenced", TP).await;
    assert_eq!(flow.unwrap().state, flow_core::FlowState::InProgress);
    assert_eq!(steps[0].state, flow_core::StepState::InProgress);
    assert_eq!(lease_owner(&bench).await.as_deref(), Some("thief"));
}

/// When a step's write fails without a fence and the lease cannot be read
/// either, the run cannot tell whether its clusters are still its own: it
/// leaves them up under their records and fails with the store's error.
#[tokio::test]
async fn clusters_whose_owner_is_unknown_at_the_end_are_left_up() {
    let bench = Bench::new();
    let counting = Arc::new(Counting::new(bench.local()));
    let engine = engine_on_unanswering(&bench, one_step(), Unanswered::StepEnds, counting.clone());
    let result = engine.run().await;
    assert_eq!(
        counting
            .terminated
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a cluster that may be the new holder's is not ended: {result:?}"
    );
    assert!(
        matches!(result, Err(EngineError::Store { .. })),
        "{result:?}"
    );
    let clusters = bench.clusters("fenced", TP).await;
    assert_eq!(clusters.len(), 1, "{clusters:?}");
    assert_eq!(
        clusters[0].state,
        flow_core::ClusterState::Up,
        "its record stands for the next run"
    );
    // The run's error is the store's; its log names the cluster left up.
    let log = std::fs::read_to_string(bench.logs().join("fenced/fenced.log")).unwrap();
    assert!(
        log.contains("local-0: left up, since whether this run still holds its lease is unknown"),
        "{log}"
    );
}

/// The same in a rollback: the rollback action steals the lease, the new
/// holder keeping the write lock, so the step's write fails busy; the
/// rollback reads the lease before it ends its cluster, and leaves it.
#[tokio::test]
async fn a_rollback_write_failing_under_the_new_holders_lock_leaves_the_cluster_to_it() {
    let bench = briefly_waiting();
    let thief = Thief::new(&bench, true);
    let graph = one_step_of(
        ActionInstance::new(Arc::new(Identity))
            .with_rollback(Arc::new(StealAndSucceed(thief.clone()))),
    );
    let counting = Arc::new(Counting::new(bench.local()));
    let engine = bench.engine_with(&graph, TP, 1, counting.clone(), never_renewing(&bench));
    let result = run_then_roll_back(&engine, &counting).await;
    drop(thief.holding.lock().unwrap().take());
    rollbacks_cluster_left_up(&bench, &counting, &result).await;
    match result {
        Err(EngineError::LeaseLost { holder, .. }) => {
            assert_eq!(holder.as_deref(), Some("thief"))
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    let (_, steps) = bench.snapshot("fenced", TP).await;
    assert_eq!(steps[0].state, flow_core::StepState::Processed);
    assert_eq!(lease_owner(&bench).await.as_deref(), Some("thief"));
}

/// The same in a rollback: its step's write and the lease read fail, so
/// it leaves its cluster up under its record.
#[tokio::test]
async fn a_rollback_whose_lease_is_unknown_at_the_end_leaves_its_cluster_up() {
    let bench = Bench::new();
    let counting = Arc::new(Counting::new(bench.local()));
    let graph =
        one_step_of(ActionInstance::new(Arc::new(Identity)).with_rollback(Arc::new(Identity)));
    let engine = engine_on_unanswering(&bench, graph, Unanswered::StepResets, counting.clone());
    let result = run_then_roll_back(&engine, &counting).await;
    rollbacks_cluster_left_up(&bench, &counting, &result).await;
}

/// Runs flow `fenced` (processed, its cluster ended) and rolls its step
/// back.
async fn run_then_roll_back(
    engine: &flow_engine::ExecutionEngine,
    counting: &Counting,
) -> Result<flow_engine::RollbackReport, EngineError> {
    let report = engine.run().await.unwrap();
    assert_eq!(report.state, flow_core::FlowState::Processed);
    assert_eq!(
        counting
            .terminated
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the run ended its cluster"
    );
    engine.rollback("only", false).await
}

/// Checks the rollback's cluster was not ended and is recorded up.
async fn rollbacks_cluster_left_up(
    bench: &Bench,
    counting: &Counting,
    result: &Result<flow_engine::RollbackReport, EngineError>,
) {
    let clusters = bench.clusters("fenced", TP).await;
    assert_eq!(
        counting
            .terminated
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the rollback's cluster may be the new holder's: {clusters:?}, {result:?}"
    );
    let states: Vec<_> = clusters.iter().map(|c| c.state).collect();
    assert!(
        states.contains(&flow_core::ClusterState::Up),
        "the rollback's cluster is recorded up: {clusters:?}"
    );
}
