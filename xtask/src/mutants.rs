//! `cargo xtask mutants`: mutation testing of the engine's core and the
//! SQLite store with `cargo-mutants`.
//!
//! Installs the pinned `cargo-mutants` into `<target>/tools/cargo-mutants`
//! (`cargo install --root`, once, reused while its version matches), then
//! mutates [`FILES`] one mutant at a time and runs the tests of
//! [`TEST_PACKAGES`] against each. It ends with a table of the caught share
//! per file (caught or timed out, out of the viable mutants) and the list of
//! survivors. Slow (hours on 2 cores): not part of `cargo xtask test` or CI.
//!
//! Builds go to `<target>/mutants-build` (their own directory: cargo-mutants
//! builds a copy of the tree, whose fingerprints would thrash the normal
//! build), results to `<target>/mutants/mutants.out`. Extra arguments go to
//! cargo-mutants, e.g. `-F 'dispatch'` (only mutants whose name matches),
//! `--shard 1/4`, `--iterate` (skip mutants caught by the previous run).

use std::collections::BTreeMap;
use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The cargo-mutants release `cargo xtask mutants` installs.
const CARGO_MUTANTS_VERSION: &str = "27.1.0";

/// The files whose mutants are tested (issue 15).
pub const FILES: &[&str] = &[
    "crates/flow-engine/src/dispatch.rs",
    "crates/flow-engine/src/engine.rs",
    "crates/flow-engine/src/step.rs",
    "crates/flow-engine/src/plan.rs",
    "crates/flow-store-sqlite/src/sql.rs",
    "crates/flow-store-sqlite/src/lib.rs",
];

/// Whose tests run against every mutant: the engine's tests use the real
/// store and the real local cluster, the store's own tests cover its file
/// format and leases. The binary's end-to-end tests (`tests/`) are left out:
/// they take minutes, and everything they check about these files is
/// checked faster here.
const TEST_PACKAGES: &[&str] = &["flow-engine", "flow-store-sqlite"];

/// Seconds one mutant's test run may take before it counts as a hang
/// (caught as a timeout). The unmutated suite takes ~12 s of tests; a busy
/// 2-core machine can double that. The tests' own waits for evidence give
/// up after 20 to 60 s, so a mutant that hangs the engine is cut short
/// here, not there.
const TEST_TIMEOUT_SECS: &str = "60";

/// Seconds one mutant's incremental build may take.
const BUILD_TIMEOUT_SECS: &str = "900";

pub fn mutants(args: &[OsString]) -> ExitCode {
    let root = super::workspace_root();
    let (target, _) = super::target_dir(&root);
    let tool = match ensure_cargo_mutants(&target.join("tools").join("cargo-mutants")) {
        Ok(tool) => tool,
        Err(err) => {
            eprintln!("xtask: cannot install cargo-mutants: {err}");
            return ExitCode::FAILURE;
        }
    };
    let output = target.join("mutants");
    let mut command = Command::new(&tool);
    command
        .current_dir(&root)
        .arg("mutants")
        .arg("--dir")
        .arg(&root)
        .arg("--output")
        .arg(&output)
        // One mutant at a time: each build already uses both cores.
        .args(["--jobs", "1", "--no-shuffle", "--colors", "never"])
        .args(["--timeout", TEST_TIMEOUT_SECS])
        .args(["--build-timeout", BUILD_TIMEOUT_SECS])
        // A mutant that only trips a lint is still a behaviour change.
        .args(["--cap-lints", "true"]);
    for package in TEST_PACKAGES {
        command.args(["--test-package", package]);
    }
    for file in FILES {
        command.args(["--file", file]);
    }
    command
        .args(args)
        .env("CARGO_TARGET_DIR", target.join("mutants-build"));
    eprintln!("xtask: running {}", super::display_command(&command));
    let status = match command.status() {
        Ok(status) => status,
        Err(err) => {
            eprintln!("xtask: cannot run cargo-mutants: {err}");
            return ExitCode::FAILURE;
        }
    };
    // cargo-mutants exits 2 when mutants were missed and 3 on timeouts:
    // the report below says which; other codes are failures of the tool.
    let out = output.join("mutants.out");
    match Report::read(&out) {
        Ok(report) => {
            print!("{}", report.render());
            eprintln!("xtask: details in {}", out.display());
        }
        Err(err) => eprintln!("xtask: no report in {}: {err}", out.display()),
    }
    match status.code() {
        Some(0 | 2 | 3) => ExitCode::SUCCESS,
        _ => super::exit_code(status),
    }
}

