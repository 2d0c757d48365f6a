//! What the contract-fake tests share: the execution context, driving a
//! manual clock, a cluster's submit and wait as the engine calls them.
#![allow(dead_code)]

use flow_cloud::{Clock, ManualClock};
use flow_cluster_azure::{AzureCluster, AzureClusterFactory};
use flow_core::{
    Cluster, ClusterError, ExecutionContext, Job, JobContext, JobHandle, Settings, Timeperiod,
};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The gateway's password the fakes ask for.
pub const PASSWORD: &str = "gateway-password-for-tests";

/// Sets the environment variables the settings read the secrets from.
pub fn set_secrets() {
    std::env::set_var("FLOW_TEST_AZURE_GATEWAY_PASSWORD", PASSWORD);
    std::env::set_var(
        "FLOW_TEST_AZURE_STORAGE_KEY",
        "c3RvcmFnZS1rZXktZm9yLXRlc3Rz",
    );
}

pub fn context() -> ExecutionContext {
    let timeperiod: Timeperiod = "2026112800".parse().unwrap();
    ExecutionContext {
        flow_name: "daily".into(),
        timeperiod,
        start_timeperiod: timeperiod,
        end_timeperiod: timeperiod,
        settings: Arc::new(Settings::new()),
        number_of_clusters: 1,
    }
}

/// Runs `task`, moving the manual clock to each sleeper's deadline.
pub async fn drive<T: Send + 'static>(clock: &ManualClock, mut task: JoinHandle<T>) -> T {
    loop {
        tokio::select! {
            out = &mut task => return out.unwrap(),
            _ = clock.wait_for_sleepers(1) => {
                if let Some(deadline) = clock.next_deadline() {
                    clock.advance(deadline.saturating_sub(clock.now()));
                }
            }
        }
    }
}

/// Prepares and submits `job` (as step `count`, action `action`) on a
/// fresh cluster; answers the cluster, the stored handle and the step's
/// cancellation.
pub async fn submitted(
    clock: &ManualClock,
    factory: &AzureClusterFactory,
    job: Job,
    action: &'static str,
) -> (Arc<AzureCluster>, JobHandle, CancellationToken) {
    let cluster = Arc::new(factory.cluster("azure-0", &context()));
    let cancel = CancellationToken::new();
    let (c, j, token) = (cluster.clone(), job.clone(), cancel.clone());
    let handle = drive(
        clock,
        tokio::spawn(async move {
            let owned = Cx::new(token);
            let cx = owned.cx(action);
            let prepared = c.prepare(&j, &cx).unwrap();
            c.submit(&prepared, &j, &cx).await.unwrap()
        }),
    )
    .await;
    (cluster, handle, cancel)
}

/// Waits for the job of `handle` as the engine does.
pub async fn wait(
    clock: &ManualClock,
    cluster: &Arc<AzureCluster>,
    handle: &JobHandle,
    cancel: &CancellationToken,
) -> Result<(), ClusterError> {
    drive(clock, spawn_wait(cluster, handle, cancel)).await
}

/// The engine's wait for the job of `handle`, in a task (the clock is the
/// caller's to move).
pub fn spawn_wait(
    cluster: &Arc<AzureCluster>,
    handle: &JobHandle,
    cancel: &CancellationToken,
) -> JoinHandle<Result<(), ClusterError>> {
    let (c, h, token) = (cluster.clone(), handle.clone(), cancel.clone());
    tokio::spawn(async move {
        let owned = Cx::new(token);
        c.wait(&h, &owned.cx("job")).await
    })
}

/// What a [`JobContext`] borrows (step `count`, attempt 1), owned by a
/// test's task.
pub struct Cx {
    pub cancel: CancellationToken,
    pub execution: ExecutionContext,
}

impl Cx {
    pub fn new(cancel: CancellationToken) -> Cx {
        Cx {
            cancel,
            execution: context(),
        }
    }

    /// The context of one job of `action`.
    pub fn cx(&self, action: &'static str) -> JobContext<'_> {
        JobContext {
            cancel: &self.cancel,
            execution: &self.execution,
            step: "count",
            action,
            attempt: 1,
        }
    }
}
