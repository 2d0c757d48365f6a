//! An OpenLineage receiver for the lineage tests (`..._on_openlineage`):
//! `tests/peers/openlineage_receiver.py` on PyPI's `openlineage-python`,
//! pinned, in a venv under `<target>/tools`, started on a free loopback
//! port. It answers Marquez's `POST /api/v1/lineage`, validates every
//! event against the OpenLineage spec with the client's models and
//! records it; the tests get `FLOW_TEST_OPENLINEAGE_URL` and read what
//! arrived at `GET {url}/_flow_test/events`.

use crate::emulators::{install, Peer};
use crate::services::{self, Ready, Service, ServiceSpec};
use std::path::Path;
use std::time::Duration;

const REQUIREMENT: &str = "openlineage-python==1.54.0";
const MARKER: &str = ".flow-openlineage-installed";
/// The name filter of the tests that need the receiver.
pub const TESTS: &str = "_on_openlineage";

/// The peer, and the running receiver (stopped when dropped).
pub fn start(tools: &Path, logs: &Path) -> (Peer, Option<Service>) {
    crate::emulators::start_peer("openlineage", TESTS, || launch(tools, logs))
}

type Env = Vec<(String, String)>;

fn launch(tools: &Path, logs: &Path) -> Result<(Env, Service), String> {
    let venv = tools.join("openlineage-venv");
    install(&venv, REQUIREMENT, MARKER, |v| {
        v.join("bin").join("python").is_file()
    })?;
    let receiver = crate::workspace_root().join("tests/peers/openlineage_receiver.py");
    let spec = ServiceSpec {
        name: "openlineage",
        program: venv.join("bin").join("python"),
        args: vec![
            receiver.display().to_string(),
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            "{port}".into(),
        ],
        env: Vec::new(),
        ready: Ready::Http("/"),
        startup_timeout: Duration::from_secs(30),
    };
    let service = services::start(&spec, logs)?;
    let env = vec![(
        "FLOW_TEST_OPENLINEAGE_URL".to_string(),
        format!("http://127.0.0.1:{}", service.port),
    )];
    Ok((env, service))
}
