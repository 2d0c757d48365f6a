//! The timetable (`flow schedule`'s core) on the real SQLite store and the
//! real local cluster, with time moved by hand (`SetClock`): a simulated
//! day of an hourly flow with a failing hour the garbage collector
//! recovers, a daily flow waiting for its 24 hours, a failed upstream
//! blocking it, and a catch-up after downtime, oldest first.

mod support;

use flow_core::clock::SetClock;
use flow_core::{
    ActionRegistry, FlowGraph, FlowStore, JobKey, JobState, RunMode, RunQuery, TimeQualifier,
    Timeperiod, TimetableJob,
};
use flow_engine::timetable::{EngineFactory, Readiness, Timetable, TimetableOptions};
use flow_engine::ExecutionEngine;
use std::sync::Arc;
use std::time::Duration;
use support::{tp, Bench};

struct Engines {
    bench: Arc<Bench>,
}

impl EngineFactory for Engines {
    fn engine(&self, graph: &Arc<FlowGraph>, timeperiod: Timeperiod) -> ExecutionEngine {
        self.bench.engine(graph, &timeperiod.to_string(), 1)
    }
}

fn flow(bench: &Bench, text: &str) -> Arc<FlowGraph> {
    let text = text.replace("DIR", &bench.dir.path().display().to_string());
    Arc::new(
        ActionRegistry::builtin()
            .parse(&text, "f.toml".as_ref())
            .unwrap(),
    )
}

/// Hourly; a period fails while `DIR/fail-PERIOD` exists.
const LOAD: &str = r#"
name = "load"
time_qualifier = "hourly"
[schedule]
earliest_timeperiod = "2026112800"
retry_limit = 2
retry_delay = "10m"
[[steps]]
name = "load"
main = { action = "shell", command = "test ! -e DIR/fail-{timeperiod} && echo {timeperiod} >> DIR/load.txt" }
"#;

const REPORT: &str = r#"
name = "report"
time_qualifier = "daily"
[schedule]
earliest_timeperiod = "2026112800"
depends_on_flows = ["load"]
[[steps]]
name = "report"
main = { action = "shell", command = "echo {timeperiod} >> DIR/report.txt" }
"#;

fn timetable(
    bench: &Arc<Bench>,
    flows: Vec<Arc<FlowGraph>>,
    clock: &SetClock,
    concurrency: usize,
) -> Timetable {
    Timetable::new(
        flows,
        bench.store.clone(),
        Arc::new(clock.clone()),
        Arc::new(Engines {
            bench: bench.clone(),
        }),
        TimetableOptions {
            owner: "test-scheduler".into(),
            concurrency,
            claim_ttl: Duration::from_secs(60),
            heartbeat: Duration::from_secs(1),
        },
    )
    .unwrap()
}

async fn job(bench: &Bench, flow: &str, q: TimeQualifier, t: &str) -> TimetableJob {
    bench
        .store
        .get_job(&JobKey::new(flow, q, tp(t)))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no Job {flow}@{t}"))
}

fn start() -> chrono::DateTime<chrono::Utc> {
    tp("2026112800").start()
}

