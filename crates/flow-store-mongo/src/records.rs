//! The [`FlowStore`] implementation of [`MongoStore`]: flow, step, run and
//! cluster records here; leases, `begin_run` and log lines in their own
//! modules, which this one calls.

use crate::odm::{decode, encode, token_bson, Model, FENCE};
use crate::store::{key_doc, limit_i64, Listing};
use crate::{begin_run, lease, logs, model, ClusterDoc, FlowDoc, MongoStore, RunDoc, StepDoc};
use async_trait::async_trait;
use bson::oid::ObjectId;
use bson::{doc, Document};
use chrono::{DateTime, Utc};
use flow_core::{
    ClusterClaim, ClusterHandle, ClusterRecord, ClusterRelease, FlowKey, FlowQuery, FlowRecord,
    FlowStore, JobKey, JobQuery, JobTally, Lease, LeaseInfo, LeaseOutcome, LogLine, LogQuery,
    RecordId, RunQuery, RunRecord, SharedClusterKey, StepRecord, StoreError, StoredLogLine,
    TimeQualifier, TimetableJob,
};
use std::time::Duration;

#[async_trait]
impl FlowStore for MongoStore {
    async fn get_flow(&self, key: &FlowKey) -> Result<Option<FlowRecord>, StoreError> {
        let found = self
            .flows
            .inner
            .find_one(key_doc(key))
            .await
            .map_err(|e| self.op_error("get_flow", key, e))?;
        found
            .map(|d| {
                decode::<FlowDoc>(d)
                    .and_then(|f| f.to_record())
                    .map_err(|m| self.corrupt("flow record", key, m))
            })
            .transpose()
    }

    async fn get_steps(&self, key: &FlowKey) -> Result<Vec<StepRecord>, StoreError> {
        self.read_all(
            &self.steps,
            Listing {
                operation: "get_steps",
                what: "step record",
                key: &key.to_string(),
                filter: key_doc(key),
                sort: doc! { "_id": 1 },
                skip: None,
                limit: None,
            },
            StepDoc::to_record,
        )
        .await
    }
    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError> {
        let mut filter = Document::new();
        if let Some(name) = &query.flow_name {
            filter.insert("flow_name", name);
        }
        if let Some(state) = query.state {
            filter.insert("state", state.as_str());
        }
        crate::store::timeperiod_range(&mut filter, query.from, query.to);
        let what = query
            .flow_name
            .clone()
            .unwrap_or_else(|| "every flow".into());
        self.read_all(
            &self.flows,
            Listing {
                operation: "list_flows",
                what: "flow record",
                key: &what,
                filter,
                sort: doc! { "timeperiod": -1, "flow_name": 1 },
                skip: Some(query.offset as u64),
                limit: limit_i64(query.limit),
            },
            FlowDoc::to_record,
        )
        .await
    }

    async fn acquire_lease(
        &self,
        key: &FlowKey,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        lease::acquire(self, key, owner, now, ttl).await
    }

    async fn renew_lease(&self, lease: &Lease, now: DateTime<Utc>) -> Result<bool, StoreError> {
        lease::renew(self, lease, now).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        lease::release(self, lease).await
    }

    async fn get_lease(&self, key: &FlowKey) -> Result<Option<LeaseInfo>, StoreError> {
        lease::get(self, key).await
    }

    async fn begin_run(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        purge_steps: bool,
        steps: &[StepRecord],
        run: &RunRecord,
    ) -> Result<(FlowRecord, RunRecord), StoreError> {
        begin_run::begin_run(self, lease, flow, purge_steps, steps, run).await
    }

    async fn save_flow(&self, lease: &Lease, flow: &FlowRecord) -> Result<FlowRecord, StoreError> {
        let document =
            FlowDoc::from_record(flow).map_err(|m| self.op_error("save_flow", &lease.key, m))?;
        let id = self
            .save_fenced(&self.flows, "save_flow", lease, &document)
            .await?;
        let mut flow = flow.clone();
        flow.id = Some(RecordId::new(id.to_hex()));
        Ok(flow)
    }

