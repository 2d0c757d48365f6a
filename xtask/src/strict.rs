//! Strict peers: a green `cargo xtask test` means every peer its tests need
//! ran, and no test skipped part of itself.
//!
//! * A peer (an emulator, a server, a tool) that is missing while the run
//!   holds tests that need it fails the run, naming the peer and why,
//!   unless the user asked for a partial run with `--allow-skip PEER`.
//!   The tests of an allowed peer stay ignored (reported so) and the
//!   summary names them.
//! * Tests that would skip part of themselves (a check the backend under
//!   test cannot take) call `flow_core::testkit::skip_check`, which panics
//!   unless `FLOW_TEST_ALLOW_SKIP` names the check; xtask passes the
//!   `--allow-skip` names there, so `--allow-skip store-interrupt` lets
//!   that check report itself skipped instead of failing. [`IN_TEST`]
//!   lists those names.

use crate::emulators::Peer;
use std::ffi::OsString;

/// The checks that tests may skip in-test when allowed (passed to them in
/// `FLOW_TEST_ALLOW_SKIP`), with what they check.
pub const IN_TEST: &[(&str, &str)] = &[
    (
        "store-interrupt",
        "the store conformance suite's begin_run interrupted between writes (needs the backend's fault hook)",
    ),
    (
        "store-legacy",
        "the store conformance suite's older-schema fixtures (needs the backend's fixtures)",
    ),
];

/// The environment variable naming the in-test checks that may skip.
pub const ALLOW_SKIP_ENV: &str = "FLOW_TEST_ALLOW_SKIP";

/// xtask's own `test` arguments taken out of the cargo arguments.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TestArgs {
    /// `--allow-skip NAME` (repeatable, or comma-separated).
    pub allow_skip: Vec<String>,
    /// Everything else, for cargo.
    pub cargo: Vec<OsString>,
}

/// Splits `--allow-skip NAME` / `--allow-skip=NAME` (before any `--`) from
/// the cargo arguments.
pub fn parse(args: &[OsString]) -> Result<TestArgs, String> {
    let mut parsed = TestArgs::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            parsed.cargo.push(arg.clone());
            parsed.cargo.extend(iter.by_ref().cloned());
            break;
        }
        let value = if text == "--allow-skip" {
            match iter.next() {
                Some(v) => v.to_string_lossy().into_owned(),
                None => return Err("--allow-skip needs a peer or check name".into()),
            }
        } else if let Some(v) = text.strip_prefix("--allow-skip=") {
            v.to_string()
        } else {
            parsed.cargo.push(arg.clone());
            continue;
        };
        parsed.allow_skip.extend(
            value
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from),
        );
    }
    Ok(parsed)
}

/// Names in `allowed` that are neither a peer nor an in-test check.
pub fn unknown_names(allowed: &[String], peers: &[Peer]) -> Vec<String> {
    allowed
        .iter()
        .filter(|name| {
            !peers.iter().any(|p| p.name == name.as_str())
                && !IN_TEST.iter().any(|(check, _)| check == name)
        })
        .cloned()
        .collect()
}

/// What the run does about its missing peers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Missing peers the run's tests need, not allowed: the run fails.
    /// (name, why, how many tests).
    pub missing: Vec<(String, String, usize)>,
    /// Missing peers the user allowed to skip: (name, why, how many tests).
    pub allowed: Vec<(String, String, usize)>,
}

impl Verdict {
    pub fn fails(&self) -> bool {
        !self.missing.is_empty()
    }
}

/// Judges the missing `peers` given the run's `ignored` tests (a peer no
/// test of the selection needs is not judged) and the `allowed` names.
pub fn judge(peers: &[Peer], ignored: &[String], allowed: &[String]) -> Verdict {
    let mut verdict = Verdict::default();
    for peer in peers {
        let Err(why) = &peer.available else {
            continue;
        };
        let tests = ignored.iter().filter(|t| t.contains(peer.tests)).count();
        if tests == 0 {
            continue;
        }
        let entry = (peer.name.to_string(), why.clone(), tests);
        if allowed.iter().any(|a| a == peer.name) {
            verdict.allowed.push(entry);
        } else {
            verdict.missing.push(entry);
        }
    }
    verdict
}

