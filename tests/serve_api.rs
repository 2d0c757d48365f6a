//! `flow serve` end to end: the real binary on a loopback port, driven by a
//! real HTTP client (reqwest) and a real SQLite store, local cluster and
//! log files in each test's own directory. Runs, log lines and their
//! positions come from the store, so a second server (or the CLI) on the
//! same store sees the same.

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
        let line = support::first_stdout_line(&mut child);
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
    assert_eq!(list["flows"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["flows"][0]["timeperiod"], TP);
    assert_eq!(list["flows"][0]["served"], true);
    assert_eq!(list["more"], false);
    let (_, none) = get(&c, &s.url("/api/flows?state=state_invalid")).await;
    assert!(none["flows"].as_array().unwrap().is_empty(), "{none}");
    let (_, later) = get(&c, &s.url("/api/flows?from=2026112900")).await;
    assert!(later["flows"].as_array().unwrap().is_empty(), "{later}");
    let (_, earlier) = get(&c, &s.url("/api/flows?to=2026112900&state=state_processed")).await;
    assert_eq!(earlier["flows"].as_array().unwrap().len(), 1, "{earlier}");

    // One step, its log paged by position, the run history.
    let (status, step) = get(&c, &s.url(&format!("/api/flows/hello/{TP}/steps/report"))).await;
    assert_eq!(step["step"]["rollbacks"], json!([]));
    let (_, extract) = get(&c, &s.url(&format!("/api/flows/hello/{TP}/steps/extract"))).await;
    let job = &extract["step"]["job"];
    assert_eq!(
        job["kind"], "local",
        "the shell job's durable handle: {extract}"
    );
    assert_eq!(job["action"], "shell");
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["adopted"], false);
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
    assert_eq!(first.len(), 2, "{log}");
    assert!(first[0] < first[1], "{log}");
    assert_eq!(log["next_after"], first[1]);
    assert_eq!(log["more"], true);
    assert_eq!(log["lines"][0]["run"], run_id.as_str());
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
        .all(|l| l["position"].as_u64().unwrap() > first[1] && l["step"] == "extract"));
    assert!(
        rest_lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("extracting hello")),
        "{rest}"
    );
    // The run's last lines are stored when it has ended.
    wait_for("the run's last log line", || async {
        let (_, flow_log) = get(
            &c,
            &s.url(&format!("/api/flows/hello/{TP}/logs?limit=10000")),
        )
        .await;
        flow_log["lines"].as_array().unwrap().iter().any(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .contains("finished: flow is state_processed")
        })
    })
    .await;
    let (_, runs) = get(&c, &s.url(&format!("/api/flows/hello/{TP}/runs"))).await;
    assert_eq!(runs["runs"][0]["id"], run_id.as_str());
    assert_eq!(runs["runs"][0]["outcome"], "state_processed");
    assert_eq!(runs["runs"][0]["status"], "finished");
    assert_eq!(runs["runs"][0]["mode"], "run_mode_nominal");
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
        format!("/api/flows/hello/{TP}/logs?run=r-17x"),
        format!("/api/flows/hello/{TP}/runs?limit=0"),
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
    wait_for("the running node's job handle", || async {
        let (_, detail) = get(&c, &s.url(&format!("/api/flows/slow/{TP}"))).await;
        let node = &detail["graph"]["nodes"][1];
        node["state"] == "state_in_progress" && node["job"]["kind"] == "local"
    })
    .await;
    let (_, detail) = get(&c, &s.url(&format!("/api/flows/slow/{TP}"))).await;
    assert_eq!(detail["run"]["id"], first["id"], "{detail}");
    assert_eq!(detail["run"]["status"], "running", "{detail}");
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
    assert_eq!(body["problems"], json!([]));
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
    // The history is the store's: the CLI's run, ended by its SIGTERM; the
    // refused request left none.
    let (_, runs) = get(&c, &s.url(&format!("/api/flows/slow/{TP}/runs"))).await;
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["mode"], "run_mode_nominal", "{runs:?}");
    assert_eq!(runs[0]["status"], "finished", "{runs:?}");
    assert_eq!(runs[0]["outcome"], "state_invalid", "{runs:?}");
}

