//! The store conformance suite: the guarantees of [`FlowStore`], checked the
//! same way on every backend.
//!
//! A backend's test opens an empty store (a fresh file, a fresh database),
//! describes it in a [`StoreUnderTest`] and calls [`store_conformance`]. Each
//! check panics with a message naming the operation; checks a backend cannot
//! run (no fault hook for `begin_run`) print `SKIPPED: ...` on stderr, so a
//! reader of the test output sees what did not run.
//!
//! Run it on a multi-threaded tokio runtime: the lease race and the
//! concurrent log writers are spawned tasks, and only several worker
//! threads make them race for real.
//!
//! Timestamps the suite writes are whole milliseconds (what BSON dates
//! keep), so every backend can return them exactly.

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
    /// `None` when the backend has no fault hook; the interruption checks
    /// are then reported skipped.
    pub interrupt: Option<Interrupt>,
    /// Older-schema records the backend loaded before the suite (they must
    /// not share a flow name with the suite's `conformance-*` flows).
    pub legacy: Vec<LegacyFixture>,
}

/// Concurrent acquirers in the lease race.
const RACERS: usize = 16;
/// Concurrent writers, batches per writer and lines per batch in the log
/// order check.
const LOG_WRITERS: usize = 6;
const LOG_BATCHES: usize = 10;
const LOG_BATCH_LINES: usize = 7;
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
    suite.begin_run_and_purge().await;
    suite.begin_run_interrupted().await;
    suite.lease_lifecycle().await;
    suite.lease_race().await;
    suite.fencing().await;
    suite.runs().await;
    suite.clusters().await;
    suite.logs_in_order_under_concurrent_writers().await;
    suite.log_filters_and_purge().await;
    suite.ids_round_trip_as_strings().await;
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

    async fn legacy_fixtures_read_back(&self) {
        if self.s.legacy.is_empty() {
            eprintln!(
                "SKIPPED: store conformance: older-schema fixtures (the backend supplied none)"
            );
        }
        for fixture in &self.s.legacy {
            let key = fixture.flow.key();
            let what = format!("fixture {} ({key})", fixture.name);
            let flow = ok("get_flow", &what, self.store().get_flow(&key).await)
                .unwrap_or_else(|| panic!("get_flow of {what}: no record"));
            assert_eq!(
                flow, fixture.flow,
                "get_flow of {what}: reads back differently"
            );
            let steps = by_name(ok("get_steps", &what, self.store().get_steps(&key).await));
            assert_eq!(
                steps,
                by_name(fixture.steps.clone()),
                "get_steps of {what}: read back differently"
            );
            // An older record can be taken over and written by this version.
            let lease = self.lease(&key, "fixture-upgrader", 0).await;
            let mut flow = flow.clone();
            flow.state = FlowState::InProgress;
            let saved = ok(
                "save_flow",
                &what,
                self.store().save_flow(&lease, &flow).await,
            );
            assert_eq!(saved.id, fixture.flow.id, "save_flow of {what}: id changed");
            let mut step = steps
                .first()
                .cloned()
                .unwrap_or_else(|| panic!("{what}: a fixture needs at least one step"));
            step.attempts = 1;
            let id = ok(
                "save_step",
                &what,
                self.store().save_step(&lease, &step).await,
            );
            assert_eq!(Some(id), step.id, "save_step of {what}: id changed");
            let again = by_name(ok("get_steps", &what, self.store().get_steps(&key).await));
            assert_eq!(
                again.iter().find(|s| s.step_name == step.step_name),
                Some(&step),
                "save_step of {what}: the updated older record reads back differently"
            );
            ok(
                "release_lease",
                &what,
                self.store().release_lease(&lease).await,
            );
        }
    }

    async fn crud_by_key(&self) {
        let store = self.store();
        let key = key("crud");
        assert_eq!(
            ok("get_flow", &key, store.get_flow(&key).await),
            None,
            "get_flow of {key} in an empty store"
        );
        assert!(
            ok("get_steps", &key, store.get_steps(&key).await).is_empty(),
            "get_steps of {key} in an empty store"
        );
        let lease = self.lease(&key, "crud-owner", 0).await;

        // Insert, then update by key (with and without the id).
        let mut flow = flow_record(&key, FlowState::Embryo, 0);
        let saved = ok("save_flow", &key, store.save_flow(&lease, &flow).await);
        let id = saved
            .id
            .clone()
            .unwrap_or_else(|| panic!("save_flow of {key}: no id returned"));
        flow.id = Some(id.clone());
        assert_eq!(saved, flow, "save_flow of {key}: returned record differs");
        assert_eq!(
            ok("get_flow", &key, store.get_flow(&key).await).as_ref(),
            Some(&flow),
            "get_flow of {key} after insert"
        );
        let mut changed = flow.clone();
        changed.id = None;
        changed.state = FlowState::Processed;
        changed.run_mode = RunMode::Recovery;
        changed.finished_at = Some(at(500));
        changed.graph_hash = None;
        let saved = ok("save_flow", &key, store.save_flow(&lease, &changed).await);
        assert_eq!(
            saved.id.as_ref(),
            Some(&id),
            "save_flow of {key} by key: id changed"
        );
        changed.id = Some(id.clone());
        assert_eq!(
            ok("get_flow", &key, store.get_flow(&key).await).as_ref(),
            Some(&changed),
            "get_flow of {key} after update by key"
        );

        // Steps: insert, update by key, every field round trips.
        let mut a = step_record(&key, "extract", StepState::InProgress, 10);
        a.related_flow = Some(id.clone());
        let a_id = ok("save_step", &key, store.save_step(&lease, &a).await);
        a.id = Some(a_id.clone());
        let mut b = StepRecord::embryo(
            &key.flow_name,
            "load",
            key.timeperiod,
            Some(id.clone()),
            at(11),
        );
        let b_id = ok("save_step", &key, store.save_step(&lease, &b).await);
        b.id = Some(b_id.clone());
        assert_ne!(a_id, b_id, "save_step of {key}: two steps got one id");
        assert_eq!(
            by_name(ok("get_steps", &key, store.get_steps(&key).await)),
            vec![a.clone(), b.clone()],
            "get_steps of {key} after inserts"
        );
        let mut a2 = a.clone();
        a2.id = None;
        a2.state = StepState::Processed;
        a2.finished_at = Some(at(20));
        a2.job = None;
        a2.error = None;
        a2.rollbacks.push(RollbackRecord {
            action: "main".into(),
            cause: RollbackCause::Requested,
            at: at(21),
            error: Some("could not undo".into()),
        });
        let again = ok("save_step", &key, store.save_step(&lease, &a2).await);
        assert_eq!(again, a_id, "save_step of {key} by key: id changed");
        a2.id = Some(a_id);
        assert_eq!(
            by_name(ok("get_steps", &key, store.get_steps(&key).await)),
            vec![a2.clone(), b.clone()],
            "get_steps of {key} after update by key"
        );

        // Flow and steps together.
        let mut f3 = changed.clone();
        f3.state = FlowState::Invalid;
        let mut b3 = b.clone();
        b3.state = StepState::Canceled;
        b3.finished_at = Some(at(30));
        let saved = ok(
            "save_flow_and_steps",
            &key,
            store
                .save_flow_and_steps(&lease, &f3, std::slice::from_ref(&b3))
                .await,
        );
        assert_eq!(
            saved, f3,
            "save_flow_and_steps of {key}: returned flow differs"
        );
        assert_eq!(
            self.snapshot(&key).await.flow.as_ref(),
            Some(&f3),
            "get_flow of {key} after save_flow_and_steps"
        );
        assert_eq!(
            by_name(ok("get_steps", &key, store.get_steps(&key).await)),
            vec![a2, b3],
            "get_steps of {key} after save_flow_and_steps"
        );

        // Another timeperiod of the same flow is another record.
        let other = FlowKey::new(key.flow_name.clone(), tp("2026112900"));
        assert_eq!(
            ok("get_flow", &other, store.get_flow(&other).await),
            None,
            "get_flow of {other}: sees the record of {key}"
        );
        assert!(
            ok("get_steps", &other, store.get_steps(&other).await).is_empty(),
            "get_steps of {other}: sees the steps of {key}"
        );
        let info = ok("get_lease", &key, store.get_lease(&key).await)
            .unwrap_or_else(|| panic!("get_lease of {key}: none after acquire"));
        assert_eq!(
            info.owner.as_deref(),
            Some("crud-owner"),
            "get_lease of {key}: owner"
        );
        assert_eq!(info.token, lease.token, "get_lease of {key}: token");
        assert_eq!(info.acquired_at, at(0), "get_lease of {key}: acquired_at");
        ok("release_lease", &key, store.release_lease(&lease).await);
    }

    async fn list_flows_filters(&self) {
        let store = self.store();
        let name = "conformance-list";
        let periods = ["2026112600", "2026112700", "2026112800", "2026112900"];
        for (i, p) in periods.iter().enumerate() {
            let key = FlowKey::new(name, tp(p));
            let lease = self.lease(&key, "lister", 0).await;
            let state = if i % 2 == 0 {
                FlowState::Processed
            } else {
                FlowState::Invalid
            };
            ok(
                "save_flow",
                &key,
                store
                    .save_flow(&lease, &flow_record(&key, state, i as i64))
                    .await,
            );
            ok("release_lease", &key, store.release_lease(&lease).await);
        }
        let list = |q: FlowQuery| async move {
            ok("list_flows", &name, store.list_flows(&q).await)
                .into_iter()
                .map(|f| f.timeperiod.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            list(FlowQuery::named(Some(name))).await,
            vec!["2026112900", "2026112800", "2026112700", "2026112600"],
            "list_flows of {name}: newest timeperiod first"
        );
        let all = ok(
            "list_flows",
            &"every flow",
            store.list_flows(&FlowQuery::named(None)).await,
        );
        assert!(
            all.iter().filter(|f| f.flow_name == name).count() == 4
                && all.iter().any(|f| f.flow_name == "conformance-crud"),
            "list_flows of every flow: misses records"
        );
        assert_eq!(
            list(FlowQuery {
                state: Some(FlowState::Invalid),
                ..FlowQuery::named(Some(name))
            })
            .await,
            vec!["2026112900", "2026112700"],
            "list_flows of {name} by state"
        );
        assert_eq!(
            list(FlowQuery {
                from: Some(tp("2026112700")),
                to: Some(tp("2026112900")),
                ..FlowQuery::named(Some(name))
            })
            .await,
            vec!["2026112800", "2026112700"],
            "list_flows of {name} with from (inclusive) and to (exclusive)"
        );
        assert_eq!(
            list(FlowQuery {
                limit: Some(2),
                offset: 1,
                ..FlowQuery::named(Some(name))
            })
            .await,
            vec!["2026112800", "2026112700"],
            "list_flows of {name} with limit and offset"
        );
    }

    async fn begin_run_and_purge(&self) {
        let store = self.store();
        let key = key("begin");
        let neighbour = FlowKey::new(key.flow_name.clone(), tp("2026112900"));
        // A neighbour (other timeperiod) whose steps a purge must not touch.
        let nl = self.lease(&neighbour, "neighbour", 0).await;
        ok(
            "save_step",
            &neighbour,
            store
                .save_step(
                    &nl,
                    &step_record(&neighbour, "extract", StepState::Processed, 0),
                )
                .await,
        );

        let lease = self.lease(&key, "begin-owner", 0).await;
        let old_flow = ok(
            "save_flow",
            &key,
            store
                .save_flow(&lease, &flow_record(&key, FlowState::Processed, 0))
                .await,
        );
        for step in ["extract", "obsolete"] {
            ok(
                "save_step",
                &key,
                store
                    .save_step(&lease, &step_record(&key, step, StepState::Processed, 1))
                    .await,
            );
        }
        let mut flow = flow_record(&key, FlowState::InProgress, 0);
        flow.started_at = Some(at(100));
        let steps = vec![
            StepRecord::embryo(&key.flow_name, "extract", key.timeperiod, None, at(100)),
            StepRecord::embryo(&key.flow_name, "load", key.timeperiod, None, at(100)),
        ];
        let run = run_record(&lease, RunMode::Nominal, 100);
        let (flow_back, run_back) = ok(
            "begin_run",
            &key,
            store.begin_run(&lease, &flow, true, &steps, &run).await,
        );
        assert_eq!(
            flow_back.id, old_flow.id,
            "begin_run of {key}: the flow record's id changed"
        );
        let flow_id = flow_back
            .id
            .clone()
            .unwrap_or_else(|| panic!("begin_run of {key}: flow without id"));
        let run_id = run_back
            .id
            .clone()
            .unwrap_or_else(|| panic!("begin_run of {key}: run without id"));
        let snap = self.snapshot(&key).await;
        let mut expected_flow = flow.clone();
        expected_flow.id = Some(flow_id.clone());
        assert_eq!(
            snap.flow,
            Some(expected_flow),
            "get_flow of {key} after begin_run"
        );
        let names: Vec<_> = snap.steps.iter().map(|s| s.step_name.as_str()).collect();
        assert_eq!(
            names,
            ["extract", "load"],
            "begin_run of {key} with purge: old step records remain"
        );
        for s in &snap.steps {
            assert_eq!(
                s.state,
                StepState::Embryo,
                "begin_run of {key}: step {} not as saved",
                s.step_name
            );
            assert_eq!(
                s.related_flow.as_ref(),
                Some(&flow_id),
                "begin_run of {key}: step {} did not get the flow's id as related_flow",
                s.step_name
            );
        }
        let mut expected_run = run.clone();
        expected_run.id = Some(run_id);
        assert_eq!(
            snap.runs,
            vec![expected_run.clone()],
            "list_runs of {key} after begin_run"
        );
        assert_eq!(
            run_back, expected_run,
            "begin_run of {key}: returned run differs"
        );
        assert_eq!(
            ok("get_steps", &neighbour, store.get_steps(&neighbour).await).len(),
            1,
            "begin_run of {key} with purge: deleted steps of {neighbour}"
        );

        // Without purge: other steps stay, given ones are updated by key.
        let mut extract = snap.steps[0].clone();
        extract.id = None;
        extract.state = StepState::InProgress;
        let run2 = run_record(&lease, RunMode::Recovery, 200);
        let (_, run2_back) = ok(
            "begin_run",
            &key,
            store
                .begin_run(&lease, &flow, false, std::slice::from_ref(&extract), &run2)
                .await,
        );
        let snap2 = self.snapshot(&key).await;
        assert_eq!(
            snap2.steps.len(),
            2,
            "begin_run of {key} without purge: step records lost"
        );
        assert_eq!(
            snap2.steps[0].id, snap.steps[0].id,
            "begin_run of {key} without purge: step id changed"
        );
        assert_eq!(
            snap2.steps[0].state,
            StepState::InProgress,
            "begin_run of {key} without purge: step not updated"
        );
        assert_eq!(
            snap2.runs.len(),
            2,
            "list_runs of {key}: a begin_run did not add a run"
        );
        assert_eq!(
            snap2.runs[0].id, run2_back.id,
            "list_runs of {key}: not newest first"
        );
        ok("release_lease", &key, store.release_lease(&lease).await);
        ok("release_lease", &neighbour, store.release_lease(&nl).await);
    }

    async fn begin_run_interrupted(&self) {
        let Some(interrupt) = self.s.interrupt.clone() else {
            eprintln!("SKIPPED: store conformance: begin_run interrupted between writes (the backend has no fault hook)");
            return;
        };
        let store = self.store();
        for point in 0..interrupt.writes {
            let key = key(&format!("interrupt-{point}"));
            let lease = self.lease(&key, "interrupted", 0).await;
            let old = ok(
                "save_flow",
                &key,
                store
                    .save_flow(&lease, &flow_record(&key, FlowState::Invalid, 0))
                    .await,
            );
            for step in ["extract", "obsolete"] {
                ok(
                    "save_step",
                    &key,
                    store
                        .save_step(&lease, &step_record(&key, step, StepState::Processed, 1))
                        .await,
                );
            }
            let before = self.snapshot(&key).await;
            let mut flow = flow_record(&key, FlowState::InProgress, 0);
            flow.started_at = Some(at(100));
            let steps = vec![
                StepRecord::embryo(&key.flow_name, "extract", key.timeperiod, None, at(100)),
                StepRecord::embryo(&key.flow_name, "load", key.timeperiod, None, at(100)),
            ];
            let run = run_record(&lease, RunMode::Nominal, 100);
            (interrupt.arm)(point);
            let result = store.begin_run(&lease, &flow, true, &steps, &run).await;
            assert!(
                result.is_err(),
                "begin_run of {key} interrupted after {point} write(s): returned Ok"
            );
            let after = self.snapshot(&key).await;
            match self.s.begin_run {
                BeginRunKind::Atomic => assert_eq!(
                    after, before,
                    "begin_run of {key} interrupted after {point} write(s): an atomic begin_run left a partial write"
                ),
                BeginRunKind::Ordered => {
                    let shows_new_run = after
                        .flow
                        .as_ref()
                        .is_some_and(|f| f.started_at == flow.started_at);
                    if shows_new_run {
                        assert!(
                            after.steps.iter().all(|s| s.state == StepState::Embryo
                                && s.step_name != "obsolete"),
                            "begin_run of {key} interrupted after {point} write(s): the flow shows the new run next to step records of the purged run: {:?}",
                            after.steps
                        );
                    }
                }
            }
            // A retry (the next engine, or the same one) completes it.
            let (flow_back, _) = ok(
                "begin_run (retry after an interruption)",
                &key,
                store.begin_run(&lease, &flow, true, &steps, &run).await,
            );
            assert_eq!(
                flow_back.id, old.id,
                "begin_run of {key} after an interruption: flow id changed"
            );
            let done = self.snapshot(&key).await;
            let names: Vec<_> = done.steps.iter().map(|s| s.step_name.as_str()).collect();
            assert_eq!(
                names,
                ["extract", "load"],
                "begin_run of {key} after an interruption at {point}: steps"
            );
            assert!(
                done.flow
                    .as_ref()
                    .is_some_and(|f| f.state == FlowState::InProgress),
                "begin_run of {key} after an interruption at {point}: flow not in progress"
            );
            assert!(
                !done.runs.is_empty() && done.runs.len() <= 2,
                "begin_run of {key} after an interruption at {point}: {} run records",
                done.runs.len()
            );
            ok("release_lease", &key, store.release_lease(&lease).await);
        }
        eprintln!(
            "store conformance: begin_run interrupted at each of its {} writes ({})",
            interrupt.writes,
            match self.s.begin_run {
                BeginRunKind::Atomic => "atomic: nothing written",
                BeginRunKind::Ordered =>
                    "ordered fallback: safe partial states, completed by a retry",
            }
        );
    }

    async fn lease_lifecycle(&self) {
        let store = self.store();
        let key = key("lease");
        let ttl_ms = TTL.as_millis() as i64;
        assert_eq!(
            ok("get_lease", &key, store.get_lease(&key).await),
            None,
            "get_lease of {key} before any acquisition"
        );
        let a = self.lease(&key, "engine-a", 0).await;
        // Live: refused, naming the holder.
        match ok(
            "acquire_lease",
            &key,
            store
                .acquire_lease(&key, "engine-b", at(ttl_ms / 2), TTL)
                .await,
        ) {
            LeaseOutcome::HeldBy {
                owner,
                heartbeat_at,
            } => {
                assert_eq!(
                    owner, "engine-a",
                    "acquire_lease of {key}: refusal names the wrong holder"
                );
                assert_eq!(
                    heartbeat_at,
                    at(0),
                    "acquire_lease of {key}: refusal's heartbeat"
                );
            }
            other => panic!("acquire_lease of {key} while live: expected HeldBy, got {other:?}"),
        }
        // Renewing keeps it live past the first ttl.
        assert!(
            ok(
                "renew_lease",
                &key,
                store.renew_lease(&a, at(ttl_ms - 1)).await
            ),
            "renew_lease of {key} by its holder returned false"
        );
        let info = ok("get_lease", &key, store.get_lease(&key).await)
            .unwrap_or_else(|| panic!("get_lease of {key}: none"));
        assert_eq!(
            info.heartbeat_at,
            at(ttl_ms - 1),
            "renew_lease of {key}: heartbeat not moved"
        );
        assert!(
            info.is_live(at(ttl_ms + 1), TTL),
            "get_lease of {key}: renewed lease not live"
        );
        match ok(
            "acquire_lease",
            &key,
            store
                .acquire_lease(&key, "engine-b", at(ttl_ms + 1), TTL)
                .await,
        ) {
            LeaseOutcome::HeldBy { .. } => {}
            other => {
                panic!("acquire_lease of {key} after a renewal: expected HeldBy, got {other:?}")
            }
        }
        // Stale: taken over, with a larger token.
        let b = match ok(
            "acquire_lease",
            &key,
            store
                .acquire_lease(&key, "engine-b", at(2 * ttl_ms), TTL)
                .await,
        ) {
            LeaseOutcome::Acquired(b) => b,
            other => panic!("acquire_lease of {key}: a stale lease was not taken over: {other:?}"),
        };
        assert!(
            b.token > a.token,
            "acquire_lease of {key}: takeover token {} not larger than {}",
            b.token,
            a.token
        );
        assert!(
            !ok(
                "renew_lease",
                &key,
                store.renew_lease(&a, at(2 * ttl_ms + 1)).await
            ),
            "renew_lease of {key} after losing it returned true"
        );
        ok("release_lease", &key, store.release_lease(&a).await);
        let info = ok("get_lease", &key, store.get_lease(&key).await)
            .unwrap_or_else(|| panic!("get_lease of {key}: none"));
        assert_eq!(
            info.owner.as_deref(),
            Some("engine-b"),
            "release_lease of {key} by a former holder released the new holder's lease"
        );
        assert!(
            ok(
                "renew_lease",
                &key,
                store.renew_lease(&b, at(2 * ttl_ms + 2)).await
            ),
            "renew_lease of {key} by the new holder returned false"
        );
        // Release: free at once, token kept, the next token still larger.
        ok("release_lease", &key, store.release_lease(&b).await);
        let info = ok("get_lease", &key, store.get_lease(&key).await)
            .unwrap_or_else(|| panic!("get_lease of {key}: none"));
        assert_eq!(info.owner, None, "release_lease of {key}: still owned");
        assert_eq!(
            info.token, b.token,
            "release_lease of {key}: token not kept"
        );
        assert!(
            !ok(
                "renew_lease",
                &key,
                store.renew_lease(&b, at(2 * ttl_ms + 3)).await
            ),
            "renew_lease of {key} after release returned true"
        );
        let c = self.lease(&key, "engine-c", 2 * ttl_ms + 4).await;
        assert!(
            c.token > b.token,
            "acquire_lease of {key} after release: token {} not larger than {}",
            c.token,
            b.token
        );
        // The same owner acquiring again gets a new, larger token.
        let c2 = self.lease(&key, "engine-c", 2 * ttl_ms + 5).await;
        assert!(
            c2.token > c.token,
            "acquire_lease of {key} by its holder: token {} not larger than {}",
            c2.token,
            c.token
        );
        ok("release_lease", &key, store.release_lease(&c2).await);
    }

    async fn lease_race(&self) {
        let key = key("race");
        let ttl_ms = TTL.as_millis() as i64;
        let mut last_token = 0;
        // Round 1: no lease yet. Round 2: a stale one. Round 3: a released one.
        for (round, now) in [(1, 0), (2, 2 * ttl_ms), (3, 2 * ttl_ms + 1)] {
            let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
            let mut racers = tokio::task::JoinSet::new();
            for i in 0..RACERS {
                let store = self.handle(i);
                let key = key.clone();
                let barrier = barrier.clone();
                racers.spawn(async move {
                    barrier.wait().await;
                    let owner = format!("racer-{round}-{i}");
                    (
                        owner.clone(),
                        store.acquire_lease(&key, &owner, at(now), TTL).await,
                    )
                });
            }
            let mut winners = Vec::new();
            let mut refused = Vec::new();
            while let Some(joined) = racers.join_next().await {
                let (owner, result) =
                    joined.unwrap_or_else(|e| panic!("acquire_lease racer panicked: {e}"));
                match ok("acquire_lease (race)", &key, result) {
                    LeaseOutcome::Acquired(lease) => winners.push(lease),
                    LeaseOutcome::HeldBy { owner: holder, .. } => refused.push((owner, holder)),
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "acquire_lease of {key}, round {round}: {RACERS} concurrent acquirers, {} winners: {winners:?}",
                winners.len()
            );
            let winner = &winners[0];
            for (owner, holder) in &refused {
                assert_eq!(holder, &winner.owner, "acquire_lease of {key}, round {round}: {owner} was refused naming {holder}, but {} won", winner.owner);
            }
            assert!(
                winner.token > last_token,
                "acquire_lease of {key}, round {round}: token {} not larger than {last_token}",
                winner.token
            );
            last_token = winner.token;
            if round == 2 {
                ok(
                    "release_lease",
                    &key,
                    self.store().release_lease(winner).await,
                );
            }
        }
        eprintln!("store conformance: lease race of {RACERS} acquirers over {} handle(s): one winner in each of 3 rounds", self.s.handles.len());
    }

    async fn fencing(&self) {
        let store = self.store();
        let key = key("fence");
        let ttl_ms = TTL.as_millis() as i64;
        let a = self.lease(&key, "stalled-engine", 0).await;
        let flow = ok(
            "save_flow",
            &key,
            store
                .save_flow(&a, &flow_record(&key, FlowState::InProgress, 0))
                .await,
        );
        let mut step = step_record(&key, "extract", StepState::InProgress, 1);
        step.related_flow = flow.id.clone();
        step.id = Some(ok("save_step", &key, store.save_step(&a, &step).await));
        let (_, run) = ok(
            "begin_run",
            &key,
            store
                .begin_run(&a, &flow, false, &[], &run_record(&a, RunMode::Nominal, 2))
                .await,
        );
        let run_id = run
            .id
            .clone()
            .unwrap_or_else(|| panic!("begin_run of {key}: run without id"));
        let mut cluster = cluster_record(&key, &run_id, "emr-0", 3);
        cluster.id = Some(ok(
            "save_cluster",
            &key,
            store.save_cluster(&a, &cluster).await,
        ));

        // Another engine takes the stale lease over; the first one wakes up.
        let b = match ok(
            "acquire_lease",
            &key,
            store
                .acquire_lease(&key, "new-engine", at(2 * ttl_ms), TTL)
                .await,
        ) {
            LeaseOutcome::Acquired(b) => b,
            other => panic!("acquire_lease of {key}: stale lease not taken over: {other:?}"),
        };
        let before = self.snapshot(&key).await;
        let mut f2 = flow.clone();
        f2.state = FlowState::Invalid;
        let mut s2 = step.clone();
        s2.state = StepState::Canceled;
        let mut new_step = StepRecord::embryo(
            &key.flow_name,
            "brand-new",
            key.timeperiod,
            flow.id.clone(),
            at(5),
        );
        let mut c2 = cluster.clone();
        c2.state = ClusterState::Terminated;
        let mut c_new = cluster_record(&key, &run_id, "emr-1", 6);
        let mut r2 = run.clone();
        r2.finished_at = Some(at(7));
        r2.outcome = Some(FlowState::Invalid);
        expect_fenced("save_flow", &key, store.save_flow(&a, &f2).await);
        expect_fenced("save_step (update)", &key, store.save_step(&a, &s2).await);
        expect_fenced(
            "save_step (insert)",
            &key,
            store.save_step(&a, &new_step).await,
        );
        expect_fenced(
            "save_flow_and_steps",
            &key,
            store
                .save_flow_and_steps(&a, &f2, &[s2.clone(), new_step.clone()])
                .await,
        );
        expect_fenced(
            "begin_run (no purge)",
            &key,
            store
                .begin_run(
                    &a,
                    &f2,
                    false,
                    std::slice::from_ref(&new_step),
                    &run_record(&a, RunMode::Recovery, 8),
                )
                .await,
        );
        expect_fenced(
            "begin_run (purge)",
            &key,
            store
                .begin_run(&a, &f2, true, &[], &run_record(&a, RunMode::Nominal, 8))
                .await,
        );
        expect_fenced("finish_run", &key, store.finish_run(&a, &r2).await);
        expect_fenced(
            "save_cluster (update)",
            &key,
            store.save_cluster(&a, &c2).await,
        );
        expect_fenced(
            "save_cluster (insert)",
            &key,
            store.save_cluster(&a, &c_new).await,
        );
        assert_eq!(
            self.snapshot(&key).await,
            before,
            "fenced writes of {key} with a stale token changed the store"
        );

        // The new holder writes the same things.
        ok("save_flow", &key, store.save_flow(&b, &f2).await);
        ok("save_step", &key, store.save_step(&b, &s2).await);
        new_step.id = Some(ok("save_step", &key, store.save_step(&b, &new_step).await));
        ok("finish_run", &key, store.finish_run(&b, &r2).await);
        ok("save_cluster", &key, store.save_cluster(&b, &c2).await);
        c_new.id = Some(ok(
            "save_cluster",
            &key,
            store.save_cluster(&b, &c_new).await,
        ));
        let after = self.snapshot(&key).await;
        assert_eq!(
            after.flow.as_ref().map(|f| f.state),
            Some(FlowState::Invalid),
            "save_flow of {key} by the new holder"
        );
        assert_eq!(after.steps.len(), 2, "save_step of {key} by the new holder");
        assert_eq!(
            after.runs[0].outcome,
            Some(FlowState::Invalid),
            "finish_run of {key} by the new holder"
        );
        assert_eq!(
            after.clusters.len(),
            2,
            "save_cluster of {key} by the new holder"
        );

        // Released or taken over again: the old tokens stay fenced.
        ok("release_lease", &key, store.release_lease(&b).await);
        let c = self.lease(&key, "third-engine", 2 * ttl_ms + 1).await;
        expect_fenced(
            "save_flow (after two takeovers)",
            &key,
            store.save_flow(&a, &f2).await,
        );
        expect_fenced(
            "save_step (token of a released lease)",
            &key,
            store.save_step(&b, &s2).await,
        );
        ok("save_flow", &key, store.save_flow(&c, &f2).await);
        ok("release_lease", &key, store.release_lease(&c).await);
        // A fenced error names the key and the stale token.
        match store.save_flow(&a, &f2).await {
            Err(StoreError::Fenced { key: k, token, .. }) => {
                assert!(
                    k.contains(&key.flow_name),
                    "Fenced error of {key}: names key {k}"
                );
                assert_eq!(token, a.token, "Fenced error of {key}: names token {token}");
            }
            other => panic!("save_flow of {key} with a stale token: {other:?}"),
        }
    }

    async fn runs(&self) {
        let store = self.store();
        let key = key("history");
        let other = FlowKey::new(key.flow_name.clone(), tp("2026112900"));
        let mut ids = Vec::new();
        for (i, k) in [&key, &other, &key].into_iter().enumerate() {
            let lease = self.lease(k, "historian", 10 * i as i64).await;
            let mut run = run_record(&lease, RunMode::Nominal, 10 * i as i64);
            run.target = Some("load".into());
            let (_, run) = ok(
                "begin_run",
                k,
                store
                    .begin_run(
                        &lease,
                        &flow_record(k, FlowState::InProgress, 0),
                        false,
                        &[],
                        &run,
                    )
                    .await,
            );
            let mut finished = run.clone();
            finished.finished_at = Some(at(10 * i as i64 + 5));
            finished.outcome = Some(FlowState::Processed);
            finished.steps = vec![RunStep {
                step_name: "extract".into(),
                state: StepState::Processed,
            }];
            finished.error = Some("none, really".into());
            ok("finish_run", k, store.finish_run(&lease, &finished).await);
            ok("release_lease", k, store.release_lease(&lease).await);
            ids.push(finished);
        }
        let q = |timeperiod: Option<Timeperiod>, limit| RunQuery {
            flow_name: Some(key.flow_name.clone()),
            timeperiod,
            limit,
        };
        let all = ok("list_runs", &key, store.list_runs(&q(None, None)).await);
        assert_eq!(
            all,
            vec![ids[2].clone(), ids[1].clone(), ids[0].clone()],
            "list_runs of {}: every run, newest first, as finished",
            key.flow_name
        );
        let one = ok(
            "list_runs",
            &key,
            store.list_runs(&q(Some(key.timeperiod), None)).await,
        );
        assert_eq!(
            one,
            vec![ids[2].clone(), ids[0].clone()],
            "list_runs of {key}: by timeperiod"
        );
        let limited = ok("list_runs", &key, store.list_runs(&q(None, Some(1))).await);
        assert_eq!(
            limited,
            vec![ids[2].clone()],
            "list_runs of {} with limit 1",
            key.flow_name
        );
        let everyone = ok(
            "list_runs",
            &"every flow",
            store.list_runs(&RunQuery::default()).await,
        );
        assert!(
            ids.iter().all(|r| everyone.contains(r)),
            "list_runs of every flow: misses runs"
        );
    }

    async fn clusters(&self) {
        let store = self.store();
        let key = key("clusters");
        let lease = self.lease(&key, "launcher", 0).await;
        let (_, run) = ok(
            "begin_run",
            &key,
            store
                .begin_run(
                    &lease,
                    &flow_record(&key, FlowState::InProgress, 0),
                    false,
                    &[],
                    &run_record(&lease, RunMode::Nominal, 0),
                )
                .await,
        );
        let run_id = run
            .id
            .unwrap_or_else(|| panic!("begin_run of {key}: run without id"));
        let mut first = cluster_record(&key, &run_id, "emr-0", 1);
        let mut second = cluster_record(&key, &run_id, "emr-1", 2);
        second.handle.reused = true;
        first.id = Some(ok(
            "save_cluster",
            &key,
            store.save_cluster(&lease, &first).await,
        ));
        second.id = Some(ok(
            "save_cluster",
            &key,
            store.save_cluster(&lease, &second).await,
        ));
        assert_ne!(
            first.id, second.id,
            "save_cluster of {key}: two clusters got one id"
        );
        first.state = ClusterState::TerminateFailed;
        first.updated_at = at(9);
        first.message = Some("TerminateJobFlows: AccessDenied".into());
        let id = ok(
            "save_cluster",
            &key,
            store.save_cluster(&lease, &first).await,
        );
        assert_eq!(
            Some(id),
            first.id,
            "save_cluster of {key}: an update changed the id"
        );
        let listed = ok("list_clusters", &key, store.list_clusters(Some(&key)).await);
        assert_eq!(
            listed,
            vec![first.clone(), second.clone()],
            "list_clusters of {key}: oldest first, as saved"
        );
        let all = ok(
            "list_clusters",
            &"every flow",
            store.list_clusters(None).await,
        );
        assert!(
            all.contains(&first) && all.contains(&second),
            "list_clusters of every flow: misses {key}'s"
        );
        ok("release_lease", &key, store.release_lease(&lease).await);
    }

    async fn logs_in_order_under_concurrent_writers(&self) {
        let key = key("logs");
        let lease = self.lease(&key, "logger", 0).await;
        let (_, run) = ok(
            "begin_run",
            &key,
            self.store()
                .begin_run(
                    &lease,
                    &flow_record(&key, FlowState::InProgress, 0),
                    false,
                    &[],
                    &run_record(&lease, RunMode::Nominal, 0),
                )
                .await,
        );
        let run_id = run
            .id
            .unwrap_or_else(|| panic!("begin_run of {key}: run without id"));
        let barrier = Arc::new(tokio::sync::Barrier::new(LOG_WRITERS));
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..LOG_WRITERS {
            let store = self.handle(w);
            let key = key.clone();
            let run_id = run_id.clone();
            let barrier = barrier.clone();
            writers.spawn(async move {
                barrier.wait().await;
                for b in 0..LOG_BATCHES {
                    let step = (w % 2 == 0).then(|| format!("step-{w}"));
                    let lines: Vec<_> = (0..LOG_BATCH_LINES)
                        .map(|l| {
                            line(
                                &key,
                                &run_id,
                                step.as_deref(),
                                format!("w{w} b{b} l{l}"),
                                (b * LOG_BATCH_LINES + l) as i64,
                            )
                        })
                        .collect();
                    store.append_logs(&lines).await?;
                }
                Ok::<_, StoreError>(())
            });
        }
        while let Some(joined) = writers.join_next().await {
            ok(
                "append_logs (concurrent)",
                &key,
                joined.unwrap_or_else(|e| panic!("log writer panicked: {e}")),
            );
        }
        let total = LOG_WRITERS * LOG_BATCHES * LOG_BATCH_LINES;
        let all = ok(
            "read_logs",
            &key,
            self.store()
                .read_logs(&LogQuery::new(key.clone(), total + 10))
                .await,
        );
        assert_eq!(
            all.len(),
            total,
            "read_logs of {key}: {} lines, appended {total}",
            all.len()
        );
        assert!(
            all.windows(2).all(|w| w[0].position < w[1].position),
            "read_logs of {key}: positions not strictly increasing"
        );
        for w in 0..LOG_WRITERS {
            let mine: Vec<_> = all
                .iter()
                .filter(|l| l.line.message.starts_with(&format!("w{w} ")))
                .map(|l| l.line.message.clone())
                .collect();
            let expected: Vec<_> = (0..LOG_BATCHES)
                .flat_map(|b| (0..LOG_BATCH_LINES).map(move |l| format!("w{w} b{b} l{l}")))
                .collect();
            assert_eq!(
                mine, expected,
                "read_logs of {key}: writer {w}'s lines out of order or missing"
            );
        }
        // A batch is contiguous: nothing of another writer inside it.
        for chunk in all.chunk_by(|a, b| {
            a.line
                .message
                .split(' ')
                .take(2)
                .eq(b.line.message.split(' ').take(2))
        }) {
            assert_eq!(
                chunk.len() % LOG_BATCH_LINES,
                0,
                "read_logs of {key}: a batch was interleaved with another writer's lines"
            );
        }
        // Paging by `after` gives the same lines, no gap, no repeat.
        let mut paged: Vec<StoredLogLine> = Vec::new();
        loop {
            let mut q = LogQuery::new(key.clone(), 13);
            q.after = paged.last().map(|l| l.position);
            let page = ok("read_logs (page)", &key, self.store().read_logs(&q).await);
            assert!(
                page.len() <= 13,
                "read_logs of {key}: page longer than its limit"
            );
            if page.is_empty() {
                break;
            }
            paged.extend(page);
        }
        assert_eq!(
            paged, all,
            "read_logs of {key}: paging by after differs from one read"
        );
        assert_eq!(
            ok(
                "last_log_position",
                &key,
                self.store().last_log_position(&key).await
            ),
            all.last().map_or(0, |l| l.position),
            "last_log_position of {key}: not the last line read_logs gives"
        );
        // Appending more continues after the last position.
        let more = line(&key, &run_id, None, "the end".into(), 99_999);
        ok(
            "append_logs",
            &key,
            self.store().append_logs(std::slice::from_ref(&more)).await,
        );
        let mut q = LogQuery::new(key.clone(), 10);
        q.after = all.last().map(|l| l.position);
        let tail = ok("read_logs", &key, self.store().read_logs(&q).await);
        assert_eq!(
            tail.iter().map(|l| &l.line).collect::<Vec<_>>(),
            vec![&more],
            "read_logs of {key} after the last position"
        );
        assert_eq!(
            ok(
                "last_log_position",
                &key,
                self.store().last_log_position(&key).await
            ),
            tail[0].position,
            "last_log_position of {key}: not the line appended last"
        );
        ok(
            "append_logs (empty)",
            &key,
            self.store().append_logs(&[]).await,
        );
        ok(
            "release_lease",
            &key,
            self.store().release_lease(&lease).await,
        );
        eprintln!("store conformance: {total} log lines from {LOG_WRITERS} concurrent writers read back in order");
    }

    async fn log_filters_and_purge(&self) {
        let store = self.store();
        let key = key("log-filters");
        let other = FlowKey::new(key.flow_name.clone(), tp("2026112900"));
        let mut run_ids = Vec::new();
        for (i, k) in [&key, &key, &other].into_iter().enumerate() {
            let lease = self.lease(k, "filter", 10 * i as i64).await;
            let (_, run) = ok(
                "begin_run",
                k,
                store
                    .begin_run(
                        &lease,
                        &flow_record(k, FlowState::InProgress, 0),
                        false,
                        &[],
                        &run_record(&lease, RunMode::Nominal, i as i64),
                    )
                    .await,
            );
            ok("release_lease", k, store.release_lease(&lease).await);
            run_ids.push(
                run.id
                    .unwrap_or_else(|| panic!("begin_run of {k}: run without id")),
            );
        }
        let mut lines = Vec::new();
        for (r, run) in run_ids.iter().enumerate().take(2) {
            for step in [None, Some("extract"), Some("load")] {
                lines.push(line(
                    &key,
                    run,
                    step,
                    format!("run {r} {step:?}"),
                    1_000 * r as i64,
                ));
            }
        }
        let mut error_line = line(&key, &run_ids[1], Some("load"), "exit code 1".into(), 1_500);
        error_line.level = LogLevel::Error;
        error_line.logger = "load.shell".into();
        lines.push(error_line.clone());
        ok("append_logs", &key, store.append_logs(&lines).await);
        ok(
            "append_logs",
            &other,
            store
                .append_logs(&[line(&other, &run_ids[2], None, "other".into(), 0)])
                .await,
        );
        let read =
            |q: LogQuery| async move { ok("read_logs", &q.key.clone(), store.read_logs(&q).await) };
        let all = read(LogQuery::new(key.clone(), 100)).await;
        assert_eq!(
            all.iter().map(|l| l.line.clone()).collect::<Vec<_>>(),
            lines,
            "read_logs of {key}: lines differ from those appended"
        );
        let mut q = LogQuery::new(key.clone(), 100);
        q.step = Some("load".into());
        assert_eq!(
            read(q.clone()).await.len(),
            3,
            "read_logs of {key} for step load"
        );
        q.run = Some(run_ids[1].clone());
        let got = read(q.clone()).await;
        assert_eq!(
            got.iter().map(|l| &l.line).collect::<Vec<_>>(),
            vec![&lines[5], &error_line],
            "read_logs of {key} for step load of run 1"
        );
        let mut q = LogQuery::new(key.clone(), 100);
        q.run = Some(run_ids[0].clone());
        assert_eq!(read(q).await.len(), 3, "read_logs of {key} for run 0");
        let mut q = LogQuery::new(key.clone(), 2);
        q.step = Some(String::new());
        assert!(
            read(q).await.is_empty(),
            "read_logs of {key} for step \"\" (not special)"
        );
        let others = read(LogQuery::new(other.clone(), 100)).await;
        assert_eq!(others.len(), 1, "read_logs of {other}: sees {key}'s lines");

        // The last position is the flow run's own, whatever another flow
        // run appended later; 0 for one without lines.
        let last = |k: FlowKey| async move {
            ok("last_log_position", &k, store.last_log_position(&k).await)
        };
        let own = all.last().map_or(0, |l| l.position);
        assert_eq!(last(key.clone()).await, own, "last_log_position of {key}");
        assert_eq!(
            last(other.clone()).await,
            others[0].position,
            "last_log_position of {other}"
        );
        let silent = FlowKey::new(key.flow_name.clone(), tp("2026113000"));
        assert_eq!(
            last(silent.clone()).await,
            0,
            "last_log_position of {silent}, which has no lines"
        );

        // Retention: lines before the cutoff go, later ones stay.
        let purged = ok("purge_logs", &key, store.purge_logs(at(1_000)).await);
        let left = read(LogQuery::new(key.clone(), 100)).await;
        assert_eq!(
            left.len(),
            4,
            "purge_logs before {}: kept {} of {key}'s lines",
            at(1_000),
            left.len()
        );
        assert!(
            left.iter().all(|l| l.line.at >= at(1_000)),
            "purge_logs: kept a line older than the cutoff"
        );
        assert!(
            purged >= 3,
            "purge_logs: reported {purged} deleted lines, at least 3 were older"
        );
        assert_eq!(
            last(key.clone()).await,
            own,
            "last_log_position of {key} after purging older lines"
        );
    }

    async fn ids_round_trip_as_strings(&self) {
        let store = self.store();
        let key = key("ids");
        let lease = self.lease(&key, "ids", 0).await;
        let (flow, run) = ok(
            "begin_run",
            &key,
            store
                .begin_run(
                    &lease,
                    &flow_record(&key, FlowState::InProgress, 0),
                    false,
                    &[StepRecord::embryo(
                        &key.flow_name,
                        "extract",
                        key.timeperiod,
                        None,
                        at(0),
                    )],
                    &run_record(&lease, RunMode::Nominal, 0),
                )
                .await,
        );
        let flow_id = flow
            .id
            .clone()
            .unwrap_or_else(|| panic!("begin_run of {key}: flow without id"));
        let run_id = run
            .id
            .clone()
            .unwrap_or_else(|| panic!("begin_run of {key}: run without id"));
        for id in [&flow_id, &run_id] {
            let text = id.to_string();
            assert!(!text.is_empty(), "ids of {key}: empty id");
            let json = serde_json_like(id);
            assert_eq!(
                json,
                format!("\"{text}\""),
                "ids of {key}: not serialized as a string"
            );
        }
        // Ids rebuilt from their text (as a CLI argument or a JSON answer
        // would) find the same records.
        let rebuilt_run = RecordId::new(run_id.to_string());
        let mut finished = run.clone();
        finished.id = Some(rebuilt_run.clone());
        finished.outcome = Some(FlowState::Processed);
        ok(
            "finish_run (id from its text)",
            &key,
            store.finish_run(&lease, &finished).await,
        );
        let runs = ok(
            "list_runs",
            &key,
            store
                .list_runs(&RunQuery {
                    flow_name: Some(key.flow_name.clone()),
                    timeperiod: Some(key.timeperiod),
                    limit: None,
                })
                .await,
        );
        assert_eq!(
            runs,
            vec![finished.clone()],
            "finish_run of {key} with an id rebuilt from text"
        );
        let mut cluster = cluster_record(&key, &rebuilt_run, "emr-0", 0);
        let cid = ok(
            "save_cluster",
            &key,
            store.save_cluster(&lease, &cluster).await,
        );
        cluster.id = Some(RecordId::new(cid.to_string()));
        cluster.state = ClusterState::Up;
        let cid2 = ok(
            "save_cluster (id from its text)",
            &key,
            store.save_cluster(&lease, &cluster).await,
        );
        assert_eq!(
            cid2, cid,
            "save_cluster of {key} with an id rebuilt from text: another id"
        );
        assert_eq!(
            ok("list_clusters", &key, store.list_clusters(Some(&key)).await),
            vec![cluster],
            "list_clusters of {key}"
        );
        ok(
            "append_logs",
            &key,
            store
                .append_logs(&[line(&key, &run_id, None, "by id".into(), 0)])
                .await,
        );
        let mut q = LogQuery::new(key.clone(), 10);
        q.run = Some(rebuilt_run);
        assert_eq!(
            ok("read_logs", &key, store.read_logs(&q).await).len(),
            1,
            "read_logs of {key} by a run id rebuilt from text"
        );
        let steps = ok("get_steps", &key, store.get_steps(&key).await);
        assert_eq!(
            steps[0].related_flow.as_ref().map(RecordId::as_str),
            Some(flow_id.as_str()),
            "get_steps of {key}: related_flow is not the flow's id"
        );
        ok("release_lease", &key, store.release_lease(&lease).await);
    }
}

/// The JSON text of an id, without a JSON dependency in `flow-core`: ids
/// are `#[serde(transparent)]` strings, so their TOML value is the same
/// quoted text.
fn serde_json_like(id: &RecordId) -> String {
    #[derive(serde::Serialize)]
    struct Wrap<'a> {
        id: &'a RecordId,
    }
    toml::to_string(&Wrap { id })
        .unwrap_or_default()
        .trim()
        .trim_start_matches("id = ")
        .replace('\'', "\"")
}