fn hours(n: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::hours(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_day_recovers_a_failing_hour_and_the_daily_job_waits_for_all_24() {
    let bench = Arc::new(Bench::new());
    let load = flow(&bench, LOAD);
    let report = flow(&bench, REPORT);
    let clock = SetClock::new(start());
    let t = timetable(&bench, vec![load, report], &clock, 4);
    std::fs::write(bench.path("fail-2026112807"), "").unwrap();

    for h in 1..=23 {
        clock.set(start() + hours(h));
        let tick = t.tick().await.unwrap();
        let hour = format!("20261128{:02}", h - 1);
        assert!(
            tick.started
                .iter()
                .any(|k| k.timeperiod.to_string() == hour),
            "hour {hour} starts when it closes: {tick:?}"
        );
        t.wait_idle().await;
        if h == 1 {
            // The scheduler wakes when the next hour closes.
            assert_eq!(t.next_due(), Some(start() + hours(2)));
        }
        if h == 8 {
            // Hour 07 failed: counted, recovery next, not before the backoff.
            let j = job(&bench, "load", TimeQualifier::Hourly, "2026112807").await;
            assert_eq!(j.state, JobState::InProgress);
            assert_eq!(j.number_of_failures, 1);
            assert_eq!(j.run_mode, Some(RunMode::Recovery));
            assert_eq!(
                j.not_before,
                Some(clock_now(&clock) + chrono::TimeDelta::minutes(10))
            );
            assert!(
                j.event_log.last().unwrap().contains("failed"),
                "{:?}",
                j.event_log
            );
            std::fs::remove_file(bench.path("fail-2026112807")).unwrap();
            // Before the backoff: not retried.
            clock.set(start() + hours(8) + chrono::TimeDelta::minutes(5));
            let tick = t.tick().await.unwrap();
            assert!(tick.started.is_empty(), "{tick:?}");
            // It wakes when the backoff ends, before the next hour closes.
            assert_eq!(
                t.next_due(),
                Some(start() + hours(8) + chrono::TimeDelta::minutes(10))
            );
            // After it: the garbage collector retries it, in recovery mode.
            clock.set(start() + hours(8) + chrono::TimeDelta::minutes(10));
            let tick = t.tick().await.unwrap();
            assert_eq!(tick.started.len(), 1, "{tick:?}");
            t.wait_idle().await;
            let j = job(&bench, "load", TimeQualifier::Hourly, "2026112807").await;
            assert_eq!(j.state, JobState::Processed, "{:?}", j.event_log);
            let runs = bench
                .store
                .list_runs(&RunQuery {
                    flow_name: Some("load".into()),
                    timeperiod: Some(tp("2026112807")),
                    limit: None,
                })
                .await
                .unwrap();
            let modes: Vec<RunMode> = runs.iter().rev().map(|r| r.mode).collect();
            assert_eq!(modes, [RunMode::Nominal, RunMode::Recovery]);
            assert_eq!(j.related_unit_of_work, runs[0].id);
            // Due when the hour closed, started then; the retry keeps the
            // first start (the due-to-start delay of /metrics).
            assert_eq!(j.due_at, Some(start() + hours(8)));
            assert_eq!(j.started_at, Some(start() + hours(8)));
            assert_eq!(j.start_delay(), Some(chrono::TimeDelta::zero()));
        }
        // The daily Job does not exist before its day closes.
        assert!(bench
            .store
            .get_job(&JobKey::new(
                "report",
                TimeQualifier::Daily,
                tp("2026112800")
            ))
            .await
            .unwrap()
            .is_none());
    }

    // Midnight: the last hour and the day close together. The day waits.
    clock.set(start() + hours(24));
    let tick = t.tick().await.unwrap();
    assert_eq!(
        tick.started
            .iter()
            .map(|k| format!("{}@{}", k.process_name, k.timeperiod))
            .collect::<Vec<_>>(),
        ["load@2026112823"]
    );
    assert_eq!(
        t.readiness("report", tp("2026112800")).await.unwrap(),
        Readiness::Waiting(vec!["load@2026112823".into()])
    );
    t.wait_idle().await;
    let tick = t.tick().await.unwrap();
    assert_eq!(tick.started.len(), 1, "{tick:?}");
    assert_eq!(tick.started[0].process_name, "report");
    t.wait_idle().await;
    let day = job(&bench, "report", TimeQualifier::Daily, "2026112800").await;
    assert_eq!(day.state, JobState::Processed, "{:?}", day.event_log);
    // Due at midnight, started on the next tick (the clock did not move).
    assert_eq!(day.due_at, Some(start() + hours(24)));
    assert_eq!(day.start_delay(), Some(chrono::TimeDelta::zero()));

    // Every hour exactly once, the report once, after all of them.
    let lines = std::fs::read_to_string(bench.path("load.txt")).unwrap();
    let mut hours_done: Vec<&str> = lines.lines().collect();
    hours_done.sort();
    let want: Vec<String> = (0..24).map(|h| format!("20261128{h:02}")).collect();
    assert_eq!(hours_done, want);
    assert_eq!(
        std::fs::read_to_string(bench.path("report.txt")).unwrap(),
        "2026112800\n"
    );
}

fn clock_now(clock: &SetClock) -> chrono::DateTime<chrono::Utc> {
    use flow_core::clock::WallClock;
    clock.now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_past_its_retry_limit_is_left_skipped_and_blocks_its_dependants() {
    let bench = Arc::new(Bench::new());
    let load = flow(&bench, &LOAD.replace("retry_limit = 2", "retry_limit = 0"));
    let report = flow(&bench, REPORT);
    let clock = SetClock::new(start() + hours(24));
    std::fs::write(bench.path("fail-2026112803"), "").unwrap();
    let t = timetable(&bench, vec![load, report], &clock, 8);
    // Catch-up of the whole day; run until nothing more starts.
    loop {
        let tick = t.tick().await.unwrap();
        if tick.started.is_empty() && tick.running == 0 {
            break;
        }
        t.wait_for_a_run(Duration::from_secs(5)).await;
    }
    let failed = job(&bench, "load", TimeQualifier::Hourly, "2026112803").await;
    assert_eq!(failed.state, JobState::Skipped);
    assert_eq!(failed.number_of_failures, 1);
    assert!(
        failed
            .event_log
            .last()
            .unwrap()
            .contains("gave up after 1 failed runs"),
        "{:?}",
        failed.event_log
    );
    let day = job(&bench, "report", TimeQualifier::Daily, "2026112800").await;
    assert_eq!(day.state, JobState::Embryo);
    assert_eq!(
        t.readiness("report", tp("2026112800")).await.unwrap(),
        Readiness::Blocked(vec!["load@2026112803".into()])
    );
    assert!(!bench.path("report.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_periods_are_caught_up_oldest_first_at_most_n_at_a_time() {
    let bench = Arc::new(Bench::new());
    let load = flow(&bench, LOAD);
    // Ten hours closed while no scheduler ran.
    let clock = SetClock::new(start() + hours(10));
    let t = timetable(&bench, vec![load], &clock, 2);
    let first = t.tick().await.unwrap();
    assert_eq!(first.created, 10);
    let started: Vec<String> = first
        .started
        .iter()
        .map(|k| k.timeperiod.to_string())
        .collect();
    assert_eq!(started, ["2026112800", "2026112801"]);
    let mut order = started;
    loop {
        t.wait_for_a_run(Duration::from_secs(5)).await;
        let tick = t.tick().await.unwrap();
        assert!(tick.running <= 2, "{tick:?}");
        order.extend(tick.started.iter().map(|k| k.timeperiod.to_string()));
        if tick.started.is_empty() && tick.running == 0 && tick.pending == 0 {
            break;
        }
    }
    let want: Vec<String> = (0..10).map(|h| format!("20261128{h:02}")).collect();
    assert_eq!(order, want, "started oldest first");
    let jobs = bench
        .store
        .list_jobs(&flow_core::JobQuery::default())
        .await
        .unwrap();
    assert!(
        jobs.iter().all(|j| j.state == JobState::Processed),
        "{jobs:?}"
    );
    // A second scheduler starting later creates no Job twice.
    let again = timetable(&bench, vec![flow(&bench, LOAD)], &clock, 2);
    assert_eq!(again.tick().await.unwrap().created, 0);
}
