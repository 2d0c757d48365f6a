//! The viewer's part of `cargo xtask`: a headless browser for its browser
//! test and its page benchmark.
//!
//! * [`ensure_browser`] finds Debian's Chromium and ChromeDriver
//!   (`/usr/bin/chromium`, `/usr/bin/chromedriver`, or `FLOW_CHROMIUM` and
//!   `FLOW_CHROMEDRIVER`), installing the packages `chromium` and
//!   `chromium-driver` with apt where they are missing and apt can be used
//!   (as root). No browser is downloaded from anywhere else. Where there is
//!   none, the browser test is left out and reported skipped.
//! * [`bench`] builds and runs `crates/flow-server/examples/viewer_bench.rs`
//!   in release: layout, graph JSON and page-interactive figures for a
//!   10,000-step flow, written to `<target>/bench/viewer.json`.
//!
//! Self-contained (std only) so that it can be merged with other service
//! helpers later.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// The browser test, as `cargo test` names it (for `--skip`).
pub const BROWSER_TEST: &str = "the_flow_page_runs_fails_and_recovers_in_chromium";

/// A usable headless browser and its WebDriver.
pub struct Browser {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

impl Browser {
    /// The environment the browser test and the benchmark read.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("FLOW_CHROMIUM", &self.chromium)
            .env("FLOW_CHROMEDRIVER", &self.chromedriver);
    }
}

fn configured(var: &str, default: &str) -> PathBuf {
    env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// `program --version` succeeds.
fn answers(program: &Path) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Chromium and ChromeDriver, installed with apt when missing (unless
/// `FLOW_SKIP_BROWSER_INSTALL=1`). `None`, with a warning saying why, when
/// there is no usable pair.
pub fn ensure_browser() -> Option<Browser> {
    let browser = Browser {
        chromium: configured("FLOW_CHROMIUM", "/usr/bin/chromium"),
        chromedriver: configured("FLOW_CHROMEDRIVER", "/usr/bin/chromedriver"),
    };
    let usable = |b: &Browser| answers(&b.chromium) && answers(&b.chromedriver);
    if usable(&browser) {
        eprintln!(
            "xtask: browser tests use {} and {}",
            browser.chromium.display(),
            browser.chromedriver.display()
        );
        return Some(browser);
    }
    let skip = env::var_os("FLOW_SKIP_BROWSER_INSTALL").is_some_and(|v| !v.is_empty() && v != "0");
    let why = if skip {
        "FLOW_SKIP_BROWSER_INSTALL is set".to_string()
    } else if !is_root() {
        "not root, so apt cannot install chromium and chromium-driver".to_string()
    } else {
        eprintln!("xtask: installing chromium and chromium-driver with apt");
        let quiet = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
        };
        let installed = quiet(&["-qq", "update"])
            .and_then(|_| quiet(&["install", "-y", "-qq", "chromium", "chromium-driver"]));
        match installed {
            Ok(status) if status.success() && usable(&browser) => {
                eprintln!("xtask: installed chromium and chromium-driver");
                return Some(browser);
            }
            Ok(status) => format!("apt-get install chromium chromium-driver failed ({status})"),
            Err(e) => format!("cannot run apt-get: {e}"),
        }
    };
    eprintln!(
        "xtask: warning: no headless browser ({why}); the browser test will be reported skipped"
    );
    None
}

/// Adds the `cargo test` arguments for optional, `#[ignore]`d tests: when
/// any of `gates` (available, test name) is available, ignored tests are
/// included and those whose gate is closed are left out with `--skip` (they
/// then count as filtered out, never as passed).
pub fn ignored_test_args(args: &[std::ffi::OsString], gates: &[(bool, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    if !gates.iter().any(|(open, _)| *open) {
        return out;
    }
    if !args.iter().any(|a| a == "--") {
        out.push("--".into());
    }
    out.push("--include-ignored".into());
    for (open, name) in gates {
        if !open {
            out.push("--skip".into());
            out.push((*name).into());
        }
    }
    out
}

/// `cargo xtask bench`'s viewer part.
pub fn bench(root: &Path, target: &Path, target_from_env: bool) -> ExitCode {
    let mut build = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build.current_dir(root).args([
        "build",
        "--release",
        "-p",
        "flow-server",
        "--example",
        "viewer_bench",
    ]);
    if target_from_env {
        build.env("CARGO_TARGET_DIR", target);
    }
    eprintln!("xtask: running {}", super::display_command(&build));
    if let Err(err) = super::run(&mut build) {
        eprintln!("xtask: {err}");
        return ExitCode::FAILURE;
    }
    let mut bench = Command::new(target.join("release").join("examples").join("viewer_bench"));
    bench
        .current_dir(root)
        .arg("--out-dir")
        .arg(target.join("bench"));
    match ensure_browser() {
        Some(b) => {
            bench
                .arg("--chromium")
                .arg(&b.chromium)
                .arg("--chromedriver")
                .arg(&b.chromedriver);
        }
        None => eprintln!("xtask: warning: the viewer page will not be measured"),
    }
    eprintln!("xtask: running {}", super::display_command(&bench));
    match bench.status() {
        Ok(status) => super::exit_code(status),
        Err(err) => {
            eprintln!("xtask: cannot run viewer_bench: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn closed_gates_are_skipped_and_no_gate_includes_nothing() {
        let none: Vec<OsString> = Vec::new();
        assert!(ignored_test_args(&none, &[(false, "a"), (false, "b")]).is_empty());
        assert_eq!(
            ignored_test_args(&none, &[(true, "a"), (false, "b")]),
            ["--", "--include-ignored", "--skip", "b"]
        );
        let dashed = vec![OsString::from("--"), OsString::from("--nocapture")];
        assert_eq!(
            ignored_test_args(&dashed, &[(true, "a"), (true, "b")]),
            ["--include-ignored"]
        );
    }
}
