//! The Qubole cluster against the loopback contract fake
//! (`contract_fakes::qubole`): each command kind's exact body, commands to
//! their end (done, error with its log's tail, cancelled), a lost submit
//! answer found by its name, 429/503 retried after `Retry-After`, the poll
//! budget and notice delay, starting and terminating the labelled
//! cluster, adoption by another engine, what QDS refuses, and the rules
//! every cloud keeps: `flow_cloud::testkit`'s unknown-outcome contract, a
//! cluster ending under a command, slots and the shared name.
//!
//! Time is a `ManualClock` shared by the fake (which computes every state
//! from it) and the cluster (whose polls and retries sleep on it): the
//! figures are asserted by counting requests at the fake at known instants,
//! never by sleeping.

use contract_fakes::qubole::{FakeOptions, FakeQubole};
use flow_cloud::testkit::{context, drive};
use flow_cloud::{Clock, JobLogs, ManualClock, RetryConfig};
use flow_cluster_qubole::{QuboleCluster, QuboleClusterFactory, QuboleClusterFactoryBuilder};
use flow_core::{Cluster, ClusterError, ExecutionContext, Job, JobContext, JobHandle, JobStatus};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SECOND: Duration = Duration::from_secs(1);
const TOKEN: &str = "qds-fake-token-0123456789";
const LABEL: &str = "etl";

struct Setup {
    clock: ManualClock,
    fake: FakeQubole,
    factory: QuboleClusterFactory,
    context: ExecutionContext,
}

fn retry() -> RetryConfig {
    RetryConfig {
        jitter: false,
        initial_delay: Duration::from_secs(10),
        ..RetryConfig::default()
    }
}

/// A factory on `fake` with the token read from `var` (set to `token`).
fn factory_on(
    fake: &FakeQubole,
    clock: &ManualClock,
    var: &str,
    token: &str,
    tweak: impl FnOnce(QuboleClusterFactoryBuilder) -> QuboleClusterFactoryBuilder,
) -> Result<QuboleClusterFactory, flow_cluster_qubole::QuboleError> {
    std::env::set_var(var, token);
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let builder = QuboleClusterFactoryBuilder::new(LABEL, format!("env:{var}"))
        .with_endpoint(fake.url())
        .with_code_bucket("code")
        .with_launch_poll(Duration::from_secs(10))
        .with_retry(retry())
        .with_job_logs(JobLogs {
            wait: Duration::ZERO,
            ..JobLogs::default()
        })
        .with_clock(shared);
    tweak(builder).build()
}

async fn setup_with(
    fake_tweak: impl FnOnce(&mut FakeOptions),
    tweak: impl FnOnce(QuboleClusterFactoryBuilder) -> QuboleClusterFactoryBuilder,
) -> Setup {
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let mut options = FakeOptions::new(shared, TOKEN, LABEL);
    fake_tweak(&mut options);
    let fake = FakeQubole::start(options, 0).await.unwrap();
    let factory = factory_on(&fake, &clock, "FLOW_QUBOLE_TEST_TOKEN", TOKEN, tweak).unwrap();
    Setup {
        clock,
        fake,
        factory,
        context: context(),
    }
}

async fn setup() -> Setup {
    setup_with(|_| {}, |b| b).await
}

fn shell(command: &str) -> Job {
    Job::Shell {
        command: command.into(),
        env: vec![],
    }
}

fn job_context<'a>(
    cancel: &'a CancellationToken,
    execution: &'a ExecutionContext,
) -> JobContext<'a> {
    JobContext {
        cancel,
        execution,
        step: "s",
        action: "a",
        attempt: 1,
    }
}

impl Setup {
    fn cluster(&self, name: &str) -> Arc<QuboleCluster> {
        Arc::new(self.factory.cluster(name, &self.context))
    }

    async fn launch(&self) -> Arc<QuboleCluster> {
        let cluster = self.cluster("qubole-0");
        cluster.provision().await.unwrap();
        let c = cluster.clone();
        drive(
            &self.clock,
            tokio::spawn(async move { c.wait_ready().await }),
        )
        .await
        .unwrap();
        cluster
    }

