//! The HDInsight cluster's Pig and Hadoop-jar path against the WebHCat
//! contract fake (in process, the fake's clock and the cluster's one
//! manual clock): the exact form bodies, `SUCCEEDED`, `FAILED` with the
//! end of `stderr` from the status directory on Blob (Azurite), cancel by
//! `DELETE`, a lost submit answer found by its status directory (one job),
//! 429/503 retried, the polling figures, and what WebHCat refuses.

mod common;

use common::PASSWORD;
use contract_fakes::webhcat::{FakeWebHcat, WebHcatOptions};
use flow_cloud::{Clock, ManualClock, RetryConfig};
use flow_cluster_azure::{AzureClusterFactory, AzureConfig};
use flow_core::{Cluster, ClusterError, Job, JobStatus};
use flow_fs_azure::{AzureBlobConfig, SecretRef};
use std::sync::Arc;
use std::time::Duration;

struct Setup {
    clock: ManualClock,
    fake: FakeWebHcat,
    factory: AzureClusterFactory,
}

/// The blob settings of a filesystem that is never called.
fn unused_blob() -> AzureBlobConfig {
    AzureBlobConfig {
        account: Some("etldata".into()),
        key: Some(SecretRef::new("env:FLOW_TEST_AZURE_STORAGE_KEY").unwrap()),
        container: Some("code".into()),
        endpoint: Some("http://127.0.0.1:9/etldata".into()),
        ..AzureBlobConfig::default()
    }
}

/// The fake (its jobs end `SUCCEEDED` after `run_for`, else by hand) and
/// a factory pointed at it, sharing one manual clock.
async fn setup(run_for: Option<Duration>, blob: AzureBlobConfig) -> Setup {
    common::set_secrets();
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let fake = FakeWebHcat::start(
        WebHcatOptions {
            run_for,
            ..WebHcatOptions::new(shared.clone(), Some(("admin".into(), PASSWORD.into())))
        },
        0,
    )
    .await
    .unwrap();
    let config = AzureConfig {
        webhcat_url: Some(format!("{}/templeton/v1", fake.url())),
        password: Some(SecretRef::new("env:FLOW_TEST_AZURE_GATEWAY_PASSWORD").unwrap()),
        webhcat_user: Some("etl".into()),
        retry: RetryConfig {
            jitter: false,
            ..RetryConfig::default()
        },
        blob,
        ..AzureConfig::default()
    };
    let factory = config.builder().with_clock(shared).build().unwrap();
    Setup {
        clock,
        fake,
        factory,
    }
}

fn pig() -> Job {
    Job::Pig {
        script: "jobs/count.pig".into(),
        params: vec![("day".into(), "2026112800".into())],
        secret_params: vec![],
    }
}

fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn a_pig_job_is_one_form_post_with_the_exact_fields_and_succeeded_succeeds_on_contract_fake()
{
    let s = setup(None, unused_blob()).await;
    let (cluster, handle, cancel) = common::submitted(&s.clock, &s.factory, pig(), "pig").await;
    let jobs = s.fake.jobs();
    assert_eq!(jobs.len(), 1);
    let statusdir = handle.id("name").unwrap().to_string();
    assert!(
        statusdir.starts_with(
            "wasbs://code@etldata.blob.core.windows.net/flow/webhcat/daily-count-pig-1-"
        ),
        "{statusdir}"
    );
    assert_eq!(jobs[0].kind, "pig");
    assert_eq!(
        jobs[0].form,
        form(&[
            ("user.name", "etl"),
            ("statusdir", &statusdir),
            ("enablelog", "false"),
            (
                "file",
                "wasbs://code@etldata.blob.core.windows.net/jobs/count.pig"
            ),
            ("arg", "-param"),
            ("arg", "day=2026112800"),
        ])
    );
    assert_eq!(handle.id("id"), Some("job_1700000000000_0001"));
    assert_eq!(cluster.status(&handle).await.unwrap(), JobStatus::Running);
    s.fake
        .finish("job_1700000000000_0001", "SUCCEEDED", Some(0), None);
    common::wait(&s.clock, &cluster, &handle, &cancel)
        .await
        .unwrap();
    assert_eq!(cluster.status(&handle).await.unwrap(), JobStatus::Succeeded);
}

