//! Measuring one shape, inside the child process that reports it.

use crate::report::{quantile, Row};
use crate::shape::Shape;
use flow_cluster_local::{LocalClusterFactory, LocalOptions};
use flow_core::{
    ActionRegistry, ExecutionContext, FlowKey, FlowState, FlowStore, Settings, StepState,
    Timeperiod,
};
use flow_engine::{EngineOptions, ExecutionEngine};
use flow_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use std::error::Error;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the measurement may fail with.
pub type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The timeperiod every engine run uses.
pub(crate) const TIMEPERIOD: &str = "2026112800";

/// Runs of each CLI command; the row reports their median.
pub const CLI_RUNS: usize = 20;

/// How a child measures: the knobs from the command line.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The SQLite `synchronous` setting of the stores.
    pub synchronous: Synchronous,
    /// Overrides the shape's default number of clusters.
    pub clusters: Option<usize>,
    /// The `flow` binary, for the CLI shapes.
    pub flow_bin: PathBuf,
    /// The file `flow validate` checks; a small generated one when `None`.
    pub validate_file: Option<PathBuf>,
    /// Runs of each engine and load shape; the row is the median run.
    pub repeat: usize,
    /// Run without log files: for diagnosis only, the table's figures
    /// always include logging.
    pub no_logs: bool,
    /// Where working directories go; kept, so deleting one run's files
    /// cannot slow the next run's file creation. `None`: temporary
    /// directories deleted after each run.
    pub scratch: Option<PathBuf>,
    /// `--mongo-server`: the server of [`crate::mongo::servers`] a MongoDB
    /// shape runs on (the parent runs one child per server).
    pub mongo_server: Option<String>,
}

/// A working directory: temporary, or kept under [`Setup::scratch`].
pub enum Workdir {
    /// A temporary directory, deleted when dropped.
    Temp(tempfile::TempDir),
    /// A directory under the scratch directory, kept.
    Kept(PathBuf),
}

impl Workdir {
    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Workdir::Temp(dir) => dir.path(),
            Workdir::Kept(dir) => dir,
        }
    }
}

impl Setup {
    /// A fresh working directory for one run.
    pub fn workdir(&self) -> std::io::Result<Workdir> {
        match &self.scratch {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let dir = tempfile::Builder::new().prefix("run-").tempdir_in(dir)?;
                Ok(Workdir::Kept(dir.keep()))
            }
            None => tempfile::tempdir().map(Workdir::Temp),
        }
    }
}

/// `normal` or `full`.
pub fn synchronous_name(s: Synchronous) -> &'static str {
    match s {
        Synchronous::Full => "full",
        _ => "normal",
    }
}

/// Parses `normal` or `full`.
pub fn parse_synchronous(text: &str) -> Result<Synchronous, String> {
    match text.to_ascii_lowercase().as_str() {
        "normal" => Ok(Synchronous::Normal),
        "full" => Ok(Synchronous::Full),
        _ => Err(format!("--synchronous takes normal or full, not '{text}'")),
    }
}

/// Measures `shape` and returns its row, with this process's peak RSS
/// (over every repeat, each on a fresh store and directory).
pub fn measure(shape: Shape, setup: &Setup) -> BenchResult<Row> {
    let once = || match shape {
        Shape::Load(_) => load(shape, setup),
        _ => run_engine(shape, setup),
    };
    let mut row = match shape {
        // Once: the crowded database takes long to fill.
        Shape::MongoChain { .. } => {
            let server = setup
                .mongo_server
                .as_deref()
                .ok_or("a MongoDB shape needs --mongo-server NAME")?;
            crate::mongo::measure(shape, setup, server)?
        }
        Shape::Chain(_)
        | Shape::RecordedChain(_)
        | Shape::SignalsChain { .. }
        | Shape::Fanout(_)
        | Shape::Lattice { .. }
        | Shape::Load(_) => {
            let mut rows = (0..setup.repeat.max(1))
                .map(|_| once())
                .collect::<BenchResult<Vec<_>>>()?;
            let walls: Vec<f64> = rows.iter().map(|r| r.wall_ms).collect();
            rows.sort_by(|a, b| a.wall_ms.total_cmp(&b.wall_ms));
            let mut row = rows.swap_remove(rows.len() / 2);
            row.detail("repeats_wall_ms", walls);
            row
        }
        // Once: a catch-up takes long, and the other two measure many
        // ticks or runs each.
        Shape::Tick(jobs) => crate::schedule::tick(jobs, setup)?,
        Shape::Catchup(periods) => {
            let mut row = crate::schedule::catchup(periods, setup)?;
            row.peak_rss_mb = children_peak_rss_mb();
            return Ok(row);
        }
        Shape::DueStart => {
            let mut row = crate::schedule::due_start(setup)?;
            row.peak_rss_mb = children_peak_rss_mb();
            return Ok(row);
        }
        Shape::DataprocSlots(_) => return crate::slots::measure(shape),
        Shape::CliVersion => return cli(shape, &setup.flow_bin, &["--version".into()]),
        Shape::CliValidate => {
            let dir = setup.workdir()?;
            let file = match &setup.validate_file {
                Some(f) => f.clone(),
                None => small_flow_file(dir.path())?,
            };
            let mut row = cli(
                shape,
                &setup.flow_bin,
                &["validate".into(), file.display().to_string()],
            )?;
            row.detail("file", file.display().to_string());
            return Ok(row);
        }
    };
    row.peak_rss_mb = peak_rss_mb();
    Ok(row)
}