/// A run killed with SIGKILL leaves its job running (jobs outlive their
/// engine). Cancel over HTTP is `flow cancel`: refused while the dead
/// run's lease is live, then it cancels that job and marks the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_over_http_cancels_the_job_a_dead_run_left() {
    let home = Home::new();
    let settings = support::SETTINGS.replace("ttl = \"60s\"", "ttl = \"2s\"");
    assert_ne!(settings, support::SETTINGS, "the test settings changed");
    home.write(
        "flow.toml",
        &settings.replace("heartbeat = \"1s\"", "heartbeat = \"500ms\""),
    );
    home.write(
        "orphan.toml",
        r#"
name = "orphan"
time_qualifier = "daily"
[[steps]]
name = "work"
main = { action = "shell", command = "echo $$ > job.pid; sleep 120" }
"#,
    );
    let mut cli = home
        .command(&["run", "orphan.toml", "--timeperiod", TP])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = home.path("job.pid");
    let mut job = None;
    wait_for("the job to start", || {
        job = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        std::future::ready(job.is_some())
    })
    .await;
    let job = job.unwrap();
    cli.kill().unwrap();
    cli.wait().unwrap();
    // A zombie (ended, not yet reaped by whoever inherited it) is gone.
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
    };
    assert!(alive(job), "the job outlives its engine");

    let s = Served::start(&home, &["orphan.toml"], &[]);
    let c = client();
    let cancel_url = s.url(&format!("/api/flows/orphan/{TP}/cancel"));
    let (_, runs) = get(&c, &s.url(&format!("/api/flows/orphan/{TP}/runs"))).await;
    assert_eq!(runs["runs"][0]["finished_at"], Value::Null, "{runs}");
    // Refused while the dead run's lease is live, accepted once stale.
    let mut answer = None;
    for _ in 0..1200 {
        let (status, body) = post(&c, &cancel_url, json!({})).await;
        if status == 200 {
            answer = Some(body);
            break;
        }
        assert_eq!(status, 409, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("is being run by"),
            "{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = answer.expect("the dead run's lease never turned stale");
    assert_eq!(body["canceled"], json!(["work"]), "{body}");
    assert_eq!(body["state"], "state_invalid", "{body}");
    wait_for("the orphaned job to be gone", || {
        std::future::ready(!alive(job))
    })
    .await;
    let (_, runs) = get(&c, &s.url(&format!("/api/flows/orphan/{TP}/runs"))).await;
    assert_eq!(runs["runs"][0]["status"], "abandoned", "{runs}");
    let (_, detail) = get(&c, &s.url(&format!("/api/flows/orphan/{TP}"))).await;
    assert_eq!(
        detail["graph"]["nodes"][1]["state"], "state_canceled",
        "{detail}"
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

/// The run's last log line: it is stored after the flow's final state and
/// the end of the run, so every event of the run came before it.
fn is_run_done(e: &Sse) -> bool {
    e.event == "log"
        && e.data["message"]
            .as_str()
            .is_some_and(|m| m.contains("finished: flow is state_processed"))
}

/// An event id `I-S-P`: the server instance, the journal sequence, the
/// store log position.
fn id_parts(id: &str) -> (String, u64, u64) {
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(parts.len(), 3, "an event id is I-S-P: {id}");
    (
        parts[0].to_string(),
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
    )
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
        async move { read_events(&c, &url, None, is_run_done).await }
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
    let resumed = read_events(&c, &events_url, Some(&last), is_run_done).await;
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
    // One instance; the sequence grows with every event, the log position
    // never goes back and is a log event's own position.
    let ids: Vec<(String, u64, u64)> = steady.iter().map(|e| id_parts(&e.id)).collect();
    assert!(ids.iter().all(|(i, _, _)| *i == ids[0].0), "{ids:?}");
    assert!(
        ids.windows(2).all(|w| w[0].1 < w[1].1 && w[0].2 <= w[1].2),
        "ids must grow: {ids:?}"
    );
    for (e, (_, _, position)) in steady.iter().zip(&ids) {
        if e.event == "log" {
            assert_eq!(e.data["position"], *position, "{e:?}");
        }
    }

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

    // The log events are every recorded line of the run, as `/logs` has
    // them.
    let (_, all) = get(
        &c,
        &s.url(&format!("/api/flows/chain/{TP}/logs?limit=10000")),
    )
    .await;
    let stored: Vec<u64> = all["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["position"].as_u64().unwrap())
        .collect();
    let streamed: Vec<u64> = steady
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| e.data["position"].as_u64().unwrap())
        .collect();
    assert_eq!(streamed, stored);

    // An id the server cannot resume from gets the current state first.
    let stale = read_events(&c, &events_url, Some("12"), |_| true).await;
    assert_eq!(stale[0].event, "snapshot");
    assert_eq!(stale[0].data["flow"]["state"], "state_processed");
    assert_eq!(stale[0].data["steps"].as_array().unwrap().len(), 3);
    assert_eq!(stale[0].data["run"]["id"], run["id"]);
    assert_eq!(stale[0].data["log_position"], *stored.last().unwrap());
}

/// The ids resume across processes: a client of one server, dropped
/// mid-run, reconnects to another server on the same store (say, after a
/// restart) with its Last-Event-ID. The new server has no journal of those
/// events, so it sends the log lines after the id's store position, read
/// from the store (none missed, none repeated), then the current state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_to_another_server_gets_the_missed_log_lines_from_the_store() {
    let home = Home::new();
    home.write("chain.toml", CHAIN);
    let first = Served::start(&home, &["chain.toml"], &[]);
    let c = client();
    let path = format!("/api/flows/chain/{TP}/events");
    // Listen until the first step's output arrives, then drop.
    let listening = tokio::spawn({
        let (c, url) = (c.clone(), first.url(&path));
        async move {
            read_events(&c, &url, None, |e| {
                e.event == "log" && e.data["message"] == "a-out"
            })
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, run) = post(
        &c,
        &first.url(&format!("/api/flows/chain/{TP}/run")),
        json!({}),
    )
    .await;
    assert_eq!(status, 202, "{run}");
    let before = listening.await.unwrap();
    let last = before.last().unwrap().id.clone();
    let (instance, _, position) = id_parts(&last);
    assert_eq!(before.last().unwrap().data["position"], position);
    wait_for("the run to end", || async {
        let (_, runs) = get(&c, &first.url(&format!("/api/flows/chain/{TP}/runs"))).await;
        runs["runs"][0]["status"] == "finished"
    })
    .await;
    let (_, all) = get(
        &c,
        &first.url(&format!("/api/flows/chain/{TP}/logs?limit=10000")),
    )
    .await;
    let lines = all["lines"].as_array().unwrap();
    let missed: Vec<u64> = lines
        .iter()
        .map(|l| l["position"].as_u64().unwrap())
        .filter(|p| *p > position)
        .collect();
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .contains("finished: flow is state_processed")),
        "the run's lines are all stored once its end is: {all}"
    );
    drop(first);

    let second = Served::start(&home, &["chain.toml"], &[]);
    let after = read_events(&c, &second.url(&path), Some(&last), |e| {
        e.event == "snapshot"
    })
    .await;
    let (snapshot, logs) = after.split_last().unwrap();
    let got: Vec<u64> = logs
        .iter()
        .map(|e| {
            assert_eq!(e.event, "log", "{e:?}");
            let (i, seq, p) = id_parts(&e.id);
            assert_ne!(i, instance, "another server instance");
            assert_eq!(seq, 0, "backlog ids resume through the store: {e:?}");
            assert_eq!(e.data["position"], p);
            p
        })
        .collect();
    assert_eq!(got, missed, "exactly the lines after the id's position");
    assert_eq!(snapshot.data["flow"]["state"], "state_processed");
    assert_eq!(snapshot.data["run"]["id"], run["id"]);
    assert_eq!(snapshot.data["run"]["status"], "finished");
    let (_, seq, p) = id_parts(&snapshot.id);
    assert!(
        seq > 0,
        "the snapshot's id resumes from the new server's journal"
    );
    assert_eq!(p, *missed.last().unwrap());
    // A client that dropped half-way through that backlog resumes from the
    // last line it got, again through the store.
    let half = &logs[logs.len() / 2];
    let rest = read_events(&c, &second.url(&path), Some(&half.id), |e| {
        e.event == "snapshot"
    })
    .await;
    let rest: Vec<u64> = rest
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| e.data["position"].as_u64().unwrap())
        .collect();
    assert_eq!(rest, missed[logs.len() / 2 + 1..]);
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
        ("FLOW_TEST_TOKEN", "tok-12345"),
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
        .bearer_auth("tok-12346")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(&run)
        .bearer_auth("tok-12345")
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
        .bearer_auth("tok-12345")
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

    // Reads need no token; the own page with the token may act. A watcher
    // on the event stream sees the whole run, from before it starts to its
    // last log line.
    let (status, _) = get(&c, &s.url("/api/definitions")).await;
    assert_eq!(status, 200);
    let events_url = s.url(&format!("/api/flows/leaky/{TP}/events"));
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
    let watcher = tokio::spawn({
        let (c, url) = (c.clone(), events_url.clone());
        async move {
            let mut connected = Some(connected_tx);
            read_events(&c, &url, None, |e| {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(());
                }
                e.event == "log"
                    && e.data["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("finished: flow is state_invalid"))
            })
            .await
        }
    });
    connected_rx.await.unwrap();
    let r = c
        .post(&run)
        .bearer_auth("tok-12345")
        .header("origin", &own)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let streamed = watcher.await.unwrap();
    assert_eq!(
        flow_state(&c, &s, "leaky").await.as_deref(),
        Some("state_invalid")
    );

    // With a record to change, still no state-changing request passes
    // without the right token, and nothing changes.
    for (path, body) in [
        (format!("/api/flows/leaky/{TP}/cancel"), json!({})),
        (
            "/api/flows/leaky/run-mode".to_string(),
            json!({"run_mode": "run_mode_recovery", "timeperiod": TP}),
        ),
        (format!("/api/flows/leaky/{TP}/recover"), json!({})),
        (
            format!("/api/flows/leaky/{TP}/run-one"),
            json!({"step": "talk"}),
        ),
        (
            format!("/api/flows/leaky/{TP}/run-from"),
            json!({"step": "talk"}),
        ),
        (format!("/api/flows/leaky/{TP}/run"), json!({})),
    ] {
        for token in [None, Some("tok-12346"), Some("")] {
            let mut request = c.post(s.url(&path)).header("origin", &own).json(&body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} with token {token:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"flow\"");
            assert_security_headers(&r, &path);
            let answer: Value = r.json().await.unwrap();
            assert!(answer["error"].is_string(), "{path}: {answer}");
        }
    }
    let (_, detail) = get(&c, &s.url(&format!("/api/flows/leaky/{TP}"))).await;
    assert_eq!(detail["flow"]["run_mode"], "run_mode_nominal", "{detail}");
    assert_eq!(detail["flow"]["state"], "state_invalid", "{detail}");
    assert_eq!(
        detail["graph"]["nodes"][1]["state"], "state_invalid",
        "{detail}"
    );
    let (_, runs) = get(&c, &s.url(&format!("/api/flows/leaky/{TP}/runs"))).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");

    // The secret reached the job, never an answer: not one event of the
    // run's stream (ids, names and data), not a later snapshot, not a read.
    assert_eq!(streamed[0].event, "snapshot");
    assert!(
        streamed.iter().any(|e| e.event == "log"
            && e.data["message"]
                .as_str()
                .is_some_and(|m| m.contains("the password is ***"))),
        "the job's output is in the stream: {streamed:?}"
    );
    assert!(
        streamed
            .iter()
            .any(|e| e.event == "step" && e.data["state"] == "state_invalid"),
        "{streamed:?}"
    );
    let mut answers: Vec<String> = streamed
        .iter()
        .map(|e| format!("{} {} {}", e.id, e.event, e.data))
        .collect();
    let events = read_events(&c, &events_url, None, |_| true).await;
    answers.push(serde_json::to_string(&events[0].data).unwrap());
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
    assert!(!all.contains("tok-12345"), "the token leaked: {all}");
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

/// tests/cli.rs's diamond: every step appends its name to `ran.txt`, and
/// `c` fails until `marker` exists.
const DIAMOND: &str = r#"
name = "diamond"
time_qualifier = "daily"
[[steps]]
name = "a"
main = { action = "shell", command = "echo a >> ran.txt" }
[[steps]]
name = "b"
depends_on = ["a"]
main = { action = "shell", command = "echo b >> ran.txt" }
[[steps]]
name = "c"
depends_on = ["a"]
main = { action = "shell", command = "echo c >> ran.txt; test -e marker" }
[[steps]]
name = "d"
depends_on = ["b", "c"]
main = { action = "shell", command = "echo d >> ran.txt" }
"#;

/// The lines the steps appended to ran.txt since `seen` lines, sorted.
fn new_runs(home: &Home, seen: &mut usize) -> Vec<String> {
    let lines: Vec<String> = home.read("ran.txt").lines().map(str::to_string).collect();
    let mut new = lines[*seen..].to_vec();
    *seen = lines.len();
    new.sort();
    new
}

/// POSTs a run mode of `flow` at [`TP`], expects 202 with a running run,
/// and waits until the store has that run finished; returns the answer.
async fn run_to_end(c: &Client, s: &Served, flow: &str, mode: &str, body: Value) -> Value {
    let (status, run) = post(c, &s.url(&format!("/api/flows/{flow}/{TP}/{mode}")), body).await;
    assert_eq!(status, 202, "{mode}: {run}");
    assert_eq!(run["status"], "running", "{mode}: {run}");
    let id = run["id"].as_str().unwrap().to_string();
    let runs_url = s.url(&format!("/api/flows/{flow}/{TP}/runs"));
    wait_for(&format!("the {mode} run to end"), || async {
        let (_, runs) = get(c, &runs_url).await;
        runs["runs"][0]["id"] == id.as_str() && runs["runs"][0]["status"] == "finished"
    })
    .await;
    run
}

/// recover, run-one and run-from started over HTTP (202 at once, like
/// run), each ending with the states the CLI's run modes leave, and only
/// the steps its mode names ran (tests/cli.rs's diamond, over the API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_run_one_and_run_from_over_http_run_only_their_steps() {
    let home = Home::new();
    home.write("diamond.toml", DIAMOND);
    let s = Served::start(&home, &["diamond.toml"], &[]);
    let c = client();
    let mut seen = 0;
    let states = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .collect()
    };
    let all_processed = states(&[
        ("a", "state_processed"),
        ("b", "state_processed"),
        ("c", "state_processed"),
        ("d", "state_processed"),
    ]);

    let first = run_to_end(&c, &s, "diamond", "run", json!({})).await;
    assert_eq!(new_runs(&home, &mut seen), ["a", "b", "c"], "d never runs");
    let status = home.status_json("diamond.toml", TP);
    assert_eq!(status["flow"]["state"], "state_invalid");
    assert_eq!(
        support::step_states(&status),
        states(&[
            ("a", "state_processed"),
            ("b", "state_processed"),
            ("c", "state_invalid"),
            ("d", "state_embryo"),
        ])
    );

    // Fix the cause; recover runs only what did not complete.
    home.write("marker", "");
    let recovered = run_to_end(&c, &s, "diamond", "recover", json!({})).await;
    assert_eq!(recovered["steps_to_run"], 2, "{recovered}");
    assert_eq!(new_runs(&home, &mut seen), ["c", "d"]);
    let status = home.status_json("diamond.toml", TP);
    assert_eq!(status["flow"]["state"], "state_processed");
    assert_eq!(support::step_states(&status), all_processed);
    // The API answers what the store holds.
    let (_, detail) = get(&c, &s.url(&format!("/api/flows/diamond/{TP}"))).await;
    assert_eq!(detail["flow"]["state"], "state_processed", "{detail}");
    for n in detail["graph"]["nodes"].as_array().unwrap() {
        assert_eq!(n["state"], "state_processed", "{n}");
    }

    // run-one on a step whose dependencies are done: that step alone.
    let one = run_to_end(&c, &s, "diamond", "run-one", json!({"step": "b"})).await;
    assert_eq!(one["steps_to_run"], 1, "{one}");
    assert_eq!(new_runs(&home, &mut seen), ["b"], "d depends on b: not run");
    let status = home.status_json("diamond.toml", TP);
    assert_eq!(status["flow"]["state"], "state_processed");
    assert_eq!(support::step_states(&status), all_processed);

    // run-from: the step and what depends on it, not its siblings or
    // dependencies.
    let from = run_to_end(&c, &s, "diamond", "run-from", json!({"step": "b"})).await;
    assert_eq!(from["steps_to_run"], 2, "{from}");
    assert_eq!(new_runs(&home, &mut seen), ["b", "d"]);
    let status = home.status_json("diamond.toml", TP);
    assert_eq!(status["flow"]["state"], "state_processed");
    assert_eq!(support::step_states(&status), all_processed);

    // The history has the four runs, newest first, each with its mode and
    // outcome.
    let (_, runs) = get(&c, &s.url(&format!("/api/flows/diamond/{TP}/runs"))).await;
    let got: Vec<(&str, &str, &str)> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap(),
                r["mode"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    let id = |run: &Value| run["id"].as_str().unwrap().to_string();
    let (from, one, recovered, first) = (id(&from), id(&one), id(&recovered), id(&first));
    assert_eq!(
        got,
        [
            (from.as_str(), "run_mode_run_from", "state_processed"),
            (one.as_str(), "run_mode_run_one", "state_processed"),
            (recovered.as_str(), "run_mode_recovery", "state_processed"),
            (first.as_str(), "run_mode_nominal", "state_invalid"),
        ]
    );
}

/// A flow of one step that does nothing, named `name`.
fn tiny(name: &str) -> String {
    format!(
        "name = \"{name}\"\ntime_qualifier = \"daily\"\n[[steps]]\nname = \"only\"\nmain = {{ action = \"identity\" }}\n"
    )
}

/// The (flow, timeperiod) pairs of a `/api/flows` answer, in its order.
fn listed(list: &Value) -> Vec<(String, String)> {
    list["flows"]
        .as_array()
        .unwrap_or_else(|| panic!("no flows: {list}"))
        .iter()
        .map(|f| {
            (
                f["flow_name"].as_str().unwrap().to_string(),
                f["timeperiod"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Two flows, four timeperiods, recorded in an order that is neither
/// theirs nor its reverse: the list is newest timeperiod first (then by
/// name), and its pages split that order with `more` true up to the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_list_is_newest_first_and_paged() {
    let home = Home::new();
    home.write("one.toml", &tiny("one"));
    home.write("two.toml", &tiny("two"));
    for (flow, tp) in [
        ("two", "2026112800"),
        ("one", "2026112900"),
        ("one", "2026112700"),
        ("two", "2026112900"),
    ] {
        home.expect(0, &["run", &format!("{flow}.toml"), "--timeperiod", tp]);
    }
    let s = Served::start(&home, &["one.toml", "two.toml"], &[]);
    let c = client();
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect()
    };
    let newest_first = pairs(&[
        ("one", "2026112900"),
        ("two", "2026112900"),
        ("two", "2026112800"),
        ("one", "2026112700"),
    ]);

    let (status, all) = get(&c, &s.url("/api/flows")).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(listed(&all), newest_first, "{all}");
    assert_eq!(all["more"], false, "{all}");

    // One a page: each page the next record, `more` until the last.
    let mut paged = Vec::new();
    for page in 1..=4 {
        let (status, list) = get(&c, &s.url(&format!("/api/flows?per_page=1&page={page}"))).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["page"], page, "{list}");
        assert_eq!(list["per_page"], 1, "{list}");
        assert_eq!(list["more"], page < 4, "page {page}: {list}");
        let got = listed(&list);
        assert_eq!(got.len(), 1, "{list}");
        paged.extend(got);
    }
    assert_eq!(paged, newest_first);
    let (_, past) = get(&c, &s.url("/api/flows?per_page=1&page=5")).await;
    assert!(listed(&past).is_empty(), "{past}");
    assert_eq!(past["more"], false, "{past}");
    let (_, second) = get(&c, &s.url("/api/flows?per_page=3&page=2")).await;
    assert_eq!(listed(&second), newest_first[3..], "{second}");
    assert_eq!(second["more"], false, "{second}");

    // Filtered by name, paged the same way.
    let (_, first) = get(&c, &s.url("/api/flows?name=one&per_page=1")).await;
    assert_eq!(listed(&first), pairs(&[("one", "2026112900")]), "{first}");
    assert_eq!(first["more"], true, "{first}");
    let (_, second) = get(&c, &s.url("/api/flows?name=one&per_page=1&page=2")).await;
    assert_eq!(listed(&second), pairs(&[("one", "2026112700")]), "{second}");
    assert_eq!(second["more"], false, "{second}");
}

/// The headers security.rs promises on every answer (and `no-store` on
/// the API's), checked on `response`.
fn assert_security_headers(response: &reqwest::Response, what: &str) {
    let h = response.headers();
    let header = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {name} header: {h:?}"))
            .to_string()
    };
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: {directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{what}: {csp}");
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-resource-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(header(name), value, "{what}: {name}");
    }
}

/// The security headers are on every API answer, not only the page's:
/// a JSON answer, the event stream, and errors from a handler, from the
/// router's fallback and from the request guard itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_are_on_api_answers_and_errors() {
    let home = Home::new();
    home.write("slow.toml", SLOW);
    let s = Served::start(&home, &["slow.toml"], &[]);
    let c = client();
    for (path, code) in [
        ("/api/definitions".to_string(), 200),
        (format!("/api/flows/slow/{TP}"), 200),
        (format!("/api/flows/slow/{TP}/events"), 200),
        (format!("/api/flows/nope/{TP}"), 404),
        ("/api/flows/slow/tomorrow".into(), 400),
        ("/api/nothing".into(), 404),
    ] {
        let r = c.get(s.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), code, "{path}");
        assert_security_headers(&r, &path);
    }
    // A refused mode (409 from the engine) and a foreign page (403 from
    // the guard, before any handler).
    let path = format!("/api/flows/slow/{TP}/recover");
    let r = c.post(s.url(&path)).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 409, "{path}");
    assert_security_headers(&r, &path);
    let r = c
        .post(s.url(&path))
        .header("origin", "http://evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{path}");
    assert_security_headers(&r, "403 from the guard");
    assert_eq!(flow_state(&c, &s, "slow").await, None);
}

