//! What `cargo xtask test` checks for library users besides the tests:
//!
//! * every example (`crates/*/examples/*.rs`) is declared in its crate's
//!   `Cargo.toml` with `test = true` and holds a `#[test]` (which calls its
//!   `main`), so `cargo test` builds *and runs* it; an example that would
//!   only be compiled fails the run before any test starts. A program in
//!   `examples/` that is a tool, not a documentation example (the viewer's
//!   page benchmark, run by `cargo xtask bench`), says so with an explicit
//!   `test = false`;
//! * `cargo doc --workspace --no-deps --all-features` is free of warnings
//!   (broken intra-doc links included): it runs with `RUSTDOCFLAGS=-D
//!   warnings` after the tests.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode};

/// The examples that `cargo test` would not run, each with the reason.
pub fn unrun_examples(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(crates) = fs::read_dir(root.join("crates")) else {
        return problems;
    };
    let mut crates: Vec<_> = crates.filter_map(Result::ok).map(|e| e.path()).collect();
    crates.sort();
    for krate in crates {
        let Ok(examples) = fs::read_dir(krate.join("examples")) else {
            continue;
        };
        let manifest = fs::read_to_string(krate.join("Cargo.toml")).unwrap_or_default();
        let declared = tested_examples(&manifest, "true");
        let tools = tested_examples(&manifest, "false");
        let mut files: Vec<_> = examples.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in files {
            let (name, source) = if file.extension().is_some_and(|e| e == "rs") {
                (file.file_stem(), file.clone())
            } else if file.join("main.rs").is_file() {
                (file.file_name(), file.join("main.rs"))
            } else {
                continue;
            };
            let name = name.unwrap_or_default().to_string_lossy().into_owned();
            let shown = source.strip_prefix(root).unwrap_or(&source).display();
            if tools.contains(&name) {
                continue;
            }
            if !declared.contains(&name) {
                problems.push(format!(
                    "{shown}: declare it in {} as [[example]] name = \"{name}\" with test = true",
                    krate
                        .join("Cargo.toml")
                        .strip_prefix(root)
                        .unwrap_or(&krate)
                        .display()
                ));
            }
            if !fs::read_to_string(&source).is_ok_and(|text| text.contains("#[test]")) {
                problems.push(format!(
                    "{shown}: add a #[test] that calls main, so `cargo test` runs it"
                ));
            }
        }
    }
    problems
}

/// The names of the `[[example]]` tables of `manifest` that say `test =
/// VALUE`.
fn tested_examples(manifest: &str, value_wanted: &str) -> Vec<String> {
    let mut tested = Vec::new();
    for table in manifest.split("[[example]]").skip(1) {
        let table = table.split("\n[").next().unwrap_or(table);
        let value = |key: &str| {
            table.lines().find_map(|line| {
                let (k, v) = line.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        if let (Some(name), Some(test)) = (value("name"), value("test")) {
            if test == value_wanted {
                tested.push(name);
            }
        }
    }
    tested
}

/// `cargo doc --workspace --no-deps --all-features` with warnings as errors.
pub fn doc(root: &Path, target: Option<&Path>) -> ExitCode {
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(root)
        .args(["doc", "--workspace", "--no-deps", "--all-features"]);
    let mut flags = env::var_os("RUSTDOCFLAGS").unwrap_or_default();
    if !flags.is_empty() {
        flags.push(" ");
    }
    flags.push(OsString::from("-D warnings"));
    cargo.env("RUSTDOCFLAGS", flags);
    if let Some(target) = target {
        cargo.env("CARGO_TARGET_DIR", target);
    }
    eprintln!(
        "xtask: running RUSTDOCFLAGS='-D warnings' {}",
        super::display_command(&cargo)
    );
    match cargo.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("xtask: cargo doc failed ({status}): the docs have warnings or broken links");
            super::exit_code(status)
        }
        Err(err) => {
            eprintln!("xtask: cannot run cargo doc: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_examples_with_test_true_count() {
        let manifest = "[package]\nname = \"x\"\n\n[[example]]\nname = \"a\"\ntest = true\n\n[[example]]\nname = \"b\"\n\n[[example]]\nname = \"c\"\nrequired-features = [\"t\"]\ntest = true\n\n[dev-dependencies]\ntest = true\n";
        assert_eq!(tested_examples(manifest, "true"), ["a", "c"]);
        assert!(tested_examples(manifest, "false").is_empty());
    }

    #[test]
    fn every_example_of_the_workspace_runs_as_a_test() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert_eq!(unrun_examples(root), Vec::<String>::new());
    }
}
