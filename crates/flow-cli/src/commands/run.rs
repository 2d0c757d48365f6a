//! `flow run`, `recover`, `run-one` and `run-from`: check every input, then
//! open the store, run the engine with live progress, and turn the outcome
//! into a summary and an exit code. Ctrl-C/SIGTERM cancel the run; a second
//! one exits at once.

use super::{flow_file, load_graph_with, parse_timeperiod};
use crate::backends;
use crate::cli::{Target, Window};
use crate::exit::{CliError, Exit};
use crate::progress::Progress;
use crate::settings::SettingsFile;
use flow_core::{
    ClusterFactory, ExecutionContext, FlowGraph, FlowKey, FlowState, FlowStore, RunMode, Timeperiod,
};
use flow_engine::{EngineError, EngineOptions, ExecutionEngine, Refusal, RunReport};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Everything a run needs that can be checked before the store is opened:
/// the settings, the flow (substitutions checked), the timeperiod and its
/// window, the clusters and the store to use. Shared by the run modes and
/// `flow drive`.
pub(super) struct Prepared {
    pub settings: SettingsFile,
    pub values: Arc<flow_core::Settings>,
    pub graph: Arc<FlowGraph>,
    pub key: FlowKey,
    /// The window given, or the timeperiod and the period after it.
    pub default_window: (Timeperiod, Timeperiod),
    /// True when --start-timeperiod or --end-timeperiod was given.
    pub window_given: bool,
    pub clusters: usize,
    pub factory: Arc<dyn ClusterFactory>,
    pub store_plan: backends::StorePlan,
    pub log_directory: PathBuf,
    /// The notifications and lineage events of this run, started with its
    /// engine when any `[[notify]]` entry concerns the flow or `[lineage]`
    /// is set ([`Prepared::finish_signals`]).
    signals: std::sync::OnceLock<flow_signals::Signals>,
    /// Joins the run's span to its trace, when `[telemetry]` exports
    /// traces.
    pub tracer: Option<Arc<dyn flow_engine::RunTracer>>,
}

/// Loads and checks every input of a run of `flow` at `timeperiod`, before
/// anything is opened.
pub(super) fn prepare(
    settings_path: Option<&Path>,
    flow: &str,
    timeperiod: &str,
    window: &Window,
) -> Result<Prepared, CliError> {
    let settings = SettingsFile::load(settings_path)?;
    let values = Arc::new(settings.values()?);
    let graph = Arc::new(load_graph_with(&flow_file(flow, &settings)?, &values)?);
    let q = Some(graph.time_qualifier());
    let timeperiod = parse_timeperiod("timeperiod", timeperiod, q)?;
    let start = window
        .start_timeperiod
        .as_deref()
        .map(|t| parse_timeperiod("start-timeperiod", t, q))
        .transpose()?;
    let end = window
        .end_timeperiod
        .as_deref()
        .map(|t| parse_timeperiod("end-timeperiod", t, q))
        .transpose()?;
    let end_or_next = match end {
        Some(end) => end,
        // Year 9999's last period has no end a timeperiod can hold.
        None => timeperiod
            .checked_next(graph.time_qualifier())
            .map_err(|e| CliError::bad_input(format!("--timeperiod: {e}")))?,
    };
    let default_window = (start.unwrap_or(timeperiod), end_or_next);
    Timeperiod::check_window(default_window.0, default_window.1)
        .map_err(|e| CliError::bad_input(e.to_string()))?;
    let key = FlowKey::new(graph.name(), timeperiod);
    let clusters = window
        .clusters
        .map_or(settings.number_of_clusters(), |n| n.get());
    let factory = backends::cluster_factory(&settings)?;
    let store_plan = backends::plan_store(&settings)?;
    let log_directory = settings.log_directory()?;
    // Logs that cannot be written would be lost while the run reports
    // success: refuse now, before the store is created or opened.
    flow_engine::logging::check_log_directory(&log_directory, graph.name())
        .map_err(|e| CliError::bad_input(e.to_string()))?;
    Ok(Prepared {
        settings,
        values,
        graph,
        key,
        default_window,
        window_given: start.is_some() || end.is_some(),
        clusters,
        factory,
        store_plan,
        log_directory,
        signals: std::sync::OnceLock::new(),
        tracer: None,
    })
}

impl Prepared {
    /// Refusals that need no store: an unknown step always, and, when
    /// there is no store yet, whatever an empty store would refuse (so none
    /// is created for it). The engine's own rules decide.
    pub fn refuse_early(&self, mode: RunMode, step: Option<&str>) -> Result<(), CliError> {
        let refused = flow_engine::refusal(
            mode,
            step,
            &self.graph,
            self.key.timeperiod,
            None,
            Vec::new(),
        )
        .filter(|r| matches!(r, Refusal::UnknownStep { .. }) || !self.store_plan.exists());
        match refused {
            Some(reason) => Err(CliError::bad_input(
                EngineError::Refused {
                    flow: self.key.clone(),
                    reason,
                }
                .to_string(),
            )),
            None => Ok(()),
        }
    }

