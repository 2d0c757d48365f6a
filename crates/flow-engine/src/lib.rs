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
//! Examples (`cargo run -p flow-engine --example NAME`): `diamond` (a flow
//! built in code with a custom action, run on the local cluster with the
//! SQLite store, then recovered after a failure) and `dry_run_cluster` (a
//! custom [`Cluster`](flow_core::Cluster) plugged in through a
//! [`ClusterFactory`](flow_core::ClusterFactory), with adoptable job
//! handles).
#![warn(missing_docs)]

mod clusters;
mod dispatch;
mod engine;
mod error;
pub mod logging;
mod masked;
mod plan;
mod rollback;
mod step;

pub use clusters::{cancel_jobs, terminate_orphans, OrphanOutcome};
pub use engine::{
    DefinitionChange, EngineOptions, ExecutionEngine, RunMetrics, RunObserver, RunReport,
};
pub use error::{EngineError, Refusal};
pub use plan::refusal;
pub use rollback::RollbackReport;

/// The `tracing` crate actions log through (events in a step's span land in
/// its log file), re-exported so callers use the same version.
pub use tracing;
/// The subscriber crate [`logging`]'s layer and helpers are written for
/// (`logging::FileLogLayer`, `logging::logger_name`), re-exported so
/// callers use the same version.
pub use tracing_subscriber;