/// Prints the verdict: each missing peer (an error) and each allowed one.
pub fn report(verdict: &Verdict) {
    for (name, why, tests) in &verdict.missing {
        eprintln!(
            "xtask: FAILED: peer {name} is missing ({why}); {tests} test(s) need it \
             (a partial run: `cargo xtask test --allow-skip {name}`)"
        );
    }
    for (name, why, tests) in &verdict.allowed {
        eprintln!(
            "xtask: SKIPPED as asked (--allow-skip {name}): {tests} test(s) of peer {name} did not run ({why})"
        );
    }
}

/// The run's closing lines: which peers ran, which were allowed to skip.
pub fn summary(peers: &[Peer], ignored: &[String], verdict: &Verdict, allowed: &[String]) {
    let ran: Vec<String> = peers
        .iter()
        .filter(|p| p.available.is_ok())
        .map(|p| {
            let n = ignored.iter().filter(|t| t.contains(p.tests)).count();
            format!("{} ({n} test(s))", p.name)
        })
        .collect();
    eprintln!("xtask: summary: peers up: {}", ran.join(", "));
    for (name, why, tests) in &verdict.allowed {
        eprintln!(
            "xtask: summary: PARTIAL RUN: {tests} test(s) of {name} skipped as asked by --allow-skip {name} ({why})"
        );
    }
    let checks: Vec<&str> = allowed
        .iter()
        .filter(|a| IN_TEST.iter().any(|(c, _)| c == a))
        .map(String::as_str)
        .collect();
    if !checks.is_empty() {
        eprintln!(
            "xtask: summary: PARTIAL RUN: in-test checks allowed to skip: {}",
            checks.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn peer(name: &'static str, tests: &'static str, up: bool) -> Peer {
        Peer {
            name,
            tests,
            available: if up { Ok(()) } else { Err("not here".into()) },
            env: Vec::new(),
        }
    }

    #[test]
    fn allow_skip_is_taken_out_of_the_cargo_arguments() {
        let parsed = parse(&os(&[
            "-p",
            "flow-core",
            "--allow-skip",
            "moto",
            "--allow-skip=chromium,store-interrupt",
            "--",
            "--allow-skip",
            "x",
        ]))
        .unwrap();
        assert_eq!(parsed.allow_skip, ["moto", "chromium", "store-interrupt"]);
        assert_eq!(
            parsed.cargo,
            os(&["-p", "flow-core", "--", "--allow-skip", "x"])
        );
        assert!(parse(&os(&["--allow-skip"])).is_err());
    }

    #[test]
    fn a_missing_peer_fails_the_run_unless_allowed_or_unneeded() {
        let peers = [
            peer("moto", "_on_moto", false),
            peer("chromium", "_in_chromium", false),
            peer("nx-27017", "_on_nx27017", true),
            peer("spark-submit", "_on_spark", false),
        ];
        let ignored: Vec<String> = ["a_on_moto", "b_on_moto", "c_in_chromium", "d_on_nx27017"]
            .map(String::from)
            .to_vec();
        let strict = judge(&peers, &ignored, &[]);
        assert!(strict.fails());
        assert_eq!(
            strict.missing,
            [
                ("moto".into(), "not here".into(), 2),
                ("chromium".into(), "not here".into(), 1)
            ],
            "spark-submit has no test in this selection"
        );
        let partial = judge(&peers, &ignored, &["moto".into(), "chromium".into()]);
        assert!(!partial.fails());
        assert_eq!(partial.allowed.len(), 2);
        assert_eq!(
            unknown_names(
                &["moto".into(), "store-interrupt".into(), "motto".into()],
                &peers
            ),
            ["motto"]
        );
    }
}
