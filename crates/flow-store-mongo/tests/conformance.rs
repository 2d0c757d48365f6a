//! The store conformance suite on MongoDB wire-protocol servers.
//!
//! `cargo xtask test` starts two (see `xtask/src/mongo.rs`), and each test
//! names the one it runs on:
//!
//! * nx-27017 (`..._on_nx27017`, `FLOW_MONGO_URI`): standalone, no
//!   transactions, indexes kept in SQLite: the ordered `begin_run`
//!   fallback;
//! * SecantusDB (`..._on_secantusdb`, `FLOW_TEST_SECANTUSDB_URI`, with a
//!   SCRAM user): a single-node replica set on WiredTiger: `begin_run` in a
//!   transaction (asserted by the store's commit counter), unique indexes
//!   where nulls collide, partial filters kept, `explain` answered, a
//!   refused login of a user the server has.
//!
//! Set the variable yourself to run a group against another server (a
//! real MongoDB 6+). Without a server these tests are ignored (reported
//! so, never passed). Each test works in a fresh database and drops it.

use bson::{doc, Bson, Document};
use flow_core::testkit::store::{
    store_conformance, BeginRunKind, Interrupt, LegacyFixture, StoreUnderTest,
};
use flow_core::FlowStore;
use flow_store_mongo::{
    redact_uri, FlowDoc, MongoError, MongoOptions, MongoStore, MongoStoreWithRuntime, StepDoc,
    Transactions,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The server a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// Standalone, no transactions, SQLite indexes.
    Nx27017,
    /// A single-node replica set with users, WiredTiger indexes.
    SecantusDb,
}

impl Server {
    fn variable(self) -> &'static str {
        match self {
            Server::Nx27017 => "FLOW_MONGO_URI",
            Server::SecantusDb => "FLOW_TEST_SECANTUSDB_URI",
        }
    }

    fn uri(self) -> String {
        std::env::var(self.variable()).unwrap_or_else(|_| {
            panic!(
                "{} must name the {self:?} server when this test is included (`cargo xtask test` sets it)",
                self.variable()
            )
        })
    }
}

/// A unique index on `keys`.
fn unique_index(keys: Document) -> mongodb::IndexModel {
    mongodb::IndexModel::builder()
        .keys(keys)
        .options(
            mongodb::options::IndexOptions::builder()
                .unique(true)
                .build(),
        )
        .build()
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

async fn run_suite(server: Server, transactions: Transactions, tag: &str) {
    let uri = server.uri();
    let mut options = MongoOptions::new(&uri, fresh_database(tag));
    options.transactions = transactions;
    let first = MongoStore::connect(&options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Synergy's scheduler indexes log_recording on parent_object_id
    // (unique) and created_at (TTL); the store must live with both.
    let log_recording = first.database().collection::<Document>("log_recording");
    log_recording
        .create_index(unique_index(doc! { "parent_object_id": 1 }))
        .await
        .expect("Synergy's index");
    let legacy = load_synergy_fixtures(&first).await;
    let mut handles: Vec<Arc<dyn FlowStore>> = vec![Arc::new(first.clone())];
    for _ in 0..2 {
        // Other engines: other clients, other connection pools; connecting
        // again also shows index creation is idempotent.
        handles.push(Arc::new(
            MongoStore::connect(&options)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        ));
    }
    // And one as the `flow` command opens it: on a runtime of its own,
    // every call forwarded there (opened off this runtime: it blocks).
    let opening = options.clone();
    let on_runtime = std::thread::spawn(move || MongoStoreWithRuntime::open(&opening))
        .join()
        .expect("opening thread")
        .unwrap_or_else(|e| panic!("{e}"));
    handles.push(Arc::new(on_runtime));
    let atomic = first.uses_transactions();
    // Which path runs is the point of each test: never a silent change.
    let expected = server == Server::SecantusDb && transactions == Transactions::Auto;
    assert_eq!(
        atomic,
        expected,
        "{server:?} with {transactions:?}: begin_run in transactions is {atomic}, expected {expected}"
    );
    eprintln!(
        "MongoDB store conformance on {server:?} at {} (database {}): begin_run {}",
        redact_uri(&uri),
        options.database,
        if atomic {
            "in transactions"
        } else {
            "in the ordered fallback"
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
            writes: 4,
            arm: Arc::new(move |n| hook.interrupt_next_begin_run_after(n)),
        }),
        legacy,
    })
    .await;
    // The transactional path really ran: begin_run committed transactions
    // on this handle (the suite's begin_run calls go through the first).
    let committed = first.transactions_committed();
    if atomic {
        assert!(
            committed > 0,
            "begin_run committed no transaction on {server:?}"
        );
    } else {
        assert_eq!(committed, 0, "a transaction on the fallback path");
    }
    first
        .database()
        .drop()
        .await
        .expect("drop the test database");
}

