//! Traces end to end: `[telemetry]` in the settings, the real `flow`
//! binary (built with `otel`) exporting over OTLP/HTTP to the loopback
//! receiver xtask starts (`tests/peers/otlp_receiver.py`, which decodes
//! each request with PyPI's `opentelemetry-proto` and appends the spans to
//! the file `FLOW_TEST_OTLP_SPANS`). `flow` flushes its spans before it
//! exits, so each test reads the file once the command returned. Tests
//! running at once share the receiver: each picks its own spans by its own
//! `service_name` (or flow name).

mod support;

use serde_json::Value;
use std::process::Child;
use std::time::Duration;
use support::{stderr, stdout, text, Home};

const TP: &str = "2026112800";
const TOKEN: &str = "otlp-token-7c1f0e5a";

/// A two-step flow named `name`; `b` fails until the file `fixed` exists.
fn flow(home: &Home, name: &str) -> String {
    support::fails_until_fixed(home, name)
}

/// The test settings exporting to the receiver as `service`, with the
/// token in a header read from the environment.
fn traced(service: &str) -> String {
    let endpoint = std::env::var("FLOW_TEST_OTLP_ENDPOINT").expect("FLOW_TEST_OTLP_ENDPOINT");
    format!(
        "{}\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"{service}\"\n\
         [telemetry.headers]\nAuthorization = \"env:FLOW_TEST_OTLP_TOKEN\"\n",
        support::SETTINGS
    )
}

/// A name no other test (or earlier run of the receiver) uses.
fn unique(what: &str) -> String {
    format!("{what}{}", std::process::id())
}

/// Every span the receiver holds for which `keep` is true.
fn spans(keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    let path = std::env::var("FLOW_TEST_OTLP_SPANS").expect("FLOW_TEST_OTLP_SPANS");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        // A line another test's run is writing may be cut short.
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|span| keep(span))
        .collect()
}

fn of_service(service: &str) -> Vec<Value> {
    spans(|s| s["service"] == service)
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a str {
    span["attributes"][key].as_str().unwrap_or_default()
}

/// The spans named `name` whose parent is `parent`.
fn children<'a>(all: &'a [Value], parent: &Value, name: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|s| s["name"] == name && s["parent_span_id"] == parent["span_id"])
        .collect()
}

/// OpenTelemetry's `STATUS_CODE_ERROR`.
const ERROR: i64 = 2;

fn run_with_token(home: &Home, args: &[&str]) -> std::process::Output {
    home.command(args)
        .env("FLOW_TEST_OTLP_TOKEN", format!("Bearer {TOKEN}"))
        .output()
        .unwrap()
}

