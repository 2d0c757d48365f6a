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
//! layer in the global log subscriber (as `flow run` installs it: a
//! thread's scoped subscriber costs every span and event a lookup) and the
//! engine's run tracer. They post to a loopback HTTP receiver on its own
//! thread that answers 200 to everything, standing in for the receivers
//! (and the OTLP collector) a deployment would have. The receiver and the
//! trace export are the process's, shared by a shape's repeats; each
//! repeat's counts are its own.

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
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The exporters of one run and the receiver they post to.
pub struct Exporting {
    signals: Signals,
    traces: &'static Traces,
    receiver: &'static Receiver,
    /// What the receiver had counted when the run's exporters started.
    before: Counts,
    /// The store the run writes: the caller's, timed as `flow serve` does.
    pub store: Arc<dyn FlowStore>,
}

/// The process's receiver and trace export, and the global subscriber
/// with the traces' layer, made by the first run that exports.
struct Shared {
    receiver: Receiver,
    traces: Traces,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// [`SHARED`], started (and the subscriber installed) on first use.
fn shared() -> BenchResult<&'static Shared> {
    if let Some(shared) = SHARED.get() {
        return Ok(shared);
    }
    let receiver = Receiver::start()?;
    let traces = Traces::start(&TraceConfig {
        endpoint: receiver.url.clone(),
        headers: Vec::new(),
        service_name: "flow-bench".into(),
        timeout: TRACES_TIMEOUT,
    })?;
    let shared = SHARED.get_or_init(|| Shared { receiver, traces });
    if !flow_engine::logging::init_with(Some("warn"), Some(Box::new(shared.traces.layer()))) {
        return Err("a log subscriber without the traces' layer is installed already".into());
    }
    Ok(shared)
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

/// What the receiver answered, by kind, so far.
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

/// [`Requests`] read at one moment.
#[derive(Clone, Copy, Default)]
struct Counts {
    webhook: usize,
    traces: usize,
    lineage: usize,
    lineage_batches: usize,
    lineage_events: usize,
    other: usize,
}

impl Requests {
    fn counts(&self) -> Counts {
        let read = |count: &AtomicUsize| count.load(Ordering::Relaxed);
        Counts {
            webhook: read(&self.webhook),
            traces: read(&self.traces),
            lineage: read(&self.lineage),
            lineage_batches: read(&self.lineage_batches),
            lineage_events: read(&self.lineage_events),
            other: read(&self.other),
        }
    }
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
        let Shared { receiver, traces } = shared()?;
        let before = receiver.requests.counts();
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
        Ok(Exporting {
            signals,
            traces,
            receiver,
            before,
            store,
        })
    }

    /// The engine's run observer (the signals' own) and run tracer.
    pub(crate) fn hooks(&self) -> Hooks {
        Hooks {
            observer: Some(self.signals.observer(None)),
            tracer: Some(self.traces.tracer()),
        }
    }

    /// Waits, as `flow run` does before it exits, until every signal was
    /// exported and every delivery ended, then for the run's spans' export;
    /// adds both waits to the run's wall. Refuses a run whose exporters
    /// posted less than the success webhook, two lineage events per step
    /// (START and COMPLETE) and one export of spans, or anything else.
    pub(crate) fn finish(self, run: &mut EngineRun) -> BenchResult<Finished> {
        let started = Instant::now();
        run.runtime.block_on(self.signals.finish());
        let flush = started.elapsed();
        let started = Instant::now();
        self.traces.flush();
        let traces_flush = started.elapsed();
        run.wall += flush + traces_flush;
        flow_core::meter::install(None);
        let (now, before) = (self.receiver.requests.counts(), self.before);
        let finished = Finished {
            flush,
            traces_flush,
            webhook: now.webhook - before.webhook,
            lineage_requests: now.lineage - before.lineage,
            lineage_batches: now.lineage_batches - before.lineage_batches,
            lineage_events: now.lineage_events - before.lineage_events,
            traces: now.traces - before.traces,
        };
        let other = now.other - before.other;
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
