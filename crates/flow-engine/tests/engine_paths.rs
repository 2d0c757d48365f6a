//! Engine paths that only the binary's end-to-end tests used to show: the
//! lease a running mode exposes and who the run record names, the
//! definition-change notice (not for a fresh `run`), and the jobs of steps
//! removed from the definition, looked up as orphans; the graph-visit metric.

mod support;

use flow_core::actions::Identity;
use flow_core::{
    ActionInstance, FlowDefinition, FlowGraph, FlowKey, FlowState, FlowStore, JobHandle, JobRecord,
    Lease, LeaseOutcome, RunMode, RunQuery, StepDefinition, StepState,
};
use flow_engine::{DefinitionChange, EngineOptions, ExecutionEngine, RunObserver};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use support::*;

fn flow(name: &str, steps: &[&str]) -> Arc<FlowGraph> {
    Arc::new(
        steps
            .iter()
            .fold(FlowDefinition::new(name), |f, s| {
                f.step(StepDefinition::new(
                    *s,
                    ActionInstance::new(Arc::new(Identity)),
                ))
            })
            .build()
            .unwrap(),
    )
}

/// Notes what the engine shows while a run is under way.
#[derive(Default)]
struct Probe {
    engine: OnceLock<Weak<ExecutionEngine>>,
    lease_at_start: Mutex<Option<Lease>>,
    changes: AtomicUsize,
}

impl RunObserver for Probe {
    fn run_started(&self, _flow: &FlowKey, _mode: RunMode, _steps: usize, _clusters: usize) {
        let engine = self.engine.get().and_then(Weak::upgrade);
        *self.lease_at_start.lock().unwrap() = engine.and_then(|e| e.lease());
    }
    fn definition_changed(&self, _flow: &FlowKey, _change: &DefinitionChange) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }
}

fn probed(
    bench: &Bench,
    graph: &Arc<FlowGraph>,
    factory: Arc<Counting>,
) -> (Arc<ExecutionEngine>, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let options = EngineOptions {
        observer: Some(probe.clone()),
        ..bench.options()
    };
    let engine = Arc::new(bench.engine_with(graph, TP, 1, factory, options));
    probe.engine.set(Arc::downgrade(&engine)).unwrap();
    (engine, probe)
}

#[tokio::test]
async fn a_running_mode_shows_its_lease_and_the_run_record_names_host_and_user() {
    let bench = Bench::new();
    let graph = flow("leased", &["a"]);
    let (engine, probe) = probed(&bench, &graph, Arc::new(Counting::new(bench.local())));
    assert!(engine.lease().is_none(), "no lease before a run");
    let report = engine.run().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    let lease = probe
        .lease_at_start
        .lock()
        .unwrap()
        .clone()
        .expect("the lease while the run was under way");
    assert_eq!(lease.owner, engine.owner());
    assert_eq!(lease.key, FlowKey::new("leased", tp(TP)));
    assert!(engine.lease().is_none(), "released with the run");

    // The owner and the run record name this machine and user.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    assert!(!host.is_empty());
    assert!(
        engine
            .owner()
            .starts_with(&format!("{host}:{}:", std::process::id())),
        "{}",
        engine.owner()
    );
    let runs = bench
        .store
        .list_runs(&RunQuery {
            flow_name: Some("leased".into()),
            timeperiod: None,
            limit: None,
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].host, host);
    let user = &runs[0].user;
    let expected: Vec<String> = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .collect();
    match expected.first() {
        Some(name) => assert_eq!(user, name),
        None => assert!(user.starts_with("uid "), "{user}"),
    }
}

#[tokio::test]
async fn a_fresh_run_reports_no_definition_change_and_recover_runs_only_added_steps() {
    let bench = Bench::new();
    let counting = || Arc::new(Counting::new(bench.local()));
    let report = bench
        .engine(&flow("edited", &["a", "b"]), TP, 1)
        .run()
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Processed);

    // `run` starts over: the removed step is no news.
    let (engine, probe) = probed(&bench, &flow("edited", &["a"]), counting());
    let report = engine.run().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(probe.changes.load(Ordering::SeqCst), 0);

    // A processed flow whose definition gained a step: recover runs it alone.
    let (engine, probe) = probed(&bench, &flow("edited", &["a", "c"]), counting());
    let report = engine.recover().await.unwrap();
    assert_eq!(probe.changes.load(Ordering::SeqCst), 1);
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(report.steps, [("c".to_string(), StepState::Processed)]);
}

#[tokio::test]
async fn the_job_of_a_step_removed_from_the_definition_is_looked_up_as_an_orphan_and_its_record_closed(
) {
    let bench = Bench::new();
    let report = bench
        .engine(&flow("shrunk", &["a", "b"]), TP, 1)
        .run()
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Processed);
    // As a dead run would leave it: `b` in progress with a job on record (of
    // a job directory that does not exist, so cancelling it stops nothing).
    let key = FlowKey::new("shrunk", tp(TP));
    let lease = match bench
        .store
        .acquire_lease(&key, "test", chrono::Utc::now(), Duration::from_secs(60))
        .await
        .unwrap()
    {
        LeaseOutcome::Acquired(lease) => lease,
        other => panic!("{other:?}"),
    };
    let mut b = bench.snapshot("shrunk", TP).await.1.remove(1);
    assert_eq!(b.step_name, "b");
    b.state = StepState::InProgress;
    b.finished_at = None;
    b.job = Some(JobRecord {
        action_index: 0,
        action: "identity".into(),
        attempt: 1,
        handle: JobHandle::new(
            "local",
            "local-0",
            [("dir", bench.path("no-such-job").display().to_string())],
        ),
        submitted_at: chrono::Utc::now(),
        adopted: false,
    });
    bench.store.save_step(&lease, &b).await.unwrap();
    bench.store.release_lease(&lease).await.unwrap();

    let counting = Arc::new(Counting::new(bench.local()));
    let engine = bench.engine_with(
        &flow("shrunk", &["a"]),
        TP,
        1,
        counting.clone(),
        bench.options(),
    );
    let report = engine.run_from("a").await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    // Its cluster was asked about it; the job is not running (its
    // directory does not exist), so there is nothing to cancel.
    assert_eq!(counting.queried.load(Ordering::SeqCst), 1, "the orphan job");
    assert_eq!(counting.cancelled.load(Ordering::SeqCst), 0);
    let b = bench.snapshot("shrunk", TP).await.1.remove(1);
    assert_eq!(b.state, StepState::Canceled);
    assert_eq!(b.error.as_deref(), Some("removed from the flow definition"));
    assert!(b.job.is_none());
}

#[tokio::test]
async fn the_run_metrics_count_each_dependant_visited_once() {
    let bench = Bench::new();
    let id = || ActionInstance::new(Arc::new(Identity));
    // A diamond: four dependency edges.
    let graph = Arc::new(
        FlowDefinition::new("diamond")
            .step(StepDefinition::new("a", id()))
            .step(StepDefinition::new("b", id()).depends_on(["a"]))
            .step(StepDefinition::new("c", id()).depends_on(["a"]))
            .step(StepDefinition::new("d", id()).depends_on(["b", "c"]))
            .build()
            .unwrap(),
    );
    let report = bench.engine(&graph, TP, 2).run().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(report.metrics.graph_visits, 4);
    // `run_one` visits the dependants of its step without releasing them.
    let report = bench.engine(&graph, TP, 1).run_one("a").await.unwrap();
    assert_eq!(report.metrics.graph_visits, 2);
}
