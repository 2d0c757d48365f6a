//! `cargo xtask`: project automation for the flow workspace.
//!
//! Invoked through the alias in `.cargo/config.toml` (`cargo xtask <command>`).
//!
//! * `cargo xtask test [--allow-skip NAME]... [ARGS...]` is the test command
//!   of the README, of the book's Testing page and of CI (`.ci/run`). It installs and starts every peer
//!   the tests need (pyspark with Java for the Spark tests; moto and
//!   fake-gcs-server, `emulators.rs`; nx-27017 and SecantusDB, the two
//!   MongoDB wire servers, `mongo.rs`; headless Chromium, `viewer.rs`;
//!   Debian's Prometheus scraping `flow serve`, `prometheus.rs`; the SMTP
//!   server aiosmtpd for email notifications, plain and STARTTLS with login, `smtp.rs`; an OpenLineage
//!   receiver validating with openlineage-python, `openlineage.rs`;
//!   the OTLP/HTTP trace receiver on `opentelemetry-proto`, `otlp.rs`),
//!   builds the contract fakes from this tree (`contract_fakes.rs`), and
//!   runs `cargo test --workspace ARGS...` with flow-cli's `mongo`, `emr`
//!   and `dataproc` features (a `-p` selection holding flow-cli keeps
//!   them). Strict (`strict.rs`): a peer that is missing while the run
//!   holds tests that need it fails the run, naming it, unless
//!   `--allow-skip PEER` asks for a partial run (printed in the summary);
//!   tests that cannot take one of their checks fail unless
//!   `--allow-skip CHECK` names it. Before running, it lists the ignored
//!   tests: each must belong to a peer or be a known helper (`ignored.rs`),
//!   or the run fails. Every example must be a test (`test = true` and a
//!   `#[test]` calling its `main`), so `cargo test` runs it; a full run
//!   then builds the docs with warnings as errors (`library.rs`). Before
//!   building, `cargo tree` of each feature combination of flow-cli must
//!   hold only what its features bring (`features.rs`; `cargo xtask
//!   features` also compiles each). A full run also builds the book under
//!   `docs/` and checks its links (`book.rs`), before the tests.
//!
//! * `cargo xtask docs` builds and checks only the book (`book.rs`).
//!
//! * `cargo xtask bench [ARGS...]` builds `flow-bench` and `flow` in release,
//!   makes sure a venv holding Luigi exists at `<target>/tools/bench-venv`,
//!   and runs `flow-bench` (see `crates/flow-bench`), which prints the table
//!   and writes `<target>/bench/latest.json`; then, unless the arguments
//!   pick other shapes, the viewer's page benchmark (`viewer.rs`).
//!
//!   It also starts nx-27017 and SecantusDB for the MongoDB shapes.
//!
//! * `cargo xtask mutants [ARGS...]` runs mutation testing (see `mutants.rs`).
//!
//! Environment: `CARGO_TARGET_DIR` (where the venvs live; default
//! `<workspace>/target`); `FLOW_SKIP_SPARK_INSTALL=1`,
//! `FLOW_SKIP_EMULATORS=1`, `FLOW_SKIP_BROWSER_INSTALL=1` and
//! `FLOW_SKIP_PROMETHEUS_INSTALL=1` install or
//! start none of those peers (so the run fails unless they are allowed to
//! skip); `FLOW_TEST_FAIL_PEER=NAME` marks a peer missing, to try the
//! strictness.
//!
//! std only, so that it builds in seconds on a fresh clone.

mod apt;
mod bench;
mod book;
mod contract_fakes;
mod emulators;
mod features;
mod ignored;
mod library;
mod mongo;
mod msrv;
mod mutants;
mod openlineage;
mod otlp;
mod prometheus;
mod services;
mod smtp;
mod strict;
mod synergy;
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
  test [--allow-skip NAME]... [ARGS...]
                  install pyspark into <target>/tools/venv and the peers
                  (moto, fake-gcs-server, Azurite, nx-27017, SecantusDB) into
                  <target>/tools/ (once, then reused), start them on
                  free loopback ports, run `cargo test --workspace ARGS...`
                  and stop them; a package selection in ARGS (e.g.
                  `-p flow-core`) replaces `--workspace`. A peer missing
                  while the run has tests that need it fails the run,
                  unless `--allow-skip PEER` (a partial run, said in the
                  summary); `--allow-skip CHECK` lets a test skip that
                  in-test check (store-interrupt, store-legacy); a full
                  run first builds and checks the book (see `docs`)
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
  FLOW_SKIP_EMULATORS=1      do not install or start moto, fake-gcs-server,
                             Azurite, nx-27017 and SecantusDB
  FLOW_SKIP_BROWSER_INSTALL=1  do not apt-get install chromium and chromium-driver
  FLOW_CHROMIUM, FLOW_CHROMEDRIVER  the browser and driver to use
                             (default /usr/bin/chromium, /usr/bin/chromedriver)
  FLOW_SKIP_PROMETHEUS_INSTALL=1  do not apt-get install prometheus
  FLOW_PROMETHEUS, FLOW_PROMTOOL  Prometheus and promtool to use
                             (default /usr/bin/prometheus, /usr/bin/promtool)
  FLOW_MONGO_URI             run the nx-27017 tests against this server instead
  FLOW_TEST_SECANTUSDB_URI   run the SecantusDB tests against this server
                             instead (a replica set, with a user in the URI)
  FLOW_TEST_FAIL_PEER=NAME   mark that peer missing (to try the strictness)
  (a peer skipped by these fails the run unless --allow-skip names it)
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