/// One engine run of a shape's flow: what the SQLite and MongoDB
/// measurements share.
pub(crate) struct EngineRun {
    pub graph: Arc<flow_core::FlowGraph>,
    pub timeperiod: Timeperiod,
    pub report: flow_engine::RunReport,
    pub wall: Duration,
    /// Where the log files went.
    pub logs: PathBuf,
    /// The runtime the run used (the store's clients live on it).
    pub runtime: tokio::runtime::Runtime,
}

/// What `flow run` hands the engine when signals are exported: its run
/// observer and the tracer joining its run span to a trace.
#[derive(Default)]
pub(crate) struct Hooks {
    pub observer: Option<Arc<dyn flow_engine::RunObserver>>,
    pub tracer: Option<Arc<dyn flow_engine::RunTracer>>,
}

/// Runs the shape's flow of identity actions on `store` and the real local
/// cluster, with log files under `dir`, on the current-thread runtime
/// `flow` uses, with `hooks` (as `flow run` passes its signals'); fails
/// unless every step ended processed.
pub(crate) fn engine_run(
    shape: Shape,
    setup: &Setup,
    dir: &Path,
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn FlowStore>,
    hooks: Hooks,
) -> BenchResult<EngineRun> {
    let clusters = setup.clusters.unwrap_or(shape.default_clusters()).max(1);
    let graph = Arc::new(shape.definition().build()?);
    let (root, work) = (dir.join("fs"), dir.join("work"));
    std::fs::create_dir_all(&root)?;
    std::fs::create_dir_all(&work)?;
    let factory = Arc::new(LocalClusterFactory::new(LocalOptions {
        root,
        work_dir: work,
        ..LocalOptions::default()
    }));
    let timeperiod: Timeperiod = TIMEPERIOD.parse()?;
    let context = ExecutionContext {
        flow_name: graph.name().to_string(),
        timeperiod,
        start_timeperiod: timeperiod,
        end_timeperiod: timeperiod.next(graph.time_qualifier()),
        settings: Arc::new(Settings::new()),
        number_of_clusters: clusters,
    };
    let logs = dir.join("logs");
    let options = EngineOptions {
        log_directory: (!setup.no_logs).then(|| logs.clone()),
        record_logs: matches!(shape, Shape::RecordedChain(_)),
        observer: hooks.observer,
        tracer: hooks.tracer,
        ..EngineOptions::default()
    };
    let engine = ExecutionEngine::new(graph.clone(), context, store, factory, options);

    let started = Instant::now();
    let report = runtime.block_on(engine.run())?;
    let wall = started.elapsed();

    if report.state != FlowState::Processed {
        return Err(format!("{shape}: flow ended {} ({:?})", report.state, report.error).into());
    }
    let processed = report
        .steps
        .iter()
        .filter(|(_, s)| *s == StepState::Processed)
        .count();
    if processed != graph.len() {
        return Err(format!("{shape}: {processed} of {} steps processed", graph.len()).into());
    }
    Ok(EngineRun {
        graph,
        timeperiod,
        report,
        wall,
        logs,
        runtime,
    })
}

