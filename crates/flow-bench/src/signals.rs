//! `signals-chain-N`: the chain with every signal exporter on, to show
//! that signals stay off the steps' path (the ratio to `chain-N` is a
//! target of the report), lineage events posted in batches
//! (`[lineage] batch = 100`, to `/api/v1/lineage/batch`);
//! `signals-single-chain-N`: the same with one lineage event per request
//! (no `batch`: Marquez's endpoint).
//!
//! The exporters are started the way `flow run` and `flow serve` start
//! them (flow-cli's `commands/run.rs`, `commands/serve.rs` and
//! `telemetry.rs`): a `[[notify]]` webhook on failure and success and
//! `[lineage]`, parsed from settings text like the settings file's,
//! `flow serve`'s Prometheus series with its timed store and cloud meter,
//! and traces (`[telemetry]`, the `otel` feature): the OTLP/HTTP exporter's
//! layer in the log subscriber and the engine's run tracer. They post to a
//! loopback HTTP receiver on its own thread that answers 200 to
//! everything, standing in for the receivers (and the OTLP collector) a
//! deployment would have.

use crate::measure::{BenchResult, EngineRun, Hooks};
use flow_core::lineage::LineageSpec;
use flow_core::notify::NotifySpec;
use flow_core::{FlowGraph, FlowStore};
use flow_signals::otel::{TraceConfig, Traces};
use flow_signals::{
    Exporters, LineageConfig, LineageFlow, MetricsRegistry, NotifyConfig, Signals,
    LINEAGE_BATCH_ENDPOINT, LINEAGE_ENDPOINT,
};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The exporters of one run and the receiver they post to.
pub struct Exporting {
    signals: Signals,
    traces: Traces,
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

/// Where the webhook posts; everything else the receiver gets is lineage
/// or traces.
const WEBHOOK_PATH: &str = "/hook";
/// Where traces are posted (OTLP/HTTP).
const TRACES_PATH: &str = "/v1/traces";
/// The wait for the last spans' export (`[telemetry] timeout`'s default).
const TRACES_TIMEOUT: Duration = Duration::from_secs(5);

/// `[lineage] batch` of `signals-chain-N`.
const BATCH: usize = 100;

/// What the receiver answered, by kind.
#[derive(Default)]
struct Requests {
    webhook: AtomicUsize,
    traces: AtomicUsize,
    /// Lineage requests, single or batched.
    lineage: AtomicUsize,
    /// Those to the batch endpoint.
    lineage_batches: AtomicUsize,
    /// The lineage events they held.
    lineage_events: AtomicUsize,
    /// Anything else (none expected).
    other: AtomicUsize,
}

/// What the exporters' final wait cost and what the receiver got.
pub(crate) struct Finished {
    /// The wait for the queued signals and their deliveries.
    pub flush: Duration,
    /// The wait for the last spans' export.
    pub traces_flush: Duration,
    pub webhook: usize,
    pub lineage_requests: usize,
    /// Those of them to the batch endpoint.
    pub lineage_batches: usize,
    pub lineage_events: usize,
    pub traces: usize,
}

fn settings(url: &str, batched: bool) -> Result<ExporterSettings, toml::de::Error> {
    let batch = if batched {
        format!("batch = {BATCH}")
    } else {
        String::new()
    };
    toml::from_str(&format!(
        r#"
        [[notify]]
        kind = "webhook"
        on = ["failure", "success"]
        url = "{url}{WEBHOOK_PATH}"

        [lineage]
        url = "{url}"
        {batch}
        "#
    ))
}

impl Exporting {
    /// Starts the receiver and every exporter for `graph`'s run on
    /// `store` with logs under `logs` (on the exporters' own thread, as in
    /// `flow run`), lineage events in batches when `batched`.
    pub fn start(
        graph: &FlowGraph,
        batched: bool,
        store: Arc<dyn FlowStore>,
        logs: &Path,
    ) -> BenchResult<Exporting> {
        let receiver = Receiver::start()?;
        let settings = settings(&receiver.url, batched)?;
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
        let signals = Signals::start(exporters);
        signals.install_meter();
        let store = signals.store(store);
        let traces = Traces::start(&TraceConfig {
            endpoint: receiver.url.clone(),
            headers: Vec::new(),
            service_name: "flow-bench".into(),
            timeout: TRACES_TIMEOUT,
        })?;
        Ok(Exporting {
            signals,
            traces,
            receiver,
            store,
        })
    }

    /// The traces' layer, for the log subscriber.
    pub fn trace_layer(
        &self,
    ) -> Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync> {
        Box::new(self.traces.layer())
    }

