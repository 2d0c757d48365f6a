//! The list of [`FlowStore`](crate::FlowStore)'s methods, written once for
//! the code that forwards every one of them: [`StoreLayer`](crate::StoreLayer)'s
//! defaults and its blanket `FlowStore` impl here, and the MongoDB store's
//! runtime wrapper. A method added to `FlowStore` and not here fails those
//! impls' build ("not all trait items implemented").

/// Calls `$callback!` with every [`FlowStore`](crate::FlowStore) method as
/// `name(arg: KIND Type, ...) -> Ok;` where KIND says how a forwarder that
/// must own its arguments (to move them to another task) takes each one:
/// `owned` (a reference: `ToOwned::to_owned`, lent back with `Borrow`),
/// `opt` (an `Option<&T>`: `cloned`, lent back with `as_ref`) or `copy`.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_store_method {
    ($callback:ident) => {
        $callback! {
            get_flow(key: owned &$crate::FlowKey) -> Option<$crate::FlowRecord>;
            get_steps(key: owned &$crate::FlowKey) -> Vec<$crate::StepRecord>;
            list_flows(query: owned &$crate::FlowQuery) -> Vec<$crate::FlowRecord>;
            acquire_lease(
                key: owned &$crate::FlowKey,
                owner: owned &str,
                now: copy ::chrono::DateTime<::chrono::Utc>,
                ttl: copy ::std::time::Duration
            ) -> $crate::LeaseOutcome;
            renew_lease(
                lease: owned &$crate::Lease,
                now: copy ::chrono::DateTime<::chrono::Utc>
            ) -> bool;
            release_lease(lease: owned &$crate::Lease) -> ();
            get_lease(key: owned &$crate::FlowKey) -> Option<$crate::LeaseInfo>;
            begin_run(
                lease: owned &$crate::Lease,
                flow: owned &$crate::FlowRecord,
                purge_steps: copy bool,
                steps: owned &[$crate::StepRecord],
                run: owned &$crate::RunRecord
            ) -> ($crate::FlowRecord, $crate::RunRecord);
            save_flow(
                lease: owned &$crate::Lease,
                flow: owned &$crate::FlowRecord
            ) -> $crate::FlowRecord;
            save_step(
                lease: owned &$crate::Lease,
                step: owned &$crate::StepRecord
            ) -> $crate::RecordId;
            save_flow_and_steps(
                lease: owned &$crate::Lease,
                flow: owned &$crate::FlowRecord,
                steps: owned &[$crate::StepRecord]
            ) -> $crate::FlowRecord;
            finish_run(lease: owned &$crate::Lease, run: owned &$crate::RunRecord) -> ();
            list_runs(query: owned &$crate::RunQuery) -> Vec<$crate::RunRecord>;
            save_cluster(
                lease: owned &$crate::Lease,
                cluster: owned &$crate::ClusterRecord
            ) -> $crate::RecordId;
            list_clusters(key: opt Option<&$crate::FlowKey>) -> Vec<$crate::ClusterRecord>;
            claim_cluster(
                lease: owned &$crate::Lease,
                run: owned &$crate::RecordId,
                cluster: owned &$crate::SharedClusterKey,
                now: copy ::chrono::DateTime<::chrono::Utc>,
                ttl: copy ::std::time::Duration
            ) -> $crate::ClusterClaim;
            set_cluster_handle(
                lease: owned &$crate::Lease,
                cluster: owned &$crate::SharedClusterKey,
                handle: owned &$crate::ClusterHandle
            ) -> ();
            release_cluster(
                lease: owned &$crate::Lease,
                cluster: owned &$crate::SharedClusterKey,
                now: copy ::chrono::DateTime<::chrono::Utc>,
                ttl: copy ::std::time::Duration
            ) -> $crate::ClusterRelease;
            forget_cluster(
                lease: owned &$crate::Lease,
                cluster: owned &$crate::SharedClusterKey,
                backend_id: owned &str
            ) -> ();
            append_logs(lines: owned &[$crate::LogLine]) -> ();
            read_logs(query: owned &$crate::LogQuery) -> Vec<$crate::StoredLogLine>;
            last_log_position(key: owned &$crate::FlowKey) -> u64;
            purge_logs(before: copy ::chrono::DateTime<::chrono::Utc>) -> u64;
            create_job(job: owned &$crate::TimetableJob) -> $crate::TimetableJob;
            get_job(key: owned &$crate::JobKey) -> Option<$crate::TimetableJob>;
            save_job(
                lease: owned &$crate::Lease,
                job: owned &$crate::TimetableJob
            ) -> $crate::TimetableJob;
            list_jobs(query: owned &$crate::JobQuery) -> Vec<$crate::TimetableJob>;
            tally_jobs(
                process_name: owned &str,
                q: copy $crate::TimeQualifier
            ) -> Vec<$crate::JobTally>;
            count_sla_missed(flow_name: owned &str) -> u64;
        }
    };
}
