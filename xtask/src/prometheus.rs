//! Debian's Prometheus, the peer of `flow serve`'s `/metrics`
//! (`..._on_prometheus` tests).
//!
//! Finds `prometheus` and `promtool` (`/usr/bin`, or `FLOW_PROMETHEUS` and
//! `FLOW_PROMTOOL`), installing the Debian package `prometheus` with apt
//! where they are missing (as root; `FLOW_SKIP_PROMETHEUS_INSTALL=1`
//! installs nothing), then starts Prometheus on a free loopback port with
//! a fresh storage directory and one scrape job whose targets are read from
//! the files of a directory (`file_sd_configs`, re-read every second): a
//! test starts `flow serve` on a port of its own and writes a target file
//! naming it. The tests get `FLOW_TEST_PROMETHEUS_URL`,
//! `FLOW_TEST_PROMETHEUS_TARGETS` (that directory) and `FLOW_PROMTOOL`.

use crate::apt::{answers, configured};
use crate::emulators::Peer;
use crate::services::{self, Ready, Service, ServiceSpec};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// The name filter of the tests that need Prometheus.
pub const TESTS: &str = "_on_prometheus";

/// The peer, and the running server (stopped when dropped).
pub fn start(tools: &Path, logs: &Path) -> (Peer, Option<Service>) {
    let started = launch(tools, logs);
    crate::emulators::started_peer("prometheus", TESTS, started)
}

type Env = Vec<(String, String)>;

fn launch(tools: &Path, logs: &Path) -> Result<(Env, Service), String> {
    let prometheus = configured("FLOW_PROMETHEUS", "/usr/bin/prometheus");
    let promtool = configured("FLOW_PROMTOOL", "/usr/bin/promtool");
    let usable = || answers(&prometheus) && answers(&promtool);
    if !usable() {
        crate::apt::install(&["prometheus"], "FLOW_SKIP_PROMETHEUS_INSTALL")?;
        if !usable() {
            return Err(format!(
                "{} or {} does not answer after installing prometheus",
                prometheus.display(),
                promtool.display()
            ));
        }
    }
    let home = tools.join("prometheus");
    let targets = home.join("targets");
    let data = home.join("data");
    // Fresh each run: no target or series of an earlier run is seen.
    let _ = fs::remove_dir_all(&home);
    fs::create_dir_all(&targets)
        .map_err(|e| format!("cannot create {}: {e}", targets.display()))?;
    let config = home.join("prometheus.yml");
    let text = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
         - job_name: flow-serve\n    file_sd_configs:\n      \
         - files: ['{}/*.json']\n        refresh_interval: 1s\n",
        targets.display()
    );
    fs::write(&config, text).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let spec = ServiceSpec {
        name: "prometheus",
        program: prometheus,
        args: vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data.display()),
            "--web.listen-address=127.0.0.1:{port}".into(),
        ],
        env: Vec::new(),
        ready: Ready::Http("/-/ready"),
        startup_timeout: Duration::from_secs(60),
    };
    let service = services::start(&spec, logs)?;
    let env = vec![
        ("FLOW_TEST_PROMETHEUS_URL".to_string(), service.url()),
        (
            "FLOW_TEST_PROMETHEUS_TARGETS".to_string(),
            targets.display().to_string(),
        ),
        ("FLOW_PROMTOOL".to_string(), promtool.display().to_string()),
    ];
    Ok((env, service))
}
