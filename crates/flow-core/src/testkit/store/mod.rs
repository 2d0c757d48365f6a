//! The store conformance suite: the guarantees of [`FlowStore`], checked the
//! same way on every backend.
//!
//! A backend's test opens an empty store (a fresh file, a fresh database),
//! describes it in a [`StoreUnderTest`] and calls [`store_conformance`]. Each
//! check panics with a message naming the operation; a check a backend
//! cannot take (no fault hook for `begin_run`, no older-schema fixtures)
//! fails the suite too, unless the run allows it to skip
//! ([`crate::testkit::skip_check`]): then it prints `SKIPPED: ...`.
//!
//! Run it on a multi-threaded tokio runtime: the lease race and the
//! concurrent log writers are spawned tasks, and only several worker
//! threads make them race for real.
//!
//! Timestamps the suite writes are whole milliseconds (what BSON dates
//! keep), so every backend can return them exactly.

mod begin_run;
mod jobs;
mod lease;
mod logs;
mod records;
mod shared;

use crate::cluster::{ClusterHandle, JobHandle};
use crate::record::{
    ClusterRecord, ClusterState, FlowKey, FlowRecord, JobRecord, LogLevel, LogLine, RecordId,
    RollbackCause, RollbackRecord, RunRecord, RunStep, StepRecord, StoredLogLine,
};
use crate::state::{ActionSetState, FlowState, RunMode, StepState};
use crate::store::{FlowQuery, FlowStore, Lease, LeaseOutcome, LogQuery, RunQuery, StoreError};
use crate::timeperiod::Timeperiod;
use chrono::{DateTime, TimeZone, Utc};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// How a backend makes `begin_run`'s several writes safe.
#[derive(Clone)]
pub enum BeginRunKind {
    /// All or nothing (one transaction): an interrupted `begin_run` leaves
    /// the store exactly as it was.
    Atomic,
    /// Ordered writes without a transaction: an interrupted `begin_run`
    /// leaves a state that a retry completes, and never one where the flow
    /// record shows the new run next to step records of a purged run.
    Ordered,
}

/// A fault hook: makes the next `begin_run` on the store stop after `n` of
/// its writes and return an error, as if the process died there. The
/// backend says how many writes a `begin_run` makes (`writes`).
#[derive(Clone)]
pub struct Interrupt {
    /// Writes one `begin_run` of the suite makes (it saves a flow, purges,
    /// saves two steps and inserts a run), i.e. the interruption points
    /// `0..writes` to try.
    pub writes: usize,
    /// Arms the hook for the next `begin_run`.
    pub arm: Arc<dyn Fn(usize) + Send + Sync>,
}

/// Records a backend wrote into the store in an older schema (rows or
/// documents as an older version, or Synergy Flow, wrote them) before the
/// suite ran, and what they must read back as.
#[derive(Debug, Clone)]
pub struct LegacyFixture {
    /// Where the fixture came from, for messages.
    pub name: String,
    /// The flow record as it must read back.
    pub flow: FlowRecord,
    /// The step records as they must read back.
    pub steps: Vec<StepRecord>,
}

/// The store under test.
pub struct StoreUnderTest {
    /// Handles on one empty store: several when the backend can open more
    /// than one connection (each acts as one engine in the races). At
    /// least one.
    pub handles: Vec<Arc<dyn FlowStore>>,
    /// How the backend makes `begin_run` safe.
    pub begin_run: BeginRunKind,
    /// `None` when the backend has no fault hook: the interruption checks
    /// then fail the suite unless the run allows `store-interrupt` to skip
    /// ([`crate::testkit::skip_check`]).
    pub interrupt: Option<Interrupt>,
    /// Older-schema records the backend loaded before the suite (they must
    /// not share a flow name with the suite's `conformance-*` flows). Empty
    /// fails the suite unless the run allows `store-legacy` to skip.
    pub legacy: Vec<LegacyFixture>,
}

