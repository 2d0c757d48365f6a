//! What the contract-fake tests share: the execution context, driving a
//! manual clock, a cluster's submit and wait as the engine calls them.
#![allow(dead_code)]

pub use flow_cloud::testkit::{context, drive};
use flow_cloud::{Clock, ManualClock};
use flow_cluster_azure::{AzureCluster, AzureClusterFactory};
use flow_core::{Cluster, ClusterError, ExecutionContext, Job, JobContext, JobHandle};
use std::sync::Arc;
use std::time::Duration;
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

/// A factory of `factory`'s settings changed by `change`, on `clock`.
pub fn rebuilt(
    factory: &AzureClusterFactory,
    clock: &ManualClock,
    change: impl FnOnce(&mut flow_cluster_azure::AzureConfig),
) -> AzureClusterFactory {
    factory
        .config()
        .clone()
        .builder()
        .with(change)
        .with_clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

/// Jobs of the figures tests: 25 at once on one cluster with 25 slots.
pub const FIGURES_JOBS: usize = 25;

/// When the figures tests' jobs end: 20 s, 30.37 s, ... 268.9 s after
/// their submission, so their ends fall at every phase of the polling (the
/// first minute's 1 s ticks, then the 3 s cap).
pub fn figures_ends() -> Vec<Duration> {
    (0..FIGURES_JOBS as u64)
        .map(|i| Duration::from_millis(20_000 + 10_370 * i))
        .collect()
}

/// Prints the figures of `what` (`requests` sent while waiting, of which
/// `listings`, over `ticks` poller ticks) and checks the goals: one
/// listing a tick and nothing else, at most 1 request a second, a notice
/// within 2 s median and the 3 s cap.
pub fn check_figures(
    what: &str,
    figures: &NoticeFigures,
    requests: u64,
    listings: u64,
    ticks: u64,
) {
    let per_second = requests as f64 / figures.span.as_secs_f64();
    println!(
        "figures: {what}: {requests} requests ({listings} listings) in {:.1} s = {per_second:.2} requests/s; notice p50 {:.2} s, max {:.2} s",
        figures.span.as_secs_f64(),
        figures.median().as_secs_f64(),
        figures.max().as_secs_f64(),
    );
    assert_eq!(requests, listings, "only listings, no per-job request");
    assert_eq!(listings, ticks, "one listing a tick for all the jobs");
    assert!(per_second <= 1.0, "{per_second} requests/s");
    assert!(figures.median() <= Duration::from_secs(2), "{figures:?}");
    assert!(figures.max() <= Duration::from_secs(3), "{figures:?}");
}

/// What watching many jobs of one cluster cost, on the manual clock.
#[derive(Debug)]
pub struct NoticeFigures {
    /// From the first job's start to the last one noticed.
    pub span: Duration,
    /// How late each job's end was noticed, sorted.
    pub delays: Vec<Duration>,
}

impl NoticeFigures {
    pub fn median(&self) -> Duration {
        self.delays[self.delays.len() / 2]
    }

    pub fn max(&self) -> Duration {
        *self.delays.last().unwrap()
    }
}

/// Waits for every `(cluster, handle)` as the engine does, moving the
/// clock from sleep to sleep; job `i` ends (`finish(i)`, by the test) at
/// `ends[i]` after now, just before the first instant the clock reaches
/// past it. Answers how late each end was noticed.
pub async fn notice_figures(
    clock: &ManualClock,
    jobs: &[(Arc<AzureCluster>, JobHandle, CancellationToken)],
    ends: &[Duration],
    finish: impl Fn(usize),
) -> NoticeFigures {
    let start = clock.now();
    let mut waits = tokio::task::JoinSet::new();
    for (i, (cluster, handle, cancel)) in jobs.iter().enumerate() {
        let (wait, clock) = (spawn_wait(cluster, handle, cancel), clock.clone());
        waits.spawn(async move {
            let result = wait.await.unwrap();
            (i, result, clock.now())
        });
    }
    let mut finished = vec![false; ends.len()];
    let mut delays = Vec::new();
    let mut last = start;
    while !waits.is_empty() {
        tokio::select! {
            biased;
            Some(done) = waits.join_next() => {
                let (i, result, noticed) = done.unwrap();
                result.unwrap_or_else(|e| panic!("job {i}: {e}"));
                delays.push(noticed - (start + ends[i]));
                last = last.max(noticed);
            }
            _ = clock.wait_for_sleepers(1) => {
                // Let the waits the last tick answered return first.
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
                let Some(next) = clock.next_deadline() else { continue };
                for (i, end) in ends.iter().enumerate() {
                    if !finished[i] && start + *end <= next {
                        finish(i);
                        finished[i] = true;
                    }
                }
                clock.advance(next.saturating_sub(clock.now()));
            }
        }
    }
    delays.sort();
    NoticeFigures {
        span: last - start,
        delays,
    }
}
