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

/// `flow serve` on a free loopback port in `home`, showing `files`, and
/// its base URL.
fn serve(home: &Home, files: &[&str]) -> (Killed, String) {
    let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
    args.extend_from_slice(files);
    let mut serve = home
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = support::first_stdout_line(&mut serve);
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("flow serve did not start: {line}"))
        .trim_end_matches('/')
        .to_string();
    (Killed(serve, false), base)
}

/// Headless Chromium driven through chromedriver, and what must live as
/// long as it (the driver process, the profile directory).
struct Browser {
    client: fantoccini::Client,
    _driver: Killed,
    _profile: tempfile::TempDir,
}

async fn browser() -> Browser {
    let chromium = env_path("FLOW_CHROMIUM");
    let chromedriver = env_path("FLOW_CHROMEDRIVER");
    let port = free_port();
    let driver = Killed(
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
    for _ in 0..100 {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => {
                return Browser {
                    client,
                    _driver: driver,
                    _profile: profile,
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("chromedriver did not answer");
}

/// Where the screenshots go.
fn shots() -> PathBuf {
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve_browser");
    std::fs::create_dir_all(&shots).unwrap();
    shots
}

/// Clicks the element `at` finds.
async fn click(b: &fantoccini::Client, at: Locator<'_>) {
    b.find(at).await.unwrap().click().await.unwrap();
}

/// Polls `script` (a JS expression) until it is true.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: run through `cargo xtask test`"]
async fn the_flow_page_runs_fails_and_recovers_in_chromium() {
    let shots = shots();
    // The flaky example: `load` fails until out/flaky/TP/ready exists.
    let home = Home::new();
    let flaky = std::fs::read_to_string(support::repo_root().join("examples/flaky.toml")).unwrap();
    home.write("flaky.toml", &flaky);
    let (_serve, base) = serve(&home, &["flaky.toml"]);
    let browser = browser().await;
    let b = &browser.client;

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
    until(b, "document.body.dataset.ready === '1'", "the flow page").await;
    let mut names = Vec::new();
    for node in b.find_all(Locator::Css("g.node")).await.unwrap() {
        assert!(node.is_displayed().await.unwrap());
        names.push(node.attr("data-name").await.unwrap().unwrap());
    }
    assert_eq!(names, ["start", "prepare", "load", "publish", "finish"]);
    assert!(node_state(b, "load").await.contains("st-none"));

    // Run with the button: the confirmation names the flow and timeperiod.
    click(b, Locator::Id("btn-run")).await;
    let text = b
        .find(Locator::Id("confirm-text"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("flaky") && text.contains(TP), "{text}");
    click(b, Locator::Id("confirm-ok")).await;
    until(
        b,
        "document.querySelector('g.node[data-name=\"load\"]').classList.contains('st-invalid')",
        "load to turn red",
    )
    .await;
    until(
        b,
        "document.querySelector('#flow-state').dataset.state === 'state_invalid'",
        "the flow to be invalid",
    )
    .await;
    assert!(node_state(b, "prepare").await.contains("st-processed"));
    assert!(node_state(b, "publish").await.contains("st-embryo"));
    // The failed step's details and its log, from the page.
    click(b, Locator::Css("g.node[data-name=\"load\"]")).await;
    until(b, "document.querySelector('#step-state') && document.querySelector('#step-state').dataset.state === 'state_invalid'", "load's details").await;
    until(
        b,
        "document.querySelector('#log').textContent.includes('ready is missing')",
        "load's log",
    )
    .await;
    // Its job handle, from the step record: the local cluster's job.
    until(
        b,
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
    click(b, Locator::Id("btn-run-from")).await;
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
    click(b, Locator::Id("confirm-ok")).await;
    until(
        b,
        "document.querySelector('#flow-state').dataset.state === 'state_processed'",
        "the flow to be processed",
    )
    .await;
    for step in ["prepare", "load", "publish", "finish"] {
        until(
            b,
            &format!("document.querySelector('g.node[data-name=\"{step}\"]').classList.contains('st-processed')"),
            "every node processed",
        )
        .await;
    }
    until(
        b,
        "document.querySelector('#log').textContent.includes('loading 2026112800')",
        "load's new log lines",
    )
    .await;
    std::fs::write(
        shots.join("02-processed.png"),
        b.screenshot().await.unwrap(),
    )
    .unwrap();
    b.clone().close().await.unwrap();
}

/// The Jobs page on a timetable `flow schedule` made: one cell per flow
/// and period, coloured by the Job's state (the given-up Jobs as failed),
/// each a link to its flow run's page, and paged back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: run through `cargo xtask test`"]
async fn the_jobs_page_colours_the_timetable_in_chromium() {
    let shots = shots();
    let home = Home::new();
    let days = support::timetable::days();
    support::timetable::make(&home, &days);
    let (_serve, base) = serve(&home, &support::timetable::FILES);
    let browser = browser().await;
    let b = &browser.client;

    // From the flow list, the header's link.
    b.goto(&format!("{base}/")).await.unwrap();
    until(b, "document.body.dataset.ready === '1'", "the flow list").await;
    click(b, Locator::Id("nav-jobs")).await;
    until(
        b,
        "location.hash === '#/jobs' && document.body.dataset.ready === '1'",
        "the Jobs page",
    )
    .await;
    let cells = b
        .execute(
            "return [...document.querySelectorAll('a.cell')].map((a) => [a.dataset.flow, a.dataset.tp,
               a.dataset.state, getComputedStyle(a).backgroundColor, a.getAttribute('href')]);",
            vec![],
        )
        .await
        .unwrap();
    let cells: Vec<[String; 5]> = serde_json::from_value(cells).unwrap();
    let colour = |state: &str| match state {
        "processed" => "rgb(220, 252, 231)",
        "failed" => "rgb(254, 202, 202)",
        "noop" => "rgb(236, 252, 203)",
        "embryo" => "rgb(243, 244, 246)",
        "skipped" => "rgb(254, 249, 195)",
        other => panic!("no colour expected for {other}"),
    };
    let mut want = Vec::new();
    for (flow, states) in [
        ("after", ["processed", "skipped", "embryo", "processed"]),
        ("load", ["processed", "failed", "failed", "processed"]),
        ("quiet", ["noop"; 4]),
    ] {
        // Columns newest first.
        for (day, state) in days.iter().zip(states).rev() {
            want.push([
                flow.to_string(),
                day.clone(),
                state.to_string(),
                colour(state).to_string(),
                format!("#/flows/{flow}/{day}"),
            ]);
        }
    }
    assert_eq!(cells, want);
    let columns = b
        .execute(
            "return document.querySelectorAll('table.jobs th.tp').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(columns, 4);
    std::fs::write(shots.join("03-jobs.png"), b.screenshot().await.unwrap()).unwrap();

    // A failed cell opens its flow run: the run that failed.
    click(
        b,
        Locator::Css(&format!(
            "a.cell[data-flow=\"load\"][data-tp=\"{}\"]",
            days[2]
        )),
    )
    .await;
    until(
        b,
        &format!(
            "location.hash === '#/flows/load/{}' && document.querySelector('#flow-state') \
             && document.querySelector('#flow-state').dataset.state === 'state_invalid'",
            days[2]
        ),
        "the failed Job's flow page",
    )
    .await;

    // Two periods a page; the older page has the two before.
    b.goto(&format!("{base}/#/jobs?periods=2")).await.unwrap();
    until(
        b,
        "location.hash === '#/jobs?periods=2' && document.body.dataset.ready === '1' && document.querySelector('#j-older')",
        "the first page of two periods",
    )
    .await;
    click(b, Locator::Id("j-older")).await;
    until(
        b,
        "location.hash.startsWith('#/jobs?periods=2&before=') && document.body.dataset.ready === '1'",
        "the older page",
    )
    .await;
    let tps = b
        .execute(
            "return [...document.querySelectorAll('table.jobs th.tp')].map((th) => th.title);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(tps, serde_json::json!([days[1], days[0]]));
    b.clone().close().await.unwrap();
}
