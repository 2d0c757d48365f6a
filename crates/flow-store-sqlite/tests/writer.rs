//! The writer thread on a real file, seen through its own trace events
//! (`store group`, one per group commit, with the number of writes in it):
//! uncontended calls never reach it; calls that meet another connection's
//! write lock queue up and share one commit, at most 512 to a group; a
//! failing change fails only its own caller.
//!
//! One test function: the events are process-wide, so the parts run one
//! after the other on one store.

use chrono::Utc;
use flow_core::{FlowKey, FlowStore, Lease, LeaseOutcome, RecordId, StepRecord, StoreError};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, Once};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

const TP: &str = "2026112800";

/// An event of the store's writer: its level, message and `writes` field.
#[derive(Debug, Clone)]
struct Seen {
    level: Level,
    message: String,
    writes: Option<u64>,
}

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

/// Keeps the events of `flow_store_sqlite::writer`, from every thread.
struct Capture;

struct Fields(Seen);

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "writes" {
            self.0.writes = Some(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.message = format!("{value:?}");
        }
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "flow_store_sqlite::writer"
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(Seen {
            level: *event.metadata().level(),
            message: String::new(),
            writes: None,
        });
        event.record(&mut fields);
        SEEN.lock().unwrap().push(fields.0);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| tracing::subscriber::set_global_default(Capture).unwrap());
}

/// The sizes (writes) of the group commits seen since the last call.
/// Groups of reads alone are left out: a read finds the connection busy
/// while the writer still answers its last group, and queues for it.
fn take_groups() -> Vec<u64> {
    let mut seen = SEEN.lock().unwrap();
    let groups = seen
        .iter()
        .filter(|s| s.message == "store group")
        .map(|s| s.writes.expect("a group names its writes"))
        .filter(|writes| *writes > 0)
        .collect();
    seen.clear();
    groups
}

/// The writer's warnings since the last [`take_groups`].
fn warnings() -> Vec<String> {
    SEEN.lock()
        .unwrap()
        .iter()
        .filter(|s| s.level == Level::WARN)
        .map(|s| s.message.clone())
        .collect()
}

/// Waits until the writer thread has taken a group of `writes` (it then
/// waits for the write lock, holding every later call in its queue).
fn wait_for_group(writes: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = SEEN.lock().unwrap();
        if seen
            .iter()
            .any(|s| s.message == "store group" && s.writes == Some(writes))
        {
            return;
        }
        drop(seen);
        assert!(
            Instant::now() < deadline,
            "the writer thread took no group of {writes}: was the call answered without waiting for the lock?"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

type Save<'a> = Pin<Box<dyn Future<Output = Result<RecordId, StoreError>> + Send + 'a>>;

/// Polls a call once: it runs up to its wait for the writer's answer (a
/// call that met the write lock has then been handed to the writer).
fn start<'a>(mut call: Save<'a>) -> Save<'a> {
    let pending = call
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending();
    assert!(
        pending,
        "a call was answered while another connection held the write lock"
    );
    call
}

fn step(name: &str) -> StepRecord {
    StepRecord::embryo("writer", name, TP.parse().unwrap(), None, Utc::now())
}

type Answer = Result<RecordId, StoreError>;

/// While `other` holds the write lock, `opening`'s save reaches the writer
/// thread, which takes it alone and waits for the lock; `queued`'s saves
/// then queue behind it. Releases the lock; returns the answers, the
/// opening one first.
async fn behind_the_lock(
    store: &SqliteStore,
    lease: &Lease,
    other: &rusqlite::Connection,
    opening: &StepRecord,
    queued: &[StepRecord],
) -> (Answer, Vec<Answer>) {
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let first = start(store.save_step(lease, opening));
    wait_for_group(1);
    let calls: Vec<Save> = queued
        .iter()
        .map(|s| start(store.save_step(lease, s)))
        .collect();
    other.execute_batch("ROLLBACK").unwrap();
    let first = first.await;
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await);
    }
    (first, answers)
}

#[tokio::test]
async fn calls_share_group_commits_of_at_most_512_and_a_failure_fails_only_its_caller() {
    capture();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("flow.db");
    let store = SqliteStore::open(
        &db,
        SqliteOptions {
            busy_timeout: Duration::from_secs(60),
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let key = FlowKey::new("writer", TP.parse().unwrap());
    let lease: Lease = match store
        .acquire_lease(&key, "test", Utc::now(), Duration::from_secs(600))
        .await
        .unwrap()
    {
        LeaseOutcome::Acquired(lease) => lease,
        other => panic!("{other:?}"),
    };
    // Another connection, as another process has it; its triggers make
    // saving a step named `poison` fail mid-transaction.
    let other = rusqlite::Connection::open(&db).unwrap();
    other.busy_timeout(Duration::from_secs(5)).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER poison_insert BEFORE INSERT ON step WHEN NEW.step_name = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned step'); END;",
        )
        .unwrap();
    take_groups();

    // Uncontended calls, a failing one too, are answered on the caller's
    // thread: the writer thread takes no group.
    for name in ["a", "b", "c"] {
        store.save_step(&lease, &step(name)).await.unwrap();
    }
    assert_eq!(store.get_steps(&key).await.unwrap().len(), 3);
    let err = store.save_step(&lease, &step("poison")).await.unwrap_err();
    assert!(err.to_string().contains("poisoned step"), "{err}");
    assert_eq!(
        take_groups(),
        Vec::<u64>::new(),
        "uncontended calls went to the writer thread"
    );

    // Group commit: while another connection holds the write lock, the
    // writer waits for it with one call; 600 more queue behind it and go
    // in groups of at most 512.
    let steps: Vec<StepRecord> = (0..600).map(|i| step(&format!("g{i}"))).collect();
    let (first, answers) = behind_the_lock(&store, &lease, &other, &step("first"), &steps).await;
    first.unwrap();
    for answer in answers {
        answer.unwrap();
    }
    assert_eq!(take_groups(), [1, 512, 88]);
    assert_eq!(store.get_steps(&key).await.unwrap().len(), 604);

    // A change that fails alone fails its caller, with no retry.
    let (alone, _) = behind_the_lock(&store, &lease, &other, &step("poison"), &[]).await;
    let err = alone.unwrap_err();
    assert!(err.to_string().contains("poisoned step"), "{err}");
    assert_eq!(
        warnings(),
        Vec::<String>::new(),
        "a group of one was retried"
    );
    assert_eq!(take_groups(), [1]);

    // A change that fails in a group fails only its caller: the others
    // are retried one by one and land.
    let names = ["h1", "h2", "h3", "h4", "poison", "h5", "h6", "h7", "h8"];
    let steps: Vec<StepRecord> = names.iter().map(|n| step(n)).collect();
    let (first, answers) = behind_the_lock(&store, &lease, &other, &step("second"), &steps).await;
    first.unwrap();
    for (name, answer) in names.iter().zip(answers) {
        match (*name, answer) {
            ("poison", Err(e)) => assert!(e.to_string().contains("poisoned step"), "{e}"),
            ("poison", Ok(_)) => panic!("the poisoned step was saved"),
            (name, result) => {
                result.unwrap_or_else(|e| panic!("{name} failed with the poisoned step: {e}"));
            }
        }
    }
    let retried = warnings();
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert!(retried[0].contains("retrying one by one"), "{retried:?}");
    assert_eq!(take_groups(), [1, 9]);
    assert_eq!(store.get_steps(&key).await.unwrap().len(), 613);
}
