//! The store as the engine writes to it: every free-text field of every
//! record (a step's or a run's error, a rollback's error, a cluster's
//! message, a log line) goes through [`flow_core::mask`] on its way in.
//!
//! One wrapper around the store the engine is given, so no call site has to
//! remember that a failure's text can quote a rendered argument, and with
//! it a secret value. Reads pass through untouched.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flow_core::record::{ClusterRecord, LogLine, RecordId, RunRecord, StoredLogLine};
use flow_core::{
    FlowKey, FlowQuery, FlowRecord, FlowStore, Lease, LeaseInfo, LeaseOutcome, LogQuery, RunQuery,
    StepRecord, StoreError,
};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// Masks what is written, delegates everything to the store it wraps.
pub(crate) struct MaskedStore(pub Arc<dyn FlowStore>);

/// `text` masked, if it holds a secret value.
fn masked(text: &mut Option<String>) -> bool {
    match text.as_deref().map(flow_core::mask) {
        Some(Cow::Owned(m)) => {
            *text = Some(m);
            true
        }
        _ => false,
    }
}

/// `step` with its error texts masked; borrowed when there was nothing to
/// mask (the usual case: no copy per write).
fn step(step: &StepRecord) -> Cow<'_, StepRecord> {
    let needs = |t: &Option<String>| t.as_deref().is_some_and(|t| flow_core::mask(t) != t);
    if !needs(&step.error) && !step.rollbacks.iter().any(|r| needs(&r.error)) {
        return Cow::Borrowed(step);
    }
    let mut copy = step.clone();
    masked(&mut copy.error);
    for r in &mut copy.rollbacks {
        masked(&mut r.error);
    }
    Cow::Owned(copy)
}

fn steps(steps: &[StepRecord]) -> Vec<StepRecord> {
    steps.iter().map(|s| step(s).into_owned()).collect()
}

fn run(run: &RunRecord) -> Cow<'_, RunRecord> {
    let mut copy = run.clone();
    if masked(&mut copy.error) {
        Cow::Owned(copy)
    } else {
        Cow::Borrowed(run)
    }
}

#[async_trait]
impl FlowStore for MaskedStore {
    async fn get_flow(&self, key: &FlowKey) -> Result<Option<FlowRecord>, StoreError> {
        self.0.get_flow(key).await
    }

    async fn get_steps(&self, key: &FlowKey) -> Result<Vec<StepRecord>, StoreError> {
        self.0.get_steps(key).await
    }

    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError> {
        self.0.list_flows(query).await
    }

    async fn acquire_lease(
        &self,
        key: &FlowKey,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        self.0.acquire_lease(key, owner, now, ttl).await
    }

    async fn renew_lease(&self, lease: &Lease, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.0.renew_lease(lease, now).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.0.release_lease(lease).await
    }

    async fn get_lease(&self, key: &FlowKey) -> Result<Option<LeaseInfo>, StoreError> {
        self.0.get_lease(key).await
    }

    async fn begin_run(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        purge_steps: bool,
        steps_: &[StepRecord],
        run_: &RunRecord,
    ) -> Result<(FlowRecord, RunRecord), StoreError> {
        self.0
            .begin_run(lease, flow, purge_steps, &steps(steps_), &run(run_))
            .await
    }

    async fn save_flow(&self, lease: &Lease, flow: &FlowRecord) -> Result<FlowRecord, StoreError> {
        self.0.save_flow(lease, flow).await
    }

    async fn save_step(&self, lease: &Lease, record: &StepRecord) -> Result<RecordId, StoreError> {
        self.0.save_step(lease, &step(record)).await
    }

    async fn save_flow_and_steps(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        steps_: &[StepRecord],
    ) -> Result<FlowRecord, StoreError> {
        self.0
            .save_flow_and_steps(lease, flow, &steps(steps_))
            .await
    }

    async fn finish_run(&self, lease: &Lease, run_: &RunRecord) -> Result<(), StoreError> {
        self.0.finish_run(lease, &run(run_)).await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        self.0.list_runs(query).await
    }

    async fn save_cluster(
        &self,
        lease: &Lease,
        cluster: &ClusterRecord,
    ) -> Result<RecordId, StoreError> {
        let mut copy = cluster.clone();
        if masked(&mut copy.message) {
            self.0.save_cluster(lease, &copy).await
        } else {
            self.0.save_cluster(lease, cluster).await
        }
    }

    async fn list_clusters(&self, key: Option<&FlowKey>) -> Result<Vec<ClusterRecord>, StoreError> {
        self.0.list_clusters(key).await
    }

    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        let lines: Vec<LogLine> = lines
            .iter()
            .map(|l| LogLine {
                message: flow_core::mask(&l.message).into_owned(),
                ..l.clone()
            })
            .collect();
        self.0.append_logs(&lines).await
    }

    async fn read_logs(&self, query: &LogQuery) -> Result<Vec<StoredLogLine>, StoreError> {
        self.0.read_logs(query).await
    }

    async fn last_log_position(&self, key: &FlowKey) -> Result<u64, StoreError> {
        self.0.last_log_position(key).await
    }

    async fn purge_logs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.0.purge_logs(before).await
    }
}
