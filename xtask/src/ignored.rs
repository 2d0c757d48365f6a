//! Which `#[ignore]`d tests `cargo xtask test` may include.
//!
//! A test that needs a peer (spark-submit, an emulator, a server) is
//! `#[ignore]`d and its peer is listed where xtask starts it (`main.rs` for
//! Spark, `emulators.rs`, `mongo.rs`), with a name filter for its tests.
//! When any peer is here, xtask runs `--include-ignored`, which includes
//! *every* ignored test, and `--skip FILTER` for the peers that are not. So
//! before running, [`check`] lists the tests of the run and fails when
//!
//! * an ignored test belongs to no peer and is not a [`HELPERS`] entry (it
//!   would be run, or left out, by accident: give it a peer, or list it
//!   here if another test runs it), or
//! * a `--skip` filter would also hide a test that is not ignored (libtest
//!   matches `--skip` by substring);
//!
//! and it adds `--skip` for the helpers (the child side of a multi-process
//! test: on their own they do nothing useful). It prints which ignored tests
//! run and which stay out.
//!
//! To add a test that needs an emulator: `#[ignore]` it, name it after its
//! peer (`..._on_moto`), and give the peer that filter where it is started.

use crate::emulators::Peer;
use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// An ignored test that another test runs in a child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Helper {
    /// The test's name as its test binary lists it.
    pub name: &'static str,
    /// The test that runs it.
    pub used_by: &'static str,
}

/// Every helper of the workspace. Add yours here.
pub const HELPERS: &[Helper] = &[Helper {
    name: "racer",
    used_by: "lease_race_between_processes_has_one_winner",
}];

/// What one run does with its ignored tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ignored tests that run.
    pub include: Vec<String>,
    /// Ignored tests left out, with the reason.
    pub leave_out: Vec<(String, String)>,
    /// `--skip` arguments to add (the helpers).
    pub skips: Vec<String>,
}

/// Decides for the `ignored` tests among `all`, given the `peers` and the
/// `--skip` filters already on the command line (`skipped`, the filters of
/// peers that are missing). `including` says whether the run passes
/// `--include-ignored` at all.
pub fn plan(
    all: &[String],
    ignored: &[String],
    peers: &[Peer],
    skipped: &[String],
    helpers: &[Helper],
    including: bool,
) -> Result<Plan, String> {
    let mut plan = Plan::default();
    let mut unknown = Vec::new();
    for name in ignored {
        if let Some(helper) = helpers.iter().find(|h| h.name == name) {
            plan.leave_out
                .push((name.clone(), format!("helper of {}", helper.used_by)));
            if including {
                plan.skips.push(helper.name.to_string());
            }
            continue;
        }
        let Some(peer) = peers.iter().find(|p| name.contains(p.tests)) else {
            unknown.push(name.clone());
            continue;
        };
        match &peer.available {
            Ok(()) if including && !skipped.iter().any(|s| name.contains(s.as_str())) => {
                plan.include.push(name.clone())
            }
            Ok(()) => plan
                .leave_out
                .push((name.clone(), "not included in this run".into())),
            Err(why) => plan
                .leave_out
                .push((name.clone(), format!("needs {}: {why}", peer.name))),
        }
    }
    if !unknown.is_empty() {
        return Err(format!(
            "ignored test(s) {} belong to no peer and are no known helper: name each after \
             its peer and give the peer that filter (emulators.rs, mongo.rs, main.rs), or list \
             it in HELPERS in xtask/src/ignored.rs",
            unknown.join(", ")
        ));
    }
    for filter in skipped.iter().chain(&plan.skips) {
        if let Some(victim) = all
            .iter()
            .find(|t| t.contains(filter.as_str()) && !ignored.contains(t))
        {
            return Err(format!(
                "`--skip {filter}` would also skip `{victim}`, which is not ignored: give the \
                 ignored tests a name no other test contains"
            ));
        }
    }
    Ok(plan)
}

