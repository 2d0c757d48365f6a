//! Bad input, table-driven: every case of `tests/fixtures/bad/cases.toml` must
//! exit 2 with a clear message and write nothing: the case's directory
//! (store rows of every table, log files, every other file) is the same
//! before and after. See that file for the format.

mod support;

use serde::Deserialize;
use std::path::{Path, PathBuf};
use support::{stderr, text, Home};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    args: Vec<String>,
    exit: i32,
    stderr: Vec<String>,
    /// Substrings stderr must not contain (secret values).
    #[serde(default)]
    stderr_lacks: Vec<String>,
    /// A settings file under the fixtures directory, used as `flow.toml`.
    settings: Option<String>,
    #[serde(default)]
    prepare: Vec<Prepare>,
    #[serde(default)]
    no_settings_flag: bool,
    with_feature: Option<WithFeature>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Prepare {
    args: Vec<String>,
    exit: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WithFeature {
    feature: String,
    stderr: Vec<String>,
}

fn fixtures() -> PathBuf {
    support::repo_root().join("tests/fixtures/bad")
}

fn feature_enabled(name: &str) -> bool {
    match name {
        "emr" => cfg!(feature = "emr"),
        "dataproc" => cfg!(feature = "dataproc"),
        "mongo" => cfg!(feature = "mongo"),
        other => panic!("unknown feature {other} in cases.toml"),
    }
}

fn expand(args: &[String], fixtures: &Path) -> Vec<String> {
    let dir = fixtures.display().to_string();
    args.iter().map(|a| a.replace("{fixtures}", &dir)).collect()
}

fn run_case(case: &Case, fixtures: &Path) -> Result<(), String> {
    let home = Home::new();
    if let Some(settings) = &case.settings {
        let text = std::fs::read_to_string(fixtures.join(settings))
            .map_err(|e| format!("{settings}: {e}"))?;
        home.write(
            "flow.toml",
            &text.replace("{fixtures}", &fixtures.display().to_string()),
        );
    }
    for p in &case.prepare {
        let args = expand(&p.args, fixtures);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        home.expect(p.exit, &args);
    }
    let before = home.everything();
    if !case.prepare.is_empty() {
        assert!(
            before.iter().any(|l| l.starts_with("data/flow.db: flow: ")),
            "{}: the prepare commands left no flow record to protect",
            case.name
        );
    }

    let args = expand(&case.args, fixtures);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = if case.no_settings_flag {
        home.bare_command(&args).output().unwrap()
    } else {
        home.flow(&args)
    };
    let mut problems = Vec::new();
    if out.status.code() != Some(case.exit) {
        problems.push(format!("expected exit {}", case.exit));
    }
    let expected = match &case.with_feature {
        Some(w) if feature_enabled(&w.feature) => &w.stderr,
        _ => &case.stderr,
    };
    let err = stderr(&out);
    for needle in expected {
        if !err.contains(needle.as_str()) {
            problems.push(format!("stderr lacks {needle:?}"));
        }
    }
    for needle in &case.stderr_lacks {
        if err.contains(needle.as_str()) {
            problems.push(format!("stderr shows {needle:?}"));
        }
    }
    if err.lines().count() == 0 || err.contains("panicked") {
        problems.push("no clear message on stderr".into());
    }
    let after = home.everything();
    if before != after {
        let gone: Vec<_> = before.iter().filter(|l| !after.contains(l)).collect();
        let new: Vec<_> = after.iter().filter(|l| !before.contains(l)).collect();
        problems.push(format!(
            "something was written:\nbefore only: {gone:#?}\nafter only: {new:#?}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{}", problems.join("\n"), text(&out)))
    }
}

#[test]
fn every_bad_input_is_refused_with_exit_2_and_writes_nothing() {
    let fixtures = fixtures();
    let manifest: Manifest =
        toml::from_str(&std::fs::read_to_string(fixtures.join("cases.toml")).unwrap()).unwrap();
    assert!(manifest.case.len() >= 20, "the manifest lost cases");
    let mut failures = Vec::new();
    for case in &manifest.case {
        assert_eq!(case.exit, 2, "{}: bad input exits 2", case.name);
        if let Err(e) = run_case(case, &fixtures) {
            failures.push(format!("--- {}: {e}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Every flow and settings fixture is used by some case, so the directory
/// and the manifest stay in step.
#[test]
fn every_fixture_is_used() {
    let fixtures = fixtures();
    let manifest = std::fs::read_to_string(fixtures.join("cases.toml")).unwrap();
    let mut dirs = vec![fixtures.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let relative = path.strip_prefix(&fixtures).unwrap().display().to_string();
            if relative.ends_with(".toml") && relative != "cases.toml" {
                assert!(
                    manifest.contains(&relative),
                    "{relative} is not used by cases.toml"
                );
            }
        }
    }
}
