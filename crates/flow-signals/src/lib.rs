//! What operators see without watching a flow run: the engine, the store
//! and the cloud backends emit [`Signal`]s, and the configured exporters
//! turn them into Prometheus series (`flow serve`'s `/metrics`),
//! notifications (`[[notify]]`) and OpenLineage run events (`[lineage]`).
//!
//! How it stays off the steps' path: every producer only queues a signal
//! with a non-blocking send into one bounded queue ([`Emitter`]); a full
//! queue drops the signal and counts it (`flow_signals_dropped_total`).
//! (The store's write timings, two or three a step, update their histogram
//! in place instead.)
//! One thread of its own ([`Signals::start`]), with its own runtime, drains
//! the queue into the exporters and makes their deliveries, so they never
//! take turns with the steps on the run's runtime (`flow run` has one
//! thread). With
//! no exporter configured the caller starts no [`Signals`] at all: the
//! engine gets no [`SignalObserver`], the store is not wrapped and no
//! [`flow_core::meter`] is installed, so nothing is emitted and nothing is
//! paid.
//!
//! The producers:
//! - [`SignalObserver`]: the engine's run observer (runs, steps), wrapping
//!   the caller's own observer;
//! - [`TimedStore`]: a store layer timing the run's writes (straight into
//!   the histogram, not through the queue: see its module);
//! - [`flow_core::meter`]: cloud requests per backend and call, and how
//!   late a cloud job's end was noticed, reported by the cluster crates;
//!   [`Signals::install_meter`] routes them here.
//!
//! # Adding a series to `/metrics`
//!
//! Every series lives in one [`MetricsRegistry`] (clone it freely). A
//! crate with figures of its own (a scheduler's timetable, say) registers
//! its series once, keeps the handles and updates them; `/metrics` shows
//! them at the next scrape:
//!
//! ```
//! use flow_signals::prometheus_client::metrics::gauge::Gauge;
//! use flow_signals::MetricsRegistry;
//!
//! fn register_timetable(registry: &MetricsRegistry) -> Gauge {
//!     let due = Gauge::default();
//!     registry.register("flow_timetable_due", "Timetable entries due now", due.clone());
//!     due
//! }
//!
//! let registry = MetricsRegistry::default();
//! register_timetable(&registry).set(3);
//! assert!(registry.prometheus_text().contains("flow_timetable_due 3"));
//! ```
//!
//! Use the re-exported [`prometheus_client`] so the versions match; the
//! naming rules are on [`MetricsRegistry`].
//!
//! Traces are the `otel` feature's [`otel`] module: flow's `tracing`
//! spans exported over OTLP/HTTP, beside (not through) the queue.
//!
//! What this crate is not: an HTTP server (`flow-server` serves
//! `/metrics`), or a place that reads settings (the `flow` CLI decides
//! which exporters run).
#![warn(missing_docs)]

mod deliver;
mod lineage;
mod metrics;
mod notify;
mod observer;
#[cfg(feature = "otel")]
pub mod otel;
mod record;
mod signal;
mod store;

