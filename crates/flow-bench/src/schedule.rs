//! The timetable's figures (`flow schedule`): `catchup-N`, `tick-N` and
//! `due-start`.
//!
//! - `catchup-N`: N missed hourly periods of a 10-step flow of `identity`
//!   steps caught up by the `flow schedule` binary, 8 runs at a time, on
//!   SQLite: the wall time until it says it is caught up.
//! - `tick-N`: the scheduler's work per tick (`Timetable::tick`, in this
//!   process, time moved by hand) on a store holding N finished Jobs of the
//!   flow's earlier hours against one holding none, ticks of the two
//!   alternated so the machine's load falls on both alike: a tick that
//!   starts the one period that just closed, and a tick with nothing due.
//! - `due-start`: how long after a period becomes due (its end plus the
//!   flow's `lag`) its run starts, through the `flow schedule` binary on
//!   the real clock: five flows whose periods fall due a few seconds apart,
//!   each delay read from the run's record.

use crate::measure::{flow_runtime, BenchResult, Setup};
use crate::report::Row;
use chrono::{DateTime, TimeDelta, Utc};
use flow_cluster_local::{LocalClusterFactory, LocalOptions};
use flow_core::clock::SetClock;
use flow_core::{
    ActionRegistry, ExecutionContext, FlowGraph, FlowStore, JobKey, JobState, Settings,
    TimeQualifier, Timeperiod,
};
use flow_engine::timetable::{EngineFactory, Timetable, TimetableOptions};
use flow_engine::{EngineOptions, ExecutionEngine};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Steps of the scheduled flow.
pub const STEPS: usize = 10;

/// Managed runs at once in `catchup-N`.
pub const CATCHUP_CONCURRENCY: usize = 8;

/// Flows of `due-start`, each one period due.
pub const DUE_FLOWS: usize = 5;

/// Measured rounds of `tick-N` (each a tick of both timetables).
const TICK_ROUNDS: usize = 40;

/// An hourly flow of [`STEPS`] chained `identity` steps, scheduled from
/// `earliest` with `lag`.
fn flow_text(name: &str, earliest: Timeperiod, lag: Duration) -> String {
    let mut text = format!(
        "name = \"{name}\"\ntime_qualifier = \"hourly\"\n\n[schedule]\nearliest_timeperiod = \"{earliest}\"\nlag = \"{}ms\"\n",
        lag.as_millis()
    );
    for i in 0..STEPS {
        text.push_str(&format!("\n[[steps]]\nname = \"s{i}\"\n"));
        if i > 0 {
            text.push_str(&format!("depends_on = [\"s{}\"]\n", i - 1));
        }
        text.push_str("main = { action = \"identity\" }\n");
    }
    text
}

/// The settings file of the binary's shapes, in `dir`.
fn settings_file(dir: &Path, setup: &Setup) -> BenchResult<PathBuf> {
    let path = dir.join("flow.toml");
    std::fs::write(
        &path,
        format!(
            "log_directory = \"logs\"\ndata_directory = \"data\"\n\n[store]\nsynchronous = \"{}\"\n\n[cluster]\nroot = \".\"\nwork_dir = \".\"\n",
            crate::measure::synchronous_name(setup.synchronous)
        ),
    )?;
    std::fs::create_dir_all(dir.join("data"))?;
    Ok(path)
}

fn hour(t: DateTime<Utc>) -> Timeperiod {
    Timeperiod::containing(t, TimeQualifier::Hourly)
}

