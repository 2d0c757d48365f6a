//! The flow engine: runs a validated [`FlowGraph`](flow_core::FlowGraph) on
//! clusters, keeping every state change in a [`FlowStore`](flow_core::FlowStore).
//!
//! [`ExecutionEngine`] offers the four run modes (`run`, `recover`,
//! `run_one`, `run_from`). A run takes a lease on `[flow, timeperiod]`,
//! launches its clusters concurrently, dispatches each step the moment its
//! last dependency completes (event-driven, no polling), and terminates every
//! cluster at the end whatever happened. Logs go to per-flow and per-step
//! files through [`logging`].
//!
//! Any tokio runtime works. The engine's own work between steps is a few
//! microseconds, so a current-thread runtime (what `flow` uses) is the
//! fastest: no wake-ups across threads. Actions must then not block the
//! thread: blocking work belongs in `tokio::task::spawn_blocking`.
//!
//! This crate knows no concrete store or cluster: it depends on `flow-core`
//! only; backends are chosen by the caller (the `flow` CLI).
//!
//! # Using flow as a library
//!
//! A program that runs flows depends on `flow-core` (flows, traits), this
//! crate (the run modes), a store (`flow-store-sqlite`) and a cluster
//! (`flow-cluster-local`), plus `tokio`. The shortest complete program
//! (`cargo test` compiles and runs it):
//!
//! ```rust
//! use flow_cluster_local::{LocalClusterFactory, LocalOptions};
//! use flow_core::{ActionRegistry, ExecutionContext, Settings, Timeperiod};
//! use flow_engine::{EngineOptions, ExecutionEngine};
//! use flow_store_sqlite::{SqliteOptions, SqliteStore};
//! use std::sync::Arc;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let flow = r#"
//!         name = "hello"
//!         [[steps]]
//!         name = "greet"
//!         main = { action = "shell", command = "echo hello {timeperiod}" }
//!     "#;
//!     let graph = ActionRegistry::builtin().parse(flow, "hello.toml".as_ref())?;
//!     let timeperiod: Timeperiod = "2026112807".parse()?;
//!     let context = ExecutionContext {
//!         flow_name: graph.name().to_string(),
//!         timeperiod,
//!         start_timeperiod: timeperiod,
//!         end_timeperiod: timeperiod.next(graph.time_qualifier()),
//!         settings: Arc::new(Settings::new()),
//!         number_of_clusters: 1,
//!     };
//!     // A store file of this process's own (one left by another build
//!     // may have a newer schema).
//!     let db = std::env::temp_dir().join(format!("hello-flow-{}.db", std::process::id()));
//!     let store = SqliteStore::open(&db, SqliteOptions::default())?;
//!     let clusters = LocalClusterFactory::new(LocalOptions::default());
//!     let engine = ExecutionEngine::new(
//!         Arc::new(graph),
//!         context,
//!         Arc::new(store),
//!         Arc::new(clusters),
//!         EngineOptions::default(),
//!     );
//!     let report = engine.run().await?;
//!     println!("{}: {}", report.flow, report.state); // [hello, 2026112807]: state_processed
//!     assert!(report.state.is_complete());
//!     for suffix in ["", "-wal", "-shm"] {
//!         let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Which crate to depend on for what, and every runnable example: the
//! book's "Using flow as a library" (`docs/src/guide/library.md`).
//!
//! Examples (`cargo run -p flow-engine --example NAME`): `diamond` (a flow
//! built in code with a custom action, run on the local cluster with the
//! SQLite store, then recovered after a failure) and `dry_run_cluster` (a
//! custom [`Cluster`](flow_core::Cluster) plugged in through a
//! [`ClusterFactory`](flow_core::ClusterFactory), with adoptable job
//! handles).
#![warn(missing_docs)]

mod cancel;
mod clusters;
mod dispatch;
pub mod drive;
mod engine;
mod error;
mod lease;
pub mod logging;
mod masked;
mod observer;
mod plan;
mod rollback;
mod run_context;
pub mod sla;
mod step;
pub mod timetable;

pub use cancel::{cancel_flow, CancelError, CancelOutcome, CancelRequest};
pub use clusters::{cancel_jobs, terminate_orphans, OrphanOutcome};
pub use engine::{EngineOptions, ExecutionEngine, RunMetrics, RunReport};
pub use error::{EngineError, Refusal};
pub use observer::{DefinitionChange, RunObserver, RunTracer};
pub use plan::refusal;
pub use rollback::RollbackReport;

/// The `tracing` crate actions log through (events in a step's span land in
/// its log file), re-exported so callers use the same version.
pub use tracing;
/// The subscriber crate [`logging`]'s layer and helpers are written for
/// (`logging::FileLogLayer`, `logging::logger_name`), re-exported so
/// callers use the same version.
pub use tracing_subscriber;
