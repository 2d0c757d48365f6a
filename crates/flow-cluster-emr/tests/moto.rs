//! The EMR cluster against moto (`tests/peers/moto_emr.py`: moto's
//! ThreadedMotoServer with a test layer that moves steps, implements
//! CancelSteps, injects throttling and lost answers, and counts requests).
//! Everything else is real moto: RunJobFlow, ListClusters, DescribeCluster,
//! AddJobFlowSteps, ListSteps, SetTerminationProtection, TerminateJobFlows,
//! S3. Polling figures are counted at the layer on a manual clock.
//!
//! `#[ignore]`d: `cargo xtask test` runs them when moto is up.

#[path = "../../../tests/peers/moto_emr.rs"]
mod moto_emr;

use flow_cloud::{JobLogs, ManualClock, PollConfig, RetryConfig};
use flow_cluster_emr::{
    BootstrapAction, Configuration, EmrCluster, EmrClusterBuilder, EmrClusterFactory,
    InstanceGroup, InstanceRole, Market,
};
use flow_core::{
    Cluster, ClusterError, ExecutionContext, Job, JobContext, JobHandle, JobStatus, Settings,
    Timeperiod,
};
use flow_fs_s3::S3Config;
use moto_emr::MotoEmr;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn unique(test: &str) -> String {
    let name: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    format!("t-{name}-{}-{:04x}", std::process::id(), fastrand_u16())
}

fn fastrand_u16() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        & 0xffff) as u16
}

/// A builder pointed at moto, with a bucket of its own for logs and files.
fn builder(moto: &MotoEmr, name: &str) -> EmrClusterBuilder {
    EmrClusterBuilder::new()
        .with_name(name)
        .with_endpoint(&moto.endpoint)
        .with_region("us-east-1")
        .with_release_label("emr-7.5.0")
        .with_roles("EMR_DefaultRole", "EMR_EC2_DefaultRole")
        .with_instance_group(InstanceGroup {
            role: InstanceRole::Master,
            instance_type: "m5.xlarge".into(),
            count: 1,
            market: Market::OnDemand,
            bid_price: None,
            name: None,
        })
        .with_log_uri(format!("s3://{name}/emr/"))
        .with_launch_poll(Duration::from_millis(20))
        .with_retry(RetryConfig {
            initial_delay: Duration::from_millis(10),
            ..RetryConfig::default()
        })
        .with_poll(PollConfig {
            floor: Duration::from_millis(50),
            ..PollConfig::default()
        })
        .with_job_logs(JobLogs {
            wait: Duration::from_secs(2),
            interval: Duration::from_millis(100),
            ..JobLogs::default()
        })
        .with_s3(S3Config {
            bucket: Some(name.to_string()),
            endpoint: Some(moto.endpoint.clone()),
            force_path_style: true,
            ..S3Config::default()
        })
}

async fn create_bucket(factory: &EmrClusterFactory) {
    let s3 = factory.s3().await.unwrap();
    let bucket = s3.config().bucket.clone().unwrap();
    s3.client()
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
}

/// A cluster that is up.
async fn launched(factory: &EmrClusterFactory, name: &str) -> EmrCluster {
    let cluster = factory.cluster(name);
    cluster.provision().await.unwrap();
    cluster.wait_ready().await.unwrap();
    cluster
}

fn execution() -> ExecutionContext {
    let timeperiod: Timeperiod = "2026112800".parse().unwrap();
    ExecutionContext {
        flow_name: "emr_test".into(),
        timeperiod,
        start_timeperiod: timeperiod,
        end_timeperiod: timeperiod,
        settings: Arc::new(Settings::new().with_secret("token", "s3cr3t-value")),
        number_of_clusters: 1,
    }
}

fn cx<'a>(
    execution: &'a ExecutionContext,
    cancel: &'a CancellationToken,
    step: &'a str,
) -> JobContext<'a> {
    JobContext {
        cancel,
        execution,
        step,
        action: "main",
        attempt: 1,
    }
}

fn shell(command: &str) -> Job {
    Job::Shell {
        command: command.into(),
        env: vec![],
    }
}

/// Prepares and submits `job`, returning the completed handle.
async fn submit(cluster: &EmrCluster, job: &Job, step: &str) -> JobHandle {
    let execution = execution();
    let cancel = CancellationToken::new();
    let cx = cx(&execution, &cancel, step);
    let prepared = cluster.prepare(job, &cx).unwrap();
    cluster.submit(&prepared, job, &cx).await.unwrap()
}

/// A wait for each handle, each in its own task (as the engine's workers
/// wait), all on one cluster and so on one poller.
fn spawn_waits(
    cluster: &Arc<EmrCluster>,
    handles: &[JobHandle],
    step: &'static str,
) -> Vec<tokio::task::JoinHandle<Result<(), ClusterError>>> {
    handles
        .iter()
        .map(|handle| {
            let cluster = cluster.clone();
            let handle = handle.clone();
            tokio::spawn(async move {
                let execution = execution();
                let cancel = CancellationToken::new();
                cluster.wait(&handle, &cx(&execution, &cancel, step)).await
            })
        })
        .collect()
}

