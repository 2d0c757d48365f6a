//! The MongoDB store's Jobs are the Synergy Scheduler 2.3's Job documents,
//! checked with Synergy's own model classes (`synergy/db/model/job.py`,
//! run by `tests/peers/synergy_job.py` in the venv `cargo xtask test`
//! installs, `FLOW_TEST_SYNERGY_PYTHON`), both ways: a Job `flow` writes
//! passes `Job.from_json(...).validate()` and reads as written; a Job
//! Synergy's model writes (stored the way its `MongoDbManager.update`
//! stores it) is read by `flow` and moved by it under a claim.

use bson::{doc, Bson, Document};
use flow_core::{FlowStore, JobKey, JobState, LeaseOutcome, RecordId, TimeQualifier, TimetableJob};
use flow_store_mongo::{MongoOptions, MongoStore};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} must be set when this test is included (`cargo xtask test` sets it)")
    })
}

/// A document as plain JSON, the way Synergy's ODM hands it around: ids
/// as hex text, dates as text.
fn plain(document: &Document) -> serde_json::Value {
    fn value(b: &Bson) -> serde_json::Value {
        match b {
            Bson::ObjectId(id) => id.to_hex().into(),
            Bson::DateTime(d) => d.to_string().into(),
            Bson::Document(d) => plain(d),
            Bson::Array(a) => a.iter().map(value).collect(),
            other => other.clone().into_relaxed_extjson(),
        }
    }
    document
        .iter()
        .map(|(k, v)| (k.clone(), value(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn synergy(input: &serde_json::Value) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/synergy_job.py");
    let mut child = Command::new(env("FLOW_TEST_SYNERGY_PYTHON"))
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs Synergy's Python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Synergy's model refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the script")
}

async fn claim(store: &MongoStore, key: &JobKey) -> flow_core::Lease {
    match store
        .acquire_lease(
            &key.claim_key(),
            "test-scheduler",
            chrono::Utc::now(),
            Duration::from_secs(60),
        )
        .await
        .unwrap()
    {
        LeaseOutcome::Acquired(lease) => lease,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs nx-27017 and Synergy's models: `cargo xtask test` provides both"]
async fn jobs_are_synergy_documents_both_ways_with_synergy_models_on_nx27017() {
    let database = format!("flow_test_synergy_jobs_{}", std::process::id());
    let store = MongoStore::connect(&MongoOptions::new(env("FLOW_MONGO_URI"), &database))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // flow writes a daily Job ...
    let key = JobKey::new(
        "daily_report",
        TimeQualifier::Daily,
        "2026112800".parse().unwrap(),
    );
    let now = chrono::Utc::now();
    store
        .create_job(&TimetableJob::embryo(&key, now))
        .await
        .unwrap();
    let lease = claim(&store, &key).await;
    let mut job = store.get_job(&key).await.unwrap().unwrap();
    job.state = JobState::InProgress;
    job.number_of_failures = 1;
    job.related_unit_of_work = Some(RecordId::new("65a1b2c3d4e5f60718293a4b"));
    job.depends_on_flows = vec!["hourly_load".into()];
    job.log_event(
        now,
        "managed run 65a1b2c3d4e5f60718293a4b failed: step 'report' invalid",
    );
    let saved = store.save_job(&lease, &job).await.unwrap();

    // ... into Synergy's collection, shaped as Synergy's ODM writes it.
    let raw = store
        .database()
        .collection::<Document>("job_daily")
        .find_one(doc! { "process_name": "daily_report", "timeperiod": "2026112800" })
        .await
        .unwrap()
        .expect("the Job is in job_daily");
    assert!(matches!(raw.get("_id"), Some(Bson::ObjectId(_))), "{raw}");
    assert_eq!(
        raw.get("related_unit_of_work"),
        Some(&Bson::String("65a1b2c3d4e5f60718293a4b".into())),
        "an ObjectIdField is written as text"
    );
    assert_eq!(raw.get_str("state").unwrap(), "state_in_progress");
    assert_eq!(
        raw.get_array("depends_on_flows").unwrap(),
        &vec![Bson::String("hourly_load".into())],
        "ours, additive"
    );

    // Synergy's model reads and validates it.
    let answer = synergy(&serde_json::json!({ "ours": plain(&raw) }));
    let read = &answer["read"];
    assert_eq!(read["db_id"], saved.id.as_ref().unwrap().as_str());
    assert_eq!(read["process_name"], "daily_report");
    assert_eq!(read["timeperiod"], "2026112800");
    assert_eq!(read["state"], "state_in_progress");
    assert_eq!(read["related_unit_of_work"], "65a1b2c3d4e5f60718293a4b");
    assert_eq!(read["number_of_failures"], 1);
    assert_eq!(read["is_active"], true);
    assert_eq!(
        read["event_log"].as_array().unwrap().len(),
        saved.event_log.len()
    );

    // A Job Synergy's model wrote, stored as its MongoDbManager.update
    // stores it (replace by key, upsert; an `_id` becomes an ObjectId).
    let written = &answer["written"];
    let mut document: Document = match Bson::try_from(written.clone()).unwrap() {
        Bson::Document(d) => d,
        other => panic!("{other:?}"),
    };
    if let Ok(id) = document.get_str("_id") {
        let id = bson::oid::ObjectId::parse_str(id).unwrap();
        document.insert("_id", id);
    }
    store
        .database()
        .collection::<Document>("job_hourly")
        .replace_one(
            doc! { "process_name": "synergy_written", "timeperiod": "2026112800" },
            document,
        )
        .upsert(true)
        .await
        .unwrap();
    let theirs_key = JobKey::new(
        "synergy_written",
        TimeQualifier::Hourly,
        "2026112800".parse().unwrap(),
    );
    let theirs = store
        .get_job(&theirs_key)
        .await
        .unwrap()
        .expect("read by flow");
    assert_eq!(theirs.state, JobState::Embryo);
    assert_eq!(theirs.number_of_failures, 2);
    assert_eq!(theirs.event_log, ["created by Synergy"]);
    assert_eq!(
        theirs.related_unit_of_work,
        Some(RecordId::new("5f1d7a2b9c3e4d5a6b7c8d9e"))
    );
    // flow moves it under a claim, and it stays Synergy's.
    let lease = claim(&store, &theirs_key).await;
    let mut moved = theirs.clone();
    moved.state = JobState::Processed;
    moved.log_event(chrono::Utc::now(), "processed");
    store.save_job(&lease, &moved).await.unwrap();
    let raw = store
        .database()
        .collection::<Document>("job_hourly")
        .find_one(doc! { "process_name": "synergy_written" })
        .await
        .unwrap()
        .unwrap();
    let answer = synergy(&serde_json::json!({ "ours": plain(&raw) }));
    assert_eq!(answer["read"]["state"], "state_processed");
    assert_eq!(answer["read"]["is_finished"], true);

    store.database().drop().await.unwrap();
}
