//! The documents, one struct per collection, and their conversions to and
//! from `flow-core` records.
//!
//! `flow` and `step` are Synergy Flow's collections with Synergy's field
//! names (`_id`, `flow_name`, `timeperiod`, `start_timeperiod`,
//! `end_timeperiod`, `state`, `run_mode`, `created_at`, `started_at`,
//! `finished_at`; steps `step_name` and `related_flow`), state and run-mode
//! strings, ObjectIds and BSON dates. This engine's fields are additive and
//! left out when empty, so a record that only has Synergy's fields encodes
//! to exactly the document Synergy wrote. Fields are declared in
//! alphabetical order, `_id` first, as Synergy's ODM writes them.
//!
//! Reading is lenient where Synergy's versions differed: dates written as
//! `"%Y-%m-%d %H:%M:%S"` text, ids written as hex text, a missing
//! `run_mode` (nominal), the old step state `state_requested` (embryo) and
//! run mode `run_mode_one_step` (run one).

use crate::odm::Model;
use bson::oid::ObjectId;
use bson::{doc, DateTime as BsonDate};
use chrono::{DateTime, NaiveDateTime, Utc};
use flow_core::{
    ActionSetState, ClusterHandle, ClusterRecord, ClusterState, ClusterUsage, FlowRecord,
    FlowState, InstanceGroup, JobRecord, LogLevel, LogLine, RecordId, RollbackRecord, RunMode,
    RunRecord, RunStep, StepRecord, StepState, StoredLogLine, Timeperiod,
};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use serde::{Deserialize, Serialize};

/// Why a stored document cannot be read as a record.
pub type Unreadable = String;

/// A date as Synergy's ODM versions wrote it: a BSON date, or text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DateValue {
    Date(BsonDate),
    Text(String),
}

impl DateValue {
    pub fn of(t: DateTime<Utc>) -> Self {
        DateValue::Date(BsonDate::from_chrono(t))
    }

    pub fn to_chrono(&self, field: &str) -> Result<DateTime<Utc>, Unreadable> {
        match self {
            DateValue::Date(d) => Ok(d.to_chrono()),
            DateValue::Text(text) => NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
                .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
                .map(|t| t.and_utc())
                .map_err(|e| format!("{field}: '{text}' is not a date: {e}")),
        }
    }
}

fn opt_date(value: &Option<DateValue>, field: &str) -> Result<Option<DateTime<Utc>>, Unreadable> {
    value.as_ref().map(|d| d.to_chrono(field)).transpose()
}

/// An id as Synergy's ODM versions wrote it: an ObjectId, or its hex text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IdValue {
    Oid(ObjectId),
    Text(String),
}

impl IdValue {
    fn record_id(&self) -> RecordId {
        match self {
            IdValue::Oid(oid) => RecordId::new(oid.to_hex()),
            IdValue::Text(text) => RecordId::new(text.clone()),
        }
    }
}

/// The ObjectId a record id stands for.
pub fn object_id(id: &RecordId) -> Result<ObjectId, Unreadable> {
    ObjectId::parse_str(id.as_str())
        .map_err(|_| format!("'{id}' is not a MongoDB id (24 hexadecimal digits)"))
}

fn oid_value(id: &Option<RecordId>) -> Result<Option<IdValue>, Unreadable> {
    id.as_ref()
        .map(|id| object_id(id).map(IdValue::Oid))
        .transpose()
}

