//! [`StoreLayer`]: a [`FlowStore`] that wraps another and changes only some
//! of its calls (masking what is written, publishing writes, counting or
//! failing calls in tests), written without forwarding every method by
//! hand.
//!
//! Why a trait with default methods and one blanket
//! `impl<T: StoreLayer> FlowStore for T`, rather than the alternatives:
//! - a `macro_rules!` delegation would hide the signatures from the docs and
//!   the IDE, and a macro cannot leave out the methods a wrapper writes
//!   itself without being told each one's name;
//! - splitting `FlowStore` by concern (records, leases, logs, as apalis
//!   splits its storage capabilities) would change every backend and every
//!   `Arc<dyn FlowStore>` holder, and each part would still be forwarded.
//!
//! The forwarding is written twice here (the defaults, and the blanket
//! impl calling them), once for every wrapper there is and will be.

use crate::cluster::ClusterHandle;
use crate::job::{JobKey, JobQuery, JobTally, TimetableJob};
use crate::record::{
    ClusterRecord, FlowKey, FlowRecord, LogLine, RecordId, RunRecord, StepRecord, StoredLogLine,
};
use crate::shared_cluster::{ClusterClaim, ClusterRelease, SharedClusterKey};
use crate::store::{
    FlowQuery, FlowStore, Lease, LeaseInfo, LeaseOutcome, LogQuery, RunQuery, StoreError,
};
use crate::timeperiod::TimeQualifier;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// A store wrapping [`StoreLayer::inner`]: every method defaults to calling
/// the inner store's, so a wrapper overrides only what it changes, and the
/// blanket implementation makes it a [`FlowStore`].
///
/// ```
/// use flow_core::{FlowStore, LogLine, StoreError, StoreLayer};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// /// Counts the log lines written; everything else goes straight through.
/// struct CountingLines {
///     inner: Arc<dyn FlowStore>,
///     lines: AtomicUsize,
/// }
///
/// #[flow_core::async_trait]
/// impl StoreLayer for CountingLines {
///     fn inner(&self) -> &dyn FlowStore {
///         &*self.inner
///     }
///     async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
///         self.lines.fetch_add(lines.len(), Ordering::Relaxed);
///         self.inner.append_logs(lines).await
///     }
/// }
/// ```
#[async_trait]
pub trait StoreLayer: Send + Sync {
    /// The store calls go to unless the layer overrides them.
    fn inner(&self) -> &dyn FlowStore;

    /// Called with the method's name by every default method before it
    /// calls the inner store's (not by the methods a layer overrides): for
    /// layers that count or trace calls.
    fn called(&self, _method: &'static str) {}

    /// See [`FlowStore::get_flow`].
    async fn get_flow(&self, key: &FlowKey) -> Result<Option<FlowRecord>, StoreError> {
        self.called("get_flow");
        self.inner().get_flow(key).await
    }

    /// See [`FlowStore::get_steps`].
    async fn get_steps(&self, key: &FlowKey) -> Result<Vec<StepRecord>, StoreError> {
        self.called("get_steps");
        self.inner().get_steps(key).await
    }

    /// See [`FlowStore::list_flows`].
    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError> {
        self.called("list_flows");
        self.inner().list_flows(query).await
    }

    /// See [`FlowStore::acquire_lease`].
    async fn acquire_lease(
        &self,
        key: &FlowKey,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        self.called("acquire_lease");
        self.inner().acquire_lease(key, owner, now, ttl).await
    }

    /// See [`FlowStore::renew_lease`].
    async fn renew_lease(&self, lease: &Lease, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.called("renew_lease");
        self.inner().renew_lease(lease, now).await
    }

    /// See [`FlowStore::release_lease`].
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.called("release_lease");
        self.inner().release_lease(lease).await
    }

    /// See [`FlowStore::get_lease`].
    async fn get_lease(&self, key: &FlowKey) -> Result<Option<LeaseInfo>, StoreError> {
        self.called("get_lease");
        self.inner().get_lease(key).await
    }

    /// See [`FlowStore::begin_run`].
    async fn begin_run(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        purge_steps: bool,
        steps: &[StepRecord],
        run: &RunRecord,
    ) -> Result<(FlowRecord, RunRecord), StoreError> {
        self.called("begin_run");
        self.inner()
            .begin_run(lease, flow, purge_steps, steps, run)
            .await
    }

    /// See [`FlowStore::save_flow`].
    async fn save_flow(&self, lease: &Lease, flow: &FlowRecord) -> Result<FlowRecord, StoreError> {
        self.called("save_flow");
        self.inner().save_flow(lease, flow).await
    }

