//! The store conformance suite (`flow_core::testkit::store`) on a SQLite
//! file, with a schema-version-1 database as the older-schema fixture.

use flow_core::testkit::store::{store_conformance, BeginRunKind, Interrupt, StoreUnderTest};
use flow_core::FlowStore;
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;

#[path = "fixtures/v1.rs"]
mod v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_conformance_on_sqlite() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("flow.db");
    v1::create_v1_database(&path);
    // Several connections on one file: as several engines on one host.
    let stores: Vec<SqliteStore> = (0..4)
        .map(|_| SqliteStore::open(&path, SqliteOptions::default()).expect("opens"))
        .collect();
    let hook = stores[0].clone();
    let handles: Vec<Arc<dyn FlowStore>> = stores
        .into_iter()
        .map(|s| Arc::new(s) as Arc<dyn FlowStore>)
        .collect();
    store_conformance(StoreUnderTest {
        handles,
        // One transaction per call; the store's own tests poison a table to
        // show a failed begin_run writes nothing (`begin_run_is_one_transaction`),
        // and the suite interrupts it after each write through the fault hook.
        begin_run: BeginRunKind::Atomic,
        interrupt: Some(Interrupt {
            writes: 5,
            arm: Arc::new(move |n| hook.interrupt_next_begin_run_after(n)),
        }),
        legacy: vec![v1::v1_fixture()],
    })
    .await;
}
