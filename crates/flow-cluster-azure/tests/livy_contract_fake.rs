//! The HDInsight cluster's Spark path against the Livy contract fake (in
//! process, on a manual clock shared with the cluster): the exact batch
//! body, success, `dead` with its log tail, a lost submit answer found by
//! name, throttling and 503s retried, cancel, shell refused, the login,
//! the unknown-outcome contract, slots and the shared name.

mod common;

use common::{context, PASSWORD};
use contract_fakes::livy::FakeLivy;
use flow_cloud::{Clock, ManualClock, RetryConfig};
use flow_cluster_azure::{AzureCluster, AzureClusterFactory, AzureConfig};
use flow_core::{Cluster, ClusterError, Job, JobContext, JobStatus};
use flow_fs_azure::{AzureBlobConfig, SecretRef};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Setup {
    clock: ManualClock,
    fake: FakeLivy,
    factory: AzureClusterFactory,
}

/// The fake with a login, and a factory pointed at it (its Blob
/// filesystem is never called here).
async fn setup(password: Option<&str>) -> Setup {
    common::set_secrets();
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let fake = FakeLivy::start(Some(("admin", PASSWORD)), 0).await.unwrap();
    let config = AzureConfig {
        livy_url: Some(fake.url().to_string()),
        password: password.map(|var| SecretRef::new(var).unwrap()),
        retry: RetryConfig {
            jitter: false,
            ..RetryConfig::default()
        },
        blob: AzureBlobConfig {
            account: Some("etldata".into()),
            key: Some(SecretRef::new("env:FLOW_TEST_AZURE_STORAGE_KEY").unwrap()),
            container: Some("code".into()),
            endpoint: Some("http://127.0.0.1:9/etldata".into()),
            ..AzureBlobConfig::default()
        },
        ..AzureConfig::default()
    };
    let factory = config.builder().with_clock(shared).build().unwrap();
    Setup {
        clock,
        fake,
        factory,
    }
}

fn spark() -> Job {
    Job::Spark {
        application: "jobs/count.py".into(),
        main_class: None,
        conf: vec![("spark.executor.memory".into(), "4g".into())],
        secret_conf: vec![],
        args: vec!["--day".into(), "2026112800".into()],
    }
}

async fn submitted(
    s: &Setup,
    job: Job,
) -> (Arc<AzureCluster>, flow_core::JobHandle, CancellationToken) {
    common::submitted(&s.clock, &s.factory, job, "spark").await
}

async fn wait(
    s: &Setup,
    cluster: &Arc<AzureCluster>,
    handle: &flow_core::JobHandle,
    cancel: &CancellationToken,
) -> Result<(), ClusterError> {
    common::wait(&s.clock, cluster, handle, cancel).await
}

#[tokio::test]
async fn a_spark_job_is_one_batch_with_the_exact_body_and_success_succeeds_on_contract_fake() {
    let s = setup(Some("env:FLOW_TEST_AZURE_GATEWAY_PASSWORD")).await;
    let (cluster, handle, cancel) = submitted(&s, spark()).await;
    let posted = s.fake.posted();
    assert_eq!(posted.len(), 1);
    let name = handle.id("name").unwrap().to_string();
    assert!(name.starts_with("daily-count-spark-1-"), "{name}");
    assert_eq!(
        posted[0],
        json!({
            "file": "wasbs://code@etldata.blob.core.windows.net/jobs/count.py",
            "args": ["--day", "2026112800"],
            "conf": {"spark.executor.memory": "4g"},
            "name": name,
        })
    );
    let id: i64 = handle.id("id").unwrap().parse().unwrap();
    assert_eq!(cluster.status(&handle).await.unwrap(), JobStatus::Running);
    s.fake.finish(id, "success", &["done"]);
    wait(&s, &cluster, &handle, &cancel).await.unwrap();
    assert_eq!(cluster.status(&handle).await.unwrap(), JobStatus::Succeeded);
}

#[tokio::test]
async fn a_dead_batch_fails_with_the_end_of_its_log_on_contract_fake() {
    let s = setup(Some("env:FLOW_TEST_AZURE_GATEWAY_PASSWORD")).await;
    let (cluster, handle, cancel) = submitted(&s, spark()).await;
    let id: i64 = handle.id("id").unwrap().parse().unwrap();
    s.fake.finish(
        id,
        "dead",
        &[
            "Traceback (most recent call last):",
            "ValueError: no rows for 2026112800",
        ],
    );
    let e = wait(&s, &cluster, &handle, &cancel)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("is dead"), "{e}");
    assert!(e.contains("ValueError: no rows for 2026112800"), "{e}");
}

