//! [`MongoStore`]: the type, its [`FlowStore`] implementation (flow, step,
//! run and cluster records here; leases, `begin_run` and logs in their own
//! modules), and the helpers they share.

use crate::model::{CounterDoc, LeaseDoc};
use crate::odm::{decode, encode, token_bson, Collection, Model, FENCE};
use crate::{begin_run, lease, logs, model, ClusterDoc, FlowDoc, LogDoc, RunDoc, StepDoc};
use async_trait::async_trait;
use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};
use flow_core::{
    ClusterRecord, FlowKey, FlowQuery, FlowRecord, FlowStore, Lease, LeaseInfo, LeaseOutcome,
    LogLine, LogQuery, RecordId, RunQuery, RunRecord, StepRecord, StoreError, StoredLogLine,
};
use mongodb::{Client, ClientSession, Database};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

/// The MongoDB [`FlowStore`]. Cheap to clone (the driver's client is a
/// handle on one connection pool).
#[derive(Clone)]
pub struct MongoStore {
    pub(crate) client: Client,
    pub(crate) db: Database,
    pub(crate) flows: Collection<FlowDoc>,
    pub(crate) steps: Collection<StepDoc>,
    pub(crate) leases: Collection<LeaseDoc>,
    pub(crate) runs: Collection<RunDoc>,
    pub(crate) clusters: Collection<ClusterDoc>,
    pub(crate) logs: Collection<LogDoc>,
    pub(crate) counters: Collection<CounterDoc>,
    pub(crate) transactions: bool,
    pub(crate) hosts: String,
    pub(crate) password: Option<String>,
    /// Test fault hook: stop the next `begin_run` after this many writes.
    pub(crate) interrupt: Arc<AtomicUsize>,
    /// `begin_run` transactions committed through this handle and its
    /// clones ([`MongoStore::transactions_committed`]).
    pub(crate) committed: Arc<AtomicU64>,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("hosts", &self.hosts)
            .field("database", &self.db.name())
            .field("transactions", &self.transactions)
            .finish_non_exhaustive()
    }
}

pub(crate) const DISARMED: usize = usize::MAX;

impl MongoStore {
    /// True when `begin_run` and `save_flow_and_steps` run in transactions
    /// (false: the ordered fallback).
    pub fn uses_transactions(&self) -> bool {
        self.transactions
    }

    /// How many `begin_run` transactions this handle (and its clones)
    /// committed: what shows a test that the transactional path ran, not
    /// just that the server offered it.
    pub fn transactions_committed(&self) -> u64 {
        self.committed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The database, for tests and tools that load fixtures.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The writes of `save_flow_and_steps` inside a transaction.
    pub(crate) async fn flow_and_steps_writes(
        &self,
        lease: &Lease,
        flow_doc: &FlowDoc,
        step_docs: &[StepDoc],
        session: &mut ClientSession,
    ) -> Result<ObjectId, StoreError> {
        for document in step_docs {
            if let Err(e) = self
                .steps
                .upsert_fenced(document, lease.token, ObjectId::new(), Some(&mut *session))
                .await
            {
                return Err(self.fenced_error("save_flow_and_steps", lease, e).await);
            }
        }
        let id = match self
            .flows
            .upsert_fenced(flow_doc, lease.token, ObjectId::new(), Some(&mut *session))
            .await
        {
            Ok(u) => u.id,
            Err(e) => return Err(self.fenced_error("save_flow_and_steps", lease, e).await),
        };
        if !self.lease_current(lease, Some(session)).await? {
            return Err(self.fenced(lease).await);
        }
        Ok(id)
    }

    pub(crate) async fn read_all<M: Model, R>(
        &self,
        collection: &Collection<M>,
        listing: Listing<'_>,
        convert: impl Fn(&M) -> Result<R, String>,
    ) -> Result<Vec<R>, StoreError> {
        let Listing {
            operation,
            what,
            key,
            filter,
            sort,
            skip,
            limit,
        } = listing;
        let found = collection
            .find_all(filter, sort, skip, limit)
            .await
            .map_err(|e| self.op_error(operation, key, e))?;
        found
            .into_iter()
            .map(|r| match r {
                Ok(m) => convert(&m).map_err(|message| self.corrupt(what, key, message)),
                Err((d, message)) => Err(self.corrupt(
                    what,
                    key,
                    format!(
                        "{message} in {}",
                        d.get("_id").map_or_else(String::new, |id| id.to_string())
                    ),
                )),
            })
            .collect()
    }
}

/// An integer field, whatever width the server stored it in (`$inc` on a
/// missing field may create an int32 on some servers).
pub(crate) fn integer(document: &Document, field: &str) -> Option<i64> {
    match document.get(field)? {
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

pub(crate) fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// What `read_all` reads, and how to name it in errors.
pub(crate) struct Listing<'a> {
    pub(crate) operation: &'static str,
    pub(crate) what: &'static str,
    pub(crate) key: &'a str,
    pub(crate) filter: Document,
    pub(crate) sort: Document,
    pub(crate) skip: Option<u64>,
    pub(crate) limit: Option<i64>,
}

pub(crate) fn token_i64(token: u64) -> i64 {
    i64::try_from(token).unwrap_or(i64::MAX)
}

pub(crate) fn key_doc(key: &FlowKey) -> Document {
    doc! { "flow_name": &key.flow_name, "timeperiod": key.timeperiod.to_string() }
}

pub(crate) fn limit_i64(limit: Option<usize>) -> Option<i64> {
    limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX))
}

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
        let mut range = Document::new();
        if let Some(from) = query.from {
            range.insert("$gte", from.to_string());
        }
        if let Some(to) = query.to {
            range.insert("$lt", to.to_string());
        }
        if !range.is_empty() {
            filter.insert("timeperiod", range);
        }
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
}
