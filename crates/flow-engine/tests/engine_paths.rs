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
    // As a dead run would leave it: `b` in progress with a job on record.
    let key = FlowKey::new("shrunk", tp(TP));
    let lease = acquire(&bench, &key, "test", chrono::Utc::now(), 60).await;
    let mut b = bench.snapshot("shrunk", TP).await.1.remove(1);
    assert_eq!(b.step_name, "b");
    left_in_progress(&bench, &mut b, "local-0");
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

/// The lease of `key` for `owner`, taken at `at` for `ttl_secs`.
async fn acquire(
    bench: &Bench,
    key: &FlowKey,
    owner: &str,
    at: chrono::DateTime<chrono::Utc>,
    ttl_secs: u64,
) -> Lease {
    match bench
        .store
        .acquire_lease(key, owner, at, Duration::from_secs(ttl_secs))
        .await
        .unwrap()
    {
        LeaseOutcome::Acquired(lease) => lease,
        other => panic!("{other:?}"),
    }
}

/// `step` as a dead run leaves it: in progress, with a job on record on
/// `cluster` (of a job directory that does not exist, so cancelling it
/// stops nothing).
fn left_in_progress(bench: &Bench, step: &mut flow_core::StepRecord, cluster: &str) {
    step.state = StepState::InProgress;
    step.finished_at = None;
    step.job = Some(JobRecord {
        action_index: 0,
        action: "identity".into(),
        attempt: 1,
        handle: JobHandle::new(
            "local",
            cluster,
            [("dir", bench.path("no-such-job").display().to_string())],
        ),
        submitted_at: chrono::Utc::now(),
        adopted: false,
    });
}

/// A real local cluster, provisioned and up; `reused` as a backend marks a
/// cluster it found running under the configured name (EMR's reuse).
async fn local_cluster_up(
    bench: &Bench,
    context: &flow_core::ExecutionContext,
    name: &str,
    reused: bool,
) -> flow_core::ClusterHandle {
    use flow_core::ClusterFactory;
    let cluster = bench.local().create(name, context).unwrap();
    let mut handle = cluster.provision().await.unwrap();
    cluster.wait_ready().await.unwrap();
    handle.reused = reused;
    handle
}

fn cluster_record(
    key: &FlowKey,
    run: &flow_core::RecordId,
    handle: flow_core::ClusterHandle,
) -> flow_core::ClusterRecord {
    let now = chrono::Utc::now();
    flow_core::ClusterRecord {
        id: None,
        flow_name: key.flow_name.clone(),
        timeperiod: key.timeperiod,
        run: run.clone(),
        handle,
        state: flow_core::ClusterState::Up,
        launched_at: now,
        updated_at: now,
        message: None,
        usage: Default::default(),
    }
}

/// `flow clusters --terminate-orphans`, at the engine: of a dead run's
/// clusters, the one it launched is terminated and the step whose job ran
/// on it closed; the one it reused (it existed before the run) is left up,
/// and so is the step whose job runs on it, since that job may still run;
/// a live run's cluster is left alone, reported once. (Mutants of
/// `terminate_orphans`, `terminate_recorded` and `close_steps_on` that
/// the binary's single-cluster tests cannot tell apart.)
#[tokio::test]
async fn terminate_orphans_ends_only_what_a_dead_run_launched_and_closes_only_its_steps() {
    use flow_core::ClusterState;
    const OTHER: &str = "2026112900";
    let bench = Bench::new();
    let graph = flow("orphans", &["a", "b"]);
    let mut runs = Vec::new();
    for t in [TP, OTHER] {
        let report = bench.engine(&graph, t, 1).run().await.unwrap();
        assert_eq!(report.state, FlowState::Processed);
        runs.push(report.run);
    }
    let context = bench.context(&graph, TP, 2);
    let launched = local_cluster_up(&bench, &context, "local-0", false).await;
    let reused = local_cluster_up(&bench, &context, "local-1", true).await;

    // As a run that died leaves it: both clusters up, `a`'s job on the
    // launched one, `b`'s on the reused one, both steps in progress.
    let dead = FlowKey::new("orphans", tp(TP));
    // Its engine died a day ago: the next taker finds its lease stale.
    let a_day_ago = chrono::Utc::now() - chrono::Duration::days(1);
    let lease = acquire(&bench, &dead, "dead-host:1:0", a_day_ago, 60).await;
    for handle in [&launched, &reused] {
        let record = cluster_record(&dead, &runs[0], handle.clone());
        bench.store.save_cluster(&lease, &record).await.unwrap();
    }
    for (mut step, cluster) in bench
        .snapshot("orphans", TP)
        .await
        .1
        .into_iter()
        .zip(["local-0", "local-1"])
    {
        left_in_progress(&bench, &mut step, cluster);
        bench.store.save_step(&lease, &step).await.unwrap();
    }
    // The other timeperiod's run is alive (its lease is fresh).
    let live = FlowKey::new("orphans", tp(OTHER));
    let live_lease = acquire(&bench, &live, "alive", chrono::Utc::now(), 3600).await;
    let handle = flow_core::ClusterHandle {
        backend_id: "the-live-runs".into(),
        ..launched.clone()
    };
    let record = cluster_record(&live, &runs[1], handle);
    bench
        .store
        .save_cluster(&live_lease, &record)
        .await
        .unwrap();

    let counting = Arc::new(Counting::new(bench.local()));
    let outcomes = flow_engine::terminate_orphans(
        bench.store.clone(),
        counting.clone(),
        None,
        None,
        |r| bench.context(&graph, &r.timeperiod.to_string(), 1),
        "sweeper",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let mut said: Vec<(String, String, Result<ClusterState, String>)> = outcomes
        .into_iter()
        .map(|o| {
            (
                o.record.timeperiod.to_string(),
                o.record.handle.name,
                o.result,
            )
        })
        .collect();
    said.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        said,
        [
            (TP.into(), "local-0".into(), Ok(ClusterState::Terminated)),
            (TP.into(), "local-1".into(), Ok(ClusterState::LeftUp)),
            (
                OTHER.into(),
                "local-0".into(),
                Err("its flow is being run by alive".into())
            ),
        ]
    );
    assert_eq!(counting.terminated.load(Ordering::SeqCst), 2);
    let dead_records = bench.clusters("orphans", TP).await;
    let by_id = |id: &str| {
        dead_records
            .iter()
            .find(|r| r.handle.backend_id == id)
            .unwrap_or_else(|| panic!("{id}: {dead_records:?}"))
            .clone()
    };
    let ended = by_id(&launched.backend_id);
    assert_eq!(ended.state, ClusterState::Terminated);
    assert_eq!(ended.message.as_deref(), Some("terminated as an orphan"));
    assert_eq!(by_id(&reused.backend_id).state, ClusterState::LeftUp);
    let live_records = bench.clusters("orphans", OTHER).await;
    assert!(
        live_records
            .iter()
            .any(|r| r.handle.backend_id == "the-live-runs" && r.state == ClusterState::Up),
        "the live run's cluster: {live_records:?}"
    );
    let steps = bench.snapshot("orphans", TP).await.1;
    assert_eq!(steps[0].state, StepState::Invalid, "{:?}", steps[0]);
    assert!(steps[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("terminated by `flow clusters --terminate-orphans`")));
    assert_eq!(
        steps[1].state,
        StepState::InProgress,
        "the job on the cluster left up may still run: {:?}",
        steps[1]
    );
}