    /// A freerun mode on a scheduled flow needs its Job finished
    /// ([`flow_engine::timetable::freerun_refusal`]); exit 2 otherwise.
    pub async fn refuse_freerun(&self, store: &Arc<dyn FlowStore>) -> Result<(), CliError> {
        match flow_engine::timetable::freerun_refusal(
            store.as_ref(),
            &self.graph,
            self.key.timeperiod,
        )
        .await
        {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(CliError::bad_input(why)),
            Err(e) => Err(CliError::failed(e.to_string())),
        }
    }

    /// The engine for this run. A nominal run uses the given (or default)
    /// window; the other modes keep the stored run's window unless one is
    /// given.
    pub async fn engine(
        &self,
        store: &Arc<dyn FlowStore>,
        keeps_stored_window: bool,
        observer: Arc<dyn flow_engine::RunObserver>,
    ) -> ExecutionEngine {
        let (start, end) = if !keeps_stored_window || self.window_given {
            self.default_window
        } else {
            match store.get_flow(&self.key).await {
                Ok(Some(flow)) => (flow.start_timeperiod, flow.end_timeperiod),
                _ => self.default_window,
            }
        };
        let context = ExecutionContext {
            flow_name: self.graph.name().to_string(),
            timeperiod: self.key.timeperiod,
            start_timeperiod: start,
            end_timeperiod: end,
            settings: self.values.clone(),
            number_of_clusters: self.clusters,
        };
        let observer = match self.start_signals(store) {
            Some(signals) => signals.observer(Some(observer)),
            None => observer,
        };
        let options = EngineOptions {
            tracer: self.tracer.clone(),
            ..engine_options(&self.settings, &self.log_directory, Some(observer))
        };
        ExecutionEngine::new(
            self.graph.clone(),
            context,
            store.clone(),
            self.factory.clone(),
            options,
        )
    }

    /// Starts the run's notifications when an entry of the settings or of
    /// the flow file exists, and its lineage events when `[lineage]` is set
    /// (else nothing is emitted).
    fn start_signals(&self, store: &Arc<dyn FlowStore>) -> Option<&flow_signals::Signals> {
        let notify = flow_signals::NotifyConfig {
            global: self.settings.notify(),
            per_flow: [(
                self.graph.name().to_string(),
                self.graph.signals().notify.clone(),
            )]
            .into(),
            viewer_url: self.settings.viewer_url().map(str::to_string),
            store: store.clone(),
            log_directory: Some(self.log_directory.clone()),
        };
        let lineage = self
            .settings
            .lineage()
            .map(|spec| flow_signals::LineageConfig {
                spec: spec.clone(),
                flows: [(
                    self.graph.name().to_string(),
                    flow_signals::LineageFlow::of(&self.graph),
                )]
                .into(),
                store: store.clone(),
                log_directory: Some(self.log_directory.clone()),
            });
        let exporters = flow_signals::Exporters {
            notify: Some(notify),
            lineage,
            ..flow_signals::Exporters::default()
        };
        if !exporters.any() {
            return None;
        }
        Some(
            self.signals
                .get_or_init(|| flow_signals::Signals::start(exporters)),
        )
    }

    /// Waits for the run's notifications (delivered or given up) before
    /// the process goes on to exit.
    pub async fn finish_signals(&self) {
        if let Some(signals) = self.signals.get() {
            signals.finish().await;
        }
    }

    /// The message and exit code of an engine error: a held lease, a
    /// refusal or unwritable logs are refused input (2), the rest a failed
    /// flow (1).
    pub fn engine_error(&self, error: EngineError, mode: RunMode) -> CliError {
        match error {
            EngineError::LeaseHeld {
                flow,
                owner,
                heartbeat_at,
                ttl,
            } => CliError::bad_input(lease_held(&flow, &owner, heartbeat_at, ttl, mode)),
            e @ (EngineError::Refused { .. } | EngineError::Logs { .. }) => {
                CliError::bad_input(e.to_string())
            }
            e => {
                let logs = self.log_directory.join(self.graph.name());
                CliError::failed(format!("{e}\nlogs: {}/", logs.display()))
            }
        }
    }
}