    /// Submits `count` commands on `cluster`, then waits for them all at
    /// once, driving the clock.
    async fn run_at_once(&self, cluster: &Arc<QuboleCluster>, count: usize) {
        let mut tasks = Vec::new();
        for i in 0..count {
            let handle = self.submit(cluster, &shell(&format!("echo {i}"))).await;
            tasks.push(wait_task(
                cluster,
                &handle,
                CancellationToken::new(),
                &self.context,
            ));
        }
        let all = tokio::spawn(async move {
            for task in tasks {
                task.await.unwrap().unwrap();
            }
        });
        drive(&self.clock, all).await;
    }

    async fn submit(&self, cluster: &QuboleCluster, job: &Job) -> JobHandle {
        let cancel = CancellationToken::new();
        let cx = job_context(&cancel, &self.context);
        let handle = cluster.prepare(job, &cx).unwrap();
        cluster.submit(&handle, job, &cx).await.unwrap()
    }
}

/// Waits for the job in a task (so the test can move the clock meanwhile).
fn wait_task(
    cluster: &Arc<QuboleCluster>,
    handle: &JobHandle,
    cancel: CancellationToken,
    context: &ExecutionContext,
) -> JoinHandle<Result<(), ClusterError>> {
    let (cluster, handle, context) = (cluster.clone(), handle.clone(), context.clone());
    tokio::spawn(async move {
        let cx = job_context(&cancel, &context);
        cluster.wait(&handle, &cx).await
    })
}