    /// See [`FlowStore::save_step`].
    async fn save_step(&self, lease: &Lease, step: &StepRecord) -> Result<RecordId, StoreError> {
        self.called("save_step");
        self.inner().save_step(lease, step).await
    }

    /// See [`FlowStore::save_flow_and_steps`].
    async fn save_flow_and_steps(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        steps: &[StepRecord],
    ) -> Result<FlowRecord, StoreError> {
        self.called("save_flow_and_steps");
        self.inner().save_flow_and_steps(lease, flow, steps).await
    }

    /// See [`FlowStore::finish_run`].
    async fn finish_run(&self, lease: &Lease, run: &RunRecord) -> Result<(), StoreError> {
        self.called("finish_run");
        self.inner().finish_run(lease, run).await
    }

    /// See [`FlowStore::list_runs`].
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        self.called("list_runs");
        self.inner().list_runs(query).await
    }

    /// See [`FlowStore::save_cluster`].
    async fn save_cluster(
        &self,
        lease: &Lease,
        cluster: &ClusterRecord,
    ) -> Result<RecordId, StoreError> {
        self.called("save_cluster");
        self.inner().save_cluster(lease, cluster).await
    }

    /// See [`FlowStore::list_clusters`].
    async fn list_clusters(&self, key: Option<&FlowKey>) -> Result<Vec<ClusterRecord>, StoreError> {
        self.called("list_clusters");
        self.inner().list_clusters(key).await
    }

    /// See [`FlowStore::claim_cluster`].
    async fn claim_cluster(
        &self,
        lease: &Lease,
        run: &RecordId,
        cluster: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClusterClaim, StoreError> {
        self.called("claim_cluster");
        self.inner()
            .claim_cluster(lease, run, cluster, now, ttl)
            .await
    }

    /// See [`FlowStore::set_cluster_handle`].
    async fn set_cluster_handle(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        handle: &ClusterHandle,
    ) -> Result<(), StoreError> {
        self.called("set_cluster_handle");
        self.inner()
            .set_cluster_handle(lease, cluster, handle)
            .await
    }

    /// See [`FlowStore::release_cluster`].
    async fn release_cluster(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClusterRelease, StoreError> {
        self.called("release_cluster");
        self.inner().release_cluster(lease, cluster, now, ttl).await
    }

    /// See [`FlowStore::forget_cluster`].
    async fn forget_cluster(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        backend_id: &str,
    ) -> Result<(), StoreError> {
        self.called("forget_cluster");
        self.inner()
            .forget_cluster(lease, cluster, backend_id)
            .await
    }

    /// See [`FlowStore::append_logs`].
    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        self.called("append_logs");
        self.inner().append_logs(lines).await
    }

    /// See [`FlowStore::read_logs`].
    async fn read_logs(&self, query: &LogQuery) -> Result<Vec<StoredLogLine>, StoreError> {
        self.called("read_logs");
        self.inner().read_logs(query).await
    }

    /// See [`FlowStore::last_log_position`].
    async fn last_log_position(&self, key: &FlowKey) -> Result<u64, StoreError> {
        self.called("last_log_position");
        self.inner().last_log_position(key).await
    }

    /// See [`FlowStore::purge_logs`].
    async fn purge_logs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.called("purge_logs");
        self.inner().purge_logs(before).await
    }

    /// See [`FlowStore::create_job`].
    async fn create_job(&self, job: &TimetableJob) -> Result<TimetableJob, StoreError> {
        self.called("create_job");
        self.inner().create_job(job).await
    }

    /// See [`FlowStore::get_job`].
    async fn get_job(&self, key: &JobKey) -> Result<Option<TimetableJob>, StoreError> {
        self.called("get_job");
        self.inner().get_job(key).await
    }

    /// See [`FlowStore::save_job`].
    async fn save_job(
        &self,
        lease: &Lease,
        job: &TimetableJob,
    ) -> Result<TimetableJob, StoreError> {
        self.called("save_job");
        self.inner().save_job(lease, job).await
    }

    /// See [`FlowStore::list_jobs`].
    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<TimetableJob>, StoreError> {
        self.called("list_jobs");
        self.inner().list_jobs(query).await
    }

    /// See [`FlowStore::tally_jobs`].
    async fn tally_jobs(
        &self,
        process_name: &str,
        q: TimeQualifier,
    ) -> Result<Vec<JobTally>, StoreError> {
        self.called("tally_jobs");
        self.inner().tally_jobs(process_name, q).await
    }
}

