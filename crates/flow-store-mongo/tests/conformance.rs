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

/// A Synergy scheduler's `log_recording` document, shaped as Synergy's
/// `LogRecording` model writes it (`parent_object_id`, `log`, `details`,
/// `created_at`): none of this engine's fields.
fn synergy_recording(n: u32) -> Document {
    doc! {
        "_id": bson::oid::ObjectId::new(),
        "parent_object_id": bson::oid::ObjectId::new(),
        "log": [format!("uow {n}: started"), format!("uow {n}: processed")],
        "details": { "process_name": "SiteDailyAggregator", "attempt": n },
        "created_at": bson::DateTime::from_millis(1_795_849_202_000 + i64::from(n)),
    }
}

/// The documents without a `position` (Synergy's), in `_id` order.
async fn synergy_documents(db: &mongodb::Database) -> Vec<Document> {
    use futures_util::TryStreamExt;
    db.collection::<Document>("log_recording")
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect::<Vec<_>>()
        .await
        .expect("read")
        .into_iter()
        .filter(|d| !d.contains_key("position"))
        .collect()
}

/// An existing Synergy database: `log_recording` already holds several of
/// Synergy's recordings (and its unique index on `parent_object_id`).
/// Connecting works, lines append and read back, Synergy's documents stay
/// as they were, and Synergy can still add more afterwards.
///
/// On MongoDB, a unique index on this engine's key fields without a partial
/// filter cannot be built here (every Synergy document has the null key);
/// nx-27017 keeps its indexes in SQLite, where nulls never collide, so
/// there this test checks the rest and `listIndexes` below checks the
/// filter where the server keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a MongoDB server: `cargo xtask test` starts nx-27017, or set FLOW_MONGO_URI"]
async fn a_synergy_log_recording_collection_is_shared_on_nx27017() {
    use flow_core::{FlowKey, LogLevel, LogLine, LogQuery, RecordId};
    let uri = server_uri();
    let options = MongoOptions::new(&uri, fresh_database("synergy_logs"));
    let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
    let db = client.database(&options.database);
    let recordings = db.collection::<Document>("log_recording");
    recordings
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "parent_object_id": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .expect("Synergy's index");
    recordings
        .insert_many((1..=4).map(synergy_recording).collect::<Vec<_>>())
        .await
        .expect("Synergy's recordings");
    let before = synergy_documents(&db).await;
    assert_eq!(before.len(), 4);

    let store = MongoStore::connect(&options)
        .await
        .unwrap_or_else(|e| panic!("connecting to a database with Synergy's recordings: {e}"));
    let key = FlowKey::new("daily_report", "2026112800".parse().unwrap());
    let run = RecordId::new(bson::oid::ObjectId::new().to_hex());
    let lines: Vec<LogLine> = (0..3)
        .map(|i| LogLine {
            flow_name: key.flow_name.clone(),
            timeperiod: key.timeperiod,
            run: run.clone(),
            step: Some("load".into()),
            logger: "load.shell".into(),
            level: LogLevel::Info,
            at: chrono::DateTime::from_timestamp_millis(1_795_849_300_000 + i).unwrap(),
            message: format!("line {i}"),
        })
        .collect();
    store.append_logs(&lines[..2]).await.expect("append");
    store.append_logs(&lines[2..]).await.expect("append");
    let read = store
        .read_logs(&LogQuery::new(key.clone(), 100))
        .await
        .expect("read");
    assert_eq!(
        read.iter().map(|l| l.line.clone()).collect::<Vec<_>>(),
        lines
    );
    assert_eq!(
        read.iter().map(|l| l.position).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        synergy_documents(&db).await,
        before,
        "Synergy's recordings are untouched"
    );
    // A run id that is no ObjectId is the caller's mistake, named as such.
    let mut malformed = LogQuery::new(key.clone(), 100);
    malformed.run = Some(RecordId::new("r-17x"));
    match store.read_logs(&malformed).await {
        Err(flow_core::StoreError::InvalidId {
            what: "run", id, ..
        }) => assert_eq!(id, "r-17x"),
        other => panic!("{other:?}"),
    }

    // Synergy goes on writing: new recordings, and its append_log (an
    // upsert by parent_object_id pushing to `log`).
    recordings
        .insert_many((5..=6).map(synergy_recording).collect::<Vec<_>>())
        .await
        .expect("Synergy inserts more recordings");
    let uow = bson::oid::ObjectId::new();
    for message in ["a", "b"] {
        recordings
            .update_one(
                doc! { "parent_object_id": uow },
                doc! { "$push": { "log": message } },
            )
            .upsert(true)
            .await
            .expect("Synergy's append_log");
    }
    let after = synergy_documents(&db).await;
    assert_eq!(after.len(), 7);
    for document in &before {
        // (By content: ids the server generates need not sort after ours.)
        assert!(after.contains(document), "changed or gone: {document}");
    }

    // Connecting again (index creation with all of them present), and the
    // retention purge, leave them alone too.
    let again = MongoStore::connect(&options)
        .await
        .unwrap_or_else(|e| panic!("connecting again: {e}"));
    let purged = again
        .purge_logs(chrono::Utc::now() + chrono::Duration::days(1))
        .await
        .expect("purge");
    assert_eq!(purged, 3, "only this engine's lines");
    assert_eq!(synergy_documents(&db).await, after);
    db.drop().await.expect("drop the test database");
}