#[tokio::test]
async fn each_command_kind_sends_its_exact_body_on_contract_fake() {
    let s = setup().await;
    let cluster = s.launch().await;
    let jobs = [
        Job::Spark {
            application: "jobs/report.py".into(),
            main_class: None,
            conf: vec![("spark.executor.memory".into(), "4g".into())],
            secret_conf: vec![],
            args: vec!["--day".into(), "2026112800".into()],
        },
        Job::Spark {
            application: "s3://jars/etl.jar".into(),
            main_class: Some("com.example.Etl".into()),
            conf: vec![],
            secret_conf: vec![],
            args: vec!["a b".into()],
        },
        Job::Pig {
            script: "pig/count.pig".into(),
            params: vec![("day".into(), "2026-11-28".into())],
            secret_params: vec![],
        },
        shell("echo extracting 2026112800"),
        Job::HadoopJar {
            jar: "jars/wc.jar".into(),
            main_class: Some("org.example.WordCount".into()),
            args: vec!["s3://in/".into(), "s3://out/".into()],
        },
    ];
    let mut names = Vec::new();
    for job in &jobs {
        let handle = s.submit(&cluster, job).await;
        assert!(handle.ids["command_id"].parse::<u64>().is_ok(), "{handle}");
        let name = handle.ids["name"].clone();
        assert!(name.starts_with("flow-daily-s-a-1-"), "{name}");
        names.push(name);
    }
    let bodies = s.fake.bodies();
    let common = |i: usize| json!({ "label": LABEL, "name": names[i], "tags": [names[i], "flow"] });
    let with = |i: usize, fields: serde_json::Value| {
        let mut body = common(i);
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    assert_eq!(
        bodies,
        vec![
            with(
                0,
                json!({"command_type": "SparkCommand", "script_location": "s3://code/jobs/report.py",
                       "arguments": "--conf spark.executor.memory=4g",
                       "user_program_arguments": "--day 2026112800"})
            ),
            with(
                1,
                json!({"command_type": "SparkCommand",
                       "cmdline": "spark-submit --class com.example.Etl s3://jars/etl.jar 'a b'"})
            ),
            with(
                2,
                json!({"command_type": "PigCommand", "script_location": "s3://code/pig/count.pig",
                       "parameters": {"day": "2026-11-28"}})
            ),
            with(
                3,
                json!({"command_type": "ShellCommand", "inline": "echo extracting 2026112800"})
            ),
            with(
                4,
                json!({"command_type": "HadoopCommand", "sub_command": "jar",
                       "sub_command_args": "s3://code/jars/wc.jar org.example.WordCount s3://in/ s3://out/"})
            ),
        ]
    );
    assert_eq!(s.fake.count("commands.submit"), 5);
}

#[tokio::test]
async fn a_done_command_succeeds_and_its_log_is_read_once_on_contract_fake() {
    let s = setup().await;
    let cluster = s.launch().await;
    let handle = s.submit(&cluster, &shell("echo hello")).await;
    let task = wait_task(&cluster, &handle, CancellationToken::new(), &s.context);
    drive(&s.clock, task).await.unwrap();
    assert_eq!(s.fake.commands()[0]["status"], "done");
    assert_eq!(s.fake.count("commands.logs"), 1);
    assert_eq!(cluster.status(&handle).await.unwrap(), JobStatus::Succeeded);
}

#[tokio::test]
async fn an_error_carries_the_end_of_its_log_on_contract_fake() {
    let s = setup().await;
    let cluster = s.launch().await;
    let handle = s
        .submit(&cluster, &shell("python job.py fake.outcome=error"))
        .await;
    let task = wait_task(&cluster, &handle, CancellationToken::new(), &s.context);
    let e = drive(&s.clock, task).await.unwrap_err();
    let message = e.to_string();
    assert!(matches!(e, ClusterError::JobFailed { .. }), "{e:?}");
    assert!(message.contains("is error"), "{message}");
    assert!(
        message.contains("RuntimeError: fake.outcome=error: the command failed on purpose"),
        "{message}"
    );
    assert!(matches!(
        cluster.status(&handle).await.unwrap(),
        JobStatus::Failed { .. }
    ));
}

#[tokio::test]
async fn cancel_kills_the_command_and_waits_for_its_end_on_contract_fake() {
    let s = setup_with(|o| o.command_run = None, |b| b).await;
    let cluster = s.launch().await;
    let handle = s.submit(&cluster, &shell("sleep 3600")).await;
    let cancel = CancellationToken::new();
    let task = wait_task(&cluster, &handle, cancel.clone(), &s.context);
    // Let it be polled a few times, then cancel the step.
    s.clock.wait_for_sleepers(1).await;
    s.clock.advance(5 * SECOND);
    cancel.cancel();
    let e = drive(&s.clock, task).await.unwrap_err();
    assert!(matches!(e, ClusterError::Cancelled { .. }), "{e:?}");
    assert_eq!(s.fake.count("commands.kill"), 1);
    assert_eq!(s.fake.commands()[0]["status"], "cancelled");
    // Cancelling a finished command is a no-op (no wait).
    cluster.cancel(&handle).await.unwrap();
    assert_eq!(s.fake.count("commands.kill"), 2);
}

#[tokio::test]
async fn a_lost_submit_answer_is_found_by_its_name_and_not_sent_again_on_contract_fake() {
    let s = setup().await;
    let cluster = s.launch().await;
    s.fake.lose_answers("commands.submit", 1);
    let job = shell("echo once");
    let cancel = CancellationToken::new();
    let cx = job_context(&cancel, &s.context);
    let prepared = cluster.prepare(&job, &cx).unwrap();
    let handle = cluster.submit(&prepared, &job, &cx).await.unwrap();
    assert_eq!(s.fake.answers("commands.submit"), vec![503]);
    assert_eq!(s.fake.commands().len(), 1, "one command, not two");
    assert_eq!(
        handle.ids["command_id"],
        s.fake.commands()[0]["id"].to_string()
    );
    assert!(s.fake.count("commands.list") >= 1);
    // Submitting the recorded handle again sends nothing.
    cluster.submit(&handle, &job, &cx).await.unwrap();
    assert_eq!(s.fake.count("commands.submit"), 1);
}

#[tokio::test]
async fn throttling_and_unavailability_are_retried_honouring_retry_after_on_contract_fake() {
    let s = setup_with(|o| o.command_run = None, |b| b).await;
    let cluster = s.launch().await;
    let handle = s.submit(&cluster, &shell("echo x")).await;
    s.fake.throttle("commands.get", 2, 7);
    s.fake.unavailable("commands.get", 1);
    let c = cluster.clone();
    let h = handle.clone();
    let status = drive(&s.clock, tokio::spawn(async move { c.status(&h).await }))
        .await
        .unwrap();
    assert_eq!(status, JobStatus::Running);
    assert_eq!(s.fake.count("commands.get"), 4);
    assert_eq!(s.fake.answers("commands.get"), vec![503, 200]);
    // Two Retry-Afters of 7 s, then the policy's own delay (from 10 s,
    // doubling: the two 429s used up its first step).
    assert_eq!(s.clock.sleeps(), vec![7 * SECOND, 7 * SECOND, 20 * SECOND]);
    // A 429 on a submission is retried too (nothing was done).
    s.fake.throttle("commands.submit", 1, 3);
    let c = cluster.clone();
    let context = s.context.clone();
    let submitted = drive(
        &s.clock,
        tokio::spawn(async move {
            let cancel = CancellationToken::new();
            let cx = job_context(&cancel, &context);
            let job = shell("echo y");
            let prepared = c.prepare(&job, &cx).unwrap();
            c.submit(&prepared, &job, &cx).await
        }),
    )
    .await;
    submitted.unwrap();
    assert_eq!(s.fake.commands().len(), 2);
    // Past its retries, a call says QDS's status and message, on one line,
    // and how often it was tried: nothing of the HTTP client's.
    s.fake.throttle("commands.get", 100, 1);
    let c = cluster.clone();
    let e = drive(
        &s.clock,
        tokio::spawn(async move { c.status(&handle).await }),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("HTTP 429: Quota exceeded") && e.ends_with("rate limited (after 6 attempts)"),
        "{e}"
    );
    assert!(!e.contains('\n') && !e.contains("reqwest"), "{e}");
}

#[tokio::test]
async fn one_command_is_noticed_within_the_floor_at_one_request_per_second_on_contract_fake() {
    let s = setup().await;
    let cluster = s.launch().await;
    let before = s.fake.total();
    let clusters_before = s.fake.count("clusters.state");
    let handle = s.submit(&cluster, &shell("echo x")).await;
    let task = wait_task(&cluster, &handle, CancellationToken::new(), &s.context);
    drive(&s.clock, task).await.unwrap();
    // waiting 2 s + running 30 s: done at 32 s, seen by the tick at 32 s.
    assert_eq!(s.clock.now(), 32 * SECOND);
    // One request a tick: every 10th asks about the cluster instead.
    assert_eq!(s.fake.count("commands.get"), 29);
    assert_eq!(s.fake.count("clusters.state") - clusters_before, 3);
    assert_eq!(s.factory.poll_requests(), 32);
    // The submission, 32 polls, the log.
    assert_eq!(s.fake.total() - before, 34);
}

#[tokio::test]
async fn many_commands_cost_one_history_page_per_tick_on_contract_fake() {
    let s = setup().await;
    let cluster = s.launch().await;
    let before = s.fake.total();
    s.run_at_once(&cluster, 6).await;
    assert_eq!(s.clock.now(), 32 * SECOND);
    // One request per tick for all six, however many run: a listing, or
    // (every 10th tick) the cluster's state.
    assert_eq!(s.fake.count("commands.list"), 29);
    assert_eq!(s.fake.count("commands.get"), 0);
    assert_eq!(s.factory.poll_requests(), 32);
    // Six submissions, 32 ticks, six logs.
    assert_eq!(s.fake.total() - before, 6 + 32 + 6);
}

#[tokio::test]
async fn a_run_that_starts_the_cluster_terminates_it_on_contract_fake() {
    let s = setup_with(
        |o| {
            o.clusters.insert(LABEL.into(), "DOWN".into());
        },
        |b| b.with_start_and_terminate(true, true),
    )
    .await;
    let cluster = s.cluster("qubole-0");
    let handle = cluster.provision().await.unwrap();
    assert!(!handle.reused, "this run started it");
    assert_eq!(handle.details["started_by_run"], "true");
    assert_eq!(s.fake.cluster_state(LABEL).as_deref(), Some("PENDING"));
    let c = cluster.clone();
    drive(&s.clock, tokio::spawn(async move { c.wait_ready().await }))
        .await
        .unwrap();
    // 120 s of starting asked about every 10 s.
    assert_eq!(s.clock.now(), 120 * SECOND);
    assert_eq!(s.fake.cluster_state(LABEL).as_deref(), Some("UP"));
    let c = cluster.clone();
    drive(&s.clock, tokio::spawn(async move { c.terminate().await }))
        .await
        .unwrap();
    assert_eq!(s.fake.cluster_state(LABEL).as_deref(), Some("DOWN"));
    assert_eq!(s.fake.count("clusters.start"), 1);
    assert_eq!(s.fake.count("clusters.terminate"), 1);
    // Terminated once, whatever calls follow.
    cluster.terminate().await.unwrap();
    assert_eq!(s.fake.count("clusters.terminate"), 1);
}

#[tokio::test]
async fn a_started_cluster_without_terminate_is_left_up_and_recorded_so_on_contract_fake() {
    let s = setup_with(
        |o| {
            o.clusters.insert(LABEL.into(), "DOWN".into());
        },
        |b| b.with_start_and_terminate(true, false),
    )
    .await;
    let cluster = s.cluster("qubole-0");
    let handle = cluster.provision().await.unwrap();
    assert_eq!(handle.details["started_by_run"], "true");
    // Not the run's to end: the engine records it left up at the end.
    assert!(handle.reused, "{handle:?}");
    let c = cluster.clone();
    drive(&s.clock, tokio::spawn(async move { c.wait_ready().await }))
        .await
        .unwrap();
    cluster.terminate().await.unwrap();
    assert_eq!(s.fake.count("clusters.terminate"), 0);
    assert_eq!(s.fake.cluster_state(LABEL).as_deref(), Some("UP"));
}

#[tokio::test]
async fn a_run_that_finds_the_cluster_up_leaves_it_up_on_contract_fake() {
    let s = setup_with(|_| {}, |b| b.with_start_and_terminate(true, true)).await;
    let cluster = s.cluster("qubole-0");
    let handle = cluster.provision().await.unwrap();
    assert!(handle.reused);
    cluster.wait_ready().await.unwrap();
    cluster.terminate().await.unwrap();
    assert_eq!(s.fake.count("clusters.start"), 0);
    assert_eq!(s.fake.count("clusters.terminate"), 0);
    assert_eq!(s.fake.cluster_state(LABEL).as_deref(), Some("UP"));
}

#[tokio::test]
async fn another_engine_adopts_a_running_command_and_the_started_cluster_on_contract_fake() {
    let s = setup_with(
        |o| {
            o.clusters.insert(LABEL.into(), "DOWN".into());
        },
        |b| b.with_start_and_terminate(true, true),
    )
    .await;
    let first = s.cluster("qubole-0");
    let cluster_handle = first.provision().await.unwrap();
    assert!(!cluster_handle.reused);
    let c = first.clone();
    drive(&s.clock, tokio::spawn(async move { c.wait_ready().await }))
        .await
        .unwrap();
    let job = shell("echo adopted");
    let recorded = s.submit(&first, &job).await;
    // The same job prepared, sent, and its answer never recorded.
    let cancel = CancellationToken::new();
    let cx = job_context(&cancel, &s.context);
    let unrecorded = first.prepare(&job, &cx).unwrap();
    first.submit(&unrecorded, &job, &cx).await.unwrap();
    drop(first);

    // A second engine: a new factory from the same settings.
    let factory = factory_on(&s.fake, &s.clock, "FLOW_QUBOLE_TEST_TOKEN_2", TOKEN, |b| {
        b.with_start_and_terminate(true, true)
    })
    .unwrap();
    let second = Arc::new(factory.cluster("qubole-0", &s.context));
    assert!(second.adopt(&cluster_handle).await.unwrap());
    assert_eq!(second.status(&recorded).await.unwrap(), JobStatus::Running);
    assert_eq!(
        second.status(&unrecorded).await.unwrap(),
        JobStatus::Running
    );
    let a = wait_task(&second, &recorded, CancellationToken::new(), &s.context);
    let b = wait_task(&second, &unrecorded, CancellationToken::new(), &s.context);
    drive(&s.clock, tokio::spawn(async move { (a.await, b.await) }))
        .await
        .0
        .unwrap()
        .unwrap();
    assert_eq!(s.fake.count("commands.submit"), 2, "nothing sent again");
    assert!(s.fake.commands().iter().all(|c| c["status"] == "done"));
    // A prepared handle QDS never received is NotSubmitted.
    let never = second.prepare(&job, &cx).unwrap();
    assert_eq!(
        second.status(&never).await.unwrap(),
        JobStatus::NotSubmitted
    );
    // The adopted cluster was started by the dead run: terminated.
    let c = second.clone();
    drive(&s.clock, tokio::spawn(async move { c.terminate().await }))
        .await
        .unwrap();
    assert_eq!(s.fake.count("clusters.terminate"), 1);
    assert_eq!(s.fake.cluster_state(LABEL).as_deref(), Some("DOWN"));
}

#[tokio::test]
async fn a_bad_token_an_unknown_label_and_a_refused_body_are_named_on_contract_fake() {
    let s = setup().await;
    let wrong = factory_on(
        &s.fake,
        &s.clock,
        "FLOW_QUBOLE_TEST_WRONG",
        "not-the-token-123",
        |b| b,
    )
    .unwrap();
    let e = wrong
        .cluster("qubole-0", &s.context)
        .provision()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 401") && e.contains("Invalid Token"), "{e}");
    assert!(!e.contains("not-the-token-123"), "{e}");
    let other = factory_on(&s.fake, &s.clock, "FLOW_QUBOLE_TEST_TOKEN_3", TOKEN, |b| {
        let mut config = b.config().clone();
        config.cluster_label = "nope".into();
        config.builder().with_clock(Arc::new(s.clock.clone()))
    })
    .unwrap();
    let e = other
        .cluster("qubole-0", &s.context)
        .provision()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no cluster labelled \"nope\""), "{e}");
    // A command for a label no cluster has: 422 with QDS's reason, and
    // nothing sent again.
    let cluster = other.cluster("qubole-0", &s.context);
    let job = shell("echo x");
    let cancel = CancellationToken::new();
    let cx = job_context(&cancel, &s.context);
    let prepared = cluster.prepare(&job, &cx).unwrap();
    let e = cluster
        .submit(&prepared, &job, &cx)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HTTP 422") && e.contains("Cluster with label nope does not exist"),
        "{e}"
    );
    assert_eq!(s.fake.count("commands.submit"), 1);
    assert_eq!(s.fake.commands().len(), 0);
}

