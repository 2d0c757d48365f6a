//! The store conformance suite (`flow_core::testkit::store`) on a SQLite
//! file, with a schema-version-1 database as the older-schema fixture.

use chrono::{DateTime, Utc};
use flow_core::testkit::store::{store_conformance, BeginRunKind, LegacyFixture, StoreUnderTest};
use flow_core::{
    ActionSetState, FlowRecord, FlowState, FlowStore, RecordId, RunMode, StepRecord, StepState,
};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;

fn t(text: &str) -> DateTime<Utc> {
    text.parse().expect("a timestamp")
}

/// What `tests/fixtures/schema_v1.sql` holds, as records.
fn v1_fixture() -> LegacyFixture {
    let flow = FlowRecord {
        id: Some(RecordId::new("7")),
        flow_name: "v1_flow".into(),
        timeperiod: "2026110100".parse().unwrap(),
        start_timeperiod: "2026110100".parse().unwrap(),
        end_timeperiod: "2026110200".parse().unwrap(),
        state: FlowState::Invalid,
        run_mode: RunMode::Recovery,
        created_at: t("2026-11-01T00:00:00Z"),
        started_at: Some(t("2026-11-01T00:00:01.25Z")),
        finished_at: Some(t("2026-11-01T00:10:00Z")),
        graph_hash: None,
    };
    let step = |id: &str,
                name: &str,
                state,
                main,
                post,
                attempts,
                error: Option<&str>,
                started: &str,
                finished: &str| {
        let mut s = StepRecord::embryo(
            "v1_flow",
            name,
            flow.timeperiod,
            Some(RecordId::new("7")),
            t("2026-11-01T00:00:01Z"),
        );
        s.id = Some(RecordId::new(id));
        s.state = state;
        s.started_at = Some(t(started));
        s.finished_at = Some(t(finished));
        s.pre_state = ActionSetState::Complete;
        s.main_state = main;
        s.post_state = post;
        s.attempts = attempts;
        s.error = error.map(str::to_string);
        s
    };
    LegacyFixture {
        name: "schema version 1 (tests/fixtures/schema_v1.sql)".into(),
        steps: vec![
            step(
                "11",
                "extract",
                StepState::Processed,
                ActionSetState::Complete,
                ActionSetState::Complete,
                1,
                None,
                "2026-11-01T00:00:02Z",
                "2026-11-01T00:05:00Z",
            ),
            step(
                "12",
                "load",
                StepState::Invalid,
                ActionSetState::Failed,
                ActionSetState::Pending,
                3,
                Some("exit code 1"),
                "2026-11-01T00:05:01Z",
                "2026-11-01T00:10:00Z",
            ),
        ],
        flow,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_conformance_on_sqlite() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("flow.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("a v1 database");
        conn.execute_batch(include_str!("fixtures/schema_v1.sql"))
            .expect("the v1 fixture loads");
    }
    // Several connections on one file: as several engines on one host.
    let handles: Vec<Arc<dyn FlowStore>> = (0..4)
        .map(|_| {
            Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("opens"))
                as Arc<dyn FlowStore>
        })
        .collect();
    store_conformance(StoreUnderTest {
        handles,
        // One transaction per call; the store's own tests poison a table to
        // show a failed begin_run writes nothing (`begin_run_is_one_transaction`).
        begin_run: BeginRunKind::Atomic,
        interrupt: None,
        legacy: vec![v1_fixture()],
    })
    .await;
}
