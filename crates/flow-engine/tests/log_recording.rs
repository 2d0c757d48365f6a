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

/// A store that falls behind with log lines: every `append_logs` waits
/// until the test releases it.
struct SlowLogs {
    inner: Arc<flow_store_sqlite::SqliteStore>,
    release: flow_core::CancellationToken,
}

#[async_trait::async_trait]
impl flow_core::StoreLayer for SlowLogs {
    fn inner(&self) -> &dyn FlowStore {
        &*self.inner
    }
    async fn append_logs(&self, lines: &[flow_core::LogLine]) -> Result<(), flow_core::StoreError> {
        self.release.cancelled().await;
        self.inner.append_logs(lines).await
    }
}

/// Lets the store's appends go (a step after the chatty one).
#[derive(Debug)]
struct Release(flow_core::CancellationToken);

#[async_trait::async_trait]
impl flow_core::Action for Release {
    fn kind(&self) -> &str {
        "release"
    }
    async fn run(
        &self,
        _cx: &flow_core::ActionContext<'_>,
    ) -> Result<flow_core::ActionOutcome, flow_core::ActionError> {
        self.0.cancel();
        Ok(flow_core::ActionOutcome::Done)
    }
}

/// When the store falls `RECORD_LIMIT` lines behind, the run keeps that
/// many waiting and counts the rest instead of keeping them: once the store
/// catches up it has every kept line and one warning saying how many were
/// not recorded (the log files have them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_past_the_limit_are_counted_in_one_line_when_the_store_falls_behind() {
    use flow_engine::logging::RECORD_LIMIT;
    let bench = Bench::new();
    let release = flow_core::CancellationToken::new();
    let store = Arc::new(SlowLogs {
        inner: bench.store.clone(),
        release: release.clone(),
    });
    // More than the store can fall behind by, whenever the recorder takes
    // its first lines (and then blocks): it takes what waits every 200 ms
    // or at 2,000 lines, but a loaded machine may schedule it late, when
    // up to RECORD_LIMIT lines wait; RECORD_LIMIT more then wait behind.
    let extra = RECORD_LIMIT + 20_000;
    let graph = Arc::new(
        FlowDefinition::new("behind")
            .step(StepDefinition::new(
                "chatty",
                shell(&format!("seq 1 {}", RECORD_LIMIT + extra)),
            ))
            .step(
                StepDefinition::new("release", ActionInstance::new(Arc::new(Release(release))))
                    .depends_on(["chatty"]),
            )
            .build()
            .unwrap(),
    );
    let report = flow_engine::ExecutionEngine::new(
        graph.clone(),
        bench.context(&graph, TP, 1),
        store,
        bench.local(),
        bench.options(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(report.state, FlowState::Processed);
    let key = FlowKey::new("behind", tp(TP));
    let lines = recorded(&bench, &key).await;
    let warnings: Vec<&str> = lines
        .iter()
        .map(|l| l.line.message.as_str())
        .filter(|m| m.contains("were not recorded in the store"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let dropped: usize = warnings[0].split(' ').next().unwrap().parse().unwrap();
    let in_files = file_lines(&bench.logs().join("behind"), "behind").len();
    let kept = lines.len() - 1;
    assert!(kept >= RECORD_LIMIT, "{kept} kept");
    assert!(dropped > 0 && dropped <= extra + 100, "{dropped} dropped");
    assert_eq!(kept + dropped, in_files, "every line kept or counted");
}