/// The flow record's `trace_parent`, read from the store file.
fn stored_trace_parent(home: &Home, flow: &str) -> Option<String> {
    let conn = rusqlite::Connection::open(home.db()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row(
        "SELECT trace_parent FROM flow WHERE flow_name = ?1 AND timeperiod = ?2",
        [flow, TP],
        |r| r.get(0),
    )
    .unwrap()
}

/// A two-step run is one trace: the run span, a span per step under it,
/// an action attempt under each step and the job under it, each with its
/// attributes; the header arrives and its secret shows nowhere.
#[test]
#[ignore = "needs the OTLP receiver: run by cargo xtask test"]
fn a_run_is_one_trace_of_run_step_action_and_job_spans_on_otlp() {
    let home = Home::new();
    let (name, service) = (unique("traced"), unique("svc-run-"));
    home.write("flow.toml", &traced(&service));
    home.write("fixed", "");
    home.write("traced.toml", &flow(&home, &name));
    let out = run_with_token(&home, &["run", "traced.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains(TOKEN), "{}", text(&out));

    let all = of_service(&service);
    let traces: std::collections::BTreeSet<&str> = all
        .iter()
        .map(|s| s["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(traces.len(), 1, "one trace: {all:#?}");
    assert!(
        all.iter()
            .all(|s| s["authorization"] == format!("Bearer {TOKEN}")),
        "the header reached the receiver with every request"
    );
    assert!(all.iter().all(|s| s["status_code"] != ERROR), "{all:#?}");

    let runs: Vec<&Value> = all.iter().filter(|s| s["name"] == "run").collect();
    assert_eq!(runs.len(), 1, "{all:#?}");
    let run = runs[0];
    assert_eq!(run["parent_span_id"], "", "the run span is the root");
    assert_eq!(attr(run, "flow"), name);
    assert_eq!(attr(run, "timeperiod"), TP);
    assert_eq!(attr(run, "mode"), "run_mode_nominal");
    assert_eq!(attr(run, "state"), "state_processed");
    assert!(!attr(run, "run_id").is_empty(), "{run}");

    let clusters = children(&all, run, "cluster");
    assert!(!clusters.is_empty(), "the launch's span: {all:#?}");
    assert!(
        clusters.iter().all(|c| attr(c, "cluster") == "local-0"),
        "{all:#?}"
    );

    let steps = children(&all, run, "step");
    let mut names: Vec<&str> = steps.iter().map(|s| attr(s, "step")).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "b"], "{all:#?}");
    for step in steps {
        assert_eq!(attr(step, "cluster"), "local-0", "{step}");
        assert_eq!(attr(step, "state"), "state_processed", "{step}");
        let actions = children(&all, step, "action");
        assert_eq!(actions.len(), 1, "one attempt of main: {all:#?}");
        let action = actions[0];
        assert_eq!(attr(action, "phase"), "main", "{action}");
        assert_eq!(action["attributes"]["attempt"], 1, "{action}");
        assert_eq!(attr(action, "state"), "complete", "{action}");
        let jobs = children(&all, action, "job");
        assert_eq!(jobs.len(), 1, "{all:#?}");
        assert_eq!(attr(jobs[0], "job_kind"), "local", "{}", jobs[0]);
        assert!(!attr(jobs[0], "job_id").is_empty(), "{}", jobs[0]);
        assert_eq!(attr(jobs[0], "state"), "succeeded", "{}", jobs[0]);
        assert_eq!(attr(jobs[0], "cluster"), "local-0", "{}", jobs[0]);
        assert_eq!(jobs[0]["attributes"]["adopted"], false, "{}", jobs[0]);
    }

    // The flow record keeps the run span's context, for a recover.
    let trace = traces.into_iter().next().unwrap();
    assert_eq!(
        stored_trace_parent(&home, &name),
        Some(format!(
            "00-{trace}-{}-01",
            run["span_id"].as_str().unwrap()
        ))
    );
}

/// A failing step's spans carry the error status; `recover` continues the
/// trace, its run span a child of the failed run's.
#[test]
#[ignore = "needs the OTLP receiver: run by cargo xtask test"]
fn a_failed_step_is_an_error_and_recover_continues_its_trace_on_otlp() {
    let home = Home::new();
    let (name, service) = (unique("failing"), unique("svc-fail-"));
    home.write("flow.toml", &traced(&service));
    home.write("failing.toml", &flow(&home, &name));
    let out = run_with_token(&home, &["run", "failing.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let first = of_service(&service);
    let run = first
        .iter()
        .find(|s| s["name"] == "run")
        .expect("a run span");
    assert_eq!(run["status_code"], ERROR, "{run}");
    assert_eq!(attr(run, "state"), "state_invalid");
    let step = |name: &str| {
        children(&first, run, "step")
            .into_iter()
            .find(|s| attr(s, "step") == name)
            .unwrap_or_else(|| panic!("no span of step {name}: {first:#?}"))
    };
    let step_b = step("b");
    assert_eq!(step_b["status_code"], ERROR, "{step_b}");
    assert_eq!(attr(step_b, "state"), "state_invalid");
    assert_ne!(step("a")["status_code"], ERROR, "{}", step("a"));
    let attempts = children(&first, step_b, "action");
    assert!(!attempts.is_empty(), "{first:#?}");
    for attempt in &attempts {
        assert_eq!(attempt["status_code"], ERROR, "{attempt}");
        assert_eq!(attr(attempt, "state"), "failed", "{attempt}");
        let jobs = children(&first, attempt, "job");
        assert_eq!(jobs.len(), 1, "{first:#?}");
        assert_eq!(jobs[0]["status_code"], ERROR, "{}", jobs[0]);
        assert_eq!(attr(jobs[0], "state"), "failed", "{}", jobs[0]);
    }

    home.write("fixed", "");
    let out = run_with_token(&home, &["recover", "failing.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = of_service(&service);
    let recovered: Vec<&Value> = all
        .iter()
        .filter(|s| s["name"] == "run" && attr(s, "mode") == "run_mode_recovery")
        .collect();
    assert_eq!(recovered.len(), 1, "{all:#?}");
    let again = recovered[0];
    assert_eq!(again["trace_id"], run["trace_id"], "the same trace");
    assert_eq!(
        again["parent_span_id"], run["span_id"],
        "under the failed run's span"
    );
    assert_eq!(attr(again, "state"), "state_processed");
    let steps = children(&all, again, "step");
    assert_eq!(steps.len(), 1, "only b runs again: {all:#?}");
    assert!(
        all.iter().all(|s| s["trace_id"] == run["trace_id"]),
        "{all:#?}"
    );
}

/// A run killed mid-step exports nothing, but its flow record kept the
/// trace context: the recover's spans carry that trace id.
#[test]
#[ignore = "needs the OTLP receiver: run by cargo xtask test"]
fn a_killed_run_is_recovered_in_its_trace_on_otlp() {
    let home = Home::new();
    let (name, service) = (unique("killed"), unique("svc-kill-"));
    home.write("flow.toml", &traced(&service));
    home.write(
        "killed.toml",
        &format!(
            r#"
name = "{name}"
time_qualifier = "daily"
[[steps]]
name = "b"
main = {{ action = "shell", command = "touch {started}; while [ ! -f {go} ]; do sleep 0.05; done" }}
"#,
            started = home.path("started").display(),
            go = home.path("go").display()
        ),
    );
    let mut child: Child = home
        .command(&["run", "killed.toml", "--timeperiod", TP])
        .env("FLOW_TEST_OTLP_TOKEN", format!("Bearer {TOKEN}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    home.wait_for_file("started");
    child.kill().unwrap();
    child.wait().unwrap();
    let stored = stored_trace_parent(&home, &name).expect("the run's trace context was stored");
    let parts: Vec<&str> = stored.split('-').collect();
    assert_eq!(parts.len(), 4, "{stored}");
    let (trace, run_span) = (parts[1], parts[2]);
    // Stale, as the passing of its ttl would make it.
    let conn = rusqlite::Connection::open(home.db()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute(
        "UPDATE lease SET heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day') \
         WHERE flow_name = ?1",
        [&name],
    )
    .unwrap();
    home.write("go", "");
    let out = run_with_token(&home, &["recover", "killed.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let all = of_service(&service);
    let run = all
        .iter()
        .find(|s| s["name"] == "run" && attr(s, "mode") == "run_mode_recovery")
        .unwrap_or_else(|| panic!("no recover span: {all:#?}"));
    assert_eq!(run["trace_id"], trace, "{run}");
    assert_eq!(run["parent_span_id"], run_span, "{run}");
    // The job the killed run started is adopted (still running, or ended
    // while no engine watched): its span is under the recover's attempt.
    let step = children(&all, run, "step");
    assert_eq!(step.len(), 1, "{all:#?}");
    let action = children(&all, step[0], "action");
    assert_eq!(action.len(), 1, "{all:#?}");
    let jobs = children(&all, action[0], "job");
    assert_eq!(jobs.len(), 1, "{all:#?}");
    assert_eq!(jobs[0]["attributes"]["adopted"], true, "{}", jobs[0]);
    assert_eq!(attr(jobs[0], "state"), "succeeded", "{}", jobs[0]);
    assert!(!attr(jobs[0], "job_id").is_empty(), "{}", jobs[0]);
    assert!(all.iter().all(|s| s["trace_id"] == trace), "{all:#?}");
    // The killed run's root span never ended, so it was never exported.
    assert!(!all.iter().any(|s| s["span_id"] == run_span), "{all:#?}");
}

/// Without `[telemetry]` nothing is set up: no span leaves, even with the
/// standard OpenTelemetry variables pointing at the receiver, and the flow
/// record keeps no trace context.
#[test]
#[ignore = "needs the OTLP receiver: run by cargo xtask test"]
fn a_run_without_telemetry_exports_nothing_on_otlp() {
    let endpoint = std::env::var("FLOW_TEST_OTLP_ENDPOINT").expect("FLOW_TEST_OTLP_ENDPOINT");
    let home = Home::new();
    let name = unique("untraced");
    home.write("fixed", "");
    home.write("untraced.toml", &flow(&home, &name));
    let out = home
        .command(&["run", "untraced.toml", "--timeperiod", TP])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("{endpoint}/v1/traces"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(spans(|s| attr(s, "flow") == name), Vec::<Value>::new());
    assert_eq!(stored_trace_parent(&home, &name), None);
}

/// A header secret read from an unset variable refuses the run before
/// anything starts, naming the header and the variable.
#[test]
fn an_unset_header_secret_refuses_the_run() {
    let home = Home::new();
    home.write(
        "flow.toml",
        &format!(
            "{}\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:9\"\n\
             [telemetry.headers]\nAuthorization = \"env:FLOW_TEST_UNSET_OTLP_TOKEN\"\n",
            support::SETTINGS
        ),
    );
    home.write("fixed", "");
    home.write("refused.toml", &flow(&home, "refused"));
    let out = home
        .command(&["run", "refused.toml", "--timeperiod", TP])
        .env_remove("FLOW_TEST_UNSET_OTLP_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let message = stderr(&out);
    assert!(
        message.contains("[telemetry] headers.Authorization")
            && message.contains("FLOW_TEST_UNSET_OTLP_TOKEN"),
        "{message}"
    );
    assert!(stdout(&out).is_empty(), "{}", text(&out));
    assert!(!home.db().exists(), "nothing was written");
}

/// An unreachable collector does not fail the run: the failure is
/// reported on stderr, once.
#[test]
fn an_unreachable_collector_is_reported_once_and_the_run_succeeds() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = Home::new();
    home.write(
        "flow.toml",
        &format!(
            "{}\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\ntimeout = \"2s\"\n",
            support::SETTINGS
        ),
    );
    home.write("fixed", "");
    home.write("lost.toml", &flow(&home, "lost"));
    let out = home.flow(&["run", "lost.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let message = stderr(&out);
    assert_eq!(
        message.matches("traces not exported").count(),
        1,
        "{message}"
    );
}
