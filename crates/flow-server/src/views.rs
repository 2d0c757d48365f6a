//! The JSON shapes of records as the API and the event stream show them.
//! Errors and messages pass through the settings' redaction, so a secret
//! that reached a record never reaches a response.

use chrono::{DateTime, Utc};
use flow_core::{
    ActionSetState, FlowRecord, FlowState, JobRecord, LeaseInfo, RollbackCause, RollbackRecord,
    RunMode, RunRecord, RunStep, Settings, StepRecord, StepState, StoredLogLine,
};
use serde::Serialize;
use std::collections::BTreeMap;

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
    /// When the flow's SLA passed with this timeperiod not processed.
    pub sla_missed_at: Option<DateTime<Utc>>,
}

impl FlowView {
    pub fn new(r: &FlowRecord) -> Self {
        FlowView {
            id: r.id.as_ref().map(|id| id.to_string()),
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
            sla_missed_at: r.sla_missed_at,
        }
    }
}

/// `finished - started` in milliseconds, when both are known.
pub fn duration_ms(started: Option<DateTime<Utc>>, finished: Option<DateTime<Utc>>) -> Option<i64> {
    Some((finished? - started?).num_milliseconds())
}

/// The job a step's current attempt handed to a cluster (its durable
/// handle), as the step record keeps it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobView {
    /// The backend kind, e.g. `local`.
    pub kind: String,
    /// The run's name for the cluster, e.g. `local-0`.
    pub cluster: String,
    /// The backend's ids (job directory, process group, step id...).
    pub ids: BTreeMap<String, String>,
    /// The action that submitted it, and its place in the step.
    pub action: String,
    pub action_index: u32,
    /// The step attempt it belongs to.
    pub attempt: u32,
    pub submitted_at: DateTime<Utc>,
    /// True when a later engine took the job over after its own engine
    /// died, instead of submitting it again.
    pub adopted: bool,
}

impl JobView {
    fn new(j: &JobRecord, redact: &Settings) -> Self {
        JobView {
            kind: j.handle.kind.clone(),
            cluster: redact.redact(&j.handle.cluster),
            ids: j
                .handle
                .ids
                .iter()
                .map(|(k, v)| (k.clone(), redact.redact(v)))
                .collect(),
            action: j.action.clone(),
            action_index: j.action_index,
            attempt: j.attempt,
            submitted_at: j.submitted_at,
            adopted: j.adopted,
        }
    }
}

/// One rollback run on a step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RollbackView {
    pub action: String,
    pub cause: RollbackCause,
    pub at: DateTime<Utc>,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<String>,
}

impl RollbackView {
    fn new(r: &RollbackRecord, redact: &Settings) -> Self {
        RollbackView {
            action: r.action.clone(),
            cause: r.cause,
            at: r.at,
            error: r.error.as_deref().map(|e| redact.redact(e)),
        }
    }
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
    /// Actions of the current attempt that completed (pre, main, post in
    /// order): where a run that adopts the step goes on from.
    pub actions_done: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    /// The current attempt's job, if it handed one to a cluster.
    pub job: Option<JobView>,
    /// Rollbacks run on this step, oldest first.
    pub rollbacks: Vec<RollbackView>,
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
            actions_done: r.actions_done,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_ms: duration_ms(r.started_at, r.finished_at),
            error: r.error.as_deref().map(|e| redact.redact(e)),
            job: r.job.as_ref().map(|j| JobView::new(j, redact)),
            rollbacks: r
                .rollbacks
                .iter()
                .map(|b| RollbackView::new(b, redact))
                .collect(),
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
            actions_done: 0,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            error: None,
            job: None,
            rollbacks: Vec::new(),
        }
    }
}

/// Where a run is, as far as the store and this server know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Its engine holds the flow's lease.
    Running,
    /// This server's run, asked to stop; its engine is winding down.
    Cancelling,
    /// Its end is recorded.
    Finished,
    /// Its engine stopped without recording the end (killed, or the store
    /// failed) and no longer holds the lease.
    Abandoned,
    /// This server's run whose engine returned an error (a store failure,
    /// a lost lease): `error` says which.
    Failed,
}

