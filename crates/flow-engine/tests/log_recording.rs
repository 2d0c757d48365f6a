//! Log recording: every line of a run's log files also reaches the store
//! (in batches), attributed to the run, on success and on failure.

mod support;

use flow_core::actions::{Fail, Shell};
use flow_core::{
    ActionInstance, FlowDefinition, FlowKey, FlowState, FlowStore, LogLevel, LogQuery,
    StepDefinition, StoredLogLine, Template,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use support::*;

fn shell(command: &str) -> ActionInstance {
    ActionInstance::new(Arc::new(Shell {
        command: Template::parse(command).unwrap(),
    }))
}

/// `(file, logger, level, message)` of every line in a run's log files.
fn file_lines(dir: &Path, flow: &str) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let file = path.file_stem().unwrap().to_string_lossy().to_string();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let mut cols = line.splitn(4, ' ');
            let (_, logger, level, message) = (
                cols.next(),
                cols.next().unwrap(),
                cols.next().unwrap(),
                cols.next().unwrap_or(""),
            );
            let file = if file == flow {
                String::new()
            } else {
                file.clone()
            };
            out.push((
                file,
                logger.to_string(),
                level.to_string(),
                message.to_string(),
            ));
        }
    }
    out.sort();
    out
}

fn stored_as_file_lines(lines: &[StoredLogLine]) -> Vec<(String, String, String, String)> {
    let mut out: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l.line.step.clone().unwrap_or_default(),
                l.line.logger.clone(),
                l.line.level.to_string(),
                l.line.message.clone(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn recorded(bench: &Bench, key: &FlowKey) -> Vec<StoredLogLine> {
    bench
        .store
        .read_logs(&LogQuery::new(key.clone(), 100_000))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_file_line_is_recorded_in_the_store_for_its_run() {
    let bench = Bench::new();
    let mut flow = FlowDefinition::new("recorded");
    let mut previous: Option<String> = None;
    for i in 0..5 {
        let name = format!("s{i}");
        let mut step = StepDefinition::new(&name, shell(&format!("for n in 1 2 3 4 5 6 7 8 9 10; do echo {name} line $n; done; echo {name} warns >&2")));
        if let Some(p) = &previous {
            step = step.depends_on([p.as_str()]);
        }
        flow = flow.step(step);
        previous = Some(name);
    }
    let graph = Arc::new(flow.build().unwrap());
    let key = FlowKey::new("recorded", tp(TP));
    let first = bench.engine(&graph, TP, 1).run().await.unwrap();
    assert_eq!(first.state, FlowState::Processed);
    let dir = bench.logs().join("recorded");
    let lines = recorded(&bench, &key).await;
    assert_eq!(
        stored_as_file_lines(&lines),
        file_lines(&dir, "recorded"),
        "the store's lines differ from the files'"
    );
    assert!(lines.len() > 5 * 11, "{} lines", lines.len());
    assert!(
        lines.iter().all(|l| l.line.run == first.run),
        "lines attributed to another run"
    );
    assert!(lines.windows(2).all(|w| w[0].position < w[1].position));
    // Within a step, the store keeps the file's order.
    let s2: Vec<_> = lines
        .iter()
        .filter(|l| l.line.step.as_deref() == Some("s2") && l.line.message.starts_with("s2 line"))
        .map(|l| l.line.message.clone())
        .collect();
    let expected: Vec<_> = (1..=10).map(|n| format!("s2 line {n}")).collect();
    assert_eq!(s2, expected);
    assert!(lines
        .iter()
        .any(|l| l.line.level == LogLevel::Warn && l.line.message == "s2 warns"));

    // A second run that fails: its lines are there too, under its own run.
    let failing = Arc::new(
        FlowDefinition::new("recorded")
            .step(StepDefinition::new("s0", shell("echo before the failure")))
            .step(
                StepDefinition::new(
                    "s1",
                    ActionInstance::new(Arc::new(Fail {
                        message: Some(Template::parse("boom").unwrap()),
                    })),
                )
                .depends_on(["s0"]),
            )
            .build()
            .unwrap(),
    );
    let second = bench.engine(&failing, TP, 1).run().await.unwrap();
    assert_eq!(second.state, FlowState::Invalid);
    let mut query = LogQuery::new(key.clone(), 100_000);
    query.run = Some(second.run.clone());
    let of_second = bench.store.read_logs(&query).await.unwrap();
    assert!(
        of_second
            .iter()
            .any(|l| l.line.message == "before the failure"),
        "{of_second:?}"
    );
    assert!(
        of_second
            .iter()
            .any(|l| l.line.level == LogLevel::Error && l.line.step.as_deref() == Some("s1")),
        "{of_second:?}"
    );
    let all = recorded(&bench, &key).await;
    assert_eq!(
        all.len(),
        lines.len() + of_second.len(),
        "the first run's lines changed"
    );
    let mut by_run = BTreeMap::new();
    for l in &all {
        *by_run.entry(l.line.run.clone()).or_insert(0) += 1;
    }
    assert_eq!(by_run.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_can_be_turned_off() {
    let bench = Bench::new();
    let graph = Arc::new(
        FlowDefinition::new("quiet")
            .step(StepDefinition::new("a", shell("echo hi")))
            .build()
            .unwrap(),
    );
    let options = flow_engine::EngineOptions {
        record_logs: false,
        ..bench.options()
    };
    let report = bench
        .engine_with(&graph, TP, 1, bench.local(), options)
        .run()
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert!(recorded(&bench, &FlowKey::new("quiet", tp(TP)))
        .await
        .is_empty());
    assert!(std::fs::read_to_string(bench.logs().join("quiet/a.log"))
        .unwrap()
        .contains("hi"));
}
