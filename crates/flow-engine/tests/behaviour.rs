//! Concurrency, cleanup, cluster lifecycle, logs, retries, timeouts,
//! cancellation, skip/noop and leases, on the real local cluster and store.

mod support;

use async_trait::async_trait;
use flow_core::actions::{Fail, Identity, Noop, Shell, Sleep};
use flow_core::{
    Action, ActionContext, ActionError, ActionInstance, ActionOutcome, FlowDefinition, FlowKey,
    FlowState, FlowStore, LeaseOutcome, RetryPolicy, StepDefinition, StepState, Template,
};
use flow_engine::EngineError;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn act(a: impl Action + 'static) -> ActionInstance {
    ActionInstance::new(Arc::new(a))
}

fn shell(command: &str) -> ActionInstance {
    act(Shell {
        command: Template::parse(command).unwrap(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_run_independent_steps_concurrently() {
    let bench = Bench::new();
    let intervals = Arc::new(Intervals::default());
    let timed = || {
        act(Timed {
            intervals: intervals.clone(),
            hold: Duration::from_millis(300),
        })
    };
    let mut flow = FlowDefinition::new("fan").step(StepDefinition::new("root", act(Identity)));
    for i in 0..4 {
        flow = flow.step(StepDefinition::new(format!("leaf{i}"), timed()).depends_on(["root"]));
    }
    let graph = Arc::new(flow.build().unwrap());
    let report = bench.engine(&graph, TP, 2).run().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(report.clusters_launched, 2);
    assert_eq!(intervals.0.lock().unwrap().len(), 4);
    // Two clusters: steps overlapped, and never more than two at once.
    assert_eq!(max_overlap(&intervals), 2);
}

/// Fails its run and records that its cleanup ran anyway.
#[derive(Debug)]
struct FailWithCleanup {
    marker: PathBuf,
    panic: bool,
}

#[async_trait]
impl Action for FailWithCleanup {
    fn kind(&self) -> &str {
        "fail_with_cleanup"
    }
    async fn run(&self, _cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        if self.panic {
            panic!("boom in the action");
        }
        Err(ActionError::failed("broken on purpose"))
    }
    async fn cleanup(&self, cx: &ActionContext<'_>) -> Result<(), ActionError> {
        std::fs::write(&self.marker, cx.step).unwrap();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_runs_and_clusters_terminate_after_success_failure_and_panic() {
    let bench = Bench::new();
    for (case, main, expected) in [
        ("ok", act(Identity), FlowState::Processed),
        (
            "fail",
            act(FailWithCleanup {
                marker: bench.path("fail.cleanup"),
                panic: false,
            }),
            FlowState::Invalid,
        ),
        (
            "panic",
            act(FailWithCleanup {
                marker: bench.path("panic.cleanup"),
                panic: true,
            }),
            FlowState::Invalid,
        ),
    ] {
        let graph = Arc::new(
            FlowDefinition::new(format!("life_{case}"))
                .step(StepDefinition::new("first", act(Identity)))
                .step(StepDefinition::new("second", main).depends_on(["first"]))
                .step(StepDefinition::new("third", act(Identity)))
                .build()
                .unwrap(),
        );
        let counting = Arc::new(Counting::new(bench.local()));
        let engine = bench.engine_with(&graph, TP, 3, counting.clone(), bench.options());
        let report = engine.run().await.unwrap();
        assert_eq!(report.state, expected, "{case}");
        assert_eq!(counting.created.load(Ordering::SeqCst), 3, "{case}");
        assert_eq!(counting.launched.load(Ordering::SeqCst), 3, "{case}");
        assert_eq!(
            counting.terminated.load(Ordering::SeqCst),
            3,
            "{case}: every cluster terminated"
        );
        if case != "ok" {
            assert_eq!(
                std::fs::read_to_string(bench.path(&format!("{case}.cleanup"))).unwrap(),
                "second"
            );
            let steps = bench.snapshot(&format!("life_{case}"), TP).await.1;
            let second = steps.iter().find(|s| s.step_name == "second").unwrap();
            assert_eq!(second.state, StepState::Invalid);
            if case == "panic" {
                assert!(second
                    .error
                    .as_deref()
                    .unwrap()
                    .contains("panicked: boom in the action"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_fails_to_launch_is_skipped_and_none_fails_the_flow() {
    let bench = Bench::new();
    let graph = Arc::new(
        FlowDefinition::new("launch")
            .step(StepDefinition::new("a", act(Identity)))
            .step(StepDefinition::new("b", act(Identity)))
            .build()
            .unwrap(),
    );
    let mut counting = Counting::new(bench.local());
    counting.failing = vec![0];
    let counting = Arc::new(counting);
    let report = bench
        .engine_with(&graph, TP, 2, counting.clone(), bench.options())
        .run()
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(report.clusters_launched, 1);
    assert_eq!(counting.terminated.load(Ordering::SeqCst), 2);

    let mut counting = Counting::new(bench.local());
    counting.failing = vec![0, 1];
    let counting = Arc::new(counting);
    let report = bench
        .engine_with(&graph, TP, 2, counting.clone(), bench.options())
        .run()
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Invalid);
    assert_eq!(report.clusters_launched, 0);
    let error = report.error.unwrap();
    assert!(error.contains("none of 2 cluster(s) launched: "), "{error}");
    // Each cluster's reason, as its backend gave it.
    assert_eq!(
        error
            .matches("failed to launch: refused by the test")
            .count(),
        2,
        "{error}"
    );
    assert_eq!(counting.terminated.load(Ordering::SeqCst), 2);

    // A shared name whose launch failed is given up at once: no claim is
    // left for other runs to wait on while this one lives.
    let mut counting = Counting::new(bench.local());
    counting.failing = vec![0];
    counting.shared = Some("pool".to_string());
    let report = bench
        .engine_with(&graph, "2026112900", 1, Arc::new(counting), bench.options())
        .run()
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Invalid);
    let claims: i64 = rusqlite::Connection::open(bench.path("flow.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM shared_cluster", [], |row| row.get(0))
        .unwrap();
    assert_eq!(claims, 0, "the failed launch's claim on the name is left");
}

/// The real store, but the first write of a cluster record in `state` fails
/// as a store that is unavailable would (not fenced).
struct ClusterSaveFails {
    inner: Arc<dyn FlowStore>,
    state: flow_core::ClusterState,
    failed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl flow_core::StoreLayer for ClusterSaveFails {
    fn inner(&self) -> &dyn FlowStore {
        &*self.inner
    }
    async fn save_cluster(
        &self,
        lease: &flow_core::Lease,
        record: &flow_core::ClusterRecord,
    ) -> Result<flow_core::RecordId, flow_core::StoreError> {
        if record.state == self.state && !self.failed.swap(true, Ordering::SeqCst) {
            return Err(flow_core::StoreError::Operation {
                operation: "save_cluster",
                key: record.handle.name.clone(),
                message: "unavailable, by the test".to_string(),
            });
        }
        self.inner.save_cluster(lease, record).await
    }
}

/// A cluster whose record cannot be written when it comes up (or fails to)
/// is not used and is terminated at the run's end; the run ends `invalid`
/// saying why (none launched), not with the store's error as if fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_record_cannot_be_written_is_not_used_and_is_terminated() {
    use flow_core::ClusterState;
    let bench = Bench::new();
    let graph = Arc::new(
        FlowDefinition::new("unrecorded")
            .step(StepDefinition::new("a", act(Identity)))
            .build()
            .unwrap(),
    );
    for (timeperiod, state, comes_up) in [
        (TP, ClusterState::Up, true),
        ("2026112900", ClusterState::LaunchFailed, false),
    ] {
        let store = Arc::new(ClusterSaveFails {
            inner: bench.store.clone(),
            state,
            failed: Default::default(),
        });
        let mut counting = Counting::new(bench.local());
        if !comes_up {
            counting.before_ready = Some(Arc::new(|| Err("not ready, by the test".to_string())));
        }
        let counting = Arc::new(counting);
        let engine = flow_engine::ExecutionEngine::new(
            graph.clone(),
            bench.context(&graph, timeperiod, 1),
            store.clone(),
            counting.clone(),
            bench.options(),
        );
        let report = engine
            .run()
            .await
            .unwrap_or_else(|e| panic!("{state}: the run stopped: {e}"));
        assert!(store.failed.load(Ordering::SeqCst), "{state}: no fault");
        assert_eq!(report.state, FlowState::Invalid, "{state}");
        let error = report.error.unwrap();
        assert!(error.contains("none of 1 cluster(s) launched"), "{error}");
        if comes_up {
            assert!(error.contains("cannot record it"), "{error}");
        }
        assert_eq!(
            counting.terminated.load(Ordering::SeqCst),
            1,
            "{state}: the cluster was not terminated"
        );
        assert_eq!(
            bench.step_states("unrecorded", timeperiod).await,
            [("a".to_string(), "state_embryo".to_string())]
        );
    }
}

/// A cluster that fails to come up keeps `launch_failed` and the reason on
/// its record after the run ended it; one that cannot be terminated is in
/// the report as possibly still up, recorded `terminate_failed` with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_records_keep_a_failed_launch_and_a_failed_termination() {
    let bench = Bench::new();
    let graph = Arc::new(
        FlowDefinition::new("ends")
            .step(StepDefinition::new("a", act(Identity)))
            .build()
            .unwrap(),
    );

    let mut counting = Counting::new(bench.local());
    counting.before_ready = Some(Arc::new(|| Err("not ready, by the test".to_string())));
    let counting = Arc::new(counting);
    let report = bench
        .engine_with(&graph, TP, 1, counting.clone(), bench.options())
        .run()
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Invalid);
    assert_eq!(counting.terminated.load(Ordering::SeqCst), 1);
    assert!(report.clusters_left_up.is_empty(), "{report:?}");
    let record = bench.clusters("ends", TP).await;
    assert_eq!(record.len(), 1, "{record:?}");
    assert_eq!(record[0].state, flow_core::ClusterState::LaunchFailed);
    assert!(
        record[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("not ready, by the test")),
        "{record:?}"
    );

    let mut counting = Counting::new(bench.local());
    counting.terminate_error = Some("refused, by the test".to_string());
    let counting = Arc::new(counting);
    let report = bench
        .engine_with(&graph, "2026112900", 1, counting.clone(), bench.options())
        .run()
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(report.clusters_left_up.len(), 1, "{report:?}");
    assert!(
        report.clusters_left_up[0].starts_with("local-0: ")
            && report.clusters_left_up[0].contains("refused, by the test"),
        "{report:?}"
    );
    let record = bench.clusters("ends", "2026112900").await;
    assert_eq!(record[0].state, flow_core::ClusterState::TerminateFailed);
    assert!(
        record[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("refused, by the test")),
        "{record:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_go_to_flow_and_step_files_with_logger_names() {
    let bench = Bench::new();
    let graph = Arc::new(
        FlowDefinition::new("logged")
            .step(
                StepDefinition::new(
                    "extract",
                    shell("echo extracting {timeperiod}; echo oops >&2"),
                )
                .pre(act(Identity).named("prepare")),
            )
            .build()
            .unwrap(),
    );
    let report = bench.engine(&graph, TP, 1).run().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    let dir = bench.logs().join("logged");
    let flow_log = std::fs::read_to_string(dir.join("logged.log")).unwrap();
    assert!(
        flow_log.contains(" logged INFO run_mode_nominal of [logged, 2026112800] started"),
        "{flow_log}"
    );
    assert!(flow_log.contains(" logged INFO launched"), "{flow_log}");
    assert!(flow_log.contains(" logged INFO terminated"), "{flow_log}");
    let step_log = std::fs::read_to_string(dir.join("extract.log")).unwrap();
    for expected in [
        " extract INFO started",
        " extract.shell INFO extracting 2026112800",
        " extract.shell WARN oops",
        " extract.shell INFO exit code 0",
        " extract INFO state_processed in",
    ] {
        assert!(
            step_log.contains(expected),
            "missing {expected:?} in:\n{step_log}"
        );
    }
    // Each line: timestamp, logger name, level, message.
    for line in step_log.lines() {
        let mut cols = line.splitn(4, ' ');
        let (ts, logger, level) = (
            cols.next().unwrap(),
            cols.next().unwrap(),
            cols.next().unwrap(),
        );
        assert!(ts.ends_with('Z') && ts.contains('T'), "{line}");
        assert!(
            logger == "extract" || logger.starts_with("extract."),
            "{line}"
        );
        assert!(
            ["INFO", "WARN", "ERROR", "DEBUG"].contains(&level),
            "{line}"
        );
    }
}

/// Fails until it has been called `succeed_on` times.
#[derive(Debug)]
struct Flaky {
    calls: AtomicU32,
    succeed_on: u32,
}

#[async_trait]
impl Action for Flaky {
    fn kind(&self) -> &str {
        "flaky"
    }
    async fn run(&self, _cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call < self.succeed_on {
            return Err(ActionError::failed(format!("call {call} fails")));
        }
        Ok(ActionOutcome::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_timeouts_skip_and_noop() {
    let bench = Bench::new();
    let quick = RetryPolicy {
        retries: 2,
        delay: Duration::from_millis(10),
        backoff: 2,
        max_delay: Duration::from_millis(50),
    };
    let graph = Arc::new(
        FlowDefinition::new("retrying")
            .step(
                StepDefinition::new(
                    "flaky",
                    act(Flaky {
                        calls: AtomicU32::new(0),
                        succeed_on: 3,
                    }),
                )
                .with_retry(quick),
            )
            .step(StepDefinition::new("nothing", act(Noop)))
            .step(StepDefinition::new("skipped", act(Fail { message: None })).skipped(true))
            .step(StepDefinition::new(
                "skipped_action",
                act(Fail { message: None }).skipped(true),
            ))
            .step(StepDefinition::new("after", act(Identity)).depends_on([
                "flaky",
                "nothing",
                "skipped",
                "skipped_action",
            ]))
            .build()
            .unwrap(),
    );
    let report = bench.engine(&graph, TP, 2).run().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    let steps = bench.snapshot("retrying", TP).await.1;
    let get = |n: &str| steps.iter().find(|s| s.step_name == n).unwrap().clone();
    assert_eq!(get("flaky").attempts, 3);
    assert_eq!(get("flaky").state, StepState::Processed);
    assert_eq!(get("nothing").state, StepState::Noop);
    assert_eq!(get("skipped").state, StepState::Noop);
    assert_eq!(get("skipped_action").state, StepState::Processed);
    assert_eq!(get("after").state, StepState::Processed);
    let log = std::fs::read_to_string(bench.logs().join("retrying").join("flaky.log")).unwrap();
    assert!(
        log.contains(
            "attempt 1 of 3 failed: action 'flaky' failed: call 1 fails; retrying in 10ms"
        ),
        "{log}"
    );
    assert!(log.contains("attempt 2 of 3 failed"), "{log}");

    // Timeouts: an action's own and a whole step's; both end the step, the
    // local job is killed, the retry count is respected.
    let graph = Arc::new(
        FlowDefinition::new("timeouts")
            .step(StepDefinition::new(
                "action_limit",
                shell("sleep 30").with_timeout(Duration::from_millis(300)),
            ))
            .step(
                StepDefinition::new(
                    "step_limit",
                    act(Sleep {
                        duration: Duration::from_secs(30),
                    }),
                )
                .with_timeout(Duration::from_millis(300))
                .with_retry(RetryPolicy {
                    retries: 1,
                    delay: Duration::from_millis(10),
                    ..quick
                }),
            )
            .build()
            .unwrap(),
    );
    let report = bench.engine(&graph, TP, 2).run().await.unwrap();
    assert_eq!(report.state, FlowState::Invalid);
    let steps = bench.snapshot("timeouts", TP).await.1;
    let get = |n: &str| steps.iter().find(|s| s.step_name == n).unwrap().clone();
    assert_eq!(get("action_limit").state, StepState::Invalid);
    assert!(get("action_limit")
        .error
        .unwrap()
        .contains("action 'shell' timed out after 300ms"));
    assert_eq!(get("step_limit").attempts, 2);
    assert!(get("step_limit")
        .error
        .unwrap()
        .contains("step timed out after 300ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_jobs_runs_cleanups_and_terminates_clusters() {
    let bench = Bench::new();
    let pid_file = bench.path("job.pid");
    let graph = Arc::new(
        FlowDefinition::new("cancelled")
            .step(
                StepDefinition::new(
                    "long",
                    shell(&format!("echo $$ > {}; sleep 60", pid_file.display())),
                )
                .post(act(Identity)),
            )
            .step(StepDefinition::new("never", act(Identity)).depends_on(["long"]))
            .build()
            .unwrap(),
    );
    let counting = Arc::new(Counting::new(bench.local()));
    let engine = bench.engine_with(&graph, TP, 1, counting.clone(), bench.options());
    let cancel = engine.cancel_token();
    let pid_wait = pid_file.clone();
    tokio::spawn(async move {
        while std::fs::read_to_string(&pid_wait)
            .map(|s| s.trim().is_empty())
            .unwrap_or(true)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
    });
    let report = engine.run().await.unwrap();
    assert!(report.canceled);
    assert_eq!(report.state, FlowState::Invalid);
    assert_eq!(
        bench.step_states("cancelled", TP).await,
        [
            ("long".to_string(), "state_canceled".to_string()),
            ("never".to_string(), "state_embryo".to_string())
        ]
    );
    assert_eq!(counting.terminated.load(Ordering::SeqCst), 1);
    let log = std::fs::read_to_string(bench.logs().join("cancelled").join("cancelled.log"))
        .unwrap_or_default();
    assert!(
        log.contains(
            "run_mode_nominal of [cancelled, 2026112800] cancelled: flow is state_invalid"
        ),
        "{log}"
    );
    assert!(!log.contains("finished: flow is"), "{log}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The job's process is gone (kill(pid, 0) fails with ESRCH).
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "job {pid} still alive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_is_refused_while_the_first_holds_the_lease() {
    let bench = Bench::new();
    // The first engine's step runs until the checks below are done.
    let hold = Hold::default();
    let graph = Arc::new(
        FlowDefinition::new("leased")
            .step(StepDefinition::new("wait", hold.action()))
            .build()
            .unwrap(),
    );
    let first = bench.engine(&graph, TP, 1);
    let second = bench.engine(&graph, TP, 1);
    let key = FlowKey::new("leased", tp(TP));
    let running = tokio::spawn(async move { first.run().await });
    // Wait until the first engine holds the lease and its step runs.
    loop {
        let steps = bench.store.get_steps(&key).await.unwrap();
        if steps.iter().any(|s| s.state == StepState::InProgress) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = bench.snapshot("leased", TP).await;
    match second.run().await {
        Err(EngineError::LeaseHeld { owner, .. }) => {
            assert!(owner.contains(&std::process::id().to_string()))
        }
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
    assert_eq!(bench.snapshot("leased", TP).await, before);
    hold.release.cancel();
    assert_eq!(running.await.unwrap().unwrap().state, FlowState::Processed);
    // Released at the end: the second engine may run now.
    assert_eq!(second.run().await.unwrap().state, FlowState::Processed);
    // A stale lease (heartbeat older than the ttl) is taken over.
    let old = chrono::Utc::now() - chrono::Duration::seconds(3600);
    assert!(matches!(
        bench
            .store
            .acquire_lease(&key, "dead-host:1:0", old, Duration::from_secs(60))
            .await
            .unwrap(),
        LeaseOutcome::Acquired(_)
    ));
    assert_eq!(second.run().await.unwrap().state, FlowState::Processed);
}

/// Runs that share a cluster by name (as EMR and Dataproc clusters are
/// shared; here the real local cluster under a shared name) follow the
/// store's record of its users: of two overlapping runs the first launches
/// it and the second joins it, the first to end leaves it up for the other
/// (recorded `left_up`, saying why), and the last one terminates it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_runs_share_a_named_cluster_launched_once_and_ended_by_the_last() {
    let bench = Bench::new();
    let mut counting = Counting::new(bench.local());
    counting.shared = Some("pool".to_string());
    let launching = Hold::default();
    counting.provision_gate = Some(launching.clone());
    let counting = Arc::new(counting);
    let (first_hold, second_hold) = (Hold::default(), Hold::default());
    let graph = |hold: &Hold| {
        Arc::new(
            FlowDefinition::new("pooled")
                .step(StepDefinition::new("wait", hold.action()))
                .build()
                .unwrap(),
        )
    };
    let (first_graph, second_graph) = (graph(&first_hold), graph(&second_hold));
    let first = bench.engine_with(&first_graph, TP, 1, counting.clone(), bench.options());
    let claims = Arc::new(ClaimTimes {
        inner: bench.store.clone(),
        times: Default::default(),
    });
    let second = flow_engine::ExecutionEngine::new(
        second_graph.clone(),
        bench.context(&second_graph, "2026112900", 1),
        claims.clone(),
        counting.clone(),
        bench.options(),
    );
    let first = tokio::spawn(async move { first.run().await });
    // The first run has claimed the name and is launching the cluster: the
    // second finds it so, says it waits (once), asks again with a growing
    // delay, and joins it when it is up.
    launching.started.cancelled().await;
    let second = tokio::spawn(async move { second.run().await });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while claims.times.lock().unwrap().len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the second run did not keep asking for the name"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    launching.release.cancel();
    let times = claims.times.lock().unwrap()[..4].to_vec();
    for (i, least) in [100, 200, 400].into_iter().enumerate() {
        let gap = times[i + 1] - times[i];
        assert!(
            gap >= Duration::from_millis(least),
            "claim {} came {gap:?} after the one before: no backoff",
            i + 2
        );
    }
    first_hold.started.cancelled().await;
    second_hold.started.cancelled().await;
    // One cluster provisioned (each local cluster is a directory).
    assert_eq!(
        provisioned(&bench),
        1,
        "the second run joined the first one's cluster"
    );
    let first_record = bench.clusters("pooled", TP).await;
    let second_record = bench.clusters("pooled", "2026112900").await;
    assert_eq!(first_record.len(), 1, "{first_record:?}");
    assert_eq!(second_record.len(), 1, "{second_record:?}");
    assert_eq!(
        first_record[0].handle.backend_id, second_record[0].handle.backend_id,
        "one cluster"
    );
    assert_eq!(
        first_record[0]
            .handle
            .details
            .get(flow_core::SHARED_NAME_DETAIL),
        Some(&"pool".to_string())
    );
    // A local cluster has no instances to bill (known, not unknown).
    assert_eq!(first_record[0].usage.instances, Some(Vec::new()));

    // The first run ends while the second still uses the cluster.
    first_hold.release.cancel();
    assert_eq!(first.await.unwrap().unwrap().state, FlowState::Processed);
    assert_eq!(counting.terminated.load(Ordering::SeqCst), 0, "left up");
    let first_record = bench.clusters("pooled", TP).await;
    assert_eq!(first_record[0].state, flow_core::ClusterState::LeftUp);
    assert!(
        first_record[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("1 other run(s) still using it")),
        "{first_record:?}"
    );

    // The last one terminates it.
    second_hold.release.cancel();
    assert_eq!(second.await.unwrap().unwrap().state, FlowState::Processed);
    assert_eq!(counting.terminated.load(Ordering::SeqCst), 1);
    let second_record = bench.clusters("pooled", "2026112900").await;
    assert_eq!(second_record[0].state, flow_core::ClusterState::Terminated);
    assert_eq!(provisioned(&bench), 1);
    let log = std::fs::read_to_string(bench.logs().join("pooled").join("pooled.log")).unwrap();
    let waiting = "another run is launching or ending local cluster pool: waiting for it";
    assert_eq!(log.matches(waiting).count(), 1, "said once:\n{log}");
}

/// The real store, noting when each `claim_cluster` call was made.
struct ClaimTimes {
    inner: Arc<dyn FlowStore>,
    times: std::sync::Mutex<Vec<std::time::Instant>>,
}

#[async_trait]
impl flow_core::StoreLayer for ClaimTimes {
    fn inner(&self) -> &dyn FlowStore {
        &*self.inner
    }
    fn called(&self, method: &'static str) {
        if method == "claim_cluster" {
            self.times.lock().unwrap().push(std::time::Instant::now());
        }
    }
}

/// Takes the flow's lease over in the store file, as a run that found this
/// one stalled would, with a heartbeat a day old (so the next engine takes
/// it over at once): the run stops as if its engine had died, with its
/// records and its cluster as they were.
#[derive(Debug)]
struct StealStale(PathBuf);

#[async_trait]
impl Action for StealStale {
    fn kind(&self) -> &str {
        "steal"
    }
    async fn run(&self, _cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let taken = rusqlite::Connection::open(&self.0)
            .unwrap()
            .execute(
                "UPDATE lease SET owner = 'thief', token = token + 1, \
                 heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')",
                [],
            )
            .unwrap();
        assert_eq!(taken, 1);
        Ok(ActionOutcome::Done)
    }
}

/// Flow `name`: step `s` (`first`), and `t` when `two`.
fn dead_run_graph(name: &str, first: ActionInstance, two: bool) -> Arc<flow_core::FlowGraph> {
    let mut flow = FlowDefinition::new(name).step(StepDefinition::new("s", first));
    if two {
        flow = flow.step(StepDefinition::new("t", act(Identity)));
    }
    Arc::new(flow.build().unwrap())
}

/// Runs flow `name` on `clusters` clusters of `factory` until its step `s`
/// takes the lease over ([`StealStale`]): the run dies as a killed engine
/// would, leaving its clusters up.
async fn die_leaving_clusters_up(
    bench: &Bench,
    name: &str,
    two: bool,
    clusters: usize,
    factory: Arc<Counting>,
) {
    let dying = dead_run_graph(name, act(StealStale(bench.path("flow.db"))), two);
    match bench
        .engine_with(&dying, TP, clusters, factory.clone(), bench.options())
        .run()
        .await
    {
        Err(EngineError::LeaseLost { .. }) => {}
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    assert_eq!(factory.terminated.load(Ordering::SeqCst), 0, "left up");
}

/// `recover` of what [`die_leaving_clusters_up`] left, its step `s` now
/// doing nothing: the flow ends processed.
async fn recover_processed(
    bench: &Bench,
    name: &str,
    two: bool,
    clusters: usize,
    factory: Arc<Counting>,
) -> flow_engine::RunReport {
    let graph = dead_run_graph(name, act(Identity), two);
    let report = bench
        .engine_with(&graph, TP, clusters, factory, bench.options())
        .recover()
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Processed, "{report:?}");
    report
}

/// How many local clusters were provisioned (each is a directory).
fn provisioned(bench: &Bench) -> usize {
    std::fs::read_dir(bench.path(".state/clusters"))
        .unwrap()
        .count()
}

/// A shared cluster a dead run left up is adopted by the flow's next run
/// through the store's record of its users (the name still points at it):
/// reused, not launched again, and terminated by that run as its last user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runs_shared_cluster_is_adopted_by_the_next_run_not_launched_again() {
    let bench = Bench::new();
    let shared = || {
        let mut counting = Counting::new(bench.local());
        counting.shared = Some("pool".to_string());
        Arc::new(counting)
    };
    die_leaving_clusters_up(&bench, "left", false, 1, shared()).await;
    let key = FlowKey::new("left", tp(TP));
    let left = bench.store.list_clusters(Some(&key)).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].state, flow_core::ClusterState::Up);

    let next = shared();
    let report = recover_processed(&bench, "left", false, 1, next.clone()).await;
    assert_eq!(provisioned(&bench), 1, "the dead run's cluster was reused");
    assert_eq!(next.terminated.load(Ordering::SeqCst), 1);
    let records = bench.store.list_clusters(Some(&key)).await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].handle.backend_id, left[0].handle.backend_id);
    assert_eq!(records[0].run, report.run, "adopted by the next run");
    assert_eq!(records[0].state, flow_core::ClusterState::Terminated);
}

/// A shared cluster a dead run left, found gone by another run that then
/// launched a new one under the name: the dead run's flow, run next, finds
/// the old cluster gone and records it so (naming the name's new cluster),
/// joins the new one and leaves it to its other user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runs_shared_cluster_replaced_under_its_name_is_recorded_ended() {
    use flow_core::{ClusterFactory, ClusterState};
    let bench = Bench::new();
    let shared = || {
        let mut counting = Counting::new(bench.local());
        counting.shared = Some("pool".to_string());
        Arc::new(counting)
    };
    die_leaving_clusters_up(&bench, "left", false, 1, shared()).await;
    let old = bench.clusters("left", TP).await.remove(0);
    assert_eq!(old.state, ClusterState::Up);
    // The cluster goes away under its record.
    let graph = dead_run_graph("left", act(Identity), false);
    let cluster = bench
        .local()
        .create(&old.handle.name, &bench.context(&graph, TP, 1))
        .unwrap();
    assert!(cluster.adopt(&old.handle).await.unwrap());
    cluster.terminate().await.unwrap();

    // Another flow's run finds it gone and launches a new one for the name.
    let hold = Hold::default();
    let other = hold_other(&bench, shared(), &hold);
    hold.started.cancelled().await;
    let new = bench.clusters("other", TP).await.remove(0);
    assert_ne!(new.handle.backend_id, old.handle.backend_id);

    let report = recover_processed(&bench, "left", false, 1, shared()).await;
    let records = assert_left_ended(
        &bench,
        &old,
        format!(
            "found gone by run {}; local cluster pool is {} now",
            report.run, new.handle.backend_id
        ),
    )
    .await;
    let joined = records
        .iter()
        .find(|r| r.run == report.run && r.handle.backend_id == new.handle.backend_id);
    assert_eq!(
        joined.map(|r| r.state),
        Some(ClusterState::LeftUp),
        "{records:?}"
    );
    assert_eq!(provisioned(&bench), 2, "the old cluster and the new one");
    hold.release.cancel();
    assert_eq!(other.await.unwrap().state, FlowState::Processed);
}

/// Runs flow `left` on a shared cluster until it dies as an engine killed
/// between recording its cluster and naming it under the shared name
/// would: the cluster is up and in the flow's records, the name's record
/// has a launcher that is gone and no cluster. Returns the cluster's record.
async fn die_before_naming(bench: &Bench, shared: Arc<Counting>) -> flow_core::ClusterRecord {
    die_leaving_clusters_up(bench, "left", false, 1, shared).await;
    let unnamed = rusqlite::Connection::open(bench.path("flow.db"))
        .unwrap()
        .execute(
            "UPDATE shared_cluster SET record = json_set(record, '$.handle', NULL)",
            [],
        )
        .unwrap();
    assert_eq!(unnamed, 1);
    let left = bench.clusters("left", TP).await.remove(0);
    assert_eq!(left.state, flow_core::ClusterState::Up);
    left
}

/// A local cluster factory whose clusters runs share by the name `pool`.
fn pooled(bench: &Bench) -> Counting {
    let mut counting = Counting::new(bench.local());
    counting.shared = Some("pool".to_string());
    counting
}

/// [`die_before_naming`], then flow `other` holding its step on a new
/// cluster it launched for the name: the dead run's cluster, the new one,
/// the hold and the other run.
async fn unnamed_beside_another(
    bench: &Bench,
) -> (
    flow_core::ClusterRecord,
    flow_core::ClusterRecord,
    Hold,
    tokio::task::JoinHandle<flow_engine::RunReport>,
) {
    let old = die_before_naming(bench, Arc::new(pooled(bench))).await;
    let hold = Hold::default();
    let other = hold_other(bench, Arc::new(pooled(bench)), &hold);
    hold.started.cancelled().await;
    let new = bench.clusters("other", TP).await.remove(0);
    assert_ne!(new.handle.backend_id, old.handle.backend_id);
    (old, new, hold, other)
}

/// Runs flow `other` on the shared cluster's name until its step holds:
/// it takes the name's launch over from the dead launcher and launches a
/// new cluster (through `launching`'s gate, when given).
fn hold_other(
    bench: &Bench,
    shared: Arc<Counting>,
    hold: &Hold,
) -> tokio::task::JoinHandle<flow_engine::RunReport> {
    let other = Arc::new(
        FlowDefinition::new("other")
            .step(StepDefinition::new("wait", hold.action()))
            .build()
            .unwrap(),
    );
    let other = bench.engine_with(&other, TP, 1, shared, bench.options());
    tokio::spawn(async move { other.run().await.unwrap() })
}

/// After the dead run's flow ran again: its unnamed cluster `old` was ended
/// by that run (`report`) before it started anything, since no run used it
/// (the name is `new`'s): the backend has it down and the record says so.
async fn assert_unnamed_ended(
    bench: &Bench,
    old: &flow_core::ClusterRecord,
    new: &flow_core::ClusterRecord,
    report: &flow_engine::RunReport,
    next: &Counting,
) {
    assert_eq!(
        next.terminated.load(Ordering::SeqCst),
        1,
        "the old one only"
    );
    assert_left_ended(
        bench,
        old,
        format!(
            "ended by run {}, since no run used it: local cluster pool is {} now",
            report.run, new.handle.backend_id
        ),
    )
    .await;
    assert!(!still_up(bench, old).await, "leaked");
}

/// Flow `left`'s cluster records, its cluster `old` among them recorded
/// ended with `message`.
async fn assert_left_ended(
    bench: &Bench,
    old: &flow_core::ClusterRecord,
    message: String,
) -> Vec<flow_core::ClusterRecord> {
    let records = bench.clusters("left", TP).await;
    let ended = records
        .iter()
        .find(|r| r.handle.backend_id == old.handle.backend_id)
        .unwrap();
    assert_eq!(
        ended.state,
        flow_core::ClusterState::Terminated,
        "{records:?}"
    );
    assert_eq!(
        ended.message.as_deref(),
        Some(message.as_str()),
        "{records:?}"
    );
    records
}

/// Whether the local cluster of `record` is still up.
async fn still_up(bench: &Bench, record: &flow_core::ClusterRecord) -> bool {
    use flow_core::ClusterFactory;
    let graph = dead_run_graph("left", act(Identity), false);
    let cluster = bench
        .local()
        .create(&record.handle.name, &bench.context(&graph, TP, 1))
        .unwrap();
    cluster.adopt(&record.handle).await.unwrap()
}

/// Ends flow `left`'s orphans as `flow clusters --terminate-orphans` does,
/// with `sweeper`: each cluster's backend id and outcome.
async fn sweep_left(
    bench: &Bench,
    sweeper: Arc<Counting>,
) -> Vec<(String, Result<flow_core::ClusterState, String>)> {
    let graph = dead_run_graph("left", act(Identity), false);
    flow_engine::terminate_orphans(
        bench.store.clone(),
        sweeper,
        Some("left"),
        None,
        |r| bench.context(&graph, &r.timeperiod.to_string(), 1),
        "sweeper",
        Duration::from_secs(60),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|o| (o.record.handle.backend_id, o.result))
    .collect()
}

/// How many shared names the store has a record of.
fn shared_names(bench: &Bench) -> i64 {
    rusqlite::Connection::open(bench.path("flow.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM shared_cluster", [], |row| row.get(0))
        .unwrap()
}

/// `--terminate-orphans` leaves a dead run's shared cluster up while
/// another live run uses it (its last user ends it), and ends one nobody
/// uses, forgetting its name so the next claim launches anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_orphans_leaves_a_shared_cluster_to_its_live_user_and_forgets_an_ended_ones_name()
{
    use flow_core::ClusterState;
    let bench = Bench::new();
    die_leaving_clusters_up(&bench, "left", false, 1, Arc::new(pooled(&bench))).await;
    let old = bench.clusters("left", TP).await.remove(0);
    let hold = Hold::default();
    let other = hold_other(&bench, Arc::new(pooled(&bench)), &hold);
    hold.started.cancelled().await;
    let joined = bench.clusters("other", TP).await.remove(0);
    assert_eq!(joined.handle.backend_id, old.handle.backend_id, "joined");

    let sweeper = Arc::new(pooled(&bench));
    assert_eq!(
        sweep_left(&bench, sweeper.clone()).await,
        [(old.handle.backend_id.clone(), Ok(ClusterState::LeftUp))]
    );
    assert_eq!(sweeper.terminated.load(Ordering::SeqCst), 0);
    assert!(still_up(&bench, &old).await, "ended under its live user");
    hold.release.cancel();
    assert_eq!(other.await.unwrap().state, FlowState::Processed);
    assert!(
        !still_up(&bench, &old).await,
        "its last user did not end it"
    );

    // A dead run's shared cluster that nobody else uses: ended, and the
    // name's record gone with it.
    let bench = Bench::new();
    die_leaving_clusters_up(&bench, "left", false, 1, Arc::new(pooled(&bench))).await;
    let old = bench.clusters("left", TP).await.remove(0);
    assert_eq!(shared_names(&bench), 1);
    assert_eq!(
        sweep_left(&bench, Arc::new(pooled(&bench))).await,
        [(old.handle.backend_id.clone(), Ok(ClusterState::Terminated))]
    );
    assert!(!still_up(&bench, &old).await);
    assert_eq!(shared_names(&bench), 0, "the ended cluster's name is kept");
}

/// A dead run's unnamed shared cluster that it found outside flow (reused,
/// not launched) is left up, as every reused cluster is, and recorded so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runs_unnamed_shared_cluster_found_outside_flow_is_left_up() {
    let bench = Bench::new();
    let (old, new, hold, other) = unnamed_beside_another(&bench).await;
    let reused = rusqlite::Connection::open(bench.path("flow.db"))
        .unwrap()
        .execute(
            "UPDATE cluster SET reused = 1 WHERE backend_id = ?1",
            [&old.handle.backend_id],
        )
        .unwrap();
    assert_eq!(reused, 1);

    let next = Arc::new(pooled(&bench));
    recover_processed(&bench, "left", false, 1, next.clone()).await;
    assert_eq!(next.terminated.load(Ordering::SeqCst), 0);
    assert!(still_up(&bench, &old).await, "a reused cluster was ended");
    let records = bench.clusters("left", TP).await;
    let left = records
        .iter()
        .find(|r| r.handle.backend_id == old.handle.backend_id)
        .unwrap();
    assert_eq!(left.state, flow_core::ClusterState::LeftUp, "{records:?}");
    assert_eq!(
        left.message.as_deref(),
        Some(
            format!(
                "local cluster pool is {} now; left up, since it was found outside flow",
                new.handle.backend_id
            )
            .as_str()
        )
    );
    hold.release.cancel();
    assert_eq!(other.await.unwrap().state, FlowState::Processed);
}

/// `flow clusters --terminate-orphans` ends a dead run's shared cluster
/// that its engine never named, while another run uses the name's new
/// cluster: no run uses the old one (it was recorded left up for the new
/// one's user, and never ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_orphans_ends_a_dead_runs_unnamed_shared_cluster() {
    use flow_core::ClusterState;
    let bench = Bench::new();
    let (old, new, hold, other) = unnamed_beside_another(&bench).await;

    let sweeper = Arc::new(pooled(&bench));
    assert_eq!(
        sweep_left(&bench, sweeper.clone()).await,
        [(old.handle.backend_id.clone(), Ok(ClusterState::Terminated))]
    );
    assert_eq!(sweeper.terminated.load(Ordering::SeqCst), 1);
    assert!(!still_up(&bench, &old).await, "leaked");
    assert!(still_up(&bench, &new).await, "the name's cluster was ended");
    hold.release.cancel();
    assert_eq!(other.await.unwrap().state, FlowState::Processed);
}

/// A dead run's shared cluster that its engine never named under the
/// shared name (killed in between), while another run launched a new one
/// under the name: the dead run's flow, run next, ends the old one, which
/// no run uses (nobody else would ever end it), and joins the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runs_unnamed_shared_cluster_is_ended_when_another_has_the_name() {
    let bench = Bench::new();
    let (old, new, hold, other) = unnamed_beside_another(&bench).await;

    let next = Arc::new(pooled(&bench));
    let report = recover_processed(&bench, "left", false, 1, next.clone()).await;
    assert_unnamed_ended(&bench, &old, &new, &report, &next).await;
    hold.release.cancel();
    assert_eq!(other.await.unwrap().state, FlowState::Processed);
}

/// The same while the other run is still launching the name's new cluster:
/// the dead run's flow waits for the name (asking again, as a launch
/// does), then ends its unnamed cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runs_unnamed_shared_cluster_is_ended_after_waiting_for_the_names_launch() {
    let bench = Bench::new();
    let old = die_before_naming(&bench, Arc::new(pooled(&bench))).await;
    let launching = Hold::default();
    let mut gated = pooled(&bench);
    gated.provision_gate = Some(launching.clone());
    let hold = Hold::default();
    let other = hold_other(&bench, Arc::new(gated), &hold);
    launching.started.cancelled().await;

    let claims = Arc::new(ClaimTimes {
        inner: bench.store.clone(),
        times: Default::default(),
    });
    let next = Arc::new(pooled(&bench));
    let graph = dead_run_graph("left", act(Identity), false);
    let recover = flow_engine::ExecutionEngine::new(
        graph.clone(),
        bench.context(&graph, TP, 1),
        claims.clone(),
        next.clone(),
        bench.options(),
    );
    let recover = tokio::spawn(async move { recover.recover().await.unwrap() });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while claims.times.lock().unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the next run did not ask for the name again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    launching.release.cancel();
    hold.started.cancelled().await;
    let report = recover.await.unwrap();
    assert_eq!(report.state, FlowState::Processed, "{report:?}");
    let new = bench.clusters("other", TP).await.remove(0);
    assert_ne!(new.handle.backend_id, old.handle.backend_id);
    assert_unnamed_ended(&bench, &old, &new, &report, &next).await;
    hold.release.cancel();
    assert_eq!(other.await.unwrap().state, FlowState::Processed);
}

/// The next run adopts every cluster a dead run left up (their jobs may be
/// its to adopt) and terminates them all at its end, but takes steps on
/// only as many as it asks for: here the dead run had two, the next asks
/// for one, and nothing new is launched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runs_clusters_are_all_adopted_and_ended_but_only_as_many_used_as_asked() {
    let bench = Bench::new();
    let dead = Arc::new(Counting::new(bench.local()));
    die_leaving_clusters_up(&bench, "two", true, 2, dead).await;

    let next = Arc::new(Counting::new(bench.local()));
    let report = recover_processed(&bench, "two", true, 1, next.clone()).await;
    assert_eq!(report.clusters_launched, 1, "one worker, as asked");
    assert_eq!(provisioned(&bench), 2, "nothing launched anew");
    assert_eq!(next.terminated.load(Ordering::SeqCst), 2, "both ended");
    let records = bench.clusters("two", TP).await;
    assert_eq!(records.len(), 2, "{records:?}");
    let mut names: Vec<&str> = records.iter().map(|r| r.handle.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["local-0", "local-1"],
        "the dead run's clusters' names"
    );
    for record in &records {
        assert_eq!(record.run, report.run, "{records:?}");
        assert_eq!(record.state, flow_core::ClusterState::Terminated);
    }
    // A later run leaves them alone: they are not up any more.
    let graph = dead_run_graph("two", act(Identity), true);
    let later = bench
        .engine_with(&graph, TP, 1, bench.local(), bench.options())
        .run_from("s")
        .await
        .unwrap();
    assert_eq!(later.state, FlowState::Processed, "{later:?}");
    let mut after = bench.clusters("two", TP).await;
    after.retain(|r| r.run != later.run);
    assert_eq!(after, records, "the ended clusters' records were rewritten");
}
