//! The mapping layer against documents written the way Synergy Flow writes
//! them (extended JSON under `tests/fixtures/`). No server needed: these run
//! in every `cargo test`.

use bson::{Bson, Document};
use flow_core::{FlowState, RecordId, RunMode, StepState};
use flow_store_mongo::{FlowDoc, StepDoc};
use std::path::Path;

fn fixture(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn document(value: &serde_json::Value) -> Document {
    match Bson::try_from(value.clone()).expect("extended JSON") {
        Bson::Document(d) => d,
        other => panic!("not a document: {other:?}"),
    }
}

fn bytes(document: &Document) -> Vec<u8> {
    document.to_vec().expect("encodes")
}

/// Decodes `stored` as `M`, converts it to a record and back, and checks
/// the document is the same, byte for byte.
macro_rules! round_trip {
    ($model:ty, $stored:expr) => {{
        let stored: Document = $stored;
        let model: $model = bson::deserialize_from_document(stored.clone())
            .unwrap_or_else(|e| panic!("decoding {stored}: {e}"));
        let record = model
            .to_record()
            .unwrap_or_else(|e| panic!("reading {stored}: {e}"));
        let again =
            <$model>::from_record(&record).unwrap_or_else(|e| panic!("writing {stored}: {e}"));
        let encoded = bson::serialize_to_document(&again).expect("encodes");
        assert_eq!(
            encoded, stored,
            "document changed on the way through a record"
        );
        assert_eq!(
            bytes(&encoded),
            bytes(&stored),
            "bytes changed for {stored}"
        );
        record
    }};
}

#[test]
fn synergy_flow_documents_round_trip_byte_exact() {
    let docs = fixture("synergy_flow.json");
    let docs = docs["documents"].as_array().expect("documents");
    let mut states = Vec::new();
    for value in docs {
        let record = round_trip!(FlowDoc, document(value));
        assert_eq!(record.flow_name, "daily_report");
        assert!(record.id.as_ref().is_some_and(|id| id.as_str().len() == 24));
        assert_eq!(record.graph_hash, None);
        states.push(record.state);
    }
    assert_eq!(
        states,
        FlowState::ALL,
        "one fixture per flow state, in order"
    );
    // Every field, on one of them.
    let record = round_trip!(FlowDoc, document(&docs[2]));
    assert_eq!(record.id, Some(RecordId::new("6569a1f0c3b2a10000000002")));
    assert_eq!(record.timeperiod.to_string(), "2026112300");
    assert_eq!(record.start_timeperiod.to_string(), "2026112800");
    assert_eq!(record.end_timeperiod.to_string(), "2026112900");
    assert_eq!(record.run_mode, RunMode::Nominal);
    assert_eq!(record.created_at.to_rfc3339(), "2026-11-28T07:00:02+00:00");
    assert_eq!(
        record.started_at.map(|t| t.timestamp_millis()),
        Some(1_795_849_202_250)
    );
    assert_eq!(
        record.finished_at.map(|t| t.timestamp_millis()),
        Some(1_795_849_262_123)
    );
}

#[test]
fn synergy_step_documents_round_trip_byte_exact() {
    let docs = fixture("synergy_step.json");
    let docs = docs["documents"].as_array().expect("documents");
    let mut states = Vec::new();
    for value in docs {
        let record = round_trip!(StepDoc, document(value));
        assert_eq!(
            record.related_flow,
            Some(RecordId::new("6569a1f0c3b2a10000000002"))
        );
        assert_eq!(record.attempts, 0);
        assert_eq!(record.job, None);
        assert!(record.rollbacks.is_empty());
        states.push(record.state);
    }
    assert_eq!(
        states,
        StepState::ALL,
        "one fixture per step state, in order"
    );
}

#[test]
fn a_step_written_here_keeps_every_additive_field() {
    let value = fixture("step_written_here.json");
    let record = round_trip!(StepDoc, document(&value["document"]));
    assert_eq!(record.attempts, 3);
    assert_eq!(record.actions_done, 2);
    assert_eq!(record.error.as_deref(), Some("load: exit code 1"));
    let job = record.job.expect("job");
    assert_eq!(job.handle.id("step_id"), Some("s-1234"));
    assert_eq!((job.action_index, job.attempt, job.adopted), (1, 3, true));
    assert_eq!(record.rollbacks.len(), 2);
    assert_eq!(
        record.rollbacks[1].error.as_deref(),
        Some("rollback failed: exit code 2")
    );
}

#[test]
fn documents_of_an_older_synergy_odm_still_read() {
    let value = fixture("synergy_old_odm.json");
    let flow: FlowDoc = bson::deserialize_from_document(document(&value["flow"])).expect("flow");
    let flow = flow.to_record().expect("older flow reads");
    assert_eq!(flow.state, FlowState::Invalid);
    assert_eq!(
        flow.run_mode,
        RunMode::Nominal,
        "a missing run_mode is nominal"
    );
    assert_eq!(flow.created_at.to_rfc3339(), "2017-11-14T10:00:00+00:00");
    let steps: Vec<_> = value["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|v| {
            let step: StepDoc = bson::deserialize_from_document(document(v)).expect("step");
            step.to_record().expect("older step reads")
        })
        .collect();
    assert_eq!(
        steps[0].state,
        StepState::Embryo,
        "state_requested reads as embryo"
    );
    assert_eq!(
        steps[0].related_flow, flow.id,
        "a hex-text related_flow is the flow's id"
    );
    assert_eq!(steps[1].state, StepState::Invalid);
    assert_eq!(
        steps[1].started_at.map(|t| t.to_rfc3339()).as_deref(),
        Some("2017-11-14T10:05:30+00:00")
    );
    // Written back, it takes the current shape: BSON dates and ObjectIds.
    let again = bson::serialize_to_document(&StepDoc::from_record(&steps[0]).expect("writes"))
        .expect("encodes");
    assert!(
        matches!(again.get("created_at"), Some(Bson::DateTime(_))),
        "{again}"
    );
    assert!(
        matches!(again.get("related_flow"), Some(Bson::ObjectId(_))),
        "{again}"
    );
    assert_eq!(again.get_str("state").ok(), Some("state_embryo"));
}

#[test]
fn unreadable_documents_are_errors_naming_the_field() {
    let mut stored = document(&fixture("synergy_step.json")["documents"][0]);
    stored.insert("state", "state_exploded");
    let step: StepDoc = bson::deserialize_from_document(stored).expect("decodes");
    let e = step.to_record().unwrap_err();
    assert!(e.contains("state") && e.contains("state_exploded"), "{e}");
    let mut stored = document(&fixture("synergy_flow.json")["documents"][0]);
    stored.insert("timeperiod", "2026-11-28");
    let flow: FlowDoc = bson::deserialize_from_document(stored).expect("decodes");
    assert!(flow.to_record().unwrap_err().contains("timeperiod"));
}
