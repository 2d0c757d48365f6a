//! The Prometheus series: [`MetricsRegistry`] (where series live, and where
//! other crates add theirs) and [`Metrics`] (the engine's series, fed from
//! the signal queue).

use crate::signal::Signal;
use prometheus_client::encoding::text::encode_registry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The content type of [`MetricsRegistry::openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`MetricsRegistry::prometheus_text`].
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A registry of series, shared by every part of the process that exports
/// some (clone it freely). Register a series once, keep its handle, update
/// the handle:
///
/// ```
/// use flow_signals::prometheus_client::metrics::counter::Counter;
/// use flow_signals::MetricsRegistry;
///
/// let registry = MetricsRegistry::default();
/// let ticks = Counter::<u64>::default();
/// registry.register("flow_scheduler_ticks", "Scheduler ticks", ticks.clone());
/// ticks.inc();
/// assert!(registry.prometheus_text().contains("flow_scheduler_ticks_total 1"));
/// ```
///
/// Names start with `flow_`; a counter's name leaves out `_total` (the
/// exposition adds it); labels are few and bounded (flow names, states,
/// calls: never run ids or timeperiods).
#[derive(Clone, Default)]
pub struct MetricsRegistry(Arc<Mutex<Registry>>);

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRegistry")
    }
}

impl MetricsRegistry {
    /// Adds a series (a metric or a labelled family of them).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// The OpenMetrics text exposition (what Prometheus asks for first).
    pub fn openmetrics(&self) -> String {
        let mut text = self.registry_text();
        text.push_str("# EOF\n");
        text
    }

    /// The classic Prometheus text exposition (version 0.0.4), for scrapers
    /// and tools that do not speak OpenMetrics (`promtool check metrics`):
    /// the OpenMetrics text with each counter's family named like its
    /// samples (`NAME_total`) and no `# EOF`.
    pub fn prometheus_text(&self) -> String {
        let text = self.registry_text();
        let counters: std::collections::HashSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(text.len() + counters.len() * 12);
        for line in text.lines() {
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
                let rest = line.strip_prefix(prefix)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(name)
                    .then(|| format!("{prefix}{name}_total {tail}"))
            });
            match renamed {
                Some(line) => out.push_str(&line),
                None if line.starts_with("# UNIT ") => continue,
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    fn registry_text(&self) -> String {
        let mut text = String::new();
        let registry = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut text, &registry);
        text
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    flow: String,
    mode: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunDurationLabels {
    flow: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    flow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    flow: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloudLabels {
    backend: String,
    call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    kind: String,
    outcome: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Durations of runs and steps: 10 ms to about 12 hours.
fn work_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 12))
}

/// How late a job's end is noticed: 0.1 s to about 7 minutes.
fn notice_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 13))
}

/// A store write: 0.1 ms to about 26 s.
fn write_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// The engine's series (names in the book's signals page).
#[derive(Clone)]
pub struct Metrics {
    runs: Family<RunLabels, Counter>,
    runs_running: Family<FlowLabels, Gauge>,
    run_seconds: Histograms<RunDurationLabels>,
    steps: Family<StepLabels, Counter>,
    steps_running: Family<FlowLabels, Gauge>,
    step_seconds: Histograms<FlowLabels>,
    cloud_requests: Family<CloudLabels, Counter>,
    notice_delay: Histograms<BackendLabels>,
    deliveries: Family<DeliveryLabels, Counter>,
    store_writes: Histograms<CallLabels>,
}

/// The number of dropped signals, read at each scrape.
#[derive(Debug)]
struct Dropped(Arc<AtomicU64>);

impl prometheus_client::encoding::EncodeMetric for Dropped {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
            &self.0.load(Ordering::Relaxed),
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Counter
    }
}

impl Metrics {
    /// Registers the engine's series in `registry`; `dropped` is the
    /// queue's count of dropped signals.
    pub(crate) fn register(registry: &MetricsRegistry, dropped: Arc<AtomicU64>) -> Metrics {
        let metrics = Metrics {
            runs: Family::default(),
            runs_running: Family::default(),
            run_seconds: Family::new_with_constructor(work_seconds),
            steps: Family::default(),
            steps_running: Family::default(),
            step_seconds: Family::new_with_constructor(work_seconds),
            cloud_requests: Family::default(),
            notice_delay: Family::new_with_constructor(notice_seconds),
            deliveries: Family::default(),
            store_writes: Family::new_with_constructor(write_seconds),
        };
        let r = registry;
        r.register(
            "flow_runs",
            "Run modes ended, by flow, mode and final flow state (error: stopped without a report)",
            metrics.runs.clone(),
        );
        r.register(
            "flow_runs_running",
            "Run modes going on now, by flow",
            metrics.runs_running.clone(),
        );
        r.register(
            "flow_run_duration_seconds",
            "Wall time of run modes, by flow and mode",
            metrics.run_seconds.clone(),
        );
        r.register(
            "flow_steps",
            "Steps ended, by flow and final step state",
            metrics.steps.clone(),
        );
        r.register(
            "flow_steps_running",
            "Steps going on now, by flow",
            metrics.steps_running.clone(),
        );
        r.register(
            "flow_step_duration_seconds",
            "Wall time of steps, by flow",
            metrics.step_seconds.clone(),
        );
        r.register(
            "flow_cloud_requests",
            "Requests to cloud APIs, by backend and call",
            metrics.cloud_requests.clone(),
        );
        r.register(
            "flow_cloud_job_notice_delay_seconds",
            "How long after a cloud job ended its end was noticed, by backend",
            metrics.notice_delay.clone(),
        );
        r.register(
            "flow_notifications",
            "Notification deliveries, by kind and outcome (delivered, failed)",
            metrics.deliveries.clone(),
        );
        r.register(
            "flow_store_write_duration_seconds",
            "Latency of the store's writes, by call",
            metrics.store_writes.clone(),
        );
        r.register(
            "flow_signals_dropped",
            "Signals dropped because the exporters' queue was full",
            Dropped(dropped),
        );
        metrics
    }

