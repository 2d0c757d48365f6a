//! The `flow` binary on Azure HDInsight (`[cluster] kind = "azure"`), end
//! to end, against three peers: the **Livy** and **WebHCat contract
//! fakes** (`contract-fakes livy|webhcat`, each its own process so it
//! outlives a killed engine; real time, jobs end `--run-for` after their
//! submission) behind the gateway's HTTP basic login, and **Azurite** (the
//! Blob emulator `cargo xtask test` starts: the steps' filesystem). With
//! `[cluster.azure.arm]`, a fourth: the **ARM contract fake**
//! (`contract-fakes arm`, with its Entra ID token endpoint), through which
//! the run creates and deletes its clusters.
//!
//! Built only with `--features azure` (xtask tests with all features).

mod support;

use flow_fs_azure::{AzureBlobFilesystem, AzureBlobFilesystemBuilder, AzureCredential};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::fakes::{http_with, FakeProcess};
use support::text;

const TP: &str = "2026112800";
/// The gateway's password, handed to `flow` in the environment only.
const PASSWORD: &str = "hdinsight-e2e-password-0123";
/// Azurite's well-known development key (public, documented by Microsoft).
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The ARM application's client secret, in the environment only.
const CLIENT_SECRET: &str = "arm-e2e-client-secret-0123";
/// `admin:PASSWORD`, base64: the gateway's login for the test's own reads.
const LOGIN: &str = "Authorization: Basic YWRtaW46aGRpbnNpZ2h0LWUyZS1wYXNzd29yZC0wMTIz\r\n";

fn azurite_endpoint() -> String {
    std::env::var("FLOW_TEST_AZURITE_ENDPOINT").unwrap_or_else(|_| {
        panic!("FLOW_TEST_AZURITE_ENDPOINT is not set: run the Azurite tests through `cargo xtask test`")
    })
}

/// A test directory whose settings point the HDInsight cluster at the two
/// fakes and its Blob filesystem at Azurite, in a container of its own.
struct Home {
    home: support::Home,
    livy: FakeProcess,
    webhcat: FakeProcess,
    container: String,
    /// The ARM fake, when the clusters are created through it.
    arm: Option<FakeProcess>,
}

impl std::ops::Deref for Home {
    type Target = support::Home;
    fn deref(&self) -> &support::Home {
        &self.home
    }
}

impl Home {
    fn new(test: &str, run_for: &str) -> Home {
        Home::start(test, run_for, false)
    }

    /// As [`new`](Self::new), the clusters created through the ARM fake
    /// (creates and deletes of one second).
    fn with_arm(test: &str, run_for: &str) -> Home {
        Home::start(test, run_for, true)
    }

