//! The `flow` binary on Dataproc (`[cluster] kind = "dataproc"`), end to
//! end, against two peers: the Dataproc **contract fake** (the
//! `contract-fakes dataproc` binary, run as its own process so it outlives
//! a killed engine; real time, short durations) and **fake-gcs-server** (the
//! GCS emulator `cargo xtask test` starts; the steps' filesystem, the job
//! files, and the driver output the fake writes there as Dataproc would).
//!
//! Built only with `--features dataproc` (xtask tests with all features).
//! The fake's binary comes from `FLOW_TEST_CONTRACT_FAKES` (xtask builds it
//! from the tree being tested), never from a binary left in `target/`.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::fakes::{http, FakeProcess};
use support::{days, exit_codes, text, wait_until};

const TP: &str = "2026112800";
const CLUSTER: &str = "flow-dp-2026112800-0";

fn gcs_endpoint() -> String {
    std::env::var("FLOW_TEST_GCS_ENDPOINT").unwrap_or_else(|_| {
        panic!("FLOW_TEST_GCS_ENDPOINT is not set: run the fake-gcs-server tests through `cargo xtask test`")
    })
}

fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The Dataproc contract fake's own calls (`contract-fakes dataproc`).
impl FakeProcess {
    /// Without `gcs`, the fake writes no driver output (a flow without GCS
    /// steps needs no GCS server).
    /// It writes a service-account key at `key_file` whose `token_uri` is
    /// its token endpoint: it takes only tokens it issued, as Dataproc.
    fn dataproc(
        gcs: Option<&str>,
        staging: &str,
        key_file: &std::path::Path,
        extra: &[&str],
    ) -> FakeProcess {
        let mut command = FakeProcess::command("dataproc");
        command.arg("--key-file").arg(key_file).args(extra);
        if let Some(gcs) = gcs {
            command.args(["--gcs-endpoint", gcs]);
        }
        command
            .args(["--staging-bucket", staging])
            .args(["--cluster-create", "300ms", "--cluster-delete", "200ms"])
            .args([
                "--job-pending",
                "100ms",
                "--job-run",
                "500ms",
                "--job-cancel",
                "200ms",
            ]);
        FakeProcess::start(command)
    }

    fn jobs(&self) -> Vec<serde_json::Value> {
        self.get("jobs")["jobs"].as_array().unwrap().clone()
    }

