//! The vocabulary of the flow engine.
//!
//! `flow-core` holds what every other crate speaks: flow and step records and
//! their states, run modes, timeperiods, the execution context, the DAG
//! ([`FlowGraph`]), the traits that backends implement ([`Action`],
//! [`Cluster`], [`Filesystem`], [`FlowStore`], [`ClusterFactory`]), the
//! declarative flow-file format and the built-in actions.
//!
//! It is *not* an engine and knows no concrete store or cloud: running a flow
//! lives in `flow-engine`, storage in `flow-store-*`, execution in
//! `flow-cluster-*`.
//!
//! Where to start as a library user:
//! - build flows with [`FlowDefinition`] (builder) or load flow files with
//!   [`ActionRegistry`] (which also takes your own action types);
//! - implement [`Action`] for work of your own, [`Cluster`] +
//!   [`ClusterFactory`] for a place to run jobs, [`Filesystem`] for its
//!   storage, [`FlowStore`] for where state lives; each trait says what an
//!   implementation must guarantee, and the `testkit` feature holds the
//!   conformance suites that prove it (`testkit::filesystem_conformance`,
//!   `testkit::store::store_conformance`);
//! - run flows with the `flow-engine` crate.
//!
//! Examples (`cargo run -p flow-core --example NAME`): `load_flow` (load,
//! validate, walk in dependency order, draw as Mermaid) and
//! `memory_filesystem` (a custom filesystem through the conformance suite;
//! `--features testkit`).
#![warn(missing_docs)]

pub mod action;
pub mod actions;
pub mod clock;
pub mod cluster;
pub mod context;
pub mod cost;
pub mod deferred;
pub mod filesystem;
pub mod graph;
pub mod job;
pub mod lineage;
pub mod meter;
pub mod notify;
pub mod record;
pub mod retry;
pub mod schedule;
pub mod shared_cluster;
pub mod spec;
pub mod state;
pub mod store;
pub mod store_layer;
mod store_methods;
pub mod template;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod timeperiod;

pub use action::{
    Action, ActionContext, ActionError, ActionInstance, ActionOutcome, JobEnd, JobRecorder,
    JobSpan, NoJobRecorder, Rollback, TemplateUse,
};
pub use cluster::{
    Cluster, ClusterError, ClusterFactory, ClusterHandle, Job, JobContext, JobHandle, JobStatus,
    SecretFile,
};
pub use context::{mask, secret_env_var, ExecutionContext, Secret, SettingValue, Settings};
pub use cost::{ClusterUsage, FlowUsage, InstanceGroup, Market, PriceTable, UsageSummary};
pub use deferred::DeferredFilesystem;
pub use filesystem::{normalize_key, Filesystem, FsError, KeyProblem};
pub use graph::{FlowDefinition, FlowGraph, GraphError, StepDefinition};
pub use job::{JobKey, JobQuery, JobTally, TimetableJob};
pub use record::{
    ClusterRecord, ClusterState, FlowKey, FlowRecord, JobRecord, LogLevel, LogLine, RecordId,
    RollbackCause, RollbackRecord, RunRecord, RunStep, StepRecord, StoredLogLine,
};
pub use retry::RetryPolicy;
pub use schedule::Schedule;
pub use shared_cluster::{
    ClusterClaim, ClusterRelease, ClusterUser, SharedCluster, SharedClusterKey, SHARED_NAME_DETAIL,
};
pub use spec::{ActionRegistry, SpecError};
pub use state::{ActionSetState, FlowState, JobState, RunMode, StepState};
pub use store::{
    FlowQuery, FlowStore, Lease, LeaseInfo, LeaseOutcome, LogQuery, RunQuery, RunStanding,
    StoreError,
};
pub use store_layer::StoreLayer;
pub use template::{ShellCommand, Template, TemplateError, Usage};
pub use timeperiod::{TimeQualifier, Timeperiod, TimeperiodError};

/// The `toml` crate whose [`Table`](toml::Table) carries an action's
/// arguments ([`ActionRegistry::build`], [`spec::ActionArgs::new`]),
/// re-exported so callers use the same version.
pub use toml;

// Deliberate re-exports of the crates whose items appear in the traits and
// records, so an implementation outside the workspace uses the same
// versions without naming them in its own Cargo.toml.

/// The attribute the traits ([`Action`], [`Cluster`], [`Filesystem`],
/// [`FlowStore`], [`JobRecorder`]) are written with; implementations use it
/// too: `#[flow_core::async_trait]`.
pub use async_trait::async_trait;
/// The `chrono` crate whose `DateTime<Utc>` the records and the lease
/// calls carry.
pub use chrono;
/// The token that cancels actions and jobs ([`ActionContext::cancel`],
/// [`JobContext::cancel`]).
pub use tokio_util::sync::CancellationToken;

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