/// A run (one engine invocation) as `/runs` and `run` events show it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    /// The store's run id (the one `flow history` and `flow logs --run`
    /// use).
    pub id: String,
    pub flow_name: String,
    pub timeperiod: String,
    pub mode: RunMode,
    /// The step `run-one` / `run-from` was given.
    pub target: Option<String>,
    pub status: RunStatus,
    /// The engine's lease owner id, host and user.
    pub owner: String,
    pub host: String,
    pub user: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// The flow's state when the run ended.
    pub outcome: Option<FlowState>,
    /// The steps the run set out to run, with their states when it ended.
    pub steps: Vec<RunStep>,
    pub error: Option<String>,
    /// When the flow's SLA passed during this run (the viewer's mark).
    pub sla_missed_at: Option<DateTime<Utc>>,
    /// What its clusters used and cost; `None` with no cluster that has
    /// instances (the local cluster) or when not looked up.
    pub usage: Option<UsageView>,
}

/// What some clusters used and cost (`flow_core::UsageSummary`), with the
/// text `flow history` shows, so the page does not format it again.
#[derive(Debug, Clone, Serialize)]
pub struct UsageView {
    #[serde(flatten)]
    pub summary: flow_core::UsageSummary,
    /// `1.70 instance-hours, ~$0.52`, naming what is unknown.
    pub text: String,
}

impl UsageView {
    /// `None` when there is nothing to show.
    pub fn of(summary: &flow_core::UsageSummary) -> Option<Self> {
        (!summary.is_empty()).then(|| UsageView {
            summary: summary.clone(),
            text: summary.text(),
        })
    }
}

impl RunView {
    /// `run` with the status its record and the flow's lease imply: open
    /// runs are running while their engine holds a live lease.
    pub fn new(
        run: &RunRecord,
        lease: Option<&LeaseInfo>,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
        redact: &Settings,
    ) -> Self {
        let status = match flow_core::RunStanding::of(run, lease, now, ttl) {
            flow_core::RunStanding::Finished => RunStatus::Finished,
            flow_core::RunStanding::Running => RunStatus::Running,
            flow_core::RunStanding::Abandoned => RunStatus::Abandoned,
        };
        Self::with_status(run, status, redact)
    }

    /// `run` with a status this server knows.
    pub fn with_status(run: &RunRecord, status: RunStatus, redact: &Settings) -> Self {
        RunView {
            id: run.id.as_ref().map(ToString::to_string).unwrap_or_default(),
            flow_name: run.flow_name.clone(),
            timeperiod: run.timeperiod.to_string(),
            mode: run.mode,
            target: run.target.clone(),
            status,
            owner: run.owner.clone(),
            host: run.host.clone(),
            user: run.user.clone(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            duration_ms: duration_ms(Some(run.started_at), run.finished_at),
            outcome: run.outcome,
            steps: run.steps.clone(),
            error: run.error.as_deref().map(|e| redact.redact(e)),
            sla_missed_at: None,
            usage: None,
        }
    }

    /// Marks the run as the one the flow's SLA passed in, when `missed_at`
    /// (the flow record's) falls between its start and its end.
    pub fn mark_sla(&mut self, missed_at: Option<DateTime<Utc>>) {
        self.sla_missed_at = missed_at
            .filter(|at| *at >= self.started_at && self.finished_at.is_none_or(|end| *at <= end));
    }
}

/// One recorded log line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogView {
    /// Its position in the store: grows in append order within the flow
    /// run, so `after` pages without gaps.
    pub position: u64,
    /// The run that wrote it.
    pub run: String,
    /// `None` for the flow's own log (`FLOW.log`).
    pub step: Option<String>,
    pub logger: String,
    pub level: String,
    pub at: DateTime<Utc>,
    pub message: String,
}

impl LogView {
    pub fn new(l: &StoredLogLine, redact: &Settings) -> Self {
        LogView {
            position: l.position,
            run: l.line.run.to_string(),
            step: l.line.step.clone(),
            logger: l.line.logger.clone(),
            level: l.line.level.as_str().to_string(),
            at: l.line.at,
            message: redact.redact(&l.line.message),
        }
    }
}
