//! The `FlowStore` trait: where flow state lives.
//!
//! Every state change goes through here and is durable when the call
//! returns, so a crash leaves a truthful record for `recover`.

use crate::record::{FlowKey, FlowRecord, StepRecord};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// A store failure, naming the operation and the flow it concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store at {location}: {message}")]
    Open { location: String, message: String },
    #[error("store operation '{operation}' failed for {key}: {message}")]
    Operation {
        operation: &'static str,
        key: String,
        message: String,
    },
    #[error("store holds an unreadable {what} for {key}: {message}")]
    Corrupt {
        what: &'static str,
        key: String,
        message: String,
    },
    #[error("store is closed")]
    Closed,
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The caller now holds the lease.
    Acquired,
    /// Another live owner holds it.
    HeldBy {
        owner: String,
        heartbeat_at: DateTime<Utc>,
    },
}

/// Durable storage of flow and step records and run leases.
///
/// Implementations must make each call durable before returning and must
/// make `acquire_lease` atomic (a conditional write, not read-then-write).
#[async_trait]
pub trait FlowStore: Send + Sync {
    /// The flow record of `key`, if one exists.
    async fn get_flow(&self, key: &FlowKey) -> Result<Option<FlowRecord>, StoreError>;

    /// Every step record of `key`.
    async fn get_steps(&self, key: &FlowKey) -> Result<Vec<StepRecord>, StoreError>;

    /// Inserts or updates the flow record (matched by flow name and
    /// timeperiod) and returns it with its id.
    async fn save_flow(&self, flow: &FlowRecord) -> Result<FlowRecord, StoreError>;

    /// Inserts or updates one step record (matched by flow name, timeperiod
    /// and step name) and returns its id.
    async fn save_step(&self, step: &StepRecord) -> Result<i64, StoreError>;

    /// Starts a run in one transaction: saves `flow`, deletes every step
    /// record of the flow when `purge_steps`, then saves `steps`. Returns the
    /// flow record with its id.
    async fn begin_run(
        &self,
        flow: &FlowRecord,
        purge_steps: bool,
        steps: &[StepRecord],
    ) -> Result<FlowRecord, StoreError>;

    /// Every flow record, newest timeperiod first (for `flow status`).
    async fn list_flows(&self, flow_name: Option<&str>) -> Result<Vec<FlowRecord>, StoreError>;

    /// Takes the run lease of `key` for `owner` unless another owner's lease
    /// has a heartbeat newer than `now - ttl`. Atomic.
    async fn acquire_lease(
        &self,
        key: &FlowKey,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError>;

    /// Moves the heartbeat of `owner`'s lease to `now`. Returns false when
    /// the lease is no longer `owner`'s.
    async fn renew_lease(
        &self,
        key: &FlowKey,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Drops `owner`'s lease; a no-op if someone else holds it.
    async fn release_lease(&self, key: &FlowKey, owner: &str) -> Result<(), StoreError>;
}
