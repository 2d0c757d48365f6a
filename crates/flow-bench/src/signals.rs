//! `signals-chain-N`: the chain with every signal exporter on, to show
//! that signals stay off the steps' path (the ratio to `chain-N` is a
//! target of the report).
//!
//! The exporters are started the way `flow run` and `flow serve` start
//! them (flow-cli's `commands/run.rs` and `commands/serve.rs`): a
//! `[[notify]]` webhook on failure and success and `[lineage]`, parsed
//! from settings text like the settings file's, plus `flow serve`'s
//! Prometheus series with its timed store and cloud meter. They post to
//! a loopback HTTP receiver on its own thread that answers 200 to
//! everything, standing in for the receivers a deployment would have.
//! Traces (`[telemetry]`, the `otel` feature) are not exported here: the
//! bench is built without that feature.

use crate::measure::{BenchResult, EngineRun};
use flow_core::lineage::LineageSpec;
use flow_core::notify::NotifySpec;
use flow_core::{FlowGraph, FlowStore};
use flow_signals::{Exporters, LineageConfig, LineageFlow, MetricsRegistry, NotifyConfig, Signals};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The exporters of one run and the receiver they post to.
pub struct Exporting {
    signals: Signals,
    receiver: Receiver,
    /// The store the run writes: the caller's, timed as `flow serve` does.
    pub store: Arc<dyn FlowStore>,
}

/// The settings' exporters, pointed at `url`.
#[derive(serde::Deserialize)]
struct ExporterSettings {
    notify: Vec<NotifySpec>,
    lineage: LineageSpec,
}

/// Where the webhook posts; everything else the receiver gets is lineage.
const WEBHOOK_PATH: &str = "/hook";

/// What the receiver answered, by kind.
#[derive(Default)]
struct Requests {
    webhook: AtomicUsize,
    other: AtomicUsize,
}

fn settings(url: &str) -> Result<ExporterSettings, toml::de::Error> {
    toml::from_str(&format!(
        r#"
        [[notify]]
        kind = "webhook"
        on = ["failure", "success"]
        url = "{url}{WEBHOOK_PATH}"

        [lineage]
        url = "{url}"
        "#
    ))
}

impl Exporting {
    /// Starts the receiver and, on `runtime`, every exporter for `graph`'s
    /// run on `store` with logs under `logs`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        graph: &FlowGraph,
        store: Arc<dyn FlowStore>,
        logs: &Path,
    ) -> BenchResult<Exporting> {
        let receiver = Receiver::start()?;
        let settings = settings(&receiver.url)?;
        let name = graph.name().to_string();
        let exporters = Exporters {
            metrics: Some(MetricsRegistry::default()),
            notify: Some(NotifyConfig {
                global: settings.notify,
                per_flow: [(name.clone(), graph.signals().notify.clone())].into(),
                viewer_url: None,
                store: store.clone(),
                log_directory: Some(logs.to_path_buf()),
            }),
            lineage: Some(LineageConfig {
                spec: settings.lineage,
                flows: [(name, LineageFlow::of(graph))].into(),
                store: store.clone(),
                log_directory: Some(logs.to_path_buf()),
            }),
        };
        let _entered = runtime.enter();
        let signals = Signals::start(exporters);
        signals.install_meter();
        let store = signals.store(store);
        Ok(Exporting {
            signals,
            receiver,
            store,
        })
    }

    /// The engine's run observer: the signals' own.
    pub fn observer(&self) -> Arc<dyn flow_engine::RunObserver> {
        self.signals.observer(None)
    }

    /// Waits, as `flow run` does before it exits, until every signal was
    /// exported and every delivery ended; adds that wait to the run's wall.
    /// Returns the wait and the webhook and lineage requests the receiver
    /// answered, refusing a run whose exporters posted less than the
    /// success webhook and a lineage event per step.
    pub(crate) fn finish(self, run: &mut EngineRun) -> BenchResult<(Duration, usize, usize)> {
        let started = Instant::now();
        run.runtime.block_on(self.signals.finish());
        let flush = started.elapsed();
        run.wall += flush;
        flow_core::meter::install(None);
        let webhook = self.receiver.requests.webhook.load(Ordering::Relaxed);
        let lineage = self.receiver.requests.other.load(Ordering::Relaxed);
        if webhook < 1 || lineage < run.graph.len() {
            return Err(format!(
                "the receiver got {webhook} webhook and {lineage} lineage requests for {} steps: the exporters did not post",
                run.graph.len()
            )
            .into());
        }
        Ok((flush, webhook, lineage))
    }
}

/// A loopback HTTP server on its own thread answering 200 to every
/// request, counting them; stopped when dropped.
struct Receiver {
    url: String,
    requests: Arc<Requests>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start() -> BenchResult<Receiver> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(Requests::default());
        let counted = requests.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
                    let count = match uri.path() {
                        WEBHOOK_PATH => &counted.webhook,
                        _ => &counted.other,
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                    async { axum::http::StatusCode::OK }
                });
                let served = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = served {
                    eprintln!("flow-bench: the loopback receiver stopped: {e}");
                }
            })
        });
        Ok(Receiver {
            url,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::measure::{measure, Setup};
    use crate::Shape;

    /// The shape's exporters reach the receiver: a lineage START and
    /// COMPLETE per step, and the success webhook.
    #[test]
    fn signals_chain_posts_every_event_to_the_receiver() {
        let setup = Setup {
            synchronous: flow_store_sqlite::Synchronous::Normal,
            clusters: None,
            flow_bin: "flow".into(),
            validate_file: None,
            repeat: 1,
            no_logs: false,
            scratch: None,
            mongo_server: None,
        };
        let row = measure(Shape::SignalsChain(5), &setup).unwrap();
        assert_eq!(row.shape, "signals-chain-5");
        assert_eq!(row.details["stored_steps_processed"], 5);
        assert_eq!(row.details["webhook_requests"], 1, "{:?}", row.details);
        assert_eq!(row.details["lineage_requests"], 2 * 5, "{:?}", row.details);
    }
}