/// The features of flow-cli whose tests go through the binary: the MongoDB
/// store's and the EMR, Dataproc and Qubole clusters' end-to-end tests.
const CLI_TEST_FEATURES: &str =
    "flow-cli/mongo,flow-cli/emr,flow-cli/dataproc,flow-cli/qubole,flow-cli/azure,flow-cli/otel";

/// `cargo xtask test`.
fn test(args: &[OsString]) -> ExitCode {
    let parsed = match strict::parse(args) {
        Ok(parsed) => parsed,
        Err(why) => {
            eprintln!("xtask: {why}");
            return ExitCode::from(2);
        }
    };
    let args = &parsed.cargo[..];
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
    peers.extend(mongo.peers.iter().map(|p| emulators::Peer {
        env: p.env.clone(),
        available: p.available.clone(),
        ..*p
    }));
    // Headless Chromium for the viewer's browser test.
    peers.push(viewer::peer());
    // Prometheus scraping `flow serve` (stopped when dropped).
    let (peer, prometheus) =
        prometheus::start(&target.join("tools"), &target.join("tools").join("logs"));
    peers.push(peer);
    // Synergy Scheduler's model classes, for the Job documents' test.
    peers.push(synergy::peer(&target.join("tools")));
    // The SMTP servers for the email notifications, plain and STARTTLS
    // with login (stopped when dropped).
    let mut smtp = Vec::new();
    for (peer, service) in smtp::start(&target.join("tools"), &target.join("tools").join("logs")) {
        peers.push(peer);
        smtp.push(service);
    }
    // An OpenLineage receiver validating every event (stopped when dropped).
    let (peer, lineage) =
        openlineage::start(&target.join("tools"), &target.join("tools").join("logs"));
    peers.push(peer);
    // An OTLP/HTTP receiver for the traces (stopped when dropped).
    let (peer, otlp) = otlp::start(&target.join("tools"), &target.join("tools").join("logs"));
    peers.push(peer);
    // The contract fakes, built from this tree, or the run fails (never a
    // stale binary). Each API's end-to-end tests that need no other peer
    // are its own (`..._on_fake_dataproc`).
    match contract_fakes::prepare(&root, &target, target_from_env) {
        Ok(env) => peers.extend(
            contract_fakes::APIS
                .iter()
                .map(|(name, tests)| emulators::Peer {
                    name,
                    tests,
                    available: Ok(()),
                    env: env.clone(),
                }),
        ),
        Err(why) => {
            eprintln!("xtask: FAILED: {why}");
            return ExitCode::FAILURE;
        }
    }
    force_missing(&mut peers);
    let unknown = strict::unknown_names(&parsed.allow_skip, &peers);
    if !unknown.is_empty() {
        eprintln!(
            "xtask: --allow-skip {}: no such peer or in-test check (peers: {}; checks: {})",
            unknown.join(","),
            peers.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
            strict::IN_TEST
                .iter()
                .map(|(c, _)| *c)
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(2);
    }

    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(&root).arg("test");
    if !selects_packages(args) {
        cargo.arg("--workspace");
    }
    match test_features(args) {
        Features::Add => {
            cargo.args(["--features", CLI_TEST_FEATURES]);
        }
        Features::Chosen => eprintln!(
            "xtask: note: the features you chose replace {CLI_TEST_FEATURES}: the binary's \
             tests of the features left out are not compiled and not run"
        ),
        Features::NotNeeded => {}
    }
    cargo.args(args);
    cargo.env(strict::ALLOW_SKIP_ENV, parsed.allow_skip.join(","));
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
    let ignored = match ignored::check(&cargo, &peers) {
        Ok((extra, ignored)) => {
            cargo.args(extra);
            ignored
        }
        Err(err) => {
            eprintln!("xtask: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Strict: a missing peer this run's tests need fails it, before the
    // long part, unless allowed.
    let verdict = strict::judge(&peers, &ignored, &parsed.allow_skip);
    strict::report(&verdict);
    if verdict.fails() {
        eprintln!(
            "xtask: FAILED: {} peer(s) missing: {}",
            verdict.missing.len(),
            verdict
                .missing
                .iter()
                .map(|(name, _, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::FAILURE;
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
    drop(prometheus);
    drop(smtp);
    drop(lineage);
    drop(otlp);
    strict::summary(&peers, &ignored, &verdict, &parsed.allow_skip);
    // The docs of the whole workspace, warning-free (library.rs).
    if !selects_packages(args) && code == ExitCode::SUCCESS {
        return library::doc(&root, target_from_env.then_some(target.as_path()));
    }
    code
}

/// `FLOW_TEST_FAIL_PEER=NAME[,NAME]` marks those peers missing, as if their
/// install had failed: how the strictness itself is tried
/// (`FLOW_TEST_FAIL_PEER=moto cargo xtask test -p flow-fs-s3` must fail
/// naming moto).
fn force_missing(peers: &mut [emulators::Peer]) {
    let Some(names) = env::var("FLOW_TEST_FAIL_PEER")
        .ok()
        .filter(|n| !n.is_empty())
    else {
        return;
    };
    for peer in peers.iter_mut() {
        if names.split(',').any(|n| n.trim() == peer.name) {
            peer.available = Err("forced missing by FLOW_TEST_FAIL_PEER".into());
        }
    }
}

/// Whether the run adds [`CLI_TEST_FEATURES`].
#[derive(Debug, PartialEq, Eq)]
enum Features {
    /// The whole workspace, or a selection holding flow-cli.
    Add,
    /// The user chose features (`--features`, `--all-features`,
    /// `--no-default-features`): theirs are kept, and xtask says what that
    /// leaves out.
    Chosen,
    /// A selection without flow-cli: its tests need no feature of flow-cli.
    NotNeeded,
}

fn test_features(args: &[OsString]) -> Features {
    let before: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .take_while(|a| a != "--")
        .collect();
    if before.iter().any(|a| {
        a == "--features"
            || a.starts_with("--features=")
            || a == "-F"
            || a == "--all-features"
            || a == "--no-default-features"
    }) {
        return Features::Chosen;
    }
    if !selects_packages(args) || before.iter().any(|a| a == "--workspace" || a == "--all") {
        return Features::Add;
    }
    let mut packages = Vec::new();
    let mut iter = before.iter();
    while let Some(arg) = iter.next() {
        if arg == "-p" || arg == "--package" {
            packages.extend(iter.next().cloned());
        } else if let Some(p) = arg.strip_prefix("--package=") {
            packages.push(p.to_string());
        } else if let Some(p) = arg.strip_prefix("-p").filter(|_| !arg.starts_with("--")) {
            packages.push(p.to_string());
        }
    }
    if packages.iter().any(|p| p == "flow-cli") {
        Features::Add
    } else {
        Features::NotNeeded
    }
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
    // Several pip arguments may be given (`--no-deps a==1 b==2`).
    run(pip.args(requirement.split_whitespace()))?;
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
        eprintln!("xtask: FLOW_SKIP_SPARK_INSTALL is set, not installing pyspark; the Spark tests cannot run");
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
            eprintln!("xtask: warning: continuing without Spark; the Spark tests cannot run");
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
                "xtask: warning: no spark-submit in {}; the Spark tests cannot run",
                bin.display()
            );
            return None;
        }
        let Some(home) = pyspark_home(venv) else {
            eprintln!(
                "xtask: warning: no pyspark package under {}; the Spark tests cannot run",
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
                    "xtask: warning: `{} -version` failed ({}); the Spark tests cannot run",
                    java.display(),
                    output.status
                );
                None
            }
            Err(err) => {
                eprintln!("xtask: warning: cannot run {} ({err}), pyspark needs Java; the Spark tests cannot run", java.display());
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
    fn selections_keep_the_features_their_tests_need() {
        assert_eq!(test_features(&args(&[])), Features::Add);
        assert_eq!(test_features(&args(&["-p", "flow-cli"])), Features::Add);
        assert_eq!(
            test_features(&args(&["-p", "flow-core", "--package=flow-cli"])),
            Features::Add
        );
        assert_eq!(test_features(&args(&["--workspace"])), Features::Add);
        assert_eq!(
            test_features(&args(&["-p", "flow-store-mongo"])),
            Features::NotNeeded
        );
        assert_eq!(
            test_features(&args(&["-p", "flow-cli", "--features", "emr"])),
            Features::Chosen
        );
        assert_eq!(
            test_features(&args(&["-p", "flow-cli", "--", "--features"])),
            Features::Add
        );
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