/// The engine options the settings give (leases, cancel grace, logs).
pub(super) fn engine_options(
    settings: &SettingsFile,
    log_directory: &Path,
    observer: Option<Arc<dyn flow_engine::RunObserver>>,
) -> EngineOptions {
    EngineOptions {
        log_directory: Some(log_directory.to_path_buf()),
        lease_ttl: settings.lease_ttl(),
        heartbeat_interval: settings.heartbeat_interval(),
        cancel_grace: settings.cancel_grace(),
        observer,
        record_logs: settings.store().record_logs,
        ..EngineOptions::default()
    }
}

/// A current-thread runtime for a run. One thread drives the engine: its
/// own work between steps is a few microseconds, and handing tasks between
/// worker threads costs more than that (cross-thread wake-ups doubled the
/// per-step overhead in `cargo xtask bench`). Jobs run in other processes;
/// blocking work in actions goes to tokio's blocking pool.
pub(super) fn run_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))
}

pub fn run(
    settings_path: Option<&Path>,
    mode: RunMode,
    target: &Target,
    step: Option<&str>,
    window: &Window,
) -> Result<Exit, CliError> {
    // 1. Every input, before anything is opened.
    let mut prepared = prepare(settings_path, &target.flow, &target.timeperiod, window)?;
    // 2. Refusals that need no store.
    prepared.refuse_early(mode, step)?;

    // 3. Run.
    let telemetry = crate::telemetry::Telemetry::start(&prepared.settings)?;
    prepared.tracer = telemetry.tracer();
    crate::logs::init_with(&telemetry);
    let store = prepared.store_plan.open()?;
    let runtime = run_runtime()?;
    let outcome = run_on(&runtime, &prepared, store, mode, step, &target.flow);
    // The run's spans ended with its engine: export them before exiting.
    telemetry.shutdown();
    outcome
}

/// Runs the mode on `runtime` and turns its report into an exit code.
fn run_on(
    runtime: &tokio::runtime::Runtime,
    prepared: &Prepared,
    store: Arc<dyn FlowStore>,
    mode: RunMode,
    step: Option<&str>,
    flow_arg: &str,
) -> Result<Exit, CliError> {
    let key = prepared.key.clone();
    runtime.block_on(async {
        // Log retention: recorded lines older than `[store] log_retention`
        // go when a run starts (a failure to purge does not stop the run).
        super::logs::purge_old_lines(&store, prepared.settings.store().log_retention).await;
        if mode.is_freerun() {
            prepared.refuse_freerun(&store).await?;
        }
        let progress = Arc::new(Progress::for_stderr());
        let engine = prepared
            .engine(&store, mode != RunMode::Nominal, progress.clone())
            .await;
        let (result, signalled) =
            with_signals(&engine, engine.execute(mode, step), &store, &progress).await?;
        progress.finish();
        prepared.finish_signals().await;
        let report = result.map_err(|e| prepared.engine_error(e, mode))?;
        let errors = step_errors(&store, &key).await;
        let usage = run_usage(&store, &report, prepared.settings.prices()).await;
        print_summary(
            &report,
            &errors,
            usage.as_ref(),
            &prepared.log_directory,
            flow_arg,
        );
        Ok(if signalled {
            Exit::Cancelled
        } else if succeeded(&report) && !report.clusters_left_up.is_empty() {
            Exit::ClustersLeftUp
        } else if succeeded(&report) {
            Exit::Success
        } else {
            Exit::FlowFailed
        })
    })
}

/// Awaits `work` (the engine's run), reacting to SIGINT and SIGTERM: the
/// first cancels the run (the engine then winds down and reports), the
/// second releases the lease, kills local jobs and exits 130 at once.
/// Returns `work`'s result and whether a signal came.
pub(super) async fn with_signals<T>(
    engine: &ExecutionEngine,
    work: impl std::future::Future<Output = T>,
    store: &Arc<dyn FlowStore>,
    progress: &Progress,
) -> Result<(T, bool), CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind| {
        signal(kind).map_err(|e| CliError::failed(format!("cannot listen for signals: {e}")))
    };
    let mut sigint = listen(SignalKind::interrupt())?;
    let mut sigterm = listen(SignalKind::terminate())?;
    tokio::pin!(work);
    let mut signalled = false;
    loop {
        tokio::select! {
            result = &mut work => return Ok((result, signalled)),
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        if !signalled {
            signalled = true;
            progress.line("cancelling… (press Ctrl-C again to exit at once)");
            engine.cancel_token().cancel();
        } else {
            progress.finish();
            errln!("exiting at once: releasing the lease and killing local jobs");
            if let Some(lease) = engine.lease() {
                let release = store.release_lease(&lease);
                match tokio::time::timeout(Duration::from_secs(2), release).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => errln!("cannot release the run lease: {e}"),
                    Err(_) => errln!("cannot release the run lease: the store did not answer"),
                }
            }
            flow_cluster_local::kill_all_jobs();
            flow_engine::logging::flush_recordings(Duration::from_secs(2)).await;
            std::process::exit(i32::from(Exit::Interrupted.code()));
        }
    }
}