    /// Counts one notification delivery.
    pub(crate) fn delivered(&self, kind: &str, delivered: bool) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                kind: kind.to_string(),
                outcome: if delivered { "delivered" } else { "failed" }.to_string(),
            })
            .inc();
    }

    /// Updates the series a signal concerns.
    /// Observes one store write of `call` (from [`crate::TimedStore`], on
    /// the writer's own thread: an atomic update, no queued signal).
    pub(crate) fn store_write(&self, call: &'static str, elapsed: std::time::Duration) {
        self.store_writes
            .get_or_create(&CallLabels {
                call: call.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn record(&self, signal: &Signal) {
        match signal {
            Signal::RunStarted { flow, .. } => {
                self.runs_running
                    .get_or_create(&FlowLabels {
                        flow: flow.flow_name.clone(),
                    })
                    .inc();
            }
            Signal::StepStarted { flow, .. } => {
                self.steps_running
                    .get_or_create(&FlowLabels {
                        flow: flow.flow_name.clone(),
                    })
                    .inc();
            }
            Signal::StepFinished {
                flow,
                state,
                elapsed,
                ..
            } => {
                let flow = &flow.flow_name;
                self.steps_running
                    .get_or_create(&FlowLabels { flow: flow.clone() })
                    .dec();
                self.steps
                    .get_or_create(&StepLabels {
                        flow: flow.clone(),
                        state: state.as_str().to_string(),
                    })
                    .inc();
                self.step_seconds
                    .get_or_create(&FlowLabels { flow: flow.clone() })
                    .observe(elapsed.as_secs_f64());
            }
            Signal::RunFinished(end) => {
                let flow = end.flow.flow_name.clone();
                let mode = end.mode.as_str().to_string();
                self.runs
                    .get_or_create(&RunLabels {
                        flow: flow.clone(),
                        mode: mode.clone(),
                        state: end.state_label().to_string(),
                    })
                    .inc();
                if end.started {
                    self.runs_running
                        .get_or_create(&FlowLabels { flow: flow.clone() })
                        .dec();
                }
                if let Some(report) = &end.report {
                    self.run_seconds
                        .get_or_create(&RunDurationLabels { flow, mode })
                        .observe(report.metrics.wall.as_secs_f64());
                }
            }
            Signal::CloudRequest { backend, call } => {
                self.cloud_requests
                    .get_or_create(&CloudLabels {
                        backend: backend.clone(),
                        call: call.clone(),
                    })
                    .inc();
            }
            Signal::JobNoticed { backend, delay } => {
                self.notice_delay
                    .get_or_create(&BackendLabels {
                        backend: backend.clone(),
                    })
                    .observe(delay.as_secs_f64());
            }
            // Told through notifications; the flow record keeps the mark.
            Signal::SlaMissed { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_text_names_counter_families_like_their_samples() {
        let registry = MetricsRegistry::default();
        let requests = Family::<CloudLabels, Counter>::default();
        registry.register("flow_cloud_requests", "Requests", requests.clone());
        let running = Gauge::<i64>::default();
        registry.register("flow_runs_running", "Running", running.clone());
        requests
            .get_or_create(&CloudLabels {
                backend: "emr".into(),
                call: "ListSteps".into(),
            })
            .inc_by(2);
        running.set(1);
        let open = registry.openmetrics();
        assert!(
            open.contains("# TYPE flow_cloud_requests counter\n"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
        let classic = registry.prometheus_text();
        assert_eq!(
            classic,
            "# HELP flow_cloud_requests_total Requests.\n\
             # TYPE flow_cloud_requests_total counter\n\
             flow_cloud_requests_total{backend=\"emr\",call=\"ListSteps\"} 2\n\
             # HELP flow_runs_running Running.\n\
             # TYPE flow_runs_running gauge\n\
             flow_runs_running 1\n"
        );
    }
}
