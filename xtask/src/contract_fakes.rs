//! The contract fakes for the end-to-end tests.
//!
//! The APIs without an emulator (Dataproc today) have contract fakes in the
//! test-support crate `contract-fakes`, one binary serving one API per
//! process (`contract-fakes dataproc ...`), which the `flow` binary's tests
//! start as their own process (so it outlives an engine they kill).
//! `cargo test` builds a package's binaries only for its own integration
//! tests, so xtask builds it first, from this tree, and passes its path in
//! `FLOW_TEST_CONTRACT_FAKES`. If that build fails, the run fails; the
//! tests use no other binary (none left in `target/` by an older tree).

use std::path::Path;
use std::process::Command;

/// Each API's peer name and the name filter of its end-to-end tests that
/// need only its fake (those that also need GCS are `..._on_fake_gcs`).
/// A new API module adds a line here.
pub const APIS: &[(&str, &str)] = &[
    ("fake-dataproc", "_on_fake_dataproc"),
    ("fake-qubole", "_on_fake_qubole"),
    // HDInsight: the Livy and WebHCat fakes of its gateway and the ARM
    // fake creating its clusters, one process each.
    ("fake-hdinsight", "_on_fake_hdinsight"),
];

/// Builds the binary (debug) from this tree and returns the environment
/// for the tests; a failed build is the run's failure (the tests never
/// fall back on a binary left in `target/` by an older tree).
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
        "contract-fakes",
        "--bin",
        "contract-fakes",
        // The WebHCat fake writes status directories to Azurite.
        "--features",
        "blob",
    ]);
    if target_from_env {
        cargo.env("CARGO_TARGET_DIR", target);
    }
    crate::run(&mut cargo)
        .map_err(|e| format!("cannot build the contract fakes from this tree: {e}"))?;
    // A copy of its own: `cargo test` builds the same binary again for the
    // crate's own tests, without the `blob` feature, over target/debug's.
    let built = target.join("debug").join("contract-fakes");
    let dir = target.join("contract-fakes");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let binary = dir.join("contract-fakes");
    std::fs::copy(&built, &binary).map_err(|e| {
        format!(
            "cannot copy {} to {}: {e}",
            built.display(),
            binary.display()
        )
    })?;
    Ok(vec![(
        "FLOW_TEST_CONTRACT_FAKES".to_string(),
        binary.display().to_string(),
    )])
}