    fn start(test: &str, run_for: &str, with_arm: bool) -> Home {
        let container = format!("hdinsight-{test}-{}", std::process::id());
        block_on(blob(&container).create_container(&container)).unwrap();
        let login = format!("admin:{PASSWORD}");
        let fake = |api: &str, more: &[&str]| {
            let mut command = FakeProcess::command(api);
            command.args(["--login", &login, "--run-for", run_for]);
            command
                .args(more)
                .env("CONTRACT_FAKES_STORAGE_KEY", EMULATOR_KEY);
            FakeProcess::start(command)
        };
        // WebHCat's controller writes each job's stderr into its status
        // directory on the cluster's storage (Azurite); a script named
        // `broken` fails as Pig fails.
        let azurite = azurite_endpoint();
        let (livy, webhcat) = (
            fake("livy", &[]),
            fake(
                "webhcat",
                &["--storage", &azurite, "--fail-scripts", "broken"],
            ),
        );
        let arm = with_arm.then(|| {
            let mut command = FakeProcess::command("arm");
            command.args([
                "--client-secret",
                CLIENT_SECRET,
                "--create-for",
                "1s",
                "--delete-for",
                "1s",
            ]);
            FakeProcess::start(command)
        });
        let arm_settings = match &arm {
            Some(arm) => format!(
                r#"
[cluster.azure.arm]
subscription = "sub-1"
resource_group = "flows"
location = "westeurope"
endpoint = "{url}"
launch_poll = "200ms"
credential = {{ kind = "client_secret", tenant = "tenant-1", client_id = "flow-app", secret = "env:FLOW_TEST_ARM_CLIENT_SECRET", authority = "{url}" }}

[cluster.azure.arm.definition]
clusterVersion = "5.1"
osType = "Linux"
clusterDefinition = {{ kind = "spark" }}
computeProfile = {{ roles = [{{ name = "headnode", targetInstanceCount = 2, hardwareProfile = {{ vmSize = "Standard_E8_V3" }} }}] }}
storageProfile = {{ storageaccounts = [{{ name = "devstoreaccount1.blob.core.windows.net", isDefault = true, container = "clusters", key = "env:FLOW_TEST_AZURITE_KEY" }}] }}
"#,
                url = arm.url
            ),
            None => String::new(),
        };
        let home = support::Home::empty();
        home.write(
            "flow.toml",
            &support::cloud_settings(
                "azure",
                &format!(
                    r#"
[cluster.azure]
livy_url = "{livy}"
webhcat_url = "{webhcat}/templeton/v1"
username = "admin"
password = "env:FLOW_TEST_HDINSIGHT_PASSWORD"
cancel_timeout = "10s"

[cluster.azure.poll]
floor = "200ms"
cap = "500ms"

[cluster.azure.retry]
initial_delay = "100ms"

[cluster.azure.job_logs]
wait = "1s"
interval = "200ms"

[cluster.azure.blob]
account = "devstoreaccount1"
key = "env:FLOW_TEST_AZURITE_KEY"
container = "{container}"
endpoint = "{azurite}"
{arm_settings}
"#,
                    livy = livy.url,
                    webhcat = webhcat.url,
                ),
                "10s",
            ),
        );
        home.write("count.py", "print('counting')\n");
        home.write("tally.pig", "rows = LOAD 'in' AS (n:int);\nDUMP rows;\n");
        Home {
            home,
            livy,
            webhcat,
            container,
            arm,
        }
    }

    /// `flow recover a.toml`, asked again while the killed run's lease is
    /// still live.
    fn recover_once_accepted(&self) -> std::process::Output {
        support::recover_once_accepted("a.toml", TP, |args| self.flow_with_secrets(args))
    }