pub use deliver::{
    deliver, signature, trusted_roots, Outcome, EVENT_HEADER, IDEMPOTENCY_HEADER, SIGNATURE_HEADER,
};
pub use lineage::{
    flow_run_id, step_run_id, LineageConfig, LineageFlow, BATCH_ENDPOINT as LINEAGE_BATCH_ENDPOINT,
    ENDPOINT as LINEAGE_ENDPOINT, PRODUCER as LINEAGE_PRODUCER, RUN_EVENT_SCHEMA,
};
pub use metrics::{Metrics, MetricsRegistry, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
pub use notify::{FailedStep, Notice, NotifyConfig};
pub use observer::SignalObserver;
use signal::Queued;
pub use signal::{Emitter, RunEnd, Signal};
pub use store::TimedStore;

/// The Prometheus client crate the series are written with, re-exported so
/// a crate adding series uses the same version.
pub use prometheus_client;

use flow_core::notify::NotifyEvent;
use flow_core::FlowStore;
use flow_engine::RunObserver;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::Notify;

/// How many signals may wait for the exporters before new ones are
/// dropped.
pub const QUEUE_CAPACITY: usize = 8192;

/// The exporters to feed.
#[derive(Debug, Clone, Default)]
pub struct Exporters {
    /// Prometheus series are kept in this registry (which `/metrics`
    /// shows).
    pub metrics: Option<MetricsRegistry>,
    /// Notifications (`[[notify]]`).
    pub notify: Option<NotifyConfig>,
    /// OpenLineage run events (`[lineage]`).
    pub lineage: Option<LineageConfig>,
}

impl Exporters {
    /// Whether any exporter is configured (else start no [`Signals`]).
    pub fn any(&self) -> bool {
        self.metrics.is_some()
            || self.notify.as_ref().is_some_and(NotifyConfig::any)
            || self.lineage.is_some()
    }
}

/// The running signal queue and its exporters.
pub struct Signals {
    emitter: Emitter,
    /// `/metrics`' series, when they are kept.
    metrics: Option<Metrics>,
}

impl Signals {
    /// Starts the thread that drains the queue into `exporters`, on a
    /// runtime of its own (no caller's runtime is needed or used).
    ///
    /// # Panics
    /// When the thread or its runtime cannot be started (out of threads or
    /// file descriptors at a process's start).
    pub fn start(exporters: Exporters) -> Signals {
        let (emitter, queue) = Emitter::channel(QUEUE_CAPACITY);
        let metrics = exporters
            .metrics
            .as_ref()
            .map(|registry| Metrics::register(registry, emitter.dropped_counter()));
        let notify = exporters.notify.filter(NotifyConfig::any).map(Arc::new);
        let lineage = exporters.lineage.map(lineage::Lineage::new);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the signals' runtime: {e}"));
        // The thread ends when every emitter is gone (the queue closed); a
        // process exiting does not wait for it (`finish` is the wait).
        std::thread::Builder::new()
            .name("flow-signals".to_string())
            .spawn({
                let (metrics, wake) = (metrics.clone(), emitter.wake());
                move || {
                    lower_priority();
                    let exporters = Exporting {
                        http: reqwest::Client::new(),
                        deliveries: Vec::new(),
                        metrics,
                        notify,
                        lineage,
                    };
                    runtime.block_on(drain(queue, wake, exporters));
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the signals' thread: {e}"));
        Signals { emitter, metrics }
    }

    /// Where producers send signals.
    pub fn emitter(&self) -> Emitter {
        self.emitter.clone()
    }

    /// A run observer emitting this run's signals, then calling `inner`.
    pub fn observer(&self, inner: Option<Arc<dyn RunObserver>>) -> Arc<dyn RunObserver> {
        Arc::new(SignalObserver::new(self.emitter(), inner))
    }

    /// `store` with its writes timed into `/metrics` (as it is when no
    /// series are kept).
    pub fn store(&self, store: Arc<dyn FlowStore>) -> Arc<dyn FlowStore> {
        match &self.metrics {
            Some(metrics) => Arc::new(TimedStore::new(store, metrics.clone())),
            None => store,
        }
    }

    /// Waits until every signal emitted so far reached the exporters and
    /// every notification they called for was delivered or gave up (a
    /// `flow run` calls it before it exits). Lineage events still unsent
    /// after one delivery's longest time are given up and counted.
    pub async fn finish(&self) {
        self.emitter.flush().await;
    }

    /// Routes the cloud backends' measurements ([`flow_core::meter`]) into
    /// this queue, for the life of the process.
    pub fn install_meter(&self) {
        flow_core::meter::install(Some(Arc::new(signal::QueueMeter(self.emitter()))));
    }
}

/// Lowers the calling thread's CPU priority (nice +10; threads it starts
/// inherit it): the exporters' work yields to the engine's and the log
/// writer's threads whenever they want a core, and takes the cores they
/// leave idle. On 2 cores a run's own threads keep both busy; exports at
/// equal priority took turns with them and slowed the run. Best effort
/// (a failure leaves the priority as it was); Linux only, where a thread
/// has its own nice value.
pub(crate) fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread's own id has no memory
    // effects; its error is ignored on purpose.
    unsafe {
        let _ = libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

/// How often a busy queue is drained: producers do not wake the
/// exporters' thread for each signal while it is busy (see [`drain`]).
const TICK: Duration = Duration::from_millis(10);

/// Hands every queued signal to the exporters until the queue closes.
///
/// The first signal after a quiet spell wakes the thread; while signals
/// keep coming it takes them every [`TICK`] instead, without a wake-up per
/// signal (a step's start and end each cost the engine's thread one
/// otherwise), and goes back to waiting once a tick brought none. A flush
/// ([`Emitter`]'s) cuts the tick short.
async fn drain(
    mut queue: tokio::sync::mpsc::Receiver<Queued>,
    wake: Arc<Notify>,
    mut exporters: Exporting,
) {
    while let Some(item) = queue.recv().await {
        exporters.handle(item).await;
        loop {
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = wake.notified() => {}
            }
            let mut took = false;
            loop {
                match queue.try_recv() {
                    Ok(item) => {
                        took = true;
                        exporters.handle(item).await;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            if !took {
                break;
            }
        }
    }
}

/// The exporters, fed by [`drain`].
struct Exporting {
    /// One client: its connections are kept alive and shared by every
    /// delivery.
    http: reqwest::Client,
    deliveries: Vec<tokio::task::JoinHandle<()>>,
    metrics: Option<Metrics>,
    notify: Option<Arc<NotifyConfig>>,
    lineage: Option<lineage::Lineage>,
}

impl Exporting {
    /// Exports one signal, or waits for every delivery (a flush).
    async fn handle(&mut self, item: Queued) {
        let Exporting {
            http,
            deliveries,
            metrics,
            notify,
            lineage,
        } = self;
        deliveries.retain(|d| !d.is_finished());
        let signal = match item {
            Queued::Signal(signal) => signal,
            Queued::Flush(done) => {
                let pending = futures_util::future::join_all(deliveries.drain(..));
                tokio::pin!(pending);
                // Lineage events may be many (two a step), each with its
                // retries: the wait for them is bounded, what is left is
                // given up and counted. Notifications bound themselves.
                match lineage {
                    Some(lineage) => {
                        lineage.hurry();
                        if tokio::time::timeout(lineage.exit_wait(), &mut pending)
                            .await
                            .is_err()
                        {
                            lineage.abandon();
                            pending.await;
                        }
                    }
                    None => {
                        pending.await;
                    }
                }
                let _ = done.send(());
                return;
            }
        };
        if let Some(metrics) = metrics {
            metrics.record(&signal);
        }
        if let Some(lineage) = lineage {
            deliveries.extend(lineage.observe(&signal, http).await);
        }
        match (&*notify, &signal) {
            (Some(config), Signal::RunFinished(end)) => {
                deliveries.push(tokio::spawn(notify_run_end(
                    config.clone(),
                    (**end).clone(),
                    http.clone(),
                    metrics.clone(),
                )));
            }
            (
                Some(config),
                Signal::SlaMissed {
                    flow,
                    run,
                    mode,
                    deadline,
                },
            ) => {
                let notice = notify::sla_notice(flow, run, *mode, *deadline, config);
                let sent = send(
                    config.clone(),
                    NotifyEvent::SlaMiss,
                    notice,
                    flow.clone(),
                    Some(run.clone()),
                    http.clone(),
                    metrics.clone(),
                );
                deliveries.push(tokio::spawn(async move {
                    for delivery in sent {
                        let _ = delivery.await;
                    }
                }));
            }
            _ => {}
        }
    }
}

/// Sends the notifications a run's end calls for, each on its own task,
/// and records each outcome.
async fn notify_run_end(
    config: Arc<NotifyConfig>,
    end: RunEnd,
    http: reqwest::Client,
    metrics: Option<Metrics>,
) {
    let events = notify::events(&end, &*config.store).await;
    let mut sent = Vec::new();
    for event in events {
        if !config
            .entries(&end.flow.flow_name)
            .any(|e| e.on().contains(&event))
        {
            continue;
        }
        let notice = notify::notice(event, &end, &config).await;
        sent.extend(send(
            config.clone(),
            event,
            notice,
            end.flow.clone(),
            end.report.as_ref().map(|r| r.run.clone()),
            http.clone(),
            metrics.clone(),
        ));
    }
    for delivery in sent {
        let _ = delivery.await;
    }
}

/// Delivers `notice` to every entry of its flow that is sent on `event`,
/// each on its own task, recording each outcome.
fn send(
    config: Arc<NotifyConfig>,
    event: NotifyEvent,
    notice: Notice,
    key: flow_core::FlowKey,
    run: Option<flow_core::RecordId>,
    http: reqwest::Client,
    metrics: Option<Metrics>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let entries: Vec<(usize, flow_core::notify::NotifySpec)> = config
        .entries(&key.flow_name)
        .enumerate()
        .filter(|(_, e)| e.on().contains(&event))
        .map(|(i, e)| (i + 1, e.clone()))
        .collect();
    entries
        .into_iter()
        .map(|(number, entry)| {
            let (config, notice, http, metrics, run, key) = (
                config.clone(),
                notice.clone(),
                http.clone(),
                metrics.clone(),
                run.clone(),
                key.clone(),
            );
            tokio::spawn(async move {
                let outcome = deliver(&entry, &notice, &http).await;
                if let Some(metrics) = &metrics {
                    metrics.delivered(entry.kind(), outcome.delivered);
                }
                record::outcome(&config, &key, run, number, &entry, &notice, &outcome).await;
            })
        })
        .collect()
}

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
