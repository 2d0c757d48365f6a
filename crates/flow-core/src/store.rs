//! The `FlowStore` trait: where flow state lives.
//!
//! Every state change goes through here and is durable when the call
//! returns, so a crash leaves a truthful record for `recover`.
//!
//! Writes to flow, step, run and cluster records are *fenced*: each carries
//! the [`Lease`] its engine holds, and the store applies it only if that
//! lease's token is still the current one for the flow, atomically with the
//! write. An engine that stalled (a GC pause, a suspended VM, a partition)
//! while another took its stale lease over can therefore write nothing when
//! it wakes: it gets [`StoreError::Fenced`] and stops.

use crate::cluster::ClusterHandle;
use crate::job::{JobKey, JobQuery, JobTally, TimetableJob};
use crate::record::{
    ClusterRecord, FlowKey, FlowRecord, LogLine, RecordId, RunRecord, StepRecord, StoredLogLine,
};
use crate::shared_cluster::{ClusterClaim, ClusterRelease, SharedClusterKey};
use crate::state::FlowState;
use crate::timeperiod::{TimeQualifier, Timeperiod};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// A store failure, naming the operation and the flow it concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open store at {location}: {message}")]
    /// The store cannot be opened or created.
    Open {
        /// The file or server.
        location: String,
        /// Why.
        message: String,
    },
    /// A call failed.
    #[error("store operation '{operation}' failed for {key}: {message}")]
    Operation {
        /// The store call, e.g. `save_step`.
        operation: &'static str,
        /// The flow (`[name, timeperiod]`) or record concerned.
        key: String,
        /// The backend's reason.
        message: String,
    },
    /// A stored record cannot be read back.
    #[error("store holds an unreadable {what} for {key}: {message}")]
    Corrupt {
        /// What was being read, e.g. `step record`.
        what: &'static str,
        /// The flow (`[name, timeperiod]`) or record concerned.
        key: String,
        /// Why.
        message: String,
    },
    /// The write's lease is no longer the flow's current one: another engine
    /// took it over. Nothing was written.
    #[error("lost the run lease of {key}: lease token {token} is no longer current{}", holder_text(.holder))]
    Fenced {
        /// The flow whose lease was lost.
        key: String,
        /// The token the write carried.
        token: u64,
        /// Who holds the lease now, if anyone.
        holder: Option<String>,
    },
    /// The store was closed.
    #[error("store is closed")]
    Closed,
    /// The caller named a record by an id this store cannot hold (a
    /// malformed run id, say): bad input rather than a store failure.
    /// Nothing was read or written.
    #[error("{what} id '{id}' is not an id of this store: {message}")]
    InvalidId {
        /// What the id names, e.g. `run`.
        what: &'static str,
        /// The id as given.
        id: String,
        /// The form this store's ids take.
        message: String,
    },
}

fn holder_text(holder: &Option<String>) -> String {
    match holder {
        Some(owner) => format!(" (now held by {owner})"),
        None => String::new(),
    }
}

impl StoreError {
    /// True when the error means this engine lost its lease.
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }
}

/// A held run lease: the right to write a flow's records. The token grows
/// with every acquisition of the flow's lease (by anyone, release included),
/// so a newer holder always has a larger one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The flow the lease is for.
    pub key: FlowKey,
    /// The owner id (host, pid, random part).
    pub owner: String,
    /// The fencing token; larger for every newer acquisition.
    pub token: u64,
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The caller now holds the lease.
    Acquired(Lease),
    /// Another live owner holds it.
    HeldBy {
        /// The owner id of the live holder.
        owner: String,
        /// The holder's latest heartbeat.
        heartbeat_at: DateTime<Utc>,
    },
}

/// A flow's lease as stored, for status and orphan checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// `None` once released.
    pub owner: Option<String>,
    /// The latest token.
    pub token: u64,
    /// When the latest holder took it.
    pub acquired_at: DateTime<Utc>,
    /// The latest holder's heartbeat.
    pub heartbeat_at: DateTime<Utc>,
}

impl LeaseInfo {
    /// True when a run holds it and its heartbeat is newer than `now - ttl`.
    pub fn is_live(&self, now: DateTime<Utc>, ttl: Duration) -> bool {
        self.owner.is_some()
            && chrono::TimeDelta::from_std(ttl)
                .ok()
                .and_then(|ttl| now.checked_sub_signed(ttl))
                .is_none_or(|cutoff| self.heartbeat_at > cutoff)
    }
}

/// Where a run stands, as its record and its flow's lease tell: the one
/// rule every reader (`flow history`, the viewer) applies, so one fact has
/// one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStanding {
    /// Its engine holds the flow's lease.
    Running,
    /// Its end is recorded.
    Finished,
    /// Its engine stopped without recording the end (killed, fenced, or the
    /// store failed) and no longer holds the lease.
    Abandoned,
}