fn ids(handle: &JobHandle) -> (String, String) {
    (
        handle.id("cluster_id").unwrap().to_string(),
        handle.id("step_id").unwrap().to_string(),
    )
}

/// Captures the tracing events of the current thread (the test's
/// current-thread runtime), as the engine routes them to the step log.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn launch_new_with_the_settings_and_wait_for_waiting_on_emr_moto() {
    let moto = MotoEmr::from_env();
    let name = unique("launch");
    let factory = builder(&moto, &name)
        .with_applications(["Spark", "Pig"])
        .with_tag("team", "data")
        .with_bootstrap_action(BootstrapAction {
            name: "deps".into(),
            path: "s3://b/deps.sh".into(),
            args: vec!["-x".into()],
        })
        .with_configuration(Configuration {
            classification: "spark-defaults".into(),
            properties: BTreeMap::from([("spark.executor.memory".into(), "4g".into())]),
            configurations: vec![],
        })
        .with_instance_group(InstanceGroup {
            role: InstanceRole::Core,
            instance_type: "m5.2xlarge".into(),
            count: 2,
            market: Market::Spot,
            bid_price: Some("0.25".into()),
            name: Some("workers".into()),
        })
        .with_roles("EMR_TestRole", "EMR_EC2_TestRole")
        .with_ec2_key_name("etl-key")
        .with_ec2_subnet_id("subnet-0abc1234")
        .with_termination_protected(true)
        .build()
        .unwrap();
    let cluster = factory.cluster("emr-0");
    let handle = cluster.provision().await.unwrap();
    assert!(!handle.reused);
    assert_eq!(handle.details["emr_name"], format!("{name}-0"));
    let id = handle.backend_id.clone();

    // What moto holds is what RunJobFlow asked for.
    let emr = factory.emr_client().await.unwrap();
    let described = emr.describe_cluster().cluster_id(&id).send().await.unwrap();
    let c = described.cluster().unwrap();
    assert_eq!(c.name(), Some(format!("{name}-0").as_str()));
    assert_eq!(c.release_label(), Some("emr-7.5.0"));
    assert_eq!(c.log_uri(), Some(format!("s3://{name}/emr/").as_str()));
    assert_eq!(
        c.auto_terminate(),
        Some(false),
        "KeepJobFlowAliveWhenNoSteps"
    );
    let apps: Vec<_> = c.applications().iter().filter_map(|a| a.name()).collect();
    assert_eq!(apps, ["Spark", "Pig"]);
    let tags: Vec<_> = c
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert!(tags.contains(&("team", "data")), "{tags:?}");
    assert!(tags.iter().any(|(k, _)| *k == "flow-launch"), "{tags:?}");
    assert_eq!(c.termination_protected(), Some(true));
    assert_eq!(c.service_role(), Some("EMR_TestRole"));
    let ec2 = c.ec2_instance_attributes().expect("Ec2InstanceAttributes");
    assert_eq!(ec2.ec2_key_name(), Some("etl-key"));
    assert_eq!(ec2.ec2_subnet_id(), Some("subnet-0abc1234"));
    assert_eq!(ec2.iam_instance_profile(), Some("EMR_EC2_TestRole"));
    let configurations: Vec<_> = c
        .configurations()
        .iter()
        .map(|c| (c.classification().unwrap(), c.properties().cloned()))
        .collect();
    assert_eq!(
        configurations,
        [(
            "spark-defaults",
            Some(std::collections::HashMap::from([(
                "spark.executor.memory".to_string(),
                "4g".to_string()
            )]))
        )]
    );
    let groups = emr
        .list_instance_groups()
        .cluster_id(&id)
        .send()
        .await
        .unwrap();
    let mut groups: Vec<_> = groups
        .instance_groups()
        .iter()
        .map(|g| {
            (
                g.instance_group_type().unwrap().as_str().to_string(),
                g.instance_type().unwrap().to_string(),
                g.requested_instance_count().unwrap(),
                g.market().unwrap().as_str().to_string(),
                g.bid_price().map(str::to_string),
            )
        })
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [
            (
                "CORE".into(),
                "m5.2xlarge".into(),
                2,
                "SPOT".into(),
                Some("0.25".into())
            ),
            (
                "MASTER".into(),
                "m5.xlarge".into(),
                1,
                "ON_DEMAND".into(),
                None
            ),
        ]
    );
    let bootstrap = emr
        .list_bootstrap_actions()
        .cluster_id(&id)
        .send()
        .await
        .unwrap();
    let bootstrap: Vec<_> = bootstrap
        .bootstrap_actions()
        .iter()
        .map(|a| {
            (
                a.name().unwrap(),
                a.script_path().unwrap(),
                a.args().to_vec(),
            )
        })
        .collect();
    assert_eq!(
        bootstrap,
        [("deps", "s3://b/deps.sh", vec!["-x".to_string()])]
    );

    // moto is WAITING at once: put it back to STARTING and walk it up.
    moto.set_cluster(&id, "STARTING", "", "");
    let before = moto.count(&id, "DescribeCluster");
    let waiting = tokio::spawn(async move { cluster.wait_ready().await.map(|()| cluster) });
    for state in ["BOOTSTRAPPING", "WAITING"] {
        let seen = moto.count(&id, "DescribeCluster");
        while moto.count(&id, "DescribeCluster") < seen + 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!waiting.is_finished(), "ready before {state}");
        moto.set_cluster(&id, state, "", "");
    }
    let cluster = waiting.await.unwrap().unwrap();
    assert!(moto.count(&id, "DescribeCluster") >= before + 4);
    cluster.terminate().await.unwrap();
}

