//! Contracts every cloud cluster crate runs against its emulator or fake
//! (feature `testkit`), so a rule written once holds for every cloud, the
//! ones to come included.
//!
//! [`unknown_outcome_contract`]: a job whose status requests keep failing
//! is reported as [`ClusterError::OutcomeUnknown`] (never as a failed job,
//! which the engine would submit again), and the same handle is adopted
//! once the backend answers again: one job, not two.
//!
//! And what the contract-fake tests of every cluster crate set up alike:
//! the execution context of their jobs ([`context`]) and the driving of a
//! [`ManualClock`] under a task ([`drive`]).

use crate::{Clock, ManualClock};
use async_trait::async_trait;
use flow_core::{
    Cluster, ClusterError, ExecutionContext, Job, JobContext, JobHandle, JobStatus, Settings,
    Timeperiod,
};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The execution context of the clusters' contract tests: flow `daily` at
/// the timeperiod `2026112800`, no settings, one cluster.
pub fn context() -> ExecutionContext {
    let timeperiod: Timeperiod = "2026112800".parse().expect("a timeperiod");
    ExecutionContext {
        flow_name: "daily".into(),
        timeperiod,
        start_timeperiod: timeperiod,
        end_timeperiod: timeperiod,
        settings: Arc::new(Settings::new()),
        number_of_clusters: 1,
    }
}

/// Runs `task` to its end, moving `clock` to the next pending sleep's
/// deadline each time the code under test is asleep (one sleeper): polls
/// and retries happen at their instants, and the test counts requests
/// instead of sleeping.
pub async fn drive<T: Send + 'static>(clock: &ManualClock, mut task: JoinHandle<T>) -> T {
    loop {
        tokio::select! {
            out = &mut task => return out.expect("the driven task ends without panicking"),
            _ = clock.wait_for_sleepers(1) => {
                if let Some(deadline) = clock.next_deadline() {
                    clock.advance(deadline.saturating_sub(clock.now()));
                }
            }
        }
    }
}

/// What the contract needs from a cluster crate's emulator or fake.
#[async_trait]
pub trait BackendFaults: Send + Sync {
    /// From now on every request about jobs' statuses fails (throttled past
    /// every retry, refused, dropped), until [`BackendFaults::heal`].
    async fn break_status_requests(&self);
    /// The backend answers again.
    async fn heal(&self);
    /// Ends the job on the backend successfully, for an emulator that does
    /// not run jobs by itself (nothing for one that does).
    async fn finish(&self, handle: &JobHandle);
    /// Jobs the backend has received so far, on this cluster.
    async fn jobs_received(&self) -> usize;
}

/// Runs the contract on `cluster`, which must be up, with `job` (one that
/// runs until `faults.finish` or for a while by itself): submits it, breaks
/// the status requests, expects [`ClusterError::OutcomeUnknown`] from
/// `wait`, heals, and expects `status` to say running or succeeded and
/// `wait` on the same handle to end well, with one job received in all.
/// Panics (it is a test) with what broke the contract.
pub async fn unknown_outcome_contract(
    cluster: &dyn Cluster,
    job: &Job,
    cx: &JobContext<'_>,
    faults: &dyn BackendFaults,
) {
    let prepared = cluster.prepare(job, cx).expect("prepare");
    let handle = cluster.submit(&prepared, job, cx).await.expect("submit");
    faults.break_status_requests().await;
    match cluster.wait(&handle, cx).await {
        Err(e @ ClusterError::OutcomeUnknown { .. }) => {
            assert!(e.is_outcome_unknown());
            let text = e.to_string();
            assert!(text.contains("outcome unknown"), "{text}");
        }
        other => panic!(
            "a wait whose status requests kept failing must end with ClusterError::OutcomeUnknown (the engine would submit a failed job again): {other:?}"
        ),
    }
    faults.heal().await;
    let status = cluster.status(&handle).await.expect("status after healing");
    assert!(
        matches!(status, JobStatus::Running | JobStatus::Succeeded),
        "the job whose outcome was unknown still runs or has ended well: {status}"
    );
    faults.finish(&handle).await;
    cluster
        .wait(&handle, cx)
        .await
        .expect("waiting again on the same handle adopts the job");
    assert_eq!(
        faults.jobs_received().await,
        1,
        "the job was adopted, not submitted again"
    );
}
