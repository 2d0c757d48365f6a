//! `cargo xtask bench`: builds `flow-bench` and `flow` in release, makes sure
//! a venv with Luigi exists at `<target>/tools/bench-venv`, and runs
//! `flow-bench`, which measures every shape, runs Luigi for the comparison,
//! prints the machine, the table and the targets, and writes the report to
//! `<target>/bench/bench-<UTC timestamp>.json` and `<target>/bench/latest.json`.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The Luigi release the comparison runs against.
const LUIGI_VERSION: &str = "3.8.1";

/// Written into the venv once Luigi is installed; holds `luigi==VERSION`.
const MARKER_FILE: &str = ".flow-luigi-installed";

/// `cargo xtask bench [FLOW-BENCH ARGS...]`, e.g. `--synchronous full` or
/// `--only chain-1000`.
pub fn bench(args: &[OsString]) -> ExitCode {
    let root = super::workspace_root();
    let (target, target_from_env) = super::target_dir(&root);

    let mut build = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .current_dir(&root)
        .args(["build", "--release", "-p", "flow-bench", "-p", "flow-cli"]);
    if target_from_env {
        build.env("CARGO_TARGET_DIR", &target);
    }
    eprintln!("xtask: running {}", super::display_command(&build));
    if let Err(err) = super::run(&mut build) {
        eprintln!("xtask: {err}");
        return ExitCode::FAILURE;
    }

    let release = target.join("release");
    let mut flow_bench = Command::new(release.join("flow-bench"));
    flow_bench
        .current_dir(&root)
        .arg("--flow-bin")
        .arg(release.join("flow"))
        .arg("--out-dir")
        .arg(target.join("bench"))
        // Where stores and logs go. Creating files costs very different
        // amounts in different parts of a busy disk (bench/README.md); the
        // report prints what it cost.
        .arg("--scratch")
        .arg(scratch_dir(&target));
    let hello = root.join("examples").join("hello.toml");
    if hello.is_file() {
        flow_bench.arg("--validate-file").arg(hello);
    }
    match ensure_luigi(&target.join("tools").join("bench-venv")) {
        Ok(python) => {
            flow_bench
                .arg("--luigi-python")
                .arg(python)
                .arg("--luigi-script")
                .arg(root.join("bench").join("luigi_bench.py"));
        }
        Err(err) => {
            eprintln!("xtask: warning: no Luigi ({err}); the table will have no Luigi comparison");
        }
    }
    // The MongoDB shapes run on both servers of the tests (mongo.rs),
    // started for the run (stopped when `_mongo` is dropped), unless the
    // arguments pick other shapes.
    let wants_mongo = !args.iter().any(|a| a == "--only" || a == "--shape")
        || args.iter().any(|a| a.to_string_lossy().contains("mongo"));
    let _mongo = wants_mongo.then(|| {
        let tools = target.join("tools");
        let mongo = crate::mongo::start(&tools, &tools.join("logs"));
        let servers: Vec<String> = mongo
            .peers
            .iter()
            .filter_map(|peer| match &peer.available {
                Ok(()) => peer
                    .env
                    .first()
                    .map(|(_, uri)| format!("{}={uri}", peer.name)),
                Err(why) => {
                    eprintln!(
                        "xtask: warning: the MongoDB shapes are not measured on {}: {why}",
                        peer.name
                    );
                    None
                }
            })
            .collect();
        // In the environment: a URI may carry a password.
        flow_bench.env("FLOW_BENCH_MONGO", servers.join(" "));
        mongo
    });
    flow_bench.args(args);
    eprintln!("xtask: running {}", super::display_command(&flow_bench));
    match flow_bench.status() {
        Ok(status) => super::exit_code(status),
        Err(err) => {
            eprintln!("xtask: cannot run flow-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Makes sure `venv` holds Luigi [`LUIGI_VERSION`] (created once, reused
/// while its marker matches); returns its Python.
fn ensure_luigi(venv: &Path) -> Result<PathBuf, String> {
    let python = venv.join("bin").join("python");
    let requirement = format!("luigi=={LUIGI_VERSION}");
    let reused = super::ensure_venv(venv, &requirement, MARKER_FILE, |v| {
        v.join("bin").join("python").exists()
    })?;
    let verb = if reused { "reusing" } else { "installed" };
    eprintln!("xtask: {verb} {requirement} in {}", venv.display());
    Ok(python)
}

/// `$FLOW_BENCH_SCRATCH`, else `/var/tmp/flow-bench` where `/var/tmp` is
/// writable, else `<target>/bench/scratch`. Not `target/` first: cargo
/// deletes files there all the time, and on filesystems without a journal
/// ext4 makes creating files near recently deleted ones slow, which every
/// step's log file would pay.
fn scratch_dir(target: &Path) -> PathBuf {
    if let Some(dir) = env::var_os("FLOW_BENCH_SCRATCH").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let var_tmp = Path::new("/var/tmp/flow-bench");
    if fs::create_dir_all(var_tmp).is_ok() {
        return var_tmp.to_path_buf();
    }
    target.join("bench").join("scratch")
}
