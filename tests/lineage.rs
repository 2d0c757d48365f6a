//! OpenLineage end to end: `[lineage]` in the settings and `inputs` /
//! `outputs` on steps, run by the real `flow` binary, the events received
//! by a loopback receiver that validates each against the OpenLineage spec
//! with PyPI's openlineage-python models (`tests/peers/
//! openlineage_receiver.py`, started by xtask), and the checks at load
//! with `file:line:col`.

mod support;

use serde_json::Value;
use support::fakes::http;
use support::{stdout, text, Home};

const TP: &str = "2026112800";
const KEY: &str = "lineage-api-key-0123";

/// The receiver xtask started.
fn receiver() -> String {
    std::env::var("FLOW_TEST_OPENLINEAGE_URL")
        .expect("FLOW_TEST_OPENLINEAGE_URL: run through `cargo xtask test`")
}

/// Every POST the receiver got whose job is in `namespace`, in arrival
/// order: (valid, error, authorization, event).
fn received(namespace: &str) -> Vec<Value> {
    let (status, body) = http("GET", &format!("{}/_flow_test/events", receiver()), "");
    assert_eq!(status, 200, "{body}");
    let all: Vec<Value> = serde_json::from_str(&body).unwrap();
    all.into_iter()
        .filter(|r| r["event"]["job"]["namespace"] == namespace)
        .collect()
}

/// The settings with `[lineage]` pointing at the receiver, in a namespace
/// of this test's own (the receiver is shared by the tests running at once).
fn settings(namespace: &str) -> String {
    format!(
        "{}\n[lineage]\nurl = \"{}\"\nnamespace = \"{namespace}\"\napi_key = \"env:FLOW_TEST_LINEAGE_KEY\"\nretry_delay = \"50ms\"\n",
        support::SETTINGS,
        receiver()
    )
}

/// A flow whose step `a` reads and writes declared datasets and whose
/// step `b` fails until the file `fixed` exists.
fn flow(home: &Home, name: &str) -> String {
    format!(
        r#"
name = "{name}"
time_qualifier = "daily"
[[steps]]
name = "a"
main = {{ action = "shell", command = "echo a" }}
inputs = ["s3://raw/events/", "/srv/reference/countries.csv"]
outputs = ["gs://curated/events/", "az://lake@acct/daily/"]
[[steps]]
name = "b"
depends_on = ["a"]
main = {{ action = "shell", command = "test -f {} || (echo broken >&2; exit 3)" }}
inputs = ["gs://curated/events/"]
outputs = ["abfss://lake@acct.dfs.core.windows.net/report/"]
"#,
        home.path("fixed").display()
    )
}