#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn reuse_by_name_and_distinct_names_for_n_clusters_on_emr_moto() {
    let moto = MotoEmr::from_env();
    let name = unique("reuse");
    let first = builder(&moto, &name).build().unwrap();
    let clusters: Vec<EmrCluster> = (0..3).map(|i| first.cluster(&format!("emr-{i}"))).collect();
    let handles = futures_join(clusters.iter().map(|c| c.provision())).await;
    let mut ids: Vec<String> = handles
        .iter()
        .map(|h| h.as_ref().unwrap().backend_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three clusters, three EMR clusters");
    let mut names: Vec<String> = moto
        .clusters_named(&name)
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, [0, 1, 2].map(|i| format!("{name}-{i}")));

    // Another run with the same name reuses NAME-1 and leaves it up.
    let second = builder(&moto, &name).build().unwrap();
    let again = second.cluster("emr-1");
    let handle = again.provision().await.unwrap();
    assert!(handle.reused);
    assert_eq!(Some(handle.backend_id.clone()), clusters[1].cluster_id());
    again.wait_ready().await.unwrap();
    again.terminate().await.unwrap();
    let state = |id: &str| {
        moto.clusters().into_iter().find(|c| c["id"] == id).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        state(&handle.backend_id),
        "WAITING",
        "a reused cluster stays up"
    );
    // Reuse can be turned off: a fourth cluster of that name is launched.
    let fresh = builder(&moto, &name)
        .with_reuse(false)
        .build()
        .unwrap()
        .cluster("emr-1");
    assert!(!fresh.provision().await.unwrap().reused);
    fresh.terminate().await.unwrap();
    for c in &clusters {
        c.terminate().await.unwrap();
        assert_eq!(state(&c.cluster_id().unwrap()), "TERMINATED");
    }
}

async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let handles: Vec<_> = futures.collect();
    for f in handles {
        out.push(f.await);
    }
    out
}

