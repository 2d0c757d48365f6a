//! [`TimedStore`]: a store layer that times the run's writes (flow, step
//! and run records, log lines) into `/metrics`' store-write histogram;
//! reads go straight through.
//!
//! The histogram is updated in place (an atomic update, no queued signal):
//! a signal per write cost the engine's thread a wake-up of the exporters'
//! thread for each of a step's two or three writes.

use crate::metrics::Metrics;
use flow_core::{
    FlowRecord, FlowStore, Lease, LogLine, RecordId, RunRecord, StepRecord, StoreError, StoreLayer,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// Wraps a store; see the module docs.
pub struct TimedStore {
    inner: Arc<dyn FlowStore>,
    metrics: Metrics,
}

impl TimedStore {
    /// Times the writes of `inner` into `metrics`.
    pub fn new(inner: Arc<dyn FlowStore>, metrics: Metrics) -> TimedStore {
        TimedStore { inner, metrics }
    }

    async fn timed<T>(&self, call: &'static str, write: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = write.await;
        self.metrics.store_write(call, started.elapsed());
        result
    }
}

#[flow_core::async_trait]
impl StoreLayer for TimedStore {
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
        self.timed(
            "begin_run",
            self.inner.begin_run(lease, flow, purge_steps, steps, run),
        )
        .await
    }

    async fn save_flow(&self, lease: &Lease, flow: &FlowRecord) -> Result<FlowRecord, StoreError> {
        self.timed("save_flow", self.inner.save_flow(lease, flow))
            .await
    }

    async fn save_step(&self, lease: &Lease, step: &StepRecord) -> Result<RecordId, StoreError> {
        self.timed("save_step", self.inner.save_step(lease, step))
            .await
    }

    async fn save_flow_and_steps(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        steps: &[StepRecord],
    ) -> Result<FlowRecord, StoreError> {
        self.timed(
            "save_flow_and_steps",
            self.inner.save_flow_and_steps(lease, flow, steps),
        )
        .await
    }

    async fn finish_run(&self, lease: &Lease, run: &RunRecord) -> Result<(), StoreError> {
        self.timed("finish_run", self.inner.finish_run(lease, run))
            .await
    }

    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        self.timed("append_logs", self.inner.append_logs(lines))
            .await
    }
}