/// Whether the server keeps `partialFilterExpression` (nx-27017 accepts
/// and drops it), found by trying on a scratch collection.
async fn keeps_partial_filters(db: &mongodb::Database) -> bool {
    use futures_util::TryStreamExt;
    let probe = db.collection::<Document>("partial_filter_probe");
    let filter = doc! { "a": { "$exists": true } };
    probe
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "a": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .partial_filter_expression(filter.clone())
                        .build(),
                )
                .build(),
        )
        .await
        .expect("create the probe index");
    let kept = probe
        .list_indexes()
        .await
        .expect("list")
        .try_collect::<Vec<_>>()
        .await
        .expect("list")
        .iter()
        .any(|i| {
            i.options
                .as_ref()
                .and_then(|o| o.partial_filter_expression.as_ref())
                == Some(&filter)
        });
    probe.drop().await.expect("drop the probe");
    kept
}

/// Every collection has its indexes after `connect`: the keys, which are
/// unique, and the partial filter of the ones on `log_recording` (where the
/// server keeps partial filters; nx-27017 does not, and that part reports
/// itself skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a MongoDB server: `cargo xtask test` starts nx-27017, or set FLOW_MONGO_URI"]
async fn indexes_exist_and_are_unique_on_nx27017() {
    use futures_util::TryStreamExt;
    let uri = server_uri();
    let options = MongoOptions::new(&uri, fresh_database("indexes"));
    let store = MongoStore::connect(&options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let db = store.database();
    let ours = Some(doc! { "position": { "$exists": true } });
    // (collection, key fields in order, unique, partial filter)
    let expected: [(&str, &[&str], bool, Option<Document>); 8] = [
        ("flow", &["flow_name", "timeperiod"], true, None),
        (
            "step",
            &["flow_name", "step_name", "timeperiod"],
            true,
            None,
        ),
        ("flow_lease", &["flow_name", "timeperiod"], true, None),
        (
            "flow_run",
            &["flow_name", "timeperiod", "started_at"],
            false,
            None,
        ),
        (
            "flow_cluster",
            &["flow_name", "timeperiod", "launched_at"],
            false,
            None,
        ),
        (
            "log_recording",
            &["flow_name", "timeperiod", "position"],
            true,
            ours.clone(),
        ),
        ("log_recording", &["created_at"], false, ours),
        ("flow_log_counter", &["flow_name", "timeperiod"], true, None),
    ];
    let partial = keeps_partial_filters(db).await;
    if !partial {
        eprintln!(
            "SKIPPED: the partial filter check: this server ({}) does not keep \
             partialFilterExpression (the unit test \
             the_log_indexes_cover_only_this_engines_lines checks what connect asks for)",
            redact_uri(&uri)
        );
    }
    for (collection, keys, unique, filter) in expected {
        let indexes = db
            .collection::<Document>(collection)
            .list_indexes()
            .await
            .unwrap_or_else(|e| panic!("listIndexes {collection}: {e}"))
            .try_collect::<Vec<_>>()
            .await
            .unwrap_or_else(|e| panic!("listIndexes {collection}: {e}"));
        let index = indexes
            .iter()
            .find(|i| i.keys.keys().map(String::as_str).eq(keys.iter().copied()))
            .unwrap_or_else(|| panic!("{collection}: no index on {keys:?} in {indexes:?}"));
        let options = index.options.clone().unwrap_or_default();
        assert_eq!(
            options.unique.unwrap_or(false),
            unique,
            "{collection} {keys:?}: unique"
        );
        if partial {
            assert_eq!(
                options.partial_filter_expression, filter,
                "{collection} {keys:?}: partial filter"
            );
        }
    }
    db.drop().await.expect("drop the test database");
}

/// A server that refuses the login: the error says so, naming the user and
/// the host, never the password. nx-27017 has no users, so it fails every
/// login (the driver's SCRAM exchange gets no valid answer): the same
/// driver error a wrong password gets from MongoDB.
#[tokio::test]
#[ignore = "needs a MongoDB server: `cargo xtask test` starts nx-27017, or set FLOW_MONGO_URI"]
async fn a_refused_login_names_the_user_and_host_on_nx27017() {
    let uri = server_uri();
    let hosts = flow_store_mongo::validate_uri(&uri)
        .expect("FLOW_MONGO_URI")
        .join(", ");
    let rest = uri
        .strip_prefix("mongodb://")
        .expect("a mongodb:// URI")
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut options = MongoOptions::new(
        format!("mongodb://nobody:hunter22@{rest}"),
        fresh_database("auth"),
    );
    options.server_selection_timeout = Duration::from_secs(5);
    let e = MongoStore::connect(&options)
        .await
        .expect_err("the login must be refused");
    let text = e.to_string();
    eprintln!("{text}");
    assert!(matches!(e, MongoError::Authentication { .. }), "{text}");
    assert!(
        text.starts_with(&format!("authentication failed for user nobody on {hosts}")),
        "{text}"
    );
    assert!(!text.contains("hunter22"), "{text}");
    assert!(!format!("{e:?}").contains("hunter22"), "{e:?}");
}
