//! The HDInsight cluster's Spark path against the Livy contract fake (in
//! process, on a manual clock shared with the cluster): the exact batch
//! body, success, `dead` with its log tail, a lost submit answer found by
//! name, throttling and 503s retried, cancel, shell refused, the login.

mod common;

use common::{context, PASSWORD};
use contract_fakes::livy::FakeLivy;
use flow_cloud::{Clock, ManualClock, RetryConfig};
use flow_cluster_azure::{AzureCluster, AzureClusterFactory, AzureConfig};
use flow_core::{Cluster, ClusterError, Job, JobContext, JobStatus};
use flow_fs_azure::{AzureBlobConfig, SecretRef};
use serde_json::json;
use std::sync::Arc;
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