#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn a_cluster_that_dies_while_launching_fails_with_the_reason_on_emr_moto() {
    let moto = MotoEmr::from_env();
    let factory = builder(&moto, &unique("dies")).build().unwrap();
    let cluster = factory.cluster("emr-0");
    let id = cluster.provision().await.unwrap().backend_id;
    moto.set_cluster(
        &id,
        "TERMINATED_WITH_ERRORS",
        "BOOTSTRAP_FAILURE",
        "bootstrap action 1 returned a non-zero return code",
    );
    match cluster.wait_ready().await {
        Err(ClusterError::Launch {
            message, transient, ..
        }) => {
            assert!(!transient);
            assert!(message.contains("TERMINATED_WITH_ERRORS"), "{message}");
            assert!(
                message.contains(
                    "BOOTSTRAP_FAILURE: bootstrap action 1 returned a non-zero return code"
                ),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Terminating a dead cluster is a no-op, not an error.
    cluster.terminate().await.unwrap();
}

#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn the_hadoop_jar_step_of_each_kind_on_emr_moto() {
    let moto = MotoEmr::from_env();
    let factory = builder(&moto, &unique("args")).build().unwrap();
    let cluster = launched(&factory, "emr-0").await;
    let jobs = [
        shell("echo {x} > /tmp/out"),
        Job::Spark {
            application: "s3://b/app.py".into(),
            main_class: Some("org.Main".into()),
            conf: vec![("spark.a".into(), "1".into())],
            secret_conf: vec![],
            args: vec!["--day".into(), "2026112800".into()],
        },
        Job::Pig {
            script: "s3://b/s.pig".into(),
            params: vec![("IN".into(), "s3://b/in".into())],
            secret_params: vec![],
        },
        Job::HadoopJar {
            jar: "s3://b/wc.jar".into(),
            main_class: Some("WordCount".into()),
            args: vec!["in".into(), "out".into()],
        },
    ];
    let mut cluster_id = String::new();
    for job in &jobs {
        cluster_id = ids(&submit(&cluster, job, "args").await).0;
    }
    let steps = moto.steps(&cluster_id);
    let seen: Vec<(String, Option<String>, Vec<String>)> = steps
        .iter()
        .map(|s| {
            assert_eq!(s["action_on_failure"], "CONTINUE");
            assert!(s["name"]
                .as_str()
                .unwrap()
                .starts_with("emr_test/2026112800/args/main/a1/"));
            (
                s["jar"].as_str().unwrap().to_string(),
                s["main_class"].as_str().map(str::to_string),
                s["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    let strings = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        seen,
        [
            (
                "command-runner.jar".into(),
                None,
                strings(&["bash", "-c", "echo {x} > /tmp/out"])
            ),
            (
                "command-runner.jar".into(),
                None,
                strings(&[
                    "spark-submit",
                    "--deploy-mode",
                    "cluster",
                    "--class",
                    "org.Main",
                    "--conf",
                    "spark.a=1",
                    "s3://b/app.py",
                    "--day",
                    "2026112800"
                ])
            ),
            (
                "command-runner.jar".into(),
                None,
                strings(&[
                    "pig-script",
                    "--run-pig-script",
                    "--args",
                    "-f",
                    "s3://b/s.pig",
                    "-p",
                    "IN=s3://b/in"
                ])
            ),
            (
                "s3://b/wc.jar".into(),
                Some("WordCount".into()),
                strings(&["in", "out"])
            ),
        ]
    );
    cluster.terminate().await.unwrap();
}

#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn completed_failed_with_details_and_log_tails_and_cancelled_steps_on_emr_moto() {
    let moto = MotoEmr::from_env();
    let name = unique("outcomes");
    let factory = builder(&moto, &name).build().unwrap();
    create_bucket(&factory).await;
    let cluster = Arc::new(launched(&factory, "emr-0").await);
    let execution = execution();
    let cancel = CancellationToken::new();

    // COMPLETED
    let handle = submit(&cluster, &shell("true"), "ok").await;
    let (cid, sid) = ids(&handle);
    assert_eq!(cluster.status(&handle).await.unwrap(), JobStatus::Running);
    moto.set_step(&cid, &sid, "COMPLETED");
    cluster
        .wait(&handle, &cx(&execution, &cancel, "ok"))
        .await
        .unwrap();
    assert_eq!(cluster.status(&handle).await.unwrap(), JobStatus::Succeeded);

    // FAILED, with EMR's details and the logs it uploaded; the tails go to
    // the step log and into the error.
    let captured = Captured::default();
    let _guard = captured.install();
    let handle = submit(&cluster, &shell("false"), "bad").await;
    let (cid, sid) = ids(&handle);
    let stderr: String = (0..2000)
        .map(|i| format!("stderr line {i}\n"))
        .collect::<String>()
        + "Exception in thread \"main\" java.lang.RuntimeException: boom\n";
    moto.fail_step(
        &cid,
        &sid,
        json!({"reason": "Unknown Error.", "message": "Step failed with exitCode 1", "log_file": format!("s3://{name}/emr/{cid}/steps/{sid}/stderr.gz")}),
        json!({"stderr": stderr, "stdout": "some output\n", "controller": "INFO exitCode 1\n"}),
    );
    let e = cluster
        .wait(&handle, &cx(&execution, &cancel, "bad"))
        .await
        .unwrap_err();
    let ClusterError::JobFailed { message, job, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*job, "shell");
    assert!(
        message.contains(&format!(
            "step {sid} FAILED: Unknown Error.: Step failed with exitCode 1"
        )),
        "{message}"
    );
    assert!(
        message.contains("java.lang.RuntimeException: boom"),
        "{message}"
    );
    assert!(
        message.contains("--- controller (last lines) ---\nINFO exitCode 1"),
        "{message}"
    );
    assert!(
        message.len() < 8 * 1024,
        "the error carries a bounded excerpt: {} bytes",
        message.len()
    );
    let log = captured.text();
    assert!(log.contains("stderr: Exception in thread"), "{log}");
    assert!(log.contains("stdout: some output"), "{log}");
    assert!(
        !log.contains("stderr line 0\n"),
        "the step log gets a bounded tail"
    );
    assert!(
        log.contains(&format!(
            "its logs will be under s3://{name}/emr/{cid}/steps/"
        )),
        "{log}"
    );
    assert!(
        matches!(cluster.status(&handle).await.unwrap(), JobStatus::Failed { message } if message.contains("Unknown Error."))
    );

    // CANCELLED (by someone else) fails the job.
    let handle = submit(&cluster, &shell("sleep 1000"), "gone").await;
    let (cid, sid) = ids(&handle);
    moto.set_step(&cid, &sid, "CANCELLED");
    let e = cluster
        .wait(&handle, &cx(&execution, &cancel, "gone"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClusterError::JobFailed { message, .. } if message.contains("CANCELLED")),
        "{e:?}"
    );
    assert_eq!(cluster.status(&handle).await.unwrap(), JobStatus::Cancelled);

    // With the logs turned off, no S3 request is made for them.
    let quiet = builder(&moto, &name)
        .with_reuse(true)
        .with_job_logs(JobLogs {
            enabled: false,
            ..JobLogs::default()
        })
        .build()
        .unwrap();
    let quiet_cluster = quiet.cluster("emr-0");
    quiet_cluster.provision().await.unwrap();
    let handle = submit(&quiet_cluster, &shell("false"), "quiet").await;
    let (cid, sid) = ids(&handle);
    moto.fail_step(
        &cid,
        &sid,
        json!({"reason": "R"}),
        json!({"stderr": "hidden\n"}),
    );
    let e = quiet_cluster
        .wait(&handle, &cx(&execution, &cancel, "quiet"))
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("hidden"), "{e}");
    cluster.terminate().await.unwrap();
}

#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn cancelling_a_wait_cancels_the_step_on_emr_moto() {
    let moto = MotoEmr::from_env();
    let factory = builder(&moto, &unique("cancel")).build().unwrap();
    let cluster = Arc::new(launched(&factory, "emr-0").await);
    let handle = submit(&cluster, &shell("sleep 1000"), "long").await;
    let (cid, sid) = ids(&handle);
    let cancel = CancellationToken::new();
    let waiting = {
        let cluster = cluster.clone();
        let handle = handle.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let execution = execution();
            cluster
                .wait(&handle, &cx(&execution, &cancel, "long"))
                .await
        })
    };
    while moto.count(&cid, "ListSteps") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let e = waiting.await.unwrap().unwrap_err();
    assert!(matches!(e, ClusterError::Cancelled { .. }), "{e:?}");
    assert_eq!(moto.count(&cid, "CancelSteps"), 1);
    let step = moto
        .steps(&cid)
        .into_iter()
        .find(|s| s["id"] == sid.as_str())
        .unwrap();
    assert_eq!(
        step["state"], "CANCELLED",
        "cancel waits for the step to leave RUNNING"
    );
    // Cancelling again (a finished step) is fine.
    cluster.cancel(&handle).await.unwrap();
    cluster.terminate().await.unwrap();
}

