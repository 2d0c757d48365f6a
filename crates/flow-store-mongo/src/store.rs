//! [`MongoStore`]: the type and the helpers its modules share (its
//! [`FlowStore`](flow_core::FlowStore) implementation is in `records.rs`).

use crate::model::{CounterDoc, LeaseDoc};
use crate::odm::{Collection, Model};
use crate::{ClusterDoc, FlowDoc, LogDoc, RunDoc, StepDoc};
use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};
use flow_core::{FlowKey, Lease, StoreError};
use mongodb::{Client, ClientSession, Database};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

/// The MongoDB [`FlowStore`](flow_core::FlowStore). Cheap to clone (the driver's client is a
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

/// Adds `timeperiod` in `[from, to)` to `filter`, for the bounds given.
pub(crate) fn timeperiod_range(
    filter: &mut Document,
    from: Option<flow_core::Timeperiod>,
    to: Option<flow_core::Timeperiod>,
) {
    let mut range = Document::new();
    if let Some(from) = from {
        range.insert("$gte", from.to_string());
    }
    if let Some(to) = to {
        range.insert("$lt", to.to_string());
    }
    if !range.is_empty() {
        filter.insert("timeperiod", range);
    }
}

pub(crate) fn limit_i64(limit: Option<usize>) -> Option<i64> {
    limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX))
}
