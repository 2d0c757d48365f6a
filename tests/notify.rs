//! Notifications end to end: `[[notify]]` in the settings and in flow
//! files, delivered by the real `flow` binary to real receivers on
//! loopback (an HTTP receiver in this test that checks the signature and
//! answers the first attempt with a 500; aiosmtpd, started by xtask, for
//! mail), and checked at load with `file:line:col`.

mod support;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use support::{stdout, text, Home};

const TP: &str = "2026112800";
const HOOK_KEY: &str = "hook-signing-key-0123";

/// A flow whose step `b` fails until the file `fixed` exists.
fn flow(home: &Home) -> String {
    support::fails_until_fixed(home, "notified")
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// An HTTP/1.1 receiver on a loopback port: answers `statuses` in turn
/// (then 200), keeping every request.
struct Receiver {
    port: u16,
    got: Arc<(Mutex<Vec<Received>>, Condvar)>,
}

impl Receiver {
    fn start(statuses: &[u16]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let statuses: Vec<u16> = statuses.to_vec();
        let (kept, mut statuses) = (got.clone(), statuses.into_iter());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.is_empty() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = HashMap::new();
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap();
                    headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
                }
                let length: usize = headers
                    .get("content-length")
                    .map_or(0, |l| l.parse().unwrap());
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                kept.0.lock().unwrap().push(Received {
                    path,
                    headers,
                    body,
                });
                kept.1.notify_all();
                let status = statuses.next().unwrap_or(200);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver { port, got }
    }

    fn got(&self) -> Vec<Received> {
        self.got.0.lock().unwrap().clone()
    }

    /// The requests so far once one carries `X-Flow-Event: event` (woken
    /// by each arrival; a minute at most, a bound for a broken build).
    fn wait_for_event(&self, event: &str) -> Vec<Received> {
        let (got, arrived) = &*self.got;
        let (got, timeout) = arrived
            .wait_timeout_while(
                got.lock().unwrap(),
                std::time::Duration::from_secs(60),
                |got| !got.iter().any(|r| r.headers["x-flow-event"] == event),
            )
            .unwrap();
        assert!(!timeout.timed_out(), "no {event} arrived: {:?}", *got);
        got.clone()
    }

    /// How many requests carried `X-Flow-Event: event`.
    fn count(&self, event: &str) -> usize {
        self.got()
            .iter()
            .filter(|r| r.headers["x-flow-event"] == event)
            .count()
    }
}

fn verify(received: &Received, key: &str) {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(&received.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        received.headers.get("x-flow-signature-256"),
        Some(&format!("sha256={expected}")),
        "the signature is the body's HMAC-SHA256 under the secret"
    );
}