fn timeperiod(text: &str, field: &str) -> Result<Timeperiod, Unreadable> {
    text.parse().map_err(|e| format!("{field}: {e}"))
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn is_pending(s: &String) -> bool {
    s == ActionSetState::Pending.as_str()
}

fn pending() -> String {
    ActionSetState::Pending.as_str().to_string()
}

fn action_set(text: &str, field: &str) -> Result<ActionSetState, Unreadable> {
    ActionSetState::parse(text).ok_or_else(|| format!("{field}: unknown action-set state '{text}'"))
}

/// A record's creation time: the stored `created_at`, else the moment in
/// the ObjectId (a Synergy document without the field).
fn created(value: &Option<DateValue>, id: &Option<ObjectId>) -> Result<DateTime<Utc>, Unreadable> {
    match (value, id) {
        (Some(d), _) => d.to_chrono("created_at"),
        (None, Some(oid)) => Ok(oid.timestamp().to_chrono()),
        (None, None) => Err("created_at is missing".into()),
    }
}

/// A document of Synergy Flow's `flow` collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowDoc {
    /// The document's `_id`.
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none", default)]
    pub id: Option<ObjectId>,
    /// When the record was first written.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created_at: Option<DateValue>,
    /// Exclusive end of the processing window.
    pub end_timeperiod: String,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub finished_at: Option<DateValue>,
    /// The flow's name.
    pub flow_name: String,
    /// Ours: a digest of the flow definition.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub graph_hash: Option<String>,
    /// The run mode's stored string (Synergy's old spellings are read too).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub run_mode: Option<String>,
    /// Inclusive start of the processing window.
    pub start_timeperiod: String,
    /// When it started.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_at: Option<DateValue>,
    /// The state's stored string, e.g. `state_processed`.
    pub state: String,
    /// Ours: when the flow's SLA was missed for this timeperiod.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sla_missed_at: Option<DateValue>,
    /// Ours: the W3C `traceparent` of the latest traced run, which a
    /// recover continues.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub trace_parent: Option<String>,
    /// The processing timeperiod, `YYYYMMDDHH`.
    pub timeperiod: String,
}

impl Model for FlowDoc {
    const COLLECTION: &'static str = "flow";
    const KEY: &'static [&'static str] = &["flow_name", "timeperiod"];
    fn extra_indexes() -> Vec<IndexModel> {
        vec![
            fence_index(Self::KEY),
            // `count_sla_missed`: a flow's marks, a date range after the
            // name (the shape SecantusDB serves from an index too).
            IndexModel::builder()
                .keys(doc! { "flow_name": 1, "sla_missed_at": 1 })
                .build(),
        ]
    }
}

/// The key and the fence stamp: the filter of a fenced write (key, and
/// `fence_token <= T`). MongoDB serves it from the unique key index too;
/// SecantusDB uses an index for an equality prefix and a range only when
/// the index holds the range's field next, and scans the collection
/// otherwise.
fn fence_index(key: &[&str]) -> IndexModel {
    let mut keys = bson::Document::new();
    for field in key {
        keys.insert(*field, 1);
    }
    keys.insert(crate::odm::FENCE, 1);
    IndexModel::builder().keys(keys).build()
}

/// Parses a stored run mode, Synergy's old spelling included.
fn run_mode(text: Option<&str>) -> Result<RunMode, Unreadable> {
    match text {
        None => Ok(RunMode::Nominal),
        Some("run_mode_one_step") => Ok(RunMode::RunOne),
        Some(text) => RunMode::parse(text).ok_or_else(|| format!("run_mode: unknown '{text}'")),
    }
}

impl FlowDoc {
    /// The document for `r`.
    pub fn from_record(r: &FlowRecord) -> Result<Self, Unreadable> {
        Ok(FlowDoc {
            id: r.id.as_ref().map(object_id).transpose()?,
            created_at: Some(DateValue::of(r.created_at)),
            end_timeperiod: r.end_timeperiod.to_string(),
            finished_at: r.finished_at.map(DateValue::of),
            flow_name: r.flow_name.clone(),
            graph_hash: r.graph_hash.clone(),
            run_mode: Some(r.run_mode.as_str().to_string()),
            start_timeperiod: r.start_timeperiod.to_string(),
            started_at: r.started_at.map(DateValue::of),
            state: r.state.as_str().to_string(),
            sla_missed_at: r.sla_missed_at.map(DateValue::of),
            trace_parent: r.trace_parent.clone(),
            timeperiod: r.timeperiod.to_string(),
        })
    }

