//! The viewer's part of `cargo xtask`: headless Chromium, a peer like the
//! emulators, for its browser test and its page benchmark.
//!
//! * [`peer`] finds Debian's Chromium and ChromeDriver (`/usr/bin/chromium`,
//!   `/usr/bin/chromedriver`, or `FLOW_CHROMIUM` and `FLOW_CHROMEDRIVER`),
//!   installing the packages `chromium` and `chromium-driver` with apt
//!   where they are missing and apt can be used (as root). No browser is
//!   downloaded from anywhere else. It is an [`crate::emulators::Peer`] like moto
//!   or nx-27017: its tests are `#[ignore]`d and named `..._in_chromium`,
//!   included when the browser is there (`FLOW_CHROMIUM` and
//!   `FLOW_CHROMEDRIVER` passed to them), and skipped with a `SKIPPED` line
//!   otherwise. Chromium starts per test (the test runs chromedriver on a
//!   free port), so there is no service to start here.
//! * [`bench()`] builds and runs `crates/flow-server/examples/viewer_bench.rs`
//!   in release: layout, graph JSON and page-interactive figures for a
//!   10,000-step flow, written to `<target>/bench/viewer.json`.

use crate::apt::{answers, configured};
use crate::emulators::Peer;
use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The name filter of the tests that need the browser.
pub const TESTS: &str = "_in_chromium";

/// A usable headless browser and its WebDriver.
pub struct Browser {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// The browser peer: available with its paths in the tests' environment,
/// or not, with why.
pub fn peer() -> Peer {
    let (available, env) = match ensure_browser() {
        Ok(b) => (
            Ok(()),
            vec![
                (
                    "FLOW_CHROMIUM".to_string(),
                    b.chromium.display().to_string(),
                ),
                (
                    "FLOW_CHROMEDRIVER".to_string(),
                    b.chromedriver.display().to_string(),
                ),
            ],
        ),
        Err(why) => (Err(why), Vec::new()),
    };
    Peer {
        name: "chromium",
        tests: TESTS,
        available,
        env,
    }
}

/// Chromium and ChromeDriver, installed with apt when missing (unless
/// `FLOW_SKIP_BROWSER_INSTALL=1`). `Err(why)`, with a warning, when there is
/// no usable pair.
fn ensure_browser() -> Result<Browser, String> {
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
        return Ok(browser);
    }
    let why = match crate::apt::install(
        &["chromium", "chromium-driver"],
        "FLOW_SKIP_BROWSER_INSTALL",
    ) {
        Ok(()) if usable(&browser) => return Ok(browser),
        Ok(()) => "chromium and chromium-driver were installed but do not answer".to_string(),
        Err(why) => why,
    };
    eprintln!("xtask: warning: no headless browser: {why}");
    Err(why)
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
        Ok(b) => {
            bench
                .arg("--chromium")
                .arg(&b.chromium)
                .arg("--chromedriver")
                .arg(&b.chromedriver);
        }
        Err(_) => eprintln!("xtask: warning: the viewer page will not be measured"),
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
