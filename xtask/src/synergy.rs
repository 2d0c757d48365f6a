//! The Synergy Scheduler's own model classes, a peer like the emulators:
//! the MongoDB store's Jobs are Synergy Scheduler 2.3's Job documents, and
//! the test that proves it both ways (`..._with_synergy_models`) runs
//! Synergy's `Job.from_json(...).validate()` and `Job(...).document` in
//! Python. xtask installs `synergy-scheduler` and `synergy-odm` from PyPI
//! into `<target>/tools/synergy-venv` (once, reused), without their
//! dependencies: the model module imports only the ODM, and the
//! scheduler's other requirements (AMQP, MongoDB drivers, Synergy Flow)
//! are not needed to build and check a document. Tests get the venv's
//! interpreter in `FLOW_TEST_SYNERGY_PYTHON`.

use crate::emulators::Peer;
use std::path::Path;
use std::process::Command;

/// What is installed (pip arguments; the marker file records them).
pub const REQUIREMENT: &str = "--no-deps synergy-scheduler==2.3 synergy-odm==0.11";
const MARKER: &str = ".flow-synergy-installed";
/// The name filter of the tests that need it.
pub const TESTS: &str = "_with_synergy_models";

/// The peer: the venv's Python, once `synergy.db.model.job` imports.
pub fn peer(tools: &Path) -> Peer {
    let venv = tools.join("synergy-venv");
    let usable = |v: &Path| {
        Command::new(v.join("bin").join("python"))
            .args(["-c", "import synergy.db.model.job"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let (available, env) = match crate::ensure_venv(&venv, REQUIREMENT, MARKER, usable) {
        Ok(_) => (
            Ok(()),
            vec![(
                "FLOW_TEST_SYNERGY_PYTHON".to_string(),
                venv.join("bin").join("python").display().to_string(),
            )],
        ),
        Err(why) => {
            eprintln!("xtask: warning: synergy-scheduler is not available: {why}");
            (Err(why), Vec::new())
        }
    };
    Peer {
        name: "synergy-scheduler",
        tests: TESTS,
        available,
        env,
    }
}
