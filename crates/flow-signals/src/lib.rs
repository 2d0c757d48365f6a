//! What operators see without watching a flow run: the engine, the store
//! and the cloud backends emit [`Signal`]s, and the configured exporters
//! turn them into Prometheus series (`flow serve`'s `/metrics`).
//!
//! How it stays off the steps' path: every producer only queues a signal
//! with a non-blocking send into one bounded queue ([`Emitter`]); a full
//! queue drops the signal and counts it (`flow_signals_dropped_total`).
//! One task ([`Signals::start`]) drains the queue into the exporters. With
//! no exporter configured the caller starts no [`Signals`] at all: the
//! engine gets no [`SignalObserver`], the store is not wrapped and no
//! [`flow_core::meter`] is installed, so nothing is emitted and nothing is
//! paid.
//!
//! The producers:
//! - [`SignalObserver`]: the engine's run observer (runs, steps), wrapping
//!   the caller's own observer;
//! - [`TimedStore`]: a store layer timing the run's writes;
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
//! What this crate is not: an HTTP server (`flow-server` serves
//! `/metrics`), or a place that reads settings (the `flow` CLI decides
//! which exporters run).
#![warn(missing_docs)]

mod metrics;
mod observer;
mod signal;
mod store;

pub use metrics::{Metrics, MetricsRegistry, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
pub use observer::SignalObserver;
pub use signal::{Emitter, RunEnd, Signal};
pub use store::TimedStore;

/// The Prometheus client crate the series are written with, re-exported so
/// a crate adding series uses the same version.
pub use prometheus_client;

use flow_core::FlowStore;
use flow_engine::RunObserver;
use std::sync::Arc;

/// How many signals may wait for the exporters before new ones are
/// dropped.
pub const QUEUE_CAPACITY: usize = 8192;

/// The exporters to feed.
#[derive(Debug, Clone, Default)]
pub struct Exporters {
    /// Prometheus series are kept in this registry (which `/metrics`
    /// shows).
    pub metrics: Option<MetricsRegistry>,
}

impl Exporters {
    /// Whether any exporter is configured (else start no [`Signals`]).
    pub fn any(&self) -> bool {
        self.metrics.is_some()
    }
}

/// The running signal queue and its exporters.
pub struct Signals {
    emitter: Emitter,
}

impl Signals {
    /// Starts the task that drains the queue into `exporters` (on the
    /// current tokio runtime).
    pub fn start(exporters: Exporters) -> Signals {
        let (emitter, mut queue) = Emitter::channel(QUEUE_CAPACITY);
        let metrics = exporters
            .metrics
            .as_ref()
            .map(|registry| Metrics::register(registry, emitter.dropped_counter()));
        tokio::spawn(async move {
            while let Some(signal) = queue.recv().await {
                if let Some(metrics) = &metrics {
                    metrics.record(&signal);
                }
            }
        });
        Signals { emitter }
    }

    /// Where producers send signals.
    pub fn emitter(&self) -> Emitter {
        self.emitter.clone()
    }

    /// A run observer emitting this run's signals, then calling `inner`.
    pub fn observer(&self, inner: Option<Arc<dyn RunObserver>>) -> Arc<dyn RunObserver> {
        Arc::new(SignalObserver::new(self.emitter(), inner))
    }

    /// `store` with its writes timed.
    pub fn store(&self, store: Arc<dyn FlowStore>) -> Arc<dyn FlowStore> {
        Arc::new(TimedStore::new(store, self.emitter()))
    }

    /// Routes the cloud backends' measurements ([`flow_core::meter`]) into
    /// this queue, for the life of the process.
    pub fn install_meter(&self) {
        flow_core::meter::install(Some(Arc::new(signal::QueueMeter(self.emitter()))));
    }
}

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
