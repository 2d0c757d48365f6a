//! The viewer in a real browser: headless Chromium from Debian, driven by
//! chromedriver through WebDriver (fantoccini). Ignored (and so reported as
//! such) by a plain `cargo test`; `cargo xtask test` installs chromium and
//! chromium-driver where missing, sets FLOW_CHROMIUM and FLOW_CHROMEDRIVER,
//! and includes it, or leaves it ignored when it cannot.
//!
//! Screenshots go to `<target>/tmp/serve_browser/`.

mod support;

use fantoccini::{ClientBuilder, Locator};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::Home;

const TP: &str = "2026112800";

/// A child process killed on drop (with its process group when it leads
/// one: chromedriver and the browser it started).
struct Killed(Child, bool);

impl Drop for Killed {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        unsafe { libc::kill(if self.1 { -pid } else { pid }, libc::SIGTERM) };
        for _ in 0..60 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| {
        panic!("{name} must be set when this test is included (cargo xtask test sets it)")
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: run through `cargo xtask test`"]
async fn the_flow_page_runs_fails_and_recovers_in_chromium() {
    let chromium = env_path("FLOW_CHROMIUM");
    let chromedriver = env_path("FLOW_CHROMEDRIVER");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve_browser");
    std::fs::create_dir_all(&shots).unwrap();

    // The flaky example: `load` fails until out/flaky/TP/ready exists.
    let home = Home::new();
    let flaky = std::fs::read_to_string(support::repo_root().join("examples/flaky.toml")).unwrap();
    home.write("flaky.toml", &flaky);
    let mut serve = home
        .command(&["serve", "--bind", "127.0.0.1:0", "flaky.toml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = support::first_stdout_line(&mut serve);
    let _serve = Killed(serve, false);
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("flow serve did not start: {line}"))
        .trim_end_matches('/')
        .to_string();

    let port = free_port();
    let _driver = Killed(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            // Its own process group, so the browser it starts goes with it.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        true,
    );
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,860",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let mut client = None;
    for _ in 0..100 {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let b = client.expect("chromedriver did not answer");

    // Polls `script` (a JS expression) until it is true.
    async fn until(b: &fantoccini::Client, script: &str, what: &str) {
        for _ in 0..600 {
            let v = b
                .execute(&format!("return !!({script});"), vec![])
                .await
                .unwrap();
            if v.as_bool() == Some(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("gave up waiting for {what}");
    }
    async fn node_state(b: &fantoccini::Client, name: &str) -> String {
        b.execute(
            &format!("return document.querySelector('g.node[data-name=\"{name}\"]').getAttribute('class');"),
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    // The flow page shows every node, before any run.
    b.goto(&format!("{base}/#/flows/flaky/{TP}")).await.unwrap();
    until(&b, "document.body.dataset.ready === '1'", "the flow page").await;
    let mut names = Vec::new();
    for node in b.find_all(Locator::Css("g.node")).await.unwrap() {
        assert!(node.is_displayed().await.unwrap());
        names.push(node.attr("data-name").await.unwrap().unwrap());
    }
    assert_eq!(names, ["start", "prepare", "load", "publish", "finish"]);
    assert!(node_state(&b, "load").await.contains("st-none"));

    // Run with the button: the confirmation names the flow and timeperiod.
    b.find(Locator::Id("btn-run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = b
        .find(Locator::Id("confirm-text"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("flaky") && text.contains(TP), "{text}");
    b.find(Locator::Id("confirm-ok"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &b,
        "document.querySelector('g.node[data-name=\"load\"]').classList.contains('st-invalid')",
        "load to turn red",
    )
    .await;
    until(
        &b,
        "document.querySelector('#flow-state').dataset.state === 'state_invalid'",
        "the flow to be invalid",
    )
    .await;
    assert!(node_state(&b, "prepare").await.contains("st-processed"));
    assert!(node_state(&b, "publish").await.contains("st-embryo"));
    // The failed step's details and its log, from the page.
    b.find(Locator::Css("g.node[data-name=\"load\"]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&b, "document.querySelector('#step-state') && document.querySelector('#step-state').dataset.state === 'state_invalid'", "load's details").await;
    until(
        &b,
        "document.querySelector('#log').textContent.includes('ready is missing')",
        "load's log",
    )
    .await;
    // Its job handle, from the step record: the local cluster's job.
    until(
        &b,
        "document.querySelector('#step-job').textContent.includes('local-0') && document.querySelector('#step-job').textContent.includes('shell')",
        "load's job handle",
    )
    .await;
    std::fs::write(
        shots.join("01-load-failed.png"),
        b.screenshot().await.unwrap(),
    )
    .unwrap();

    // Fix the input, then "run from" on the failed step.
    std::fs::create_dir_all(home.path(&format!("out/flaky/{TP}"))).unwrap();
    std::fs::write(home.path(&format!("out/flaky/{TP}/ready")), "").unwrap();
    b.find(Locator::Id("btn-run-from"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = b
        .find(Locator::Id("confirm-text"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("flaky") && text.contains(TP) && text.contains("load"),
        "{text}"
    );
    b.find(Locator::Id("confirm-ok"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &b,
        "document.querySelector('#flow-state').dataset.state === 'state_processed'",
        "the flow to be processed",
    )
    .await;
    for step in ["prepare", "load", "publish", "finish"] {
        until(
            &b,
            &format!("document.querySelector('g.node[data-name=\"{step}\"]').classList.contains('st-processed')"),
            "every node processed",
        )
        .await;
    }
    until(
        &b,
        "document.querySelector('#log').textContent.includes('loading 2026112800')",
        "load's new log lines",
    )
    .await;
    std::fs::write(
        shots.join("02-processed.png"),
        b.screenshot().await.unwrap(),
    )
    .unwrap();
    b.close().await.unwrap();
}
