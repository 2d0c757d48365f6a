//! The SQLite store on real database files in temporary directories.

use chrono::{DateTime, Utc};
use flow_core::{
    ActionSetState, FlowKey, FlowQuery, FlowRecord, FlowState, FlowStore, Lease, LeaseOutcome,
    RecordId, RunMode, RunRecord, StepRecord, StepState, StoreError, Timeperiod,
};
use flow_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const TP: &str = "2026112800";
/// The schema version this build writes (`sql.rs`).
const SCHEMA_VERSION: i64 = 10;

fn tp(text: &str) -> Timeperiod {
    text.parse().unwrap()
}

/// A time with exactly microsecond precision, `offset_s` seconds from a
/// fixed base.
fn at(offset_s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_795_000_000_123_456 + offset_s * 1_000_000).unwrap()
}

fn flow(name: &str, timeperiod: &str) -> FlowRecord {
    let t = tp(timeperiod);
    FlowRecord {
        id: None,
        flow_name: name.to_string(),
        timeperiod: t,
        start_timeperiod: t,
        end_timeperiod: t.next(flow_core::TimeQualifier::Daily),
        state: FlowState::Embryo,
        run_mode: RunMode::Nominal,
        created_at: at(0),
        started_at: None,
        finished_at: None,
        graph_hash: None,
        sla_missed_at: None,
        trace_parent: None,
    }
}

/// The lease of `key` for the owner "test", taken (or taken over) when the
/// test does not hold it yet.
async fn lease(store: &SqliteStore, key: &FlowKey) -> Lease {
    if let Some(info) = store.get_lease(key).await.unwrap() {
        if info.owner.as_deref() == Some("test") {
            return Lease {
                key: key.clone(),
                owner: "test".to_string(),
                token: info.token,
            };
        }
    }
    match store
        .acquire_lease(key, "test", Utc::now(), Duration::ZERO)
        .await
        .unwrap()
    {
        LeaseOutcome::Acquired(lease) => lease,
        other => panic!("cannot take the lease of {key}: {other:?}"),
    }
}

async fn save_flow(store: &SqliteStore, flow: &FlowRecord) -> Result<FlowRecord, StoreError> {
    let lease = lease(store, &flow.key()).await;
    store.save_flow(&lease, flow).await
}

async fn save_step(store: &SqliteStore, step: &StepRecord) -> Result<RecordId, StoreError> {
    let key = FlowKey::new(step.flow_name.clone(), step.timeperiod);
    let lease = lease(store, &key).await;
    store.save_step(&lease, step).await
}

fn run_record(flow: &FlowRecord, lease: &Lease) -> RunRecord {
    RunRecord {
        id: None,
        flow_name: flow.flow_name.clone(),
        timeperiod: flow.timeperiod,
        mode: flow.run_mode,
        target: None,
        owner: lease.owner.clone(),
        token: lease.token,
        host: "host".to_string(),
        user: "user".to_string(),
        started_at: at(0),
        finished_at: None,
        outcome: None,
        steps: Vec::new(),
        error: None,
    }
}

async fn begin_run(
    store: &SqliteStore,
    flow: &FlowRecord,
    purge: bool,
    steps: &[StepRecord],
) -> Result<FlowRecord, StoreError> {
    let lease = lease(store, &flow.key()).await;
    store
        .begin_run(&lease, flow, purge, steps, &run_record(flow, &lease))
        .await
        .map(|(flow, _)| flow)
}

fn step(flow_name: &str, step_name: &str, timeperiod: &str) -> StepRecord {
    StepRecord::embryo(flow_name, step_name, tp(timeperiod), None, at(0))
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("flow.db")
    }

    fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.db(), SqliteOptions::default()).unwrap()
    }

    fn open_with(&self, options: SqliteOptions) -> SqliteStore {
        SqliteStore::open(&self.db(), options).unwrap()
    }

    /// A second, independent connection, as another process would have.
    fn other_connection(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.db()).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }

    /// The file's schema version, read as another process would.
    fn user_version(&self) -> i64 {
        self.other_connection()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }
}

fn strip_ids(mut steps: Vec<StepRecord>) -> Vec<StepRecord> {
    for s in &mut steps {
        s.id = None;
    }
    steps
}