#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn terminate_lifts_termination_protection_on_emr_moto() {
    let moto = MotoEmr::from_env();
    let factory = builder(&moto, &unique("protected"))
        .with_termination_protected(true)
        .build()
        .unwrap();
    let cluster = launched(&factory, "emr-0").await;
    let id = cluster.cluster_id().unwrap();
    let emr = factory.emr_client().await.unwrap();
    let described = emr.describe_cluster().cluster_id(&id).send().await.unwrap();
    assert_eq!(
        described.cluster().unwrap().termination_protected(),
        Some(true)
    );
    // moto refuses TerminateJobFlows on a protected cluster: lifting the
    // protection first is what makes this pass.
    cluster.terminate().await.unwrap();
    let c = moto
        .clusters()
        .into_iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap();
    assert_eq!(c["state"], "TERMINATED");
    assert_eq!(moto.count(&id, "SetTerminationProtection"), 1);
    assert_eq!(moto.count(&id, "TerminateJobFlows"), 1);
    // Adopting it now says it is gone; a second terminate does nothing.
    let later = factory.cluster("emr-0");
    let handle = flow_core::ClusterHandle {
        kind: "emr".into(),
        name: "emr-0".into(),
        backend_id: id.clone(),
        reused: false,
        details: BTreeMap::new(),
    };
    assert!(!later.adopt(&handle).await.unwrap());
    cluster.terminate().await.unwrap();
    assert_eq!(moto.count(&id, "TerminateJobFlows"), 1);
}

#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn throttling_is_retried_and_a_step_is_never_added_twice_on_emr_moto() {
    let moto = MotoEmr::from_env();
    let factory = builder(&moto, &unique("throttle")).build().unwrap();
    let cluster = launched(&factory, "emr-0").await;
    let cid = cluster.cluster_id().unwrap();
    let handle = submit(&cluster, &shell("true"), "first").await;

    // Throttled ListSteps: the SDK retries with backoff.
    moto.throttle("ListSteps", 2, Some(&cid));
    let before = moto.count(&cid, "ListSteps");
    assert_eq!(cluster.status(&handle).await.unwrap(), JobStatus::Running);
    assert_eq!(moto.count(&cid, "ListSteps"), before + 3);

    // A throttled AddJobFlowSteps: flow checks by name (nothing), then adds.
    moto.throttle("AddJobFlowSteps", 1, Some(&cid));
    let adds = moto.count(&cid, "AddJobFlowSteps");
    submit(&cluster, &shell("true"), "second").await;
    assert_eq!(moto.count(&cid, "AddJobFlowSteps"), adds + 2);
    assert_eq!(moto.steps(&cid).len(), 2);

    // An AddJobFlowSteps that took effect but whose answer was lost: the
    // step is found by name, not added again.
    moto.lose_answer("AddJobFlowSteps", 1, Some(&cid));
    let adds = moto.count(&cid, "AddJobFlowSteps");
    let handle = submit(&cluster, &shell("true"), "third").await;
    assert_eq!(moto.count(&cid, "AddJobFlowSteps"), adds + 1);
    let steps = moto.steps(&cid);
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[2]["id"], handle.id("step_id").unwrap());
    cluster.terminate().await.unwrap();
}