    /// The record this document stands for.
    pub fn to_record(&self) -> Result<FlowRecord, Unreadable> {
        Ok(FlowRecord {
            id: self.id.map(|oid| RecordId::new(oid.to_hex())),
            flow_name: self.flow_name.clone(),
            timeperiod: timeperiod(&self.timeperiod, "timeperiod")?,
            start_timeperiod: timeperiod(&self.start_timeperiod, "start_timeperiod")?,
            end_timeperiod: timeperiod(&self.end_timeperiod, "end_timeperiod")?,
            state: FlowState::parse(&self.state)
                .ok_or_else(|| format!("state: unknown flow state '{}'", self.state))?,
            run_mode: run_mode(self.run_mode.as_deref())?,
            created_at: created(&self.created_at, &self.id)?,
            started_at: opt_date(&self.started_at, "started_at")?,
            finished_at: opt_date(&self.finished_at, "finished_at")?,
            graph_hash: self.graph_hash.clone(),
            sla_missed_at: opt_date(&self.sla_missed_at, "sla_missed_at")?,
            trace_parent: self.trace_parent.clone(),
        })
    }
}

/// A job handle as the step document keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDoc {
    pub action: String,
    pub action_index: i64,
    pub adopted: bool,
    pub attempt: i64,
    pub handle: HandleDoc,
    pub submitted_at: DateValue,
}

/// A job handle's fields in alphabetical order, like the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandleDoc {
    pub cluster: String,
    #[serde(default)]
    pub ids: std::collections::BTreeMap<String, String>,
    pub kind: String,
}

/// A rollback as the step document keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackDoc {
    pub action: String,
    pub at: DateValue,
    pub cause: flow_core::RollbackCause,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// A document of Synergy Flow's `step` collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDoc {
    /// The document's `_id`.
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none", default)]
    pub id: Option<ObjectId>,
    /// Ours, like every field not in Synergy's model.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub actions_done: i32,
    /// Attempts so far.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub attempts: i32,
    /// When the record was first written.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created_at: Option<DateValue>,
    /// The last error, masked.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub finished_at: Option<DateValue>,
    /// The flow's name.
    pub flow_name: String,
    /// The durable handle of the running action's job.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub job: Option<JobDoc>,
    /// Progress of the `main` action.
    #[serde(skip_serializing_if = "is_pending", default = "pending")]
    pub main_state: String,
    /// Progress of the `post` actions.
    #[serde(skip_serializing_if = "is_pending", default = "pending")]
    pub post_state: String,
    /// Progress of the `pre` actions.
    #[serde(skip_serializing_if = "is_pending", default = "pending")]
    pub pre_state: String,
    /// The `_id` of the flow document it belongs to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub related_flow: Option<IdValue>,
    /// The rollbacks that ran for it.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub rollbacks: Vec<RollbackDoc>,
    /// When it started.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_at: Option<DateValue>,
    /// The state's stored string, e.g. `state_processed`.
    pub state: String,
    /// The step's name.
    pub step_name: String,
    /// The processing timeperiod, `YYYYMMDDHH`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timeperiod: Option<String>,
}

impl Model for StepDoc {
    const COLLECTION: &'static str = "step";
    const KEY: &'static [&'static str] = &["flow_name", "step_name", "timeperiod"];
    /// A run reads, fences and purges its steps by flow and timeperiod: the
    /// key index's prefix would be the flow name alone, every step of the
    /// flow's history (and SecantusDB uses no index for it at all).
    fn extra_indexes() -> Vec<IndexModel> {
        vec![
            IndexModel::builder()
                .keys(doc! { "flow_name": 1, "timeperiod": 1 })
                .build(),
            fence_index(Self::KEY),
        ]
    }
}