/// The runtime `flow` itself uses (see flow-cli's run command).
pub(crate) fn flow_runtime() -> BenchResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

impl EngineRun {
    /// The row of the run: wall, clusters, dependant latencies.
    pub(crate) fn row(&self, shape: &str) -> Row {
        let mut latencies = self.report.metrics.dependant_latencies.clone();
        latencies.sort_unstable();
        let us = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
        let mut row = Row::timed(
            shape,
            self.graph.len(),
            self.report.clusters_launched,
            self.wall,
        );
        row.dependant_latency_p50_us = us(quantile(&latencies, 0.5));
        row.dependant_latency_p99_us = us(quantile(&latencies, 0.99));
        row.detail(
            "engine_wall_ms",
            self.report.metrics.wall.as_secs_f64() * 1e3,
        );
        row.detail("dependant_latency_max_us", us(latencies.last().copied()));
        row.detail("dependant_latency_samples", latencies.len());
        row.detail("graph_visits", self.report.metrics.graph_visits);
        row
    }
}

/// Runs the shape's flow of identity actions on the real SQLite store and
/// local cluster, with log files, on the current-thread runtime `flow` uses.
fn run_engine(shape: Shape, setup: &Setup) -> BenchResult<Row> {
    let dir = setup.workdir()?;
    let db = dir.path().join("flow.db");
    let store = Arc::new(SqliteStore::open(
        &db,
        SqliteOptions {
            synchronous: setup.synchronous,
            ..SqliteOptions::default()
        },
    )?);
    let recorded = matches!(shape, Shape::RecordedChain(_));
    let runtime = flow_runtime()?;
    // signals-chain-N: the run's exporters, started as `flow run` and
    // `flow serve` start them; their flush is part of the run's wall.
    let exporting = match shape {
        Shape::SignalsChain { batched, .. } => Some(crate::signals::Exporting::start(
            &shape.definition().build()?,
            batched,
            store.clone(),
            &dir.path().join("logs"),
        )?),
        _ => None,
    };
    // The log subscriber `flow run` installs (with traces exported, the
    // exporters installed it with their layer).
    if exporting.is_none() {
        flow_engine::logging::init(Some("warn"));
    }
    let (run_store, hooks): (Arc<dyn FlowStore>, _) = match &exporting {
        Some(e) => (e.store.clone(), e.hooks()),
        None => (store.clone(), Hooks::default()),
    };
    let mut run = engine_run(shape, setup, dir.path(), runtime, run_store, hooks)?;
    let signals_detail = match exporting {
        Some(exporting) => Some(exporting.finish(&mut run)?),
        None => None,
    };
    let (graph, timeperiod, runtime, logs) = (&run.graph, run.timeperiod, &run.runtime, &run.logs);

    // Every step's final state is in the database file (read with a fresh
    // connection, after the store is closed).
    let key = FlowKey::new(graph.name(), timeperiod);
    let by_key = runtime.block_on(store.get_steps(&key))?;
    let by_key = by_key
        .iter()
        .filter(|s| s.state == StepState::Processed)
        .count();
    drop(store);
    let conn = rusqlite::Connection::open(&db)?;
    let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let stored: usize = conn.query_row(
        "SELECT count(*) FROM step WHERE flow_name = ?1 AND state = ?2",
        (graph.name(), StepState::Processed.as_str()),
        |r| r.get(0),
    )?;
    if stored != graph.len() {
        return Err(format!(
            "{shape}: the database holds {stored} of {} steps as processed",
            graph.len()
        )
        .into());
    }
    if by_key != graph.len() {
        eprintln!(
            "flow-bench: {shape}: warning: store.get_steps([{}, {timeperiod}]) finds {by_key} of {} processed steps \
             (the step records carry another timeperiod)",
            graph.name(),
            graph.len()
        );
    }

    let mut row = run.row(&shape.to_string());
    row.synchronous = Some(synchronous_name(setup.synchronous).into());
    if let Some(finished) = signals_detail {
        row.detail("signals_flush_ms", finished.flush.as_secs_f64() * 1e3);
        row.detail("traces_flush_ms", finished.traces_flush.as_secs_f64() * 1e3);
        row.detail("webhook_requests", finished.webhook);
        row.detail("lineage_requests", finished.lineage_requests);
        row.detail("lineage_batch_requests", finished.lineage_batches);
        row.detail("lineage_events", finished.lineage_events);
        row.detail("trace_requests", finished.traces);
    }
    row.detail("stored_steps_processed", stored);
    if recorded {
        // Every line of the log files is in the store when the run returns.
        let conn = rusqlite::Connection::open(&db)?;
        let lines: usize = conn.query_row("SELECT count(*) FROM log", [], |r| r.get(0))?;
        if lines < graph.len() {
            return Err(format!(
                "{shape}: only {lines} log lines recorded for {} steps",
                graph.len()
            )
            .into());
        }
        row.detail("recorded_log_lines", lines);
    }
    row.detail("get_steps_processed", by_key);
    row.detail("journal_mode", journal_mode);
    row.detail("log_files", count_files(logs));
    if setup.no_logs {
        row.note = Some("no log files (diagnosis)".into());
    }
    Ok(row)
}