/// POSTs a JSON body of `len` bytes the way curl does, reading the answer
/// while the body is still being sent (a server that refuses a body over
/// its limit answers and closes the connection before it has all of it,
/// which reqwest reports as a broken pipe). Returns the status, the head
/// and the body of the answer.
fn post_without_waiting(base: &str, path: &str, len: usize) -> (u16, String, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    let sender = std::thread::spawn(move || {
        writer.write_all(head.as_bytes())?;
        let chunk = vec![b' '; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n])?;
            left -= n;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    // The server may close before the whole body went out: that is the
    // point, not an error.
    let _ = sender.join();
    (code, head, String::from_utf8_lossy(&body).into_owned())
}

/// Every answer under `/api` is JSON, errors with the `{"error": ...}`
/// shape, also those axum gives itself: a wrong method (405, with
/// `Allow`), a body over the limit (413), an unknown path (404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_answer_is_json_even_axums_own_refusals() {
    let home = Home::new();
    home.write("slow.toml", SLOW);
    let s = Served::start(&home, &["slow.toml"], &[]);
    let c = client();
    async fn json_error(
        r: reqwest::Response,
        what: &str,
        code: u16,
    ) -> (reqwest::header::HeaderMap, String) {
        assert_eq!(r.status(), code, "{what}");
        assert_security_headers(&r, what);
        let headers = r.headers().clone();
        let kind = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            kind.starts_with("application/json"),
            "{what}: content-type {kind:?}"
        );
        let text = r.text().await.unwrap();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text:?}"));
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error message: {body}"))
            .to_string();
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{what}: {body}");
        (headers, error)
    }
    let run = s.url(&format!("/api/flows/slow/{TP}/run"));
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let what = format!("{method} .../run");
        let r = c.request(method.clone(), &run).send().await.unwrap();
        let (headers, error) = json_error(r, &what, 405).await;
        let allow = headers
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(allow.contains("POST"), "{what}: Allow {allow:?}");
        assert!(
            error.contains(method.as_str()) && error.contains("/run") && error.contains("Allow"),
            "{what}: {error}"
        );
    }
    let r = c.post(s.url("/api/flows")).send().await.unwrap();
    let (headers, _) = json_error(r, "POST /api/flows", 405).await;
    assert!(headers
        .get("allow")
        .is_some_and(|a| a.to_str().unwrap().contains("GET")));
    // A body over the limit (the docs' 64 KiB): 413, and nothing runs.
    let path = format!("/api/flows/slow/{TP}/run");
    let base = s.base.clone();
    let (code, head, body) =
        tokio::task::spawn_blocking(move || post_without_waiting(&base, &path, 10 << 20))
            .await
            .unwrap();
    assert_eq!(code, 413, "{head}{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let error: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("64 KiB")),
        "{error}"
    );
    let r = c.get(s.url("/api/no/such/path/here")).send().await.unwrap();
    json_error(r, "an unknown path", 404).await;
    assert_eq!(flow_state(&c, &s, "slow").await, None);
}