/// A failed run is posted, signed, to the webhook; the first attempt gets
/// a 500 and the retry carries the same body and idempotency key; the
/// outcome is in the run's log (store and file); the fix and `recover`
/// post `recovered`; the secret is in no payload and no log.
#[test]
fn a_failure_is_posted_signed_retried_with_one_key_and_recorded() {
    let home = Home::new();
    let hook = Receiver::start(&[500]);
    home.write(
        "flow.toml",
        &format!(
            "viewer_url = \"http://flow.example:8080/\"\n{}\n[[notify]]\nkind = \"webhook\"\non = [\"failure\", \"recovered\"]\nurl = \"http://127.0.0.1:{}/hook\"\nsecret = \"env:FLOW_TEST_HOOK_KEY\"\nretry_delay = \"50ms\"\n",
            support::SETTINGS,
            hook.port
        ),
    );
    home.write("notified.toml", &flow(&home));
    let run = |args: &[&str]| {
        home.command(args)
            .env("FLOW_TEST_HOOK_KEY", HOOK_KEY)
            .output()
            .unwrap()
    };
    let out = run(&["run", "notified.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let got = hook.got();
    assert_eq!(got.len(), 2, "one 500, one retry: {got:?}");
    for attempt in &got {
        assert_eq!(attempt.path, "/hook");
        assert_eq!(attempt.headers["content-type"], "application/json");
        assert_eq!(attempt.headers["x-flow-event"], "failure");
        verify(attempt, HOOK_KEY);
    }
    assert_eq!(got[0].body, got[1].body, "a retry sends the same body");
    let key = &got[0].headers["idempotency-key"];
    assert_eq!(&got[1].headers["idempotency-key"], key);
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["event"], "failure");
    assert_eq!(body["flow"], "notified");
    assert_eq!(body["timeperiod"], TP);
    assert_eq!(body["mode"], "run_mode_nominal");
    assert_eq!(body["state"], "state_invalid");
    assert_eq!(body["idempotency_key"], key.as_str());
    assert_eq!(
        body["url"],
        format!("http://flow.example:8080/#/flows/notified/{TP}")
    );
    assert_eq!(body["failed_steps"][0]["step"], "b");
    assert!(
        body["failed_steps"][0]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    let history = stdout(&home.expect(0, &["history", "notified.toml", "--timeperiod", TP]));
    let run_id = body["run"].as_str().unwrap();
    assert!(
        history.contains(run_id),
        "the run id is the history's: {history}"
    );

    // The outcome, in the store's log of the run and in the flow log file.
    let logs = stdout(&home.expect(0, &["logs", "notified.toml", "--timeperiod", TP]));
    let line = "notification 1 (webhook, failure): delivered after 2 attempt(s): HTTP 200";
    assert!(logs.contains(line), "{logs}");
    let file = home.read("logs/notified/notified.log");
    assert!(file.contains(line), "{file}");

    // Fixed, recovered: `recovered` is posted (not `success`: not asked for).
    home.write("fixed", "");
    let out = run(&["recover", "notified.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let got = hook.got();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].headers["x-flow-event"], "recovered");
    verify(&got[2], HOOK_KEY);
    let body: Value = serde_json::from_slice(&got[2].body).unwrap();
    assert_eq!(body["event"], "recovered");
    assert_eq!(body["mode"], "run_mode_recovery");
    assert_eq!(body["state"], "state_processed");
    assert_ne!(&got[2].headers["idempotency-key"], key);

    // The secret is in no payload and no log.
    for request in &got {
        assert!(!String::from_utf8_lossy(&request.body).contains(HOOK_KEY));
    }
    let logs = stdout(&home.expect(0, &["logs", "notified.toml", "--timeperiod", TP]));
    assert!(
        !logs.contains(HOOK_KEY) && !home.read("logs/notified/notified.log").contains(HOOK_KEY)
    );
}

/// A receiver that never accepts (the port closed) costs the run nothing:
/// the run's outcome and exit code are its own, and the failed delivery
/// is recorded after its retries.
#[test]
fn an_unreachable_receiver_never_fails_a_run() {
    let home = Home::new();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    home.write(
        "flow.toml",
        &format!(
            "{}\n[[notify]]\nkind = \"webhook\"\non = [\"success\"]\nurl = \"http://127.0.0.1:{port}/hook\"\nretries = 1\nretry_delay = \"10ms\"\n",
            support::SETTINGS
        ),
    );
    home.write("notified.toml", &flow(&home));
    home.write("fixed", "");
    home.expect(0, &["run", "notified.toml", "--timeperiod", TP]);
    assert_logged(
        &home,
        "notified.toml",
        "notification 1 (webhook, success): failed after 2 attempt(s)",
    );
}

/// Asserts that `flow logs FLOW --timeperiod TP` shows `line`.
fn assert_logged(home: &Home, flow: &str, line: &str) {
    let logs = stdout(&home.expect(0, &["logs", flow, "--timeperiod", TP]));
    assert!(logs.contains(line), "{line} not in:\n{logs}");
}

/// Wrong entries are refused before anything runs, at their place, in the
/// settings and in a flow file; nothing is written.
#[test]
fn notify_entries_are_checked_at_load_with_their_place() {
    let home = Home::new();
    home.write("notified.toml", &flow(&home));
    home.write(
        "flow.toml",
        &format!(
            "{}\n[[notify]]\nkind = \"webhook\"\non = [\"failur\"]\nurl = \"http://127.0.0.1:9/\"\n",
            support::SETTINGS
        ),
    );
    let out = home.expect(2, &["run", "notified.toml", "--timeperiod", TP]);
    let message = text(&out);
    assert!(
        message.contains("flow.toml:") && message.contains("failur"),
        "{message}"
    );

    home.write(
        "flow.toml",
        &format!(
            "{}\n[[notify]]\nkind = \"email\"\non = [\"failure\"]\nhost = \"127.0.0.1\"\nfrom = \"flow@example.org\"\nto = []\n",
            support::SETTINGS
        ),
    );
    let message = text(&home.expect(2, &["run", "notified.toml", "--timeperiod", TP]));
    // The entry's header: the line after the settings and a blank line.
    let at = format!(
        "flow.toml:{}:1",
        support::SETTINGS.matches('\n').count() + 2
    );
    assert!(
        message.contains(&at) && message.contains("no recipients"),
        "{at}: {message}"
    );

    // `ca_file`: missing, not PEM, a PEM block that is no certificate; at
    // the key's value.
    let not_der = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
    home.write("not-pem.txt", "no certificate here\n");
    home.write("not-der.pem", not_der);
    for (ca, why) in [
        ("missing.pem", "cannot read"),
        ("not-pem.txt", "holds no PEM certificate"),
        ("not-der.pem", "not a usable CA certificate"),
    ] {
        let settings = format!(
            "{}\n[[notify]]\nkind = \"email\"\non = [\"failure\"]\nhost = \"127.0.0.1\"\nca_file = \"{ca}\"\nfrom = \"flow@example.org\"\nto = [\"ops@example.org\"]\n",
            support::SETTINGS
        );
        home.write("flow.toml", &settings);
        let message = text(&home.expect(2, &["run", "notified.toml", "--timeperiod", TP]));
        let line = settings
            .lines()
            .position(|l| l.starts_with("ca_file"))
            .unwrap()
            + 1;
        let at = format!("flow.toml:{line}:11: [[notify]] ca_file: ");
        assert!(
            message.contains(&at) && message.contains(ca) && message.contains(why),
            "{at} {why}: {message}"
        );
    }
    // A CA file is the settings' only (which CAs to trust is the machine's).
    home.write("flow.toml", support::SETTINGS);
    home.write(
        "cafile.toml",
        &format!(
            "{}\n[[notify]]\nkind = \"email\"\non = [\"failure\"]\nhost = \"127.0.0.1\"\nca_file = \"not-der.pem\"\nfrom = \"flow@example.org\"\nto = [\"ops@example.org\"]\n",
            flow(&home).replace("name = \"notified\"", "name = \"cafile\"")
        ),
    );
    let message = text(&home.expect(2, &["validate", "cafile.toml"]));
    assert!(
        message.contains("cafile.toml:") && message.contains("ca_file belongs in the settings"),
        "{message}"
    );

    home.write("flow.toml", support::SETTINGS);
    home.write(
        "bad.toml",
        &format!(
            "{}\n[[notify]]\nkind = \"slack\"\non = [\"failure\"]\nurl = \"env:SLACK_HOOK\"\nchannel = \"#ops\"\n",
            flow(&home).replace("name = \"notified\"", "name = \"bad\"")
        ),
    );
    let message = text(&home.expect(2, &["validate", "bad.toml"]));
    assert!(
        message.contains("bad.toml:") && message.contains("channel"),
        "{message}"
    );
    assert!(!home.db().exists(), "nothing was written");
}

/// A failure mailed through a real SMTP server (aiosmtpd, plain SMTP on
/// loopback): the mail arrives with the run's facts.
#[test]
#[ignore = "needs aiosmtpd: run by cargo xtask test"]
fn a_failure_is_mailed_on_aiosmtpd() {
    let port = std::env::var("FLOW_TEST_SMTP_PORT").expect("FLOW_TEST_SMTP_PORT");
    let maildir = std::env::var("FLOW_TEST_SMTP_MAILDIR").expect("FLOW_TEST_SMTP_MAILDIR");
    let home = Home::new();
    let flow_name = format!("mailed{}", std::process::id());
    home.write(
        "flow.toml",
        &format!(
            "{}\n[[notify]]\nkind = \"email\"\non = [\"failure\"]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"flow@example.org\"\nto = [\"ops@example.org\", \"oncall@example.org\"]\n",
            support::SETTINGS
        ),
    );
    home.write(
        "mailed.toml",
        &flow(&home).replace("name = \"notified\"", &format!("name = \"{flow_name}\"")),
    );
    let out = home.flow(&["run", "mailed.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let mails: Vec<String> = std::fs::read_dir(std::path::Path::new(&maildir).join("new"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .filter(|m| m.contains(&flow_name))
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert!(
        mail.contains(&format!(
            "Subject: [flow] flow {flow_name} {TP}: failure (state_invalid)"
        )),
        "{mail}"
    );
    assert!(mail.contains("step b failed:"), "{mail}");
    assert!(
        mail.contains("To: ops@example.org, oncall@example.org"),
        "{mail}"
    );
    let logs = stdout(&home.expect(0, &["logs", "mailed.toml", "--timeperiod", TP]));
    assert!(
        logs.contains("notification 1 (email, failure): delivered after 1 attempt(s): SMTP 250"),
        "{logs}"
    );
}

/// The STARTTLS server xtask starts (`smtp.rs`): STARTTLS and a login
/// required, its certificate from a CA made at its start.
struct Smtps {
    port: String,
    ca: String,
    mails: String,
    user: String,
    password: String,
}

/// The environment variable the settings name for the SMTP password.
const SMTP_SECRET_VAR: &str = "FLOW_TEST_SMTP_SECRET";

impl Smtps {
    fn from_env() -> Smtps {
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name}"));
        Smtps {
            port: var("FLOW_TEST_SMTPS_PORT"),
            ca: var("FLOW_TEST_SMTPS_CA"),
            mails: var("FLOW_TEST_SMTPS_MAILS"),
            user: var("FLOW_TEST_SMTPS_USER"),
            password: var("FLOW_TEST_SMTPS_PASSWORD"),
        }
    }

    /// Settings mailing `on` through it with STARTTLS and the login, the
    /// password read from [`SMTP_SECRET_VAR`], the CA file trusted when
    /// `trust_ca`.
    fn settings(&self, on: &str, trust_ca: bool) -> String {
        let ca = if trust_ca {
            format!("ca_file = \"{}\"\n", self.ca)
        } else {
            String::new()
        };
        format!(
            "{}\n[[notify]]\nkind = \"email\"\non = [{on}]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nusername = \"{}\"\npassword = \"env:{SMTP_SECRET_VAR}\"\n{ca}from = \"flow@example.org\"\nto = [\"ops@example.org\"]\nretries = 0\n",
            support::SETTINGS,
            self.port,
            self.user
        )
    }

    /// The mails it accepted whose content holds `needle`, as JSON.
    fn mails_with(&self, needle: &str) -> Vec<Value> {
        std::fs::read_dir(&self.mails)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| serde_json::from_str::<Value>(&std::fs::read_to_string(p).unwrap()).unwrap())
            .filter(|m| m["content"].as_str().unwrap().contains(needle))
            .collect()
    }
}

/// Runs `flow` in `home` with `password` in [`SMTP_SECRET_VAR`]; returns
/// the exit code and everything it printed.
fn run_with_password(home: &Home, args: &[&str], password: &str) -> (Option<i32>, String) {
    let out = home
        .command(args)
        .env(SMTP_SECRET_VAR, password)
        .output()
        .unwrap();
    (out.status.code(), text(&out))
}

/// Asserts `secret` is nowhere `flow` shows a run of `flow_file`: the
/// run's output, its logs (store and file) and its history.
fn assert_secret_absent(home: &Home, flow_file: &str, flow_name: &str, output: &str, secret: &str) {
    assert!(
        !output.contains(secret),
        "the password in the output: {output}"
    );
    let logs = stdout(&home.expect(0, &["logs", flow_file, "--timeperiod", TP]));
    assert!(!logs.contains(secret), "the password in the logs");
    let file = home.read(&format!("logs/{flow_name}/{flow_name}.log"));
    assert!(!file.contains(secret), "the password in the log file");
    let history = stdout(&home.expect(0, &["history", flow_file, "--timeperiod", TP, "--json"]));
    assert!(!history.contains(secret), "the password in the history");
}

/// A flow named `prefix` and this process's id, failing until `fixed`.
fn named_flow(home: &Home, prefix: &str) -> (String, String) {
    let name = format!("{prefix}{}", std::process::id());
    let file = format!("{prefix}.toml");
    home.write(
        &file,
        &flow(home).replace("name = \"notified\"", &format!("name = \"{name}\"")),
    );
    (name, file)
}

/// A failure mailed over STARTTLS with a login (aiosmtpd requiring both,
/// its certificate from a CA made at its start, trusted through
/// `ca_file`): the server saw a TLS session authenticated as the
/// configured user; the password is in no output, log or history.
#[test]
#[ignore = "needs aiosmtpd (STARTTLS): run by cargo xtask test"]
fn a_failure_is_mailed_over_starttls_with_login_on_starttls_aiosmtpd() {
    let smtps = Smtps::from_env();
    let home = Home::new();
    home.write("flow.toml", &smtps.settings("\"failure\"", true));
    let (name, file) = named_flow(&home, "tlsmailed");
    let (code, output) =
        run_with_password(&home, &["run", &file, "--timeperiod", TP], &smtps.password);
    assert_eq!(code, Some(1), "{output}");
    let mails = smtps.mails_with(&name);
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail["tls"], true, "{mail}");
    assert_eq!(mail["authenticated"], true, "{mail}");
    assert_eq!(mail["login"], smtps.user.as_str(), "{mail}");
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["ops@example.org"]));
    let content = mail["content"].as_str().unwrap();
    assert!(
        content.contains(&format!(
            "Subject: [flow] flow {name} {TP}: failure (state_invalid)"
        )),
        "{content}"
    );
    assert!(!content.contains(&smtps.password));
    assert_logged(
        &home,
        &file,
        "notification 1 (email, failure): delivered after 1 attempt(s): SMTP 250",
    );
    assert_secret_absent(&home, &file, &name, &output, &smtps.password);
}

/// A wrong password: the server's refusal (535) is the delivery's
/// recorded failure, not retried, and the run still succeeds; neither
/// password shows anywhere.
#[test]
#[ignore = "needs aiosmtpd (STARTTLS): run by cargo xtask test"]
fn a_wrong_smtp_password_is_recorded_with_the_servers_reason_on_starttls_aiosmtpd() {
    let smtps = Smtps::from_env();
    let home = Home::new();
    home.write(
        "flow.toml",
        &smtps
            .settings("\"success\"", true)
            .replace("retries = 0", "retries = 2\nretry_delay = \"10ms\""),
    );
    let (name, file) = named_flow(&home, "badlogin");
    home.write("fixed", "");
    let wrong = format!("wrong-{}", smtps.password);
    let (code, output) = run_with_password(&home, &["run", &file, "--timeperiod", TP], &wrong);
    assert_eq!(code, Some(0), "the run succeeds: {output}");
    assert!(smtps.mails_with(&name).is_empty());
    // A permanent refusal: one attempt, though two retries were allowed.
    assert_logged(
        &home,
        &file,
        "notification 1 (email, success): failed after 1 attempt(s): SMTP: permanent error (535): 5.7.8 Authentication credentials invalid",
    );
    let log_file = home.read(&format!("logs/{name}/{name}.log"));
    assert!(log_file.contains("permanent error (535)"), "{log_file}");
    assert_secret_absent(&home, &file, &name, &output, &wrong);
    assert_secret_absent(&home, &file, &name, &output, &smtps.password);
}

/// Without `ca_file` the server's certificate (from a CA of its own) is
/// not trusted: the delivery fails, named as a certificate problem, and
/// nothing is sent (no login, no mail).
#[test]
#[ignore = "needs aiosmtpd (STARTTLS): run by cargo xtask test"]
fn an_untrusted_smtp_certificate_is_named_on_starttls_aiosmtpd() {
    let smtps = Smtps::from_env();
    let home = Home::new();
    home.write("flow.toml", &smtps.settings("\"success\"", false));
    let (name, file) = named_flow(&home, "untrusted");
    home.write("fixed", "");
    let (code, output) =
        run_with_password(&home, &["run", &file, "--timeperiod", TP], &smtps.password);
    assert_eq!(code, Some(0), "the run succeeds: {output}");
    assert!(smtps.mails_with(&name).is_empty());
    let logs = stdout(&home.expect(0, &["logs", &file, "--timeperiod", TP]));
    let line = logs
        .lines()
        .find(|l| l.contains("notification 1 (email, success): failed after 1 attempt(s)"))
        .unwrap_or_else(|| panic!("no failed delivery in:\n{logs}"));
    assert!(
        line.contains("invalid peer certificate: UnknownIssuer"),
        "named as a certificate problem: {line}"
    );
    assert_secret_absent(&home, &file, &name, &output, &smtps.password);
}

/// A flow with an `sla` whose step `b` waits for the file `go`, then
/// fails unless `fixed` exists.
fn sla_flow(home: &Home, sla: &str) -> String {
    format!(
        r#"
name = "late"
time_qualifier = "daily"
{sla}
[[steps]]
name = "a"
main = {{ action = "shell", command = "echo a" }}
[[steps]]
name = "b"
depends_on = ["a"]
main = {{ action = "shell", command = "while [ ! -f {go} ]; do sleep 0.05; done; test -f {fixed} || exit 3" }}
"#,
        go = home.path("go").display(),
        fixed = home.path("fixed").display()
    )
}

/// A `flow run` of [`sla_flow`] going on in the background; dropped (also
/// when an assertion failed) it lets step `b` end and waits for the run,
/// so no test leaves a waiting step behind.
struct Running<'a> {
    home: &'a Home,
    child: std::process::Child,
}