impl RunStanding {
    /// `run`'s standing given its flow's `lease` (as stored, if any) at
    /// `now`, leases living `ttl` without a heartbeat.
    pub fn of(
        run: &RunRecord,
        lease: Option<&LeaseInfo>,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Self {
        if run.finished_at.is_some() {
            RunStanding::Finished
        } else if lease
            .is_some_and(|l| l.owner.as_deref() == Some(run.owner.as_str()) && l.is_live(now, ttl))
        {
            RunStanding::Running
        } else {
            RunStanding::Abandoned
        }
    }

    /// The word for it, as JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStanding::Running => "running",
            RunStanding::Finished => "finished",
            RunStanding::Abandoned => "abandoned",
        }
    }
}

/// Which flow records to list, newest timeperiod first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowQuery {
    /// Only this flow's records.
    pub flow_name: Option<String>,
    /// Only records in this state.
    pub state: Option<FlowState>,
    /// Timeperiods at or after this one.
    pub from: Option<Timeperiod>,
    /// Timeperiods before this one.
    pub to: Option<Timeperiod>,
    /// At most this many (all when `None`), after skipping `offset`.
    pub limit: Option<usize>,
    /// Records to skip before the first returned.
    pub offset: usize,
}

impl FlowQuery {
    /// Every flow record of `flow_name`, or of every flow.
    pub fn named(flow_name: Option<&str>) -> Self {
        FlowQuery {
            flow_name: flow_name.map(str::to_string),
            ..FlowQuery::default()
        }
    }
}

/// Which runs to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only this flow's runs.
    pub flow_name: Option<String>,
    /// Only runs of this timeperiod.
    pub timeperiod: Option<Timeperiod>,
    /// At most this many (all when `None`).
    pub limit: Option<usize>,
}

/// Which recorded log lines to read, in position order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// The flow whose lines to read.
    pub key: FlowKey,
    /// Only this step's lines; `Some("")` is not special.
    pub step: Option<String>,
    /// Only this run's lines.
    pub run: Option<RecordId>,
    /// Only lines after this position.
    pub after: Option<u64>,
    /// At most this many lines.
    pub limit: usize,
}

impl LogQuery {
    /// The first `limit` lines of every run of `key`.
    pub fn new(key: FlowKey, limit: usize) -> Self {
        LogQuery {
            key,
            step: None,
            run: None,
            after: None,
            limit,
        }
    }
}

/// Durable storage of flow and step records, runs, clusters, log lines and
/// run leases.
///
/// What an implementation must guarantee (the conformance suite in
/// `flow_core::testkit` checks each):
/// - Every call is durable when it returns.
/// - `acquire_lease` is atomic (a conditional write, not read-then-write):
///   among concurrent acquirers of a free or stale lease exactly one wins,
///   and each acquisition gets a larger token than any before it.
/// - Writes taking a [`Lease`] are fenced: applied only if that lease's
///   token is still current, atomically with the write; otherwise they fail
///   with [`StoreError::Fenced`] and write nothing.
/// - `begin_run` is atomic, or, where the backend cannot do that, ordered
///   so that an interruption leaves a state `recover` handles (documented by
///   the backend).
/// - `claim_cluster` and `release_cluster` are atomic: among concurrent
///   claimants of a free shared name exactly one gets
///   [`ClusterClaim::Launch`]; they apply the rules of
///   [`SharedCluster`](crate::SharedCluster).
/// - Log positions grow in append order within a flow, so paging by
///   `after` never skips or repeats a line.
/// - Records read back as written (timestamps to the millisecond, ids as
///   strings), including records an older version of the store wrote.
///
/// The suite is `flow_core::testkit::store::store_conformance` (feature
/// `testkit`); `flow-store-sqlite`'s example `counting_store` runs it on a
/// store of its own.
#[async_trait]
pub trait FlowStore: Send + Sync {
    /// The flow record of `key`, if one exists.
    async fn get_flow(&self, key: &FlowKey) -> Result<Option<FlowRecord>, StoreError>;

    /// Every step record of `key`.
    async fn get_steps(&self, key: &FlowKey) -> Result<Vec<StepRecord>, StoreError>;

    /// Flow records matching `query`, newest timeperiod first.
    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError>;

