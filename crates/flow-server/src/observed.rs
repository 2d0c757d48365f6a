//! The store the server's own runs write through: every write is passed to
//! the real store and, once it returned (durable), published to the event
//! hub. So the event stream shows every state change of a run started here,
//! in the order each record was written, with nothing lost to polling.
//! Runs started elsewhere (another `flow` process) are seen by polling.

use crate::events::Hub;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flow_core::{FlowKey, FlowRecord, FlowStore, LeaseOutcome, StepRecord, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// A [`FlowStore`] that publishes what it wrote.
pub struct ObservedStore {
    inner: Arc<dyn FlowStore>,
    hub: Hub,
}

impl ObservedStore {
    pub fn new(inner: Arc<dyn FlowStore>, hub: Hub) -> Self {
        ObservedStore { inner, hub }
    }
}

#[async_trait]
impl FlowStore for ObservedStore {
    async fn get_flow(&self, key: &FlowKey) -> Result<Option<FlowRecord>, StoreError> {
        self.inner.get_flow(key).await
    }

    async fn get_steps(&self, key: &FlowKey) -> Result<Vec<StepRecord>, StoreError> {
        self.inner.get_steps(key).await
    }

    async fn save_flow(&self, flow: &FlowRecord) -> Result<FlowRecord, StoreError> {
        let saved = self.inner.save_flow(flow).await?;
        self.hub.written(&flow.key(), Some(&saved), &[]);
        Ok(saved)
    }

    async fn save_step(&self, step: &StepRecord) -> Result<i64, StoreError> {
        let id = self.inner.save_step(step).await?;
        let mut saved = step.clone();
        saved.id = Some(id);
        let key = FlowKey::new(step.flow_name.clone(), step.timeperiod);
        self.hub.written(&key, None, std::slice::from_ref(&saved));
        Ok(id)
    }

    async fn begin_run(
        &self,
        flow: &FlowRecord,
        purge_steps: bool,
        steps: &[StepRecord],
    ) -> Result<FlowRecord, StoreError> {
        let saved = self.inner.begin_run(flow, purge_steps, steps).await?;
        self.hub.written(&flow.key(), Some(&saved), steps);
        Ok(saved)
    }

    async fn list_flows(&self, flow_name: Option<&str>) -> Result<Vec<FlowRecord>, StoreError> {
        self.inner.list_flows(flow_name).await
    }

    async fn acquire_lease(
        &self,
        key: &FlowKey,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        self.inner.acquire_lease(key, owner, now, ttl).await
    }

    async fn renew_lease(
        &self,
        key: &FlowKey,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.renew_lease(key, owner, now).await
    }

    async fn release_lease(&self, key: &FlowKey, owner: &str) -> Result<(), StoreError> {
        self.inner.release_lease(key, owner).await
    }
}