impl<'a> Running<'a> {
    fn start(home: &'a Home) -> Running<'a> {
        let child = home
            .command(&["run", "late.toml", "--timeperiod", TP])
            .env("FLOW_TEST_HOOK_KEY", HOOK_KEY)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Running { home, child }
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Lets step `b` go on and returns the run's exit code.
    fn release(mut self) -> Option<i32> {
        self.home.write("go", "");
        self.child.wait().unwrap().code()
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.home.write("go", "");
        let _ = self.child.wait();
    }
}

/// Settings posting `events` to `hook`, signed.
fn hooked(hook: &Receiver, events: &str) -> String {
    format!(
        "{}\n[[notify]]\nkind = \"webhook\"\non = [{events}]\nurl = \"http://127.0.0.1:{}/hook\"\nsecret = \"env:FLOW_TEST_HOOK_KEY\"\nretry_delay = \"50ms\"\n",
        support::SETTINGS,
        hook.port
    )
}

/// `sla = "2h"` from the period's end: the day 2026-11-28 ended long ago,
/// so the run is late from its start. `sla_miss` is posted while the run
/// still waits (the process alive, the store marked), once; the run then
/// fails, and the `recover` that processes the timeperiod posts
/// `recovered` but no second `sla_miss`. History and status say it.
#[test]
fn sla_miss_is_posted_once_while_running_and_not_again_on_recover() {
    let home = Home::new();
    let hook = Receiver::start(&[]);
    home.write(
        "flow.toml",
        &hooked(&hook, "\"sla_miss\", \"failure\", \"recovered\""),
    );
    home.write("late.toml", &sla_flow(&home, "sla = \"2h\""));
    let mut running = Running::start(&home);
    let got = hook.wait_for_event("sla_miss");
    assert!(running.still_running(), "posted while the run still goes");
    let status = home.status_json("late.toml", TP);
    assert_eq!(status["flow"]["state"], "state_in_progress", "{status}");
    assert!(status["flow"]["sla_missed_at"].is_string(), "{status}");

    let miss = got
        .iter()
        .find(|r| r.headers["x-flow-event"] == "sla_miss")
        .unwrap();
    verify(miss, HOOK_KEY);
    let body: Value = serde_json::from_slice(&miss.body).unwrap();
    assert_eq!(body["event"], "sla_miss");
    assert_eq!(body["flow"], "late");
    assert_eq!(body["timeperiod"], TP);
    assert_eq!(body["mode"], "run_mode_nominal");
    assert_eq!(body["state"], "state_in_progress");
    assert_eq!(body["sla_deadline"], "2026-11-29T02:00:00Z");
    let first_run = body["run"].as_str().unwrap().to_string();
    assert!(!String::from_utf8_lossy(&miss.body).contains(HOOK_KEY));

    assert_eq!(running.release(), Some(1));
    home.write("fixed", "");
    let out = home
        .command(&["recover", "late.toml", "--timeperiod", TP])
        .env("FLOW_TEST_HOOK_KEY", HOOK_KEY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // `flow recover` exits after its notifications were delivered.
    assert_eq!(hook.count("recovered"), 1, "{:?}", hook.got());
    assert_eq!(hook.count("failure"), 1, "{:?}", hook.got());
    assert_eq!(hook.count("sla_miss"), 1, "once per flow and timeperiod");

    let status = home.status_json("late.toml", TP);
    assert_eq!(status["flow"]["state"], "state_processed", "{status}");
    assert!(
        status["flow"]["sla_missed_at"].is_string(),
        "kept: {status}"
    );
    let history: Value = serde_json::from_str(&stdout(
        &home.expect(0, &["history", "late.toml", "--timeperiod", TP, "--json"]),
    ))
    .unwrap();
    let marked: Vec<(&str, bool)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["sla_missed_at"].is_string()))
        .collect();
    assert_eq!(marked.len(), 2, "{history}");
    assert!(marked.contains(&(first_run.as_str(), true)), "{history}");
    assert_eq!(marked.iter().filter(|(_, m)| *m).count(), 1, "{history}");
    let table = stdout(&home.expect(0, &["history", "late.toml", "--timeperiod", TP]));
    assert!(table.contains("state_invalid (SLA missed)"), "{table}");
    assert_logged(&home, "late.toml", "SLA missed: [late, 2026112800]");
    assert_logged(
        &home,
        "late.toml",
        "notification 1 (webhook, sla_miss): delivered after 1 attempt(s)",
    );
}

/// `sla_from = "run_start"`: the timer runs from the run's start, so the
/// miss is posted a second in, while the step still waits, and the run
/// then ends processed.
#[test]
fn an_sla_from_the_run_start_fires_on_its_timer_while_the_run_waits() {
    let home = Home::new();
    let hook = Receiver::start(&[]);
    home.write("flow.toml", &hooked(&hook, "\"sla_miss\", \"success\""));
    home.write(
        "late.toml",
        &sla_flow(&home, "sla = \"1s\"\nsla_from = \"run_start\""),
    );
    home.write("fixed", "");
    let mut running = Running::start(&home);
    let got = hook.wait_for_event("sla_miss");
    assert!(running.still_running(), "posted while running");
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["event"], "sla_miss", "{body}");
    assert_eq!(running.release(), Some(0));
    assert_eq!(hook.count("success"), 1, "{:?}", hook.got());
    assert_eq!(hook.count("sla_miss"), 1);
    let status = home.status_json("late.toml", TP);
    assert!(status["flow"]["sla_missed_at"].is_string(), "{status}");
}

/// A run processed within its SLA posts `success` and no `sla_miss`, and
/// nothing is marked.
#[test]
fn a_run_within_its_sla_sends_no_sla_miss() {
    let home = Home::new();
    let hook = Receiver::start(&[]);
    home.write("flow.toml", &hooked(&hook, "\"sla_miss\", \"success\""));
    home.write(
        "late.toml",
        &sla_flow(&home, "sla = \"1h\"\nsla_from = \"run_start\""),
    );
    home.write("go", "");
    home.write("fixed", "");
    let out = home
        .command(&["run", "late.toml", "--timeperiod", TP])
        .env("FLOW_TEST_HOOK_KEY", HOOK_KEY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(hook.count("success"), 1, "{:?}", hook.got());
    assert_eq!(hook.count("sla_miss"), 0, "{:?}", hook.got());
    let status = home.status_json("late.toml", TP);
    assert!(status["flow"]["sla_missed_at"].is_null(), "{status}");
}