/// The fake's faults, for `flow_cloud::testkit`'s contracts.
struct FakeFaults<'a> {
    fake: &'a FakeQubole,
}

#[async_trait::async_trait]
impl flow_cloud::testkit::BackendFaults for FakeFaults<'_> {
    async fn break_status_requests(&self) {
        for method in ["commands.get", "commands.list"] {
            self.fake.throttle(method, 1_000_000, 1);
        }
    }
    async fn heal(&self) {
        self.fake.heal();
    }
    async fn finish(&self, handle: &JobHandle) {
        let id = handle.ids["command_id"].parse().unwrap();
        assert!(self.fake.finish_command(id, "done"), "command {id} runs");
    }
    async fn jobs_received(&self) -> usize {
        self.fake.commands().len()
    }
}

#[tokio::test]
async fn a_command_whose_polling_gave_up_has_an_unknown_outcome_and_is_adopted_on_contract_fake() {
    let s = Arc::new(setup_with(|o| o.command_run = None, |b| b).await);
    let cluster = s.launch().await;
    let t = s.clone();
    let contract = tokio::spawn(async move {
        let cancel = CancellationToken::new();
        let cx = job_context(&cancel, &t.context);
        let faults = FakeFaults { fake: &t.fake };
        flow_cloud::testkit::unknown_outcome_contract(
            &*cluster,
            &shell("sleep 3600"),
            &cx,
            &faults,
        )
        .await;
    });
    drive(&s.clock, contract).await;
    assert_eq!(s.fake.count("commands.submit"), 1);
    assert!(
        s.fake.count("commands.get") > 5,
        "the status requests were tried"
    );
}