#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn prepare_status_not_submitted_and_a_lost_submit_found_by_name_on_emr_moto() {
    let moto = MotoEmr::from_env();
    let factory = builder(&moto, &unique("byname")).build().unwrap();
    let cluster = launched(&factory, "emr-0").await;
    let cid = cluster.cluster_id().unwrap();
    let execution = execution();
    let cancel = CancellationToken::new();
    let job = shell("true");
    let cx = cx(&execution, &cancel, "byname");
    let prepared = cluster.prepare(&job, &cx).unwrap();
    assert_eq!(prepared.id("cluster_id"), Some(cid.as_str()));
    assert!(prepared.id("step_id").is_none());
    assert_eq!(
        cluster.status(&prepared).await.unwrap(),
        JobStatus::NotSubmitted
    );
    assert_eq!(
        moto.count(&cid, "AddJobFlowSteps"),
        0,
        "prepare has no side effect"
    );
    let other = cluster.prepare(&job, &cx).unwrap();
    assert_ne!(
        other.id("step_name"),
        prepared.id("step_name"),
        "names are unique"
    );

    // The engine dies after AddJobFlowSteps, before storing the step id:
    // the next engine has only the prepared handle.
    let submitted = cluster.submit(&prepared, &job, &cx).await.unwrap();
    let later = builder(&moto, "unused-name")
        .build()
        .unwrap()
        .cluster("emr-0");
    assert_eq!(later.status(&prepared).await.unwrap(), JobStatus::Running);
    let (_, sid) = ids(&submitted);
    moto.set_step(&cid, &sid, "COMPLETED");
    later.wait(&prepared, &cx).await.unwrap();
    assert_eq!(later.status(&prepared).await.unwrap(), JobStatus::Succeeded);
    assert_eq!(moto.count(&cid, "AddJobFlowSteps"), 1);
    assert_eq!(later.status(&other).await.unwrap(), JobStatus::NotSubmitted);
    // Cancelling a job that was never submitted does nothing.
    later.cancel(&other).await.unwrap();
    assert_eq!(moto.count(&cid, "CancelSteps"), 0);
    cluster.terminate().await.unwrap();
}

