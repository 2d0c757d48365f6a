//! The store the server's own runs (and its own writes: cancel, the managed
//! run mode) write through: every call goes to the real store, and each
//! write that changes what the page shows is, once it returned (durable),
//! published to the event hub. So the event stream shows every state change
//! of a run started here, in the order each record was written, with
//! nothing lost to polling. Runs started elsewhere (another `flow`
//! process) are seen by polling the store; log lines always come from the
//! store's recorded lines (`read_logs`), whoever wrote them.
//!
//! The engine wraps this store in its own `MaskedStore`, so what reaches it
//! (and so the events) is already masked.

use crate::events::Hub;
use async_trait::async_trait;
use flow_core::{
    FlowKey, FlowRecord, FlowStore, Lease, LogLine, RecordId, RunRecord, StepRecord, StoreError,
    StoreLayer,
};
use std::sync::Arc;

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
impl StoreLayer for ObservedStore {
    /// Reads, leases and clusters (the page does not draw them) go straight
    /// to the inner store; the writes below are published.
    fn inner(&self) -> &dyn FlowStore {
        &*self.inner
    }

    async fn begin_run(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        purge_steps: bool,
        steps: &[StepRecord],
        run: &RunRecord,
    ) -> Result<(FlowRecord, RunRecord), StoreError> {
        let (saved, run) = self
            .inner
            .begin_run(lease, flow, purge_steps, steps, run)
            .await?;
        // As the store keeps them: steps without a flow id got the flow's.
        let steps: Vec<StepRecord> = steps
            .iter()
            .map(|s| {
                let mut s = s.clone();
                if s.related_flow.is_none() {
                    s.related_flow = saved.id.clone();
                }
                s
            })
            .collect();
        self.hub
            .begun(&lease.key, &saved, purge_steps, &steps, &run);
        Ok((saved, run))
    }

    async fn save_flow(&self, lease: &Lease, flow: &FlowRecord) -> Result<FlowRecord, StoreError> {
        let saved = self.inner.save_flow(lease, flow).await?;
        self.hub.written(&lease.key, Some(&saved), &[]);
        Ok(saved)
    }

    async fn save_step(&self, lease: &Lease, step: &StepRecord) -> Result<RecordId, StoreError> {
        let id = self.inner.save_step(lease, step).await?;
        let mut saved = step.clone();
        saved.id = Some(id.clone());
        self.hub
            .written(&lease.key, None, std::slice::from_ref(&saved));
        Ok(id)
    }

    async fn save_flow_and_steps(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        steps: &[StepRecord],
    ) -> Result<FlowRecord, StoreError> {
        let saved = self.inner.save_flow_and_steps(lease, flow, steps).await?;
        self.hub.written(&lease.key, Some(&saved), steps);
        Ok(saved)
    }

    async fn finish_run(&self, lease: &Lease, run: &RunRecord) -> Result<(), StoreError> {
        self.inner.finish_run(lease, run).await?;
        self.hub.run_written(&lease.key, run);
        Ok(())
    }

    /// Log lines are read back with their positions by the hub's watcher
    /// (`read_logs`), the same way for every writer, so a client resumes
    /// by store position whichever process wrote them.
    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        self.inner.append_logs(lines).await?;
        if let Some(first) = lines.first() {
            self.hub
                .logs_appended(&FlowKey::new(first.flow_name.clone(), first.timeperiod));
        }
        Ok(())
    }
}