#[tokio::test]
async fn a_cluster_that_goes_down_under_a_command_fails_it_with_its_reason_on_contract_fake() {
    let s = setup_with(|o| o.command_run = None, |b| b).await;
    let cluster = s.launch().await;
    let handle = s.submit(&cluster, &shell("sleep 3600")).await;
    let task = wait_task(&cluster, &handle, CancellationToken::new(), &s.context);
    // Polled a few times, then the cluster is lost; the command still says
    // running (QDS notices late), its cluster says why it went down.
    s.clock.wait_for_sleepers(1).await;
    s.clock.advance(3 * SECOND);
    s.clock.wait_for_sleepers(1).await;
    s.fake.set_cluster_state(
        LABEL,
        "DOWN",
        Some("Spot nodes lost: capacity-not-available"),
    );
    let e = drive(&s.clock, task).await.unwrap_err();
    let ClusterError::JobFailed { message, .. } = &e else {
        panic!("a command whose cluster ended failed: {e:?}")
    };
    assert!(
        message.contains("its cluster ended")
            && message.contains(&format!("QDS cluster {LABEL} is DOWN"))
            && message.contains("Spot nodes lost: capacity-not-available"),
        "{message}"
    );
    // Noticed by the first cluster check: the 10th tick's request.
    assert_eq!(s.factory.poll_requests(), 10);
    assert_eq!(s.fake.commands()[0]["status"], "running");
    // The reason stays on the cluster, for its record.
    assert!(cluster
        .end_reason()
        .is_some_and(|r| r.contains("capacity-not-available")));
}