/// Flow and step names are ASCII letters, digits, '_' and '-'
/// (`flow_core::valid_name`), so none needs encoding. A percent-encoded
/// segment is decoded before it is looked up; one that decodes to no UTF-8
/// is a JSON 400 naming the segment; one that decodes to a character no
/// name holds is an unknown flow or step (404), shown escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_encoded_path_segments_decode_and_malformed_ones_are_400() {
    let home = Home::new();
    home.write("slow.toml", SLOW);
    let s = Served::start(&home, &["slow.toml"], &[]);
    let c = client();

    // Encoded characters that need no encoding are the same flow, step and
    // timeperiod.
    let (status, detail) = get(&c, &s.url("/api/flows/sl%6Fw/%32026112800")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["definition"]["name"], "slow", "{detail}");
    assert_eq!(detail["timeperiod"], TP, "{detail}");
    let (status, step) = get(&c, &s.url(&format!("/api/flows/slow/{TP}/steps/s%65cond"))).await;
    assert_eq!(status, 200, "{step}");
    assert_eq!(step["definition"]["depends_on"], json!(["first"]), "{step}");

    // Not UTF-8 once decoded: 400 JSON naming the segment, reads and
    // writes alike, and nothing runs.
    for (path, segment) in [
        (format!("/api/flows/sl%FFow/{TP}"), "name"),
        ("/api/flows/slow/%FF".to_string(), "timeperiod"),
        (format!("/api/flows/slow/{TP}/steps/%C3%28"), "step"),
        (format!("/api/flows/sl%FFow/{TP}/logs"), "name"),
        (format!("/api/flows/sl%FFow/{TP}/events"), "name"),
        (format!("/api/flows/sl%FFow/{TP}/runs"), "name"),
    ] {
        let (status, body) = get(&c, &s.url(&path)).await;
        assert_eq!(status, 400, "{path}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(&format!("`{segment}`")), "{path}: {body}");
    }
    for (path, body) in [
        (format!("/api/flows/sl%FFow/{TP}/run"), json!({})),
        ("/api/flows/slow/%E2%82/run".to_string(), json!({})),
        (
            format!("/api/flows/sl%FFow/{TP}/run-one"),
            json!({"step": "first"}),
        ),
        (
            "/api/flows/sl%FFow/run-mode".to_string(),
            json!({"run_mode": "run_mode_recovery", "timeperiod": TP}),
        ),
    ] {
        let (status, answer) = post(&c, &s.url(&path), body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(answer["error"].is_string(), "{path}: {answer}");
    }
    assert_eq!(flow_state(&c, &s, "slow").await, None, "a 400 ran the flow");

    // Decoded to characters no name holds: unknown, and shown escaped.
    for (path, shown) in [
        (format!("/api/flows/sl%2Fow/{TP}"), "sl/ow"),
        (
            format!("/api/flows/slow/{TP}/steps/fir%2E%2E%2Fst"),
            "fir../st",
        ),
    ] {
        let (status, body) = get(&c, &s.url(&path)).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(shown),
            "{path}: {body}"
        );
    }
    let (status, body) = get(&c, &s.url(&format!("/api/flows/sl%0A%1Bow/{TP}"))).await;
    assert_eq!(status, 404, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        !error.contains('\n') && !error.contains('\u{1b}'),
        "control characters reach the message: {error:?}"
    );
}