#[tokio::test]
async fn a_hadoop_jar_is_posted_with_its_class_and_one_without_is_refused_before_sending_on_contract_fake(
) {
    let s = setup(None, unused_blob()).await;
    let jar = Job::HadoopJar {
        jar: "jars/wordcount.jar".into(),
        main_class: Some("org.example.WordCount".into()),
        args: vec!["in/".into(), "out/".into()],
    };
    let (_cluster, handle, _) = common::submitted(&s.clock, &s.factory, jar, "hadoop").await;
    let statusdir = handle.id("name").unwrap().to_string();
    let jobs = s.fake.jobs();
    assert_eq!(jobs[0].kind, "mapreduce/jar");
    assert_eq!(
        jobs[0].form,
        form(&[
            ("user.name", "etl"),
            ("statusdir", &statusdir),
            ("enablelog", "false"),
            (
                "jar",
                "wasbs://code@etldata.blob.core.windows.net/jars/wordcount.jar"
            ),
            ("class", "org.example.WordCount"),
            ("arg", "in/"),
            ("arg", "out/"),
        ])
    );
    // WebHCat requires `class`: the cluster says so before any request.
    let cluster = s.factory.cluster("azure-0", &common::context());
    let no_class = Job::HadoopJar {
        jar: "jars/wordcount.jar".into(),
        main_class: None,
        args: vec![],
    };
    let token = tokio_util::sync::CancellationToken::new();
    let execution = common::context();
    let cx = flow_core::JobContext {
        cancel: &token,
        execution: &execution,
        step: "count",
        action: "hadoop",
        attempt: 1,
    };
    let before = s.fake.faults().total();
    let e = cluster.prepare(&no_class, &cx).unwrap_err().to_string();
    assert!(e.contains("main class"), "{e}");
    assert_eq!(s.fake.faults().total(), before, "nothing sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite: run through `cargo xtask test`"]
async fn a_failed_pig_job_fails_with_the_end_of_its_stderr_from_blob_on_contract_fake_on_azurite() {
    const EMULATOR_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    std::env::set_var("FLOW_TEST_AZURITE_KEY", EMULATOR_KEY);
    let endpoint = std::env::var("FLOW_TEST_AZURITE_ENDPOINT")
        .expect("FLOW_TEST_AZURITE_ENDPOINT: run through `cargo xtask test`, which starts Azurite");
    let container = format!("webhcat-{}", std::process::id());
    let blob = AzureBlobConfig {
        account: Some(flow_fs_azure::EMULATOR_ACCOUNT.into()),
        key: Some(SecretRef::new("env:FLOW_TEST_AZURITE_KEY").unwrap()),
        container: Some(container.clone()),
        endpoint: Some(endpoint),
        ..AzureBlobConfig::default()
    };
    let s = setup(None, blob).await;
    let fs = blob_fs(&s).await;
    fs.create_container(&container).await.unwrap();
    let (cluster, handle, cancel) = common::submitted(&s.clock, &s.factory, pig(), "pig").await;
    // The controller writes stderr into the status directory on the
    // cluster's storage, then ends.
    let statusdir = handle.id("name").unwrap().to_string();
    let scratch = tempfile::tempdir().unwrap();
    let local = scratch.path().join("stderr");
    let mut text = String::new();
    for n in 0..200 {
        text.push_str(&format!("INFO  pig: line {n} of the job's progress\n"));
    }
    text.push_str("ERROR 1066: Unable to open iterator for alias counts\n");
    std::fs::write(&local, &text).unwrap();
    cluster
        .filesystem()
        .copy_from_local(&local, &format!("{statusdir}/stderr"))
        .await
        .unwrap();
    s.fake.finish(
        "job_1700000000000_0001",
        "FAILED",
        Some(6),
        Some("Job failed as tasks failed"),
    );
    let e = common::wait(&s.clock, &cluster, &handle, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::JobFailed { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("is FAILED: Job failed as tasks failed"), "{e}");
    assert!(
        e.contains("ERROR 1066: Unable to open iterator for alias counts"),
        "{e}"
    );
    assert!(!e.contains("line 0 of"), "only the end of stderr: {e}");
}

/// The Blob filesystem of the factory's settings, for the test's own
/// setup (the container).
async fn blob_fs(s: &Setup) -> flow_fs_azure::AzureBlobFilesystem {
    s.factory.config().blob.clone().builder().build().unwrap()
}

#[tokio::test]
async fn a_lost_submit_answer_is_found_by_its_statusdir_and_never_sent_twice_on_contract_fake() {
    let s = setup(None, unused_blob()).await;
    s.fake.faults().lose_answers("pig.create", 1);
    let (_cluster, handle, _) = common::submitted(&s.clock, &s.factory, pig(), "pig").await;
    assert_eq!(s.fake.faults().count("pig.create"), 1, "one POST /pig");
    assert_eq!(s.fake.faults().answers("pig.create"), [503]);
    assert_eq!(s.fake.faults().count("jobs.list"), 1, "one listing");
    assert_eq!(s.fake.jobs().len(), 1);
    assert_eq!(handle.id("id"), Some("job_1700000000000_0001"));
}

#[tokio::test]
async fn throttling_and_unavailable_answers_are_retried_on_contract_fake() {
    let s = setup(None, unused_blob()).await;
    s.fake.faults().throttle("pig.create", 1, 2);
    s.fake.faults().unavailable("pig.create", 1);
    let (cluster, handle, cancel) = common::submitted(&s.clock, &s.factory, pig(), "pig").await;
    assert_eq!(s.fake.jobs().len(), 1, "the 503 came before acting");
    s.fake.faults().throttle("jobs.list", 2, 1);
    s.fake
        .finish("job_1700000000000_0001", "SUCCEEDED", Some(0), None);
    common::wait(&s.clock, &cluster, &handle, &cancel)
        .await
        .unwrap();
    // The 429 is answered on arrival; the 503 before acting, then the job.
    assert_eq!(s.fake.faults().count("pig.create"), 3);
    assert_eq!(s.fake.faults().answers("pig.create"), [503, 200]);
    assert_eq!(s.fake.faults().answers("jobs.list")[..1], [200]);
}

#[tokio::test]
async fn cancelling_deletes_the_job_and_ends_cancelled_on_contract_fake() {
    let s = setup(None, unused_blob()).await;
    let (cluster, handle, cancel) = common::submitted(&s.clock, &s.factory, pig(), "pig").await;
    cancel.cancel();
    let e = common::wait(&s.clock, &cluster, &handle, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::Cancelled { .. }), "{e:?}");
    assert_eq!(s.fake.faults().count("jobs.delete"), 1);
    assert_eq!(s.fake.jobs()[0].state, "KILLED");
    // Cancelling it again (a job WebHCat no longer runs) succeeds.
    let (c, h) = (cluster.clone(), handle.clone());
    common::drive(&s.clock, tokio::spawn(async move { c.cancel(&h).await }))
        .await
        .unwrap();
    assert_eq!(cluster.status(&handle).await.unwrap(), JobStatus::Cancelled);
}

#[tokio::test]
async fn a_job_is_noticed_within_the_cap_at_one_request_a_second_or_less_on_contract_fake() {
    let run_for = Duration::from_secs(60);
    let s = setup(Some(run_for), unused_blob()).await;
    let (cluster, handle, cancel) = common::submitted(&s.clock, &s.factory, pig(), "pig").await;
    let (start, before) = (s.clock.now(), s.fake.faults().total());
    common::wait(&s.clock, &cluster, &handle, &cancel)
        .await
        .unwrap();
    let waited = s.clock.now() - start;
    let requests = s.fake.faults().total() - before;
    let listings = s.fake.faults().count("jobs.list");
    println!(
        "figures: a {run_for:?} job noticed after {waited:?} with {requests} requests ({listings} listings)"
    );
    assert!(waited >= run_for, "noticed before it ended: {waited:?}");
    assert!(
        waited <= run_for + Duration::from_secs(3),
        "noticed {:?} after its end, more than the 3 s cap",
        waited - run_for
    );
    assert!(
        requests <= waited.as_secs(),
        "{requests} requests in {waited:?}"
    );
    assert_eq!(
        requests, listings,
        "every poll is one listing of all the jobs"
    );
}

#[tokio::test]
async fn an_unknown_job_is_lost_and_webhcat_refuses_what_it_refuses_on_contract_fake() {
    let s = setup(None, unused_blob()).await;
    let (cluster, handle, _) = common::submitted(&s.clock, &s.factory, pig(), "pig").await;
    let mut other = handle.clone();
    other
        .ids
        .insert("id".into(), "job_1700000000000_0099".into());
    assert!(matches!(
        cluster.status(&other).await.unwrap(),
        JobStatus::Lost { .. }
    ));
    let http = reqwest::Client::new();
    let base = format!("{}/templeton/v1", s.fake.url());
    let login = |r: reqwest::RequestBuilder| r.basic_auth("admin", Some(PASSWORD));
    // A request with the gateway login: its status and WebHCat's error.
    let ask = |r: reqwest::RequestBuilder| async move {
        let r = login(r).send().await.unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        (status, body["error"].as_str().unwrap_or("").to_string())
    };
    // No gateway login.
    let r = http
        .get(format!("{base}/jobs?user.name=etl"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // No user.name.
    let (status, error) = ask(http.get(format!("{base}/jobs"))).await;
    assert_eq!(
        (status, error.as_str()),
        (401, "No user found.  Missing user.name parameter.")
    );
    // A jar without its class; a Pig job without a script.
    let (status, error) = ask(http
        .post(format!("{base}/mapreduce/jar"))
        .form(&[("user.name", "etl"), ("jar", "x.jar")]))
    .await;
    assert_eq!((status, error.as_str()), (400, "Missing class parameter"));
    let (status, error) = ask(http.post(format!("{base}/pig")).form(&[
        ("user.name", "etl"),
        ("enablelog", "true"),
        ("file", "x.pig"),
    ]))
    .await;
    assert_eq!(
        (status, error.as_str()),
        (400, "enablelog is only applicable when statusdir is set")
    );
    // An unknown job, a malformed id.
    let (status, error) =
        ask(http.delete(format!("{base}/jobs/job_1700000000000_0099?user.name=etl"))).await;
    assert_eq!(
        (status, error.as_str()),
        (400, "Could not find job job_1700000000000_0099")
    );
    let (status, _) = ask(http.get(format!("{base}/jobs/nope?user.name=etl"))).await;
    assert_eq!(status, 400);
    // The listing: the user's jobs, details only with fields=*.
    let listed: serde_json::Value = login(http.get(format!("{base}/jobs?user.name=etl")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{"id": "job_1700000000000_0001", "detail": null}])
    );
    let others: serde_json::Value = login(http.get(format!("{base}/jobs?user.name=hive")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(others, serde_json::json!([]));
    let detail: serde_json::Value =
        login(http.get(format!("{base}/jobs?user.name=hive&showall=true&fields=*")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(detail[0]["detail"]["status"]["state"], "RUNNING");
    assert_eq!(detail[0]["detail"]["userargs"]["user.name"], "etl");
}

/// The fake's faults, for `flow_cloud::testkit`'s contracts.
struct WebHcatFaults<'a> {
    fake: &'a FakeWebHcat,
}

#[async_trait::async_trait]
impl flow_cloud::testkit::BackendFaults for WebHcatFaults<'_> {
    async fn break_status_requests(&self) {
        for method in ["jobs.list", "jobs.get"] {
            self.fake.faults().throttle(method, 1_000_000, 1);
        }
    }
    async fn heal(&self) {
        self.fake.faults().unthrottle();
    }
    async fn finish(&self, handle: &flow_core::JobHandle) {
        self.fake
            .finish(handle.id("id").unwrap(), "SUCCEEDED", Some(0), None);
    }
    async fn jobs_received(&self) -> usize {
        self.fake.jobs().len()
    }
}

#[tokio::test]
async fn a_job_whose_polling_gave_up_has_an_unknown_outcome_and_is_adopted_on_contract_fake() {
    let s = Arc::new(setup(None, unused_blob()).await);
    let t = s.clone();
    let contract = tokio::spawn(async move {
        let cluster = t.factory.cluster("azure-0", &common::context());
        let owned = common::Cx::new(tokio_util::sync::CancellationToken::new());
        let faults = WebHcatFaults { fake: &t.fake };
        flow_cloud::testkit::unknown_outcome_contract(&cluster, &pig(), &owned.cx("pig"), &faults)
            .await;
    });
    common::drive(&s.clock, contract).await;
    assert_eq!(s.fake.faults().count("pig.create"), 1, "one POST /pig");
    assert!(
        s.fake.faults().count("jobs.list") > 5,
        "the listings were tried"
    );
}

#[tokio::test]
async fn twenty_five_pig_jobs_on_one_cluster_cost_one_listing_a_tick_and_are_noticed_within_2_s_median_on_contract_fake(
) {
    let s = setup(None, unused_blob()).await;
    let factory = common::rebuilt(&s.factory, &s.clock, |c| {
        c.jobs_per_cluster = std::num::NonZeroUsize::new(common::FIGURES_JOBS).unwrap();
        c.job_logs.enabled = false;
    });
    // An older job of the cluster's history, which the listings skip.
    common::submitted(&s.clock, &factory, pig(), "pig").await;
    s.fake
        .finish("job_1700000000000_0001", "SUCCEEDED", Some(0), None);
    let mut jobs = Vec::new();
    for _ in 0..common::FIGURES_JOBS {
        jobs.push(common::submitted(&s.clock, &factory, pig(), "pig").await);
    }
    let (before, listed_before) = (s.fake.faults().total(), s.fake.faults().count("jobs.list"));
    let figures = common::notice_figures(&s.clock, &jobs, &common::figures_ends(), |i| {
        let id = format!("job_1700000000000_{:04}", i + 2);
        s.fake.finish(&id, "SUCCEEDED", Some(0), None);
    })
    .await;
    common::check_figures(
        "25 WebHCat jobs on one cluster",
        &figures,
        s.fake.faults().total() - before,
        s.fake.faults().count("jobs.list") - listed_before,
        jobs[0].0.poll_requests(),
    );
}

#[tokio::test]
async fn each_request_is_counted_on_the_meter_by_its_route_on_contract_fake() {
    let meter = flow_core::testkit::meter::RecordingMeter::installed();
    let before = meter.requests("webhcat", "POST /pig");
    let s = setup(None, unused_blob()).await;
    common::submitted(&s.clock, &s.factory, pig(), "pig").await;
    // Other tests of this binary add to the same process-wide counts.
    assert!(
        meter.requests("webhcat", "POST /pig") > before,
        "{:?}",
        meter.calls()
    );
}