impl StepDoc {
    /// The document for `r`.
    pub fn from_record(r: &StepRecord) -> Result<Self, Unreadable> {
        Ok(StepDoc {
            id: r.id.as_ref().map(object_id).transpose()?,
            actions_done: i32::try_from(r.actions_done).unwrap_or(i32::MAX),
            attempts: i32::try_from(r.attempts).unwrap_or(i32::MAX),
            created_at: Some(DateValue::of(r.created_at)),
            error: r.error.clone(),
            finished_at: r.finished_at.map(DateValue::of),
            flow_name: r.flow_name.clone(),
            job: r.job.as_ref().map(|j| JobDoc {
                action: j.action.clone(),
                action_index: i64::from(j.action_index),
                adopted: j.adopted,
                attempt: i64::from(j.attempt),
                handle: HandleDoc {
                    cluster: j.handle.cluster.clone(),
                    ids: j.handle.ids.clone(),
                    kind: j.handle.kind.clone(),
                },
                submitted_at: DateValue::of(j.submitted_at),
            }),
            main_state: r.main_state.as_str().to_string(),
            post_state: r.post_state.as_str().to_string(),
            pre_state: r.pre_state.as_str().to_string(),
            related_flow: oid_value(&r.related_flow)?,
            rollbacks: r
                .rollbacks
                .iter()
                .map(|b| RollbackDoc {
                    action: b.action.clone(),
                    at: DateValue::of(b.at),
                    cause: b.cause,
                    error: b.error.clone(),
                })
                .collect(),
            started_at: r.started_at.map(DateValue::of),
            state: r.state.as_str().to_string(),
            step_name: r.step_name.clone(),
            timeperiod: Some(r.timeperiod.to_string()),
        })
    }

    /// The record this document stands for.
    pub fn to_record(&self) -> Result<StepRecord, Unreadable> {
        let state = match self.state.as_str() {
            // Synergy Flow's first releases called a new step "requested".
            "state_requested" => StepState::Embryo,
            s => StepState::parse(s).ok_or_else(|| format!("state: unknown step state '{s}'"))?,
        };
        let count = |n: i64, field: &str| {
            u32::try_from(n).map_err(|_| format!("{field}: {n} is out of range"))
        };
        Ok(StepRecord {
            id: self.id.map(|oid| RecordId::new(oid.to_hex())),
            flow_name: self.flow_name.clone(),
            step_name: self.step_name.clone(),
            timeperiod: timeperiod(
                self.timeperiod.as_deref().ok_or("timeperiod is missing")?,
                "timeperiod",
            )?,
            state,
            created_at: created(&self.created_at, &self.id)?,
            started_at: opt_date(&self.started_at, "started_at")?,
            finished_at: opt_date(&self.finished_at, "finished_at")?,
            related_flow: self.related_flow.as_ref().map(IdValue::record_id),
            pre_state: action_set(&self.pre_state, "pre_state")?,
            main_state: action_set(&self.main_state, "main_state")?,
            post_state: action_set(&self.post_state, "post_state")?,
            attempts: count(i64::from(self.attempts), "attempts")?,
            error: self.error.clone(),
            actions_done: count(i64::from(self.actions_done), "actions_done")?,
            job: self
                .job
                .as_ref()
                .map(|j| {
                    Ok::<_, Unreadable>(JobRecord {
                        action_index: count(j.action_index, "job.action_index")?,
                        action: j.action.clone(),
                        attempt: count(j.attempt, "job.attempt")?,
                        handle: flow_core::JobHandle {
                            kind: j.handle.kind.clone(),
                            cluster: j.handle.cluster.clone(),
                            ids: j.handle.ids.clone(),
                        },
                        submitted_at: j.submitted_at.to_chrono("job.submitted_at")?,
                        adopted: j.adopted,
                    })
                })
                .transpose()?,
            rollbacks: self
                .rollbacks
                .iter()
                .map(|b| {
                    Ok(RollbackRecord {
                        action: b.action.clone(),
                        cause: b.cause,
                        at: b.at.to_chrono("rollbacks.at")?,
                        error: b.error.clone(),
                    })
                })
                .collect::<Result<_, Unreadable>>()?,
        })
    }
}

/// A run lease (ours: `flow_lease`). Its times are int64 milliseconds since
/// the epoch: the lease is taken with one `findOneAndUpdate` whose `$set`
/// some wire-protocol servers would store a BSON date through as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseDoc {
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none", default)]
    pub id: Option<ObjectId>,
    pub acquired_at_ms: i64,
    pub flow_name: String,
    pub heartbeat_at_ms: i64,
    /// Null once released.
    pub owner: Option<String>,
    pub timeperiod: String,
    pub token: i64,
}

