//! The store conformance suite on a MongoDB wire-protocol server.
//!
//! `cargo xtask test` starts `nx-27017` on a free loopback port and sets
//! `FLOW_MONGO_URI`; set it yourself to run the same tests against any
//! other server (a real MongoDB 6+, standalone or replica set). Without a
//! server these tests are ignored (reported so, never passed). Each run
//! works in a fresh database and drops it at the end.

use bson::{doc, Bson, Document};
use flow_core::testkit::store::{
    store_conformance, BeginRunKind, Interrupt, LegacyFixture, StoreUnderTest,
};
use flow_core::FlowStore;
use flow_store_mongo::{
    redact_uri, FlowDoc, MongoError, MongoOptions, MongoStore, StepDoc, Transactions,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn server_uri() -> String {
    std::env::var("FLOW_MONGO_URI")
        .expect("FLOW_MONGO_URI must name a MongoDB server when this test is included")
}

fn fresh_database(tag: &str) -> String {
    format!(
        "flow_test_{tag}_{}_{:08x}",
        std::process::id(),
        fastrand_u32()
    )
}

fn fastrand_u32() -> u32 {
    // No extra dependency for one random number.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(13)
}

fn fixture(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
}

fn document(value: &serde_json::Value) -> Document {
    match Bson::try_from(value.clone()).expect("extended JSON") {
        Bson::Document(d) => d,
        other => panic!("not a document: {other:?}"),
    }
}

/// Loads Synergy-written documents (and Synergy's own indexes on
/// `log_recording`) into the database, raw, and returns what they must
/// read back as.
async fn load_synergy_fixtures(store: &MongoStore) -> Vec<LegacyFixture> {
    let db = store.database();
    let flows = fixture("synergy_flow.json");
    let steps = fixture("synergy_step.json");
    let old = fixture("synergy_old_odm.json");
    let flow_docs: Vec<Document> = flows["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(document)
        .collect();
    let step_docs: Vec<Document> = steps["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(document)
        .collect();
    let mut all_flows = flow_docs.clone();
    all_flows.push(document(&old["flow"]));
    let mut all_steps = step_docs.clone();
    all_steps.extend(old["steps"].as_array().unwrap().iter().map(document));
    db.collection::<Document>("flow")
        .insert_many(all_flows.clone())
        .await
        .expect("insert flows");
    db.collection::<Document>("step")
        .insert_many(all_steps.clone())
        .await
        .expect("insert steps");

    let mut legacy = Vec::new();
    for flow in all_flows {
        let record = bson::deserialize_from_document::<FlowDoc>(flow.clone())
            .unwrap()
            .to_record()
            .unwrap();
        let key = record.key();
        let steps = all_steps
            .iter()
            .filter(|s| {
                s.get_str("flow_name").ok() == Some(key.flow_name.as_str())
                    && s.get_str("timeperiod").ok() == Some(&key.timeperiod.to_string())
            })
            .map(|s| {
                bson::deserialize_from_document::<StepDoc>(s.clone())
                    .unwrap()
                    .to_record()
                    .unwrap()
            })
            .collect::<Vec<_>>();
        if steps.is_empty() {
            continue;
        }
        legacy.push(LegacyFixture {
            name: format!("Synergy document {}", flow.get_object_id("_id").unwrap()),
            flow: record,
            steps,
        });
    }
    assert_eq!(
        legacy.len(),
        2,
        "fixtures with steps: the third Synergy flow and the older ODM's"
    );
    legacy
}

async fn run_suite(transactions: Transactions, tag: &str) {
    let uri = server_uri();
    let mut options = MongoOptions::new(&uri, fresh_database(tag));
    options.transactions = transactions;
    let first = MongoStore::connect(&options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Synergy's scheduler indexes log_recording on parent_object_id
    // (unique) and created_at (TTL); the store must live with both.
    let log_recording = first.database().collection::<Document>("log_recording");
    for (keys, unique) in [(doc! { "parent_object_id": 1 }, true)] {
        let index = mongodb::IndexModel::builder()
            .keys(keys)
            .options(
                mongodb::options::IndexOptions::builder()
                    .unique(unique)
                    .build(),
            )
            .build();
        log_recording
            .create_index(index)
            .await
            .expect("Synergy's index");
    }
    let legacy = load_synergy_fixtures(&first).await;
    let mut handles: Vec<Arc<dyn FlowStore>> = vec![Arc::new(first.clone())];
    for _ in 0..3 {
        // Other engines: other clients, other connection pools; connecting
        // again also shows index creation is idempotent.
        handles.push(Arc::new(
            MongoStore::connect(&options)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        ));
    }
    let atomic = first.uses_transactions();
    eprintln!(
        "MongoDB store conformance at {} (database {}): begin_run {}",
        redact_uri(&uri),
        options.database,
        if atomic {
            "in transactions".to_string()
        } else if transactions == Transactions::Never {
            "in the ordered fallback (transactions turned off)".to_string()
        } else {
            "in the ordered fallback: this server offers no transactions (not a replica set)"
                .to_string()
        }
    );
    let hook = first.clone();
    store_conformance(StoreUnderTest {
        handles,
        begin_run: if atomic {
            BeginRunKind::Atomic
        } else {
            BeginRunKind::Ordered
        },
        interrupt: Some(Interrupt {
            writes: 5,
            arm: Arc::new(move |n| hook.interrupt_next_begin_run_after(n)),
        }),
        legacy,
    })
    .await;
    first
        .database()
        .drop()
        .await
        .expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a MongoDB server: `cargo xtask test` starts nx-27017, or set FLOW_MONGO_URI"]
async fn store_conformance_on_nx27017() {
    run_suite(Transactions::Auto, "auto").await;
}

/// On a server with transactions the suite above ran them; this runs the
/// ordered fallback there too. On a server without, both are the fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a MongoDB server: `cargo xtask test` starts nx-27017, or set FLOW_MONGO_URI"]
async fn store_conformance_without_transactions_on_nx27017() {
    run_suite(Transactions::Never, "fallback").await;
}

/// A host where nothing listens fails within the server selection timeout,
/// naming the host, and never shows the password.
#[tokio::test]
async fn an_unreachable_server_fails_fast_naming_the_host() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut options =
        MongoOptions::new(format!("mongodb://flow:hunter22@127.0.0.1:{port}/"), "flow");
    options.server_selection_timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let e = MongoStore::connect(&options)
        .await
        .expect_err("nothing listens there");
    let text = e.to_string();
    assert!(matches!(e, MongoError::Unreachable { .. }), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("hunter22"), "{text}");
    // Bounded: not the driver's 30 s default (a generous margin, not a
    // timing measurement).
    assert!(started.elapsed() < Duration::from_secs(20), "{text}");
}

#[tokio::test]
async fn bad_settings_are_refused_before_connecting() {
    for (uri, database, needle) in [
        ("mongodb+srv://c.example.net", "flow", "SRV"),
        ("http://db:27017", "flow", "mongodb://"),
        ("mongodb://db:27017", "a.b", "database"),
    ] {
        let e = MongoStore::connect(&MongoOptions::new(uri, database))
            .await
            .expect_err(uri);
        assert!(matches!(e, MongoError::Setting(_)), "{e}");
        assert!(e.to_string().contains(needle), "{uri}: {e}");
    }
}