#[tokio::test]
async fn a_lost_submit_answer_is_found_by_name_and_never_sent_twice_on_contract_fake() {
    let s = setup(Some("env:FLOW_TEST_AZURE_GATEWAY_PASSWORD")).await;
    s.fake.faults().lose_answers("batches.create", 1);
    let (_cluster, handle, _) = submitted(&s, spark()).await;
    assert_eq!(
        s.fake.faults().count("batches.create"),
        1,
        "one POST /batches"
    );
    assert_eq!(s.fake.batches().len(), 1);
    assert_eq!(handle.id("id"), Some("0"));
    assert_eq!(s.fake.faults().answers("batches.create"), [503]);
}

#[tokio::test]
async fn throttling_and_unavailable_answers_are_retried_on_contract_fake() {
    let s = setup(Some("env:FLOW_TEST_AZURE_GATEWAY_PASSWORD")).await;
    s.fake.faults().throttle("batches.create", 1, 2);
    s.fake.faults().unavailable("batches.create", 1);
    let (cluster, handle, cancel) = submitted(&s, spark()).await;
    assert_eq!(s.fake.batches().len(), 1, "the 503 came before acting");
    s.fake.faults().throttle("batches.list", 2, 1);
    let id: i64 = handle.id("id").unwrap().parse().unwrap();
    s.fake.finish(id, "success", &[]);
    wait(&s, &cluster, &handle, &cancel).await.unwrap();
    // The 429 is answered on arrival; the 503 before acting, then the batch.
    assert_eq!(s.fake.faults().count("batches.create"), 3);
    assert_eq!(s.fake.faults().answers("batches.create"), [503, 201]);
}

#[tokio::test]
async fn cancelling_deletes_the_batch_and_ends_cancelled_on_contract_fake() {
    let s = setup(Some("env:FLOW_TEST_AZURE_GATEWAY_PASSWORD")).await;
    let (cluster, handle, cancel) = submitted(&s, spark()).await;
    cancel.cancel();
    let e = wait(&s, &cluster, &handle, &cancel).await.unwrap_err();
    assert!(matches!(e, ClusterError::Cancelled { .. }), "{e:?}");
    assert_eq!(s.fake.faults().count("batches.delete"), 1);
    assert_eq!(s.fake.batches()[0].state, "killed");
}

#[tokio::test]
async fn shell_is_unsupported_and_a_missing_login_is_refused_on_contract_fake() {
    let s = setup(None).await;
    let cluster = s.factory.cluster("azure-0", &context());
    let token = CancellationToken::new();
    let execution = context();
    let cx = JobContext {
        cancel: &token,
        execution: &execution,
        step: "s",
        action: "shell",
        attempt: 1,
    };
    let shell = Job::Shell {
        command: "true".into(),
        env: vec![],
    };
    assert!(matches!(
        cluster.prepare(&shell, &cx),
        Err(ClusterError::Unsupported { .. })
    ));
    let e = cluster.wait_ready().await.unwrap_err().to_string();
    assert!(e.contains("HTTP 401"), "{e}");
    assert!(!format!("{:?}", s.factory).contains(PASSWORD));
}

/// The fake's faults, for `flow_cloud::testkit`'s contracts.
struct LivyFaults<'a> {
    fake: &'a FakeLivy,
}

#[async_trait::async_trait]
impl flow_cloud::testkit::BackendFaults for LivyFaults<'_> {
    async fn break_status_requests(&self) {
        for method in ["batches.list", "batches.get"] {
            self.fake.faults().throttle(method, 1_000_000, 1);
        }
    }
    async fn heal(&self) {
        self.fake.faults().unthrottle();
    }
    async fn finish(&self, handle: &flow_core::JobHandle) {
        let id = handle.id("id").unwrap().parse().unwrap();
        self.fake.finish(id, "success", &["done"]);
    }
    async fn jobs_received(&self) -> usize {
        self.fake.batches().len()
    }
}

