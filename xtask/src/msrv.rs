//! `cargo xtask msrv`: checks that every crate builds with the Rust version
//! its `Cargo.toml` declares (`rust-version`, or the workspace's).
//!
//! Crates are grouped by declared version; for each version the toolchain
//! is installed with rustup (minimal profile, once; reused afterwards) and
//! `cargo check --all-targets` runs on that group's crates with their
//! default features, into `<target>/msrv` so the main build is untouched.
//! A toolchain that cannot be installed is reported `SKIPPED` with the
//! reason, never passed.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

/// `cargo xtask msrv`.
pub fn msrv(root: &Path, target: &Path) -> ExitCode {
    let groups = match declared_versions(root) {
        Ok(groups) => groups,
        Err(err) => {
            eprintln!("xtask: msrv: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for (version, crates) in &groups {
        let installed = Command::new("rustup")
            .args(["run", version, "rustc", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!("xtask: msrv: installing Rust {version} (minimal profile)");
            let install = Command::new("rustup")
                .args(["toolchain", "install", version, "--profile", "minimal"])
                .stdin(Stdio::null())
                .status();
            if !install.is_ok_and(|s| s.success()) {
                eprintln!(
                    "xtask: SKIPPED: msrv check of {} (rustup cannot install Rust {version})",
                    crates.join(", ")
                );
                continue;
            }
        }
        let mut cargo = Command::new("rustup");
        cargo
            .current_dir(root)
            .args(["run", version, "cargo", "check", "--all-targets"])
            .env("CARGO_TARGET_DIR", target.join("msrv"))
            // The toolchain's own cargo and rustc, not the caller's.
            .env_remove("CARGO")
            .env_remove("RUSTC");
        for krate in crates {
            cargo.args(["-p", krate]);
        }
        eprintln!(
            "xtask: msrv: Rust {version}: {}",
            super::display_command(&cargo)
        );
        match cargo.status() {
            Ok(status) if status.success() => {
                eprintln!("xtask: msrv: Rust {version} builds {}", crates.join(", "))
            }
            Ok(status) => {
                eprintln!(
                    "xtask: msrv: Rust {version} cannot build {} ({status}): raise their rust-version or fix the code",
                    crates.join(", ")
                );
                failed = true;
            }
            Err(err) => {
                eprintln!("xtask: msrv: cannot run cargo {version}: {err}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Workspace members (`crates/*` and `xtask`) by declared `rust-version`.
fn declared_versions(root: &Path) -> Result<BTreeMap<String, Vec<String>>, String> {
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let workspace = read(&root.join("Cargo.toml"))?;
    let default = value(section(&workspace, "[workspace.package]"), "rust-version")
        .ok_or("the workspace declares no rust-version")?;
    let mut manifests = vec![root.join("xtask").join("Cargo.toml")];
    let mut crates: Vec<_> = fs::read_dir(root.join("crates"))
        .map_err(|e| format!("cannot list crates/: {e}"))?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("Cargo.toml"))
        .filter(|path| path.is_file())
        .collect();
    crates.sort();
    manifests.extend(crates);
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for manifest in manifests {
        let text = read(&manifest)?;
        let package = section(&text, "[package]");
        let name = value(package, "name")
            .ok_or_else(|| format!("{} names no package", manifest.display()))?;
        let version = value(package, "rust-version").unwrap_or_else(|| default.clone());
        groups.entry(version).or_default().push(name);
    }
    Ok(groups)
}

/// The lines of `[header]` in a manifest, up to the next table.
fn section<'a>(manifest: &'a str, header: &str) -> &'a str {
    let Some(start) = manifest.find(&format!("{header}\n")) else {
        return "";
    };
    let body = &manifest[start + header.len() + 1..];
    body.find("\n[").map_or(body, |end| &body[..end])
}

/// The string value of `key = "..."` in a section.
fn value(section: &str, key: &str) -> Option<String> {
    section.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        let v = v.trim();
        (k.trim() == key && v.starts_with('"')).then(|| v.trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crates_are_grouped_by_their_declared_version() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let groups = declared_versions(root).unwrap();
        let group_of = |name: &str| {
            groups
                .iter()
                .find(|(_, crates)| crates.iter().any(|c| c == name))
                .map(|(version, _)| version.as_str())
        };
        assert_eq!(group_of("flow-fs-s3"), Some("1.94.1"));
        assert_eq!(group_of("flow-core"), group_of("xtask"));
        assert!(group_of("flow-store-mongo").is_some());
    }
}
