//! The SMTP servers of the email notifications' tests, PyPI's `aiosmtpd`,
//! pinned, in a venv under `<target>/tools`, each on a free loopback port:
//!
//! * plain (`..._on_aiosmtpd`): its `Mailbox` handler stores every mail it
//!   accepts in a Maildir; the tests get `FLOW_TEST_SMTP_PORT` and
//!   `FLOW_TEST_SMTP_MAILDIR`.
//! * STARTTLS and login required (`..._on_starttls_aiosmtpd`):
//!   `tests/peers/smtp_starttls.py`, its certificate issued at start by a
//!   CA PyPI's `trustme` makes; the tests get `FLOW_TEST_SMTPS_PORT`,
//!   `FLOW_TEST_SMTPS_CA` (the CA's PEM), `FLOW_TEST_SMTPS_MAILS` (a JSON
//!   file per mail, with whether the session was TLS and its login),
//!   `FLOW_TEST_SMTPS_USER` and `FLOW_TEST_SMTPS_PASSWORD` (made here for
//!   each run, given to the server in its environment).

use crate::emulators::{install, Peer};
use crate::services::{self, Ready, Service, ServiceSpec};
use std::fs;
use std::path::Path;
use std::time::Duration;

// trustme's own dependency pinned too: the CA it makes is cryptography's.
const REQUIREMENT: &str = "aiosmtpd==1.4.6 trustme==1.2.1 cryptography==51.0.1";
const MARKER: &str = ".flow-aiosmtpd-installed";
/// The name filter of the tests that need the plain SMTP server.
pub const TESTS: &str = "_on_aiosmtpd";
/// The name filter of the tests that need the STARTTLS server.
pub const STARTTLS_TESTS: &str = "_on_starttls_aiosmtpd";
/// The login the STARTTLS server takes.
const USER: &str = "flow-notify";

/// The peers, and the running servers (stopped when dropped).
pub fn start(tools: &Path, logs: &Path) -> Vec<(Peer, Option<Service>)> {
    vec![
        crate::emulators::start_peer("aiosmtpd", TESTS, || launch(tools, logs)),
        crate::emulators::start_peer("aiosmtpd-starttls", STARTTLS_TESTS, || {
            launch_starttls(tools, logs)
        }),
    ]
}

type Env = Vec<(String, String)>;

fn venv(tools: &Path) -> Result<std::path::PathBuf, String> {
    let venv = tools.join("aiosmtpd-venv");
    install(&venv, REQUIREMENT, MARKER, |v| {
        v.join("bin").join("aiosmtpd").is_file() && v.join("bin").join("python").is_file()
    })?;
    Ok(venv)
}

fn launch(tools: &Path, logs: &Path) -> Result<(Env, Service), String> {
    let venv = venv(tools)?;
    // A fresh Maildir each run: no mail of an earlier run is read.
    let maildir = tools.join("aiosmtpd-maildir");
    let _ = fs::remove_dir_all(&maildir);
    let spec = ServiceSpec {
        name: "aiosmtpd",
        program: venv.join("bin").join("aiosmtpd"),
        args: vec![
            "-n".into(),
            "-l".into(),
            "127.0.0.1:{port}".into(),
            "-c".into(),
            "aiosmtpd.handlers.Mailbox".into(),
            maildir.display().to_string(),
        ],
        env: Vec::new(),
        ready: Ready::Tcp,
        startup_timeout: Duration::from_secs(30),
    };
    let service = services::start(&spec, logs)?;
    let env = vec![
        ("FLOW_TEST_SMTP_PORT".to_string(), service.port.to_string()),
        (
            "FLOW_TEST_SMTP_MAILDIR".to_string(),
            maildir.display().to_string(),
        ),
    ];
    Ok((env, service))
}

fn launch_starttls(tools: &Path, logs: &Path) -> Result<(Env, Service), String> {
    let venv = venv(tools)?;
    // Fresh each run: no mail or CA of an earlier run is read.
    let dir = tools.join("aiosmtpd-starttls");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (ca, mails) = (dir.join("ca.pem"), dir.join("mails"));
    let password = password();
    let spec = ServiceSpec {
        name: "aiosmtpd-starttls",
        program: venv.join("bin").join("python"),
        args: vec![
            crate::workspace_root()
                .join("tests/peers/smtp_starttls.py")
                .display()
                .to_string(),
            "--port".into(),
            "{port}".into(),
            "--ca".into(),
            ca.display().to_string(),
            "--mails".into(),
            mails.display().to_string(),
            "--user".into(),
            USER.into(),
        ],
        env: vec![("FLOW_TEST_SMTPS_PASSWORD".into(), password.clone())],
        // The CA file is written before the port opens.
        ready: Ready::Tcp,
        startup_timeout: Duration::from_secs(30),
    };
    let service = services::start(&spec, logs)?;
    let env = [
        ("FLOW_TEST_SMTPS_PORT", service.port.to_string()),
        ("FLOW_TEST_SMTPS_CA", ca.display().to_string()),
        ("FLOW_TEST_SMTPS_MAILS", mails.display().to_string()),
        ("FLOW_TEST_SMTPS_USER", USER.to_string()),
        ("FLOW_TEST_SMTPS_PASSWORD", password),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .to_vec();
    Ok((env, service))
}

/// A password for this run only (a test checks it never shows in output:
/// a fixed one could be there by chance of a fixture).
fn password() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("smtp-pw-{:x}-{}", nanos, std::process::id())
}
