//! The Dataproc contract fake for the end-to-end tests.
//!
//! Dataproc has no emulator; its contract fake is a binary of the
//! test-support crate `dataproc-contract-fake`, which the `flow` binary's
//! Dataproc tests start as their own process (so it outlives an engine they
//! kill). `cargo test` builds a package's binaries only for its own
//! integration tests, so xtask builds it first and passes its path in
//! `FLOW_TEST_DATAPROC_FAKE`. If that build fails, the run fails; the tests
//! use no other binary (none left in `target/` by an older tree).

use std::path::Path;

/// The name filter of the end-to-end tests that need only the fake (a flow
/// without GCS steps); those with GCS steps are `..._on_fake_gcs` tests.
pub const TESTS: &str = "_on_fake_dataproc";
use std::process::Command;

/// Builds the fake (debug) from this tree and returns the environment for
/// the tests; a failed build is the run's failure (the tests never fall
/// back on a binary left in `target/` by an older tree).
pub fn prepare(
    root: &Path,
    target: &Path,
    target_from_env: bool,
) -> Result<Vec<(String, String)>, String> {
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
    crate::run(&mut cargo)
        .map_err(|e| format!("cannot build the Dataproc contract fake from this tree: {e}"))?;
    let binary = target.join("debug").join("dataproc-contract-fake");
    Ok(vec![(
        "FLOW_TEST_DATAPROC_FAKE".to_string(),
        binary.display().to_string(),
    )])
}
