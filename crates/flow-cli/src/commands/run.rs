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
use flow_core::{ExecutionContext, FlowKey, FlowState, FlowStore, RunMode, Timeperiod};
use flow_engine::{EngineError, EngineOptions, ExecutionEngine, Refusal, RunReport};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub fn run(
    settings_path: Option<&Path>,
    mode: RunMode,
    target: &Target,
    step: Option<&str>,
    window: &Window,
) -> Result<Exit, CliError> {
    // 1. Every input, before anything is opened: the settings, then the
    //    flow with its substitutions checked against them.
    let settings = SettingsFile::load(settings_path)?;
    let values = Arc::new(settings.values()?);
    let graph = Arc::new(load_graph_with(
        &flow_file(&target.flow, &settings)?,
        &values,
    )?);
    let q = Some(graph.time_qualifier());
    let timeperiod = parse_timeperiod("timeperiod", &target.timeperiod, q)?;
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

    // 2. Refusals that need no store: an unknown step always, and, when
    //    there is no store yet, whatever an empty store would refuse (so
    //    none is created for it). The engine's own rules decide.
    let refused = flow_engine::refusal(mode, step, &graph, timeperiod, None, Vec::new())
        .filter(|r| matches!(r, Refusal::UnknownStep { .. }) || !store_plan.exists());
    if let Some(reason) = refused {
        return Err(CliError::bad_input(
            EngineError::Refused { flow: key, reason }.to_string(),
        ));
    }

    // 3. Run.
    crate::logs::init();
    let store = store_plan.open()?;
    // One thread drives the engine: its own work between steps is a few
    // microseconds, and handing tasks between worker threads costs more
    // than that (cross-thread wake-ups doubled the per-step overhead in
    // `cargo xtask bench`). Jobs run in other processes; blocking work in
    // actions goes to tokio's blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    let store_settings = settings.store();
    runtime.block_on(async {
        // Log retention: recorded lines older than `[store] log_retention`
        // go when a run starts (a failure to purge does not stop the run).
        super::logs::purge_old_lines(&store, store_settings.log_retention).await;
        // recover, run-one and run-from keep the stored run's window unless
        // one is given.
        let (start, end) = match (mode, start, end) {
            (RunMode::Nominal, _, _) | (_, Some(_), _) | (_, _, Some(_)) => default_window,
            _ => match store.get_flow(&key).await {
                Ok(Some(flow)) => (flow.start_timeperiod, flow.end_timeperiod),
                _ => default_window,
            },
        };
        let context = ExecutionContext {
            flow_name: graph.name().to_string(),
            timeperiod,
            start_timeperiod: start,
            end_timeperiod: end,
            settings: values.clone(),
            number_of_clusters: clusters,
        };
        let progress = Arc::new(Progress::for_stderr());
        let options = EngineOptions {
            log_directory: Some(log_directory.clone()),
            lease_ttl: settings.lease_ttl(),
            heartbeat_interval: settings.heartbeat_interval(),
            cancel_grace: settings.cancel_grace(),
            observer: Some(progress.clone()),
            record_logs: store_settings.record_logs,
            ..EngineOptions::default()
        };
        let engine = ExecutionEngine::new(graph.clone(), context, store.clone(), factory, options);
        let (result, signalled) = drive(&engine, mode, step, &store, &progress).await?;
        progress.finish();
        let report = match result {
            Ok(report) => report,
            Err(EngineError::LeaseHeld {
                flow,
                owner,
                heartbeat_at,
                ttl,
            }) => {
                return Err(CliError::bad_input(lease_held(
                    &flow,
                    &owner,
                    heartbeat_at,
                    ttl,
                    mode,
                )))
            }
            Err(e @ (EngineError::Refused { .. } | EngineError::Logs { .. })) => {
                return Err(CliError::bad_input(e.to_string()))
            }
            Err(e) => {
                let logs = log_directory.join(graph.name());
                return Err(CliError::failed(format!("{e}\nlogs: {}/", logs.display())));
            }
        };
        let errors = step_errors(&store, &key).await;
        print_summary(&report, &errors, &log_directory, &target.flow);
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

/// Runs the engine until it finishes, reacting to SIGINT and SIGTERM: the
/// first cancels the run (the engine then winds down and reports), the
/// second releases the lease, kills local jobs and exits 130 at once.
/// Returns the engine's result and whether a signal came.
async fn drive(
    engine: &ExecutionEngine,
    mode: RunMode,
    step: Option<&str>,
    store: &Arc<dyn FlowStore>,
    progress: &Progress,
) -> Result<(Result<RunReport, EngineError>, bool), CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind| {
        signal(kind).map_err(|e| CliError::failed(format!("cannot listen for signals: {e}")))
    };
    let mut sigint = listen(SignalKind::interrupt())?;
    let mut sigterm = listen(SignalKind::terminate())?;
    let run = engine.execute(mode, step);
    tokio::pin!(run);
    let mut signalled = false;
    loop {
        tokio::select! {
            result = &mut run => return Ok((result, signalled)),
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

/// The end-of-run summary on stdout: flow state, one line per step run,
/// where the logs are, and what to do next after a failure.
fn print_summary(
    report: &RunReport,
    errors: &HashMap<String, String>,
    log_directory: &Path,
    flow_arg: &str,
) {
    let suffix = if report.canceled { " (cancelled)" } else { "" };
    outln!(
        "flow {} [{}]: {}{suffix}",
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
