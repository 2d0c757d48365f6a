//! `flow schedule`: the timetable of [`flow_engine::timetable`] on the
//! settings' store and clusters, until SIGTERM/Ctrl-C (or, with
//! `--until-caught-up`, until no Job can make progress).

use super::run::{engine_options, run_runtime};
use super::{flow_file, hostname, load_graph_with};
use crate::backends;
use crate::exit::{CliError, Exit};
use crate::settings::SettingsFile;
use flow_core::clock::SystemClock;
use flow_core::{ClusterFactory, ExecutionContext, FlowGraph, Timeperiod};
use flow_engine::timetable::{EngineFactory, Timetable, TimetableOptions};
use flow_engine::ExecutionEngine;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The command line's choices.
pub struct Options {
    /// `--concurrency`; `None`: the settings' `[schedule] concurrency`.
    pub concurrency: Option<std::num::NonZeroUsize>,
    pub until_caught_up: bool,
    pub poll: Duration,
}

/// Engines as `flow run` makes them: the period's window, the settings'
/// cluster count, leases and logs.
struct Engines {
    settings: SettingsFile,
    values: Arc<flow_core::Settings>,
    store: Arc<dyn flow_core::FlowStore>,
    factory: Arc<dyn ClusterFactory>,
    log_directory: PathBuf,
    tracer: Option<Arc<dyn flow_engine::RunTracer>>,
}

impl EngineFactory for Engines {
    fn engine(&self, graph: &Arc<FlowGraph>, timeperiod: Timeperiod) -> ExecutionEngine {
        let context = ExecutionContext {
            flow_name: graph.name().to_string(),
            timeperiod,
            start_timeperiod: timeperiod,
            end_timeperiod: timeperiod.next(graph.time_qualifier()),
            settings: self.values.clone(),
            number_of_clusters: self.settings.number_of_clusters(),
        };
        ExecutionEngine::new(
            graph.clone(),
            context,
            self.store.clone(),
            self.factory.clone(),
            flow_engine::EngineOptions {
                tracer: self.tracer.clone(),
                ..engine_options(&self.settings, &self.log_directory, None)
            },
        )
    }
}

pub fn schedule(
    settings_path: Option<&Path>,
    flows: &[String],
    options: Options,
) -> Result<Exit, CliError> {
    let settings = SettingsFile::load(settings_path)?;
    let values = Arc::new(settings.values()?);
    let mut graphs = Vec::new();
    for flow in flows {
        let path = flow_file(flow, &settings)?;
        let graph = load_graph_with(&path, &values)?;
        if graph.schedule().is_none() {
            return Err(CliError::bad_input(format!(
                "{}: flow '{}' has no [schedule] section; flow schedule runs only scheduled flows",
                path.display(),
                graph.name()
            )));
        }
        graphs.push(Arc::new(graph));
    }
    let factory = backends::cluster_factory(&settings)?;
    let store_plan = backends::plan_store(&settings)?;
    let log_directory = settings.log_directory()?;
    for graph in &graphs {
        flow_engine::logging::check_log_directory(&log_directory, graph.name())
            .map_err(|e| CliError::bad_input(e.to_string()))?;
    }
    let owner = format!(
        "flow-schedule:{}:{}:{:08x}",
        hostname(),
        std::process::id(),
        random_u32()
    );
    let concurrency = options
        .concurrency
        .unwrap_or_else(|| settings.schedule_concurrency())
        .get();
    let timetable_options = TimetableOptions {
        owner: owner.clone(),
        concurrency,
        claim_ttl: settings.lease_ttl(),
        heartbeat: settings.heartbeat_interval(),
    };
    let grace = settings.cancel_grace();

    let telemetry = crate::telemetry::Telemetry::start(&settings)?;
    crate::logs::init_with(&telemetry);
    let store = store_plan.open()?;
    let engines = Arc::new(Engines {
        settings,
        values,
        store: store.clone(),
        factory,
        log_directory,
        tracer: telemetry.tracer(),
    });
    let timetable = Timetable::new(
        graphs,
        store,
        Arc::new(SystemClock),
        engines,
        timetable_options,
    )
    .map_err(|e| CliError::bad_input(e.to_string()))?;
    let ended = run_runtime()?.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind| {
            signal(kind).map_err(|e| CliError::failed(format!("cannot listen for signals: {e}")))
        };
        let mut sigint = listen(SignalKind::interrupt())?;
        let mut sigterm = listen(SignalKind::terminate())?;
        errln!("flow schedule: {owner}: running (concurrency {concurrency})");
        loop {
            let tick = match timetable.tick().await {
                Ok(tick) => tick,
                Err(e) => {
                    // A store that does not answer: try again next tick.
                    errln!("warning: the timetable's tick failed: {e}");
                    Default::default()
                }
            };
            for key in &tick.started {
                outln!("started {}@{}", key.process_name, key.timeperiod);
            }
            if options.until_caught_up && tick.pending == 0 && tick.running == 0 {
                outln!("caught up: no Job can make progress");
                return Ok(Exit::Success);
            }
            // Until the next poll, or the moment the next Job falls due.
            let wait = timetable.next_due().map_or(options.poll, |at| {
                (at - chrono::Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .min(options.poll)
            });
            tokio::select! {
                // (Only while runs go: with none it returns at once, and the
                // loop would tick the store without pause.)
                _ = timetable.wait_for_a_run(wait), if timetable.running() > 0 => {}
                _ = tokio::time::sleep(wait), if timetable.running() == 0 => {}
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
            }
        }
        // Stop: start nothing more; running runs get the grace period.
        errln!(
            "flow schedule: stopping; {} run(s) get {} to finish",
            timetable.running(),
            humantime_serde::re::humantime::format_duration(grace)
        );
        let deadline = Instant::now() + grace;
        while timetable.running() > 0 && Instant::now() < deadline {
            tokio::select! {
                _ = timetable.wait_for_a_run(deadline.saturating_duration_since(Instant::now())) => {}
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
            }
        }
        if timetable.running() == 0 {
            return Ok(Exit::Success);
        }
        errln!(
            "flow schedule: cancelling {} run(s) (the next scheduler recovers them)",
            timetable.running()
        );
        timetable.cancel_runs();
        timetable.wait_idle().await;
        Ok(Exit::Cancelled)
    });
    // The runs' spans ended with their engines: export them before exiting.
    telemetry.shutdown();
    ended
}

/// A random number for the owner id (no random-number crate for one).
fn random_u32() -> u32 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32
}
