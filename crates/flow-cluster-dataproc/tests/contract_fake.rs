//! The Dataproc cluster against the loopback contract fake
//! (`contract-fakes`, its `dataproc` module): launch, reuse, a failed create, delete, jobs
//! to their end, the poll budget and notice delay, 429 with `Retry-After`,
//! duplicate submissions and a lost submit answer, 5xx retries, the create
//! body, jobs ending together, cancel, adoption by another engine, and
//! timeouts on a loopback server that never answers.
//!
//! Time is a `ManualClock` shared by the fake (which computes every state
//! from it) and the cluster (whose polls and retries sleep on it): the
//! figures are asserted by counting requests at the fake at known instants,
//! never by sleeping. The `_on_fake_gcs` test also needs fake-gcs-server
//! (started by `cargo xtask test`).

use contract_fakes::auth::TEST_PRIVATE_KEY;
use contract_fakes::dataproc::{FakeDataproc, FakeOptions};
use flow_cloud::testkit::{context, drive};
use flow_cloud::{Clock, ManualClock, PollConfig, RetryConfig};
use flow_cluster_dataproc::{
    DataprocCluster, DataprocClusterFactory, DataprocClusterFactoryBuilder,
};
use flow_core::{Cluster, ClusterError, ExecutionContext, Job, JobContext, JobHandle, JobStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SECOND: Duration = Duration::from_secs(1);

struct Setup {
    clock: ManualClock,
    fake: FakeDataproc,
    factory: DataprocClusterFactory,
    context: ExecutionContext,
}

fn retry() -> RetryConfig {
    RetryConfig {
        jitter: false,
        ..RetryConfig::default()
    }
}

/// A factory builder for `fake`, authorised like on Dataproc: its
/// service-account key's `token_uri` is the fake's token endpoint.
fn on_fake(fake: &FakeDataproc) -> DataprocClusterFactoryBuilder {
    let key_file = std::env::temp_dir().join(format!(
        "flow-dataproc-key-{}-{}.json",
        std::process::id(),
        fake.url().rsplit(':').next().unwrap()
    ));
    fake.write_key_file(&key_file).unwrap();
    DataprocClusterFactoryBuilder::new("proj", "europe-west1")
        .with_endpoint(fake.url())
        .with_endpoint_auth(true)
        .with_credentials_file(&key_file)
}

async fn setup_with(tweak: impl FnOnce(&mut FakeOptions), gcs: Option<&str>) -> Setup {
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let mut options = FakeOptions::new(shared.clone());
    // The client's token cache runs on wall time while these tests move
    // the fake's clock by hand (hours at times): tokens outlive the test.
    options.token_lifetime = Duration::from_secs(365 * 86400);
    options.gcs_endpoint = gcs.map(str::to_string);
    tweak(&mut options);
    let fake = FakeDataproc::start(options, 0).await.unwrap();
    let mut builder = on_fake(&fake)
        .with_code_bucket("code")
        .with_launch_poll(Duration::from_secs(10))
        .with_retry(retry())
        .with_clock(shared);
    if let Some(gcs) = gcs {
        builder = builder.with_gcs(flow_fs_gcs::GcsConfig {
            endpoint: Some(gcs.to_string()),
            bucket: Some("data".into()),
            ..Default::default()
        });
    }
    let factory = builder.build().unwrap();
    Setup {
        clock,
        fake,
        factory,
        context: context(),
    }
}

async fn setup() -> Setup {
    setup_with(|_| {}, None).await
}

fn pyspark(conf: &[(&str, &str)]) -> Job {
    Job::Spark {
        application: "jobs/count.py".into(),
        main_class: None,
        conf: conf
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        secret_conf: vec![],
        args: vec!["--day".into(), "2026112800".into()],
    }
}

impl Setup {
    fn cluster(&self, name: &str) -> Arc<DataprocCluster> {
        Arc::new(self.factory.cluster(name, &self.context))
    }

    /// Provisions and waits until it is up.
    async fn launch(&self, name: &str) -> Arc<DataprocCluster> {
        let cluster = self.cluster(name);
        let handle = cluster.provision().await.unwrap();
        assert!(!handle.reused);
        let c = cluster.clone();
        drive(
            &self.clock,
            tokio::spawn(async move { c.wait_ready().await }),
        )
        .await
        .unwrap();
        cluster
    }

    /// The engine's wait for each of `handles`, each in a task.
    fn wait_tasks(
        &self,
        cluster: &Arc<DataprocCluster>,
        handles: &[JobHandle],
    ) -> Vec<JoinHandle<Result<(), ClusterError>>> {
        handles
            .iter()
            .map(|h| wait_task(cluster, h, CancellationToken::new(), &self.context))
            .collect()
    }

    /// Prepares and submits `job` (attempt 1 of step `s`).
    async fn submit(&self, cluster: &DataprocCluster, job: &Job) -> JobHandle {
        let cancel = CancellationToken::new();
        let cx = job_context(&cancel, &self.context);
        let handle = cluster.prepare(job, &cx).unwrap();
        cluster.submit(&handle, job, &cx).await.unwrap()
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
        action: "spark",
        attempt: 1,
    }
}

/// Waits for the job in a task (so the test can move the clock meanwhile).
fn wait_task(
    cluster: &Arc<DataprocCluster>,
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
async fn launch_creates_then_waits_on_the_operation_and_running_on_contract_fake() {
    let s = setup().await;
    let cluster = s.cluster("dataproc-0");
    let handle = cluster.provision().await.unwrap();
    assert_eq!(handle.backend_id, "flow-daily-2026112800-0");
    assert!(!handle.reused);
    assert!(handle.details["operation"].contains("/operations/"));
    assert_eq!(s.fake.count("clusters.create"), 1);
    assert_eq!(
        s.fake.cluster_state("flow-daily-2026112800-0").as_deref(),
        Some("CREATING")
    );
    let c = cluster.clone();
    drive(&s.clock, tokio::spawn(async move { c.wait_ready().await }))
        .await
        .unwrap();
    assert_eq!(
        s.fake.cluster_state("flow-daily-2026112800-0").as_deref(),
        Some("RUNNING")
    );
    // 90 s of creation asked about every 10 s: the operation, then the
    // cluster once.
    assert_eq!(s.fake.count("operations.get"), 10);
    assert_eq!(s.fake.count("clusters.get"), 2);
    // The second cluster of the run has its own name.
    let second = s.cluster("dataproc-1").provision().await.unwrap();
    assert_eq!(second.backend_id, "flow-daily-2026112800-1");
}

#[tokio::test]
async fn a_running_cluster_of_another_flow_is_reused_and_left_up_on_contract_fake() {
    let s = setup().await;
    let shared = |flow: &str| {
        let factory = on_fake(&s.fake)
            .with_name("shared-etl")
            .with_clock(Arc::new(s.clock.clone()))
            .build()
            .unwrap();
        let context = ExecutionContext {
            flow_name: flow.into(),
            ..context()
        };
        Arc::new(factory.cluster("dataproc-0", &context))
    };
    let first = shared("other");
    assert!(!first.provision().await.unwrap().reused);
    let c = first.clone();
    drive(&s.clock, tokio::spawn(async move { c.wait_ready().await }))
        .await
        .unwrap();
    let again = shared("daily");
    let handle = again.provision().await.unwrap();
    assert!(handle.reused, "{handle:?}");
    again.wait_ready().await.unwrap();
    again.terminate().await.unwrap();
    assert_eq!(s.fake.count("clusters.create"), 1);
    assert_eq!(s.fake.count("clusters.delete"), 0);
    assert_eq!(
        s.fake.cluster_state("shared-etl-0").as_deref(),
        Some("RUNNING")
    );
}

#[tokio::test]
async fn a_cluster_left_unrecorded_by_a_dead_run_of_the_flow_is_taken_over_and_deleted_on_contract_fake(
) {
    let s = setup().await;
    // The dead run's create went through; its record never did.
    s.launch("dataproc-0").await;
    let next = s.cluster("dataproc-0");
    let handle = next.provision().await.unwrap();
    assert!(!handle.reused, "{handle:?}");
    next.wait_ready().await.unwrap();
    let c = next.clone();
    drive(&s.clock, tokio::spawn(async move { c.terminate().await }))
        .await
        .unwrap();
    assert_eq!(s.fake.count("clusters.create"), 1);
    assert_eq!(s.fake.deleted(), ["flow-daily-2026112800-0"]);
}

#[tokio::test]
async fn a_cluster_that_fails_to_create_is_a_launch_failure_with_its_message_on_contract_fake() {
    let s = setup().await;
    s.fake.fail_create(
        "flow-daily-2026112800-0",
        "Insufficient 'CPUS' quota. Requested 24.0, available 8.0.",
    );
    let cluster = s.cluster("dataproc-0");
    cluster.provision().await.unwrap();
    let c = cluster.clone();
    let e = drive(&s.clock, tokio::spawn(async move { c.wait_ready().await }))
        .await
        .unwrap_err();
    match &e {
        ClusterError::Launch {
            message, transient, ..
        } => {
            assert!(message.contains("Insufficient 'CPUS' quota"), "{message}");
            assert!(!transient);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.fake.cluster_state("flow-daily-2026112800-0").as_deref(),
        Some("ERROR")
    );
    // It exists (and costs): terminate deletes it.
    let c = cluster.clone();
    drive(&s.clock, tokio::spawn(async move { c.terminate().await }))
        .await
        .unwrap();
    assert_eq!(s.fake.deleted(), ["flow-daily-2026112800-0"]);
}

#[tokio::test]
async fn terminate_deletes_and_waits_on_the_operation_on_contract_fake() {
    let s = setup().await;
    let cluster = s.launch("dataproc-0").await;
    let c = cluster.clone();
    drive(&s.clock, tokio::spawn(async move { c.terminate().await }))
        .await
        .unwrap();
    assert_eq!(s.fake.count("clusters.delete"), 1);
    assert_eq!(s.fake.deleted(), ["flow-daily-2026112800-0"]);
    // Once is enough.
    cluster.terminate().await.unwrap();
    assert_eq!(s.fake.count("clusters.delete"), 1);
}

#[tokio::test]
async fn jobs_are_noticed_within_two_seconds_median_at_one_request_per_second_on_contract_fake() {
    let s = setup_with(|o| o.job_pending = Duration::ZERO, None).await;
    let cluster = s.launch("dataproc-0").await;
    let mut delays = Vec::new();
    // Jobs of many lengths, ending at every phase of the polling.
    let lengths: Vec<Duration> = (0..24)
        .map(|i| Duration::from_millis(700 + i * 9_130))
        .collect();
    for length in &lengths {
        let run_for = format!("{}ms", length.as_millis());
        let handle = s
            .submit(&cluster, &pyspark(&[("fake.run_for", run_for.as_str())]))
            .await;
        let submitted = s.clock.now();
        // Every request of the wait: the job's and the cluster checks'.
        let requests_now = || s.fake.count("jobs.get") + s.fake.count("clusters.get");
        let before = requests_now();
        let task = wait_task(&cluster, &handle, CancellationToken::new(), &s.context);
        drive(&s.clock, task).await.unwrap();
        let ended = submitted + *length;
        let noticed = s.clock.now();
        assert!(noticed >= ended);
        let delay = noticed - ended;
        let requests = requests_now() - before;
        let waited = noticed - submitted;
        // At most one request a second on average, cluster checks included.
        assert!(
            requests as f64 <= waited.as_secs_f64() + 1.0,
            "{requests} requests in {waited:?}"
        );
        // The 3 s cap bounds every delay, also where the tick after the end
        // checks the cluster.
        assert!(delay <= Duration::from_secs(3), "{length:?}: {delay:?}");
        delays.push(delay);
    }
    delays.sort();
    let median = delays[delays.len() / 2];
    assert!(
        median <= Duration::from_secs(2),
        "median {median:?}: {delays:?}"
    );
    println!("notice delays: {delays:?}");
}

/// A launched cluster running six jobs at once, each until the test
/// finishes it.
async fn six_jobs_running_until_finished() -> (Setup, Arc<DataprocCluster>, Vec<JobHandle>) {
    let s = setup_with(
        |o| {
            o.job_pending = Duration::ZERO;
            o.job_run = None;
        },
        None,
    )
    .await;
    let cluster = s.launch("dataproc-0").await;
    let mut handles = Vec::new();
    for _ in 0..6 {
        handles.push(s.submit(&cluster, &pyspark(&[])).await);
    }
    (s, cluster, handles)
}

#[tokio::test]
async fn many_jobs_of_one_cluster_cost_one_request_per_tick_on_contract_fake() {
    let (s, cluster, handles) = six_jobs_running_until_finished().await;
    let start = s.clock.now();
    // Every request of the wait: the jobs' and, every 10th tick, the
    // cluster's (instead of the jobs' while they are polled at the floor).
    let requests_now =
        || s.fake.count("jobs.get") + s.fake.count("jobs.list") + s.fake.count("clusters.get");
    let before = requests_now();
    let tasks = s.wait_tasks(&cluster, &handles);
    // Twenty seconds with all six running: one request a second.
    for _ in 0..20 {
        s.clock.wait_for_sleepers(1).await;
        s.clock.advance(SECOND);
    }
    s.clock.wait_for_sleepers(1).await;
    let after = requests_now();
    assert_eq!(after - before, 20, "{:?}", s.fake.requests());
    assert_eq!(s.fake.count("jobs.get"), 0, "one jobs.list per tick");
    // They end together; one listing of the finished jobs confirms them.
    let ids: Vec<String> = handles.iter().map(|h| h.ids["job_id"].clone()).collect();
    for (i, id) in ids.iter().enumerate() {
        let state = if i == 0 { "ERROR" } else { "DONE" };
        assert!(s.fake.finish_job(id, state, "it broke"));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(drive(&s.clock, task).await);
    }
    assert!(
        matches!(&results[0], Err(ClusterError::JobFailed { message, .. }) if message.contains("it broke"))
    );
    assert!(results[1..].iter().all(Result::is_ok), "{results:?}");
    let requests = requests_now() - before;
    let ticks = (s.clock.now() - start).as_secs();
    assert!(
        requests <= ticks + 1,
        "{requests} requests in {ticks} s: {:?}",
        s.fake.requests()
    );
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_on_contract_fake() {
    let s = setup().await;
    let cluster = s.launch("dataproc-0").await;
    s.fake.throttle("jobs.submit", 1, 7);
    let cancel = CancellationToken::new();
    let cx = job_context(&cancel, &s.context);
    let job = pyspark(&[]);
    let handle = cluster.prepare(&job, &cx).unwrap();
    let (c, h, j, context) = (
        cluster.clone(),
        handle.clone(),
        job.clone(),
        s.context.clone(),
    );
    let task = tokio::spawn(async move {
        let cancel = CancellationToken::new();
        let cx = job_context(&cancel, &context);
        c.submit(&h, &j, &cx).await
    });
    s.clock.wait_for_sleepers(1).await;
    assert_eq!(s.fake.count("jobs.submit"), 1);
    assert_eq!(
        s.clock.sleeps().last(),
        Some(&Duration::from_secs(7)),
        "Retry-After honoured"
    );
    s.clock.advance(Duration::from_secs(7));
    task.await.unwrap().unwrap();
    assert_eq!(s.fake.count("jobs.submit"), 2);
    assert_eq!(s.fake.jobs().len(), 1);
}

#[tokio::test]
async fn a_duplicate_submit_with_the_same_request_id_makes_one_job_on_contract_fake() {
    let s = setup().await;
    let cluster = s.launch("dataproc-0").await;
    let cancel = CancellationToken::new();
    let cx = job_context(&cancel, &s.context);
    let job = pyspark(&[]);
    let handle = cluster.prepare(&job, &cx).unwrap();
    assert_eq!(s.fake.count("jobs.submit"), 0, "prepare sends nothing");
    assert_eq!(
        cluster.status(&handle).await.unwrap(),
        JobStatus::NotSubmitted
    );
    cluster.submit(&handle, &job, &cx).await.unwrap();
    cluster.submit(&handle, &job, &cx).await.unwrap();
    assert_eq!(s.fake.count("jobs.submit"), 2);
    // The second is answered from its request id (the first job, 200), not
    // refused as a taken job id (409).
    assert_eq!(s.fake.answers("jobs.submit"), [200, 200]);
    assert_eq!(
        s.fake.submit_request_ids(),
        [
            handle.ids["request_id"].clone(),
            handle.ids["request_id"].clone()
        ]
    );
    let jobs = s.fake.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["reference"]["jobId"], handle.ids["job_id"]);
    assert_eq!(
        jobs[0]["pysparkJob"]["mainPythonFileUri"],
        "gs://code/jobs/count.py"
    );
    assert_eq!(cluster.status(&handle).await.unwrap(), JobStatus::Running);
    // The same job id under another request id (an expired one) is 409
    // ALREADY_EXISTS, which submit takes as "already submitted".
    let mut expired = handle.clone();
    expired
        .ids
        .insert("request_id".into(), "another-request-id".into());
    cluster.submit(&expired, &job, &cx).await.unwrap();
    assert_eq!(s.fake.answers("jobs.submit"), [200, 200, 409]);
    assert_eq!(s.fake.jobs().len(), 1);
    // A new handle for the same step is a new job.
    let other = cluster.prepare(&job, &cx).unwrap();
    assert_ne!(other.ids["job_id"], handle.ids["job_id"]);
    assert_ne!(other.ids["request_id"], handle.ids["request_id"]);
}

#[tokio::test]
async fn a_failed_job_reports_its_details_on_contract_fake() {
    let s = setup().await;
    let cluster = s.launch("dataproc-0").await;
    let handle = s
        .submit(
            &cluster,
            &pyspark(&[("fake.outcome", "ERROR"), ("fake.run_for", "5s")]),
        )
        .await;
    let e = drive(
        &s.clock,
        wait_task(&cluster, &handle, CancellationToken::new(), &s.context),
    )
    .await
    .unwrap_err();
    let message = e.to_string();
    assert!(message.contains("is ERROR"), "{message}");
    assert!(
        message.contains("Dataproc Agent reports job failure"),
        "{message}"
    );
    assert!(matches!(
        cluster.status(&handle).await.unwrap(),
        JobStatus::Failed { .. }
    ));
}

#[tokio::test]
async fn attempt_failure_is_not_the_end_on_contract_fake() {
    let s = setup().await;
    let cluster = s.launch("dataproc-0").await;
    let handle = s
        .submit(
            &cluster,
            &pyspark(&[("fake.attempt_failure", "true"), ("fake.run_for", "20s")]),
        )
        .await;
    drive(
        &s.clock,
        wait_task(&cluster, &handle, CancellationToken::new(), &s.context),
    )
    .await
    .unwrap();
    let job = &s.fake.jobs()[0];
    let history: Vec<&str> = job["statusHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert!(history.contains(&"ATTEMPT_FAILURE"), "{history:?}");
    assert_eq!(job["status"]["state"], "DONE");
}

#[tokio::test]
async fn cancelling_a_wait_cancels_the_job_and_waits_for_cancelled_on_contract_fake() {
    let s = setup_with(|o| o.job_run = None, None).await;
    let cluster = s.launch("dataproc-0").await;
    let handle = s.submit(&cluster, &pyspark(&[])).await;
    let cancel = CancellationToken::new();
    let task = wait_task(&cluster, &handle, cancel.clone(), &s.context);
    s.clock.wait_for_sleepers(1).await;
    s.clock.advance(SECOND);
    s.clock.wait_for_sleepers(1).await;
    cancel.cancel();
    let e = drive(&s.clock, task).await.unwrap_err();
    assert!(matches!(e, ClusterError::Cancelled { .. }), "{e:?}");
    assert_eq!(s.fake.count("jobs.cancel"), 1);
    assert_eq!(s.fake.jobs()[0]["status"]["state"], "CANCELLED");
    assert_eq!(cluster.status(&handle).await.unwrap(), JobStatus::Cancelled);
    // Cancelling a finished job is fine.
    cluster.cancel(&handle).await.unwrap();
}

#[tokio::test]
async fn another_engine_adopts_the_cluster_and_the_job_from_their_handles_on_contract_fake() {
    let s = setup_with(|o| o.job_run = Some(Duration::from_secs(30)), None).await;
    let first = s.cluster("dataproc-0");
    let cluster_handle = first.provision().await.unwrap();
    let c = first.clone();
    drive(&s.clock, tokio::spawn(async move { c.wait_ready().await }))
        .await
        .unwrap();
    let job_handle = s.submit(&first, &pyspark(&[])).await;
    drop(first);

    // A new engine: a new factory (same settings), the stored handles only.
    let later = on_fake(&s.fake)
        .with_code_bucket("code")
        .with_clock(Arc::new(s.clock.clone()))
        .with_poll(PollConfig::default())
        .build()
        .unwrap();
    let adopter = Arc::new(later.cluster("dataproc-0", &s.context));
    assert!(adopter.adopt(&cluster_handle).await.unwrap());
    assert_eq!(
        adopter.status(&job_handle).await.unwrap(),
        JobStatus::Running
    );
    drive(
        &s.clock,
        wait_task(&adopter, &job_handle, CancellationToken::new(), &s.context),
    )
    .await
    .unwrap();
    assert_eq!(s.fake.count("jobs.submit"), 1);
    let a = adopter.clone();
    drive(&s.clock, tokio::spawn(async move { a.terminate().await }))
        .await
        .unwrap();
    assert_eq!(s.fake.deleted(), ["flow-daily-2026112800-0"]);
    // Gone now: adopting it again says so.
    assert!(!later
        .cluster("dataproc-0", &s.context)
        .adopt(&cluster_handle)
        .await
        .unwrap());
}

#[tokio::test]
async fn shell_jobs_are_unsupported_with_a_clear_message() {
    let s = setup().await;
    let cluster = s.cluster("dataproc-0");
    let cancel = CancellationToken::new();
    let cx = job_context(&cancel, &s.context);
    let e = cluster
        .prepare(
            &Job::Shell {
                command: "ls".into(),
                env: vec![],
            },
            &cx,
        )
        .unwrap_err();
    assert!(
        matches!(e, ClusterError::Unsupported { job: "shell", .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("cannot run shell jobs"), "{e}");
    assert_eq!(s.fake.total(), 0);
}

/// Driver output written to fake-gcs-server (by the fake, as Dataproc
/// would) reaches a failed job's error.
#[tokio::test]
#[ignore = "needs fake-gcs-server: run through `cargo xtask test`"]
async fn a_failed_job_carries_its_driver_output_on_contract_fake_on_fake_gcs() {
    let gcs = std::env::var("FLOW_TEST_GCS_ENDPOINT").unwrap_or_else(|_| {
        panic!("FLOW_TEST_GCS_ENDPOINT is not set: run the fake-gcs-server tests through `cargo xtask test`")
    });
    let s = setup_with(|_| {}, Some(&gcs)).await;
    // The code bucket and the application exist, so only the job's own
    // failure counts.
    let http = reqwest::Client::new();
    let _ = http
        .post(format!("{gcs}/storage/v1/b?project=fake"))
        .body(r#"{"name": "code"}"#)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    http.post(format!(
        "{gcs}/upload/storage/v1/b/code/o?uploadType=media&name=jobs%2Fcount.py"
    ))
    .body("print('hi')\n")
    .send()
    .await
    .unwrap()
    .error_for_status()
    .unwrap();
    let cluster = s.launch("dataproc-0").await;
    let output =
        "line 1\nTraceback (most recent call last):\nValueError: no input for 2026112800\n";
    let handle = s
        .submit(
            &cluster,
            &pyspark(&[("fake.outcome", "ERROR"), ("fake.driver_output", output)]),
        )
        .await;
    let e = drive(
        &s.clock,
        wait_task(&cluster, &handle, CancellationToken::new(), &s.context),
    )
    .await
    .unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("ValueError: no input for 2026112800"),
        "{message}"
    );
    assert!(message.contains("driver output"), "{message}");
}

#[tokio::test]
async fn a_key_file_s_tokens_are_sent_cached_and_never_shown_on_contract_fake() {
    let s = setup().await;
    let dir = std::env::temp_dir().join(format!("flow-dataproc-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("sa.json");
    s.fake.write_key_file(&key_file).unwrap();
    let factory = DataprocClusterFactoryBuilder::new("proj", "europe-west1")
        .with_endpoint(s.fake.url())
        .with_endpoint_auth(true)
        .with_credentials_file(&key_file)
        .with_code_bucket("code")
        .with_clock(Arc::new(s.clock.clone()))
        .build()
        .unwrap();
    let cluster = Arc::new(factory.cluster("dataproc-0", &s.context));
    cluster.provision().await.unwrap();
    let c = cluster.clone();
    drive(&s.clock, tokio::spawn(async move { c.wait_ready().await }))
        .await
        .unwrap();
    let handle = s.submit(&cluster, &pyspark(&[])).await;
    assert_eq!(cluster.status(&handle).await.unwrap(), JobStatus::Running);
    let seen = s.fake.authorizations();
    assert!(seen.len() > 5, "{seen:?}");
    assert!(
        seen.iter().all(|a| a == "Bearer ya29.fake-access-token-1"),
        "{seen:?}"
    );
    assert_eq!(s.fake.tokens_issued(), 1, "the token is cached");
    let shown = format!("{factory:?} {cluster:?}");
    assert!(!shown.contains("ya29."), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(!shown.contains(&TEST_PRIVATE_KEY[40..80]), "{shown}");
    std::fs::remove_dir_all(&dir).unwrap();

    // Without endpoint_auth the fake gets no credentials at all, and
    // refuses the call as Dataproc would.
    let bare = DataprocClusterFactoryBuilder::new("proj", "europe-west1")
        .with_endpoint(s.fake.url())
        .with_code_bucket("code")
        .with_retry(retry())
        .with_clock(Arc::new(s.clock.clone()))
        .build()
        .unwrap();
    let before = s.fake.authorizations().len();
    let refused = bare
        .cluster("dataproc-0", &s.context)
        .status(&handle)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("401"), "{refused}");
    assert_eq!(s.fake.authorizations()[before..], [String::new()]);
}

/// A loopback TCP server that accepts connections and never answers.
async fn silent_server() -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

/// Without the client's timeouts these calls would hang forever; the
/// test's own bound turns that into a failure.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the call hung: no timeout fired")
}

#[tokio::test]
async fn a_hung_connection_fails_with_a_timeout_naming_the_call_on_a_silent_loopback_server() {
    let (url, _server) = silent_server().await;
    let factory = DataprocClusterFactoryBuilder::new("proj", "europe-west1")
        .with_endpoint(&url)
        .with_code_bucket("code")
        .with_retry(RetryConfig {
            max_retries: 1,
            initial_delay: Duration::from_millis(10),
            jitter: false,
            ..RetryConfig::default()
        })
        .with_timeouts(Duration::from_millis(200), Duration::from_millis(300))
        .build()
        .unwrap();
    let context = context();
    let cluster = factory.cluster("dataproc-0", &context);
    match bounded(cluster.provision()).await.unwrap_err() {
        ClusterError::Launch {
            message, transient, ..
        } => {
            assert!(
                message.contains(
                    "clusters.get timed out (request_timeout: no complete answer within 300ms)"
                ),
                "{message}"
            );
            assert!(transient, "a timeout is worth another launch attempt");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(factory.requests(), 2, "retried once");
    // A job's status (what the poller asks) fails the same way.
    let cancel = CancellationToken::new();
    let cx = job_context(&cancel, &context);
    let handle = cluster.prepare(&pyspark(&[]), &cx).unwrap();
    let e = bounded(cluster.status(&handle)).await.unwrap_err();
    assert!(
        matches!(&e, ClusterError::Backend { operation: "jobs.get", message, .. }
            if message.contains("jobs.get timed out (request_timeout")),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_submit_whose_answer_is_lost_is_retried_with_its_request_id_and_makes_one_job_on_contract_fake(
) {
    let s = setup().await;
    let cluster = s.launch("dataproc-0").await;
    // The job is made, the answer lost (503): the retry must be answered
    // from the request id, not refused as a taken job id.
    s.fake.lose_answers("jobs.submit", 1);
    let job = pyspark(&[]);
    let handle = {
        let cancel = CancellationToken::new();
        cluster
            .prepare(&job, &job_context(&cancel, &s.context))
            .unwrap()
    };
    let (c, h, context) = (cluster.clone(), handle.clone(), s.context.clone());
    let task = tokio::spawn(async move {
        let cancel = CancellationToken::new();
        c.submit(&h, &job, &job_context(&cancel, &context)).await
    });
    drive(&s.clock, task).await.unwrap();
    assert_eq!(s.fake.answers("jobs.submit"), [503, 200]);
    let request_id = handle.ids["request_id"].clone();
    assert!(!request_id.is_empty());
    assert_eq!(
        s.fake.submit_request_ids(),
        [request_id.clone(), request_id]
    );
    let jobs = s.fake.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["reference"]["jobId"], handle.ids["job_id"]);
}

#[tokio::test]
async fn the_create_body_carries_the_settings_on_contract_fake() {
    let s = setup().await;
    let factory = on_fake(&s.fake)
        .with_code_bucket("code")
        .with_zone("europe-west1-b")
        .with_master("n2-highmem-4", 3)
        .with_workers("n2-standard-8", 5)
        .with_image_version("2.2-debian12")
        .with_init_action("init/install deps.sh")
        .with_init_action("gs://tools/setup.sh")
        .with_label("team", "data")
        .with_idle_delete_ttl(Duration::from_secs(2 * 3600))
        .with_clock(Arc::new(s.clock.clone()))
        .build()
        .unwrap();
    let cluster = factory.cluster("dataproc-0", &s.context);
    cluster.provision().await.unwrap();
    // The cluster as Dataproc returns it: the settings, with the
    // service's expansions and defaults.
    let body = s.fake.create_body("flow-daily-2026112800-0").unwrap();
    assert_eq!(body["projectId"], "proj");
    assert_eq!(body["clusterName"], "flow-daily-2026112800-0");
    let config = &body["config"];
    let compute = "https://www.googleapis.com/compute/v1/projects/proj/zones/europe-west1-b";
    assert_eq!(config["gceClusterConfig"]["zoneUri"], compute);
    let master = &config["masterConfig"];
    assert_eq!(master["numInstances"], 3);
    assert_eq!(
        master["machineTypeUri"],
        format!("{compute}/machineTypes/n2-highmem-4")
    );
    assert_eq!(
        master["instanceNames"],
        serde_json::json!([
            "flow-daily-2026112800-0-m-0",
            "flow-daily-2026112800-0-m-1",
            "flow-daily-2026112800-0-m-2"
        ])
    );
    let workers = &config["workerConfig"];
    assert_eq!(workers["numInstances"], 5);
    assert_eq!(
        workers["machineTypeUri"],
        format!("{compute}/machineTypes/n2-standard-8")
    );
    let image = config["softwareConfig"]["imageVersion"].as_str().unwrap();
    assert!(
        image.starts_with("2.2.") && image.ends_with("-debian12"),
        "{image}"
    );
    assert_eq!(
        config["initializationActions"],
        serde_json::json!([
            {"executableFile": "gs://code/init/install deps.sh", "executionTimeout": "600s"},
            {"executableFile": "gs://tools/setup.sh", "executionTimeout": "600s"},
        ])
    );
    assert_eq!(config["lifecycleConfig"]["idleDeleteTtl"], "7200s");
    let labels = body["labels"].as_object().unwrap();
    for (key, value) in [
        ("team", "data"),
        ("flow-cluster", "dataproc-0"),
        ("flow-run-key", "daily-2026112800"),
        ("goog-dataproc-cluster-name", "flow-daily-2026112800-0"),
    ] {
        assert_eq!(labels[key], value, "{labels:?}");
    }
}

#[tokio::test]
async fn jobs_ending_together_are_all_confirmed_on_one_tick_on_contract_fake() {
    let (s, cluster, handles) = six_jobs_running_until_finished().await;
    let mut tasks = s.wait_tasks(&cluster, &handles);
    for _ in 0..5 {
        s.clock.wait_for_sleepers(1).await;
        s.clock.advance(SECOND);
    }
    s.clock.wait_for_sleepers(1).await;
    // (jobs.list, jobs.get, clusters.get) since `before`.
    let counts = || {
        (
            s.fake.count("jobs.list"),
            s.fake.count("jobs.get"),
            s.fake.count("clusters.get"),
        )
    };
    let since = |before: (u64, u64, u64)| {
        let now = counts();
        (now.0 - before.0, now.1 - before.1, now.2 - before.2)
    };
    let finish = |range: std::ops::Range<usize>| {
        for i in range {
            let state = if i == 2 { "ERROR" } else { "DONE" };
            assert!(s
                .fake
                .finish_job(&handles[i].ids["job_id"], state, "it broke"));
        }
    };
    // Three end now, between two ticks.
    let ended = s.clock.now();
    let before = counts();
    finish(0..3);
    // The next tick (the others keep the poller ticking, so the clock
    // moves by hand): its listing of the active jobs misses them and its
    // listing of the finished ones confirms all three.
    s.clock.advance(SECOND);
    let mut results = Vec::new();
    for task in tasks.drain(..3) {
        results.push(bounded(task).await.unwrap());
    }
    assert_eq!(s.clock.now() - ended, SECOND);
    assert!(
        matches!(&results[2], Err(ClusterError::JobFailed { message, .. }) if message.contains("it broke")),
        "{results:?}"
    );
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    // One tick, two requests.
    s.clock.wait_for_sleepers(1).await;
    assert_eq!(since(before), (2, 0, 0), "{:?}", s.fake.requests());
    // A tick in which nothing ends costs the one listing.
    s.clock.wait_for_sleepers(1).await;
    let before = counts();
    s.clock.advance(SECOND);
    s.clock.wait_for_sleepers(1).await;
    assert_eq!(since(before), (1, 0, 0), "{:?}", s.fake.requests());
    // The other three end together too: noticed at the next tick, with
    // two requests again.
    let ended = s.clock.now();
    let before = counts();
    finish(3..6);
    for task in tasks {
        drive(&s.clock, task).await.unwrap();
    }
    assert_eq!(s.clock.now() - ended, SECOND);
    assert_eq!(since(before), (2, 0, 0), "{:?}", s.fake.requests());
}

#[tokio::test]
async fn a_reused_cluster_is_deleted_with_terminate_reused_on_contract_fake() {
    let s = setup().await;
    let shared = |flow: &str, terminate_reused: bool| {
        let factory = on_fake(&s.fake)
            .with_name("shared-etl")
            .with_terminate_reused(terminate_reused)
            .with_clock(Arc::new(s.clock.clone()))
            .build()
            .unwrap();
        let context = ExecutionContext {
            flow_name: flow.into(),
            ..context()
        };
        Arc::new(factory.cluster("dataproc-0", &context))
    };
    let first = shared("other", false);
    first.provision().await.unwrap();
    let c = first.clone();
    drive(&s.clock, tokio::spawn(async move { c.wait_ready().await }))
        .await
        .unwrap();
    let again = shared("daily", true);
    assert!(again.provision().await.unwrap().reused);
    again.wait_ready().await.unwrap();
    let a = again.clone();
    drive(&s.clock, tokio::spawn(async move { a.terminate().await }))
        .await
        .unwrap();
    assert_eq!(s.fake.count("clusters.delete"), 1);
    assert_eq!(s.fake.deleted(), ["shared-etl-0"]);
}

#[tokio::test]
async fn a_503_is_retried_on_contract_fake() {
    let s = setup().await;
    let cluster = s.launch("dataproc-0").await;
    let handle = s.submit(&cluster, &pyspark(&[])).await;
    s.fake.unavailable("jobs.get", 2);
    let c = cluster.clone();
    let status = drive(
        &s.clock,
        tokio::spawn(async move { c.status(&handle).await }),
    )
    .await
    .unwrap();
    assert_eq!(status, JobStatus::Running);
    assert_eq!(s.fake.answers("jobs.get"), [503, 503, 200]);
}