#[tokio::test]
async fn a_batch_whose_polling_gave_up_has_an_unknown_outcome_and_is_adopted_on_contract_fake() {
    let s = Arc::new(setup(Some("env:FLOW_TEST_AZURE_GATEWAY_PASSWORD")).await);
    let t = s.clone();
    let contract = tokio::spawn(async move {
        let cluster = t.factory.cluster("azure-0", &context());
        let owned = common::Cx::new(CancellationToken::new());
        let faults = LivyFaults { fake: &t.fake };
        flow_cloud::testkit::unknown_outcome_contract(
            &cluster,
            &spark(),
            &owned.cx("spark"),
            &faults,
        )
        .await;
    });
    common::drive(&s.clock, contract).await;
    assert_eq!(
        s.fake.faults().count("batches.create"),
        1,
        "one POST /batches"
    );
    assert!(
        s.fake.faults().count("batches.list") > 5,
        "the listings were tried"
    );
}

#[tokio::test]
async fn slots_are_jobs_per_cluster_polled_by_one_listing_and_the_gateway_is_the_shared_name_on_contract_fake(
) {
    let s = setup(Some("env:FLOW_TEST_AZURE_GATEWAY_PASSWORD")).await;
    let four = common::rebuilt(&s.factory, &s.clock, |c| {
        c.jobs_per_cluster = std::num::NonZeroUsize::new(4).unwrap()
    });
    let theirs = s.factory.cluster("azure-1", &context());
    assert_eq!(theirs.slots(), 1, "one at a time by default");
    // Four batches at once, all watched by one listing a tick (the
    // clusters of a gateway share its poller).
    let mut running = Vec::new();
    for _ in 0..4 {
        running.push(common::submitted(&s.clock, &four, spark(), "spark").await);
    }
    let cluster = running[0].0.clone();
    assert_eq!(cluster.slots(), 4);
    // Every run's cluster on this gateway has the same shared name: the
    // store then decides who uses it and who ends it.
    assert_eq!(cluster.shared_name().as_deref(), Some(s.fake.url()));
    assert_eq!(theirs.shared_name(), cluster.shared_name());
    let waits: Vec<_> = running
        .iter()
        .map(|(c, h, cancel)| common::spawn_wait(c, h, cancel))
        .collect();
    for _ in 0..10 {
        s.clock.wait_for_sleepers(1).await;
        let deadline = s.clock.next_deadline().unwrap();
        s.clock.advance(deadline.saturating_sub(s.clock.now()));
    }
    let listed = s.fake.faults().count("batches.list");
    assert_eq!(
        listed,
        cluster.poll_requests(),
        "one listing a tick covers the four"
    );
    assert!(listed >= 9, "{listed}");
    for b in s.fake.batches() {
        s.fake.finish(b.id, "success", &[]);
    }
    for w in waits {
        common::drive(&s.clock, w).await.unwrap();
    }
    assert_eq!(s.fake.faults().count("batches.get"), 0);
}

#[tokio::test]
async fn twenty_five_batches_on_one_cluster_cost_one_listing_a_tick_and_are_noticed_within_2_s_median_on_contract_fake(
) {
    let s = setup(Some("env:FLOW_TEST_AZURE_GATEWAY_PASSWORD")).await;
    let factory = common::rebuilt(&s.factory, &s.clock, |c| {
        c.jobs_per_cluster = std::num::NonZeroUsize::new(common::FIGURES_JOBS).unwrap();
        c.job_logs.enabled = false;
    });
    let mut jobs = Vec::new();
    for _ in 0..common::FIGURES_JOBS {
        jobs.push(common::submitted(&s.clock, &factory, spark(), "spark").await);
    }
    let (before, listed) = (
        s.fake.faults().total(),
        s.fake.faults().count("batches.list"),
    );
    let figures = common::notice_figures(&s.clock, &jobs, &common::figures_ends(), |i| {
        s.fake.finish(i as i64, "success", &[]);
    })
    .await;
    common::check_figures(
        "25 Livy batches on one cluster",
        &figures,
        s.fake.faults().total() - before,
        s.fake.faults().count("batches.list") - listed,
        jobs[0].0.poll_requests(),
    );
}

