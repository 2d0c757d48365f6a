//! The store as the engine writes to it: every free-text field of every
//! record (a step's or a run's error, a rollback's error, a cluster's
//! message, a log line) goes through [`flow_core::mask`] on its way in.
//!
//! One wrapper around the store the engine is given, so no call site has to
//! remember that a failure's text can quote a rendered argument, and with
//! it a secret value. Reads pass through untouched.

use async_trait::async_trait;
use flow_core::record::{ClusterRecord, LogLine, RecordId, RunRecord};
use flow_core::{FlowRecord, FlowStore, Lease, StepRecord, StoreError, StoreLayer};
use std::borrow::Cow;
use std::sync::Arc;

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
impl StoreLayer for MaskedStore {
    fn inner(&self) -> &dyn FlowStore {
        &*self.0
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
}
