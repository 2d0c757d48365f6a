//! What the store keeps: flow and step records (Synergy Flow's two
//! collections), and this engine's additions: run history, the clusters a
//! run launched, durable job handles, rollbacks and recorded log lines.
//!
//! Every type here is plain data (serde), so any store can keep it and any
//! engine, on any host, can read it back after the one that wrote it died.

use crate::cluster::{ClusterHandle, JobHandle};
use crate::cost::ClusterUsage;
use crate::state::{ActionSetState, FlowState, RunMode, StepState};
use crate::timeperiod::Timeperiod;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An id the store gives a record. Opaque: the SQLite store fills it with an
/// integer, the MongoDB store with an ObjectId's 24 hex digits; nothing above
/// the store may assume either. Printed and serialized as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordId(String);

impl RecordId {
    /// Wraps a store's id text.
    pub fn new(id: impl Into<String>) -> Self {
        RecordId(id.into())
    }

    /// The id as the store wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<i64> for RecordId {
    fn from(id: i64) -> Self {
        RecordId(id.to_string())
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity of a flow run: `[flow_name, timeperiod]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowKey {
    /// The flow's name.
    pub flow_name: String,
    /// The processing timeperiod.
    pub timeperiod: Timeperiod,
}

impl FlowKey {
    /// The key of `flow_name` at `timeperiod`.
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
    pub id: Option<RecordId>,
    /// The flow's name.
    pub flow_name: String,
    /// The processing timeperiod (the run's identity with the name).
    pub timeperiod: Timeperiod,
    /// Inclusive start of the processing window.
    pub start_timeperiod: Timeperiod,
    /// Exclusive end of the processing window.
    pub end_timeperiod: Timeperiod,
    /// The flow's state.
    pub state: FlowState,
    /// The mode of the latest run; also the managed mode a viewer sets.
    pub run_mode: RunMode,
    /// When the record was first written.
    pub created_at: DateTime<Utc>,
    /// When the latest run started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the latest run ended; `None` while it runs.
    pub finished_at: Option<DateTime<Utc>>,
    /// A digest of the flow definition the latest run used, so a later run
    /// can tell that the file changed in between. `None` in records written
    /// before it existed (or by Synergy Flow).
    pub graph_hash: Option<String>,
    /// When the flow's `sla` passed with this timeperiod not processed:
    /// set once, by the run that noticed it, and kept by every later run of
    /// the timeperiod, so `sla_miss` is sent once per flow and timeperiod.
    #[serde(default)]
    pub sla_missed_at: Option<DateTime<Utc>>,
    /// The W3C `traceparent` of the latest traced run's root span (set
    /// when `[telemetry]` exports traces), so that a recover continues the
    /// same trace. `None` when the run was not traced.
    #[serde(default)]
    pub trace_parent: Option<String>,
}

impl FlowRecord {
    /// The record's `[flow_name, timeperiod]`.
    pub fn key(&self) -> FlowKey {
        FlowKey::new(self.flow_name.clone(), self.timeperiod)
    }
}

/// The stored state of one step of one flow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Assigned by the store; `None` until first saved.
    pub id: Option<RecordId>,
    /// The flow's name.
    pub flow_name: String,
    /// The step's name.
    pub step_name: String,
    /// The flow's processing timeperiod.
    pub timeperiod: Timeperiod,
    /// The step's state.
    pub state: StepState,
    /// When the record was first written.
    pub created_at: DateTime<Utc>,
    /// When the latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the step reached its final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Id of the flow record this step belongs to.
    pub related_flow: Option<RecordId>,
    /// Progress of the `pre` actions.
    pub pre_state: ActionSetState,
    /// Progress of the `main` action.
    pub main_state: ActionSetState,
    /// Progress of the `post` actions.
    pub post_state: ActionSetState,
    /// How many times the step was attempted in its latest run.
    pub attempts: u32,
    /// Why the step failed, if it did.
    pub error: Option<String>,
    /// Actions of the current attempt that completed, counted in order:
    /// `pre` actions, then `main`, then `post` (skipped ones count). A run
    /// that adopts the step after a crash goes on from here.
    pub actions_done: u32,
    /// The job the current attempt handed to a cluster, stored before the
    /// engine waits for it, so a later engine can adopt it.
    pub job: Option<JobRecord>,
    /// Rollbacks run on this step, oldest first.
    pub rollbacks: Vec<RollbackRecord>,
}

impl StepRecord {
    /// A fresh `embryo` record.
    pub fn embryo(
        flow_name: &str,
        step_name: &str,
        timeperiod: Timeperiod,
        related_flow: Option<RecordId>,
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
            actions_done: 0,
            job: None,
            rollbacks: Vec::new(),
        }
    }

    /// Puts the record back to `embryo`, keeping its identity and its
    /// rollback history.
    pub fn reset(&mut self, related_flow: Option<RecordId>) {
        self.state = StepState::Embryo;
        self.started_at = None;
        self.finished_at = None;
        self.related_flow = related_flow;
        self.pre_state = ActionSetState::Pending;
        self.main_state = ActionSetState::Pending;
        self.post_state = ActionSetState::Pending;
        self.attempts = 0;
        self.error = None;
        self.actions_done = 0;
        self.job = None;
    }

    /// True when a crashed run left this step half-way with something a
    /// later run can go on from: a recorded job, or completed actions.
    pub fn is_resumable(&self) -> bool {
        self.state == StepState::InProgress && (self.job.is_some() || self.actions_done > 0)
    }
}

/// A job an action handed to a cluster, as the step record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The action's position in the step (see [`StepRecord::actions_done`]).
    pub action_index: u32,
    /// The action's name, the second part of its logger name.
    pub action: String,
    /// The step attempt the job belongs to.
    pub attempt: u32,
    /// The job's durable handle, as the cluster returned it.
    pub handle: JobHandle,
    /// When the handle was recorded.
    pub submitted_at: DateTime<Utc>,
    /// Set when a later engine took the job over instead of submitting it
    /// again.
    pub adopted: bool,
}

/// Why a rollback ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackCause {
    /// The step failed for good (retries exhausted).
    StepFailed,
    /// `flow rollback` undid a processed step.
    Requested,
}

/// One action's rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRecord {
    /// The action's name within the step.
    pub action: String,
    /// Why the rollback ran.
    pub cause: RollbackCause,
    /// When it ran.
    pub at: DateTime<Utc>,
    /// Why the rollback failed; `None` when it succeeded.
    pub error: Option<String>,
}

/// One engine invocation on one flow: what `flow history` lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Assigned by the store in `begin_run`.
    pub id: Option<RecordId>,
    /// The flow's name.
    pub flow_name: String,
    /// The processing timeperiod.
    pub timeperiod: Timeperiod,
    /// The mode the run was asked for.
    pub mode: RunMode,
    /// The step `run_one` / `run_from` was given.
    pub target: Option<String>,
    /// The lease owner id (host, pid, random part).
    pub owner: String,
    /// The lease's fencing token.
    pub token: u64,
    /// The host the engine ran on.
    pub host: String,
    /// The user the engine ran as.
    pub user: String,
    /// When the run took its lease.
    pub started_at: DateTime<Utc>,
    /// `None` while the run goes on, or forever if its engine died.
    pub finished_at: Option<DateTime<Utc>>,
    /// The flow's state when the run ended.
    pub outcome: Option<FlowState>,
    /// The steps the run set out to run, with their states when it ended.
    pub steps: Vec<RunStep>,
    /// Why the run stopped without a failed step (no cluster, store fault,
    /// lost lease...).
    pub error: Option<String>,
}

impl RunRecord {
    /// The run's `[flow_name, timeperiod]`.
    pub fn key(&self) -> FlowKey {
        FlowKey::new(self.flow_name.clone(), self.timeperiod)
    }
}

/// A step of a run and the state the run left it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStep {
    /// The step's name.
    pub step_name: String,
    /// The state the run left it in.
    pub state: StepState,
}

/// What happened to a cluster a run launched or reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    /// Asked for; not known to be up yet.
    Launching,
    /// Took jobs.
    Up,
    /// Never came up.
    LaunchFailed,
    /// Terminated by the run (or a later one).
    Terminated,
    /// Terminating failed: it may still be up (and billing).
    TerminateFailed,
    /// Reused and left up at the end, as configured.
    LeftUp,
}

impl ClusterState {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::Launching => "launching",
            ClusterState::Up => "up",
            ClusterState::LaunchFailed => "launch_failed",
            ClusterState::Terminated => "terminated",
            ClusterState::TerminateFailed => "terminate_failed",
            ClusterState::LeftUp => "left_up",
        }
    }

    /// Parses the stored string.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "launching" => ClusterState::Launching,
            "up" => ClusterState::Up,
            "launch_failed" => ClusterState::LaunchFailed,
            "terminated" => ClusterState::Terminated,
            "terminate_failed" => ClusterState::TerminateFailed,
            "left_up" => ClusterState::LeftUp,
            _ => return None,
        })
    }

    /// True while the cluster may be up and its run's engine is the one to
    /// end it: what `flow clusters --terminate-orphans` and `recover` look
    /// for.
    pub fn may_be_up(self) -> bool {
        matches!(
            self,
            ClusterState::Launching | ClusterState::Up | ClusterState::TerminateFailed
        )
    }
}

impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cluster a run launched or reused, recorded as it is launched so that
/// a crash never leaks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// Assigned by the store; `None` until first saved.
    pub id: Option<RecordId>,
    /// The flow's name.
    pub flow_name: String,
    /// The processing timeperiod.
    pub timeperiod: Timeperiod,
    /// The run that launched (or adopted) it.
    pub run: RecordId,
    /// The cluster's durable handle, as the backend named it.
    pub handle: ClusterHandle,
    /// What happened to it.
    pub state: ClusterState,
    /// When it was asked for.
    pub launched_at: DateTime<Utc>,
    /// When the record last changed.
    pub updated_at: DateTime<Utc>,
    /// The latest problem (launch or termination failure), if any.
    pub message: Option<String>,
    /// Its instances and billed time (crate::cost).
    #[serde(default)]
    pub usage: ClusterUsage,
}

impl ClusterRecord {
    /// Sets its state, message and update time, and, when the state is
    /// final (it stopped counting for this run), its end.
    pub fn mark(&mut self, state: ClusterState, message: Option<String>, now: DateTime<Utc>) {
        self.state = state;
        self.message = message;
        self.updated_at = now;
        if !state.may_be_up() {
            self.usage.ended_at = Some(now);
        }
    }

    /// The cluster's flow: `[flow_name, timeperiod]`.
    pub fn key(&self) -> FlowKey {
        FlowKey::new(self.flow_name.clone(), self.timeperiod)
    }
}

/// A log line's severity, as the log files write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    /// Finest detail.
    Trace,
    /// Detail for debugging.
    Debug,
    /// Progress.
    Info,
    /// Something worth a look.
    Warn,
    /// A failure.
    Error,
}

impl LogLevel {
    /// The name as log files write it (`INFO`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        }
    }

    /// Parses the name as log files write it.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "TRACE" => LogLevel::Trace,
            "DEBUG" => LogLevel::Debug,
            "INFO" => LogLevel::Info,
            "WARN" => LogLevel::Warn,
            "ERROR" => LogLevel::Error,
            _ => return None,
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a flow's or a step's log, as recorded in the store (Synergy
/// Flow's `log_recording`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The flow's name.
    pub flow_name: String,
    /// The processing timeperiod.
    pub timeperiod: Timeperiod,
    /// The run that wrote it.
    pub run: RecordId,
    /// `None` for the flow's own log (`FLOW.log`).
    pub step: Option<String>,
    /// `STEP`, `STEP.ACTION`, or the flow name.
    pub logger: String,
    /// The line's severity.
    pub level: LogLevel,
    /// When it was logged.
    pub at: DateTime<Utc>,
    /// The text, masked.
    pub message: String,
}

/// A recorded log line with its position: positions grow in the order lines
/// were appended, so `after` pages through a log without gaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogLine {
    /// Its place in the flow's log; grows in append order.
    pub position: u64,
    /// The line.
    #[serde(flatten)]
    pub line: LogLine,
}
