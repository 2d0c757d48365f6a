//! `GET /metrics`: the process's Prometheus series
//! ([`flow_signals::MetricsRegistry`]), as OpenMetrics text when the
//! scraper asks for it (Prometheus does) and as the classic text format
//! otherwise (curl, `promtool check metrics`).
//!
//! The timetable's series ([`TimetableSeries`]) are read from the store at
//! each scrape, not fed by signals: `flow schedule` moves the Jobs in
//! another process (or on another host). So are the SLA misses
//! ([`SlaSeries`]): the run that misses one may be any process's.

use crate::api::AppState;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use flow_core::{JobQuery, JobState, StoreError, TimetableJob};
use flow_signals::MetricsRegistry;
use flow_signals::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(registry) = &state.metrics else {
        return ApiError::NotFound("this server exports no metrics".into()).into_response();
    };
    if let Some(timetable) = &state.timetable {
        if let Err(e) = timetable.refresh(&state).await {
            return ApiError::from(e).into_response();
        }
    }
    if let Some(sla) = &state.sla {
        if let Err(e) = sla.refresh(&state).await {
            return ApiError::from(e).into_response();
        }
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
            registry.openmetrics(),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
            registry.prometheus_text(),
        )
            .into_response()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    flow: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    flow: String,
}

/// The state label of Jobs the garbage collector gave up on (stored
/// `state_skipped`; `flow jobs` shows them failed).
const GIVEN_UP: &str = "failed";

/// How many of a flow's newest started Jobs a scrape looks through for the
/// latest due-to-start delay.
const DELAY_WINDOW: usize = 8;

/// The timetable's series, per scheduled flow this server shows: Jobs per
/// state, the garbage collector's retries and the latest due-to-start
/// delay (names in the book's signals page).
#[derive(Clone, Default)]
pub struct TimetableSeries {
    jobs: Family<JobLabels, Gauge>,
    retries: Family<FlowLabels, Gauge>,
    start_delay: Family<FlowLabels, Gauge<f64, AtomicU64>>,
}

impl TimetableSeries {
    /// Registers the series in `registry`.
    pub fn register(registry: &MetricsRegistry) -> TimetableSeries {
        let series = TimetableSeries::default();
        registry.register(
            "flow_jobs",
            "Scheduler Jobs by flow and state (failed: given up after the retry limit, stored state_skipped)",
            series.jobs.clone(),
        );
        registry.register(
            "flow_job_retries",
            "Garbage-collector retries of the flow's Jobs (failed managed runs up to the retry limit, from number_of_failures)",
            series.retries.clone(),
        );
        registry.register(
            "flow_job_start_delay_seconds",
            "How long after its period became due the flow's latest started Job started",
            series.start_delay.clone(),
        );
        series
    }

    /// Reads every scheduled flow's Jobs from the store: a tally per flow
    /// (counted on an index) and a few of its newest started Jobs.
    pub async fn refresh(&self, state: &AppState) -> Result<(), StoreError> {
        for entry in state.catalog.entries() {
            let Some(schedule) = entry.graph.schedule() else {
                continue;
            };
            let flow = entry.graph.name();
            let q = entry.graph.time_qualifier();
            let tally = state.store.tally_jobs(flow, q).await?;
            let mut per_state: Vec<(&str, i64)> =
                JobState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
            per_state.push((GIVEN_UP, 0));
            let mut retries = 0_i64;
            for t in &tally {
                let jobs = i64::try_from(t.jobs).unwrap_or(i64::MAX);
                let label = if t.state == JobState::Skipped
                    && t.number_of_failures > schedule.retry_limit
                {
                    GIVEN_UP
                } else {
                    t.state.as_str()
                };
                if let Some((_, n)) = per_state.iter_mut().find(|(s, _)| *s == label) {
                    *n += jobs;
                }
                retries += jobs * i64::from(t.number_of_failures.min(schedule.retry_limit));
            }
            for (label, n) in per_state {
                self.jobs
                    .get_or_create(&JobLabels {
                        flow: flow.to_string(),
                        state: label.to_string(),
                    })
                    .set(n);
            }
            let labels = FlowLabels {
                flow: flow.to_string(),
            };
            self.retries.get_or_create(&labels).set(retries);
            let started = state
                .store
                .list_jobs(&JobQuery {
                    process_name: Some(flow.to_string()),
                    time_qualifier: Some(q),
                    states: JobState::ALL
                        .iter()
                        .copied()
                        .filter(|s| *s != JobState::Embryo)
                        .collect(),
                    limit: Some(DELAY_WINDOW),
                    newest_first: true,
                    ..JobQuery::default()
                })
                .await?;
            if let Some(delay) = started.iter().find_map(TimetableJob::start_delay) {
                self.start_delay
                    .get_or_create(&labels)
                    .set(delay.as_seconds_f64());
            }
        }
        Ok(())
    }
}

/// The SLA misses of every flow this server shows with an `sla`: how many
/// of its timeperiods' runs missed it (flow records with `sla_missed_at`),
/// counted by the store at each scrape.
#[derive(Clone, Default)]
pub struct SlaSeries {
    missed: Family<FlowLabels, Gauge>,
}

impl SlaSeries {
    /// Registers the series in `registry`.
    pub fn register(registry: &MetricsRegistry) -> SlaSeries {
        let series = SlaSeries::default();
        registry.register(
            "flow_sla_missed",
            "Timeperiods of the flow whose run missed its SLA (not processed in time)",
            series.missed.clone(),
        );
        series
    }

    /// Counts each flow's records marked missed (a flow without `sla` has
    /// no series), on the store's index: a scrape reads no flow record.
    pub async fn refresh(&self, state: &AppState) -> Result<(), StoreError> {
        for entry in state.catalog.entries() {
            if entry.graph.signals().sla.is_none() {
                continue;
            }
            let flow = entry.graph.name();
            let missed = state.store.count_sla_missed(flow).await?;
            self.missed
                .get_or_create(&FlowLabels {
                    flow: flow.to_string(),
                })
                .set(i64::try_from(missed).unwrap_or(i64::MAX));
        }
        Ok(())
    }
}