    /// The access tokens the fake's token endpoint issued, in order.
    fn tokens(&self) -> Vec<String> {
        self.get("tokens")["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["token"].as_str().unwrap().to_string())
            .collect()
    }

    /// The state of the fake's cluster `name` (`None`: no such cluster).
    fn cluster_state(&self, name: &str) -> Option<String> {
        self.get("clusters")["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["clusterName"] == name)
            .map(|c| c["status"]["state"].as_str().unwrap().to_string())
    }

    fn deleted(&self) -> Vec<String> {
        self.get("clusters")["deleted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

/// A test directory with Dataproc settings pointing at both fakes, its own
/// buckets, and a short lease.
struct Home {
    home: support::Home,
    fake: FakeProcess,
    gcs: String,
    code: String,
    data: String,
}

impl std::ops::Deref for Home {
    type Target = support::Home;
    fn deref(&self) -> &support::Home {
        &self.home
    }
}

impl Home {
    /// On fake-gcs-server: the buckets exist there, the fake writes driver
    /// output there.
    fn new(test: &str) -> Home {
        Home::on(test, Some(gcs_endpoint()), &[])
    }

    /// Without a GCS server: the GCS endpoint is a loopback port where
    /// nothing listens, so any GCS call the flow made would fail it.
    fn without_gcs(test: &str) -> Home {
        Home::on(test, None, &[])
    }

    /// Without a GCS server, the fake started with `fake_args` too.
    fn without_gcs_with(test: &str, fake_args: &[&str]) -> Home {
        Home::on(test, None, fake_args)
    }

    fn on(test: &str, gcs_server: Option<String>, fake_args: &[&str]) -> Home {
        let unique = format!("{test}-{}", std::process::id());
        let (code, data, staging) = (
            format!("dp-code-{unique}"),
            format!("dp-data-{unique}"),
            format!("dp-staging-{unique}"),
        );
        let gcs = match &gcs_server {
            Some(gcs) => {
                for bucket in [&code, &data] {
                    let (status, body) = http(
                        "POST",
                        &format!("{gcs}/storage/v1/b?project=test"),
                        &format!(r#"{{"name": "{bucket}"}}"#),
                    );
                    assert!(status == 200 || status == 409, "{status} {body}");
                }
                gcs.clone()
            }
            None => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .expect("a free port");
                format!("http://127.0.0.1:{port}")
            }
        };
        let home = support::Home::empty();
        let fake = FakeProcess::dataproc(
            gcs_server.as_deref(),
            &staging,
            &home.path("key.json"),
            fake_args,
        );
        home.write(
            "flow.toml",
            &support::cloud_settings(
                "dataproc",
                &format!(
                    r#"
[cluster.dataproc]
project = "flow-test"
region = "europe-west1"
zone = "europe-west1-b"
endpoint = "{fake}"
endpoint_auth = true
credentials_file = "{key}"
code_bucket = "{code}"
image_version = "2.2-debian12"
labels = {{ team = "data" }}
launch_poll = "100ms"
cancel_timeout = "10s"

[cluster.dataproc.poll]
floor = "200ms"
cap = "500ms"

[cluster.dataproc.job_logs]
wait = "2s"
interval = "200ms"

[cluster.dataproc.gcs]
bucket = "{data}"
endpoint = "{gcs}"

"#,
                    fake = fake.url,
                    key = home.path("key.json").display()
                ),
                "10s",
            ),
        );
        home.write("count.py", "print('counting')\n");
        Home {
            home,
            fake,
            gcs,
            code,
            data,
        }
    }

    /// Adds `lines` to the `[cluster.dataproc]` settings.
    fn with_dataproc_settings(self, lines: &str) -> Home {
        let settings = self.read("flow.toml").replace(
            "[cluster.dataproc]\n",
            &format!("[cluster.dataproc]\n{lines}\n"),
        );
        self.write("flow.toml", &settings);
        self
    }

    /// Waits until the fake runs at least `n` jobs; their ids, oldest
    /// first.
    fn wait_for_running_jobs(&self, n: usize) -> Vec<String> {
        wait_until(&format!("{n} Dataproc jobs running"), || {
            let running: Vec<String> = self
                .fake
                .jobs()
                .iter()
                .filter(|j| j["status"]["state"] == "RUNNING")
                .map(|j| j["reference"]["jobId"].as_str().unwrap().to_string())
                .collect();
            (running.len() >= n).then_some(running)
        })
    }

    /// Ends the fake's job `id` as `DONE`.
    fn finish_job(&self, id: &str) {
        self.fake.post(&format!("finish?job={id}&state=DONE"));
    }

    /// The cluster each of the fake's jobs was placed on.
    fn job_clusters(&self) -> Vec<String> {
        self.fake
            .jobs()
            .iter()
            .map(|j| j["placement"]["clusterName"].as_str().unwrap().to_string())
            .collect()
    }

    fn object_exists(&self, bucket: &str, name: &str) -> bool {
        let (status, _) = http(
            "GET",
            &format!("{}/storage/v1/b/{bucket}/o/{}", self.gcs, encode(name)),
            "",
        );
        status == 200
    }

    fn put_object(&self, bucket: &str, name: &str, content: &str) {
        let (status, body) = http(
            "POST",
            &format!(
                "{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
                self.gcs,
                encode(name)
            ),
            content,
        );
        assert_eq!(status, 200, "{body}");
    }

    fn delete_object(&self, bucket: &str, name: &str) {
        let (status, body) = http(
            "DELETE",
            &format!("{}/storage/v1/b/{bucket}/o/{}", self.gcs, encode(name)),
            "",
        );
        assert!(status == 200 || status == 204, "{status} {body}");
    }

    /// A flow: `stage` uploads the job file and makes the input folder,
    /// `count` runs it as a pyspark job (with `conf`), `publish` copies its
    /// result marker.
    fn write_flow(&self, conf: &str) {
        self.write(
            "dp.toml",
            &format!(
                r#"
name = "dp"
time_qualifier = "daily"

[[steps]]
name = "stage"
pre = [{{ action = "mkdir", path = "in/{{timeperiod}}" }}]
main = {{ action = "copy_from_local", from = "count.py", to = "gs://{code}/jobs/count.py" }}

[[steps]]
name = "count"
depends_on = ["stage"]
main = {{ action = "spark", application = "jobs/count.py", args = ["--day", "{{timeperiod}}"], conf = {{ {conf} }} }}
post = [{{ action = "copy_from_local", from = "count.py", to = "out/{{timeperiod}}/done.txt" }}]

[[steps]]
name = "publish"
depends_on = ["count"]
main = {{ action = "cp", from = "out/{{timeperiod}}/done.txt", to = "published/{{timeperiod}}/done.txt" }}
"#,
                code = self.code
            ),
        );
    }

    /// A flow of one Spark job and no GCS step.
    fn write_spark_only_flow(&self, conf: &str) {
        self.write(
            "dp.toml",
            &format!(
                r#"
name = "dp"
time_qualifier = "daily"

[[steps]]
name = "count"
main = {{ action = "spark", application = "jobs/count.py", args = ["--day", "{{timeperiod}}"], conf = {{ {conf} }} }}
"#
            ),
        );
    }

    fn states(&self) -> (String, Vec<(String, String)>) {
        let status = self.status_json("dp.toml", TP);
        (
            status["flow"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            support::step_states(&status),
        )
    }
}

fn steps(states: &[(&str, &str)]) -> Vec<(String, String)> {
    states
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
#[ignore = "needs fake-gcs-server: run through `cargo xtask test`"]
fn a_pyspark_flow_with_gcs_steps_ends_processed_on_contract_fake_on_fake_gcs() {
    let home = Home::new("ok");
    home.write_flow("");
    let out = home.expect(0, &["run", "dp.toml", "--timeperiod", TP]);
    println!("{}", text(&out));
    let (flow, states) = home.states();
    assert_eq!(flow, "state_processed");
    assert_eq!(
        states,
        steps(&[
            ("count", "state_processed"),
            ("publish", "state_processed"),
            ("stage", "state_processed"),
        ])
    );
    // The GCS steps did their work in fake-gcs-server.
    assert!(home.object_exists(&home.data, "in/2026112800_$folder$"));
    assert!(home.object_exists(&home.code, "jobs/count.py"));
    assert!(home.object_exists(&home.data, "published/2026112800/done.txt"));
    // One job, shaped as the flow said, on the run's cluster.
    assert_eq!(home.fake.count("jobs.submit"), 1);
    let jobs = home.fake.jobs();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job["status"]["state"], "DONE");
    assert_eq!(job["placement"]["clusterName"], CLUSTER);
    assert_eq!(
        job["pysparkJob"]["mainPythonFileUri"],
        format!("gs://{}/jobs/count.py", home.code)
    );
    assert_eq!(job["pysparkJob"]["args"], serde_json::json!(["--day", TP]));
    assert_eq!(job["labels"]["flow-step"], "count");
    // The cluster was created with the settings and deleted at the end.
    assert_eq!(home.fake.count("clusters.create"), 1);
    assert_eq!(home.fake.deleted(), [CLUSTER]);
    let log = home.read("logs/dp/count.log");
    assert!(log.contains("submitted Dataproc job"), "{log}");
    assert!(
        log.contains("fake driver of job"),
        "driver output in the step log: {log}"
    );
}

#[test]
#[ignore = "needs fake-gcs-server: run through `cargo xtask test`"]
fn a_failing_job_makes_the_flow_invalid_with_its_driver_output_and_recover_completes_it_on_contract_fake_on_fake_gcs(
) {
    let home = Home::new("fail");
    // The job fails while this object exists (its input is "bad").
    home.put_object(&home.data, "control/bad-input", "x");
    home.write_flow(&format!(
        r#""fake.fail_if_exists" = "gs://{}/control/bad-input""#,
        home.data
    ));
    let out = home.expect(1, &["run", "dp.toml", "--timeperiod", TP]);
    let (flow, states) = home.states();
    assert_eq!(flow, "state_invalid", "{}", text(&out));
    assert_eq!(
        states,
        steps(&[
            ("count", "state_invalid"),
            ("publish", "state_embryo"),
            ("stage", "state_processed"),
        ])
    );
    let log = home.read("logs/dp/count.log");
    assert!(log.contains("is ERROR"), "{log}");
    assert!(
        log.contains("Dataproc Agent reports job failure"),
        "status.details: {log}"
    );
    assert!(
        log.contains("RuntimeError: gs://"),
        "the driver output is in the step log: {log}"
    );
    assert_eq!(
        home.fake.deleted(),
        [CLUSTER],
        "the cluster is deleted after a failure too"
    );

    // Fix the input; recover runs what is left.
    home.delete_object(&home.data, "control/bad-input");
    let out = home.expect(0, &["recover", "dp.toml", "--timeperiod", TP]);
    let (flow, states) = home.states();
    assert_eq!(flow, "state_processed", "{}", text(&out));
    assert!(
        states.iter().all(|(_, s)| s == "state_processed"),
        "{states:?}"
    );
    assert_eq!(
        home.fake.count("jobs.submit"),
        2,
        "one failed job, one that worked"
    );
    assert_eq!(home.fake.deleted(), [CLUSTER, CLUSTER]);
}

/// Needs only the fake (the flow has no GCS step): Dataproc end to end
/// does not depend on fake-gcs-server.
#[test]
#[ignore = "needs the Dataproc contract fake built from this tree: run through `cargo xtask test`"]
fn recover_adopts_a_job_that_outlived_a_killed_engine_and_deletes_its_cluster_on_fake_dataproc() {
    let home = Home::without_gcs("kill");
    home.write_spark_only_flow(r#""fake.run_for" = "6s""#);
    let mut engine = home.spawn(&["run", "dp.toml", "--timeperiod", TP]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = home
            .fake
            .jobs()
            .iter()
            .any(|j| j["status"]["state"] == "RUNNING");
        if running {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job never ran: {:?}",
            home.fake.jobs()
        );
        assert!(
            engine.try_wait().unwrap().is_none(),
            "the engine ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    support::kill9(&mut engine);
    assert_eq!(
        home.fake.deleted(),
        Vec::<String>::new(),
        "a killed engine deletes nothing"
    );

    assert_eq!(home.recover_until_accepted("dp.toml", TP), 0);
    let (flow, states) = home.states();
    assert_eq!(flow, "state_processed");
    assert!(
        states.iter().all(|(_, s)| s == "state_processed"),
        "{states:?}"
    );
    // The job was adopted, not submitted again; the cluster was adopted,
    // not created again, and deleted at the end.
    assert_eq!(home.fake.count("jobs.submit"), 1);
    assert_eq!(home.fake.jobs().len(), 1);
    assert_eq!(home.fake.jobs()[0]["status"]["state"], "DONE");
    assert_eq!(home.fake.count("clusters.create"), 1);
    assert_eq!(home.fake.deleted(), [CLUSTER]);
    let status = home.status_json("dp.toml", TP);
    println!("{status:#}");
}

/// Giving up on polling is not a failed attempt: `jobs.list` and `jobs.get`
/// answering 429 (`Retry-After: 0`) past every retry make the run fail with
/// the step left in progress and its cluster left up; `recover` adopts the
/// job: one job runs, not two.
#[test]
#[ignore = "needs the Dataproc contract fake built from this tree: run through `cargo xtask test`"]
fn a_job_whose_polling_gave_up_is_adopted_by_recover_not_submitted_again_on_fake_dataproc() {
    let home = Home::without_gcs("unknown");
    home.write_spark_only_flow(r#""fake.run_for" = "4s""#);
    let mut engine = home.spawn(&["run", "dp.toml", "--timeperiod", TP]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while home.fake.count("jobs.submit") == 0 {
        assert!(Instant::now() < deadline, "the job was never submitted");
        std::thread::sleep(Duration::from_millis(20));
    }
    for method in ["jobs.list", "jobs.get"] {
        let (status, body) = http(
            "POST",
            &format!(
                "{}/fake/throttle?method={method}&times=1000000&retry_after=0",
                home.fake.url
            ),
            "",
        );
        assert_eq!(status, 200, "{body}");
    }
    let code = engine.wait().unwrap().code();
    assert_eq!(code, Some(1), "the run fails");
    let (flow, states) = home.states();
    assert_eq!(flow, "state_invalid");
    assert_eq!(
        states,
        steps(&[("count", "state_in_progress")]),
        "the step is left for the next engine, not failed"
    );
    assert_eq!(
        home.fake.deleted(),
        Vec::<String>::new(),
        "the cluster running the job is left up"
    );
    let log = home.read("logs/dp/count.log");
    assert!(log.contains("outcome unknown"), "{log}");

    let (status, body) = http("POST", &format!("{}/fake/unthrottle", home.fake.url), "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(home.recover_until_accepted("dp.toml", TP), 0);
    let (flow, states) = home.states();
    assert_eq!(flow, "state_processed");
    assert_eq!(states, steps(&[("count", "state_processed")]));
    assert_eq!(home.fake.count("jobs.submit"), 1, "one job, not two");
    assert_eq!(home.fake.jobs().len(), 1);
    assert_eq!(home.fake.jobs()[0]["status"]["state"], "DONE");
    assert_eq!(home.fake.count("clusters.create"), 1);
    assert_eq!(home.fake.deleted(), [CLUSTER]);
}

/// The issue's case: a flow name too long for Dataproc's default cluster
/// name once the timeperiod is added. Cut, both timeperiods' runs shared
/// one cluster and the first deleted it under the second; hashed, each has
/// its own (and its own `flow-run-key` label), and the first run's end
/// leaves the second's cluster running under its job.
#[test]
#[ignore = "needs the Dataproc contract fake built from this tree: run through `cargo xtask test`"]
fn a_100_character_flow_name_at_two_timeperiods_gets_two_clusters_on_fake_dataproc() {
    let home = Home::without_gcs("longname");
    let name = "customer_lifetime_value_rollup_by_region_".repeat(3)[..100].to_string();
    home.write(
        "long.toml",
        &format!(
            r#"
name = "{name}"
time_qualifier = "daily"

[[steps]]
name = "count"
main = {{ action = "spark", application = "jobs/count.py", conf = {{ "fake.run_for" = "forever" }} }}
"#
        ),
    );
    let days = days(2);
    let mut runs = home.spawn_runs("long.toml", &days).into_iter();
    let (first, second) = (runs.next().unwrap(), runs.next().unwrap());
    // Both jobs run, each on a cluster of its own.
    let jobs = home.wait_for_running_jobs(2);
    let clusters = home.job_clusters();
    assert_ne!(clusters[0], clusters[1], "{clusters:?}");
    assert_eq!(home.fake.count("clusters.create"), 2);
    for cluster in &clusters {
        assert!(cluster.len() <= 51, "{cluster}");
        assert!(
            cluster.starts_with("flow-customer-lifetime-value-rollup"),
            "{cluster}"
        );
    }
    let labels: Vec<String> = home.fake.get("clusters")["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["labels"]["flow-run-key"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(labels[0], labels[1], "{labels:?}");
    // One run ends, deleting its own cluster only: the other's stays up
    // under its job.
    home.finish_job(&jobs[0]);
    let mut runs = vec![first, second];
    let ended = wait_until("a run ending", || {
        runs.iter_mut()
            .position(|r| r.try_wait().unwrap().is_some())
    });
    let mut last = runs.remove(1 - ended);
    assert_eq!(runs[0].wait().unwrap().code(), Some(0));
    assert!(last.try_wait().unwrap().is_none(), "the other run goes on");
    assert_eq!(home.fake.deleted(), [clusters[0].clone()]);
    assert_eq!(
        home.fake.cluster_state(&clusters[1]).as_deref(),
        Some("RUNNING")
    );
    home.finish_job(&jobs[1]);
    assert_eq!(last.wait().unwrap().code(), Some(0));
    home.assert_processed("long.toml", &days);
    let mut deleted = home.fake.deleted();
    deleted.sort();
    let mut expected = clusters.clone();
    expected.sort();
    assert_eq!(deleted, expected, "each cluster deleted once");
}

/// A cluster named in the settings is shared by every run that names it:
/// the second run joins the first one's cluster, the first run's end
/// leaves it up for the second (recorded `left_up`), and the last user
/// deletes it, once.
#[test]
#[ignore = "needs the Dataproc contract fake built from this tree: run through `cargo xtask test`"]
fn two_overlapping_runs_share_one_cluster_deleted_once_after_the_last_on_fake_dataproc() {
    let home = Home::without_gcs("shared").with_dataproc_settings(r#"name = "shared""#);
    home.write_spark_only_flow(r#""fake.run_for" = "forever""#);
    let days = days(2);
    let mut first = home.spawn(&["run", "dp.toml", "--timeperiod", &days[0]]);
    let first_job = home.wait_for_running_jobs(1)[0].clone();
    let mut second = home.spawn(&["run", "dp.toml", "--timeperiod", &days[1]]);
    let jobs = home.wait_for_running_jobs(2);
    assert_eq!(home.job_clusters(), ["shared-0", "shared-0"]);
    assert_eq!(
        home.fake.count("clusters.create"),
        1,
        "one cluster for both"
    );
    // The first run ends while the second one's job still runs.
    home.finish_job(&first_job);
    assert_eq!(first.wait().unwrap().code(), Some(0));
    assert_eq!(
        home.fake.deleted(),
        Vec::<String>::new(),
        "the first run left the cluster up for the second"
    );
    assert_eq!(
        home.fake.cluster_state("shared-0").as_deref(),
        Some("RUNNING")
    );
    let other = jobs.iter().find(|j| **j != first_job).unwrap();
    home.finish_job(other);
    assert_eq!(second.wait().unwrap().code(), Some(0));
    home.assert_processed("dp.toml", &days);
    assert_eq!(home.fake.deleted(), ["shared-0"], "deleted by the last run");
    assert_eq!(home.fake.count("clusters.delete"), 1, "deleted once");
    let out = home.expect(0, &["clusters", "--json"]);
    let records = support::stdout(&out);
    assert!(
        records.contains("left_up") && records.contains("other run(s) still using it"),
        "{records}"
    );
}

/// Twelve runs started at once race for one cluster name: the store's
/// claim makes one of them create it and the eleven others join it as
/// users; the creator ending first leaves it up for them, and the last one
/// to end deletes it.
#[test]
#[ignore = "needs the Dataproc contract fake built from this tree: run through `cargo xtask test`"]
fn twelve_concurrent_runs_create_one_cluster_on_fake_dataproc() {
    let home = Home::without_gcs("twelve").with_dataproc_settings(r#"name = "race""#);
    home.write_spark_only_flow(r#""fake.run_for" = "forever""#);
    let days = days(12);
    let mut runs = home.spawn_runs("dp.toml", &days);
    // Every job is held until all twelve run: the runs all overlap,
    // whatever the machine's load.
    home.wait_for_running_jobs(12);
    // The run that created the cluster (its `flow-run-key` label) ends
    // first; the eleven others still use it.
    let clusters = home.fake.get("clusters")["clusters"].clone();
    let creator = clusters[0]["labels"]["flow-run-key"].as_str().unwrap();
    let first = days
        .iter()
        .position(|day| creator.ends_with(day.as_str()))
        .unwrap_or_else(|| panic!("no run made {clusters}"));
    let job_of = |day: &str| {
        home.fake
            .jobs()
            .iter()
            .find(|j| j["pysparkJob"]["args"][1] == day)
            .map(|j| j["reference"]["jobId"].as_str().unwrap().to_string())
            .unwrap()
    };
    home.finish_job(&job_of(&days[first]));
    let mut creator_run = runs.remove(first);
    assert_eq!(creator_run.wait().unwrap().code(), Some(0));
    assert_eq!(
        home.fake.deleted(),
        Vec::<String>::new(),
        "the creator left the cluster up for the eleven others"
    );
    for (i, day) in days.iter().enumerate() {
        if i != first {
            home.finish_job(&job_of(day));
        }
    }
    assert_eq!(exit_codes(runs), vec![Some(0); 11]);
    home.assert_processed("dp.toml", &days);
    assert_eq!(
        home.fake.count("clusters.create"),
        1,
        "twelve runs, one create"
    );
    assert_eq!(home.job_clusters(), vec!["race-0".to_string(); 12]);
    assert_eq!(home.fake.deleted(), ["race-0"], "deleted once, by the last");
    assert_eq!(home.fake.count("clusters.delete"), 1);
}

/// Starts `flow run` and waits until the fake has a job `RUNNING`.
fn run_until_a_job_runs(home: &Home) -> Child {
    let mut engine = home
        .command(&["run", "dp.toml", "--timeperiod", TP])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !home
        .fake
        .jobs()
        .iter()
        .any(|j| j["status"]["state"] == "RUNNING")
    {
        assert!(
            Instant::now() < deadline,
            "the job never ran: {:?}",
            home.fake.jobs()
        );
        assert!(
            engine.try_wait().unwrap().is_none(),
            "the engine ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    engine
}

#[test]
#[ignore = "needs the Dataproc contract fake built from this tree: run through `cargo xtask test`"]
fn a_cluster_that_breaks_under_a_running_job_fails_the_step_with_its_reason_and_recover_completes_on_fake_dataproc(
) {
    let home = Home::without_gcs("breaks");
    home.write_spark_only_flow(r#""fake.run_for" = "4s""#);
    let engine = run_until_a_job_runs(&home);
    home.fake.post(&format!(
        "break_cluster?cluster={CLUSTER}&state=ERROR&detail={}",
        encode("Master node flow-dp-m lost: disk failure")
    ));
    let out = engine.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (flow, states) = home.states();
    assert_eq!(flow, "state_invalid", "{}", text(&out));
    assert_eq!(states, steps(&[("count", "state_invalid")]));
    let log = home.read("logs/dp/count.log");
    assert!(
        log.contains(CLUSTER) && log.contains("Master node flow-dp-m lost: disk failure"),
        "the step names the cluster's reason: {log}"
    );
    assert_eq!(
        home.fake.deleted(),
        [CLUSTER],
        "the broken cluster is deleted"
    );

    // Recover makes a new cluster and completes.
    let out = home.expect(0, &["recover", "dp.toml", "--timeperiod", TP]);
    let (flow, states) = home.states();
    assert_eq!(flow, "state_processed", "{}", text(&out));
    assert_eq!(states, steps(&[("count", "state_processed")]));
    assert_eq!(home.fake.count("clusters.create"), 2);
    assert_eq!(home.fake.count("jobs.submit"), 2);
    assert_eq!(home.fake.jobs()[1]["status"]["state"], "DONE");
    assert_eq!(home.fake.deleted(), [CLUSTER, CLUSTER]);
}

#[test]
#[ignore = "needs the Dataproc contract fake built from this tree: run through `cargo xtask test`"]
fn a_token_that_expires_mid_run_is_refreshed_on_fake_dataproc() {
    // Tokens live 25 s; the client (gcp_auth) renews one 20 s before its
    // expiry, i.e. 5 s after it got it. Once the first token is issued the
    // fake's clock jumps 18 s, so the fake refuses that token 7 s after
    // issuing it (401): a client that kept it would fail the 10 s job.
    let home = Home::without_gcs_with("token", &["--token-lifetime", "25s"]);
    home.write_spark_only_flow(r#""fake.run_for" = "10s""#);
    let engine = home
        .command(&["run", "dp.toml", "--timeperiod", TP])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while home.fake.tokens().is_empty() {
        assert!(Instant::now() < deadline, "no token was asked for");
        std::thread::sleep(Duration::from_millis(20));
    }
    home.fake.post("clock?advance=18s");
    let out = engine.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tokens = home.fake.tokens();
    assert!(tokens.len() >= 2, "the token was refreshed: {tokens:?}");
    let seen = home.fake.get("tokens")["authorizations"].clone();
    let seen: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        seen.contains(&format!("Bearer {}", tokens[1]).as_str()),
        "requests carried the new token: {seen:?}"
    );
    assert_eq!(
        seen.last().copied(),
        Some(format!("Bearer {}", tokens.last().unwrap()).as_str()),
        "the last request carried the newest token"
    );
    let (flow, _) = home.states();
    assert_eq!(flow, "state_processed");
}

/// Dataproc writes a failed job's details over several lines (the failure,
/// then where its logs are): the step's error, the step log and the
/// binary's output read them as one line, with no literal `\n`.
#[test]
#[ignore = "needs the Dataproc contract fake built from this tree: run through `cargo xtask test`"]
fn a_failed_jobs_details_read_as_one_line_on_fake_dataproc() {
    let home = Home::without_gcs("details");
    home.write_spark_only_flow(r#""fake.outcome" = "ERROR""#);
    let out = home.expect(1, &["run", "dp.toml", "--timeperiod", TP]);
    let status = home.status_json("dp.toml", TP);
    let error = status["steps"][0]["error"].as_str().unwrap_or_default();
    let details = error
        .split_once("Google Cloud Dataproc Agent reports job failure.")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("the job's details: {error}"));
    // The driver output's tail, when there is one, keeps its own lines.
    let details = details.split("\ndriver output").next().unwrap_or_default();
    assert!(
        details.starts_with(
            " If logs are available, they can be found at: https://console.cloud.google.com/dataproc/jobs/"
        ) && details.contains("; gcloud dataproc jobs wait "),
        "{error}"
    );
    assert!(!details.contains('\n'), "{error}");
    let said = home.read("logs/dp/count.log") + &text(&out);
    assert!(said.contains("they can be found at: https://"), "{said}");
    assert!(!said.contains("\\n"), "a literal \\n: {said}");
}

/// `jobs.submit` answered 429 past every retry: the step's error is
/// Google's `error.status` and `error.message`, on one line, with how often
/// flow tried.
#[test]
#[ignore = "needs the Dataproc contract fake built from this tree: run through `cargo xtask test`"]
fn a_throttled_submit_fails_the_step_with_googles_status_and_message_on_fake_dataproc() {
    let home = Home::without_gcs("throttled");
    home.write_spark_only_flow("");
    let (status, body) = http(
        "POST",
        &format!(
            "{}/fake/throttle?method=jobs.submit&times=1000000&retry_after=0",
            home.fake.url
        ),
        "",
    );
    assert_eq!(status, 200, "{body}");
    home.expect(1, &["run", "dp.toml", "--timeperiod", TP]);
    let status = home.status_json("dp.toml", TP);
    let error = status["steps"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("jobs.submit failed: HTTP 429 RESOURCE_EXHAUSTED: ")
            && error.ends_with(" (after 6 attempts)"),
        "{error}"
    );
    assert!(!error.contains('\n') && !error.contains('{'), "{error}");
}

/// A run's instance-hours are its cluster's master and workers (as the
/// fake was asked to create them) × the time its record covers, and its
/// cost those × the `[cost]` prices; the workers' machine type has no
/// price, so their cost is reported unknown (named in the summary line),
/// never as zero.
#[test]
#[ignore = "needs the Dataproc contract fake built from this tree: run through `cargo xtask test`"]
fn a_runs_instance_hours_and_cost_are_its_groups_times_its_time_times_prices_on_fake_dataproc() {
    let home = Home::without_gcs("cost").with_dataproc_settings(
        "master = { machine_type = \"n2-standard-4\" }\nworkers = { machine_type = \"n2-highmem-8\", count = 3 }",
    );
    let settings = home.read("flow.toml");
    home.write(
        "flow.toml",
        &format!("{settings}\n[cost]\ncurrency = \"EUR\"\n\n[cost.prices]\n\"n2-standard-4\" = 0.21\n\"n2-highmem-8:preemptible\" = 0.09\n"),
    );
    home.write_spark_only_flow(r#""fake.run_for" = "forever""#);
    let engine = run_until_a_job_runs(&home);
    // The cluster the fake made has the groups the record carries.
    let created = home.fake.get("clusters")["clusters"][0]["config"].clone();
    let job = home.wait_for_running_jobs(1);
    home.finish_job(&job[0]);
    let out = engine.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    assert_eq!(created["masterConfig"]["numInstances"], 1, "{created}");
    assert_eq!(created["workerConfig"]["numInstances"], 3, "{created}");
    for (group, machine) in [
        ("masterConfig", "n2-standard-4"),
        ("workerConfig", "n2-highmem-8"),
    ] {
        let uri = created[group]["machineTypeUri"].as_str().unwrap();
        assert!(uri.ends_with(&format!("/{machine}")), "{uri}");
    }
    let status = home.status_json("dp.toml", TP);
    let clusters = status["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 1, "{status}");
    let cluster = &clusters[0];
    assert_eq!(
        cluster["usage"]["instances"],
        serde_json::json!([
            {"role": "master", "instance_type": "n2-standard-4", "market": "on_demand", "count": 1},
            {"role": "workers", "instance_type": "n2-highmem-8", "market": "on_demand", "count": 3},
        ])
    );
    let hours = support::cost::billed_hours(cluster);
    let usage = &status["usage"]["runs"][cluster["run"].as_str().unwrap()];
    support::cost::assert_close(&usage["instance_hours"], 4.0 * hours, "instance-hours");
    // The master is priced; the workers are on-demand, and only their
    // preemptible price is known: unknown, with their instance-hours.
    support::cost::assert_close(&usage["cost"]["amount"], 0.21 * hours, "cost");
    assert_eq!(usage["cost"]["currency"], "EUR");
    support::cost::assert_lines(
        &usage["cost"]["unpriced"],
        &[("n2-highmem-8", "on_demand", 3.0 * hours)],
    );
    assert!(
        usage.get("normalized_instance_hours").is_none(),
        "Dataproc reports none: {usage}"
    );
    let summary = support::stdout(&out);
    let first = summary.lines().next().unwrap();
    assert!(
        first.starts_with("flow dp [2026112800]: state_processed, ")
            && first.contains(" instance-hours, ~€")
            && first.contains("+ unknown (no price for n2-highmem-8 on_demand, "),
        "the summary line names what it cannot price: {summary}"
    );
    let history = support::stdout(&home.expect(0, &["history", "dp.toml"]));
    assert!(
        history.contains("flow dp [2026112800], all its runs: ")
            && history.contains("no price for n2-highmem-8 on_demand"),
        "{history}"
    );
}