    /// Takes the run lease of `key` for `owner` unless another owner's lease
    /// has a heartbeat newer than `now - ttl`. Atomic; the new lease's token
    /// is larger than every earlier one of `key`.
    async fn acquire_lease(
        &self,
        key: &FlowKey,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError>;

    /// Moves the lease's heartbeat to `now`. False when the lease is no
    /// longer this one (taken over or released).
    async fn renew_lease(&self, lease: &Lease, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Gives the lease up; a no-op if it is no longer this one. The token is
    /// kept, so the next acquisition still gets a larger one.
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;

    /// The lease of `key` as stored, if it was ever taken.
    async fn get_lease(&self, key: &FlowKey) -> Result<Option<LeaseInfo>, StoreError>;

    /// Starts a run, atomically: saves `flow`, deletes every step record of
    /// the flow when `purge_steps`, saves `steps` (those without a
    /// `related_flow` get the flow's id), and inserts `run`. Returns the flow
    /// and the run with their ids. Fenced.
    async fn begin_run(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        purge_steps: bool,
        steps: &[StepRecord],
        run: &RunRecord,
    ) -> Result<(FlowRecord, RunRecord), StoreError>;

    /// Inserts or updates the flow record (matched by flow name and
    /// timeperiod) and returns it with its id. Fenced.
    async fn save_flow(&self, lease: &Lease, flow: &FlowRecord) -> Result<FlowRecord, StoreError>;

    /// Inserts or updates one step record (matched by flow name, timeperiod
    /// and step name) and returns its id. Fenced.
    async fn save_step(&self, lease: &Lease, step: &StepRecord) -> Result<RecordId, StoreError>;

    /// Saves the flow record and step records in one atomic write (`flow
    /// cancel`, `flow rollback`). Fenced.
    async fn save_flow_and_steps(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        steps: &[StepRecord],
    ) -> Result<FlowRecord, StoreError>;

    /// Updates a run record (matched by id) when the run ends. Fenced.
    async fn finish_run(&self, lease: &Lease, run: &RunRecord) -> Result<(), StoreError>;

    /// Runs of a flow, newest first.
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError>;

    /// Inserts (no id) or updates (id) a cluster record. Fenced by the lease
    /// of the cluster's flow.
    async fn save_cluster(
        &self,
        lease: &Lease,
        cluster: &ClusterRecord,
    ) -> Result<RecordId, StoreError>;

    /// Cluster records of `key`, or of every flow, oldest first.
    async fn list_clusters(&self, key: Option<&FlowKey>) -> Result<Vec<ClusterRecord>, StoreError>;

    /// Decides, atomically, whether run `run` (holding `lease`) launches the
    /// shared cluster `cluster`, joins it as a user, or waits, by
    /// [`SharedCluster::claim`](crate::SharedCluster::claim); users whose
    /// lease is not live at `now` with `ttl` count for nothing. Fenced.
    async fn claim_cluster(
        &self,
        lease: &Lease,
        run: &RecordId,
        cluster: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClusterClaim, StoreError>;

    /// Records the handle of the shared cluster whose launch this lease
    /// claimed, so waiting runs join it. Fails unless the caller is its
    /// launcher. Fenced.
    async fn set_cluster_handle(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        handle: &ClusterHandle,
    ) -> Result<(), StoreError>;

    /// Removes this lease's run from the users of `cluster`, atomically, by
    /// [`SharedCluster::release`](crate::SharedCluster::release): `Last`
    /// when no live user is left (the caller then ends the cluster). A name
    /// with no record answers `Last`. Fenced.
    async fn release_cluster(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClusterRelease, StoreError>;

    /// Deletes the record of `cluster` if its handle names `backend_id`
    /// (the cluster was ended, or found gone), so the next claim launches
    /// anew. Fenced.
    async fn forget_cluster(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        backend_id: &str,
    ) -> Result<(), StoreError>;

    /// Appends log lines (in the order given). Not fenced: a line is
    /// attributed to the run that wrote it.
    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError>;

    /// Recorded log lines matching `query`, in position order.
    async fn read_logs(&self, query: &LogQuery) -> Result<Vec<StoredLogLine>, StoreError>;

    /// The position of the last log line recorded for `key` (0 when it
    /// has none): where a reader that wants only lines still to come
    /// starts. Found through an index, never by reading the lines, so it
    /// costs the same for a run of a million lines as for one of ten.
    async fn last_log_position(&self, key: &FlowKey) -> Result<u64, StoreError>;

    /// Deletes log lines recorded before `before`; returns how many.
    async fn purge_logs(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Inserts `job` unless a Job of its key exists; returns the stored one
    /// either way (several schedulers may create the same `embryo` at once:
    /// one insert wins, all get it). Not fenced: creating is idempotent.
    async fn create_job(&self, job: &TimetableJob) -> Result<TimetableJob, StoreError>;

    /// The Job of `key`, if one exists.
    async fn get_job(&self, key: &JobKey) -> Result<Option<TimetableJob>, StoreError>;

    /// Updates a Job (matched by its key) and returns it. Fenced by the
    /// lease of the Job's claim key ([`JobKey::claim_key`]): only the
    /// current claimant moves a Job.
    async fn save_job(&self, lease: &Lease, job: &TimetableJob)
        -> Result<TimetableJob, StoreError>;

    /// Jobs matching `query`, oldest timeperiod first (newest first when
    /// it asks), then by flow name.
    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<TimetableJob>, StoreError>;

    /// How many of `process_name`'s Jobs of qualifier `q` there are per
    /// state and `number_of_failures` (rows with no Job left out, in no
    /// particular order). Counted by the store through an index, without
    /// reading the Jobs: `flow serve` asks at every `/metrics` scrape, on a
    /// timetable of any length.
    async fn tally_jobs(
        &self,
        process_name: &str,
        q: TimeQualifier,
    ) -> Result<Vec<JobTally>, StoreError>;

    /// How many of `flow_name`'s flow records (its timeperiods) are marked
    /// with an SLA miss (`sla_missed_at`). Counted by the store through an
    /// index holding the mark, without reading the records: `flow serve`
    /// asks at every `/metrics` scrape, on a history of any length.
    async fn count_sla_missed(&self, flow_name: &str) -> Result<u64, StoreError>;
}