/// Runs `flow serve ARGS` on a loopback port and expects it to refuse to
/// start. A server that starts anyway is stopped and the test fails (it
/// does not wait on a server that never exits).
fn refused_to_serve(home: &Home, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
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
    let mut stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(&mut stdout).read_line(&mut line).unwrap();
    if line.contains("http://") {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "flow serve {args:?} started: {line}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut out = child.wait_with_output().unwrap();
    out.stdout = line.into_bytes();
    out
}

/// The flows a server shows are checked against the settings as every run
/// mode checks them: a setting that is not defined, a value that is not
/// shell-safe in a shell command, a secret in an argument vector. `flow
/// serve` refuses to start (exit 2, file:line:col, the secret masked)
/// rather than show a flow whose runs could only fail, and opens no store.
#[test]
fn serve_refuses_flows_whose_substitutions_would_fail_at_run_time() {
    let home = Home::new();
    home.write(
        "flow.toml",
        &format!(
            "{}\n[settings]\nevil = \"a; touch pwned\"\n[secrets]\ntoken = \"TOPSECRET123\"\n",
            support::SETTINGS
        ),
    );
    home.write("slow.toml", SLOW);
    let cases = [
        (
            "missing",
            "command = \"echo {settings.nowhere}\"",
            "setting 'nowhere' used in 'echo {settings.nowhere}' is not defined",
        ),
        (
            "unsafe",
            "command = \"echo {settings.evil}\"",
            "is not safe to put into a shell command",
        ),
    ];
    for (name, args, expected) in cases {
        home.write(
            &format!("{name}.toml"),
            &format!("name = \"{name}\"\n[[steps]]\nname = \"a\"\nmain = {{ action = \"shell\", {args} }}\n"),
        );
        let out = refused_to_serve(&home, &["slow.toml", &format!("{name}.toml")], &[]);
        assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
        let err = support::stderr(&out);
        assert!(
            err.contains(&format!("{name}.toml:4:8: ")) && err.contains(expected),
            "{err}"
        );
    }
    home.write(
        "spark.toml",
        "name = \"spark\"\n[[steps]]\nname = \"a\"\nmain = { action = \"spark\", application = \"app.py\", args = [\"--token\", \"{settings.token}\"] }\n",
    );
    let out = refused_to_serve(&home, &["spark.toml"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    let err = support::stderr(&out);
    assert!(
        err.contains("spark.toml:4:8: ") && err.contains("cannot be put into spark `args`"),
        "{err}"
    );
    assert!(!err.contains("TOPSECRET123"), "{err}");
    assert!(!home.db().exists(), "bad input created a store");
}

/// `[serve] token` is masked like a secret, so it has a secret's minimum
/// length, also when it comes from the environment.
#[test]
fn serve_refuses_a_token_shorter_than_a_secret() {
    let home = Home::new();
    home.write(
        "flow.toml",
        &format!(
            "{}\n[serve]\ntoken = \"env:FLOW_TEST_TOKEN\"\n",
            support::SETTINGS
        ),
    );
    home.write("slow.toml", SLOW);
    let out = refused_to_serve(&home, &["slow.toml"], &[("FLOW_TEST_TOKEN", "tok-123")]);
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    let err = support::stderr(&out);
    assert!(
        err.contains("[serve] token is shorter than 8 characters")
            && err.contains("FLOW_TEST_TOKEN")
            && !err.contains("tok-123"),
        "{err}"
    );
    assert!(!home.db().exists(), "bad input created a store");
}

/// A token no request can carry is refused at start (exit 2, saying why,
/// without the value), from the environment and from the settings file
/// (with its line and column): HTTP strips the whitespace around a header
/// value, and a header with non-ASCII bytes reads as absent, so every POST
/// would answer 401 even with the exact token.
#[test]
fn serve_refuses_tokens_no_request_can_carry() {
    let home = Home::new();
    home.write("slow.toml", SLOW);
    home.write(
        "flow.toml",
        &format!(
            "{}\n[serve]\ntoken = \"env:FLOW_TEST_TOKEN\"\n",
            support::SETTINGS
        ),
    );
    for (token, why) in [
        (" abcdefg", "whitespace"),
        ("abc     ", "whitespace"),
        ("pässwörd1", "non-ASCII"),
        ("abc\tdefgh", "control character"),
    ] {
        let out = refused_to_serve(&home, &["slow.toml"], &[("FLOW_TEST_TOKEN", token)]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{token:?}: {}",
            support::text(&out)
        );
        let err = support::stderr(&out);
        assert!(
            err.contains("[serve] token could never match a request")
                && err.contains(why)
                && err.contains("FLOW_TEST_TOKEN")
                && !err.contains(token.trim()),
            "{token:?}: {err}"
        );
    }
    let settings_lines = support::SETTINGS.lines().count();
    for token in [" abcdefgh", "pässwörd1"] {
        home.write(
            "flow.toml",
            &format!("{}\n[serve]\ntoken = \"{token}\"\n", support::SETTINGS),
        );
        let out = refused_to_serve(&home, &["slow.toml"], &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{token:?}: {}",
            support::text(&out)
        );
        let err = support::stderr(&out);
        assert!(
            err.contains(&format!("flow.toml:{}:9: ", settings_lines + 3))
                && err.contains("[serve] token could never match a request")
                && !err.contains(token.trim()),
            "{token:?}: {err}"
        );
    }
    assert!(!home.db().exists(), "bad input created a store");
}

/// `/metrics` scraped by Debian's real Prometheus (started by xtask on a
/// loopback port, with a file-based target list this test adds
/// `flow serve` to): after a run over HTTP, Prometheus's query API answers
/// the run, step and store-write series with this run's figures, and the
/// timetable's series (Jobs per state, retries, due-to-start delays) with
/// the Jobs a `flow schedule` process made, and the SLA misses with the
/// run of another process that missed one; `promtool check metrics`
/// accepts the classic exposition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Prometheus and promtool: run by cargo xtask test"]
async fn metrics_are_scraped_and_linted_on_prometheus() {
    let prometheus = std::env::var("FLOW_TEST_PROMETHEUS_URL").expect("FLOW_TEST_PROMETHEUS_URL");
    let targets =
        std::env::var("FLOW_TEST_PROMETHEUS_TARGETS").expect("FLOW_TEST_PROMETHEUS_TARGETS");
    let promtool = std::env::var("FLOW_PROMTOOL").expect("FLOW_PROMTOOL");
    let home = Home::new();
    home.write("chain.toml", CHAIN);
    // Jobs made by `flow schedule` in another process, before the server.
    support::timetable::make(&home, &support::timetable::days());
    // A run that missed its SLA (2 h after a day long gone), in another
    // process too.
    home.write("late.toml", LATE);
    home.expect(1, &["run", "late.toml", "--timeperiod", TP]);
    let mut files = vec!["chain.toml", "late.toml"];
    files.extend(support::timetable::FILES);
    let s = Served::start(&home, &files, &[]);
    let c = client();
    run_to_end(&c, &s, "chain", "run", json!({})).await;

    // The classic text: the series are there, and promtool lints it clean.
    let runs_line =
        "flow_runs_total{flow=\"chain\",mode=\"run_mode_nominal\",state=\"state_processed\"} 1";
    let scrape = || {
        let (c, url) = (c.clone(), s.url("/metrics"));
        async move {
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4"));
            r.text().await.unwrap()
        }
    };
    wait_for("the run's series on /metrics", || {
        let text = scrape();
        async move { text.await.contains(runs_line) }
    })
    .await;
    let text = scrape().await;
    for series in [
        "flow_steps_total{flow=\"chain\",state=\"state_processed\"} 3",
        "flow_step_duration_seconds_count{flow=\"chain\"} 3",
        "flow_run_duration_seconds_count{flow=\"chain\",mode=\"run_mode_nominal\"} 1",
        "flow_runs_running{flow=\"chain\"} 0",
        "flow_store_write_duration_seconds_count{call=\"save_step\"}",
        "flow_signals_dropped_total 0",
        // The timetable's, read from the store at the scrape.
        "flow_jobs{flow=\"load\",state=\"state_processed\"} 2",
        "flow_jobs{flow=\"load\",state=\"failed\"} 2",
        "flow_jobs{flow=\"load\",state=\"state_skipped\"} 0",
        "flow_jobs{flow=\"quiet\",state=\"state_noop\"} 4",
        "flow_jobs{flow=\"after\",state=\"state_skipped\"} 1",
        "flow_jobs{flow=\"after\",state=\"state_embryo\"} 1",
        "flow_jobs{flow=\"after\",state=\"state_in_progress\"} 0",
        "flow_job_retries{flow=\"load\"} 2",
        "flow_job_retries{flow=\"quiet\"} 0",
        // The SLA misses, read from the store at the scrape.
        "flow_sla_missed{flow=\"late\"} 1",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    assert!(
        !text.contains("flow_jobs{flow=\"chain\""),
        "chain has no [schedule]:\n{text}"
    );
    assert!(
        !text.contains("flow_sla_missed{flow=\"chain\""),
        "chain has no sla:\n{text}"
    );
    // The newest started Job of each flow (yesterday's) was due at
    // midnight and started during this test.
    for flow in ["load", "quiet", "after"] {
        let prefix = format!("flow_job_start_delay_seconds{{flow=\"{flow}\"}} ");
        let delay: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} missing from:\n{text}"))
            .parse()
            .unwrap();
        assert!(
            (0.0..86_400.0 + 3_600.0).contains(&delay),
            "{prefix}{delay}"
        );
    }
    let mut lint = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // OpenMetrics for scrapers that ask for it.
    let r = c
        .get(s.url("/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));

    // Prometheus scrapes this server (its target file names it, with a
    // label of this test) and answers for the series.
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let job = format!("flow-serve-{port}");
    std::fs::write(
        std::path::Path::new(&targets).join(format!("{job}.json")),
        json!([{ "targets": [format!("127.0.0.1:{port}")], "labels": { "flow_test": job } }])
            .to_string(),
    )
    .unwrap();
    let query = |expr: String| {
        let (c, url) = (c.clone(), format!("{prometheus}/api/v1/query"));
        async move {
            let r = c.get(url).query(&[("query", expr)]).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["status"], "success", "{v}");
            v["data"]["result"].as_array().cloned().unwrap_or_default()
        }
    };
    let runs =
        format!("flow_runs_total{{flow_test=\"{job}\",flow=\"chain\",state=\"state_processed\"}}");
    wait_for("Prometheus to scrape flow serve", || {
        let q = query(runs.clone());
        async move { !q.await.is_empty() }
    })
    .await;
    let answer = query(runs).await;
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(answer[0]["metric"]["mode"], "run_mode_nominal");
    assert_eq!(answer[0]["value"][1], "1");
    let steps = query(format!(
        "flow_step_duration_seconds_count{{flow_test=\"{job}\",flow=\"chain\"}}"
    ))
    .await;
    assert_eq!(steps.first().map(|s| &s["value"][1]), Some(&json!("3")));
    let writes = query(format!(
        "sum(flow_store_write_duration_seconds_count{{flow_test=\"{job}\"}})"
    ))
    .await;
    let writes: f64 = writes[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(
        writes >= 4.0,
        "begin_run, a save_step per step, finish_run: {writes}"
    );
    let failed = query(format!(
        "flow_jobs{{flow_test=\"{job}\",flow=\"load\",state=\"failed\"}}"
    ))
    .await;
    assert_eq!(failed.first().map(|s| &s["value"][1]), Some(&json!("2")));
    let retries = query(format!("sum(flow_job_retries{{flow_test=\"{job}\"}})")).await;
    assert_eq!(retries.first().map(|s| &s["value"][1]), Some(&json!("2")));
    let delays = query(format!(
        "flow_job_start_delay_seconds{{flow_test=\"{job}\"}}"
    ))
    .await;
    assert_eq!(delays.len(), 3, "{delays:?}");
    let missed = query(format!(
        "flow_sla_missed{{flow_test=\"{job}\",flow=\"late\"}}"
    ))
    .await;
    assert_eq!(missed.first().map(|s| &s["value"][1]), Some(&json!("1")));
    // Prometheus kept what it parsed: the scrape itself succeeded.
    let up = query(format!("up{{flow_test=\"{job}\"}}")).await;
    assert_eq!(up[0]["value"][1], "1");
}

/// A flow with an `sla` of 2 h whose only step fails until `marker` exists.
const LATE: &str = "name = \"late\"\ntime_qualifier = \"daily\"\nsla = \"2h\"\n[[steps]]\nname = \"only\"\nmain = { action = \"shell\", command = \"test -e marker\" }\n";

/// The viewer's SLA mark: a flow whose `sla` passed (2 h after the end of
/// a day long gone) is marked on its flow record, in the flow list, and on
/// the run the miss happened in, not on the `recover` after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_that_missed_its_sla_is_marked() {
    let home = Home::new();
    home.write("late.toml", LATE);
    home.expect(1, &["run", "late.toml", "--timeperiod", TP]);
    home.write("marker", "");
    home.expect(0, &["recover", "late.toml", "--timeperiod", TP]);
    home.write("prompt.toml", &tiny("prompt"));
    home.expect(0, &["run", "prompt.toml", "--timeperiod", TP]);

    let s = Served::start(&home, &["late.toml", "prompt.toml"], &[]);
    let c = client();
    let (status, flow) = get(&c, &s.url(&format!("/api/flows/late/{TP}"))).await;
    assert_eq!(status, 200, "{flow}");
    assert!(flow["flow"]["sla_missed_at"].is_string(), "{flow}");
    assert_eq!(flow["flow"]["state"], "state_processed", "{flow}");

    let (_, runs) = get(&c, &s.url(&format!("/api/flows/late/{TP}/runs"))).await;
    let marks: Vec<(&str, bool)> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["mode"].as_str().unwrap(), r["sla_missed_at"].is_string()))
        .collect();
    assert_eq!(
        marks,
        [("run_mode_recovery", false), ("run_mode_nominal", true)],
        "{runs}"
    );

    let (_, list) = get(&c, &s.url("/api/flows")).await;
    let marked: Vec<(&str, bool)> = list["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["flow_name"].as_str().unwrap(),
                f["sla_missed_at"].is_string(),
            )
        })
        .collect();
    assert!(marked.contains(&("late", true)), "{list}");
    assert!(marked.contains(&("prompt", false)), "{list}");
}

