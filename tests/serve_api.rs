//! `flow serve` end to end: the real binary on a loopback port, driven by a
//! real HTTP client (reqwest) and a real SQLite store, local cluster and
//! log files in each test's own directory.

mod support;

use futures_util::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;
use support::Home;

const TP: &str = "2026112800";

/// A `flow serve` process and its base URL; stopped (SIGTERM) on drop.
struct Served {
    child: Child,
    base: String,
}

impl Served {
    fn start(home: &Home, args: &[&str], env: &[(&str, &str)]) -> Served {
        let mut all = vec!["serve", "--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut command = home.command(&all);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
            let out = child.wait_with_output().unwrap();
            panic!(
                "flow serve did not start: {line}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        Served {
            child,
            base: url.trim_end_matches('/').to_string(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> Client {
    Client::builder().build().unwrap()
}

async fn get(c: &Client, url: &str) -> (StatusCode, Value) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(c: &Client, url: &str, body: Value) -> (StatusCode, Value) {
    let r = c.post(url).json(&body).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `check` until it holds (at most 60 s: a bound for a broken build,
/// not a timing assertion).
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting for {what}");
}

async fn flow_state(c: &Client, s: &Served, flow: &str) -> Option<String> {
    let (_, v) = get(c, &s.url(&format!("/api/flows/{flow}/{TP}"))).await;
    v["flow"]["state"].as_str().map(str::to_string)
}

const CHAIN: &str = r#"
name = "chain"
time_qualifier = "daily"
[[steps]]
name = "a"
main = { action = "shell", command = "echo a-out; sleep 0.3" }
[[steps]]
name = "b"
depends_on = ["a"]
pre = [{ action = "mkdir", path = "out/{timeperiod}" }]
main = { action = "shell", command = "echo b-out; sleep 0.3" }
[[steps]]
name = "c"
depends_on = ["b"]
main = { action = "shell", command = "echo c-out" }
post = [{ action = "identity", name = "tidy" }]
"#;

const SLOW: &str = r#"
name = "slow"
time_qualifier = "daily"
[[steps]]
name = "first"
main = { action = "shell", command = "sleep 60" }
[[steps]]
name = "second"
depends_on = ["first"]
main = { action = "identity" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_with_the_right_codes() {
    let home = Home::new();
    let hello = support::repo_root().join("examples/hello.toml");
    let hello = hello.to_str().unwrap();
    home.write("slow.toml", SLOW);
    let s = Served::start(&home, &[hello, "slow.toml"], &[]);
    let c = client();

    // The page and its files, with the security headers.
    let page = c.get(s.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(page.text().await.unwrap().contains("/assets/app.js"));
    let js = c.get(s.url("/assets/app.js")).send().await.unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(get(&c, &s.url("/assets/nope.js")).await.0, 404);

    // Nothing ran yet.
    let (status, defs) = get(&c, &s.url("/api/definitions")).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = defs["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello", "slow"]);
    let (status, detail) = get(&c, &s.url(&format!("/api/flows/hello/{TP}"))).await;
    assert_eq!(status, 200);
    assert!(detail["flow"].is_null());
    let nodes = detail["graph"]["nodes"].as_array().unwrap();
    let node_names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(
        node_names,
        ["start", "extract", "count", "copy", "report", "finish"]
    );
    assert!(nodes.iter().all(|n| n["state"].is_null()));
    assert_eq!(detail["graph"]["edges"].as_array().unwrap().len(), 6);

    // A run over the API: 202 at once with a run id, then processed.
    let (status, run) = post(&c, &s.url(&format!("/api/flows/hello/{TP}/run")), json!({})).await;
    assert_eq!(status, 202, "{run}");
    let run_id = run["id"].as_str().unwrap().to_string();
    assert_eq!(run["status"], "running");
    assert_eq!(run["steps_to_run"], 4);
    wait_for("hello to be processed", || async {
        flow_state(&c, &s, "hello").await.as_deref() == Some("state_processed")
    })
    .await;
    let (_, detail) = get(&c, &s.url(&format!("/api/flows/hello/{TP}"))).await;
    for n in detail["graph"]["nodes"].as_array().unwrap() {
        assert_eq!(n["state"], "state_processed", "{n}");
    }
    let report = &detail["graph"]["nodes"][4];
    assert_eq!(report["main"], "complete");
    assert_eq!(report["actions"]["post"], json!(["tidy"]));
    assert!(report["duration_ms"].is_number());

    // List, filtered and paged.
    let (status, list) = get(
        &c,
        &s.url("/api/flows?name=hello&state=state_processed&page=1&per_page=1"),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 1);
    assert_eq!(list["flows"][0]["timeperiod"], TP);
    let (_, none) = get(&c, &s.url("/api/flows?state=state_invalid")).await;
    assert_eq!(none["total"], 0);
    let (_, later) = get(&c, &s.url("/api/flows?from=2026112900")).await;
    assert_eq!(later["total"], 0);

    // One step, its log paged by position, the run history.
    let (status, step) = get(&c, &s.url(&format!("/api/flows/hello/{TP}/steps/report"))).await;
    assert_eq!(status, 200);
    assert_eq!(step["step"]["state"], "state_processed");
    assert_eq!(step["definition"]["post"][0]["kind"], "rm");
    assert_eq!(step["definition"]["depends_on"], json!(["count", "copy"]));
    let (status, log) = get(
        &c,
        &s.url(&format!("/api/flows/hello/{TP}/logs?step=extract&limit=2")),
    )
    .await;
    assert_eq!(status, 200, "{log}");
    let first: Vec<u64> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["position"].as_u64().unwrap())
        .collect();
    assert_eq!(first, [1, 2]);
    assert_eq!(log["more"], true);
    let (_, rest) = get(
        &c,
        &s.url(&format!(
            "/api/flows/hello/{TP}/logs?step=extract&after={}",
            log["next_after"]
        )),
    )
    .await;
    let rest_lines = rest["lines"].as_array().unwrap();
    assert!(rest_lines
        .iter()
        .all(|l| l["position"].as_u64().unwrap() > 2));
    assert!(
        rest_lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("extracting hello")),
        "{rest}"
    );
    let (_, flow_log) = get(&c, &s.url(&format!("/api/flows/hello/{TP}/logs"))).await;
    assert!(
        flow_log["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"]
                .as_str()
                .unwrap()
                .contains("finished: flow is state_processed")),
        "{flow_log}"
    );
    let (_, runs) = get(&c, &s.url(&format!("/api/flows/hello/{TP}/runs"))).await;
    assert_eq!(runs["runs"][0]["id"], run_id.as_str());
    assert_eq!(runs["runs"][0]["outcome"], "state_processed");
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");

    // 404: unknown flow, step, path.
    for path in [
        format!("/api/flows/nope/{TP}"),
        format!("/api/flows/hello/{TP}/steps/nope"),
        format!("/api/flows/hello/{TP}/logs?step=nope"),
        "/api/flows?name=nope".into(),
        "/api/nothing".into(),
    ] {
        let (status, body) = get(&c, &s.url(&path)).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let (status, body) = post(
        &c,
        &s.url(&format!("/api/flows/hello/{TP}/run-one")),
        json!({"step": "nope"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no step 'nope'"),
        "{body}"
    );

    // 400: malformed timeperiods, queries and bodies.
    for path in [
        "/api/flows/hello/2026112807".to_string(),
        "/api/flows/hello/tomorrow".into(),
        "/api/flows?page=0".into(),
        "/api/flows?state=done".into(),
        "/api/flows?from=2026".into(),
        format!("/api/flows/hello/{TP}/logs?after=x"),
        format!("/api/flows/hello/{TP}/logs?bogus=1"),
    ] {
        let (status, body) = get(&c, &s.url(&path)).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    let bad = c
        .post(s.url(&format!("/api/flows/hello/{TP}/run-one")))
        .header("content-type", "application/json")
        .body("{\"step\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let (status, body) = post(
        &c,
        &s.url(&format!("/api/flows/hello/{TP}/run-from")),
        json!({}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = post(
        &c,
        &s.url(&format!("/api/flows/hello/{TP}/run")),
        json!({"step": "count"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &c,
        &s.url(&format!("/api/flows/hello/{TP}/run")),
        json!({"bogus": 1}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &c,
        &s.url("/api/flows/hello/run-mode"),
        json!({"run_mode": "run_mode_run_one", "timeperiod": TP}),
    )
    .await;
    assert_eq!(status, 400);

    // 409: a refused mode, with the engine's reason; nothing changes.
    let (status, body) = post(
        &c,
        &s.url(&format!("/api/flows/hello/{TP}/recover")),
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nothing to recover"),
        "{body}"
    );
    let (status, body) = post(
        &c,
        &s.url(&format!("/api/flows/slow/{TP}/run-one")),
        json!({"step": "second"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("blocked"),
        "{body}"
    );
    assert_eq!(
        flow_state(&c, &s, "slow").await,
        None,
        "a refusal wrote a record"
    );

    // The managed run mode.
    let (status, body) = post(
        &c,
        &s.url("/api/flows/hello/run-mode"),
        json!({"run_mode": "run_mode_recovery", "timeperiod": TP}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["flow"]["run_mode"], "run_mode_recovery");
    let (_, detail) = get(&c, &s.url(&format!("/api/flows/hello/{TP}"))).await;
    assert_eq!(detail["flow"]["run_mode"], "run_mode_recovery");
    let (status, _) = post(
        &c,
        &s.url("/api/flows/slow/run-mode"),
        json!({"run_mode": "run_mode_nominal"}),
    )
    .await;
    assert_eq!(status, 404, "no record to store it on");

    // One run per flow and timeperiod: a second one is refused while the
    // first runs; cancel stops it; a cancel of a flow no one runs marks
    // its unfinished steps.
    let (status, first) = post(&c, &s.url(&format!("/api/flows/slow/{TP}/run")), json!({})).await;
    assert_eq!(status, 202, "{first}");
    let (status, body) = post(&c, &s.url(&format!("/api/flows/slow/{TP}/run")), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap()),
        "{body}"
    );
    let (status, body) = post(
        &c,
        &s.url(&format!("/api/flows/slow/{TP}/cancel")),
        json!({}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    wait_for("slow to be cancelled", || async {
        flow_state(&c, &s, "slow").await.as_deref() == Some("state_invalid")
    })
    .await;
    let (_, detail) = get(&c, &s.url(&format!("/api/flows/slow/{TP}"))).await;
    assert_eq!(
        detail["graph"]["nodes"][1]["state"], "state_canceled",
        "{detail}"
    );
    let (status, body) = post(
        &c,
        &s.url(&format!("/api/flows/slow/{TP}/cancel")),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["canceled"], json!(["second"]));
    assert_eq!(body["state"], "state_invalid");
}

/// Another process (the CLI) runs the flow: the server's run is refused
/// through the store's lease, as a second `flow run` would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_held_by_another_engine_is_refused_with_409() {
    let home = Home::new();
    home.write("slow.toml", SLOW);
    let mut cli = home
        .command(&["run", "slow.toml", "--timeperiod", TP])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Served::start(&home, &["slow.toml"], &[]);
    let c = client();
    wait_for("the CLI's run to start", || async {
        flow_state(&c, &s, "slow").await.as_deref() == Some("state_in_progress")
    })
    .await;
    let (status, body) = post(&c, &s.url(&format!("/api/flows/slow/{TP}/run")), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already being run by"),
        "{body}"
    );
    let (status, body) = post(
        &c,
        &s.url(&format!("/api/flows/slow/{TP}/cancel")),
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    unsafe { libc::kill(cli.id() as i32, libc::SIGTERM) };
    assert_eq!(cli.wait().unwrap().code(), Some(3));
    // The CLI's run, seen by polling the store, is the flow record's run.
    let (_, runs) = get(&c, &s.url(&format!("/api/flows/slow/{TP}/runs"))).await;
    let runs = runs["runs"].as_array().unwrap();
    assert!(
        runs.iter()
            .any(|r| r["source"] == "flow_record" && r["mode"] == "run_mode_nominal"),
        "{runs:?}"
    );
    assert!(
        runs.iter()
            .any(|r| r["source"] == "server" && r["status"] == "refused"),
        "{runs:?}"
    );
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

/// Reads events from `/events` (optionally resuming after `last`) until
/// `stop` says so for an event; returns them all.
async fn read_events(
    c: &Client,
    url: &str,
    last: Option<&str>,
    mut stop: impl FnMut(&Sse) -> bool,
) -> Vec<Sse> {
    let mut request = c.get(url).header("accept", "text/event-stream");
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the event stream stalled")
            .expect("the event stream ended")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut e = Sse {
                id: String::new(),
                event: String::new(),
                data: Value::Null,
            };
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    e.id = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("event:") {
                    e.event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if e.event.is_empty() {
                continue; // keep-alive comment
            }
            e.data = serde_json::from_str(&data).unwrap();
            let done = stop(&e);
            events.push(e);
            if done {
                return events;
            }
        }
    }
}

fn is_flow_done(e: &Sse) -> bool {
    e.event == "flow" && e.data["state"] == "state_processed"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_streams_its_state_changes_in_order_and_a_reconnect_misses_nothing() {
    let home = Home::new();
    home.write("chain.toml", CHAIN);
    let s = Served::start(&home, &["chain.toml"], &[]);
    let c = client();
    let events_url = s.url(&format!("/api/flows/chain/{TP}/events"));

    // A watcher that stays connected, and one that drops after a few
    // events and comes back with Last-Event-ID.
    let steady = tokio::spawn({
        let (c, url) = (c.clone(), events_url.clone());
        async move { read_events(&c, &url, None, is_flow_done).await }
    });
    let mut seen = 0;
    let first_part = read_events(&c, &events_url, None, |e| {
        if e.event == "snapshot" {
            return false;
        }
        seen += 1;
        seen == 1
    });
    // Start the run once both listen (the first part waits for an event).
    let starter = tokio::spawn({
        let (c, url) = (c.clone(), s.url(&format!("/api/flows/chain/{TP}/run")));
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            post(&c, &url, json!({})).await
        }
    });
    let mut interrupted = first_part.await;
    let (status, run) = starter.await.unwrap();
    assert_eq!(status, 202, "{run}");
    assert_eq!(interrupted[0].event, "snapshot");
    // Away for a while: the run goes on meanwhile.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let last = interrupted.last().unwrap().id.clone();
    let resumed = read_events(&c, &events_url, Some(&last), is_flow_done).await;
    assert_ne!(
        resumed[0].event, "snapshot",
        "a resumable id must not get a snapshot"
    );
    interrupted.extend(resumed);
    let steady = steady.await.unwrap();

    // Exactly the same events, ids and all, whether connected throughout or
    // not.
    assert_eq!(steady[0].event, "snapshot");
    assert_eq!(&steady[1..], &interrupted[1..]);
    let ids: Vec<u64> = steady.iter().map(|e| e.id.parse().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids must grow: {ids:?}"
    );

    // In order: each step embryo → in progress → processed, each finishing
    // before its dependant starts, the flow processed last.
    let states: Vec<(String, String)> = steady
        .iter()
        .filter(|e| e.event == "step" || e.event == "flow")
        .map(|e| {
            let who = if e.event == "flow" {
                "flow".to_string()
            } else {
                e.data["name"].as_str().unwrap().to_string()
            };
            (who, e.data["state"].as_str().unwrap().to_string())
        })
        .collect();
    let position = |who: &str, state: &str| {
        states
            .iter()
            .position(|(w, s)| w == who && s == state)
            .unwrap_or_else(|| panic!("no {who} {state} in {states:?}"))
    };
    assert_eq!(
        states.first().unwrap(),
        &("flow".into(), "state_in_progress".into())
    );
    assert_eq!(
        states.last().unwrap(),
        &("flow".into(), "state_processed".into())
    );
    for step in ["a", "b", "c"] {
        assert!(position(step, "state_embryo") < position(step, "state_in_progress"));
        assert!(position(step, "state_in_progress") < position(step, "state_processed"));
    }
    assert!(position("a", "state_processed") < position("b", "state_in_progress"));
    assert!(position("b", "state_processed") < position("c", "state_in_progress"));
    // Phase changes are events too.
    assert!(steady
        .iter()
        .any(|e| e.event == "step" && e.data["name"] == "b" && e.data["pre"] == "running"));
    // Log lines of the steps came through, each step's in position order.
    for (step, text) in [("a", "a-out"), ("b", "b-out")] {
        let lines: Vec<&Sse> = steady
            .iter()
            .filter(|e| e.event == "log" && e.data["step"] == step)
            .collect();
        assert!(
            lines.iter().any(|e| e.data["message"] == text),
            "{step}: {lines:?}"
        );
        let positions: Vec<u64> = lines
            .iter()
            .map(|e| e.data["position"].as_u64().unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    }
    assert!(steady
        .iter()
        .any(|e| e.event == "run" && e.data["id"] == run["id"]));

    // An id the server cannot resume from gets the current state first.
    let stale = read_events(&c, &events_url, Some("12"), |_| true).await;
    assert_eq!(stale[0].event, "snapshot");
    assert_eq!(stale[0].data["flow"]["state"], "state_processed");
    assert_eq!(stale[0].data["steps"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_origins_hosts_and_secrets() {
    let home = Home::new();
    home.write(
        "flow.toml",
        &format!(
            "{}\n[serve]\ntoken = \"env:FLOW_TEST_TOKEN\"\n[secrets]\npassword = \"env:FLOW_TEST_PASSWORD\"\n",
            support::SETTINGS
        ),
    );
    home.write(
        "leaky.toml",
        r#"
name = "leaky"
time_qualifier = "daily"
[[steps]]
name = "talk"
main = { action = "shell", command = "echo the password is {settings.password}; echo {settings.password} >&2; exit 3" }
"#,
    );
    let env = [
        ("FLOW_TEST_TOKEN", "tok-123"),
        ("FLOW_TEST_PASSWORD", "hunter2hunter2"),
    ];
    let s = Served::start(&home, &["leaky.toml"], &env);
    let c = client();
    let run = s.url(&format!("/api/flows/leaky/{TP}/run"));
    let own = s.base.clone();

    // No token, a wrong one, a foreign page: refused, and nothing ran.
    let r = c.post(&run).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"flow\"");
    let r = c
        .post(&run)
        .bearer_auth("tok-124")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(&run)
        .bearer_auth("tok-123")
        .header("origin", "http://evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("evil.example"),
        "{body}"
    );
    let r = c
        .post(&run)
        .bearer_auth("tok-123")
        .header("sec-fetch-site", "cross-site")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(s.url(&format!("/api/flows/leaky/{TP}")))
        .header("host", "rebound.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a foreign Host (DNS rebinding) is refused");
    assert_eq!(flow_state(&c, &s, "leaky").await, None);

    // Reads need no token; the own page with the token may act.
    let (status, _) = get(&c, &s.url("/api/definitions")).await;
    assert_eq!(status, 200);
    let r = c
        .post(&run)
        .bearer_auth("tok-123")
        .header("origin", &own)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_for("leaky to fail", || async {
        flow_state(&c, &s, "leaky").await.as_deref() == Some("state_invalid")
    })
    .await;

    // The secret reached the job, never an answer.
    let events = read_events(
        &c,
        &s.url(&format!("/api/flows/leaky/{TP}/events")),
        None,
        |_| true,
    )
    .await;
    let mut answers = vec![serde_json::to_string(&events[0].data).unwrap()];
    for path in [
        format!("/api/flows/leaky/{TP}"),
        format!("/api/flows/leaky/{TP}/steps/talk"),
        format!("/api/flows/leaky/{TP}/logs?step=talk"),
        format!("/api/flows/leaky/{TP}/logs"),
        format!("/api/flows/leaky/{TP}/runs"),
        "/api/flows".into(),
    ] {
        answers.push(
            c.get(s.url(&path))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    let all = answers.join("\n");
    assert!(all.contains("the password is ***"), "{all}");
    assert!(!all.contains("hunter2hunter2"), "a secret leaked: {all}");
    assert!(!all.contains("tok-123"), "the token leaked: {all}");
}

#[test]
fn a_public_address_without_a_token_is_refused() {
    let home = Home::new();
    home.write("slow.toml", SLOW);
    let out = home.flow(&["serve", "--bind", "0.0.0.0:0", "slow.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    let err = support::stderr(&out);
    assert!(
        err.contains("not a loopback address") && err.contains("[serve] token"),
        "{err}"
    );
    let out = home.flow(&["serve", "--bind", "127.0.0.1:0", "missing.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        support::stderr(&out).contains("missing.toml"),
        "{}",
        support::text(&out)
    );
    assert!(!home.db().exists(), "bad input created a store");
}