#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn polling_costs_one_list_steps_per_tick_for_all_steps_on_emr_moto() {
    let moto = MotoEmr::from_env();
    let clock = ManualClock::new();
    let factory = builder(&moto, &unique("budget"))
        .with_clock(Arc::new(clock.clone()))
        .with_poll(PollConfig {
            floor: Duration::from_secs(1),
            backoff_after: Duration::from_secs(60),
            factor: 1.5,
            cap: Duration::from_secs(5),
            ..PollConfig::default()
        })
        .build()
        .unwrap();
    let cluster = Arc::new(factory.cluster("emr-0"));
    cluster.provision().await.unwrap();
    // moto is WAITING at once, so wait_ready makes no sleep on the clock.
    cluster.wait_ready().await.unwrap();
    let cid = cluster.cluster_id().unwrap();
    let mut handles = Vec::new();
    for i in 0..3 {
        handles.push(submit(&cluster, &shell("true"), &format!("s{i}")).await);
    }
    let mut waits = spawn_waits(&cluster, &handles, "poll");
    clock.wait_for_sleepers(1).await;
    // Every request of the polling: ListSteps and, every 10th tick,
    // DescribeCluster (to notice the cluster ending under them; instead of
    // the steps while they are polled at the floor, in addition once they
    // back off).
    let requests = || moto.count(&cid, "ListSteps") + moto.count(&cid, "DescribeCluster");
    let base = requests();
    let tick = |seconds: u64| {
        let clock = clock.clone();
        async move {
            for _ in 0..seconds {
                clock.advance(Duration::from_secs(1));
                clock.wait_for_sleepers(1).await;
            }
        }
    };
    // 10 s with three steps running: one request per second, not three.
    tick(10).await;
    assert_eq!(requests() - base, 10);
    assert_eq!(factory.poll_requests(), 10);

    // A finished step is noticed at the next tick (1 s).
    let (_, first) = ids(&handles[0]);
    moto.set_step(&cid, &first, "COMPLETED");
    clock.advance(Duration::from_secs(1));
    let first_wait = waits.remove(0);
    tokio::time::timeout(Duration::from_secs(30), first_wait)
        .await
        .expect("the first wait ended after one tick")
        .unwrap()
        .unwrap();
    clock.wait_for_sleepers(1).await;
    assert_eq!(requests() - base, 11);

    // Long steps back off to the cap: from 60 s to 180 s, at most one
    // ListSteps per 5 s once grown (plus the growing ticks), and a
    // DescribeCluster every tenth tick on top.
    tick(49).await;
    let at_60 = requests();
    let checks_at_60 = moto.count(&cid, "DescribeCluster");
    tick(120).await;
    let grown = requests() - at_60;
    let checks = moto.count(&cid, "DescribeCluster") - checks_at_60;
    assert!(
        (24..=32).contains(&grown) && (2..=3).contains(&checks),
        "{grown} requests ({checks} DescribeCluster) in 120 s of long steps"
    );
    // Every tick from now on ends in the same place: the steps end just
    // after a ListSteps, and the next ListSteps notices them within the cap
    // (5 s), also when a tick in between asks about the cluster.
    for _ in 0..12 {
        let list_steps = moto.count(&cid, "ListSteps");
        let mut waited = 0;
        while moto.count(&cid, "ListSteps") == list_steps {
            clock.advance(Duration::from_secs(1));
            clock.wait_for_sleepers(1).await;
            waited += 1;
            assert!(waited <= 5, "no ListSteps for {waited} s at a 5 s cap");
        }
    }
    let (_, second) = ids(&handles[1]);
    let (_, third) = ids(&handles[2]);
    moto.set_step(&cid, &second, "COMPLETED");
    moto.set_step(&cid, &third, "COMPLETED");
    // At the cap, the next ListSteps is at most 5 s away; after it nothing
    // is watched and the poller stops.
    let before = moto.count(&cid, "ListSteps");
    let mut waited = 0;
    while moto.count(&cid, "ListSteps") == before {
        assert!(waited < 5, "no ListSteps within the 5 s cap");
        clock.advance(Duration::from_secs(1));
        waited += 1;
        // The tick's request is made once the poller sleeps again or ends.
        for _ in 0..3000 {
            if clock.sleeping() > 0 || moto.count(&cid, "ListSteps") > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for wait in waits {
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("noticed at the next ListSteps")
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        moto.count(&cid, "ListSteps"),
        before + 1,
        "one request for both steps"
    );
    cluster.terminate().await.unwrap();
}

/// EMR filters `ListSteps` by at most ten step ids (the layer refuses more
/// with a ValidationException, as EMR does): 25 steps watched on one cluster
/// cost three `ListSteps` a tick, and every one of them is noticed.
#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn twenty_five_steps_on_one_cluster_cost_three_list_steps_a_tick_on_emr_moto() {
    let moto = MotoEmr::from_env();
    let clock = ManualClock::new();
    let factory = builder(&moto, &unique("paging"))
        .with_clock(Arc::new(clock.clone()))
        .with_poll(PollConfig {
            floor: Duration::from_secs(1),
            ..PollConfig::default()
        })
        .build()
        .unwrap();
    let cluster = Arc::new(factory.cluster("emr-0"));
    cluster.provision().await.unwrap();
    cluster.wait_ready().await.unwrap();
    let cid = cluster.cluster_id().unwrap();
    let mut handles = Vec::new();
    for i in 0..25 {
        handles.push(submit(&cluster, &shell("true"), &format!("p{i}")).await);
    }
    let waits = spawn_waits(&cluster, &handles, "paging");
    clock.wait_for_sleepers(1).await;
    let base = moto.count(&cid, "ListSteps");
    for _ in 0..4 {
        clock.advance(Duration::from_secs(1));
        clock.wait_for_sleepers(1).await;
    }
    assert_eq!(
        moto.count(&cid, "ListSteps") - base,
        12,
        "3 a tick for 25 steps"
    );
    for handle in &handles {
        let (_, step) = ids(handle);
        moto.set_step(&cid, &step, "COMPLETED");
    }
    clock.advance(Duration::from_secs(1));
    for wait in waits {
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("every wait ends after the tick")
            .unwrap()
            .unwrap();
    }
    cluster.terminate().await.unwrap();
}

