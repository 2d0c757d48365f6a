//! [`MongoStoreWithRuntime`]: the store on a runtime of its own, for callers
//! that open it before (or outside) their async runtime, as the `flow`
//! command does. The driver's connection pool lives on the runtime that
//! created the client, so the client gets one that lives as long as the
//! store; each call runs there and is awaited from wherever it was made.

use crate::{MongoError, MongoOptions, MongoStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flow_core::{
    ClusterClaim, ClusterHandle, ClusterRecord, ClusterRelease, FlowKey, FlowQuery, FlowRecord,
    FlowStore, JobKey, JobQuery, JobTally, Lease, LeaseInfo, LeaseOutcome, LogLine, LogQuery,
    RecordId, RunQuery, RunRecord, SharedClusterKey, StepRecord, StoreError, StoredLogLine,
    TimeQualifier, TimetableJob,
};
use std::time::Duration;

/// A [`MongoStore`] with its own two-thread runtime.
pub struct MongoStoreWithRuntime {
    store: MongoStore,
    /// Taken by `drop`, which shuts it down on a thread of its own.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for MongoStoreWithRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.store.fmt(f)
    }
}

impl MongoStoreWithRuntime {
    /// Connects (see [`MongoStore::connect`]); blocking. Call it outside an
    /// async runtime.
    pub fn open(options: &MongoOptions) -> Result<Self, MongoError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flow-mongo")
            .enable_all()
            .build()
            .map_err(|e| MongoError::Setup {
                hosts: crate::validate_uri(&options.uri)
                    .map(|h| h.join(", "))
                    .unwrap_or_default(),
                operation: "starting the driver's runtime",
                message: e.to_string(),
            })?;
        let store = runtime.block_on(MongoStore::connect(options))?;
        Ok(MongoStoreWithRuntime {
            store,
            runtime: Some(runtime),
        })
    }

    /// The connected store (for calls made on its runtime).
    pub fn store(&self) -> &MongoStore {
        &self.store
    }

    async fn run<T, F>(&self, call: impl FnOnce(MongoStore) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Closed);
        };
        let task = runtime.spawn(call(self.store.clone()));
        task.await.unwrap_or(Err(StoreError::Closed))
    }
}

impl Drop for MongoStoreWithRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's async context panics:
        // move it (the only owner) to a thread that may block. (A clone
        // handed over there raced with this field's own drop: whichever
        // came last dropped the runtime, here in the async context.)
        if let Some(runtime) = self.runtime.take() {
            std::thread::spawn(move || runtime.shutdown_timeout(Duration::from_secs(2)));
        }
    }
}

