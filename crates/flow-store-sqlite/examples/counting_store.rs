//! A custom [`FlowStore`]: a wrapper that counts the calls it forwards to
//! the SQLite store, proven by the store conformance suite every backend of
//! flow runs ([`flow_core::testkit::store::store_conformance`]).
//!
//! ```sh
//! cargo run -p flow-store-sqlite --example counting_store
//! ```
//!
//! A store of your own (another database, a service) implements the same
//! trait and runs the same suite in its tests (enable `flow-core`'s
//! `testkit` feature in your dev-dependencies). What the suite checks, and
//! [`FlowStore`]'s docs spell out: every call is durable when it returns;
//! `acquire_lease` is one conditional write (one winner among racing
//! engines, a larger token each time); writes that take a [`Lease`] are
//! fenced (refused with [`StoreError::Fenced`] once a newer lease exists,
//! atomically with the write); `begin_run` is atomic, or ordered so an
//! interruption leaves a state `recover` handles
//! ([`BeginRunKind::Ordered`], with an [`Interrupt`](flow_core::testkit::store::Interrupt)
//! hook that the suite uses to stop it after each write); log positions grow in append
//! order.

use async_trait::async_trait;
use flow_core::testkit::store::{store_conformance, BeginRunKind, Interrupt, StoreUnderTest};
use flow_core::{FlowStore, StoreError, StoreLayer};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::collections::BTreeMap;

// The older-schema fixture the SQLite store's own conformance test uses.
#[path = "../tests/fixtures/v1.rs"]
mod v1;
use std::sync::{Arc, Mutex};

/// Calls per operation, shared by every handle of one store.
#[derive(Default)]
struct Counts(Mutex<BTreeMap<&'static str, u64>>);

impl Counts {
    fn add(&self, operation: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(operation)
            .or_default() += 1;
    }
}

/// Forwards every call to `inner`, counting it first.
struct CountingStore {
    inner: SqliteStore,
    counts: Arc<Counts>,
}

#[async_trait]
impl StoreLayer for CountingStore {
    fn inner(&self) -> &dyn FlowStore {
        &self.inner
    }

    fn called(&self, method: &'static str) {
        self.counts.add(method);
    }
}

// The suite races spawned tasks for the lease and the log order: it needs
// several worker threads to race for real.
#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<(), StoreError> {
    let dir = std::env::temp_dir().join(format!("flow-counting-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| StoreError::Open {
        location: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let path = dir.join("flow.db");
    v1::create_v1_database(&path);
    let counts = Arc::new(Counts::default());
    // Several handles on one file, as several engines on one host.
    let mut handles: Vec<Arc<dyn FlowStore>> = Vec::new();
    let mut hook = None;
    for _ in 0..4 {
        let inner = SqliteStore::open(&path, SqliteOptions::default())?;
        hook.get_or_insert_with(|| inner.clone());
        handles.push(Arc::new(CountingStore {
            inner,
            counts: counts.clone(),
        }));
    }
    let hook = hook.expect("four handles");
    store_conformance(StoreUnderTest {
        handles,
        // SQLite's begin_run is one transaction.
        begin_run: BeginRunKind::Atomic,
        // The inner store's fault hook: the suite stops begin_run after each write.
        interrupt: Some(Interrupt {
            writes: 5,
            arm: Arc::new(move |n| hook.interrupt_next_begin_run_after(n)),
        }),
        // A schema-version-1 file, read through the wrapper.
        legacy: vec![v1::v1_fixture()],
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);

    println!("CountingStore passes the store conformance suite; calls forwarded:");
    for (operation, n) in counts
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
    {
        println!("  {operation:<20} {n}");
    }
    Ok(())
}

// `cargo test` runs the example too (see `test = true` in Cargo.toml).
#[test]
fn example_runs() {
    main().expect("the example runs");
}
