//! The `flow` binary on Qubole (`[cluster] kind = "qubole"`), end to end,
//! against two peers: the QDS **contract fake** (`contract-fakes qubole`,
//! run as its own process so it outlives a killed engine; real time, short
//! durations) and **moto** (the S3 emulator `cargo xtask test` starts: the
//! steps' filesystem).
//!
//! Built only with `--features qubole` (xtask tests with all features).
//! The fake's binary comes from `FLOW_TEST_CONTRACT_FAKES` (xtask builds
//! it from the tree being tested), never from a binary left in `target/`.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::fakes::{http, FakeProcess};
use support::text;

const TP: &str = "2026112800";
const LABEL: &str = "spark-etl";
/// The account's token, handed to `flow` in the environment only.
const TOKEN: &str = "qds-e2e-token-0123456789";

fn s3_endpoint() -> String {
    std::env::var("FLOW_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("FLOW_TEST_S3_ENDPOINT is not set: run the moto tests through `cargo xtask test`")
    })
}

/// The keys of `bucket` on moto, from a ListObjectsV2 (moto answers an
/// anonymous listing; it refuses anonymous object reads, `GET` or `HEAD`,
/// with 403 AccessDenied, as S3 does for a private bucket).
fn s3_keys(bucket: &str) -> Vec<String> {
    let (status, body) = http(
        "GET",
        &format!("{}/{bucket}?list-type=2", s3_endpoint()),
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<IsTruncated>false</IsTruncated>"),
        "one page holds them all: {body}"
    );
    body.split("<Key>")
        .skip(1)
        .filter_map(|rest| rest.split_once("</Key>"))
        .map(|(key, _)| key.replace("&amp;", "&"))
        .collect()
}

/// The QDS contract fake's own calls (`contract-fakes qubole`).
impl FakeProcess {
    fn qubole(cluster: &str, run: &str) -> FakeProcess {
        let mut command = FakeProcess::command("qubole");
        command
            .args(["--token", TOKEN, "--cluster", cluster])
            .args(["--command-waiting", "100ms", "--command-run", run])
            .args(["--cluster-start", "300ms", "--cluster-stop", "200ms"]);
        FakeProcess::start(command)
    }

    fn commands(&self) -> Vec<serde_json::Value> {
        self.get("commands")["commands"].as_array().unwrap().clone()
    }

    /// The most commands QDS held unfinished at one time.
    fn peak_unfinished(&self) -> u64 {
        self.get("commands")["peak_unfinished"].as_u64().unwrap()
    }

