//! Flow and step records: what the store keeps about each run.

use crate::state::{ActionSetState, FlowState, RunMode, StepState};
use crate::timeperiod::Timeperiod;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The identity of a flow run: `[flow_name, timeperiod]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowKey {
    pub flow_name: String,
    pub timeperiod: Timeperiod,
}

impl FlowKey {
    pub fn new(flow_name: impl Into<String>, timeperiod: Timeperiod) -> Self {
        FlowKey {
            flow_name: flow_name.into(),
            timeperiod,
        }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.flow_name, self.timeperiod)
    }
}

/// The stored state of one flow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Assigned by the store; `None` until first saved.
    pub id: Option<i64>,
    pub flow_name: String,
    pub timeperiod: Timeperiod,
    pub start_timeperiod: Timeperiod,
    pub end_timeperiod: Timeperiod,
    pub state: FlowState,
    pub run_mode: RunMode,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl FlowRecord {
    pub fn key(&self) -> FlowKey {
        FlowKey::new(self.flow_name.clone(), self.timeperiod)
    }
}

/// The stored state of one step of one flow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Assigned by the store; `None` until first saved.
    pub id: Option<i64>,
    pub flow_name: String,
    pub step_name: String,
    pub timeperiod: Timeperiod,
    pub state: StepState,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Id of the flow record this step belongs to.
    pub related_flow: Option<i64>,
    pub pre_state: ActionSetState,
    pub main_state: ActionSetState,
    pub post_state: ActionSetState,
    /// How many times the step was attempted in its latest run.
    pub attempts: u32,
    /// Why the step failed, if it did.
    pub error: Option<String>,
}

impl StepRecord {
    /// A fresh `embryo` record.
    pub fn embryo(
        flow_name: &str,
        step_name: &str,
        timeperiod: Timeperiod,
        related_flow: Option<i64>,
        now: DateTime<Utc>,
    ) -> Self {
        StepRecord {
            id: None,
            flow_name: flow_name.to_string(),
            step_name: step_name.to_string(),
            timeperiod,
            state: StepState::Embryo,
            created_at: now,
            started_at: None,
            finished_at: None,
            related_flow,
            pre_state: ActionSetState::Pending,
            main_state: ActionSetState::Pending,
            post_state: ActionSetState::Pending,
            attempts: 0,
            error: None,
        }
    }

    /// Puts the record back to `embryo`, keeping its identity.
    pub fn reset(&mut self, related_flow: Option<i64>) {
        self.state = StepState::Embryo;
        self.started_at = None;
        self.finished_at = None;
        self.related_flow = related_flow;
        self.pre_state = ActionSetState::Pending;
        self.main_state = ActionSetState::Pending;
        self.post_state = ActionSetState::Pending;
        self.attempts = 0;
        self.error = None;
    }
}
