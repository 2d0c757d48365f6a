//! The viewer's benchmark, run by `cargo xtask bench` (in release): a
//! 10,000-step flow (a 100×100 lattice, every step recorded in a real
//! SQLite store) served by a real server, measured for
//!
//! - the layout of the graph (computed once per flow, then cached),
//! - the graph JSON (`GET /api/flows/NAME/TP`), cold and warm,
//! - the page in headless Chromium: from navigation to interactive (the
//!   graph drawn and painted, handlers attached; the page sets
//!   `window.__flowReady` then), and selecting a node (its details shown),
//! - the first event of the stream of a run that recorded 1,000,000 log
//!   lines (a second, one-step flow): the server asks the store where the
//!   lines end, it does not read them (issue 21 measured 22 s for 1.36 M
//!   lines when it did).
//!
//! Targets (issue 13): graph JSON under 100 ms, page interactive within 3 s;
//! (issue 21) first event of the 1 M-line run under 100 ms.
//! Prints a table and writes `OUT_DIR/viewer.json`; exits 1 when a measured
//! figure misses its target.
//!
//! `viewer_bench --chromium PATH --chromedriver PATH --out-dir DIR [--width W --layers L]`

use chrono::Utc;
use fantoccini::ClientBuilder;
use flow_core::actions::Identity;
use flow_core::{
    ActionInstance, FlowDefinition, FlowKey, FlowState, FlowStore, JobHandle, JobRecord,
    StepDefinition, StepRecord, StepState, TimeQualifier, Timeperiod,
};
use flow_server::{FlowFile, Server, ServerOptions};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/recorded.rs"]
mod recorded;

