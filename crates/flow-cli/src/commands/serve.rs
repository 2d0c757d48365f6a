//! `flow serve`: the workflow viewer. Checks every input (settings, token,
//! flow files and their substitutions, address) before it opens the store,
//! then serves until Ctrl-C/SIGTERM, which cancel the runs started from the
//! page and wait for them to wind down; a second signal kills local jobs
//! and exits 130.
//!
//! The server (`flow-server`) knows no backend: [`CliLauncher`] builds its
//! engines with the cluster factory and settings of this program.

use super::{flow_file, hostname, is_path, load_graph_with};
use crate::backends;
use crate::exit::{CliError, Exit};
use crate::settings::SettingsFile;
use async_trait::async_trait;
use flow_core::{ClusterFactory, ExecutionContext};
use flow_engine::{EngineOptions, ExecutionEngine};
use flow_server::{
    CancelBackends, EngineRequest, FlowFile, LaunchError, RunLauncher, Server, ServerError,
    ServerOptions,
};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub fn serve(
    settings_path: Option<&Path>,
    flows: &[String],
    bind: Option<SocketAddr>,
) -> Result<Exit, CliError> {
    // 1. Every input, before anything is opened.
    let settings = SettingsFile::load(settings_path)?;
    let bind = bind.unwrap_or_else(|| settings.serve_bind());
    let token = settings.serve_token()?;
    if !bind.ip().is_loopback() && token.is_none() {
        return Err(CliError::bad_input(
            ServerError::TokenRequired { addr: bind }.to_string(),
        ));
    }
    let files = flow_files(&settings, flows)?;
    if files.is_empty() {
        return Err(CliError::bad_input(format!(
            "no flows to show: name flow files (flow serve FLOW.toml...) or set flows_directory in {}",
            settings.source
        )));
    }
    // Each flow's substitutions are checked against the settings as every
    // run mode checks them: a flow that would fail at run time (a setting
    // not defined, a value not shell-safe, a secret in an argument vector)
    // is refused now, naming file:line:col, not when the page starts it.
    let values = Arc::new(settings.values()?);
    let mut loaded = Vec::with_capacity(files.len());
    for path in &files {
        loaded.push(FlowFile {
            graph: Arc::new(load_graph_with(path, &values)?),
            origin: path.display().to_string(),
        });
    }
    let factory = backends::cluster_factory(&settings)?;
    let store_plan = backends::plan_store(&settings)?;
    let log_directory = settings.log_directory()?;

    // 2. Serve.
    let telemetry = crate::telemetry::Telemetry::start(&settings)?;
    crate::logs::init_with(&telemetry);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    let _entered = runtime.enter();
    let mut store = store_plan.open()?;
    // `/metrics`: the signals of this process's runs, store and cloud
    // calls; notifications and lineage events of the runs started here.
    // With none of them nothing is emitted.
    let metrics = settings
        .serve_metrics()
        .then(flow_signals::MetricsRegistry::default);
    let exporters = flow_signals::Exporters {
        metrics: metrics.clone(),
        notify: Some(flow_signals::NotifyConfig {
            global: settings.notify(),
            per_flow: loaded
                .iter()
                .map(|f| (f.graph.name().to_string(), f.graph.signals().notify.clone()))
                .collect(),
            viewer_url: settings.viewer_url().map(str::to_string),
            store: store.clone(),
            log_directory: Some(log_directory.clone()),
        }),
        lineage: settings.lineage().map(|spec| flow_signals::LineageConfig {
            spec: spec.clone(),
            flows: loaded
                .iter()
                .map(|f| {
                    (
                        f.graph.name().to_string(),
                        flow_signals::LineageFlow::of(&f.graph),
                    )
                })
                .collect(),
            store: store.clone(),
            log_directory: Some(log_directory.clone()),
        }),
    };
    let signals = exporters.any().then(|| {
        let signals = flow_signals::Signals::start(exporters);
        if metrics.is_some() {
            signals.install_meter();
            store = signals.store(store.clone());
        }
        signals
    });
    let store_settings = settings.store();
    let launcher = Arc::new(CliLauncher {
        signals: signals.as_ref().map(flow_signals::Signals::emitter),
        factory,
        values: values.clone(),
        log_directory,
        record_logs: store_settings.record_logs,
        log_retention: store_settings.log_retention,
        lease_ttl: settings.lease_ttl(),
        heartbeat: settings.heartbeat_interval(),
        cancel_grace: settings.cancel_grace(),
        clusters: settings.number_of_clusters(),
        owner: format!("flow-serve-cancel:{}:{}", hostname(), std::process::id()),
        tracer: telemetry.tracer(),
    });
    let names: Vec<String> = loaded.iter().map(|f| f.graph.name().to_string()).collect();
    let mut options = ServerOptions::new(store, loaded);
    options.bind = bind;
    options.token = token;
    options.launcher = Some(launcher);
    options.secrets = values;
    options.lease_ttl = settings.lease_ttl();
    options.metrics = metrics;
    options.prices = settings.prices().cloned();

    let served = runtime.block_on(async move {
        let server = Server::bind(options)
            .await
            .map_err(|e| CliError::bad_input(e.to_string()))?;
        let addr = server.local_addr();
        let shown = if addr.ip().is_unspecified() {
            format!("http://127.0.0.1:{}/", addr.port())
        } else {
            format!("http://{addr}/")
        };
        outln!(
            "flow serve: {shown} ({} flow{}: {})",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        );
        outln!("press Ctrl-C to stop");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let signals = tokio::spawn(watch_signals(stop_tx));
        let result = server
            .run(async move {
                let _ = stop_rx.await;
            })
            .await;
        signals.abort();
        flow_engine::logging::flush();
        result
            .map(|()| Exit::Success)
            .map_err(|e| CliError::failed(e.to_string()))
    });
    // The runs' spans ended with their engines: export them before exiting.
    telemetry.shutdown();
    served
}