/// Concurrent acquirers in the lease race.
const TTL: Duration = Duration::from_secs(60);

/// Runs every check on `store`.
pub async fn store_conformance(store: StoreUnderTest) {
    assert!(
        !store.handles.is_empty(),
        "store_conformance needs at least one store handle"
    );
    let suite = Suite { s: store };
    suite.legacy_fixtures_read_back().await;
    suite.crud_by_key().await;
    suite.list_flows_filters().await;
    suite.sla_misses_counted().await;
    suite.begin_run_and_purge().await;
    suite.begin_run_interrupted().await;
    suite.lease_lifecycle().await;
    suite.lease_race().await;
    suite.fencing().await;
    suite.runs().await;
    suite.clusters().await;
    suite.shared_clusters().await;
    suite.logs_in_order_under_concurrent_writers().await;
    suite.log_filters_and_purge().await;
    suite.ids_round_trip_as_strings().await;
    suite.jobs().await;
}

struct Suite {
    s: StoreUnderTest,
}

/// A whole-millisecond instant: `2026-11-28T07:00:00Z` plus `ms`.
pub fn at(ms: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 7, 0, 0)
        .single()
        .map(|t| t + chrono::TimeDelta::milliseconds(ms))
        .unwrap_or_default()
}

fn tp(text: &str) -> Timeperiod {
    text.parse()
        .unwrap_or_else(|e| panic!("bad timeperiod {text}: {e}"))
}

fn key(name: &str) -> FlowKey {
    FlowKey::new(format!("conformance-{name}"), tp("2026112800"))
}

fn ok<T>(op: &str, what: &dyn std::fmt::Display, result: Result<T, StoreError>) -> T {
    result.unwrap_or_else(|e| panic!("{op} of {what} failed: {e}"))
}

fn expect_fenced<T: Debug>(op: &str, what: &dyn std::fmt::Display, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::Fenced { .. }) => {}
        other => panic!(
            "{op} of {what} with a stale lease token: expected StoreError::Fenced, got {other:?}"
        ),
    }
}

/// A flow record as a fresh run writes it.
pub fn flow_record(key: &FlowKey, state: FlowState, t: i64) -> FlowRecord {
    FlowRecord {
        id: None,
        flow_name: key.flow_name.clone(),
        timeperiod: key.timeperiod,
        start_timeperiod: key.timeperiod,
        end_timeperiod: tp("2026112900"),
        state,
        run_mode: RunMode::Nominal,
        created_at: at(t),
        started_at: Some(at(t + 1)),
        finished_at: None,
        graph_hash: Some("sha256:0f3a".into()),
        sla_missed_at: Some(at(t + 3)),
        trace_parent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    }
}

/// A step record with every optional part filled.
pub fn step_record(key: &FlowKey, step: &str, state: StepState, t: i64) -> StepRecord {
    let mut record = StepRecord::embryo(&key.flow_name, step, key.timeperiod, None, at(t));
    record.state = state;
    record.started_at = Some(at(t + 2));
    record.pre_state = ActionSetState::Complete;
    record.main_state = ActionSetState::Running;
    record.attempts = 2;
    record.actions_done = 1;
    record.error = Some(format!("{step}: exit code 1\nsecond line"));
    record.job = Some(JobRecord {
        action_index: 1,
        action: "shell".into(),
        attempt: 2,
        handle: JobHandle::new(
            "local",
            "local-0",
            [("pid", "4242"), ("dir", "/var/tmp/jobs/7")],
        ),
        submitted_at: at(t + 3),
        adopted: false,
    });
    record.rollbacks = vec![RollbackRecord {
        action: "cleanup".into(),
        cause: RollbackCause::StepFailed,
        at: at(t + 4),
        error: None,
    }];
    record
}