const TP: &str = "2026112800";
/// The log lines of the chatty flow's run.
const LOG_LINES: usize = 1_000_000;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out_dir = PathBuf::from(arg(&args, "--out-dir").unwrap_or_else(|| "target/bench".into()));
    let width: usize = arg(&args, "--width")
        .and_then(|w| w.parse().ok())
        .unwrap_or(100);
    let layers: usize = arg(&args, "--layers")
        .and_then(|w| w.parse().ok())
        .unwrap_or(100);
    let steps = width * layers;

    // The flow: step j of layer i depends on steps j and j+1 of layer i-1.
    let name = |l: usize, j: usize| format!("s{l}_{j}");
    let mut definition = FlowDefinition::new("lattice").time_qualifier(TimeQualifier::Daily);
    for l in 0..layers {
        for j in 0..width {
            let mut step = StepDefinition::new(name(l, j), ActionInstance::new(Arc::new(Identity)));
            if l > 0 {
                step = step.depends_on([name(l - 1, j), name(l - 1, (j + 1) % width)]);
            }
            definition = definition.step(step);
        }
    }
    let graph = Arc::new(definition.build().expect("a valid lattice"));
    let started = Instant::now();
    let layout = flow_server::layout::layout(&graph);
    let layout_ms = started.elapsed().as_secs_f64() * 1e3;

    // Every step recorded: most processed, a band running, the rest waiting.
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn FlowStore> =
        Arc::new(SqliteStore::open(&dir.path().join("flow.db"), SqliteOptions::default()).unwrap());
    let tp: Timeperiod = TP.parse().unwrap();
    let now = Utc::now();
    let records: Vec<StepRecord> = graph
        .steps()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut r = StepRecord::embryo("lattice", &s.name, tp, None, now);
            let layer = i / width;
            if layer < layers / 2 {
                r.state = StepState::Processed;
                r.started_at = Some(now);
                r.finished_at = Some(now + chrono::TimeDelta::milliseconds(5));
            } else if layer == layers / 2 {
                r.state = StepState::InProgress;
                r.started_at = Some(now);
                r.job = Some(JobRecord {
                    action_index: 0,
                    action: "identity".into(),
                    attempt: 1,
                    handle: JobHandle::new("local", "local-0", [("job", format!("job-{i}"))]),
                    submitted_at: now,
                    adopted: false,
                });
            }
            r
        })
        .collect();
    // The lease stays held: the lattice is being run.
    let key = FlowKey::new("lattice", tp);
    let _lease = recorded::record_run(&*store, &key, FlowState::InProgress, &records).await;
    let (chatty, record_s) = chatty_run(&store, tp).await;

    let store_for_timing = store.clone();
    let mut options = ServerOptions::new(
        store,
        vec![
            FlowFile {
                graph: graph.clone(),
                origin: "generated".into(),
            },
            FlowFile {
                graph: chatty,
                origin: "generated".into(),
            },
        ],
    );
    options.bind = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind(options).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let serving = tokio::spawn(server.run(async move { stopped.cancelled().await }));

    // The graph JSON, and what reading the records alone costs.
    let t = Instant::now();
    let _ = store_for_timing.get_steps(&key).await.unwrap();
    let read_ms = t.elapsed().as_secs_f64() * 1e3;
    let http = reqwest::Client::new();
    let url = format!("{base}/api/flows/lattice/{TP}");
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..11 {
        let t = Instant::now();
        let body = http.get(&url).send().await.unwrap().bytes().await.unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = body.len();
    }
    let json_first = times[0];
    let json_warm = median(times[1..].to_vec());
    let json_max = times[1..].iter().cloned().fold(0.0, f64::max);

    // The first event of the 1 M-line run's stream (its channel is new, so
    // this includes finding where the recorded lines end).
    let t = Instant::now();
    let mut events = http
        .get(format!("{base}/api/flows/chatty/{TP}/events"))
        .send()
        .await
        .unwrap();
    let mut first = String::new();
    while !first.contains("\n\n") {
        let chunk = events
            .chunk()
            .await
            .unwrap()
            .expect("the event stream ended");
        first.push_str(&String::from_utf8_lossy(&chunk));
    }
    let first_event_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(events);
    assert!(
        first.contains("event: snapshot")
            && first.contains(&format!("\"log_position\":{LOG_LINES}")),
        "the first event is the snapshot at the last line: {first}"
    );

    // The page in Chromium.
    let (page_ms, select_ms) = match (arg(&args, "--chromium"), arg(&args, "--chromedriver")) {
        (Some(chromium), Some(driver)) => match page(&base, &chromium, &driver).await {
            Ok(r) => (Some(r.0), Some(r.1)),
            Err(e) => {
                eprintln!("viewer bench: the page was not measured: {e}");
                (None, None)
            }
        },
        _ => {
            eprintln!("viewer bench: no --chromium/--chromedriver: the page was not measured");
            (None, None)
        }
    };
    stop.cancel();
    let _ = serving.await;

    let ok = |v: Option<f64>, target: f64| {
        v.map_or(
            "not measured",
            |v| if v <= target { "met" } else { "MISSED" },
        )
    };
    println!();
    println!(
        "viewer, {steps} steps ({width}x{layers} lattice), {} nodes and {} edges drawn",
        layout.nodes.len(),
        layout.edges.len()
    );
    println!("  layout (once per flow, cached)        {layout_ms:>9.1} ms");
    println!("  reading the 10,000 step records       {read_ms:>9.1} ms  (SQLite, part of every graph JSON)");
    println!(
        "  graph JSON, first request             {json_first:>9.1} ms  ({:.1} MB)",
        bytes as f64 / 1e6
    );
    println!("  graph JSON, warm median / max of 10   {json_warm:>9.1} / {json_max:.1} ms   target < 100 ms: {}", ok(Some(json_warm), 100.0));
    match page_ms {
        Some(p) => println!(
            "  page interactive (median of 3)        {p:>9.1} ms   target < 3000 ms: {}",
            ok(Some(p), 3000.0)
        ),
        None => println!("  page interactive                      not measured (no Chromium)"),
    }
    if let Some(s) = select_ms {
        println!("  select a node (click to details)      {s:>9.1} ms   (includes the WebDriver round trip)");
    }
    println!("  recording {LOG_LINES} log lines (setup)  {record_s:>9.1} s");
    println!(
        "  first event, run of {LOG_LINES} lines     {first_event_ms:>9.1} ms   target < 100 ms: {}",
        ok(Some(first_event_ms), 100.0)
    );
    std::fs::create_dir_all(&out_dir).unwrap();
    let report = serde_json::json!({
        "steps": steps,
        "layout_ms": layout_ms,
        "read_step_records_ms": read_ms,
        "graph_json_first_ms": json_first,
        "graph_json_warm_median_ms": json_warm,
        "graph_json_warm_max_ms": json_max,
        "graph_json_bytes": bytes,
        "page_interactive_ms": page_ms,
        "select_node_ms": select_ms,
        "log_lines": LOG_LINES,
        "first_event_ms": first_event_ms,
        "targets": { "graph_json_ms": 100, "page_interactive_ms": 3000, "first_event_ms": 100 },
        "at": Utc::now(),
    });
    let path = out_dir.join("viewer.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("  written to {}", path.display());
    // A missed target fails the bench (and `cargo xtask bench`); a figure
    // not measured (no Chromium) is reported above, not failed.
    let missed: Vec<&str> = [
        ("graph JSON", Some(json_warm), 100.0),
        ("page interactive", page_ms, 3000.0),
        ("first event", Some(first_event_ms), 100.0),
    ]
    .into_iter()
    .filter(|(_, v, target)| ok(*v, *target) == "MISSED")
    .map(|(what, _, _)| what)
    .collect();
    if !missed.is_empty() {
        eprintln!("viewer bench: target MISSED: {}", missed.join(", "));
        std::process::exit(1);
    }
}