    fn cluster_state(&self) -> String {
        self.get("clusters")["clusters"][LABEL]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A test directory whose settings point the Qubole cluster at the fake
/// and its S3 filesystem at moto, with a bucket of its own.
struct Home {
    home: support::Home,
    fake: FakeProcess,
    bucket: String,
}

impl std::ops::Deref for Home {
    type Target = support::Home;
    fn deref(&self) -> &support::Home {
        &self.home
    }
}

impl Home {
    fn new(test: &str, cluster: &str, run: &str) -> Home {
        let s3 = s3_endpoint();
        let bucket = format!("qubole-{test}-{}", std::process::id());
        let (status, body) = http("PUT", &format!("{s3}/{bucket}"), "");
        assert!(status == 200 || status == 409, "{status} {body}");
        let fake = FakeProcess::qubole(cluster, run);
        let home = support::Home::empty();
        home.write(
            "flow.toml",
            &support::cloud_settings(
                "qubole",
                &format!(
                    r#"
[cluster.qubole]
cluster_label = "{LABEL}"
token = "env:FLOW_TEST_QDS_TOKEN"
endpoint = "{fake}"
code_bucket = "{bucket}"
start_cluster = true
terminate = true
launch_poll = "100ms"
cancel_timeout = "10s"

[cluster.qubole.poll]
floor = "200ms"
cap = "500ms"

[cluster.qubole.retry]
initial_delay = "100ms"

[cluster.qubole.job_logs]
wait = "2s"
interval = "200ms"

[cluster.qubole.s3]
bucket = "{bucket}"
endpoint = "{s3}"
force_path_style = true

"#,
                    fake = fake.url
                ),
                "10s",
            ),
        );
        home.write("count.py", "print('counting')\n");
        home.write(
            "q.toml",
            r#"
name = "q"
time_qualifier = "daily"

[[steps]]
name = "stage"
pre = [{ action = "mkdir", path = "in/{timeperiod}" }]
main = { action = "copy_from_local", from = "count.py", to = "jobs/count.py" }

[[steps]]
name = "count"
depends_on = ["stage"]
main = { action = "spark", application = "jobs/count.py", args = ["--day", "{timeperiod}"] }

[[steps]]
name = "report"
depends_on = ["count"]
main = { action = "shell", command = "echo reporting {timeperiod}" }

[[steps]]
name = "publish"
depends_on = ["report"]
main = { action = "cp", from = "jobs/count.py", to = "published/{timeperiod}/count.py" }
"#,
        );
        Home { home, fake, bucket }
    }

    /// `flow ARGS` with the token in its environment.
    fn flow_with_token(&self, args: &[&str]) -> std::process::Output {
        self.command(args)
            .env("FLOW_TEST_QDS_TOKEN", TOKEN)
            .output()
            .unwrap()
    }

    /// `flow ARGS` started with the token in its environment, its output
    /// kept.
    fn spawn_with_token(&self, args: &[&str]) -> Child {
        self.command(args)
            .env("FLOW_TEST_QDS_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A flow `name` of one spark step per entry of `steps` (its name, the
    /// fake's run time), none depending on another.
    fn write_spark_flow(&self, name: &str, steps: &[(&str, &str)]) {
        let mut flow = format!("name = \"{name}\"\ntime_qualifier = \"daily\"\n");
        for (step, run_for) in steps {
            flow.push_str(&format!(
                "\n[[steps]]\nname = \"{step}\"\nmain = {{ action = \"spark\", application = \"jobs/count.py\", args = [\"fake.run_for={run_for}\"] }}\n"
            ));
        }
        self.write(&format!("{name}.toml"), &flow);
    }

    fn flow_state(&self, flow: &str) -> String {
        self.status_json(flow, TP)["flow"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn states(&self) -> (String, Vec<(String, String)>) {
        let status = self.status_json("q.toml", TP);
        (
            status["flow"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            support::step_states(&status),
        )
    }
}

#[test]
#[ignore = "needs moto and the contract fakes: run through `cargo xtask test`"]
fn a_flow_with_spark_shell_and_s3_steps_ends_processed_on_fake_qubole_on_moto() {
    let home = Home::new("ok", &format!("{LABEL}=DOWN"), "500ms");
    let out = home.flow_with_token(&["run", "q.toml", "--timeperiod", TP]);
    println!("{}", text(&out));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (flow, states) = home.states();
    assert_eq!(flow, "state_processed");
    assert!(
        states.iter().all(|(_, state)| state == "state_processed"),
        "{states:?}"
    );
    // Two commands, shaped as the flow said, on the labelled cluster.
    let commands = home.fake.commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert_eq!(home.fake.count("commands.submit"), 2);
    assert!(commands
        .iter()
        .all(|c| c["status"] == "done" && c["label"] == LABEL));
    assert_eq!(commands[0]["command_type"], "SparkCommand");
    assert_eq!(
        commands[0]["command"]["script_location"],
        format!("s3://{}/jobs/count.py", home.bucket)
    );
    assert_eq!(
        commands[0]["command"]["user_program_arguments"],
        "--day 2026112800"
    );
    assert_eq!(commands[1]["command_type"], "ShellCommand");
    assert_eq!(
        commands[1]["command"]["inline"],
        "echo reporting 2026112800"
    );
    // The S3 steps' objects are on moto: the folder marker of `mkdir`, the
    // uploaded application, its copy.
    let keys = s3_keys(&home.bucket);
    for key in [
        "in/2026112800_$folder$",
        "jobs/count.py",
        "published/2026112800/count.py",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
    }
    // The run started the cluster, so it terminated it.
    assert_eq!(home.fake.count("clusters.start"), 1);
    assert_eq!(home.fake.count("clusters.terminate"), 1);
    assert_eq!(home.fake.cluster_state(), "DOWN");
    // The command's log reached the step log; the token reached nothing.
    let log = home.read("logs/q/count.log");
    assert!(log.contains("submitted QDS command"), "{log}");
    assert!(
        log.contains("fake QDS: the command finished successfully"),
        "{log}"
    );
    assert!(!home.everything().iter().any(|f| f.contains(TOKEN)));
}

#[test]
#[ignore = "needs moto and the contract fakes: run through `cargo xtask test`"]
fn a_failing_command_makes_the_flow_invalid_with_its_log_on_fake_qubole_on_moto() {
    let home = Home::new("fail", &format!("{LABEL}=UP"), "300ms");
    home.write(
        "q.toml",
        r#"
name = "q"
time_qualifier = "daily"

[[steps]]
name = "report"
main = { action = "shell", command = "python report.py fake.outcome=error" }
"#,
    );
    let out = home.flow_with_token(&["run", "q.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (flow, _) = home.states();
    assert_eq!(flow, "state_invalid");
    let log = home.read("logs/q/report.log");
    assert!(log.contains("RuntimeError: fake.outcome=error"), "{log}");
    // Found UP: reused and left up.
    assert_eq!(home.fake.count("clusters.terminate"), 0);
    assert_eq!(home.fake.cluster_state(), "UP");
}

#[test]
#[ignore = "needs moto and the contract fakes: run through `cargo xtask test`"]
fn recover_adopts_the_command_of_a_killed_engine_and_terminates_the_cluster_on_fake_qubole_on_moto()
{
    let home = Home::new("adopt", &format!("{LABEL}=DOWN"), "forever");
    home.write(
        "q.toml",
        r#"
name = "q"
time_qualifier = "daily"

[[steps]]
name = "count"
main = { action = "spark", application = "jobs/count.py" }
"#,
    );
    let mut child = home
        .command(&["run", "q.toml", "--timeperiod", TP])
        .env("FLOW_TEST_QDS_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        if let Some(c) = home.fake.commands().first() {
            if c["status"] == "running" {
                break c["id"].as_u64().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no command ran");
        std::thread::sleep(Duration::from_millis(100));
    };
    // The engine dies without a word.
    support::kill9(&mut child);
    // Finish the command a little later, while recover watches it.
    let url = home.fake.url.clone();
    let finisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        let (status, body) = http(
            "POST",
            &format!("{url}/fake/finish?id={id}&status=done"),
            "",
        );
        assert_eq!(status, 200, "{body}");
    });
    let out = support::recover_once_accepted("q.toml", TP, |args| home.flow_with_token(args));
    finisher.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (flow, _) = home.states();
    assert_eq!(flow, "state_processed");
    assert_eq!(
        home.fake.count("commands.submit"),
        1,
        "adopted, never sent twice"
    );
    assert_eq!(home.fake.commands().len(), 1);
    assert_eq!(home.fake.count("clusters.terminate"), 1);
    assert_eq!(home.fake.cluster_state(), "DOWN");
}

#[test]
#[ignore = "needs moto and the contract fakes: run through `cargo xtask test`"]
fn two_overlapping_runs_share_the_started_cluster_terminated_once_after_the_last_on_fake_qubole_on_moto(
) {
    let home = Home::new("share", &format!("{LABEL}=DOWN"), "500ms");
    home.write_spark_flow("a", &[("count", "2s")]);
    home.write_spark_flow("b", &[("count", "6s")]);
    let first = home.spawn_with_token(&["run", "a.toml", "--timeperiod", TP]);
    // The second run starts once the first one's command runs on the
    // cluster it started.
    let deadline = Instant::now() + Duration::from_secs(60);
    while home.fake.commands().is_empty() {
        assert!(Instant::now() < deadline, "the first run sent no command");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = home.spawn_with_token(&["run", "b.toml", "--timeperiod", TP]);
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    // The first run ended while the second still used the cluster: up.
    assert_eq!(home.fake.cluster_state(), "UP");
    assert_eq!(home.fake.count("clusters.terminate"), 0);
    let second = second.wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert_eq!(home.flow_state("a.toml"), "state_processed");
    assert_eq!(home.flow_state("b.toml"), "state_processed");
    // Started once, terminated once, by the last user: the second run's
    // command ran to its end (a terminate under it would have failed it).
    let commands = home.fake.commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(
        commands.iter().all(|c| c["status"] == "done"),
        "{commands:?}"
    );
    assert_eq!(home.fake.count("clusters.start"), 1);
    assert_eq!(home.fake.count("clusters.terminate"), 1);
    assert_eq!(home.fake.cluster_state(), "DOWN");
    // The records say so: the first run's left up, the second's terminated.
    let out = home.expect(0, &["clusters", "--json"]);
    let records = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        records.contains("left_up") && records.contains("terminated"),
        "{records}"
    );
}

#[test]
#[ignore = "needs moto and the contract fakes: run through `cargo xtask test`"]
fn jobs_per_cluster_commands_run_at_once_on_the_label_on_fake_qubole_on_moto() {
    let home = Home::new("slots", &format!("{LABEL}=UP"), "500ms");
    let settings = home.read("flow.toml");
    home.write(
        "flow.toml",
        &settings.replace(
            "terminate = true\n",
            "terminate = true\njobs_per_cluster = 3\n",
        ),
    );
    home.write_spark_flow("wide", &[("a", "2s"), ("b", "2s"), ("c", "2s")]);
    let out = home.flow_with_token(&["run", "wide.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(home.flow_state("wide.toml"), "state_processed");
    assert_eq!(home.fake.commands().len(), 3);
    assert_eq!(
        home.fake.peak_unfinished(),
        3,
        "the three commands ran at once on the label"
    );
}

#[test]
#[ignore = "needs moto and the contract fakes: run through `cargo xtask test`"]
fn a_refused_token_is_reported_with_qds_status_and_message_on_fake_qubole_on_moto() {
    let home = Home::new("token", &format!("{LABEL}=UP"), "500ms");
    let out = home
        .command(&["run", "q.toml", "--timeperiod", TP])
        .env("FLOW_TEST_QDS_TOKEN", "not-the-account-token")
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out), home.read("logs/q/q.log"));
    assert_ne!(out.status.code(), Some(0), "{said}");
    // QDS's status and message, not a client's debug dump, not the token.
    assert!(said.contains("HTTP 401: Invalid Token"), "{said}");
    for dump in ["reqwest::", "Error {", "kind:", "not-the-account-token"] {
        assert!(!said.contains(dump), "{dump} in {said}");
    }
    assert!(home.fake.commands().is_empty());
}

#[test]
#[ignore = "needs moto and the contract fakes: run through `cargo xtask test`"]
fn a_cluster_lost_under_a_command_fails_its_step_with_the_reason_on_fake_qubole_on_moto() {
    let home = Home::new("lost", &format!("{LABEL}=UP"), "forever");
    home.write_spark_flow("lost", &[("count", "forever")]);
    let mut run = home.spawn_with_token(&["run", "lost.toml", "--timeperiod", TP]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !home
        .fake
        .commands()
        .first()
        .is_some_and(|c| c["status"] == "running")
    {
        assert!(Instant::now() < deadline, "no command ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The cluster goes down by itself; QDS still says the command runs.
    home.fake.post(&format!(
        "cluster?label={LABEL}&state=DOWN&reason=Spot+nodes+lost%3A+capacity-not-available"
    ));
    // Bounded: an engine that never notices would wait for ever.
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = run.kill();
            panic!("the run did not notice its cluster ended within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(home.flow_state("lost.toml"), "state_invalid");
    assert_eq!(home.fake.commands()[0]["status"], "running");
    let log = home.read("logs/lost/count.log");
    assert!(
        log.contains(&format!("QDS cluster {LABEL} is DOWN"))
            && log.contains("Spot nodes lost: capacity-not-available"),
        "the step names the cluster's reason: {log}"
    );
    // The cluster's record keeps why it ended.
    let out = home.expect(0, &["clusters", "--json"]);
    let records = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(records.contains("capacity-not-available"), "{records}");
}