impl Model for LeaseDoc {
    const COLLECTION: &'static str = "flow_lease";
    const KEY: &'static [&'static str] = &["flow_name", "timeperiod"];
}

impl LeaseDoc {
    pub fn token(&self) -> u64 {
        u64::try_from(self.token).unwrap_or(0)
    }
}

/// One engine invocation (ours: `flow_run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDoc {
    /// The document's `_id`.
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none", default)]
    pub id: Option<ObjectId>,
    /// Why the run stopped without a failed step, masked.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub finished_at: Option<BsonDate>,
    /// The flow's name.
    pub flow_name: String,
    /// The host the engine ran on.
    pub host: String,
    /// The run mode's stored string.
    pub mode: String,
    /// The flow's state when the run ended.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub outcome: Option<String>,
    /// The lease owner id.
    pub owner: String,
    /// When it started.
    pub started_at: BsonDate,
    /// The steps the run set out to run, with their final states.
    #[serde(default)]
    pub steps: Vec<RunStep>,
    /// The step `run_one` / `run_from` was given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<String>,
    /// The processing timeperiod, `YYYYMMDDHH`.
    pub timeperiod: String,
    /// The lease's fencing token.
    pub token: i64,
    /// The user the engine ran as.
    pub user: String,
}

impl Model for RunDoc {
    const COLLECTION: &'static str = "flow_run";
    /// Runs have no natural key; the unique index is on the id.
    const KEY: &'static [&'static str] = &["_id"];
    fn extra_indexes() -> Vec<IndexModel> {
        vec![IndexModel::builder()
            .keys(doc! { "flow_name": 1, "timeperiod": 1, "started_at": -1 })
            .build()]
    }
}

impl RunDoc {
    /// The document for `r`.
    pub fn from_record(r: &RunRecord) -> Result<Self, Unreadable> {
        Ok(RunDoc {
            id: r.id.as_ref().map(object_id).transpose()?,
            error: r.error.clone(),
            finished_at: r.finished_at.map(BsonDate::from_chrono),
            flow_name: r.flow_name.clone(),
            host: r.host.clone(),
            mode: r.mode.as_str().to_string(),
            outcome: r.outcome.map(|s| s.as_str().to_string()),
            owner: r.owner.clone(),
            started_at: BsonDate::from_chrono(r.started_at),
            steps: r.steps.clone(),
            target: r.target.clone(),
            timeperiod: r.timeperiod.to_string(),
            token: i64::try_from(r.token).unwrap_or(i64::MAX),
            user: r.user.clone(),
        })
    }

    /// The record this document stands for.
    pub fn to_record(&self) -> Result<RunRecord, Unreadable> {
        Ok(RunRecord {
            id: self.id.map(|oid| RecordId::new(oid.to_hex())),
            flow_name: self.flow_name.clone(),
            timeperiod: timeperiod(&self.timeperiod, "timeperiod")?,
            mode: run_mode(Some(&self.mode))?,
            target: self.target.clone(),
            owner: self.owner.clone(),
            token: u64::try_from(self.token)
                .map_err(|_| format!("token: {} is negative", self.token))?,
            host: self.host.clone(),
            user: self.user.clone(),
            started_at: self.started_at.to_chrono(),
            finished_at: self.finished_at.map(BsonDate::to_chrono),
            outcome: self
                .outcome
                .as_deref()
                .map(|s| {
                    FlowState::parse(s).ok_or_else(|| format!("outcome: unknown flow state '{s}'"))
                })
                .transpose()?,
            steps: self.steps.clone(),
            error: self.error.clone(),
        })
    }
}

