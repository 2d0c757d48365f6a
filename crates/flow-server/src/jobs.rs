//! `GET /api/jobs`: the timetable `flow schedule` keeps in the store, for
//! the Jobs page (a flow × period grid coloured by Job state). Each
//! scheduled flow this server shows gets its newest `periods` Jobs (before
//! `before`, when given), read newest first through the store's index, so
//! a page costs the same on a timetable of any length.

use crate::api::{number, ApiQuery, AppState};
use crate::error::ApiError;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use flow_core::{JobQuery, JobState, RecordId, Timeperiod, TimetableJob};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Periods per flow when the request does not say.
pub const DEFAULT_PERIODS: usize = 24;
/// The most periods per flow one request gets.
pub const MAX_PERIODS: usize = 200;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobsQuery {
    periods: Option<String>,
    before: Option<String>,
}

/// One cell of the grid.
#[derive(Serialize)]
struct JobCell {
    timeperiod: String,
    /// The stored state.
    state: JobState,
    /// Given up after the retry limit (stored `state_skipped`): the grid
    /// shows it failed, as `flow jobs` does.
    given_up: bool,
    /// As `flow jobs` shows it.
    shown: String,
    number_of_failures: u32,
    /// The Job's latest managed run (a run id of the flow page's history).
    run: Option<RecordId>,
    due_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    last_event: Option<String>,
}

/// One row of the grid.
#[derive(Serialize)]
struct FlowJobs {
    name: String,
    time_qualifier: &'static str,
    retry_limit: u32,
    /// Newest first.
    jobs: Vec<JobCell>,
    /// Whether it has Jobs older than the oldest shown.
    more: bool,
}

/// `GET /api/jobs?periods=&before=`: every scheduled flow's newest Jobs.
/// `older` is the `before` of the next page back: the newest of the
/// oldest periods shown among the flows that have more (a flow with longer
/// periods then shows some again rather than another skipping some).
pub(crate) async fn jobs(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<JobsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let periods = number(
        "periods",
        q.periods.as_deref(),
        DEFAULT_PERIODS,
        MAX_PERIODS,
    )?;
    let before = q
        .before
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<Timeperiod>()
                .map_err(|e| ApiError::BadRequest(format!("before: {e}")))
        })
        .transpose()?;
    let mut flows = Vec::new();
    for entry in state.catalog.entries() {
        let Some(schedule) = entry.graph.schedule() else {
            continue;
        };
        let name = entry.graph.name();
        let q = entry.graph.time_qualifier();
        // One more than a page: whether older Jobs exist.
        let mut found = state
            .store
            .list_jobs(&JobQuery {
                process_name: Some(name.to_string()),
                time_qualifier: Some(q),
                to: before,
                limit: Some(periods + 1),
                newest_first: true,
                ..JobQuery::default()
            })
            .await?;
        let more = found.len() > periods;
        found.truncate(periods);
        flows.push(FlowJobs {
            name: name.to_string(),
            time_qualifier: q.as_str(),
            retry_limit: schedule.retry_limit,
            jobs: found
                .iter()
                .map(|job| cell(job, schedule, &state))
                .collect(),
            more,
        });
    }
    let older = flows
        .iter()
        .filter(|f| f.more)
        .filter_map(|f| f.jobs.last().map(|j| j.timeperiod.clone()))
        .max();
    Ok(Json(serde_json::json!({
        "flows": flows,
        "periods": periods,
        "before": before.map(|t| t.to_string()),
        "older": older,
    })))
}

fn cell(job: &TimetableJob, schedule: &flow_core::Schedule, state: &AppState) -> JobCell {
    JobCell {
        timeperiod: job.timeperiod.to_string(),
        state: job.state,
        given_up: job.given_up(schedule),
        shown: job.shown_state(schedule),
        number_of_failures: job.number_of_failures,
        run: job.related_unit_of_work.clone(),
        due_at: job.due_at,
        started_at: job.started_at,
        updated_at: job.updated_at,
        // Event texts quote run errors: blanked like every answer.
        last_event: job.event_log.last().map(|e| state.redact.redact(e)),
    }
}
