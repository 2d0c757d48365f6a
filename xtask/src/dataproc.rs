//! The Dataproc contract fake for the end-to-end tests.
//!
//! Dataproc has no emulator; its contract fake is a binary of the
//! test-support crate `dataproc-contract-fake`, which the `flow` binary's
//! Dataproc tests start as their own process (so it outlives an engine they
//! kill). `cargo test` builds a package's binaries only for its own
//! integration tests, so xtask builds it first and passes its path in
//! `FLOW_TEST_DATAPROC_FAKE`. If that build fails, the tests that need it
//! fail loudly (they look for the binary and say how to build it).

use std::path::Path;
use std::process::Command;

/// Builds the fake (debug) and returns the environment for the tests.
pub fn prepare(root: &Path, target: &Path, target_from_env: bool) -> Vec<(String, String)> {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(root).args([
        "build",
        "--quiet",
        "-p",
        "dataproc-contract-fake",
        "--bin",
        "dataproc-contract-fake",
    ]);
    if target_from_env {
        cargo.env("CARGO_TARGET_DIR", target);
    }
    match crate::run(&mut cargo) {
        Ok(()) => {
            let binary = target.join("debug").join("dataproc-contract-fake");
            vec![(
                "FLOW_TEST_DATAPROC_FAKE".to_string(),
                binary.display().to_string(),
            )]
        }
        Err(e) => {
            eprintln!("xtask: warning: cannot build the Dataproc contract fake: {e}");
            Vec::new()
        }
    }
}