/// The Jobs page's API: a `flow schedule` process made the timetable; the
/// viewer reads it from the store, newest periods first, with the given-up
/// Jobs marked failed as `flow jobs` shows them, each Job's run the one
/// its flow page lists, paged back by `before`, bad parameters refused
/// (400 naming them) and a foreign Host refused like every path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_api_shows_the_timetable_newest_first_and_pages_back() {
    let home = Home::new();
    let days = support::timetable::days();
    support::timetable::make(&home, &days);
    home.write("chain.toml", CHAIN);
    let mut files = vec!["chain.toml"];
    files.extend(support::timetable::FILES);
    let s = Served::start(&home, &files, &[]);
    let c = client();

    let (status, v) = get(&c, &s.url("/api/jobs")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["periods"], 24);
    assert_eq!(v["older"], Value::Null);
    // Only the scheduled flows, by name.
    let names: Vec<&str> = v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["after", "load", "quiet"]);
    let flows = [&v["flows"][1], &v["flows"][2], &v["flows"][0]];
    let cells = |flow: &Value| -> Vec<(String, String, bool, u64)> {
        flow["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                (
                    j["timeperiod"].as_str().unwrap().to_string(),
                    j["state"].as_str().unwrap().to_string(),
                    j["given_up"].as_bool().unwrap(),
                    j["number_of_failures"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let newest_first: Vec<String> = days.iter().rev().cloned().collect();
    let row = |states: [(&str, bool, u64); 4]| -> Vec<(String, String, bool, u64)> {
        newest_first
            .iter()
            .zip(states)
            .map(|(d, (s, g, n))| (d.clone(), s.to_string(), g, n))
            .collect()
    };
    assert_eq!(
        cells(flows[0]),
        row([
            ("state_processed", false, 0),
            ("state_skipped", true, 2),
            ("state_skipped", true, 2),
            ("state_processed", false, 0),
        ])
    );
    assert_eq!(cells(flows[1]), row([("state_noop", false, 0); 4]));
    assert_eq!(
        cells(flows[2]),
        row([
            ("state_processed", false, 0),
            ("state_embryo", false, 0),
            ("state_skipped", false, 0),
            ("state_processed", false, 0),
        ])
    );
    let given_up = &flows[0]["jobs"][1];
    assert!(
        given_up["shown"]
            .as_str()
            .unwrap()
            .starts_with("failed (state_skipped after 2 failed runs)"),
        "{given_up}"
    );
    assert!(given_up["due_at"].is_string() && given_up["started_at"].is_string());
    assert_eq!(
        flows[2]["jobs"][1]["run"],
        Value::Null,
        "an embryo has no run"
    );
    // Each cell's run is the newest run its flow page lists.
    for (flow, cell) in [(flows[0], 0), (flows[0], 1), (flows[1], 3)] {
        let job = &flow["jobs"][cell];
        let (status, runs) = get(
            &c,
            &s.url(&format!(
                "/api/flows/{}/{}/runs",
                flow["name"].as_str().unwrap(),
                job["timeperiod"].as_str().unwrap()
            )),
        )
        .await;
        assert_eq!(status, 200, "{runs}");
        assert_eq!(runs["runs"][0]["id"], job["run"], "{job} {runs}");
    }

    // Two periods a page, then the page before.
    let (_, page) = get(&c, &s.url("/api/jobs?periods=2")).await;
    assert!(page["flows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["more"] == true && f["jobs"].as_array().unwrap().len() == 2));
    assert_eq!(page["older"], json!(days[2]));
    let (_, back) = get(
        &c,
        &s.url(&format!("/api/jobs?periods=2&before={}", days[2])),
    )
    .await;
    assert_eq!(back["before"], json!(days[2]));
    assert_eq!(back["older"], Value::Null);
    // `load`, as every flow here.
    let tps: Vec<&str> = back["flows"][1]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["timeperiod"].as_str().unwrap())
        .collect();
    assert_eq!(tps, [days[1].as_str(), days[0].as_str()]);
    assert_eq!(back["flows"][1]["more"], false);

    for (query, names) in [
        ("periods=0", "periods"),
        ("periods=201", "periods"),
        ("before=2026x", "before"),
        ("flow=load", "flow"),
    ] {
        let (status, v) = get(&c, &s.url(&format!("/api/jobs?{query}"))).await;
        assert_eq!(status, 400, "{query}: {v}");
        assert!(v["error"].as_str().unwrap().contains(names), "{query}: {v}");
    }
    let r = c
        .get(s.url("/api/jobs"))
        .header("host", "rebound.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a foreign Host (DNS rebinding) is refused");
}
