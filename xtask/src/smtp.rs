//! An SMTP server for the email notifications' tests
//! (`..._on_aiosmtpd`): PyPI's `aiosmtpd`, pinned, in a venv under
//! `<target>/tools`, started on a free loopback port with its `Mailbox`
//! handler, which stores every mail it accepts in a Maildir. The tests get
//! `FLOW_TEST_SMTP_PORT` and `FLOW_TEST_SMTP_MAILDIR` and read the mails
//! there.

use crate::emulators::{install, Peer};
use crate::services::{self, Ready, Service, ServiceSpec};
use std::fs;
use std::path::Path;
use std::time::Duration;

const REQUIREMENT: &str = "aiosmtpd==1.4.6";
const MARKER: &str = ".flow-aiosmtpd-installed";
/// The name filter of the tests that need the SMTP server.
pub const TESTS: &str = "_on_aiosmtpd";

/// The peer, and the running server (stopped when dropped).
pub fn start(tools: &Path, logs: &Path) -> (Peer, Option<Service>) {
    crate::emulators::start_peer("aiosmtpd", TESTS, || launch(tools, logs))
}

type Env = Vec<(String, String)>;

fn launch(tools: &Path, logs: &Path) -> Result<(Env, Service), String> {
    let venv = tools.join("aiosmtpd-venv");
    install(&venv, REQUIREMENT, MARKER, |v| {
        v.join("bin").join("aiosmtpd").is_file()
    })?;
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