#[tokio::test]
async fn slots_are_jobs_per_cluster_and_every_engine_shares_the_label_on_contract_fake() {
    let s = setup_with(
        |_| {},
        |b| b.with_jobs_per_cluster(std::num::NonZeroUsize::new(4).unwrap()),
    )
    .await;
    let cluster = s.cluster("qubole-0");
    assert_eq!(cluster.slots(), 4);
    // Another engine's cluster of the label has the same shared name: the
    // store then decides who starts it and who terminates it.
    let other = factory_on(&s.fake, &s.clock, "FLOW_QUBOLE_TEST_TOKEN_4", TOKEN, |b| b).unwrap();
    let theirs = other.cluster("qubole-1", &s.context);
    assert_eq!(theirs.slots(), 1, "one command at a time by default");
    let name = cluster.shared_name().unwrap();
    assert_eq!(theirs.shared_name(), Some(name.clone()));
    assert!(name.ends_with(&format!("/{LABEL}")), "{name}");
    // Four commands at once on the label, watched by one listing a tick.
    s.run_at_once(&cluster, 4).await;
    assert_eq!(s.fake.peak_unfinished(), 4);
    assert_eq!(s.fake.count("commands.get"), 0);
    assert_eq!(s.factory.poll_requests(), s.fake.count("commands.list") + 3);
}

#[tokio::test]
async fn each_request_is_counted_on_the_meter_by_its_call_on_contract_fake() {
    let meter = flow_core::testkit::meter::RecordingMeter::installed();
    let submits = meter.requests("qubole", "submit command");
    let states = meter.requests("qubole", "check cluster status");
    let s = setup().await;
    let cluster = s.launch().await;
    let handle = s.submit(&cluster, &shell("echo counted")).await;
    let task = wait_task(&cluster, &handle, CancellationToken::new(), &s.context);
    drive(&s.clock, task).await.unwrap();
    // Other tests of this binary add to the same process-wide counts.
    assert!(
        meter.requests("qubole", "submit command") > submits,
        "{:?}",
        meter.calls()
    );
    assert!(
        meter.requests("qubole", "check cluster status") > states,
        "{:?}",
        meter.calls()
    );
}