#[tokio::test]
async fn flow_records_round_trip_with_every_state_and_run_mode() {
    let dir = Dir::new();
    let store = dir.open();
    let mut period = tp("2026010100");
    let mut saved = Vec::new();
    for (i, state) in FlowState::ALL.iter().enumerate() {
        for (j, mode) in RunMode::ALL.iter().enumerate() {
            let mut record = flow("roundtrip", &period.to_string());
            record.state = *state;
            record.run_mode = *mode;
            record.created_at = at((i * 10 + j) as i64);
            if (i + j) % 2 == 0 {
                record.started_at = Some(at(100 + j as i64));
                record.finished_at = Some(at(200 + i as i64));
                record.graph_hash = Some(format!("{i:08x}{j:08x}"));
            }
            let stored = save_flow(&store, &record).await.unwrap();
            assert!(stored.id.is_some());
            assert_eq!(
                FlowRecord {
                    id: None,
                    ..stored.clone()
                },
                record
            );
            saved.push(stored);
            period = period.next(flow_core::TimeQualifier::Hourly);
        }
    }
    for record in &saved {
        let read = store.get_flow(&record.key()).await.unwrap();
        assert_eq!(read.as_ref(), Some(record));
    }
    // Distinct ids, and list_flows returns them all, newest first.
    let listed = store
        .list_flows(&FlowQuery::named(Some("roundtrip")))
        .await
        .unwrap();
    let mut expected = saved.clone();
    expected.reverse();
    assert_eq!(listed, expected);
    assert_eq!(
        store
            .get_flow(&FlowKey::new("roundtrip", tp("2030010100")))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn step_records_round_trip_with_every_state_and_optional_field() {
    let dir = Dir::new();
    let store = dir.open();
    let mut expected = Vec::new();
    let mut n = 0;
    for state in StepState::ALL {
        for action in ActionSetState::ALL {
            let mut record = step("steps", &format!("s{n}"), TP);
            record.state = *state;
            record.pre_state = *action;
            record.main_state = ActionSetState::ALL[(n + 1) % ActionSetState::ALL.len()];
            record.post_state = ActionSetState::ALL[(n + 2) % ActionSetState::ALL.len()];
            record.created_at = at(n as i64);
            if n % 2 == 0 {
                record.started_at = Some(at(1000 + n as i64));
                record.finished_at = Some(at(2000 + n as i64));
                record.related_flow = Some(RecordId::from(n as i64 + 7));
                record.error = Some(format!("boom 'quoted' \"{n}\"\nsecond line ü"));
            }
            record.attempts = if n == 3 { u32::MAX } else { n as u32 };
            let id = save_step(&store, &record).await.unwrap();
            record.id = Some(id);
            expected.push(record);
            n += 1;
        }
    }
    let read = store
        .get_steps(&FlowKey::new("steps", tp(TP)))
        .await
        .unwrap();
    assert_eq!(read, expected, "all fields survive, ordered by id");
    assert!(store
        .get_steps(&FlowKey::new("steps", tp("2026112900")))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn timestamps_keep_microseconds_and_drop_nanoseconds() {
    let dir = Dir::new();
    let store = dir.open();
    let mut record = flow("precise", TP);
    record.created_at = DateTime::from_timestamp(1_795_000_000, 123_456_789).unwrap();
    let stored = save_flow(&store, &record).await.unwrap();
    let read = store.get_flow(&stored.key()).await.unwrap().unwrap();
    assert_eq!(
        read.created_at,
        DateTime::from_timestamp(1_795_000_000, 123_456_000).unwrap()
    );
    let text: String = dir
        .other_connection()
        .query_row("SELECT created_at FROM flow", [], |r| r.get(0))
        .unwrap();
    assert_eq!(text, "2026-11-18T11:06:40.123456Z");
}

#[tokio::test]
async fn saves_upsert_by_name_and_keep_their_ids() {
    let dir = Dir::new();
    let store = dir.open();
    let first = save_flow(&store, &flow("f", TP)).await.unwrap();
    let mut changed = first.clone();
    changed.state = FlowState::Processed;
    changed.finished_at = Some(at(5));
    // The id given by the caller is not what matches: name and timeperiod do.
    changed.id = None;
    let second = save_flow(&store, &changed).await.unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(
        store.get_flow(&first.key()).await.unwrap().unwrap().state,
        FlowState::Processed
    );

    let a = save_step(&store, &step("f", "a", TP)).await.unwrap();
    let b = save_step(&store, &step("f", "b", TP)).await.unwrap();
    let mut a_done = step("f", "a", TP);
    a_done.state = StepState::Processed;
    a_done.attempts = 2;
    assert_eq!(save_step(&store, &a_done).await.unwrap(), a);
    let steps = store.get_steps(&first.key()).await.unwrap();
    let names: Vec<_> = steps
        .iter()
        .map(|s| (s.step_name.as_str(), s.id.clone().unwrap()))
        .collect();
    assert_eq!(names, [("a", a), ("b", b)]);
    assert_eq!(steps[0].state, StepState::Processed);
    assert_eq!(steps[0].attempts, 2);
}

#[tokio::test]
async fn list_flows_is_newest_first_and_filters_by_name() {
    let dir = Dir::new();
    let store = dir.open();
    for (name, period) in [
        ("alpha", "2026112800"),
        ("beta", "2026113000"),
        ("alpha", "2026113000"),
        ("alpha", "2026112900"),
        ("beta", "2026112700"),
    ] {
        save_flow(&store, &flow(name, period)).await.unwrap();
    }
    let all: Vec<_> = store
        .list_flows(&FlowQuery::named(None))
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.flow_name, f.timeperiod.to_string()))
        .collect();
    let pairs: Vec<_> = all.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("alpha", "2026113000"),
            ("beta", "2026113000"),
            ("alpha", "2026112900"),
            ("alpha", "2026112800"),
            ("beta", "2026112700"),
        ]
    );
    let alpha: Vec<_> = store
        .list_flows(&FlowQuery::named(Some("alpha")))
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.timeperiod.to_string())
        .collect();
    assert_eq!(alpha, ["2026113000", "2026112900", "2026112800"]);
    assert!(store
        .list_flows(&FlowQuery::named(Some("gamma")))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn begin_run_purges_or_keeps_steps_and_links_them_to_the_flow() {
    let dir = Dir::new();
    let store = dir.open();
    let key = FlowKey::new("run", tp(TP));
    let first = begin_run(
        &store,
        &flow("run", TP),
        false,
        &[
            step("run", "a", TP),
            step("run", "b", TP),
            step("run", "c", TP),
        ],
    )
    .await
    .unwrap();
    let flow_id = first.id.unwrap();
    let steps = store.get_steps(&key).await.unwrap();
    assert_eq!(steps.len(), 3);
    assert!(steps
        .iter()
        .all(|s| s.related_flow == Some(flow_id.clone())));
    // Another flow's steps are never touched.
    save_step(&store, &step("other", "x", TP)).await.unwrap();

    // purge: only the given steps remain, the flow row is updated in place.
    let mut again = flow("run", TP);
    again.state = FlowState::InProgress;
    again.run_mode = RunMode::Recovery;
    again.started_at = Some(at(50));
    let mut a = step("run", "a", TP);
    a.state = StepState::Processed;
    a.related_flow = Some(RecordId::from(999));
    let second = begin_run(&store, &again, true, &[a.clone(), step("run", "d", TP)])
        .await
        .unwrap();
    assert_eq!(second.id, Some(flow_id.clone()));
    assert_eq!(
        FlowRecord {
            id: None,
            ..store.get_flow(&key).await.unwrap().unwrap()
        },
        again
    );
    let steps = store.get_steps(&key).await.unwrap();
    let mut d = step("run", "d", TP);
    d.related_flow = Some(flow_id.clone());
    assert_eq!(
        strip_ids(steps),
        [a.clone(), d.clone()],
        "an explicit related_flow is kept"
    );

    // No purge: existing steps stay, given ones are upserted.
    let mut d2 = d.clone();
    d2.state = StepState::Invalid;
    d2.error = Some("failed".to_string());
    begin_run(&store, &again, false, &[step("run", "e", TP), d2.clone()])
        .await
        .unwrap();
    let mut e = step("run", "e", TP);
    e.related_flow = Some(flow_id.clone());
    assert_eq!(strip_ids(store.get_steps(&key).await.unwrap()), [a, d2, e]);
    assert_eq!(
        store
            .get_steps(&FlowKey::new("other", tp(TP)))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Installs a trigger (from another connection) that makes inserting or
/// updating a step named `poison` fail, a real SQLite error mid-transaction.
fn poison_steps(dir: &Dir) {
    dir.other_connection()
        .execute_batch(
            "CREATE TRIGGER poison_insert BEFORE INSERT ON step WHEN NEW.step_name = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned step'); END;
             CREATE TRIGGER poison_update BEFORE UPDATE ON step WHEN NEW.step_name = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned step'); END;",
        )
        .unwrap();
}

#[tokio::test]
async fn begin_run_is_one_transaction() {
    let dir = Dir::new();
    let store = dir.open();
    let key = FlowKey::new("atomic", tp(TP));
    let before = begin_run(
        &store,
        &flow("atomic", TP),
        false,
        &[step("atomic", "a", TP), step("atomic", "b", TP)],
    )
    .await
    .unwrap();
    let steps_before = store.get_steps(&key).await.unwrap();
    poison_steps(&dir);

    // Flow update, purge and the first step all happen before the poisoned
    // step fails; none of it may stay.
    let mut changed = flow("atomic", TP);
    changed.state = FlowState::InProgress;
    let err = begin_run(
        &store,
        &changed,
        true,
        &[step("atomic", "c", TP), step("atomic", "poison", TP)],
    )
    .await
    .unwrap_err();
    match &err {
        StoreError::Operation {
            operation,
            key,
            message,
        } => {
            assert_eq!(*operation, "begin_run");
            assert_eq!(key, "[atomic, 2026112800]");
            assert!(message.contains("poisoned step"), "{message}");
        }
        other => panic!("expected an operation error, got {other:?}"),
    }
    assert_eq!(store.get_flow(&key).await.unwrap(), Some(before));
    assert_eq!(store.get_steps(&key).await.unwrap(), steps_before);
    // Seen from another connection too.
    let count: i64 = dir
        .other_connection()
        .query_row(
            "SELECT count(*) FROM step WHERE flow_name = 'atomic'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_saves_all_land_and_one_failure_fails_only_its_caller() {
    let dir = Dir::new();
    let store = Arc::new(dir.open());
    poison_steps(&dir);
    // Take the lease before the tasks start: each task's `save_step` reuses
    // it. Left to the tasks, several could find no lease and acquire one
    // each (a loaded machine makes that likely), fencing each other's writes.
    lease(&store, &FlowKey::new("many", tp(TP))).await;
    let mut tasks = Vec::new();
    for round in 0..4 {
        for i in 0..100 {
            let store = store.clone();
            let name = if round == 2 && i == 50 {
                "poison".to_string()
            } else {
                format!("s{round}-{i}")
            };
            tasks.push(tokio::spawn(async move {
                let result = save_step(&store, &step("many", &name, TP)).await;
                (name, result)
            }));
        }
    }
    let mut ids = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for task in tasks {
        let (name, result) = task.await.unwrap();
        match result {
            Ok(id) => assert!(ids.insert(id.clone()), "duplicate id {id}"),
            Err(e) => failures.push((name, e.to_string())),
        }
    }
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, "poison");
    assert!(failures[0].1.contains("save_step"), "{}", failures[0].1);
    assert!(
        failures[0].1.contains("[many, 2026112800] step 'poison'"),
        "{}",
        failures[0].1
    );
    let stored = store
        .get_steps(&FlowKey::new("many", tp(TP)))
        .await
        .unwrap();
    assert_eq!(stored.len(), 399);
    assert_eq!(
        stored
            .iter()
            .map(|s| s.id.clone().unwrap())
            .collect::<std::collections::HashSet<_>>(),
        ids
    );
}

fn acquired(outcome: LeaseOutcome) -> Lease {
    match outcome {
        LeaseOutcome::Acquired(lease) => lease,
        other => panic!("expected the lease, got {other:?}"),
    }
}

#[tokio::test]
async fn lease_acquire_hold_renew_release_and_stale_takeover() {
    let dir = Dir::new();
    let store = dir.open();
    let key = FlowKey::new("leased", tp(TP));
    let ttl = Duration::from_secs(60);

    let a1 = acquired(store.acquire_lease(&key, "a", at(0), ttl).await.unwrap());
    assert_eq!((a1.owner.as_str(), a1.token), ("a", 1));
    // The holder may take it again (e.g. a retry after a lost answer); the
    // token still grows, so the earlier answer's lease is no longer current.
    let a = acquired(store.acquire_lease(&key, "a", at(1), ttl).await.unwrap());
    assert_eq!(a.token, 2);
    assert!(!store.renew_lease(&a1, at(1)).await.unwrap());
    assert_eq!(
        store.acquire_lease(&key, "b", at(30), ttl).await.unwrap(),
        LeaseOutcome::HeldBy {
            owner: "a".to_string(),
            heartbeat_at: at(1)
        }
    );
    // Other keys are independent.
    let other = FlowKey::new("leased", tp("2026112900"));
    let b_other = acquired(store.acquire_lease(&other, "b", at(30), ttl).await.unwrap());
    assert_eq!(b_other.token, 1);

    // Renewing moves the heartbeat, so b still cannot take it later on.
    assert!(store.renew_lease(&a, at(50)).await.unwrap());
    assert!(!store
        .renew_lease(
            &Lease {
                owner: "b".to_string(),
                ..a.clone()
            },
            at(50)
        )
        .await
        .unwrap());
    assert_eq!(
        store.acquire_lease(&key, "b", at(100), ttl).await.unwrap(),
        LeaseOutcome::HeldBy {
            owner: "a".to_string(),
            heartbeat_at: at(50)
        }
    );

    // Stale: the heartbeat is older than ttl, b takes over; a learns it lost.
    let b = acquired(store.acquire_lease(&key, "b", at(111), ttl).await.unwrap());
    assert_eq!(b.token, 3);
    assert!(!store.renew_lease(&a, at(112)).await.unwrap());
    let (owner, acquired_at, token): (String, String, i64) = dir
        .other_connection()
        .query_row(
            "SELECT owner, acquired_at, token FROM lease WHERE flow_name = 'leased' AND timeperiod = ?1",
            [TP],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((owner.as_str(), token), ("b", 3));
    assert_eq!(acquired_at, "2026-11-18T11:08:31.123456Z");

    // Release by a non-holder is a no-op; by the holder frees the key.
    store.release_lease(&a).await.unwrap();
    assert_eq!(
        store.acquire_lease(&key, "c", at(112), ttl).await.unwrap(),
        LeaseOutcome::HeldBy {
            owner: "b".to_string(),
            heartbeat_at: at(111)
        }
    );
    store.release_lease(&b).await.unwrap();
    assert!(!store.renew_lease(&b, at(113)).await.unwrap());
    let info = store.get_lease(&key).await.unwrap().unwrap();
    assert_eq!((info.owner, info.token), (None, 3), "released, token kept");
    let c = acquired(store.acquire_lease(&key, "c", at(113), ttl).await.unwrap());
    assert_eq!(c.token, 4, "the token grows across a release");

    // A ttl too large for the calendar means nothing is ever stale.
    assert_eq!(
        store
            .acquire_lease(&key, "d", at(10_000), Duration::MAX)
            .await
            .unwrap(),
        LeaseOutcome::HeldBy {
            owner: "c".to_string(),
            heartbeat_at: at(113)
        }
    );
}

#[tokio::test]
async fn writes_with_an_old_lease_are_fenced_and_write_nothing() {
    let dir = Dir::new();
    let store = dir.open();
    let key = FlowKey::new("fenced", tp(TP));
    let ttl = Duration::from_secs(60);
    let old = acquired(store.acquire_lease(&key, "old", at(0), ttl).await.unwrap());
    let (first, run) = store
        .begin_run(
            &old,
            &flow("fenced", TP),
            false,
            &[step("fenced", "a", TP)],
            &run_record(&flow("fenced", TP), &old),
        )
        .await
        .unwrap();
    // The old owner stalls; its lease turns stale and "new" takes it over.
    let new = acquired(store.acquire_lease(&key, "new", at(61), ttl).await.unwrap());
    assert!(new.token > old.token);
    let flow_before = store.get_flow(&key).await.unwrap();
    let steps_before = store.get_steps(&key).await.unwrap();

    let mut changed = first.clone();
    changed.state = FlowState::Invalid;
    let mut a = step("fenced", "a", TP);
    a.state = StepState::Canceled;
    let cluster = flow_core::ClusterRecord {
        id: None,
        flow_name: "fenced".into(),
        timeperiod: tp(TP),
        run: run.id.clone().unwrap(),
        handle: flow_core::ClusterHandle {
            kind: "local".into(),
            name: "local-0".into(),
            backend_id: "x".into(),
            reused: false,
            details: Default::default(),
        },
        state: flow_core::ClusterState::Up,
        launched_at: at(1),
        updated_at: at(1),
        message: None,
        usage: Default::default(),
    };
    let mut finished = run.clone();
    finished.outcome = Some(FlowState::Invalid);
    let results = [
        ("save_flow", store.save_flow(&old, &changed).await.err()),
        ("save_step", store.save_step(&old, &a).await.err()),
        (
            "save_flow_and_steps",
            store
                .save_flow_and_steps(&old, &changed, std::slice::from_ref(&a))
                .await
                .err(),
        ),
        (
            "begin_run",
            store
                .begin_run(&old, &changed, true, &[], &run_record(&changed, &old))
                .await
                .err(),
        ),
        ("finish_run", store.finish_run(&old, &finished).await.err()),
        (
            "save_cluster",
            store.save_cluster(&old, &cluster).await.err(),
        ),
    ];
    for (operation, error) in results {
        match error {
            Some(StoreError::Fenced { key, token, holder }) => {
                assert_eq!(key, "[fenced, 2026112800]", "{operation}");
                assert_eq!(token, old.token, "{operation}");
                assert_eq!(holder.as_deref(), Some("new"), "{operation}");
            }
            other => panic!("{operation} with the old lease: expected Fenced, got {other:?}"),
        }
    }
    assert_eq!(store.get_flow(&key).await.unwrap(), flow_before);
    assert_eq!(store.get_steps(&key).await.unwrap(), steps_before);
    assert!(store.list_clusters(Some(&key)).await.unwrap().is_empty());
    let runs = store
        .list_runs(&flow_core::RunQuery::default())
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, None);
    // The new holder writes fine.
    store.save_flow(&new, &changed).await.unwrap();
    store.save_step(&new, &a).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_race_between_stores_on_one_file_has_one_winner() {
    let dir = Dir::new();
    drop(dir.open()); // create the schema once; openers below race anyway
    let key = FlowKey::new("race", tp(TP));
    for round in 0..3 {
        let stores: Vec<_> = (0..32).map(|_| dir.open()).collect();
        let barrier = Arc::new(tokio::sync::Barrier::new(stores.len()));
        let mut tasks = Vec::new();
        for (i, store) in stores.into_iter().enumerate() {
            let key = key.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("owner-{round}-{i}");
                barrier.wait().await;
                let outcome = store
                    .acquire_lease(&key, &owner, Utc::now(), Duration::from_secs(600))
                    .await;
                (owner, outcome.unwrap())
            }));
        }
        let mut winners = Vec::new();
        let mut holders = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (_, LeaseOutcome::Acquired(lease)) => winners.push(lease),
                (_, LeaseOutcome::HeldBy { owner, .. }) => holders.push(owner),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(holders.len(), 31);
        assert!(
            holders.iter().all(|h| *h == winners[0].owner),
            "{holders:?} vs {winners:?}"
        );
        assert_eq!(winners[0].token, round + 1, "one acquisition per round");
        let store = dir.open();
        store.release_lease(&winners[0]).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_fails_the_call_by_name_and_the_store_recovers() {
    let dir = Dir::new();
    let store = dir.open_with(SqliteOptions {
        busy_timeout: Duration::from_millis(100),
        ..SqliteOptions::default()
    });
    let key = FlowKey::new("locked", tp(TP));
    save_step(&store, &step("locked", "before", TP))
        .await
        .unwrap();

    let blocker = dir.other_connection();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = save_step(&store, &step("locked", "during", TP))
        .await
        .unwrap_err();
    match &err {
        StoreError::Operation {
            operation,
            key,
            message,
        } => {
            assert_eq!(*operation, "save_step");
            assert_eq!(key, "[locked, 2026112800] step 'during'");
            assert!(message.contains("locked"), "{message}");
        }
        other => panic!("expected an operation error, got {other:?}"),
    }
    assert!(err.to_string().contains("save_step"));
    // Leases fail the same way, named.
    let err = store
        .acquire_lease(&key, "me", Utc::now(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Operation { operation: "acquire_lease", key, .. } if key == "[locked, 2026112800]"),
        "{err:?}"
    );
    // Reads still work while another connection holds the write lock (WAL).
    assert_eq!(store.get_steps(&key).await.unwrap().len(), 1);
    blocker.execute_batch("ROLLBACK").unwrap();

    save_step(&store, &step("locked", "after", TP))
        .await
        .unwrap();
    let names: Vec<_> = store
        .get_steps(&key)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.step_name)
        .collect();
    assert_eq!(names, ["before", "after"]);

    // Same after the other connection commits instead of rolling back.
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    assert!(save_flow(&store, &flow("locked", TP)).await.is_err());
    blocker
        .execute_batch("INSERT INTO lease VALUES ('x', '2026112800', 'o', 'a', 'b', 1); COMMIT")
        .unwrap();
    assert!(save_flow(&store, &flow("locked", TP))
        .await
        .unwrap()
        .id
        .is_some());
}

fn expect_open_error(path: &Path, result: Result<SqliteStore, StoreError>) -> String {
    match result {
        Err(StoreError::Open { location, message }) => {
            assert_eq!(location, path.display().to_string());
            let text = StoreError::Open {
                location,
                message: message.clone(),
            }
            .to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            message
        }
        Err(other) => panic!("expected an open error, got {other:?}"),
        Ok(store) => panic!("expected an open error, got {store:?}"),
    }
}

#[test]
fn open_fails_on_a_missing_directory() {
    let dir = Dir::new();
    let path = dir.dir.path().join("missing").join("flow.db");
    let message = expect_open_error(&path, SqliteStore::open(&path, SqliteOptions::default()));
    assert!(message.contains("does not exist"), "{message}");
    assert!(
        !dir.dir.path().join("missing").exists(),
        "no directory is created"
    );
}

#[test]
fn open_fails_on_a_file_that_is_not_a_database() {
    let dir = Dir::new();
    for size in [1usize, 50, 100, 4096, 10_000] {
        let path = dir.dir.path().join(format!("garbage-{size}.db"));
        let bytes: Vec<u8> = (0..size).map(|i| (i * 7 + 13) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let message = expect_open_error(&path, SqliteStore::open(&path, SqliteOptions::default()));
        assert!(
            message.contains("not a database"),
            "{size} bytes: {message}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the file is left alone"
        );
    }
}

#[test]
fn open_fails_on_a_directory() {
    let dir = Dir::new();
    let path = dir.dir.path().to_path_buf();
    expect_open_error(&path, SqliteStore::open(&path, SqliteOptions::default()));
}

#[test]
fn open_refuses_a_newer_schema_and_foreign_tables() {
    let dir = Dir::new();
    drop(dir.open());
    dir.other_connection()
        .execute_batch("PRAGMA user_version = 11")
        .unwrap();
    let message = expect_open_error(
        &dir.db(),
        SqliteStore::open(&dir.db(), SqliteOptions::default()),
    );
    assert!(message.contains("schema version 11"), "{message}");

    let path = dir.dir.path().join("foreign.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE flow (id INTEGER PRIMARY KEY, something TEXT)")
        .unwrap();
    let message = expect_open_error(&path, SqliteStore::open(&path, SqliteOptions::default()));
    assert!(message.contains("flow store"), "{message}");
    // Refused before anything is written: no column added, no version.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let columns: i64 = conn
        .query_row("SELECT COUNT(*) FROM pragma_table_info('flow')", [], |r| {
            r.get(0)
        })
        .unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!((columns, version), (2, 0));
}

#[tokio::test]
async fn wal_is_on_and_the_schema_is_versioned() {
    let dir = Dir::new();
    for synchronous in [Synchronous::Normal, Synchronous::Full] {
        let store = dir.open_with(SqliteOptions {
            synchronous,
            ..SqliteOptions::default()
        });
        save_flow(&store, &flow("wal", TP)).await.unwrap();
        let conn = dir.other_connection();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            tables,
            [
                "cluster",
                "flow",
                "job",
                "lease",
                "log",
                "run",
                "shared_cluster",
                "sqlite_sequence",
                "step"
            ]
        );
        let state: String = conn
            .query_row("SELECT state || ' ' || run_mode FROM flow", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(state, "state_embryo run_mode_nominal");
    }
}

#[tokio::test]
async fn unreadable_rows_are_reported_as_corrupt() {
    let dir = Dir::new();
    let store = dir.open();
    let key = FlowKey::new("bad", tp(TP));
    save_flow(&store, &flow("bad", TP)).await.unwrap();
    save_step(&store, &step("bad", "s", TP)).await.unwrap();
    store
        .acquire_lease(&key, "a", at(0), Duration::from_secs(1))
        .await
        .unwrap();
    let conn = dir.other_connection();
    conn.execute_batch(
        "UPDATE flow SET state = 'state_bogus';
         UPDATE step SET main_state = 'half_done';
         UPDATE lease SET heartbeat_at = 'yesterday';",
    )
    .unwrap();

    let corrupt = |e: StoreError| match e {
        StoreError::Corrupt { what, key, message } => (what, key, message),
        other => panic!("expected corrupt, got {other:?}"),
    };
    let (what, k, message) = corrupt(store.get_flow(&key).await.unwrap_err());
    assert_eq!((what, k.as_str()), ("flow record", "[bad, 2026112800]"));
    assert!(message.contains("state_bogus"), "{message}");
    corrupt(store.list_flows(&FlowQuery::named(None)).await.unwrap_err());
    let (what, k, message) = corrupt(store.get_steps(&key).await.unwrap_err());
    assert_eq!(
        (what, k.as_str()),
        ("step record", "[bad, 2026112800] step 's'")
    );
    assert!(
        message.contains("main_state") && message.contains("half_done"),
        "{message}"
    );
    let (what, _, message) = corrupt(
        store
            .acquire_lease(&key, "b", at(0), Duration::from_secs(1))
            .await
            .unwrap_err(),
    );
    assert_eq!(what, "lease");
    assert!(message.contains("yesterday"), "{message}");

    conn.execute_batch("UPDATE step SET main_state = 'pending', attempts = -1")
        .unwrap();
    let (_, _, message) = corrupt(store.get_steps(&key).await.unwrap_err());
    assert!(message.contains("attempts"), "{message}");
    conn.execute_batch("UPDATE step SET attempts = 'many'")
        .unwrap();
    corrupt(store.get_steps(&key).await.unwrap_err());
    conn.execute_batch("UPDATE flow SET state = 'state_noop', timeperiod = '2026133000'")
        .unwrap();
    corrupt(
        store
            .list_flows(&FlowQuery::named(Some("bad")))
            .await
            .unwrap_err(),
    );

    // The store keeps working for healthy rows.
    save_flow(&store, &flow("good", TP)).await.unwrap();
    assert!(store
        .get_flow(&FlowKey::new("good", tp(TP)))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn data_survives_reopening_and_dropping_the_last_handle_closes_the_file() {
    let dir = Dir::new();
    let store = dir.open();
    let clone = store.clone();
    let saved = save_flow(&store, &flow("durable", TP)).await.unwrap();
    drop(store);
    // The clone still works: same connection, same thread.
    save_step(&clone, &step("durable", "s", TP)).await.unwrap();
    let wal = PathBuf::from(format!("{}-wal", dir.db().display()));
    assert!(wal.exists());
    drop(clone);
    // The connection closed (checkpointing and removing the WAL) before
    // drop returned, so the writer thread is gone.
    assert!(
        !wal.exists(),
        "the WAL is checkpointed and removed on close"
    );

    let store = dir.open();
    assert_eq!(
        store.get_flow(&saved.key()).await.unwrap(),
        Some(saved.clone())
    );
    assert_eq!(store.get_steps(&saved.key()).await.unwrap().len(), 1);
    assert_eq!(store.path(), dir.db());
}

#[test]
fn concurrent_opens_of_a_new_file_all_succeed() {
    let dir = Arc::new(Dir::new());
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let dir = dir.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                SqliteStore::open(&dir.db(), SqliteOptions::default()).map(drop)
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
}

/// A file written by the previous release (schema version 1) opens, is
/// upgraded in place, reads back unchanged, and takes the new records.
#[tokio::test]
async fn a_version_1_file_is_upgraded_in_place() {
    let dir = Dir::new();
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE flow (id INTEGER PRIMARY KEY, flow_name TEXT NOT NULL,
                 timeperiod TEXT NOT NULL, start_timeperiod TEXT NOT NULL,
                 end_timeperiod TEXT NOT NULL, state TEXT NOT NULL, run_mode TEXT NOT NULL,
                 created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
                 UNIQUE (flow_name, timeperiod));
             CREATE TABLE step (id INTEGER PRIMARY KEY, flow_name TEXT NOT NULL,
                 step_name TEXT NOT NULL, timeperiod TEXT NOT NULL, state TEXT NOT NULL,
                 created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
                 related_flow INTEGER, pre_state TEXT NOT NULL, main_state TEXT NOT NULL,
                 post_state TEXT NOT NULL, attempts INTEGER NOT NULL, error TEXT,
                 UNIQUE (flow_name, timeperiod, step_name));
             CREATE TABLE lease (flow_name TEXT NOT NULL, timeperiod TEXT NOT NULL,
                 owner TEXT NOT NULL, acquired_at TEXT NOT NULL, heartbeat_at TEXT NOT NULL,
                 PRIMARY KEY (flow_name, timeperiod));
             INSERT INTO flow VALUES (7, 'old', '2026112800', '2026112800', '2026112900',
                 'state_processed', 'run_mode_nominal', '2026-11-28T07:00:00.000000Z',
                 '2026-11-28T07:00:01.000000Z', '2026-11-28T07:00:02.000000Z');
             INSERT INTO step VALUES (3, 'old', 'a', '2026112800', 'state_processed',
                 '2026-11-28T07:00:00.000000Z', NULL, NULL, 7, 'complete', 'complete',
                 'complete', 1, NULL);
             INSERT INTO lease VALUES ('old', '2026112800', 'gone', '2026-11-28T07:00:00.000000Z',
                 '2026-11-28T07:00:00.000000Z');
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = dir.open();
    let key = FlowKey::new("old", tp(TP));
    let flow = store.get_flow(&key).await.unwrap().unwrap();
    assert_eq!(flow.id, Some(RecordId::new("7")));
    assert_eq!(flow.state, FlowState::Processed);
    assert_eq!(flow.graph_hash, None);
    let steps = store.get_steps(&key).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].related_flow, Some(RecordId::new("7")));
    assert_eq!((steps[0].actions_done, &steps[0].job), (0, &None));
    assert!(steps[0].rollbacks.is_empty());
    // The old lease row gets a token of 0; the next acquisition gets 1.
    assert_eq!(store.get_lease(&key).await.unwrap().unwrap().token, 0);
    let lease = acquired(
        store
            .acquire_lease(&key, "new", Utc::now(), Duration::from_secs(1))
            .await
            .unwrap(),
    );
    assert_eq!(lease.token, 1);
    assert_eq!(dir.user_version(), SCHEMA_VERSION);
}

/// A version-2 file (before Jobs and SLA marks) gets the `job` table and
/// the `sla_missed_at` column when opened.
#[tokio::test]
async fn a_version_2_file_is_upgraded_with_the_job_table() {
    let dir = Dir::new();
    drop(dir.open());
    dir.other_connection()
        .execute_batch(
            "DROP INDEX flow_sla_missed; DROP TABLE job; ALTER TABLE flow DROP COLUMN sla_missed_at;
             ALTER TABLE flow DROP COLUMN trace_parent;
             ALTER TABLE cluster DROP COLUMN usage; PRAGMA user_version = 2;",
        )
        .unwrap();
    let store = dir.open();
    let key = flow_core::JobKey::new("old", flow_core::TimeQualifier::Daily, tp(TP));
    let job = store
        .create_job(&flow_core::TimetableJob::embryo(&key, Utc::now()))
        .await
        .unwrap();
    assert_eq!(job.state, flow_core::JobState::Embryo);
    assert_eq!(dir.user_version(), SCHEMA_VERSION);
}

/// A version-4 file (Jobs without `depends_on_flows`) gets the column
/// when opened; its Jobs read with none.
#[tokio::test]
async fn a_version_4_file_is_upgraded_with_the_jobs_upstreams() {
    let dir = Dir::new();
    let store = dir.open();
    let key = flow_core::JobKey::new("old", flow_core::TimeQualifier::Daily, tp(TP));
    let mut job = flow_core::TimetableJob::embryo(&key, Utc::now());
    job.depends_on_flows = vec!["upstream".into()];
    store.create_job(&job).await.unwrap();
    drop(store);
    dir.other_connection()
        .execute_batch(
            "DROP INDEX flow_sla_missed; ALTER TABLE job DROP COLUMN depends_on_flows; ALTER TABLE flow DROP COLUMN sla_missed_at;
             ALTER TABLE flow DROP COLUMN trace_parent;
             DROP INDEX job_tally; ALTER TABLE job DROP COLUMN due_at;
             ALTER TABLE job DROP COLUMN started_at; ALTER TABLE cluster DROP COLUMN usage;
             PRAGMA user_version = 4;",
        )
        .unwrap();
    let store = dir.open();
    let read = store.get_job(&key).await.unwrap().unwrap();
    assert_eq!(read.depends_on_flows, Vec::<String>::new());
    assert_eq!(dir.user_version(), SCHEMA_VERSION);
}

/// A version-6 file (Jobs without `due_at` and `started_at`) keeps its Jobs
/// and gets the columns and the tally index when opened.
#[tokio::test]
async fn a_version_6_file_is_upgraded_with_the_jobs_delay_columns() {
    let dir = Dir::new();
    drop(dir.open());
    dir.other_connection()
        .execute_batch(
            "DROP INDEX flow_sla_missed; DROP INDEX job_tally;
             ALTER TABLE cluster DROP COLUMN usage;
             ALTER TABLE job DROP COLUMN due_at;
             ALTER TABLE job DROP COLUMN started_at;
             ALTER TABLE flow DROP COLUMN trace_parent;
             INSERT INTO job (process_name, time_qualifier, timeperiod, state, event_log,
                 number_of_failures) VALUES ('old', 'daily', '2026112800', 'state_noop', '[]', 1);
             PRAGMA user_version = 6;",
        )
        .unwrap();
    let store = dir.open();
    let key = flow_core::JobKey::new("old", flow_core::TimeQualifier::Daily, tp(TP));
    let job = store.get_job(&key).await.unwrap().unwrap();
    assert_eq!(job.state, flow_core::JobState::Noop);
    assert_eq!((job.due_at, job.started_at), (None, None));
    let tally = store
        .tally_jobs("old", flow_core::TimeQualifier::Daily)
        .await
        .unwrap();
    assert_eq!(
        tally,
        [flow_core::JobTally {
            state: flow_core::JobState::Noop,
            number_of_failures: 1,
            jobs: 1
        }]
    );
    let conn = dir.other_connection();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    // The tally is counted on its index alone.
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT state, number_of_failures, COUNT(*) FROM job
             WHERE process_name = 'old' AND time_qualifier = 'daily'
             GROUP BY state, number_of_failures",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("COVERING INDEX job_tally"), "{plan}");
}

/// A version-7 file gains `flow.trace_parent`; its flows read as untraced
/// and a traced run's context is kept from then on.
#[tokio::test]
async fn a_version_7_file_is_upgraded_with_the_trace_parent_column() {
    let dir = Dir::new();
    let store = dir.open();
    save_flow(&store, &flow("old", TP)).await.unwrap();
    drop(store);
    dir.other_connection()
        .execute_batch(
            "DROP INDEX flow_sla_missed; ALTER TABLE flow DROP COLUMN trace_parent; ALTER TABLE cluster DROP COLUMN usage;
             PRAGMA user_version = 7;",
        )
        .unwrap();
    let store = dir.open();
    let key = FlowKey::new("old", tp(TP));
    let old = store.get_flow(&key).await.unwrap().unwrap();
    assert_eq!(old.trace_parent, None);
    let traced = FlowRecord {
        trace_parent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        ..old
    };
    save_flow(&store, &traced).await.unwrap();
    let read = store.get_flow(&key).await.unwrap().unwrap();
    assert_eq!(read.trace_parent, traced.trace_parent);
    assert_eq!(dir.user_version(), SCHEMA_VERSION);
}

/// The database file and its WAL and shared-memory files are readable by
/// their owner only (SQLite alone would make them 0644).
#[tokio::test]
async fn the_store_file_and_its_wal_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let store = dir.open();
    // A write, so the WAL and the shared memory exist while it is open.
    let key = FlowKey::new("private", tp(TP));
    let lease = acquired(
        store
            .acquire_lease(&key, "me", Utc::now(), Duration::from_secs(60))
            .await
            .unwrap(),
    );
    store
        .save_step(&lease, &step("private", "a", TP))
        .await
        .unwrap();
    let mode = |suffix: &str| {
        let path = PathBuf::from(format!("{}{suffix}", dir.db().display()));
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o600);
    assert_eq!(mode("-wal"), 0o600);
    assert_eq!(mode("-shm"), 0o600);
    drop(store);
    // An existing file keeps the mode its owner gave it.
    std::fs::set_permissions(dir.db(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let _again = dir.open();
    assert_eq!(mode(""), 0o640);
}

/// A version-8 file (clusters without `usage`) keeps its cluster records,
/// which read as of unknown instances.
#[tokio::test]
async fn a_version_8_file_is_upgraded_with_the_cluster_usage_column() {
    let dir = Dir::new();
    drop(dir.open());
    dir.other_connection()
        .execute_batch(
            "DROP INDEX flow_sla_missed; ALTER TABLE cluster DROP COLUMN usage;
             INSERT INTO cluster (flow_name, timeperiod, run, kind, name, backend_id, reused,
                 details, state, launched_at, updated_at, message)
             VALUES ('old', '2026112800', 1, 'emr', 'emr-0', 'j-1', 0, '{}', 'terminated',
                 '2026-11-28T07:00:00.000000Z', '2026-11-28T08:00:00.000000Z', NULL);
             PRAGMA user_version = 8;",
        )
        .unwrap();
    let store = dir.open();
    let clusters = store.list_clusters(None).await.unwrap();
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0].usage, flow_core::ClusterUsage::default());
    assert_eq!(clusters[0].instance_hours(chrono::Utc::now()), None);
    assert_eq!(dir.user_version(), SCHEMA_VERSION);
}

/// A version-9 file gains the index `count_sla_missed` counts on: its
/// marked flows are counted, and the count is answered from the index
/// alone (a scrape's cost follows a flow's misses, not its history).
#[tokio::test]
async fn a_version_9_file_is_upgraded_with_the_sla_missed_index() {
    let dir = Dir::new();
    let store = dir.open();
    let mut missed = flow("late", TP);
    missed.sla_missed_at = Some(Utc::now());
    save_flow(&store, &missed).await.unwrap();
    save_flow(&store, &flow("late", "2026112900"))
        .await
        .unwrap();
    drop(store);
    dir.other_connection()
        .execute_batch("DROP INDEX flow_sla_missed; PRAGMA user_version = 9;")
        .unwrap();
    let store = dir.open();
    assert_eq!(store.count_sla_missed("late").await.unwrap(), 1);
    assert_eq!(store.count_sla_missed("other").await.unwrap(), 0);
    assert_eq!(dir.user_version(), SCHEMA_VERSION);
    let plan: String = dir
        .other_connection()
        .query_row(
            "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM flow
             WHERE flow_name = 'late' AND sla_missed_at IS NOT NULL",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("COVERING INDEX flow_sla_missed"), "{plan}");
}