#[tokio::test]
async fn a_listing_starts_where_the_oldest_watched_batch_is_past_a_long_history_on_contract_fake() {
    let s = setup(Some("env:FLOW_TEST_AZURE_GATEWAY_PASSWORD")).await;
    let factory = common::rebuilt(&s.factory, &s.clock, |c| c.job_logs.enabled = false);
    // 150 finished batches of earlier runs: more than one page (100).
    for _ in 0..150 {
        common::submitted(&s.clock, &factory, spark(), "spark").await;
    }
    for b in s.fake.batches() {
        s.fake.finish(b.id, "success", &[]);
    }
    let mut jobs = Vec::new();
    for _ in 0..2 {
        jobs.push(common::submitted(&s.clock, &factory, spark(), "spark").await);
    }
    let listed = s.fake.faults().count("batches.list");
    let ends = [Duration::from_secs(30), Duration::from_secs(40)];
    common::notice_figures(&s.clock, &jobs, &ends, |i| {
        s.fake.finish(150 + i as i64, "success", &[]);
    })
    .await;
    let listings = s.fake.faults().count("batches.list") - listed;
    let ticks = jobs[0].0.poll_requests();
    assert!(ticks >= 30, "{ticks}");
    // The first tick reads the pages up to the watched batches; every
    // later one reads one page from there.
    assert_eq!(listings, ticks + 1, "one request a tick after the first");
}

/// A cluster watch a test ends: the cluster behind the gateway is deleted
/// once `deleted` is set.
struct Deletable {
    deleted: std::sync::atomic::AtomicBool,
    asked: std::sync::atomic::AtomicUsize,
    gateway: String,
}

#[async_trait::async_trait]
impl flow_cluster_azure::ClusterWatch for Deletable {
    async fn ended(&self, gateway: &str) -> Result<Option<String>, String> {
        use std::sync::atomic::Ordering;
        assert_eq!(gateway, self.gateway, "asked about the job's gateway");
        self.asked.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .deleted
            .load(Ordering::SeqCst)
            .then(|| "Deleting: the cluster is being deleted".to_string()))
    }
}

#[tokio::test]
async fn a_cluster_that_goes_away_under_a_batch_fails_it_with_the_reason_on_contract_fake() {
    use std::sync::atomic::Ordering;
    let s = setup(Some("env:FLOW_TEST_AZURE_GATEWAY_PASSWORD")).await;
    let watch = Arc::new(Deletable {
        deleted: false.into(),
        asked: 0.into(),
        gateway: s.fake.url().to_string(),
    });
    let factory = s
        .factory
        .config()
        .clone()
        .builder()
        .with_clock(Arc::new(s.clock.clone()))
        .with_cluster_watch(watch.clone())
        .build()
        .unwrap();
    let (cluster, handle, cancel) = common::submitted(&s.clock, &factory, spark(), "spark").await;
    let wait = common::spawn_wait(&cluster, &handle, &cancel);
    // Polled a few ticks with the cluster up, then it is deleted; Livy
    // still says the batch runs (it would until the gateway went).
    for _ in 0..3 {
        s.clock.wait_for_sleepers(1).await;
        let next = s.clock.next_deadline().unwrap();
        s.clock.advance(next.saturating_sub(s.clock.now()));
    }
    watch.deleted.store(true, Ordering::SeqCst);
    let e = common::drive(&s.clock, wait).await.unwrap_err();
    let ClusterError::JobFailed { message, .. } = &e else {
        panic!("a batch whose cluster went away failed: {e:?}")
    };
    assert!(
        message.contains("its cluster ended: Deleting: the cluster is being deleted"),
        "{message}"
    );
    // Noticed by the first cluster check, the 10th tick's request.
    assert_eq!(watch.asked.load(Ordering::SeqCst), 1);
    assert_eq!(cluster.poll_requests(), 10);
    assert_eq!(s.fake.batches()[0].state, "starting");
    assert!(cluster
        .end_reason()
        .is_some_and(|r| r.contains("being deleted")));
}

#[tokio::test]
async fn each_request_is_counted_on_the_meter_by_its_route_on_contract_fake() {
    let meter = flow_core::testkit::meter::RecordingMeter::installed();
    let before = meter.requests("livy", "POST /batches");
    let s = setup(Some("env:FLOW_TEST_AZURE_GATEWAY_PASSWORD")).await;
    submitted(&s, spark()).await;
    // Other tests of this binary add to the same process-wide counts.
    assert!(
        meter.requests("livy", "POST /batches") > before,
        "{:?}",
        meter.calls()
    );
}
