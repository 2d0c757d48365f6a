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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
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

/// The fakes binary xtask built from this tree.
fn fake_binary() -> PathBuf {
    let path = std::env::var_os("FLOW_TEST_CONTRACT_FAKES").map(PathBuf::from).unwrap_or_else(|| {
        panic!("FLOW_TEST_CONTRACT_FAKES is not set: run through `cargo xtask test`, which builds the contract fakes from this tree")
    });
    assert!(
        path.is_file(),
        "FLOW_TEST_CONTRACT_FAKES names no file: {}",
        path.display()
    );
    path
}

/// One HTTP/1.1 request with std only: the status and the body.
fn http(method: &str, url: &str, headers: &str, body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The QDS contract fake, stopped (stdin closed, then killed) when dropped.
struct Fake {
    child: Child,
    url: String,
}

impl Fake {
    fn start(cluster: &str, run: &str) -> Fake {
        let mut child = Command::new(fake_binary())
            .args(["qubole", "--token", TOKEN, "--cluster", cluster])
            .args(["--command-waiting", "100ms", "--command-run", run])
            .args(["--cluster-start", "300ms", "--cluster-stop", "200ms"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the fake said {line:?}"))
            .to_string();
        Fake { child, url }
    }

    fn get(&self, what: &str) -> serde_json::Value {
        let (status, body) = http("GET", &format!("{}/fake/{what}", self.url), "", "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn count(&self, method: &str) -> u64 {
        self.get("requests")["methods"][method]
            .as_u64()
            .unwrap_or(0)
    }

    fn commands(&self) -> Vec<serde_json::Value> {
        self.get("commands")["commands"].as_array().unwrap().clone()
    }

    fn cluster_state(&self) -> String {
        self.get("clusters")["clusters"][LABEL]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test directory whose settings point the Qubole cluster at the fake
/// and its S3 filesystem at moto, with a bucket of its own.
struct Home {
    home: support::Home,
    fake: Fake,
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
        let (status, body) = http("PUT", &format!("{s3}/{bucket}"), "", "");
        assert!(status == 200 || status == 409, "{status} {body}");
        let fake = Fake::start(cluster, run);
        let home = support::Home::empty();
        home.write(
            "flow.toml",
            &format!(
                r#"
log_directory = "logs"
data_directory = "data"

[cluster]
kind = "qubole"

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

[lease]
ttl = "2s"
heartbeat = "500ms"

[engine]
cancel_grace = "10s"
"#,
                fake = fake.url
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
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    // Finish the command a little later, while recover watches it.
    let url = home.fake.url.clone();
    let finisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        let (status, body) = http(
            "POST",
            &format!("{url}/fake/finish?id={id}&status=done"),
            "",
            "",
        );
        assert_eq!(status, 200, "{body}");
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let out = loop {
        let out = home.flow_with_token(&["recover", "q.toml", "--timeperiod", TP]);
        let refused = out.status.code() == Some(2) && text(&out).contains("already being run by");
        if !refused {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "recover never accepted: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
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