/// Writes the shape's flow file, then times `load_file` (parse + validate).
fn load(shape: Shape, setup: &Setup) -> BenchResult<Row> {
    let dir = setup.workdir()?;
    let path = dir.path().join(format!("{}.toml", shape.flow_name()));
    let mut out = BufWriter::new(std::fs::File::create(&path)?);
    shape.write_flow_file(&mut out)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let file_bytes = std::fs::metadata(&path)?.len();
    let rss_before = rss_mb("VmRSS:");

    let started = Instant::now();
    let graph = ActionRegistry::builtin().load_file(&path)?;
    let wall = started.elapsed();
    // Resident while the graph lives; the peak minus this is transient.
    let resident = rss_mb("VmRSS:");
    // SAFETY: malloc_trim only returns free heap memory to the system.
    unsafe { libc::malloc_trim(0) };
    let trimmed = rss_mb("VmRSS:");
    if graph.len() != shape.len() {
        return Err(format!("{shape}: loaded {} steps", graph.len()).into());
    }
    let mut row = Row::timed(&shape.to_string(), graph.len(), 0, wall);
    let edges: usize = (0..graph.len()).map(|i| graph.dependencies(i).len()).sum();
    row.detail("file_mb", file_bytes as f64 / 1e6);
    row.detail("rss_with_graph_mb", resident);
    row.detail("rss_with_graph_after_malloc_trim_mb", trimmed);
    row.detail("rss_before_load_mb", rss_before);
    row.detail("edges", edges);
    Ok(row)
}

/// Times `flow ARGS` [`CLI_RUNS`] times after one warm-up run; the row has
/// the median, and the largest child's peak RSS.
fn cli(shape: Shape, flow: &Path, args: &[String]) -> BenchResult<Row> {
    let run = || -> BenchResult<Duration> {
        let started = Instant::now();
        let out = Command::new(flow)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        let wall = started.elapsed();
        if !out.status.success() {
            return Err(format!(
                "{} {}: {}\n{}",
                flow.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(wall)
    };
    run()?;
    let mut walls = (0..CLI_RUNS)
        .map(|_| run())
        .collect::<BenchResult<Vec<_>>>()?;
    walls.sort_unstable();
    let median = (walls[(CLI_RUNS - 1) / 2] + walls[CLI_RUNS / 2]) / 2;
    let mut row = Row::timed(&shape.to_string(), 0, 0, median);
    row.peak_rss_mb = children_peak_rss_mb();
    row.detail("runs", CLI_RUNS);
    row.detail("min_ms", walls[0].as_secs_f64() * 1e3);
    row.detail("max_ms", walls[CLI_RUNS - 1].as_secs_f64() * 1e3);
    Ok(row)
}

/// A three-step flow file in `dir`, for `flow validate`.
fn small_flow_file(dir: &Path) -> BenchResult<PathBuf> {
    let path = dir.join("hello.toml");
    let mut out = std::fs::File::create(&path)?;
    Shape::Chain(3).write_flow_file(&mut out)?;
    out.flush()?;
    Ok(path)
}

/// This process's peak resident set (`VmHWM`), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    rss_mb("VmHWM:")
}

/// A `/proc/self/status` memory line (`VmHWM:`, `VmRSS:`), in MB.
fn rss_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The largest peak resident set among this process's waited-for children.
fn children_peak_rss_mb() -> Option<f64> {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    (rc == 0).then(|| usage.ru_maxrss as f64 / 1024.0)
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}