#[async_trait]
impl<T: StoreLayer> FlowStore for T {
    async fn get_flow(&self, key: &FlowKey) -> Result<Option<FlowRecord>, StoreError> {
        StoreLayer::get_flow(self, key).await
    }
    async fn get_steps(&self, key: &FlowKey) -> Result<Vec<StepRecord>, StoreError> {
        StoreLayer::get_steps(self, key).await
    }
    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError> {
        StoreLayer::list_flows(self, query).await
    }
    async fn acquire_lease(
        &self,
        key: &FlowKey,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        StoreLayer::acquire_lease(self, key, owner, now, ttl).await
    }
    async fn renew_lease(&self, lease: &Lease, now: DateTime<Utc>) -> Result<bool, StoreError> {
        StoreLayer::renew_lease(self, lease, now).await
    }
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        StoreLayer::release_lease(self, lease).await
    }
    async fn get_lease(&self, key: &FlowKey) -> Result<Option<LeaseInfo>, StoreError> {
        StoreLayer::get_lease(self, key).await
    }
    async fn begin_run(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        purge_steps: bool,
        steps: &[StepRecord],
        run: &RunRecord,
    ) -> Result<(FlowRecord, RunRecord), StoreError> {
        StoreLayer::begin_run(self, lease, flow, purge_steps, steps, run).await
    }
    async fn save_flow(&self, lease: &Lease, flow: &FlowRecord) -> Result<FlowRecord, StoreError> {
        StoreLayer::save_flow(self, lease, flow).await
    }
    async fn save_step(&self, lease: &Lease, step: &StepRecord) -> Result<RecordId, StoreError> {
        StoreLayer::save_step(self, lease, step).await
    }
    async fn save_flow_and_steps(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        steps: &[StepRecord],
    ) -> Result<FlowRecord, StoreError> {
        StoreLayer::save_flow_and_steps(self, lease, flow, steps).await
    }
    async fn finish_run(&self, lease: &Lease, run: &RunRecord) -> Result<(), StoreError> {
        StoreLayer::finish_run(self, lease, run).await
    }
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        StoreLayer::list_runs(self, query).await
    }
    async fn save_cluster(
        &self,
        lease: &Lease,
        cluster: &ClusterRecord,
    ) -> Result<RecordId, StoreError> {
        StoreLayer::save_cluster(self, lease, cluster).await
    }
    async fn list_clusters(&self, key: Option<&FlowKey>) -> Result<Vec<ClusterRecord>, StoreError> {
        StoreLayer::list_clusters(self, key).await
    }
    async fn claim_cluster(
        &self,
        lease: &Lease,
        run: &RecordId,
        cluster: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClusterClaim, StoreError> {
        StoreLayer::claim_cluster(self, lease, run, cluster, now, ttl).await
    }
    async fn set_cluster_handle(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        handle: &ClusterHandle,
    ) -> Result<(), StoreError> {
        StoreLayer::set_cluster_handle(self, lease, cluster, handle).await
    }
    async fn release_cluster(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClusterRelease, StoreError> {
        StoreLayer::release_cluster(self, lease, cluster, now, ttl).await
    }
    async fn forget_cluster(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        backend_id: &str,
    ) -> Result<(), StoreError> {
        StoreLayer::forget_cluster(self, lease, cluster, backend_id).await
    }
    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        StoreLayer::append_logs(self, lines).await
    }
    async fn read_logs(&self, query: &LogQuery) -> Result<Vec<StoredLogLine>, StoreError> {
        StoreLayer::read_logs(self, query).await
    }
    async fn last_log_position(&self, key: &FlowKey) -> Result<u64, StoreError> {
        StoreLayer::last_log_position(self, key).await
    }
    async fn purge_logs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        StoreLayer::purge_logs(self, before).await
    }
    async fn create_job(&self, job: &TimetableJob) -> Result<TimetableJob, StoreError> {
        StoreLayer::create_job(self, job).await
    }
    async fn get_job(&self, key: &JobKey) -> Result<Option<TimetableJob>, StoreError> {
        StoreLayer::get_job(self, key).await
    }
    async fn save_job(
        &self,
        lease: &Lease,
        job: &TimetableJob,
    ) -> Result<TimetableJob, StoreError> {
        StoreLayer::save_job(self, lease, job).await
    }
    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<TimetableJob>, StoreError> {
        StoreLayer::list_jobs(self, query).await
    }
    async fn tally_jobs(
        &self,
        process_name: &str,
        q: TimeQualifier,
    ) -> Result<Vec<JobTally>, StoreError> {
        StoreLayer::tally_jobs(self, process_name, q).await
    }
}
