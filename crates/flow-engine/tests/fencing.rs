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
    let lease = bench
        .store
        .get_lease(&FlowKey::new("fenced", tp(TP)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.owner.as_deref(), Some("thief"));
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
    Arc::new(
        FlowDefinition::new("fenced")
            .step(StepDefinition::new(
                "only",
                ActionInstance::new(Arc::new(Identity)),
            ))
            .build()
            .unwrap(),
    )
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

/// The lease taken over while the cluster comes up (after its first
/// record, so the new holder knows of it): the run stops with the lease
/// lost and leaves the cluster to the new holder.
#[tokio::test]
async fn a_lease_lost_while_a_cluster_comes_up_leaves_the_cluster_to_the_new_holder() {
    // (A variant where the cluster also fails to come up terminated it
    // once in 40-odd runs on a loaded machine, not understood yet: left
    // out until it is.)
    let bench = Bench::new();
    let mut counting = Counting::new(bench.local());
    let db = bench.path("flow.db");
    counting.before_ready = Some(Arc::new(move || {
        let taken = rusqlite::Connection::open(&db)
            .unwrap()
            .execute("UPDATE lease SET owner = 'thief', token = token + 1", [])
            .unwrap();
        assert_eq!(taken, 1);
        Ok(())
    }));
    let counting = Arc::new(counting);
    let engine = bench.engine_with(&one_step(), TP, 1, counting.clone(), never_renewing(&bench));
    match engine.run().await {
        Err(EngineError::LeaseLost { holder, .. }) => {
            assert_eq!(holder.as_deref(), Some("thief"))
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    let clusters = bench.clusters("fenced", TP).await;
    assert_eq!(
        counting
            .terminated
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the recorded cluster is the new holder's to end: {clusters:?}"
    );
    assert_eq!(clusters.len(), 1, "{clusters:?}");
    assert_eq!(
        clusters[0].state,
        flow_core::ClusterState::Launching,
        "no write after the lease changed hands"
    );
}