/// A cluster a run launched (ours: `flow_cluster`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterDoc {
    /// The document's `_id`.
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none", default)]
    pub id: Option<ObjectId>,
    /// The flow's name.
    pub flow_name: String,
    /// The cluster's durable handle.
    pub handle: ClusterHandle,
    /// When it was asked for.
    pub launched_at: BsonDate,
    /// The latest problem (launch or termination failure), masked.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
    /// The `_id` of the run that launched it.
    pub run: ObjectId,
    /// The cluster's state, e.g. `up` or `terminated`.
    pub state: String,
    /// The processing timeperiod, `YYYYMMDDHH`.
    pub timeperiod: String,
    /// When the record last changed.
    pub updated_at: BsonDate,
    /// Its instances and billed time; absent in documents written before
    /// it existed (read as unknown).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub usage: Option<UsageDoc>,
}

/// A cluster's instances and billed time (`flow_core::ClusterUsage`, with a
/// BSON date).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageDoc {
    /// When it stopped counting for its run.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ended_at: Option<BsonDate>,
    /// Its instance groups, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub instances: Option<Vec<InstanceGroup>>,
    /// What the backend reported (EMR's normalized instance hours).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub normalized_instance_hours: Option<f64>,
}

impl Model for ClusterDoc {
    const COLLECTION: &'static str = "flow_cluster";
    const KEY: &'static [&'static str] = &["_id"];
    fn extra_indexes() -> Vec<IndexModel> {
        vec![IndexModel::builder()
            .keys(doc! { "flow_name": 1, "timeperiod": 1, "launched_at": 1 })
            .build()]
    }
}

impl ClusterDoc {
    /// The document for `r`.
    pub fn from_record(r: &ClusterRecord) -> Result<Self, Unreadable> {
        Ok(ClusterDoc {
            id: r.id.as_ref().map(object_id).transpose()?,
            flow_name: r.flow_name.clone(),
            handle: r.handle.clone(),
            launched_at: BsonDate::from_chrono(r.launched_at),
            message: r.message.clone(),
            run: object_id(&r.run)?,
            state: r.state.as_str().to_string(),
            timeperiod: r.timeperiod.to_string(),
            updated_at: BsonDate::from_chrono(r.updated_at),
            usage: (r.usage != ClusterUsage::default()).then(|| UsageDoc {
                ended_at: r.usage.ended_at.map(BsonDate::from_chrono),
                instances: r.usage.instances.clone(),
                normalized_instance_hours: r.usage.normalized_instance_hours,
            }),
        })
    }

    /// The record this document stands for.
    pub fn to_record(&self) -> Result<ClusterRecord, Unreadable> {
        Ok(ClusterRecord {
            id: self.id.map(|oid| RecordId::new(oid.to_hex())),
            flow_name: self.flow_name.clone(),
            timeperiod: timeperiod(&self.timeperiod, "timeperiod")?,
            run: RecordId::new(self.run.to_hex()),
            handle: self.handle.clone(),
            state: ClusterState::parse(&self.state)
                .ok_or_else(|| format!("state: unknown cluster state '{}'", self.state))?,
            launched_at: self.launched_at.to_chrono(),
            updated_at: self.updated_at.to_chrono(),
            message: self.message.clone(),
            usage: self
                .usage
                .as_ref()
                .map(|u| ClusterUsage {
                    instances: u.instances.clone(),
                    ended_at: u.ended_at.map(BsonDate::to_chrono),
                    normalized_instance_hours: u.normalized_instance_hours,
                })
                .unwrap_or_default(),
        })
    }
}

/// One recorded log line (`log_recording`, shared with Synergy's scheduler).
///
/// Synergy's scheduler keeps one document per unit of work there, keyed by
/// a unique index on `parent_object_id`; each line here carries its own id
/// in that field, so both kinds of document live in one collection, and
/// Synergy's TTL index on `created_at` (if the database has one) expires
/// these lines too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogDoc {
    /// The document's `_id`.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// When the record was first written.
    pub created_at: BsonDate,
    /// The flow's name.
    pub flow_name: String,
    /// The severity, e.g. `INFO`.
    pub level: String,
    /// `STEP`, `STEP.ACTION`, or the flow name.
    pub logger: String,
    /// The text (masked).
    pub message: String,
    /// This line's own id (the collection's unique key; see above).
    pub parent_object_id: ObjectId,
    /// Its place in the flow's log.
    pub position: i64,
    /// The run's id as hex text: log lines are filtered by it, and some
    /// wire-protocol servers cannot match ObjectIds outside `_id`.
    pub run: String,
    /// The step's name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub step_name: Option<String>,
    /// The processing timeperiod, `YYYYMMDDHH`.
    pub timeperiod: String,
}

