//! The JSON shapes of records as the API and the event stream show them.
//! Errors and messages pass through the settings' redaction, so a secret
//! that reached a record never reaches a response.

use chrono::{DateTime, Utc};
use flow_core::{ActionSetState, FlowRecord, FlowState, RunMode, Settings, StepRecord, StepState};
use serde::Serialize;

/// A flow record.
#[derive(Debug, Clone, Serialize)]
pub struct FlowView {
    /// The store's id, as a string (ids are opaque).
    pub id: Option<String>,
    pub flow_name: String,
    pub timeperiod: String,
    pub start_timeperiod: String,
    pub end_timeperiod: String,
    pub state: FlowState,
    pub run_mode: RunMode,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
}

impl FlowView {
    pub fn new(r: &FlowRecord) -> Self {
        FlowView {
            id: r.id.map(|id| id.to_string()),
            flow_name: r.flow_name.clone(),
            timeperiod: r.timeperiod.to_string(),
            start_timeperiod: r.start_timeperiod.to_string(),
            end_timeperiod: r.end_timeperiod.to_string(),
            state: r.state,
            run_mode: r.run_mode,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_ms: duration_ms(r.started_at, r.finished_at),
        }
    }
}

/// `finished - started` in milliseconds, when both are known.
pub fn duration_ms(started: Option<DateTime<Utc>>, finished: Option<DateTime<Utc>>) -> Option<i64> {
    Some((finished? - started?).num_milliseconds())
}

/// What a step record says, as node fields: `None` everywhere for a step
/// that has no record for this timeperiod.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepStateView {
    pub name: String,
    pub state: Option<StepState>,
    pub pre: Option<ActionSetState>,
    pub main: Option<ActionSetState>,
    pub post: Option<ActionSetState>,
    pub attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    /// Durable job handles arrive with the store's job records; until then
    /// there are none to show.
    pub job: Option<serde_json::Value>,
}

impl StepStateView {
    pub fn new(r: &StepRecord, redact: &Settings) -> Self {
        StepStateView {
            name: r.step_name.clone(),
            state: Some(r.state),
            pre: Some(r.pre_state),
            main: Some(r.main_state),
            post: Some(r.post_state),
            attempts: r.attempts,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_ms: duration_ms(r.started_at, r.finished_at),
            error: r.error.as_deref().map(|e| redact.redact(e)),
            job: None,
        }
    }

    /// A step without a record.
    pub fn none(name: &str) -> Self {
        StepStateView {
            name: name.to_string(),
            state: None,
            pre: None,
            main: None,
            post: None,
            attempts: 0,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            error: None,
            job: None,
        }
    }
}