    /// The ARM fake's clusters: `(name, provisioningState, deleted)`.
    fn arm_clusters(&self) -> Vec<(String, String, bool)> {
        let arm = self.arm.as_ref().expect("the ARM fake");
        arm.get("clusters")["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["provisioningState"].as_str().unwrap().to_string(),
                    c["deleted"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    /// `flow ARGS` with the secrets in its environment.
    fn command_with_secrets(&self, args: &[&str]) -> std::process::Command {
        let mut command = self.command(args);
        command
            .env("FLOW_TEST_HDINSIGHT_PASSWORD", PASSWORD)
            .env("FLOW_TEST_AZURITE_KEY", EMULATOR_KEY)
            .env("FLOW_TEST_ARM_CLIENT_SECRET", CLIENT_SECRET);
        command
    }

    fn flow_with_secrets(&self, args: &[&str]) -> std::process::Output {
        self.command_with_secrets(args).output().unwrap()
    }

    /// A listing of the real API through the gateway's login.
    fn listed(&self, fake: &FakeProcess, path: &str) -> serde_json::Value {
        let (status, body) = http_with("GET", &format!("{}{path}", fake.url), LOGIN, "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Azurite's account with the test's container.
fn blob(container: &str) -> AzureBlobFilesystem {
    AzureBlobFilesystemBuilder::new()
        .with_endpoint(azurite_endpoint())
        .with_account(flow_fs_azure::EMULATOR_ACCOUNT)
        .with_credential(AzureCredential::Key(flow_core::Secret::new(EMULATOR_KEY)))
        .with_container(container)
        .build()
        .unwrap()
}

#[test]
#[ignore = "needs Azurite and the contract fakes: run through `cargo xtask test`"]
fn a_flow_with_spark_pig_and_blob_steps_ends_processed_on_fake_hdinsight_on_azurite() {
    let home = Home::new("ok", "1s");
    home.write(
        "a.toml",
        r#"
name = "a"
time_qualifier = "daily"

[[steps]]
name = "stage"
pre = [{ action = "copy_from_local", from = "tally.pig", to = "jobs/tally.pig" }]
main = { action = "copy_from_local", from = "count.py", to = "jobs/count.py" }

[[steps]]
name = "count"
depends_on = ["stage"]
main = { action = "spark", application = "jobs/count.py", args = ["--day", "{timeperiod}"] }

[[steps]]
name = "tally"
depends_on = ["count"]
main = { action = "pig", script = "jobs/tally.pig", params = { day = "{timeperiod}" } }

[[steps]]
name = "publish"
depends_on = ["tally"]
main = { action = "cp", from = "jobs/count.py", to = "published/{timeperiod}/count.py" }
"#,
    );
    let out = home.flow_with_secrets(&["run", "a.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = home.status_json("a.toml", TP);
    assert_eq!(status["flow"]["state"], "state_processed");
    let states = support::step_states(&status);
    assert!(
        states.iter().all(|(_, state)| state == "state_processed"),
        "{states:?}"
    );
    let wasbs = format!(
        "wasbs://{}@devstoreaccount1.blob.core.windows.net",
        home.container
    );
    // One Livy batch and one WebHCat job, shaped as the flow said.
    let batches = home.listed(&home.livy, "/batches");
    assert_eq!(batches["total"], 1, "{batches}");
    let batch = &batches["sessions"][0];
    assert_eq!(batch["state"], "success");
    assert_eq!(home.livy.count("batches.create"), 1);
    let jobs = home.listed(&home.webhcat, "/templeton/v1/jobs?user.name=admin&fields=*");
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    let job = &jobs[0]["detail"];
    assert_eq!(job["status"]["state"], "SUCCEEDED");
    assert_eq!(job["userargs"]["file"], format!("{wasbs}/jobs/tally.pig"));
    assert_eq!(
        job["userargs"]["arg"],
        serde_json::json!(["-param", "day=2026112800"])
    );
    assert_eq!(home.webhcat.count("pig.create"), 1);
    // The blob steps wrote to Azurite.
    let fs = blob(&home.container);
    use flow_core::Filesystem;
    assert!(block_on(fs.exists("published/2026112800/count.py")).unwrap());
    assert!(block_on(fs.exists("jobs/tally.pig")).unwrap());
    // The jobs are in their step logs; the secrets are in no file.
    let log = home.read("logs/a/count.log");
    assert!(log.contains("Livy batch"), "{log}");
    let log = home.read("logs/a/tally.log");
    assert!(log.contains("WebHCat job job_1700000000000_0001"), "{log}");
    for secret in [PASSWORD, EMULATOR_KEY] {
        assert!(!home.everything().iter().any(|f| f.contains(secret)));
    }
}

#[test]
#[ignore = "needs Azurite and the contract fakes: run through `cargo xtask test`"]
fn a_failed_pig_job_shows_the_end_of_its_stderr_from_blob_on_fake_hdinsight_on_azurite() {
    let home = Home::new("pigfail", "1s");
    home.write(
        "broken.pig",
        "rows = LOAD 'in' AS (n:int);\nDUMP nothing;\n",
    );
    home.write(
        "a.toml",
        r#"
name = "a"
time_qualifier = "daily"

[[steps]]
name = "stage"
main = { action = "copy_from_local", from = "broken.pig", to = "jobs/broken.pig" }

[[steps]]
name = "tally"
depends_on = ["stage"]
main = { action = "pig", script = "jobs/broken.pig" }
"#,
    );
    let out = home.flow_with_secrets(&["run", "a.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let status = home.status_json("a.toml", TP);
    assert_eq!(status["flow"]["state"], "state_invalid");
    let steps = status["steps"].as_array().unwrap();
    let tally = steps
        .iter()
        .find(|s| s["step_name"] == "tally")
        .unwrap_or_else(|| panic!("no step tally: {status}"));
    let error = tally["error"].as_str().unwrap_or_default();
    // The controller ended with Pig's exit value, and the error carries
    // the end of stderr the fake wrote into the status directory on
    // Azurite: Pig's error, not the head of its log.
    assert!(error.contains("exit value 6"), "{error}");
    assert!(
        error.contains("ERROR 1066: Unable to open iterator for alias rows"),
        "{error}"
    );
    assert!(!error.contains("Apache Pig version"), "{error}");
    let log = home.read("logs/a/tally.log");
    assert!(log.contains("the end of wasbs://"), "{log}");
    assert!(
        log.contains("ERROR 1066: Unable to open iterator for alias rows"),
        "{log}"
    );
    assert!(log.contains("(line 299)"), "{log}");
    assert!(!log.contains("Apache Pig version"), "only the end: {log}");
    assert_eq!(home.webhcat.count("pig.create"), 1, "not submitted again");
}

#[test]
#[ignore = "needs Azurite and the contract fakes: run through `cargo xtask test`"]
fn recover_adopts_the_batch_of_a_killed_engine_on_fake_hdinsight_on_azurite() {
    let home = Home::new("adopt", "8s");
    home.write(
        "a.toml",
        r#"
name = "a"
time_qualifier = "daily"

[[steps]]
name = "count"
main = { action = "spark", application = "jobs/count.py" }
"#,
    );
    // The engine dies without a word while its batch runs.
    run_killed_once_a_batch_is_submitted(&home);
    assert_eq!(
        home.listed(&home.livy, "/batches")["sessions"][0]["state"],
        "starting"
    );
    let out = home.recover_once_accepted();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = home.status_json("a.toml", TP);
    assert_eq!(status["flow"]["state"], "state_processed");
    assert_eq!(
        home.livy.count("batches.create"),
        1,
        "adopted, no second POST /batches"
    );
    assert_eq!(home.listed(&home.livy, "/batches")["total"], 1);
}

#[test]
#[ignore = "needs Azurite and the contract fakes: run through `cargo xtask test`"]
fn two_overlapping_runs_share_the_gateway_run_their_slots_and_leave_it_up_on_fake_hdinsight_on_azurite(
) {
    let home = Home::new("share", "3s");
    let settings = home.read("flow.toml");
    home.write(
        "flow.toml",
        &settings.replace(
            "cancel_timeout = \"10s\"\n",
            "cancel_timeout = \"10s\"\njobs_per_cluster = 3\n",
        ),
    );
    let spark_flow = |name: &str, steps: &[&str]| {
        let mut flow = format!("name = \"{name}\"\ntime_qualifier = \"daily\"\n");
        for step in steps {
            flow.push_str(&format!(
                "\n[[steps]]\nname = \"{step}\"\nmain = {{ action = \"spark\", application = \"jobs/count.py\" }}\n"
            ));
        }
        home.write(&format!("{name}.toml"), &flow);
    };
    spark_flow("a", &["x", "y", "z"]);
    spark_flow("b", &["w"]);
    let spawn = |flow: &str| {
        home.command_with_secrets(&["run", flow, "--timeperiod", TP])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn("a.toml");
    // Flow a's three steps run at once (its slots): three batches running
    // together, seen before any has ended.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let batches = home.listed(&home.livy, "/batches");
        let running = batches["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["state"] == "starting")
            .count();
        if running == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline && home.livy.count("batches.create") < 4,
            "three batches never ran at once: {batches}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A second run joins the gateway's cluster while the first uses it.
    let second = spawn("b.toml");
    for (flow, run) in [("a.toml", first), ("b.toml", second)] {
        let out = run.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_eq!(
            home.status_json(flow, TP)["flow"]["state"],
            "state_processed"
        );
    }
    assert_eq!(home.livy.count("batches.create"), 4);
    // Both runs recorded the cluster, neither ended it: it was found up.
    // Both runs recorded the gateway's cluster under its shared name (the
    // store's record of its users), and neither ended it: it was found up.
    let out = home.flow_with_secrets(&["clusters", "--json"]);
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    for record in records {
        assert_eq!(record["state"], "left_up", "{record}");
        assert_eq!(
            record["handle"]["details"]["shared_name"], home.livy.url,
            "{record}"
        );
    }
}

/// `flow validate` of a one-step flow under `settings`: its exit code and
/// what it printed.
fn validate_with(settings: &str) -> (Option<i32>, String) {
    let home = support::Home::empty();
    home.write("flow.toml", settings);
    home.write(
        "a.toml",
        "name = \"a\"\n[[steps]]\nname = \"s\"\nmain = { action = \"mkdir\", path = \"x\" }\n",
    );
    let out = home.flow(&["validate", "a.toml"]);
    (out.status.code(), text(&out))
}

#[test]
fn a_secret_written_in_plain_text_is_refused_naming_its_key_not_its_value() {
    let (code, shown) = validate_with(
        "[cluster]\nkind = \"azure\"\n\n[cluster.azure]\ngateway = \"https://etl.azurehdinsight.net\"\npassword = \"hunter2-is-my-password\"\n",
    );
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("flow.toml:4:1") && shown.contains("[cluster.azure] setting `password`"),
        "{shown}"
    );
    assert!(shown.contains("env:VAR"), "{shown}");
    assert!(!shown.contains("hunter2"), "the secret is echoed: {shown}");
}

#[test]
fn jobs_per_cluster_zero_is_refused_at_its_place() {
    let (code, shown) = validate_with(
        "[cluster]\nkind = \"azure\"\n\n[cluster.azure]\ngateway = \"https://etl.azurehdinsight.net\"\njobs_per_cluster = 0\n",
    );
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("flow.toml:6:20"), "{shown}");
    assert!(shown.contains("nonzero"), "{shown}");
}

const ONE_SPARK_STEP: &str = r#"
name = "a"
time_qualifier = "daily"

[[steps]]
name = "count"
main = { action = "spark", application = "jobs/count.py" }
"#;

#[test]
#[ignore = "needs Azurite and the contract fakes: run through `cargo xtask test`"]
fn a_flow_on_a_cluster_created_through_arm_ends_processed_and_deletes_it_on_fake_hdinsight_on_azurite(
) {
    let home = Home::with_arm("arm", "1s");
    home.write("a.toml", ONE_SPARK_STEP);
    let out = home.flow_with_secrets(&["run", "a.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = home.status_json("a.toml", TP);
    assert_eq!(status["flow"]["state"], "state_processed");
    // Created once, through ARM, and deleted at the end.
    assert_eq!(
        home.arm_clusters(),
        [(
            "flow-a-2026112800-0".to_string(),
            "Deleting".to_string(),
            true
        )]
    );
    let arm = home.arm.as_ref().unwrap();
    assert_eq!(arm.count("clusters.create"), 1);
    assert_eq!(arm.count("clusters.delete"), 1);
    assert_eq!(home.livy.count("batches.create"), 1);
    let log = home.read("logs/a/a.log");
    assert!(
        log.contains("creating flow-a-2026112800-0 through Azure Resource Manager"),
        "{log}"
    );
    assert!(log.contains("deleted flow-a-2026112800-0"), "{log}");
    for secret in [PASSWORD, EMULATOR_KEY, CLIENT_SECRET] {
        assert!(!home.everything().iter().any(|f| f.contains(secret)));
    }
}

/// Starts `flow run a.toml` and returns it once the Livy fake has its first
/// batch.
fn run_until_a_batch_is_submitted(home: &Home) -> std::process::Child {
    let child = home
        .command_with_secrets(&["run", "a.toml", "--timeperiod", TP])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while home.livy.count("batches.create") == 0 {
        assert!(Instant::now() < deadline, "no batch was submitted");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Starts `flow run a.toml` and kills it (`kill -9`) once the Livy fake has
/// its first batch.
fn run_killed_once_a_batch_is_submitted(home: &Home) {
    support::kill9(&mut run_until_a_batch_is_submitted(home));
}

/// Starts `flow run` of [`ONE_SPARK_STEP`] and kills it (`kill -9`) once
/// its batch was submitted, on a cluster created through ARM.
fn killed_during_a_batch(home: &Home) {
    home.write("a.toml", ONE_SPARK_STEP);
    run_killed_once_a_batch_is_submitted(home);
    assert_eq!(
        home.arm_clusters(),
        [(
            "flow-a-2026112800-0".to_string(),
            "Succeeded".to_string(),
            false
        )],
        "the killed run left its cluster up"
    );
}

#[test]
#[ignore = "needs Azurite and the contract fakes: run through `cargo xtask test`"]
fn recover_adopts_the_batch_and_deletes_the_arm_cluster_of_a_killed_engine_on_fake_hdinsight_on_azurite(
) {
    let home = Home::with_arm("armadopt", "8s");
    killed_during_a_batch(&home);
    let out = home.recover_once_accepted();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = home.status_json("a.toml", TP);
    assert_eq!(status["flow"]["state"], "state_processed");
    assert_eq!(
        home.livy.count("batches.create"),
        1,
        "adopted, no second POST /batches"
    );
    let arm = home.arm.as_ref().unwrap();
    assert_eq!(
        arm.count("clusters.create"),
        1,
        "the cluster is adopted, not made again"
    );
    assert_eq!(
        home.arm_clusters(),
        [(
            "flow-a-2026112800-0".to_string(),
            "Deleting".to_string(),
            true
        )],
        "the recovering run deletes the cluster the killed one created"
    );
}

#[test]
#[ignore = "needs Azurite and the contract fakes: run through `cargo xtask test`"]
fn terminate_orphans_deletes_the_arm_cluster_of_a_crashed_run_on_fake_hdinsight_on_azurite() {
    let home = Home::with_arm("armorphan", "60s");
    killed_during_a_batch(&home);
    // Once the dead run's lease is stale, its cluster is found and deleted.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = home.flow_with_secrets(&["clusters", "--terminate-orphans"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        if home.arm_clusters()[0].2 {
            break;
        }
        assert!(Instant::now() < deadline, "never deleted: {}", text(&out));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(home.arm.as_ref().unwrap().count("clusters.delete"), 1);
}

#[test]
#[ignore = "needs Azurite and the contract fakes: run through `cargo xtask test`"]
fn a_cluster_deleted_under_a_running_batch_fails_the_step_with_its_state_on_fake_hdinsight_on_azurite(
) {
    // The batch would run a minute; its cluster is deleted outside flow
    // once it was submitted.
    let home = Home::with_arm("armgone", "60s");
    home.write("a.toml", ONE_SPARK_STEP);
    let started = Instant::now();
    let mut child = run_until_a_batch_is_submitted(&home);
    home.arm
        .as_ref()
        .unwrap()
        .post("delete?name=flow-a-2026112800-0");
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(1));
    // Noticed at a cluster check (every tenth tick of at most 0.5 s), not
    // when the batch would have ended.
    assert!(started.elapsed() < Duration::from_secs(50));
    let status = home.status_json("a.toml", TP);
    assert_eq!(status["flow"]["state"], "state_invalid");
    let error = status["steps"][0]["error"].as_str().unwrap_or_default();
    // `Deleting`, or `Deleted` once the one-second delete ended.
    assert!(
        error.contains("its cluster ended: flow-a-2026112800-0 is Delet"),
        "{status}"
    );
}