impl Model for LogDoc {
    const COLLECTION: &'static str = "log_recording";
    const KEY: &'static [&'static str] = &["flow_name", "timeperiod", "position"];
    fn extra_indexes() -> Vec<IndexModel> {
        vec![IndexModel::builder()
            .keys(doc! { "created_at": 1 })
            .options(
                IndexOptions::builder()
                    .partial_filter_expression(Self::partial_filter())
                    .build(),
            )
            .build()]
    }
    /// Only this engine's lines carry `position`; Synergy's recordings
    /// (`parent_object_id`, `log`, `details`, `created_at`) never do.
    /// (`$exists: true` is what partial indexes accept; `$exists: false`
    /// is not.)
    fn partial_filter() -> Option<bson::Document> {
        Some(doc! { "position": { "$exists": true } })
    }
}

impl LogDoc {
    /// The document for `line` at `position`.
    pub fn from_line(line: &LogLine, position: u64) -> Result<Self, Unreadable> {
        let id = ObjectId::new();
        Ok(LogDoc {
            id,
            created_at: BsonDate::from_chrono(line.at),
            flow_name: line.flow_name.clone(),
            level: line.level.as_str().to_string(),
            logger: line.logger.clone(),
            message: line.message.clone(),
            parent_object_id: id,
            position: i64::try_from(position).unwrap_or(i64::MAX),
            run: object_id(&line.run)?.to_hex(),
            step_name: line.step.clone(),
            timeperiod: line.timeperiod.to_string(),
        })
    }

    /// The line this document stands for, with its position.
    pub fn to_line(&self) -> Result<StoredLogLine, Unreadable> {
        Ok(StoredLogLine {
            position: u64::try_from(self.position)
                .map_err(|_| format!("position: {} is negative", self.position))?,
            line: LogLine {
                flow_name: self.flow_name.clone(),
                timeperiod: timeperiod(&self.timeperiod, "timeperiod")?,
                run: RecordId::new(self.run.clone()),
                step: self.step_name.clone(),
                logger: self.logger.clone(),
                level: LogLevel::parse(&self.level)
                    .ok_or_else(|| format!("level: unknown '{}'", self.level))?,
                at: self.created_at.to_chrono(),
                message: self.message.clone(),
            },
        })
    }
}

/// The last log position handed out for a flow (ours: `flow_log_counter`),
/// bumped once per appended batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterDoc {
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none", default)]
    pub id: Option<ObjectId>,
    pub flow_name: String,
    pub position: i64,
    pub timeperiod: String,
}

impl Model for CounterDoc {
    const COLLECTION: &'static str = "flow_log_counter";
    const KEY: &'static [&'static str] = &["flow_name", "timeperiod"];
}

/// Every collection's indexes, for start-up: `(collection, indexes)`.
pub fn all_indexes() -> Vec<(&'static str, Vec<IndexModel>)> {
    use crate::odm::Collection;
    let runs = vec![IndexModel::builder()
        .keys(doc! { "flow_name": 1, "timeperiod": 1, "started_at": -1 })
        .build()];
    let clusters = ClusterDoc::extra_indexes();
    vec![
        (FlowDoc::COLLECTION, Collection::<FlowDoc>::indexes()),
        (StepDoc::COLLECTION, Collection::<StepDoc>::indexes()),
        (LeaseDoc::COLLECTION, Collection::<LeaseDoc>::indexes()),
        (RunDoc::COLLECTION, runs),
        (ClusterDoc::COLLECTION, clusters),
        (LogDoc::COLLECTION, Collection::<LogDoc>::indexes()),
        (CounterDoc::COLLECTION, Collection::<CounterDoc>::indexes()),
    ]
    .into_iter()
    .chain(crate::jobs::job_indexes())
    .collect()
}