/// (event type, job name) of each event.
fn kinds(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|r| {
            (
                r["event"]["eventType"].as_str().unwrap().to_string(),
                r["event"]["job"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn run_id(record: &Value) -> &str {
    record["event"]["run"]["runId"].as_str().unwrap()
}

fn parent(record: &Value) -> &Value {
    &record["event"]["run"]["facets"]["parent"]
}

fn datasets(record: &Value, which: &str) -> Vec<(String, String)> {
    record["event"][which]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["namespace"].as_str().unwrap().to_string(),
                d["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A run with a failing step posts START and COMPLETE for `a`, START and
/// FAIL for `b`, every one valid OpenLineage, with the jobs, the parent
/// facet, the timeperiod as nominal time and the datasets the flow file
/// declares; `recover` posts `b`'s
/// new attempt under the same flow run.
#[test]
#[ignore = "needs the OpenLineage receiver: run by cargo xtask test"]
fn step_events_are_valid_and_recover_keeps_the_flow_run_on_openlineage() {
    let home = Home::new();
    let namespace = format!("flow-test-{}-steps", std::process::id());
    home.write("flow.toml", &settings(&namespace));
    home.write("etl.toml", &flow(&home, "etl"));
    let run = |args: &[&str]| {
        home.command(args)
            .env("FLOW_TEST_LINEAGE_KEY", KEY)
            .output()
            .unwrap()
    };
    let out = run(&["run", "etl.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // `flow run` waits for its events before it exits.
    let got = received(&namespace);
    for record in &got {
        assert_eq!(record["valid"], true, "refused: {record}");
        assert_eq!(record["authorization"], format!("Bearer {KEY}"));
    }
    assert_eq!(
        kinds(&got),
        [
            ("START", "etl.a"),
            ("COMPLETE", "etl.a"),
            ("START", "etl.b"),
            ("FAIL", "etl.b"),
        ]
        .map(|(k, j)| (k.to_string(), j.to_string()))
    );
    assert_eq!(run_id(&got[0]), run_id(&got[1]), "one run per step attempt");
    assert_eq!(run_id(&got[2]), run_id(&got[3]));
    assert_ne!(run_id(&got[0]), run_id(&got[2]));
    let flow_run = parent(&got[0])["run"]["runId"]
        .as_str()
        .unwrap()
        .to_string();
    for record in &got {
        // The daily timeperiod the run processes.
        let nominal = &record["event"]["run"]["facets"]["nominalTime"];
        assert_eq!(nominal["nominalStartTime"], "2026-11-28T00:00:00.000Z");
        assert_eq!(nominal["nominalEndTime"], "2026-11-29T00:00:00.000Z");
        assert_eq!(parent(record)["job"]["name"], "etl");
        assert_eq!(parent(record)["job"]["namespace"], namespace.as_str());
        assert_eq!(parent(record)["run"]["runId"], flow_run.as_str());
    }
    let pair = |ns: &str, name: &str| (ns.to_string(), name.to_string());
    assert_eq!(
        datasets(&got[0], "inputs"),
        [
            pair("s3://raw", "events/"),
            pair("file", "/srv/reference/countries.csv")
        ]
    );
    assert_eq!(
        datasets(&got[1], "outputs"),
        [
            pair("gs://curated", "events/"),
            pair("wasbs://lake@acct.dfs.core.windows.net", "daily/")
        ]
    );
    assert_eq!(
        datasets(&got[3], "outputs"),
        [pair("abfss://lake@acct.dfs.core.windows.net", "report/")]
    );

    // The deliveries' outcome is in the run's log; the key is nowhere.
    let logs = stdout(&home.expect(0, &["logs", "etl.toml", "--timeperiod", TP]));
    assert!(
        logs.contains("lineage: 4 event(s) delivered, 0 failed"),
        "{logs}"
    );

    // Fixed and recovered: `b` again, a new attempt under the same flow run.
    home.write("fixed", "");
    let out = run(&["recover", "etl.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let got = received(&namespace);
    assert!(got.iter().all(|r| r["valid"] == true), "{got:?}");
    assert_eq!(
        kinds(&got[4..]),
        [("START", "etl.b"), ("COMPLETE", "etl.b")].map(|(k, j)| (k.to_string(), j.to_string()))
    );
    for record in &got[4..] {
        assert_eq!(
            parent(record)["run"]["runId"],
            flow_run.as_str(),
            "recover reports under the flow run it goes on with"
        );
    }
    assert_eq!(run_id(&got[4]), run_id(&got[5]));
    assert_ne!(run_id(&got[4]), run_id(&got[2]), "a fresh attempt");

    // A fresh run of the timeperiod is a new flow run.
    let out = run(&["run", "etl.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let got = received(&namespace);
    assert_eq!(got.len(), 10, "{got:?}");
    assert_ne!(parent(&got[6])["run"]["runId"], flow_run.as_str());

    for record in &got {
        assert!(!record["event"].to_string().contains(KEY));
    }
    assert!(!home.everything().iter().any(|line| line.contains(KEY)));
}

/// A run cancelled under a step (SIGINT) posts ABORT for it.
#[test]
#[ignore = "needs the OpenLineage receiver: run by cargo xtask test"]
fn a_cancelled_step_is_aborted_on_openlineage() {
    let home = Home::new();
    let namespace = format!("flow-test-{}-abort", std::process::id());
    home.write("flow.toml", &settings(&namespace));
    home.write(
        "slow.toml",
        &format!(
            "name = \"slow\"\ntime_qualifier = \"daily\"\n[[steps]]\nname = \"wait\"\nmain = {{ action = \"shell\", command = \"touch {} && sleep 60\" }}\n",
            home.path("started").display()
        ),
    );
    let child = home
        .command(&["run", "slow.toml", "--timeperiod", TP])
        .env("FLOW_TEST_LINEAGE_KEY", KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    home.wait_for_file("started");
    // SAFETY: signals the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let got = received(&namespace);
    assert!(got.iter().all(|r| r["valid"] == true), "{got:?}");
    assert_eq!(
        kinds(&got),
        [("START", "slow.wait"), ("ABORT", "slow.wait")]
            .map(|(k, j)| (k.to_string(), j.to_string()))
    );
    assert_eq!(run_id(&got[0]), run_id(&got[1]));
}

/// Without `[lineage]` nothing is posted, though the flow declares its
/// datasets and a receiver is there.
#[test]
#[ignore = "needs the OpenLineage receiver: run by cargo xtask test"]
fn a_run_without_lineage_posts_nothing_on_openlineage() {
    let home = Home::new();
    let name = format!("plain{}", std::process::id());
    home.write(&format!("{name}.toml"), &flow(&home, &name));
    home.write("fixed", "");
    home.expect(0, &["run", &format!("{name}.toml"), "--timeperiod", TP]);
    let (status, body) = http("GET", &format!("{}/_flow_test/events", receiver()), "");
    assert_eq!(status, 200);
    assert!(!body.contains(&name), "posted without [lineage]: {body}");
    let logs = stdout(&home.expect(0, &["logs", &format!("{name}.toml"), "--timeperiod", TP]));
    assert!(!logs.contains("lineage: "), "{logs}");
}

/// Settings as [`settings`] with `[lineage] batch = {batch}`.
fn batched(namespace: &str, batch: u32) -> String {
    format!("{}batch = {batch}\n", settings(namespace))
}

/// Asks the receiver to `what` (`hold`, `release`, `refuse`) for the
/// events of `namespace` (see `tests/peers/openlineage_receiver.py`).
fn control(what: &str, namespace: &str, more: &str) {
    let (status, body) = http(
        "POST",
        &format!("{}/_flow_test/{what}", receiver()),
        &format!("{{\"namespace\": \"{namespace}\"{more}}}"),
    );
    assert_eq!(status, 200, "{what}: {body}");
}

/// A chain of `steps`, each after the one before; the last touches the
/// file `done` when it runs.
fn chain(home: &Home, name: &str, steps: &[&str]) -> String {
    let mut flow = format!("name = \"{name}\"\ntime_qualifier = \"daily\"\n");
    for (i, step) in steps.iter().enumerate() {
        let command = if i + 1 == steps.len() {
            format!("touch {}", home.path("done").display())
        } else {
            format!("echo {step}")
        };
        flow.push_str(&format!(
            "[[steps]]\nname = \"{step}\"\nmain = {{ action = \"shell\", command = \"{command}\" }}\n"
        ));
        if i > 0 {
            flow.push_str(&format!("depends_on = [\"{}\"]\n", steps[i - 1]));
        }
    }
    flow
}

/// The events a chain of `steps` posts, in order: each step's START and
/// COMPLETE, as [`kinds`] lists them.
fn chain_kinds(steps: &[&str]) -> Vec<(String, String)> {
    steps
        .iter()
        .flat_map(|s| ["START", "COMPLETE"].map(|k| (k.to_string(), format!("chain.{s}"))))
        .collect()
}

/// Runs `flow run FILE` while the receiver holds the namespace's posts
/// unanswered, releasing them once the chain's last step ran (so the
/// events queue behind the first post); returns the exit code.
fn run_held(home: &Home, namespace: &str, file: &str, timeperiod: &str) -> Option<i32> {
    let _ = std::fs::remove_file(home.path("done"));
    control("hold", namespace, "");
    let child = home
        .command(&["run", file, "--timeperiod", timeperiod])
        .env("FLOW_TEST_LINEAGE_KEY", KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    home.wait_for_file("done");
    control("release", namespace, "");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    out.status.code()
}

/// (request number, events in it) of each record.
fn requests(events: &[Value]) -> Vec<(u64, u64)> {
    events
        .iter()
        .map(|r| {
            (
                r["request"].as_u64().unwrap(),
                r["batch"].as_u64().expect("posted to the batch path"),
            )
        })
        .collect()
}

/// With `batch = 3`, a chain's events, queued behind a slow first post,
/// go to `/api/v1/lineage/batch` at most 3 a request, in fewer requests
/// than events, every one valid OpenLineage and in order across the
/// batches' boundaries (each step's START before its COMPLETE, before the
/// next step's START); the run's line counts events, not requests.
#[test]
#[ignore = "needs the OpenLineage receiver: run by cargo xtask test"]
fn batched_events_are_valid_in_order_and_in_fewer_requests_on_openlineage() {
    let home = Home::new();
    let namespace = format!("flow-test-{}-batch", std::process::id());
    home.write("flow.toml", &batched(&namespace, 3));
    let steps = ["a", "b", "c", "d", "e"];
    home.write("chain.toml", &chain(&home, "chain", &steps));
    run_held(&home, &namespace, "chain.toml", TP);

    let got = received(&namespace);
    for record in &got {
        assert_eq!(record["valid"], true, "refused: {record}");
        assert_eq!(record["status"], 200, "{record}");
        assert_eq!(record["authorization"], format!("Bearer {KEY}"));
    }
    let expected: Vec<(String, String)> = chain_kinds(&steps);
    assert_eq!(kinds(&got), expected);
    let requests = requests(&got);
    let mut numbers: Vec<u64> = requests.iter().map(|(n, _)| *n).collect();
    numbers.dedup();
    assert!(
        numbers.len() < got.len(),
        "{} events in {} requests: {requests:?}",
        got.len(),
        numbers.len()
    );
    for (number, size) in &requests {
        assert!(*size <= 3, "request {number} held {size} events");
        let held = requests.iter().filter(|(n, _)| n == number).count() as u64;
        assert_eq!(held, *size, "request {number}: {requests:?}");
    }
    // Some step's START and COMPLETE went in different batches.
    assert!(
        (0..got.len())
            .step_by(2)
            .any(|i| requests[i].0 != requests[i + 1].0),
        "{requests:?}"
    );
    let logs = stdout(&home.expect(0, &["logs", "chain.toml", "--timeperiod", TP]));
    assert!(
        logs.contains("lineage: 10 event(s) delivered, 0 failed"),
        "{logs}"
    );
}

/// A batch waits `linger` for more events, but not past `flow run`'s end:
/// with `linger = "1h"`, a chain's six events go in one request as the run
/// exits, every one delivered (unhurried, they would wait the hour and be
/// given up when the exit's wait ended).
#[test]
#[ignore = "needs the OpenLineage receiver: run by cargo xtask test"]
fn a_lingering_batch_goes_when_the_run_exits_on_openlineage() {
    let home = Home::new();
    let namespace = format!("flow-test-{}-linger", std::process::id());
    home.write(
        "flow.toml",
        &format!("{}linger = \"1h\"\n", batched(&namespace, 100)),
    );
    home.write("chain.toml", &chain(&home, "chain", &["a", "b", "c"]));
    let out = home
        .command(&["run", "chain.toml", "--timeperiod", TP])
        .env("FLOW_TEST_LINEAGE_KEY", KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let got = received(&namespace);
    assert_eq!(kinds(&got), chain_kinds(&["a", "b", "c"]));
    assert!(
        got.iter().all(|r| r["valid"] == true && r["status"] == 200),
        "{got:?}"
    );
    assert_eq!(
        requests(&got),
        vec![(requests(&got)[0].0, 6); 6],
        "one request"
    );
    let logs = stdout(&home.expect(0, &["logs", "chain.toml", "--timeperiod", TP]));
    assert!(
        logs.contains("lineage: 6 event(s) delivered, 0 failed"),
        "{logs}"
    );
}

/// A batch the receiver answers 503 is tried again and delivered; a batch
/// it refuses with 400 is not, each of its events counts as failed, and
/// the flow log names how many events the refused batch held.
#[test]
#[ignore = "needs the OpenLineage receiver: run by cargo xtask test"]
fn a_refused_batch_is_retried_or_reported_on_openlineage() {
    let home = Home::new();
    let namespace = format!("flow-test-{}-refused", std::process::id());
    home.write("flow.toml", &batched(&namespace, 3));
    home.write("chain.toml", &chain(&home, "chain", &["a", "b", "c"]));

    // 503 once: the held first batch is answered 503, then posted again.
    control("refuse", &namespace, ", \"status\": 503, \"times\": 1");
    run_held(&home, &namespace, "chain.toml", TP);
    let got = received(&namespace);
    assert_eq!(got[0]["status"], 503, "{got:?}");
    let delivered: Vec<&Value> = got.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(delivered.len(), 6, "{got:?}");
    assert_eq!(
        delivered[0]["event"], got[0]["event"],
        "the refused batch is posted again"
    );
    let logs = stdout(&home.expect(0, &["logs", "chain.toml", "--timeperiod", TP]));
    assert!(
        logs.contains("lineage: 6 event(s) delivered, 0 failed"),
        "{logs}"
    );

    // 400 twice: the first two batches are refused for good; the rest go.
    let tp = "2026112900";
    let before = got.len();
    control("refuse", &namespace, ", \"status\": 400, \"times\": 2");
    run_held(&home, &namespace, "chain.toml", tp);
    let got = received(&namespace);
    let got = &got[before..];
    assert_eq!(
        kinds(got),
        chain_kinds(&["a", "b", "c"]),
        "in order, refused batches not posted again"
    );
    let mut batches: Vec<(u64, u64, Vec<&Value>)> = Vec::new();
    for record in got {
        let (number, size) = (
            record["request"].as_u64().unwrap(),
            record["batch"].as_u64().unwrap(),
        );
        match batches.last_mut() {
            Some((n, _, events)) if *n == number => events.push(record),
            _ => batches.push((number, size, vec![record])),
        }
    }
    let statuses: Vec<&Value> = batches
        .iter()
        .map(|(_, _, events)| &events[0]["status"])
        .collect();
    assert!(
        statuses.len() >= 2
            && statuses[..2] == [400, 400]
            && statuses[2..].iter().all(|s| **s == 200),
        "{statuses:?}"
    );
    let logs = stdout(&home.expect(0, &["logs", "chain.toml", "--timeperiod", tp]));
    let name = |r: &Value| {
        format!(
            "{} of step {}",
            r["event"]["eventType"].as_str().unwrap(),
            r["event"]["job"]["name"]
                .as_str()
                .unwrap()
                .trim_start_matches("chain.")
        )
    };
    let mut failed = 0;
    for (_, size, events) in &batches[..2] {
        assert_eq!(events.len() as u64, *size);
        failed += size;
        let which = match &events[..] {
            [one] => name(one),
            [first, .., last] => format!("from {} to {}", name(first), name(last)),
            [] => unreachable!(),
        };
        let says = format!(
            "lineage batch of {size} event(s) failed after 1 attempt(s): HTTP 400 ({size} of them this run's: {which})"
        );
        assert!(logs.contains(&says), "{says}: {logs}");
    }
    let says = format!(
        "lineage: {} event(s) delivered, {failed} failed",
        6 - failed
    );
    assert!(logs.contains(&says), "{says}: {logs}");
}

/// Wrong `[lineage]` settings and step datasets are refused before
/// anything runs, at their place; nothing is written.
#[test]
fn lineage_settings_and_datasets_are_checked_at_load_with_their_place() {
    let home = Home::new();
    home.write("etl.toml", &flow(&home, "etl"));
    let line = support::SETTINGS.matches('\n').count() + 3;
    for (table, at, says) in [
        (
            "url = \"127.0.0.1:5000\"",
            format!("flow.toml:{line}:7"),
            "not an http:// or https:// URL",
        ),
        (
            "url = \"http://127.0.0.1:5000\"\nnamespce = \"x\"",
            format!("flow.toml:{}:1", line + 1),
            "unknown field `namespce`",
        ),
        (
            "url = \"http://127.0.0.1:5000\"\napi_key = \"short\"",
            format!("flow.toml:{}:11", line + 1),
            "at least 8 characters",
        ),
        (
            "url = \"http://127.0.0.1:5000\"\nbatch = 20000",
            format!("flow.toml:{}:9", line + 1),
            "batch = 20000: at most 10000 events per request",
        ),
        (
            "url = \"http://127.0.0.1:5000\"\nbatch = -1",
            format!("flow.toml:{}:9", line + 1),
            "invalid value",
        ),
    ] {
        home.write(
            "flow.toml",
            &format!("{}\n[lineage]\n{table}\n", support::SETTINGS),
        );
        let message = text(&home.expect(2, &["run", "etl.toml", "--timeperiod", TP]));
        assert!(
            message.contains(&at) && message.contains(says),
            "{at} {says}: {message}"
        );
    }

    home.write("flow.toml", support::SETTINGS);
    let good = flow(&home, "bad");
    for (from, to, at, says) in [
        (
            "\"s3://raw/events/\"",
            "\"ftp://raw/events/\"",
            "bad.toml:7:11:",
            "unknown scheme ftp://",
        ),
        (
            "inputs = [\"gs://curated/events/\"]",
            "inputs = \"gs://curated/events/\"",
            "bad.toml:13:10:",
            "expected a sequence",
        ),
        (
            "inputs = [\"gs://curated/events/\"]",
            "inputs = [\"gs://curated/events/\", 7]",
            "bad.toml:13:35:",
            "expected a string",
        ),
    ] {
        home.write("bad.toml", &good.replacen(from, to, 1));
        let message = text(&home.expect(2, &["validate", "bad.toml"]));
        assert!(
            message.contains(at) && message.contains(says),
            "{at} {says}: {message}"
        );
    }
    assert!(!home.db().exists(), "nothing was written");
}