/// Opens the store a `flow` process of `dir` writes, read-only.
fn store_of(dir: &Path) -> BenchResult<rusqlite::Connection> {
    Ok(rusqlite::Connection::open_with_flags(
        dir.join("data").join("flow.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?)
}

fn processed_jobs(conn: &rusqlite::Connection, flow: &str) -> BenchResult<usize> {
    Ok(conn.query_row(
        "SELECT count(*) FROM job WHERE process_name = ?1 AND state = ?2",
        (flow, JobState::Processed.as_str()),
        |r| r.get(0),
    )?)
}

/// `catchup-N`: `flow schedule FLOW --concurrency 8 --until-caught-up`
/// over N closed hours nobody ran.
pub fn catchup(periods: usize, setup: &Setup) -> BenchResult<Row> {
    let dir = setup.workdir()?;
    let dir = dir.path();
    let settings = settings_file(dir, setup)?;
    let now = Utc::now();
    let earliest = hour(now - TimeDelta::hours(periods as i64));
    let name = "catchup";
    std::fs::write(
        dir.join("catchup.toml"),
        flow_text(name, earliest, Duration::ZERO),
    )?;
    let started = Instant::now();
    let out = Command::new(&setup.flow_bin)
        .current_dir(dir)
        .arg("--settings")
        .arg(&settings)
        .args(["schedule", "catchup.toml", "--until-caught-up"])
        .args(["--concurrency", &CATCHUP_CONCURRENCY.to_string()])
        .stdin(Stdio::null())
        .output()?;
    let wall = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "flow schedule exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    // Every closed hour from `earliest` on (one more when the clock passed
    // an hour meanwhile) processed.
    let processed = processed_jobs(&store_of(dir)?, name)?;
    if processed < periods {
        return Err(format!("only {processed} of {periods} Jobs processed").into());
    }
    let mut row = Row::timed(&format!("catchup-{periods}"), processed * STEPS, 0, wall);
    row.detail("jobs_processed", processed);
    row.detail("concurrency", CATCHUP_CONCURRENCY);
    row.detail(
        "runs_per_s",
        processed as f64 / wall.as_secs_f64().max(f64::MIN_POSITIVE),
    );
    row.synchronous = Some(crate::measure::synchronous_name(setup.synchronous).into());
    Ok(row)
}

/// Engines of the scheduled flow on the local cluster, without log files
/// (the runs are not what `tick-N` measures).
struct Engines {
    store: Arc<dyn FlowStore>,
    factory: Arc<LocalClusterFactory>,
}

impl EngineFactory for Engines {
    fn engine(&self, graph: &Arc<FlowGraph>, timeperiod: Timeperiod) -> ExecutionEngine {
        let context = ExecutionContext {
            flow_name: graph.name().to_string(),
            timeperiod,
            start_timeperiod: timeperiod,
            end_timeperiod: timeperiod.next(graph.time_qualifier()),
            settings: Arc::new(Settings::new()),
            number_of_clusters: 1,
        };
        ExecutionEngine::new(
            graph.clone(),
            context,
            self.store.clone(),
            self.factory.clone(),
            EngineOptions::default(),
        )
    }
}

/// One of `tick-N`'s two timetables.
struct Side {
    timetable: Timetable,
    clock: SetClock,
    due_ticks: Vec<Duration>,
    idle_ticks: Vec<Duration>,
}

impl Side {
    /// A timetable of `graph` on a fresh store in `dir` holding `history`
    /// finished Jobs of the hours before the flow's earliest one.
    async fn new(
        dir: &Path,
        graph: &Arc<FlowGraph>,
        history: usize,
        setup: &Setup,
    ) -> BenchResult<Side> {
        std::fs::create_dir_all(dir.join("fs"))?;
        let store: Arc<dyn FlowStore> = Arc::new(SqliteStore::open(
            &dir.join("flow.db"),
            SqliteOptions {
                synchronous: setup.synchronous,
                ..SqliteOptions::default()
            },
        )?);
        let earliest = graph
            .schedule()
            .and_then(|s| s.earliest_timeperiod)
            .ok_or("the flow has no earliest_timeperiod")?;
        let start = earliest.start();
        fill_history(&dir.join("flow.db"), graph.name(), start, history)?;
        // Read back through the store: the rows are as it writes them.
        if history > 0 {
            let key = JobKey::new(
                graph.name(),
                TimeQualifier::Hourly,
                hour(start - TimeDelta::hours(1)),
            );
            if store.get_job(&key).await?.is_none() {
                return Err(format!("the history has no {key}").into());
            }
        }
        let factory = Arc::new(LocalClusterFactory::new(LocalOptions {
            root: dir.join("fs"),
            work_dir: dir.to_path_buf(),
            ..LocalOptions::default()
        }));
        // The earliest hour is due at the first tick.
        let clock = SetClock::new(start + TimeDelta::hours(1));
        let timetable = Timetable::new(
            vec![graph.clone()],
            store.clone(),
            Arc::new(clock.clone()),
            Arc::new(Engines { store, factory }),
            TimetableOptions {
                owner: format!("flow-bench:{}", std::process::id()),
                concurrency: 1,
                claim_ttl: Duration::from_secs(60),
                heartbeat: Duration::from_secs(10),
            },
        )?;
        Ok(Side {
            timetable,
            clock,
            due_ticks: Vec::new(),
            idle_ticks: Vec::new(),
        })
    }

    /// A tick that starts the hour that just closed, its run to the end,
    /// and a tick with nothing due; times both ticks when `measured`.
    async fn round(&mut self, measured: bool) -> BenchResult<()> {
        let started = Instant::now();
        let tick = self.timetable.tick().await?;
        let due = started.elapsed();
        if tick.started.len() != 1 {
            return Err(format!("a due tick started {:?}, not one run", tick.started).into());
        }
        self.timetable.wait_idle().await;
        let started = Instant::now();
        let tick = self.timetable.tick().await?;
        let idle = started.elapsed();
        if !tick.started.is_empty() || tick.created != 0 {
            return Err(format!("an idle tick did something: {tick:?}").into());
        }
        if measured {
            self.due_ticks.push(due);
            self.idle_ticks.push(idle);
        }
        self.clock.advance(Duration::from_secs(3600));
        Ok(())
    }
}

/// `history` finished Jobs of `flow`'s hours before `start` (mostly
/// processed, some noop and skipped, as a history is), written in one
/// transaction beside the store: a Job at a time through the store would
/// take minutes for 100,000.
fn fill_history(db: &Path, flow: &str, start: DateTime<Utc>, history: usize) -> BenchResult<()> {
    let mut conn = rusqlite::Connection::open(db)?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO job (process_name, time_qualifier, timeperiod, state, event_log, \
             number_of_failures, updated_at, depends_on_flows) VALUES (?1, 'hourly', ?2, ?3, ?4, 0, ?5, '[]')",
        )?;
        for i in 0..history {
            let at = start - TimeDelta::hours(i as i64 + 1);
            let state = match i % 50 {
                0 => JobState::Skipped,
                1..=4 => JobState::Noop,
                _ => JobState::Processed,
            };
            let stamp = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let log = serde_json::json!([format!("{stamp} managed run ended {state}")]).to_string();
            insert.execute((flow, hour(at).to_string(), state.as_str(), log, stamp))?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort_unstable();
    d.get(d.len() / 2).copied().unwrap_or_default()
}

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `tick-N`: the ticks of a timetable with N finished Jobs against one
/// with none. The row's wall is the crowded due tick's median.
pub fn tick(history: usize, setup: &Setup) -> BenchResult<Row> {
    flow_engine::logging::init(Some("warn"));
    let dir = setup.workdir()?;
    let dir = dir.path();
    let earliest: Timeperiod = "2026010100".parse()?;
    let graph = Arc::new(ActionRegistry::builtin().parse(
        &flow_text("tick", earliest, Duration::ZERO),
        Path::new("tick.toml"),
    )?);
    let runtime = flow_runtime()?;
    runtime.block_on(async {
        let filled = Instant::now();
        let mut crowded = Side::new(&dir.join("crowded"), &graph, history, setup).await?;
        let fill = filled.elapsed();
        let mut empty = Side::new(&dir.join("empty"), &graph, 0, setup).await?;
        // The first round finds each store's newest Job once.
        crowded.round(false).await?;
        empty.round(false).await?;
        for _ in 0..TICK_ROUNDS {
            crowded.round(true).await?;
            empty.round(true).await?;
        }
        let (due_c, due_e) = (
            median(crowded.due_ticks.clone()),
            median(empty.due_ticks.clone()),
        );
        let (idle_c, idle_e) = (
            median(crowded.idle_ticks.clone()),
            median(empty.idle_ticks.clone()),
        );
        let mut row = Row::timed(&format!("tick-{history}"), 0, 0, due_c);
        row.detail("finished_jobs", history);
        row.detail("due_tick_ms", ms_of(due_c));
        row.detail("due_tick_empty_ms", ms_of(due_e));
        row.detail(
            "due_tick_ratio",
            ms_of(due_c) / ms_of(due_e).max(f64::MIN_POSITIVE),
        );
        row.detail("idle_tick_ms", ms_of(idle_c));
        row.detail("idle_tick_empty_ms", ms_of(idle_e));
        row.detail(
            "idle_tick_ratio",
            ms_of(idle_c) / ms_of(idle_e).max(f64::MIN_POSITIVE),
        );
        row.detail("rounds", TICK_ROUNDS);
        row.detail("history_fill_s", fill.as_secs_f64());
        row.synchronous = Some(crate::measure::synchronous_name(setup.synchronous).into());
        Ok(row)
    })
}

/// `due-start`: [`DUE_FLOWS`] flows whose last closed hour falls due 3 s,
/// 5.2 s, 7.4 s ... after the scheduler starts; the delay of each run's start
/// after its due instant, from the run records.
pub fn due_start(setup: &Setup) -> BenchResult<Row> {
    let dir = setup.workdir()?;
    let dir = dir.path();
    let settings = settings_file(dir, setup)?;
    let now = Utc::now();
    let this_hour = hour(now);
    let period = hour(now - TimeDelta::hours(1));
    let since = now - this_hour.start();
    let mut due = Vec::new();
    let mut files = Vec::new();
    for i in 0..DUE_FLOWS {
        // Due at the end of `period` (the start of this hour) plus lag.
        // 2.2 s apart: the due instants fall at every phase of a 1 s poll.
        let lag = (since + TimeDelta::milliseconds(3000 + 2200 * i as i64)).to_std()?;
        let lag = Duration::from_millis(lag.as_millis() as u64);
        let name = format!("due{i}");
        std::fs::write(
            dir.join(format!("{name}.toml")),
            flow_text(&name, period, lag),
        )?;
        files.push(format!("{name}.toml"));
        due.push((name, this_hour.start() + TimeDelta::from_std(lag)?));
    }
    let mut child = Command::new(&setup.flow_bin)
        .current_dir(dir)
        .arg("--settings")
        .arg(&settings)
        .arg("schedule")
        .args(&files)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let last_due = due.last().map(|(_, t)| *t).unwrap_or(now);
    let deadline = last_due + TimeDelta::seconds(60);
    let result = (|| -> BenchResult<Vec<(String, f64)>> {
        loop {
            if Utc::now() > deadline {
                return Err("the runs did not all finish within a minute of being due".into());
            }
            if let Some(status) = child.try_wait()? {
                return Err(format!("flow schedule exited early: {status}").into());
            }
            if dir.join("data").join("flow.db").exists() {
                let conn = store_of(dir)?;
                let mut done = 0;
                for (name, _) in &due {
                    done += processed_jobs(&conn, name).unwrap_or(0);
                }
                if done == due.len() {
                    let mut delays = Vec::new();
                    for (name, at) in &due {
                        let started: String = conn.query_row(
                            "SELECT started_at FROM flow WHERE flow_name = ?1 AND timeperiod = ?2",
                            (name, period.to_string()),
                            |r| r.get(0),
                        )?;
                        let started = DateTime::parse_from_rfc3339(&started)?.with_timezone(&Utc);
                        let delay = (started - *at).to_std().map_or_else(
                            // Started before it was due: a bug, not a delay.
                            |_| Err(format!("{name} started at {started}, before {at}")),
                            |d| Ok(d.as_secs_f64() * 1e3),
                        )?;
                        delays.push((name.clone(), delay));
                    }
                    return Ok(delays);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })();
    // SIGTERM: the scheduler stops as under systemd.
    // SAFETY: kill(2) on the child this function started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output()?;
    let delays = result.map_err(|e| format!("{e}\n{}", String::from_utf8_lossy(&out.stderr)))?;
    let mut sorted: Vec<f64> = delays.iter().map(|(_, d)| *d).collect();
    sorted.sort_by(f64::total_cmp);
    let max = sorted.last().copied().unwrap_or_default();
    let mut row = Row::timed("due-start", 0, 0, Duration::from_secs_f64(max / 1e3));
    row.detail("delay_max_ms", max);
    row.detail("delay_median_ms", sorted[sorted.len() / 2]);
    row.detail(
        "delays_ms",
        delays
            .iter()
            .map(|(n, d)| (n.clone(), serde_json::Value::from(*d)))
            .collect::<serde_json::Map<_, _>>(),
    );
    Ok(row)
}