/// True when every step the run was to run completed and nothing else went
/// wrong. For run-one the flow itself may stay unfinished.
fn succeeded(report: &RunReport) -> bool {
    !report.canceled
        && report.error.is_none()
        && report.steps.iter().all(|(_, state)| state.is_complete())
}

/// The stored error of each failed step, for the summary.
async fn step_errors(store: &Arc<dyn FlowStore>, key: &FlowKey) -> HashMap<String, String> {
    match store.get_steps(key).await {
        Ok(steps) => steps
            .into_iter()
            .filter_map(|s| Some((s.step_name, s.error?)))
            .collect(),
        Err(_) => HashMap::new(),
    }
}

/// What the run's clusters used (none for the local cluster), as its
/// cluster records say; a store that cannot say leaves it out.
async fn run_usage(
    store: &Arc<dyn FlowStore>,
    report: &RunReport,
    prices: Option<&flow_core::PriceTable>,
) -> Option<flow_core::UsageSummary> {
    let clusters = store.list_clusters(Some(&report.flow)).await.ok()?;
    let mine: Vec<_> = clusters.iter().filter(|c| c.run == report.run).collect();
    let usage = flow_core::UsageSummary::of(mine, prices, chrono::Utc::now());
    (!usage.is_empty()).then_some(usage)
}

/// The end-of-run summary on stdout: flow state (and what the run's
/// clusters used), one line per step run, where the logs are, and what to
/// do next after a failure.
fn print_summary(
    report: &RunReport,
    errors: &HashMap<String, String>,
    usage: Option<&flow_core::UsageSummary>,
    log_directory: &Path,
    flow_arg: &str,
) {
    let suffix = if report.canceled { " (cancelled)" } else { "" };
    let used = usage.map_or_else(String::new, |u| format!(", {}", u.text()));
    outln!(
        "flow {} [{}]: {}{suffix}{used}",
        report.flow.flow_name,
        report.flow.timeperiod,
        report.state
    );
    let width = report.steps.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
    for (step, state) in &report.steps {
        match errors.get(step).filter(|_| !state.is_complete()) {
            Some(error) => outln!("  {step:<width$}  {state}  {error}"),
            None => outln!("  {step:<width$}  {state}"),
        }
    }
    if let Some(error) = &report.error {
        outln!("error: {error}");
    }
    for cluster in &report.clusters_left_up {
        outln!("error: cluster not terminated, it may still be up (and billing): {cluster}");
    }
    if !report.clusters_left_up.is_empty() {
        outln!("to retry: flow clusters --terminate-orphans");
    }
    outln!(
        "logs: {}/",
        log_directory.join(&report.flow.flow_name).display()
    );
    // Only after a failure: a run-one or run-from that did its job leaves
    // a failed flow failed, but there is nothing of its own to fix.
    if report.state == FlowState::Invalid && !succeeded(report) {
        outln!(
            "after fixing the cause: flow recover {flow_arg} --timeperiod {}",
            report.flow.timeperiod
        );
    }
}

/// The refusal when another engine holds the lease. After a crash the
/// holder is dead but its lease stays live until it turns stale: say so, and
/// when.
fn lease_held(
    flow: &FlowKey,
    owner: &str,
    heartbeat_at: chrono::DateTime<chrono::Utc>,
    ttl: Duration,
    mode: RunMode,
) -> String {
    let stale_at = chrono::TimeDelta::from_std(ttl)
        .ok()
        .and_then(|ttl| heartbeat_at.checked_add_signed(ttl));
    let when = match stale_at {
        Some(at) => {
            let left = (at - chrono::Utc::now()).to_std().unwrap_or_default();
            format!(
                "at {} (in {}, {} after its last heartbeat)",
                at.format("%Y-%m-%d %H:%M:%SZ"),
                crate::progress::format_duration(left),
                humantime_serde::re::humantime::format_duration(ttl)
            )
        }
        None => format!(
            "{} after its last heartbeat",
            humantime_serde::re::humantime::format_duration(ttl)
        ),
    };
    format!(
        "flow {flow} is already being run by {owner} (last heartbeat {}). If that engine is dead \
         (killed, crashed, its machine down), its lease turns stale {when}; run `flow {}` \
         again then. If it is alive, wait for it or stop it with Ctrl-C or SIGTERM.",
        heartbeat_at.format("%Y-%m-%d %H:%M:%SZ"),
        crate::progress::mode_word(mode),
    )
}