/// The test names `cargo test ... -- --list` prints (`NAME: test` lines).
pub fn parse_list(stdout: &str) -> Vec<String> {
    let mut names: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `cargo`'s arguments before `--` (what selects and builds the tests),
/// and after it (the test harness's).
fn split_args(cargo: &Command) -> (Vec<&OsStr>, Vec<&OsStr>) {
    let args: Vec<&OsStr> = cargo.get_args().collect();
    match args.iter().position(|a| *a == "--") {
        Some(i) => (args[..i].to_vec(), args[i + 1..].to_vec()),
        None => (args, Vec::new()),
    }
}

/// A command like `cargo` (program, directory, environment) with `args`.
fn like(cargo: &Command, args: &[&OsStr]) -> Command {
    let mut command = Command::new(cargo.get_program());
    command.args(args);
    if let Some(dir) = cargo.get_current_dir() {
        command.current_dir(dir);
    }
    for (key, value) in cargo.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
}

/// Builds the tests of `cargo` (its output shown: this is the build the run
/// then reuses), lists them and their ignored ones, prints what is
/// included, and returns the `--skip` arguments to add after the harness
/// arguments `cargo` already has.
///
/// Also returns the run's ignored tests, for [`crate::strict::judge`].
pub fn check(cargo: &Command, peers: &[Peer]) -> Result<(Vec<String>, Vec<String>), String> {
    let (selection, harness) = split_args(cargo);
    let mut build = like(cargo, &selection);
    build.arg("--no-run");
    let shown = super::display_command(&build);
    eprintln!("xtask: building the tests: {shown}");
    match build.stdin(Stdio::null()).status() {
        Ok(status) if status.success() => {}
        Ok(status) => return Err(format!("`{shown}` failed ({status})")),
        Err(err) => return Err(format!("cannot run `{shown}`: {err}")),
    }
    let list = |only_ignored: bool| -> Result<Vec<String>, String> {
        let mut lister = like(cargo, &selection);
        lister.args(["--", "--list"]);
        if only_ignored {
            lister.arg("--ignored");
        }
        let shown = super::display_command(&lister);
        let output = lister
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "`{shown}` failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(parse_list(&String::from_utf8_lossy(&output.stdout)))
    };
    let all = list(false)?;
    let ignored = list(true)?;
    let including = harness.iter().any(|a| *a == "--include-ignored");
    let skipped: Vec<String> = harness
        .windows(2)
        .filter(|w| w[0] == "--skip")
        .map(|w| w[1].to_string_lossy().into_owned())
        .collect();
    let plan = plan(&all, &ignored, peers, &skipped, HELPERS, including)?;
    for name in &plan.include {
        eprintln!("xtask: including ignored test {name}");
    }
    for (name, why) in &plan.leave_out {
        eprintln!("xtask: leaving ignored test {name} out: {why}");
    }
    let skips = plan
        .skips
        .iter()
        .flat_map(|s| ["--skip".to_string(), s.clone()])
        .collect();
    Ok((skips, ignored))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn peer(name: &'static str, tests: &'static str, up: bool) -> Peer {
        Peer {
            name,
            tests,
            available: if up { Ok(()) } else { Err("not here".into()) },
            env: Vec::new(),
        }
    }

    const RACER: Helper = Helper {
        name: "racer",
        used_by: "lease_race_between_processes_has_one_winner",
    };

    #[test]
    fn the_list_parser_takes_test_lines_only() {
        let out = "racer: test\n1 test, 0 benchmarks\n\nmod::t: test\n0 tests, 0 benchmarks\nracer: test\n";
        assert_eq!(parse_list(out), ["mod::t", "racer"]);
    }

    #[test]
    fn peers_decide_helpers_never_run_and_unknown_tests_fail() {
        let all = names(&[
            "racer",
            "lease_race_between_processes_has_one_winner",
            "copies_on_moto",
            "lists_on_fake_gcs",
            "plain",
        ]);
        let ignored = names(&["copies_on_moto", "lists_on_fake_gcs", "racer"]);
        let peers = [
            peer("moto", "_on_moto", true),
            peer("fake-gcs-server", "_on_fake_gcs", false),
        ];
        let skipped = names(&["_on_fake_gcs"]);
        let plan = plan(&all, &ignored, &peers, &skipped, &[RACER], true).unwrap();
        assert_eq!(plan.include, ["copies_on_moto"]);
        assert_eq!(plan.skips, ["racer"]);
        assert_eq!(
            plan.leave_out,
            [
                (
                    "lists_on_fake_gcs".to_string(),
                    "needs fake-gcs-server: not here".to_string()
                ),
                (
                    "racer".to_string(),
                    "helper of lease_race_between_processes_has_one_winner".to_string()
                ),
            ]
        );

        // Nothing included: helpers need no --skip.
        let quiet = super::plan(&all, &ignored, &peers, &[], &[RACER], false).unwrap();
        assert!(quiet.include.is_empty() && quiet.skips.is_empty());

        let err = super::plan(
            &all,
            &names(&["racer", "mystery"]),
            &peers,
            &[],
            &[RACER],
            true,
        )
        .unwrap_err();
        assert!(
            err.contains("mystery") && err.contains("ignored.rs"),
            "{err}"
        );
        assert!(!err.contains("racer"), "{err}");
    }

    #[test]
    fn a_skip_that_would_hide_a_test_that_is_not_ignored_is_refused() {
        let all = names(&["race", "lease_race_wins", "spark_on_x"]);
        let peers = [peer("x", "_on_x", true)];
        let helper = Helper {
            name: "race",
            used_by: "lease_race_wins",
        };
        let err = plan(
            &all,
            &names(&["race", "spark_on_x"]),
            &peers,
            &[],
            &[helper],
            true,
        )
        .unwrap_err();
        assert!(err.contains("lease_race_wins"), "{err}");
        // A peer's filter too.
        let all = names(&["copies_on_moto", "moto_settings_on_moto_parse"]);
        let err = plan(
            &all,
            &names(&["copies_on_moto"]),
            &[peer("moto", "_on_moto", false)],
            &names(&["_on_moto"]),
            &[],
            true,
        )
        .unwrap_err();
        assert!(err.contains("moto_settings_on_moto_parse"), "{err}");
    }

    #[test]
    fn every_helper_is_listed_once() {
        let mut seen = std::collections::BTreeSet::new();
        for h in HELPERS {
            assert!(seen.insert(h.name), "{} listed twice", h.name);
        }
    }
}