fn run_record(lease: &Lease, mode: RunMode, t: i64) -> RunRecord {
    RunRecord {
        id: None,
        flow_name: lease.key.flow_name.clone(),
        timeperiod: lease.key.timeperiod,
        mode,
        target: None,
        owner: lease.owner.clone(),
        token: lease.token,
        host: "host-a".into(),
        user: "alice".into(),
        started_at: at(t),
        finished_at: None,
        outcome: None,
        steps: vec![RunStep {
            step_name: "extract".into(),
            state: StepState::Embryo,
        }],
        error: None,
    }
}

fn cluster_record(key: &FlowKey, run: &RecordId, name: &str, t: i64) -> ClusterRecord {
    ClusterRecord {
        id: None,
        flow_name: key.flow_name.clone(),
        timeperiod: key.timeperiod,
        run: run.clone(),
        handle: ClusterHandle {
            kind: "emr".into(),
            name: name.into(),
            backend_id: format!("j-{name}"),
            reused: false,
            details: BTreeMap::from([("region".to_string(), "eu-west-1".to_string())]),
        },
        state: ClusterState::Launching,
        launched_at: at(t),
        updated_at: at(t),
        message: None,
        usage: crate::cost::ClusterUsage {
            instances: Some(vec![crate::cost::InstanceGroup {
                role: "CORE".into(),
                instance_type: "m5.xlarge".into(),
                market: crate::cost::Market::Spot,
                count: 4,
            }]),
            ..Default::default()
        },
    }
}

fn line(key: &FlowKey, run: &RecordId, step: Option<&str>, message: String, t: i64) -> LogLine {
    LogLine {
        flow_name: key.flow_name.clone(),
        timeperiod: key.timeperiod,
        run: run.clone(),
        step: step.map(str::to_string),
        logger: step.map_or_else(|| key.flow_name.clone(), |s| format!("{s}.shell")),
        level: LogLevel::Info,
        at: at(t),
        message,
    }
}

/// Everything stored about a flow, to show that a refused write changed
/// nothing.
#[derive(Debug, PartialEq)]
struct Snapshot {
    flow: Option<FlowRecord>,
    steps: Vec<StepRecord>,
    runs: Vec<RunRecord>,
    clusters: Vec<ClusterRecord>,
}

fn by_name(mut steps: Vec<StepRecord>) -> Vec<StepRecord> {
    steps.sort_by(|a, b| a.step_name.cmp(&b.step_name));
    steps
}

impl Suite {
    fn store(&self) -> &Arc<dyn FlowStore> {
        &self.s.handles[0]
    }

    /// Handle `i`, round robin.
    fn handle(&self, i: usize) -> Arc<dyn FlowStore> {
        self.s.handles[i % self.s.handles.len()].clone()
    }

    async fn lease(&self, key: &FlowKey, owner: &str, now: i64) -> Lease {
        match ok(
            "acquire_lease",
            key,
            self.store().acquire_lease(key, owner, at(now), TTL).await,
        ) {
            LeaseOutcome::Acquired(lease) => {
                assert_eq!(
                    &lease.key, key,
                    "acquire_lease of {key}: lease names another key"
                );
                assert_eq!(
                    lease.owner, owner,
                    "acquire_lease of {key}: lease names another owner"
                );
                lease
            }
            LeaseOutcome::HeldBy { owner: other, .. } => {
                panic!("acquire_lease of {key} for {owner}: unexpectedly held by {other}")
            }
        }
    }

    async fn snapshot(&self, key: &FlowKey) -> Snapshot {
        let store = self.store();
        Snapshot {
            flow: ok("get_flow", key, store.get_flow(key).await),
            steps: by_name(ok("get_steps", key, store.get_steps(key).await)),
            runs: ok(
                "list_runs",
                key,
                store
                    .list_runs(&RunQuery {
                        flow_name: Some(key.flow_name.clone()),
                        timeperiod: Some(key.timeperiod),
                        limit: None,
                    })
                    .await,
            ),
            clusters: ok("list_clusters", key, store.list_clusters(Some(key)).await),
        }
    }
}