/// nx-27017 offers no transactions: the ordered fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs nx-27017: `cargo xtask test` starts it, or set FLOW_MONGO_URI"]
async fn store_conformance_on_nx27017() {
    run_suite(Server::Nx27017, Transactions::Auto, "auto").await;
}

/// SecantusDB is a replica set: begin_run in transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs SecantusDB: `cargo xtask test` starts it, or set FLOW_TEST_SECANTUSDB_URI"]
async fn store_conformance_on_secantusdb() {
    run_suite(Server::SecantusDb, Transactions::Auto, "auto").await;
}

/// The ordered fallback on a server with transactions and real index
/// semantics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs SecantusDB: `cargo xtask test` starts it, or set FLOW_TEST_SECANTUSDB_URI"]
async fn store_conformance_without_transactions_on_secantusdb() {
    run_suite(Server::SecantusDb, Transactions::Never, "fallback").await;
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
/// filter cannot be built here (every Synergy document has the null key,
/// and nulls collide in a unique index): SecantusDB treats nulls so, and
/// this test proves the partial filter there. nx-27017 keeps its indexes
/// in SQLite, where nulls never collide: there it checks the rest.
async fn synergy_log_recording_is_shared(server: Server) {
    use flow_core::{FlowKey, LogLevel, LogLine, LogQuery, RecordId};
    let uri = server.uri();
    let options = MongoOptions::new(&uri, fresh_database("synergy_logs"));
    let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
    let db = client.database(&options.database);
    let recordings = db.collection::<Document>("log_recording");
    recordings
        .create_index(unique_index(doc! { "parent_object_id": 1 }))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nx-27017: `cargo xtask test` starts it, or set FLOW_MONGO_URI"]
async fn a_synergy_log_recording_collection_is_shared_on_nx27017() {
    synergy_log_recording_is_shared(Server::Nx27017).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SecantusDB: `cargo xtask test` starts it, or set FLOW_TEST_SECANTUSDB_URI"]
async fn a_synergy_log_recording_collection_is_shared_on_secantusdb() {
    synergy_log_recording_is_shared(Server::SecantusDb).await;
}

/// Nulls collide in a unique index (as MongoDB treats them) on SecantusDB:
/// the premise of the partial filters above. Two documents without the
/// key field cannot both be in a unique index without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SecantusDB: `cargo xtask test` starts it, or set FLOW_TEST_SECANTUSDB_URI"]
async fn nulls_collide_in_a_unique_index_on_secantusdb() {
    let uri = Server::SecantusDb.uri();
    let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
    let db = client.database(&fresh_database("nulls"));
    let probe = db.collection::<Document>("probe");
    probe
        .create_index(unique_index(doc! { "k": 1 }))
        .await
        .expect("a unique index");
    probe.insert_one(doc! { "a": 1 }).await.expect("first null");
    let second = probe.insert_one(doc! { "a": 2 }).await;
    assert!(
        second.is_err(),
        "a second document with a null key went into a unique index"
    );
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
/// unique, and the partial filter of the ones on `log_recording`. The
/// filter is checked on SecantusDB, which must keep it; nx-27017 accepts
/// and drops partial filters (a property of that server, so its test
/// checks keys and uniqueness only, and the unit test
/// the_log_indexes_cover_only_this_engines_lines checks what connect asks
/// for).
async fn indexes_exist_and_are_unique(server: Server) {
    use futures_util::TryStreamExt;
    let uri = server.uri();
    let options = MongoOptions::new(&uri, fresh_database("indexes"));
    let store = MongoStore::connect(&options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let db = store.database();
    let ours = Some(doc! { "position": { "$exists": true } });
    // (collection, key fields in order, unique, partial filter)
    let expected: [(&str, &[&str], bool, Option<Document>); 11] = [
        ("flow", &["flow_name", "timeperiod"], true, None),
        (
            "flow",
            &["flow_name", "timeperiod", "fence_token"],
            false,
            None,
        ),
        (
            "step",
            &["flow_name", "step_name", "timeperiod", "fence_token"],
            false,
            None,
        ),
        (
            "step",
            &["flow_name", "step_name", "timeperiod"],
            true,
            None,
        ),
        ("step", &["flow_name", "timeperiod"], false, None),
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
    match server {
        Server::SecantusDb => assert!(
            partial,
            "SecantusDB at {} dropped a partialFilterExpression",
            redact_uri(&uri)
        ),
        Server::Nx27017 => assert!(
            !partial,
            "nx-27017 now keeps partial filters: check them here too"
        ),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nx-27017: `cargo xtask test` starts it, or set FLOW_MONGO_URI"]
async fn indexes_exist_and_are_unique_on_nx27017() {
    indexes_exist_and_are_unique(Server::Nx27017).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SecantusDB: `cargo xtask test` starts it, or set FLOW_TEST_SECANTUSDB_URI"]
async fn indexes_exist_and_are_unique_on_secantusdb() {
    indexes_exist_and_are_unique(Server::SecantusDb).await;
}

/// nx-27017 has no users, so it fails every login (the driver's SCRAM
/// exchange gets no valid answer): the driver error a wrong password gets.
#[tokio::test]
#[ignore = "needs nx-27017: `cargo xtask test` starts it, or set FLOW_MONGO_URI"]
async fn a_refused_login_names_the_user_and_host_on_nx27017() {
    let uri = Server::Nx27017.uri();
    refused_login(&uri, "nobody", "hunter22").await;
}

/// SecantusDB runs with `--auth` and has the URI's user: the login of that
/// user with a wrong password is refused by the server's SCRAM check (and
/// the right one works: the store connects).
#[tokio::test]
#[ignore = "needs SecantusDB: `cargo xtask test` starts it, or set FLOW_TEST_SECANTUSDB_URI"]
async fn a_wrong_password_names_the_user_and_host_on_secantusdb() {
    let uri = Server::SecantusDb.uri();
    let user = uri
        .strip_prefix("mongodb://")
        .and_then(|rest| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(user, _)| user.to_string())
        .expect("FLOW_TEST_SECANTUSDB_URI names a user and password");
    let right = MongoStore::connect(&MongoOptions::new(&uri, fresh_database("auth_ok")))
        .await
        .unwrap_or_else(|e| panic!("the right password is refused: {e}"));
    right.database().drop().await.expect("drop");
    refused_login(&uri, &user, "hunter22-wrong").await;
}

/// A server that refuses the login of `user` with `password`: the error
/// says so, naming the user and the host, never the password.
async fn refused_login(uri: &str, user: &str, password: &str) {
    let hosts = flow_store_mongo::validate_uri(uri)
        .expect("a valid server URI")
        .join(", ");
    let rest = uri
        .strip_prefix("mongodb://")
        .expect("a mongodb:// URI")
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut options = MongoOptions::new(
        format!("mongodb://{user}:{password}@{rest}"),
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
        text.starts_with(&format!("authentication failed for user {user} on {hosts}")),
        "{text}"
    );
    assert!(!text.contains(password), "{text}");
    assert!(!format!("{e:?}").contains(password), "{e:?}");
}

/// The first appends of a flow key, racing: several engines (clients)
/// append at once to a key whose position counter does not exist yet, so
/// their counter upserts race to insert it. Some servers answer the loser
/// with a duplicate-key error, others with no document; the store retries
/// either way. Every call succeeds and the lines get positions 1..=N, each
/// once. Ten fresh keys per run.
async fn concurrent_first_appends(server: Server) {
    use flow_core::{FlowKey, LogLevel, LogLine, LogQuery, RecordId};
    const ENGINES: usize = 6;
    const LINES: usize = 3;
    let uri = server.uri();
    let options = MongoOptions::new(&uri, fresh_database("counter_race"));
    let mut stores = Vec::new();
    for _ in 0..ENGINES {
        stores.push(
            MongoStore::connect(&options)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    for round in 0..10 {
        let key = FlowKey::new(
            format!("counter_race_{round}"),
            "2026112800".parse().unwrap(),
        );
        let run = RecordId::new(bson::oid::ObjectId::new().to_hex());
        let barrier = Arc::new(tokio::sync::Barrier::new(ENGINES));
        let mut tasks = Vec::new();
        for (engine, store) in stores.iter().enumerate() {
            let lines: Vec<LogLine> = (0..LINES)
                .map(|i| LogLine {
                    flow_name: key.flow_name.clone(),
                    timeperiod: key.timeperiod,
                    run: run.clone(),
                    step: Some(format!("engine{engine}")),
                    logger: "race".into(),
                    level: LogLevel::Info,
                    at: chrono::DateTime::from_timestamp_millis(1_795_849_300_000 + i as i64)
                        .unwrap(),
                    message: format!("engine {engine} line {i}"),
                })
                .collect();
            let store = store.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store.append_logs(&lines).await
            }));
        }
        for (engine, task) in tasks.into_iter().enumerate() {
            task.await
                .expect("the append task")
                .unwrap_or_else(|e| panic!("round {round}, engine {engine}: {e}"));
        }
        let read = stores[0]
            .read_logs(&LogQuery::new(key.clone(), 1000))
            .await
            .expect("read");
        let positions: Vec<u64> = read.iter().map(|l| l.position).collect();
        let expected: Vec<u64> = (1..=(ENGINES * LINES) as u64).collect();
        assert_eq!(positions, expected, "round {round}: positions");
        let mut messages: Vec<String> = read.iter().map(|l| l.line.message.clone()).collect();
        messages.sort();
        messages.dedup();
        assert_eq!(
            messages.len(),
            ENGINES * LINES,
            "round {round}: a line lost or doubled"
        );
    }
    stores[0]
        .database()
        .drop()
        .await
        .expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs nx-27017: `cargo xtask test` starts it, or set FLOW_MONGO_URI"]
async fn concurrent_first_appends_get_every_position_once_on_nx27017() {
    concurrent_first_appends(Server::Nx27017).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs SecantusDB: `cargo xtask test` starts it, or set FLOW_TEST_SECANTUSDB_URI"]
async fn concurrent_first_appends_get_every_position_once_on_secantusdb() {
    concurrent_first_appends(Server::SecantusDb).await;
}

/// The filters the store reads with, per step and per run, each with the
/// collection and sort: (collection, filter, sort).
fn read_shapes() -> Vec<(&'static str, Document, Option<Document>)> {
    let key = doc! { "flow_name": "f", "timeperiod": "2026112800" };
    let mut step = key.clone();
    step.insert("step_name", "s");
    vec![
        // The key lookup of a fenced write whose document id the store does
        // not know yet (the write itself then goes by `_id`).
        ("step", step, None),
        ("flow", key.clone(), None),
        // A run's steps: read, fenced on a takeover, purged.
        ("step", key.clone(), None),
        // lease_current, before and in every begin_run and fenced write.
        ("flow_lease", key.clone(), None),
        ("flow_log_counter", key.clone(), None),
        ("flow_run", key.clone(), Some(doc! { "started_at": -1 })),
        // A flow's SLA misses, counted at each /metrics scrape.
        (
            "flow",
            doc! { "flow_name": "f", "sla_missed_at": { "$gte": bson::DateTime::from_millis(0) } },
            None,
        ),
        // A flow's Jobs: the tally's `$match` at each /metrics scrape, and
        // the Jobs page's newest periods.
        (
            "job_daily",
            doc! { "process_name": "f", "state": "state_processed" },
            None,
        ),
        (
            "job_daily",
            doc! { "process_name": "f" },
            Some(doc! { "timeperiod": -1 }),
        ),
    ]
}

/// Every read shape of the store uses an index: the server's `explain` of
/// a find with that filter shows an index scan, never a collection scan.
/// Writes go by `_id` (see the crate docs); SecantusDB's `explain` of an
/// update or delete says `COLLSCAN` whatever the filter, so writes are
/// measured, not explained: `cargo xtask bench`'s mongo-crowded-chain-1000.
async fn reads_use_indexes(server: Server) {
    let uri = server.uri();
    let store = MongoStore::connect(&MongoOptions::new(&uri, fresh_database("explain")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let db = store.database();
    for (collection, filter, sort) in read_shapes() {
        let mut find = doc! { "find": collection, "filter": filter.clone() };
        if let Some(sort) = &sort {
            find.insert("sort", sort.clone());
        }
        let explained = db
            .run_command(doc! { "explain": find, "verbosity": "queryPlanner" })
            .await
            .unwrap_or_else(|e| panic!("{server:?}: explain find {collection} {filter}: {e}"));
        let plan = explained
            .get_document("queryPlanner")
            .and_then(|q| q.get_document("winningPlan"))
            .unwrap_or_else(|e| {
                panic!("{server:?}: no winning plan for {collection} {filter}: {e}: {explained}")
            })
            .to_string();
        assert!(
            plan.contains("IXSCAN") && !plan.contains("COLLSCAN"),
            "{server:?}: {collection} {filter} sort {sort:?} scans the collection: {plan}"
        );
    }
    db.drop().await.expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SecantusDB: `cargo xtask test` starts it, or set FLOW_TEST_SECANTUSDB_URI"]
async fn reads_use_indexes_on_secantusdb() {
    reads_use_indexes(Server::SecantusDb).await;
}