#[async_trait]
impl FlowStore for MongoStoreWithRuntime {
    async fn get_flow(&self, key: &FlowKey) -> Result<Option<FlowRecord>, StoreError> {
        let key = key.clone();
        self.run(|s| async move { s.get_flow(&key).await }).await
    }
    async fn get_steps(&self, key: &FlowKey) -> Result<Vec<StepRecord>, StoreError> {
        let key = key.clone();
        self.run(|s| async move { s.get_steps(&key).await }).await
    }
    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError> {
        let query = query.clone();
        self.run(|s| async move { s.list_flows(&query).await })
            .await
    }
    async fn acquire_lease(
        &self,
        key: &FlowKey,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        let (key, owner) = (key.clone(), owner.to_string());
        self.run(|s| async move { s.acquire_lease(&key, &owner, now, ttl).await })
            .await
    }
    async fn renew_lease(&self, lease: &Lease, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let lease = lease.clone();
        self.run(|s| async move { s.renew_lease(&lease, now).await })
            .await
    }
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.run(|s| async move { s.release_lease(&lease).await })
            .await
    }
    async fn get_lease(&self, key: &FlowKey) -> Result<Option<LeaseInfo>, StoreError> {
        let key = key.clone();
        self.run(|s| async move { s.get_lease(&key).await }).await
    }
    async fn begin_run(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        purge_steps: bool,
        steps: &[StepRecord],
        run: &RunRecord,
    ) -> Result<(FlowRecord, RunRecord), StoreError> {
        let (lease, flow, steps, run) = (lease.clone(), flow.clone(), steps.to_vec(), run.clone());
        self.run(|s| async move { s.begin_run(&lease, &flow, purge_steps, &steps, &run).await })
            .await
    }
    async fn save_flow(&self, lease: &Lease, flow: &FlowRecord) -> Result<FlowRecord, StoreError> {
        let (lease, flow) = (lease.clone(), flow.clone());
        self.run(|s| async move { s.save_flow(&lease, &flow).await })
            .await
    }
    async fn save_step(&self, lease: &Lease, step: &StepRecord) -> Result<RecordId, StoreError> {
        let (lease, step) = (lease.clone(), step.clone());
        self.run(|s| async move { s.save_step(&lease, &step).await })
            .await
    }
    async fn save_flow_and_steps(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        steps: &[StepRecord],
    ) -> Result<FlowRecord, StoreError> {
        let (lease, flow, steps) = (lease.clone(), flow.clone(), steps.to_vec());
        self.run(|s| async move { s.save_flow_and_steps(&lease, &flow, &steps).await })
            .await
    }
    async fn finish_run(&self, lease: &Lease, run: &RunRecord) -> Result<(), StoreError> {
        let (lease, run) = (lease.clone(), run.clone());
        self.run(|s| async move { s.finish_run(&lease, &run).await })
            .await
    }
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let query = query.clone();
        self.run(|s| async move { s.list_runs(&query).await }).await
    }
    async fn save_cluster(
        &self,
        lease: &Lease,
        cluster: &ClusterRecord,
    ) -> Result<RecordId, StoreError> {
        let (lease, cluster) = (lease.clone(), cluster.clone());
        self.run(|s| async move { s.save_cluster(&lease, &cluster).await })
            .await
    }
    async fn list_clusters(&self, key: Option<&FlowKey>) -> Result<Vec<ClusterRecord>, StoreError> {
        let key = key.cloned();
        self.run(|s| async move { s.list_clusters(key.as_ref()).await })
            .await
    }
    async fn claim_cluster(
        &self,
        lease: &Lease,
        run: &RecordId,
        cluster: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClusterClaim, StoreError> {
        let (lease, run, cluster) = (lease.clone(), run.clone(), cluster.clone());
        self.run(|s| async move { s.claim_cluster(&lease, &run, &cluster, now, ttl).await })
            .await
    }
    async fn set_cluster_handle(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        handle: &ClusterHandle,
    ) -> Result<(), StoreError> {
        let (lease, cluster, handle) = (lease.clone(), cluster.clone(), handle.clone());
        self.run(|s| async move { s.set_cluster_handle(&lease, &cluster, &handle).await })
            .await
    }
    async fn release_cluster(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClusterRelease, StoreError> {
        let (lease, cluster) = (lease.clone(), cluster.clone());
        self.run(|s| async move { s.release_cluster(&lease, &cluster, now, ttl).await })
            .await
    }
    async fn forget_cluster(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        backend_id: &str,
    ) -> Result<(), StoreError> {
        let (lease, cluster, backend_id) = (lease.clone(), cluster.clone(), backend_id.to_string());
        self.run(|s| async move { s.forget_cluster(&lease, &cluster, &backend_id).await })
            .await
    }
    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        let lines = lines.to_vec();
        self.run(|s| async move { s.append_logs(&lines).await })
            .await
    }
    async fn read_logs(&self, query: &LogQuery) -> Result<Vec<StoredLogLine>, StoreError> {
        let query = query.clone();
        self.run(|s| async move { s.read_logs(&query).await }).await
    }
    async fn last_log_position(&self, key: &FlowKey) -> Result<u64, StoreError> {
        let key = key.clone();
        self.run(|s| async move { s.last_log_position(&key).await })
            .await
    }
    async fn purge_logs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.run(|s| async move { s.purge_logs(before).await })
            .await
    }
    async fn create_job(&self, job: &TimetableJob) -> Result<TimetableJob, StoreError> {
        let job = job.clone();
        self.run(|s| async move { s.create_job(&job).await }).await
    }
    async fn get_job(&self, key: &JobKey) -> Result<Option<TimetableJob>, StoreError> {
        let key = key.clone();
        self.run(|s| async move { s.get_job(&key).await }).await
    }
    async fn save_job(
        &self,
        lease: &Lease,
        job: &TimetableJob,
    ) -> Result<TimetableJob, StoreError> {
        let (lease, job) = (lease.clone(), job.clone());
        self.run(|s| async move { s.save_job(&lease, &job).await })
            .await
    }
    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<TimetableJob>, StoreError> {
        let query = query.clone();
        self.run(|s| async move { s.list_jobs(&query).await }).await
    }
    async fn tally_jobs(
        &self,
        process_name: &str,
        q: TimeQualifier,
    ) -> Result<Vec<JobTally>, StoreError> {
        let name = process_name.to_string();
        self.run(|s| async move { s.tally_jobs(&name, q).await })
            .await
    }
}