    /// The engine's run observer (the signals' own) and run tracer.
    pub(crate) fn hooks(&self) -> Hooks {
        Hooks {
            observer: Some(self.signals.observer(None)),
            tracer: Some(self.traces.tracer()),
        }
    }

    /// Waits, as `flow run` does before it exits, until every signal was
    /// exported and every delivery ended, then for the last spans' export;
    /// adds both waits to the run's wall. Refuses a run whose exporters
    /// posted less than the success webhook, two lineage events per step
    /// (START and COMPLETE) and one export of spans, or anything else.
    pub(crate) fn finish(self, run: &mut EngineRun) -> BenchResult<Finished> {
        let started = Instant::now();
        run.runtime.block_on(self.signals.finish());
        let flush = started.elapsed();
        let started = Instant::now();
        self.traces.shutdown(TRACES_TIMEOUT);
        let traces_flush = started.elapsed();
        run.wall += flush + traces_flush;
        flow_core::meter::install(None);
        let requests = &self.receiver.requests;
        let finished = Finished {
            flush,
            traces_flush,
            webhook: requests.webhook.load(Ordering::Relaxed),
            lineage_requests: requests.lineage.load(Ordering::Relaxed),
            lineage_batches: requests.lineage_batches.load(Ordering::Relaxed),
            lineage_events: requests.lineage_events.load(Ordering::Relaxed),
            traces: requests.traces.load(Ordering::Relaxed),
        };
        let other = requests.other.load(Ordering::Relaxed);
        if finished.webhook < 1
            || finished.lineage_events < 2 * run.graph.len()
            || finished.traces < 1
            || other > 0
        {
            return Err(format!(
                "the receiver got {} webhook, {} lineage ({} events) and {} trace requests and {other} others for {} steps: the exporters did not post as set",
                finished.webhook,
                finished.lineage_requests,
                finished.lineage_events,
                finished.traces,
                run.graph.len()
            )
            .into());
        }
        Ok(finished)
    }
}

/// A loopback HTTP server on its own thread answering 200 to every
/// request, counting them (and the lineage events they hold: one, or a
/// batch's array); stopped when dropped.
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
                let app = axum::Router::new().fallback(
                    move |uri: axum::http::Uri, body: axum::body::Bytes| {
                        let events = match uri.path() {
                            LINEAGE_ENDPOINT => Some(1),
                            LINEAGE_BATCH_ENDPOINT => {
                                counted.lineage_batches.fetch_add(1, Ordering::Relaxed);
                                Some(batch_events(&body))
                            }
                            _ => None,
                        };
                        let count = match (uri.path(), events) {
                            (_, Some(events)) => {
                                counted.lineage_events.fetch_add(events, Ordering::Relaxed);
                                &counted.lineage
                            }
                            (WEBHOOK_PATH, None) => &counted.webhook,
                            (TRACES_PATH, None) => &counted.traces,
                            _ => &counted.other,
                        };
                        count.fetch_add(1, Ordering::Relaxed);
                        async { axum::http::StatusCode::OK }
                    },
                );
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

/// How many events a batch's body holds: the elements of its JSON array
/// (0 for a body that is not one).
fn batch_events(body: &[u8]) -> usize {
    serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(body).map_or(0, |events| events.len())
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

    /// The shapes' exporters reach the receiver: a lineage START and
    /// COMPLETE per step (in batches, or one a request), the success
    /// webhook and the run's spans.
    #[test]
    fn signals_chain_posts_every_event_to_the_receiver() {
        let setup = Setup {
            synchronous: flow_store_sqlite::Synchronous::Normal,
            clusters: None,
            flow_bin: "flow".into(),
            validate_file: None,
            // Each repeat exports its own traces.
            repeat: 2,
            no_logs: false,
            scratch: None,
            mongo_server: None,
        };
        for (name, batched) in [("signals-chain-5", true), ("signals-single-chain-5", false)] {
            let shape: Shape = name.parse().unwrap();
            assert_eq!(shape, Shape::SignalsChain { steps: 5, batched });
            let row = measure(shape, &setup).unwrap();
            assert_eq!(row.shape, name);
            let details = &row.details;
            assert_eq!(details["stored_steps_processed"], 5);
            assert_eq!(details["webhook_requests"], 1, "{details:?}");
            assert_eq!(details["lineage_events"], 2 * 5, "{details:?}");
            let requests = details["lineage_requests"].as_u64().unwrap();
            let batches = details["lineage_batch_requests"].as_u64().unwrap();
            if batched {
                assert!((1..=2 * 5).contains(&requests), "{details:?}");
                assert_eq!(batches, requests, "{details:?}");
            } else {
                assert_eq!((requests, batches), (2 * 5, 0), "{details:?}");
            }
            assert!(details["trace_requests"].as_u64() >= Some(1), "{details:?}");
        }
    }
}