/// Makes sure `root/bin/cargo-mutants` is [`CARGO_MUTANTS_VERSION`];
/// returns its path.
fn ensure_cargo_mutants(root: &Path) -> Result<PathBuf, String> {
    let tool = root.join("bin").join("cargo-mutants");
    if installed_version(&tool).as_deref() == Some(CARGO_MUTANTS_VERSION) {
        eprintln!(
            "xtask: reusing cargo-mutants {CARGO_MUTANTS_VERSION} in {}",
            root.display()
        );
        return Ok(tool);
    }
    let mut install = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    install
        .args(["install", "--locked", "--force", "--version"])
        .arg(CARGO_MUTANTS_VERSION)
        .arg("--root")
        .arg(root)
        .arg("cargo-mutants")
        // cargo install builds in a temporary directory it removes after;
        // the workspace's target directory would keep ~300 MB of it.
        .env_remove("CARGO_TARGET_DIR");
    eprintln!("xtask: running {}", super::display_command(&install));
    super::run(&mut install)?;
    match installed_version(&tool) {
        Some(v) if v == CARGO_MUTANTS_VERSION => Ok(tool),
        other => Err(format!(
            "{} reports version {other:?} after the install",
            tool.display()
        )),
    }
}

/// `cargo-mutants mutants --version` says `cargo-mutants 27.1.0`.
fn installed_version(tool: &Path) -> Option<String> {
    let output = Command::new(tool)
        .args(["mutants", "--version"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .strip_prefix("cargo-mutants ")
        .map(|v| v.trim().to_string())
}

/// Outcomes per file, from the text files cargo-mutants writes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    /// file → (caught, timeout, missed, unviable)
    files: BTreeMap<String, [usize; 4]>,
    missed: Vec<String>,
}

/// The outcome lists of `mutants.out`, in the order of [`Report::files`]'
/// counters.
const OUTCOME_FILES: [&str; 4] = ["caught.txt", "timeout.txt", "missed.txt", "unviable.txt"];

impl Report {
    fn read(out: &Path) -> Result<Report, String> {
        let mut lists = Vec::new();
        for name in OUTCOME_FILES {
            let path = out.join(name);
            lists.push(fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?);
        }
        Ok(Report::parse(&lists))
    }

    /// `lists[i]` is the content of `OUTCOME_FILES[i]`: one mutant per line,
    /// `FILE:LINE:COL: description`.
    fn parse(lists: &[String]) -> Report {
        let mut report = Report::default();
        for file in FILES {
            report.files.insert((*file).to_string(), [0; 4]);
        }
        for (kind, list) in lists.iter().enumerate() {
            for line in list.lines().filter(|l| !l.trim().is_empty()) {
                let file = line.split(':').next().unwrap_or(line).to_string();
                report.files.entry(file).or_insert([0; 4])[kind] += 1;
                if OUTCOME_FILES[kind] == "missed.txt" {
                    report.missed.push(line.to_string());
                }
            }
        }
        report
    }

    fn render(&self) -> String {
        let mut out = String::from(
            "\nfile                                      caught  timeout  missed  unviable  caught share\n",
        );
        let mut total = [0usize; 4];
        for (file, counts) in &self.files {
            for (t, c) in total.iter_mut().zip(counts) {
                *t += c;
            }
            out.push_str(&row(file, counts));
        }
        out.push_str(&row("total", &total));
        if !self.missed.is_empty() {
            out.push_str("\nsurvivors (missed):\n");
            for line in &self.missed {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }
}

fn row(name: &str, [caught, timeout, missed, unviable]: &[usize; 4]) -> String {
    let viable = caught + timeout + missed;
    let share = if viable == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", 100.0 * (caught + timeout) as f64 / viable as f64)
    };
    format!("{name:<41} {caught:>7} {timeout:>8} {missed:>7} {unviable:>9}  {share:>12}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_per_file_and_lists_survivors() {
        let lists = [
            "crates/flow-engine/src/plan.rs:10:5: replace a with b\ncrates/flow-engine/src/plan.rs:11:5: replace c with d\n".to_string(),
            "crates/flow-engine/src/engine.rs:1:1: replace spawn_heartbeat with ()\n".to_string(),
            "crates/flow-engine/src/plan.rs:12:5: replace < with <=\n".to_string(),
            "crates/flow-store-sqlite/src/sql.rs:3:3: replace x -> T with Default::default()\n"
                .to_string(),
        ];
        let report = Report::parse(&lists);
        assert_eq!(report.files["crates/flow-engine/src/plan.rs"], [2, 0, 1, 0]);
        assert_eq!(
            report.files["crates/flow-engine/src/engine.rs"],
            [0, 1, 0, 0]
        );
        assert_eq!(
            report.files["crates/flow-store-sqlite/src/sql.rs"],
            [0, 0, 0, 1]
        );
        assert_eq!(report.files["crates/flow-engine/src/step.rs"], [0, 0, 0, 0]);
        assert_eq!(
            report.missed,
            ["crates/flow-engine/src/plan.rs:12:5: replace < with <="]
        );
        let table = report.render();
        assert!(
            table.contains("crates/flow-engine/src/plan.rs") && table.contains("66.7%"),
            "{table}"
        );
        assert!(table.contains("total"), "{table}");
        assert!(
            table.contains("75.0%"),
            "3 of 4 viable caught overall: {table}"
        );
    }
}
