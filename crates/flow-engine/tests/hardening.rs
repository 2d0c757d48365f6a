//! Hardening of the engine against hostile names and unwritable logs, on
//! the real local cluster and the real SQLite store.

mod support;

use flow_core::actions::{Identity, Shell};
use flow_core::{
    Action, ActionInstance, FlowDefinition, FlowKey, FlowState, FlowStore, StepDefinition,
    StepState, Template,
};
use flow_engine::EngineError;
use std::sync::Arc;
use support::*;

fn act(a: impl Action + 'static) -> ActionInstance {
    ActionInstance::new(Arc::new(a))
}

fn shell(command: &str) -> ActionInstance {
    act(Shell {
        command: Template::parse(command).unwrap(),
    })
}

/// Every file and directory under `dir`, relative, sorted.
fn listing(dir: &std::path::Path) -> Vec<String> {
    fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if path.is_dir() {
                walk(&path, base, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A library user can give the engine any flow name in its context; no
/// name puts a log file (or a directory) outside the log directory, and the
/// refusal writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_flow_name_puts_logs_outside_the_log_directory() {
    let bench = Bench::new();
    // Logs two levels down, so "../../x" would land inside the bench dir
    // where the test can see it.
    let logs = bench.path("a/b/logs");
    std::fs::create_dir_all(&logs).unwrap();
    let graph = Arc::new(
        FlowDefinition::new("named")
            .step(StepDefinition::new("s", act(Identity)))
            .build()
            .unwrap(),
    );
    let before = listing(bench.dir.path());
    for name in [
        "../../escape",
        "/absolute/elsewhere/victim",
        "forged\nline",
        "nul\0byte",
        &"x".repeat(10_000),
        "..",
        "",
    ] {
        let mut context = bench.context(&graph, TP, 1);
        context.flow_name = name.to_string();
        let mut options = bench.options();
        options.log_directory = Some(logs.clone());
        let engine = flow_engine::ExecutionEngine::new(
            graph.clone(),
            context,
            bench.store.clone(),
            bench.local(),
            options,
        );
        match engine.run().await {
            Err(EngineError::Logs { source, .. }) => {
                assert!(
                    source.problem.contains("cannot name a log directory"),
                    "{source}"
                );
            }
            other => panic!("{name:?}: expected a refusal, got {other:?}"),
        }
        let key = FlowKey::new(name, tp(TP));
        assert_eq!(bench.store.get_flow(&key).await.unwrap(), None);
    }
    assert_eq!(listing(bench.dir.path()), before, "something was written");
    assert!(!std::path::Path::new("/absolute/elsewhere").exists());
}

/// A log file that cannot be created in the middle of a run (here: a step
/// puts a directory where the next step's log file goes) is a run failure
/// that names the file, not a warning lost on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_file_that_cannot_be_written_mid_run_fails_the_run() {
    let bench = Bench::new();
    let graph = Arc::new(
        FlowDefinition::new("lossy")
            .step(StepDefinition::new(
                "a",
                shell("mkdir -p logs/lossy/b.log && echo blocked"),
            ))
            .step(StepDefinition::new("b", act(Identity)).depends_on(["a"]))
            .build()
            .unwrap(),
    );
    let report = bench.engine(&graph, TP, 1).run().await.unwrap();
    assert_eq!(report.state, FlowState::Invalid, "{report:?}");
    let error = report.error.clone().unwrap_or_default();
    assert!(
        error.contains("the run's logs are incomplete")
            && error.contains("cannot open log file")
            && error.contains("lossy/b.log"),
        "{report:?}"
    );
    let flow = bench
        .store
        .get_flow(&FlowKey::new("lossy", tp(TP)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(flow.state, FlowState::Invalid);
    // The flow's own log says why.
    let flow_log = std::fs::read_to_string(bench.logs().join("lossy/lossy.log")).unwrap();
    assert!(
        flow_log.contains("the run's logs are incomplete"),
        "{flow_log}"
    );
    // The step that ran is still recorded as it ended.
    let states = bench.step_states("lossy", TP).await;
    assert_eq!(
        states[0],
        ("a".into(), StepState::Processed.as_str().into())
    );
}

/// A log directory that is a file is refused before the lease and before
/// any record is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_directory_that_is_a_file_refuses_the_run() {
    let bench = Bench::new();
    std::fs::write(bench.logs(), "not a directory").unwrap();
    let graph = Arc::new(
        FlowDefinition::new("nologs")
            .step(StepDefinition::new("s", act(Identity)))
            .build()
            .unwrap(),
    );
    match bench.engine(&graph, TP, 1).run().await {
        Err(EngineError::Logs { source, .. }) => {
            assert_eq!(source.path, bench.logs());
            assert!(source.problem.contains("is not a directory"), "{source}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let key = FlowKey::new("nologs", tp(TP));
    assert_eq!(bench.store.get_flow(&key).await.unwrap(), None);
}

/// Every place a run's log files cannot go is refused before the run, naming
/// the path and why: the flow's directory or its log file taken by the wrong
/// kind of file, a log directory to create under a file; one to create
/// under plain directories, or one ready, is accepted.
#[test]
fn every_place_a_log_file_cannot_go_is_refused_naming_it() {
    use flow_engine::logging::check_log_directory;
    let bench = Bench::new();
    let refused =
        |dir: &std::path::Path, flow: &str| check_log_directory(dir, flow).expect_err("refused");

    let logs = bench.path("logs");
    std::fs::create_dir_all(logs.join("ready")).unwrap();
    assert!(check_log_directory(&logs, "ready").is_ok());
    assert!(
        check_log_directory(&logs, "new").is_ok(),
        "created at run time"
    );
    assert!(check_log_directory(&bench.path("a/b/c"), "new").is_ok());

    let e = refused(&logs, "bad/name");
    assert_eq!(e.path, logs);
    assert!(e.problem.contains("cannot name a log directory"), "{e}");

    std::fs::write(logs.join("filed"), "").unwrap();
    let e = refused(&logs, "filed");
    assert_eq!(e.path, logs.join("filed"));
    assert!(e.problem.contains("is not a directory"), "{e}");

    std::fs::create_dir_all(logs.join("dirlog/dirlog.log")).unwrap();
    let e = refused(&logs, "dirlog");
    assert_eq!(e.path, logs.join("dirlog/dirlog.log"));
    assert!(e.problem.contains("is not a regular file"), "{e}");

    let file = bench.path("plain");
    std::fs::write(&file, "").unwrap();
    let e = refused(&file.join("logs"), "flow");
    assert_eq!(e.path, file.join("logs"));
    assert!(
        e.problem.contains(&format!(
            "cannot be created: {} is not a directory",
            file.display()
        )),
        "{e}"
    );
}

/// An action name from library code is not checked like a flow file's:
/// the log writer escapes it (and any logger name it did not make), so a
/// newline in it cannot forge a line in the files or the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_name_cannot_forge_log_lines() {
    let bench = Bench::new();
    let forged = "sh INFO ok\n2026-01-01T00:00:00.000Z b.shell INFO FORGED LINE\nb";
    let graph = Arc::new(
        FlowDefinition::new("forge")
            .step(StepDefinition::new("a", shell("echo hi").named(forged)))
            .build()
            .unwrap(),
    );
    let logs = bench.path("logs");
    let mut options = bench.options();
    options.log_directory = Some(logs.clone());
    options.record_logs = true;
    let engine = flow_engine::ExecutionEngine::new(
        graph.clone(),
        bench.context(&graph, TP, 1),
        bench.store.clone(),
        bench.local(),
        options,
    );
    let report = engine.run().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    let file = std::fs::read_to_string(logs.join("forge/a.log")).unwrap();
    assert!(file.contains("hi"), "{file}");
    for line in file.lines() {
        assert!(
            line.starts_with("20") && !line.starts_with("2026-01-01T00:00:00.000Z"),
            "a forged line: {line:?}\n{file}"
        );
    }
    assert!(file.contains(r#" "a.sh INFO ok\n2026"#), "{file}");
    let key = FlowKey::new("forge", tp(TP));
    let recorded = bench
        .store
        .read_logs(&flow_core::LogQuery::new(key, 1000))
        .await
        .unwrap();
    assert!(!recorded.is_empty());
    for stored in &recorded {
        assert!(
            !stored.line.logger.contains('\n'),
            "{:?}",
            stored.line.logger
        );
    }
}

/// Logs events of several crates at several levels from inside a step.
#[derive(Debug)]
struct Chatter;

#[async_trait::async_trait]
impl Action for Chatter {
    fn kind(&self) -> &str {
        "chatter"
    }
    async fn run(
        &self,
        _cx: &flow_core::ActionContext<'_>,
    ) -> Result<flow_core::ActionOutcome, flow_core::ActionError> {
        tracing::debug!(target: "hyper_util::client::pool", "a dependency's debug");
        tracing::trace!(target: "h2::codec", "a dependency's trace");
        tracing::info!(target: "hyper_util::client::pool", "a dependency's info");
        tracing::warn!(target: "rustls", "a dependency's warning");
        tracing::debug!(target: "flow_engine::probe", "flow's own debug");
        tracing::trace!(target: "flow", "flow's own trace");
        tracing::debug!(target: "flowery", "a crate only named like flow");
        Ok(flow_core::ActionOutcome::Done)
    }
}

/// The log files get every event of flow's own crates (`flow`, `flow_*`) and
/// other crates' events at `INFO` and above: dependencies' debug and trace
/// events would fill step logs and the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_logs_keep_flows_own_events_and_only_dependencies_info_and_above() {
    let bench = Bench::new();
    let graph = Arc::new(
        FlowDefinition::new("chatty")
            .step(StepDefinition::new("talk", act(Chatter)))
            .build()
            .unwrap(),
    );
    let report = bench.engine(&graph, TP, 1).run().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    let log = std::fs::read_to_string(bench.logs().join("chatty/talk.log")).unwrap();
    for kept in [
        "a dependency's info",
        "a dependency's warning",
        "flow's own debug",
        "flow's own trace",
    ] {
        assert!(log.contains(kept), "{kept} missing: {log}");
    }
    for left_out in [
        "a dependency's debug",
        "a dependency's trace",
        "a crate only named like flow",
    ] {
        assert!(!log.contains(left_out), "{left_out} kept: {log}");
    }
}