    async fn save_step(&self, lease: &Lease, step: &StepRecord) -> Result<RecordId, StoreError> {
        let document =
            StepDoc::from_record(step).map_err(|m| self.op_error("save_step", &lease.key, m))?;
        let id = self
            .save_fenced(&self.steps, "save_step", lease, &document)
            .await?;
        Ok(RecordId::new(id.to_hex()))
    }

    async fn save_flow_and_steps(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        steps: &[StepRecord],
    ) -> Result<FlowRecord, StoreError> {
        let key = &lease.key;
        let flow_doc =
            FlowDoc::from_record(flow).map_err(|m| self.op_error("save_flow_and_steps", key, m))?;
        let step_docs = steps
            .iter()
            .map(StepDoc::from_record)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| self.op_error("save_flow_and_steps", key, m))?;
        if !self.transactions {
            // Steps first, then the flow: a flow state never claims more
            // than its steps say.
            for document in &step_docs {
                self.save_fenced(&self.steps, "save_flow_and_steps", lease, document)
                    .await?;
            }
            let id = self
                .save_fenced(&self.flows, "save_flow_and_steps", lease, &flow_doc)
                .await?;
            let mut flow = flow.clone();
            flow.id = Some(RecordId::new(id.to_hex()));
            return Ok(flow);
        }
        let mut session = self.session(key, "save_flow_and_steps").await?;
        let mut attempt = 0;
        let id = loop {
            attempt += 1;
            session
                .start_transaction()
                .await
                .map_err(|e| self.op_error("save_flow_and_steps", key, e))?;
            let result = self
                .flow_and_steps_writes(lease, &flow_doc, &step_docs, &mut session)
                .await;
            match result {
                Ok(id) => {
                    if self
                        .commit(&mut session, key, "save_flow_and_steps")
                        .await?
                    {
                        break id;
                    }
                }
                Err(e) => {
                    if !self.abort(&mut session, &e, attempt).await {
                        return Err(e);
                    }
                }
            }
            if attempt >= 5 {
                return Err(self.op_error(
                    "save_flow_and_steps",
                    key,
                    "the transaction kept conflicting",
                ));
            }
        };
        let mut flow = flow.clone();
        flow.id = Some(RecordId::new(id.to_hex()));
        Ok(flow)
    }

    async fn finish_run(&self, lease: &Lease, run: &RunRecord) -> Result<(), StoreError> {
        let key = &lease.key;
        let id = run
            .id
            .as_ref()
            .ok_or_else(|| self.op_error("finish_run", key, "the run record has no id"))?;
        let id = model::object_id(id).map_err(|m| self.op_error("finish_run", key, m))?;
        let document =
            encode(&RunDoc::from_record(run).map_err(|m| self.op_error("finish_run", key, m))?)
                .map_err(|e| self.odm_error("finish_run", key, e))?;
        self.replace_fenced(RunDoc::COLLECTION, "finish_run", lease, id, document)
            .await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let mut filter = Document::new();
        if let Some(name) = &query.flow_name {
            filter.insert("flow_name", name);
        }
        if let Some(tp) = query.timeperiod {
            filter.insert("timeperiod", tp.to_string());
        }
        let what = query
            .flow_name
            .clone()
            .unwrap_or_else(|| "every flow".into());
        self.read_all(
            &self.runs,
            Listing {
                operation: "list_runs",
                what: "run record",
                key: &what,
                filter,
                sort: doc! { "started_at": -1, "_id": -1 },
                skip: None,
                limit: limit_i64(query.limit),
            },
            RunDoc::to_record,
        )
        .await
    }

    async fn save_cluster(
        &self,
        lease: &Lease,
        cluster: &ClusterRecord,
    ) -> Result<RecordId, StoreError> {
        let key = &lease.key;
        let document = encode(
            &ClusterDoc::from_record(cluster).map_err(|m| self.op_error("save_cluster", key, m))?,
        )
        .map_err(|e| self.odm_error("save_cluster", key, e))?;
        if let Some(id) = &cluster.id {
            let id = model::object_id(id).map_err(|m| self.op_error("save_cluster", key, m))?;
            self.replace_fenced(ClusterDoc::COLLECTION, "save_cluster", lease, id, document)
                .await?;
            return Ok(RecordId::new(id.to_hex()));
        }
        let id = ObjectId::new();
        let mut document = document;
        document.insert("_id", id);
        document.insert(FENCE, token_bson(lease.token));
        self.clusters
            .inner
            .insert_one(document)
            .await
            .map_err(|e| self.op_error("save_cluster", key, e))?;
        self.confirm_created(lease, &[(ClusterDoc::COLLECTION, id)])
            .await?;
        Ok(RecordId::new(id.to_hex()))
    }

    async fn list_clusters(&self, key: Option<&FlowKey>) -> Result<Vec<ClusterRecord>, StoreError> {
        let (filter, what) = match key {
            Some(key) => (key_doc(key), key.to_string()),
            None => (Document::new(), "every flow".to_string()),
        };
        self.read_all(
            &self.clusters,
            Listing {
                operation: "list_clusters",
                what: "cluster record",
                key: &what,
                filter,
                sort: doc! { "launched_at": 1, "_id": 1 },
                skip: None,
                limit: None,
            },
            ClusterDoc::to_record,
        )
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
        self.claim_shared(lease, run, cluster, now, ttl).await
    }

    async fn set_cluster_handle(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        handle: &ClusterHandle,
    ) -> Result<(), StoreError> {
        self.set_shared_handle(lease, cluster, handle).await
    }

    async fn release_cluster(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClusterRelease, StoreError> {
        self.release_shared(lease, cluster, now, ttl).await
    }

    async fn forget_cluster(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        backend_id: &str,
    ) -> Result<(), StoreError> {
        self.forget_shared(lease, cluster, backend_id).await
    }

    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        logs::append(self, lines).await
    }

    async fn read_logs(&self, query: &LogQuery) -> Result<Vec<StoredLogLine>, StoreError> {
        logs::read(self, query).await
    }

    async fn last_log_position(&self, key: &FlowKey) -> Result<u64, StoreError> {
        logs::last_position(self, key).await
    }

    async fn purge_logs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        logs::purge(self, before).await
    }

    async fn create_job(&self, job: &TimetableJob) -> Result<TimetableJob, StoreError> {
        self.job_create(job).await
    }

    async fn get_job(&self, key: &JobKey) -> Result<Option<TimetableJob>, StoreError> {
        self.job_get(key).await
    }

    async fn save_job(
        &self,
        lease: &Lease,
        job: &TimetableJob,
    ) -> Result<TimetableJob, StoreError> {
        self.job_save(lease, job).await
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<TimetableJob>, StoreError> {
        self.job_list(query).await
    }

    async fn tally_jobs(
        &self,
        process_name: &str,
        q: TimeQualifier,
    ) -> Result<Vec<JobTally>, StoreError> {
        self.job_tally(process_name, q).await
    }

    /// Counted by the server on the `flow_name, sla_missed_at` index: the
    /// mark is written at run time as a BSON date (never by Synergy, whose
    /// records have none), so "a date since the epoch" is a range on the
    /// index (`reads_use_indexes` explains this filter).
    async fn count_sla_missed(&self, flow_name: &str) -> Result<u64, StoreError> {
        let filter = doc! {
            "flow_name": flow_name,
            "sla_missed_at": { "$gte": bson::DateTime::from_millis(0) },
        };
        self.flows
            .inner
            .count_documents(filter)
            .await
            .map_err(|e| self.op_error("count_sla_missed", format!("flow '{flow_name}'"), e))
    }
}
