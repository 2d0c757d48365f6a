//! An OTLP/HTTP trace receiver for the telemetry tests (`..._on_otlp`):
//! `tests/peers/otlp_receiver.py`, which decodes what arrives with PyPI's
//! `opentelemetry-proto` (pinned, in a venv under `<target>/tools`),
//! started on a free loopback port. It appends every span it accepts to a
//! JSON-lines file; the tests get `FLOW_TEST_OTLP_ENDPOINT` and
//! `FLOW_TEST_OTLP_SPANS` and read the spans there.

use crate::emulators::{install, Peer};
use crate::services::{self, Ready, Service, ServiceSpec};
use std::path::Path;
use std::time::Duration;

const REQUIREMENT: &str = "opentelemetry-proto==1.39.1";
const MARKER: &str = ".flow-otlp-receiver-installed";
/// The name filter of the tests that need the receiver.
pub const TESTS: &str = "_on_otlp";

/// The peer, and the running receiver (stopped when dropped).
pub fn start(tools: &Path, logs: &Path) -> (Peer, Option<Service>) {
    crate::emulators::start_peer("otlp-receiver", TESTS, || launch(tools, logs))
}

type Env = Vec<(String, String)>;

fn launch(tools: &Path, logs: &Path) -> Result<(Env, Service), String> {
    let venv = tools.join("otlp-venv");
    install(&venv, REQUIREMENT, MARKER, |v| {
        v.join("lib").is_dir() && v.join("bin").join("python").is_file()
    })?;
    // The receiver empties it when it starts: no span of an earlier run.
    let spans = tools.join("otlp-spans.jsonl");
    let launcher = crate::workspace_root().join("tests/peers/otlp_receiver.py");
    let spec = ServiceSpec {
        name: "otlp-receiver",
        program: venv.join("bin").join("python"),
        args: vec![
            launcher.display().to_string(),
            "--port".into(),
            "{port}".into(),
            "--spans".into(),
            spans.display().to_string(),
        ],
        env: Vec::new(),
        ready: Ready::Tcp,
        startup_timeout: Duration::from_secs(30),
    };
    let service = services::start(&spec, logs)?;
    let env = vec![
        (
            "FLOW_TEST_OTLP_ENDPOINT".to_string(),
            format!("http://127.0.0.1:{}", service.port),
        ),
        (
            "FLOW_TEST_OTLP_SPANS".to_string(),
            spans.display().to_string(),
        ),
    ];
    Ok((env, service))
}