/// The first SIGINT/SIGTERM stops the server (which cancels its runs and
/// waits for them); the second kills local jobs and exits 130 at once.
async fn watch_signals(stop: tokio::sync::oneshot::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut sigint), Ok(mut sigterm)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        errln!("warning: cannot listen for signals; stop the server with SIGKILL");
        return;
    };
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    errln!("stopping: cancelling the runs started here (press Ctrl-C again to exit at once)");
    let _ = stop.send(());
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    errln!("exiting at once: killing local jobs");
    flow_cluster_local::kill_all_jobs();
    flow_engine::logging::flush();
    std::process::exit(i32::from(Exit::Interrupted.code()));
}

/// The flow files to show: those named, then every `*.toml` of the flows
/// directory, each once.
fn flow_files(settings: &SettingsFile, args: &[String]) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for arg in args {
        let path = flow_file(arg, settings)?;
        if !path.is_file() {
            let hint = if is_path(arg) {
                ""
            } else {
                " (looked up in the flows directory)"
            };
            return Err(CliError::bad_input(format!(
                "flow file {} does not exist{hint}",
                path.display()
            )));
        }
        files.push(path);
    }
    if let Some(dir) = settings.flows_directory() {
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            CliError::bad_input(format!(
                "cannot read the flows directory {} (flows_directory in {}): {e}",
                dir.display(),
                settings.source
            ))
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        found.sort();
        files.extend(found);
    }
    let mut seen = HashSet::new();
    files.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    Ok(files)
}

/// Builds engines for the server with this program's backends and
/// settings.
struct CliLauncher {
    /// Where run signals go (`/metrics`), if anywhere.
    signals: Option<flow_signals::Emitter>,
    factory: Arc<dyn ClusterFactory>,
    values: Arc<flow_core::Settings>,
    log_directory: PathBuf,
    /// `[store] record_logs`: the viewer reads log lines from the store, so
    /// with it off the page shows none.
    record_logs: bool,
    log_retention: Duration,
    lease_ttl: Duration,
    heartbeat: Duration,
    cancel_grace: Duration,
    clusters: usize,
    owner: String,
    /// Joins each run's span to its trace (`[telemetry]`).
    tracer: Option<Arc<dyn flow_engine::RunTracer>>,
}

#[async_trait]
impl RunLauncher for CliLauncher {
    async fn engine(&self, request: EngineRequest) -> Result<ExecutionEngine, LaunchError> {
        // What `flow run` does before every run.
        super::logs::purge_old_lines(&request.store, self.log_retention).await;
        let context = ExecutionContext {
            flow_name: request.graph.name().to_string(),
            timeperiod: request.timeperiod,
            start_timeperiod: request.start_timeperiod,
            end_timeperiod: request.end_timeperiod,
            settings: self.values.clone(),
            number_of_clusters: self.clusters,
        };
        let options = EngineOptions {
            log_directory: Some(self.log_directory.clone()),
            lease_ttl: self.lease_ttl,
            heartbeat_interval: self.heartbeat,
            cancel_grace: self.cancel_grace,
            observer: Some(match &self.signals {
                Some(emitter) => Arc::new(flow_signals::SignalObserver::new(
                    emitter.clone(),
                    Some(request.observer),
                )),
                None => request.observer,
            }),
            record_logs: self.record_logs,
            tracer: self.tracer.clone(),
            ..EngineOptions::default()
        };
        Ok(ExecutionEngine::new(
            request.graph,
            context,
            request.store,
            self.factory.clone(),
            options,
        ))
    }

    fn cancel_backends(&self) -> CancelBackends {
        CancelBackends {
            factory: self.factory.clone(),
            values: self.values.clone(),
            owner: format!("{}:{:08x}", self.owner, fastrand::u32(..)),
            lease_ttl: self.lease_ttl,
        }
    }
}