/// The layer refuses and moves steps as EMR does, so a test cannot pass by
/// the emulator's leniency: more than ten ids per `ListSteps` are refused;
/// `SEND_INTERRUPT` leaves a step that ignores SIGTERM running while
/// `TERMINATE_PROCESS` ends it; the steps of a cluster that ends are
/// `CANCELLED` (pending) or `INTERRUPTED` (running); unknown states are not
/// settable.
#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn the_layer_is_as_strict_as_emr_on_emr_moto() {
    use flow_cluster_emr::aws_sdk_emr::types::{StepCancellationOption, StepState};
    let moto = MotoEmr::from_env();
    let factory = builder(&moto, &unique("strict")).build().unwrap();
    let cluster = launched(&factory, "emr-0").await;
    let cid = cluster.cluster_id().unwrap();
    let emr = factory.emr_client().await.unwrap();
    let mut steps = Vec::new();
    for i in 0..11 {
        let (_, id) = ids(&submit(&cluster, &shell("true"), &format!("x{i}")).await);
        steps.push(id);
    }
    let e = emr
        .list_steps()
        .cluster_id(&cid)
        .set_step_ids(Some(steps.clone()))
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{e:?}").contains("ValidationException"),
        "eleven ids: {e:?}"
    );
    let state = |id: &str| {
        moto.steps(&cid)
            .into_iter()
            .find(|s| s["id"] == id)
            .unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The first step runs; it ignores SIGTERM.
    let running = &steps[0];
    assert_eq!(state(running), "RUNNING");
    moto.ignore_interrupt(&cid, running);
    emr.cancel_steps()
        .cluster_id(&cid)
        .step_ids(running)
        .step_cancellation_option(StepCancellationOption::SendInterrupt)
        .send()
        .await
        .unwrap();
    assert_eq!(state(running), "RUNNING", "SIGTERM was ignored");
    emr.cancel_steps()
        .cluster_id(&cid)
        .step_ids(running)
        .step_cancellation_option(StepCancellationOption::TerminateProcess)
        .send()
        .await
        .unwrap();
    assert_eq!(state(running), "CANCEL_PENDING");
    // Unknown states are refused by the control endpoint.
    let refused = moto.try_set_step(&cid, &steps[1], "DONE");
    assert!(
        refused.is_err_and(|e| e.contains("400")),
        "DONE is no EMR state"
    );
    // The cluster ends: its steps end with it.
    moto.set_step(&cid, &steps[1], "RUNNING");
    moto.set_cluster(
        &cid,
        "TERMINATED_WITH_ERRORS",
        "INTERNAL_ERROR",
        "lost its master",
    );
    assert_eq!(state(&steps[1]), "INTERRUPTED");
    assert_eq!(state(&steps[2]), "CANCELLED");
    let listed = emr
        .list_steps()
        .cluster_id(&cid)
        .set_step_ids(Some(steps[1..3].to_vec()))
        .send()
        .await
        .unwrap();
    let states: Vec<_> = listed
        .steps()
        .iter()
        .filter_map(|s| s.status().and_then(|st| st.state()).cloned())
        .collect();
    assert!(states.contains(&StepState::Interrupted), "{states:?}");
    assert!(states.contains(&StepState::Cancelled), "{states:?}");
}

#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn a_refused_terminate_is_returned_not_swallowed_on_emr_moto() {
    let moto = MotoEmr::from_env();
    let factory = builder(&moto, &unique("refused"))
        .with_retry(RetryConfig::never())
        .build()
        .unwrap();
    let cluster = launched(&factory, "emr-0").await;
    let id = cluster.cluster_id().unwrap();
    moto.fail(
        "TerminateJobFlows",
        1,
        Some(&id),
        "AccessDeniedException",
        "not authorized to perform elasticmapreduce:TerminateJobFlows (flow test)",
    );
    let e = cluster.terminate().await.unwrap_err();
    let ClusterError::Terminate {
        cluster: name,
        message,
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(name, "emr-0");
    assert!(
        message.contains(&format!("TerminateJobFlows {id}")),
        "{message}"
    );
    assert!(message.contains("AccessDeniedException"), "{message}");
    assert!(message.contains("not authorized"), "{message}");
    assert_eq!(moto.count(&id, "TerminateJobFlows"), 1);
    let state = |id: &str| {
        moto.clusters().into_iter().find(|c| c["id"] == id).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state(&id), "WAITING", "the refused request had no effect");
    // Once EMR accepts it, the same cluster is terminated.
    cluster.terminate().await.unwrap();
    assert_eq!(state(&id), "TERMINATED");
}

/// The moto layer's faults, for `flow_cloud::testkit`'s contracts.
struct MotoFaults {
    moto: MotoEmr,
    cluster_id: String,
}

#[async_trait::async_trait]
impl flow_cloud::testkit::BackendFaults for MotoFaults {
    async fn break_status_requests(&self) {
        self.moto
            .throttle("ListSteps", 1_000_000, Some(&self.cluster_id));
    }
    async fn heal(&self) {
        self.moto.heal(Some(&self.cluster_id));
    }
    async fn finish(&self, handle: &JobHandle) {
        let step = handle.id("step_id").unwrap();
        self.moto.set_step(&self.cluster_id, step, "COMPLETED");
    }
    async fn jobs_received(&self) -> usize {
        self.moto.steps(&self.cluster_id).len()
    }
}

#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn a_step_whose_polling_gave_up_has_an_unknown_outcome_and_is_adopted_on_emr_moto() {
    let moto = MotoEmr::from_env();
    let factory = builder(&moto, &unique("unknown")).build().unwrap();
    let cluster = launched(&factory, "emr-0").await;
    let cluster_id = cluster.cluster_id().unwrap();
    let execution = execution();
    let cancel = CancellationToken::new();
    let faults = MotoFaults {
        moto: moto.clone(),
        cluster_id,
    };
    flow_cloud::testkit::unknown_outcome_contract(
        &cluster,
        &shell("sleep 60"),
        &cx(&execution, &cancel, "unknown"),
        &faults,
    )
    .await;
    cluster.terminate().await.unwrap();
}