/// A one-step flow `chatty` whose run at `tp` recorded [`LOG_LINES`] log
/// lines; returns its graph and how long recording them took (s).
async fn chatty_run(
    store: &Arc<dyn FlowStore>,
    tp: Timeperiod,
) -> (Arc<flow_core::FlowGraph>, f64) {
    let key = FlowKey::new("chatty", tp);
    let (lease, run) = recorded::record_run(&**store, &key, FlowState::Processed, &[]).await;
    let started = Instant::now();
    recorded::record_lines(&**store, &key, &run, "talk", LOG_LINES).await;
    let record_s = started.elapsed().as_secs_f64();
    store.release_lease(&lease).await.unwrap();
    (recorded::one_step_flow("chatty", "talk"), record_s)
}

/// Loads the flow page three times; returns the median time to
/// interactive and the time to select a node, in ms.
async fn page(base: &str, chromium: &str, driver: &str) -> Result<(f64, f64), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut child = Command::new(driver)
        .arg(format!("--port={port}"))
        // Its own process group, so the browser it starts goes with it.
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {driver}: {e}"))?;
    let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
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
    let result = async {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut client = None;
        for _ in 0..100 {
            if let Ok(c) = ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                client = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let b = client.ok_or("chromedriver did not answer")?;
        let mut loads = Vec::new();
        for _ in 0..3 {
            b.goto(&format!("{base}/#/")).await.map_err(|e| e.to_string())?;
            b.goto("about:blank").await.map_err(|e| e.to_string())?;
            b.goto(&format!("{base}/#/flows/lattice/{TP}")).await.map_err(|e| e.to_string())?;
            let mut ready = None;
            for _ in 0..600 {
                let v = b
                    .execute("return window.__flowReady || null;", vec![])
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(ms) = v.as_f64() {
                    ready = Some(ms);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            loads.push(ready.ok_or("the page never became ready")?);
        }
        let times = b
            .execute("return window.__flowTimes;", vec![])
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("viewer bench: last load (ms since navigation): {times}");
        // Select a node: click, then wait for its details.
        b.execute("window.__t0 = performance.now();", vec![])
            .await
            .map_err(|e| e.to_string())?;
        // At the zoom that fits 10,000 nodes a node is a few pixels wide:
        // press and release on it with pointer events, as a click does.
        b.execute(
            "const n = document.querySelector('g.node[data-name=\"s50_50\"]'); \
             for (const t of ['pointerdown', 'pointerup']) n.dispatchEvent(new PointerEvent(t, {bubbles: true, pointerId: 1}));",
            vec![],
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut select = None;
        for _ in 0..500 {
            let v = b
                .execute(
                    "const h = document.querySelector('#side h2'); return h && h.textContent.startsWith('s50_50') ? performance.now() - window.__t0 : null;",
                    vec![],
                )
                .await
                .map_err(|e| e.to_string())?;
            if let Some(ms) = v.as_f64() {
                select = Some(ms);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = b.close().await;
        Ok::<_, String>((median(loads), select.ok_or("the node's details never showed")?))
    }
    .await;
    // The driver and the browser it started, even after an error.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
    result
}
