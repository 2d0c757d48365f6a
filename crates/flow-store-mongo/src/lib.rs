//! A [`FlowStore`] on MongoDB, for teams that run flows from several hosts
//! and for Synergy Flow deployments that keep their state there.
//!
//! [`MongoStore`] reads and writes Synergy Flow's `flow` and `step`
//! collections with Synergy's field names, state strings, ObjectIds and BSON
//! dates (see `model.rs`), so a record written by either engine reads back
//! in the other; this engine's fields are additive. Its own collections are
//! `flow_lease` (run leases), `flow_run` (run history), `flow_cluster`
//! (clusters a run launched), `log_recording` (log lines, shared with
//! Synergy's scheduler) and `flow_log_counter` (log positions). Unique
//! indexes are created at start-up; creating one that exists is a no-op.
//! Those on `log_recording` are partial (documents with a `position`), so
//! Synergy's recordings, which have none of the key fields, are outside
//! them.
//!
//! Several engines on several hosts share one database; the lease is the
//! only coordination:
//!
//! - **Lease**: one conditional `findOneAndUpdate` with `upsert` on
//!   `flow_lease` (free, stale, or ours → take it and `$inc` the token). Two
//!   engines upserting a missing lease at once both try an insert; the
//!   unique index lets one through and the other gets a duplicate-key error
//!   (or, from some wire-protocol servers, no document), answered as "held
//!   by" the winner after reading it. Exactly one wins, and the token only
//!   grows (a release keeps it). Lease times are int64 milliseconds.
//! - **Fencing**, the same with or without transactions: every flow, step,
//!   run and cluster document carries `fence_token`, the largest lease token
//!   that wrote it. `acquire_lease` raises the stamp of every document of
//!   the flow to the new token (`$max`, Synergy's documents included)
//!   before it returns, so once the new holder can read anything, no write
//!   of the old holder lands. A write with token `T` is one conditional
//!   `findOneAndReplace` (key and `fence_token <= T`; the replacement
//!   stamps `T`); when it matches nothing, a read tells a newer stamp
//!   ([`StoreError::Fenced`], nothing written) from a missing document,
//!   which is then inserted (the unique key index settles a race). A write
//!   that *creates* a document re-reads the lease afterwards and, if the
//!   token moved on, deletes what it created and fails with `Fenced`. A
//!   write that landed before the raise is one the new holder then reads.
//! - **`begin_run`** (purge steps, save steps, save the flow, insert the
//!   run) runs in one transaction where the server supports them (a replica
//!   set or a sharded cluster: `hello` reports `setName` or `isdbgrid`).
//!   Elsewhere (a standalone server) the writes go in this order: purge,
//!   steps (pointing at the flow's id, chosen before the flow is written),
//!   flow, run. Interrupted anywhere, the flow record shows the new run only
//!   after its steps are in place, so it is never next to step records of
//!   the purged run; repeating `begin_run` (the next engine does, after the
//!   lease turns stale) completes it. The conformance suite interrupts it
//!   after each write ([`MongoStore::interrupt_next_begin_run_after`]).
//! - **Log lines**: a batch bumps the flow's counter once (`$inc` by the
//!   batch's length) and inserts its lines with those positions in one
//!   `insertMany`. Positions grow in the order batches reserve them; a
//!   reader paging by position while two engines append to the *same* flow
//!   at the same instant could see the later reservation's insert first
//!   (one engine writes a flow's lines in order, so this needs a lease
//!   takeover in progress).
//!
//! Written so that it also runs on `nx-27017`, the wire-protocol server the
//! tests use where MongoDB cannot be installed: no `$not`, `$and` spelled
//! out next to `$or` in `findAndModify`, replacements rather than `$set`
//! for documents with dates (it stores `$set` dates as text), and run ids
//! in log lines as hex text (it matches ObjectIds only in `_id`). It
//! accepts `partialFilterExpression` and drops it; its unique indexes (in
//! SQLite) never collide on missing fields, so the partial indexes on
//! `log_recording` matter on MongoDB only.
//!
//! What it is not: a migration tool (it reads older Synergy documents as
//! they are and writes the current shape), nor a client of `mongodb+srv://`
//! URIs (no DNS SRV resolution in this build: list the hosts).
#![warn(missing_docs)]

mod detached;
mod model;
mod odm;
mod settings;

pub use detached::DetachedMongoStore;

pub use model::{ClusterDoc, FlowDoc, LogDoc, RunDoc, StepDoc};

/// The `bson` crate the document types ([`FlowDoc`], ...) are made of,
/// re-exported so callers use the same version.
pub use bson;
/// The driver [`MongoStore::database`] hands out, re-exported so callers
/// use the same version.
pub use mongodb;
pub use settings::{
    redact_uri, validate_database, validate_uri, InvalidSetting, MongoOptions, Transactions,
    DEFAULT_SERVER_SELECTION_TIMEOUT,
};

use async_trait::async_trait;
use bson::oid::ObjectId;
use bson::{doc, Bson, DateTime as BsonDate, Document};
use chrono::{DateTime, Utc};
use flow_core::{
    ClusterRecord, FlowKey, FlowQuery, FlowRecord, FlowStore, Lease, LeaseInfo, LeaseOutcome,
    LogLine, LogQuery, RecordId, RunQuery, RunRecord, StepRecord, StoreError, StoredLogLine,
};
use futures_util::TryStreamExt;
use model::{CounterDoc, LeaseDoc};
use mongodb::options::{ClientOptions, FindOneAndUpdateOptions, ReturnDocument};
use mongodb::{Client, ClientSession, Database, IndexModel};
use odm::{decode, encode, fence_ok, token_bson, Collection, Model, OdmError, FENCE};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MongoError {
    /// A setting (URI or database name) is invalid.
    #[error("[store] {0}")]
    Setting(#[from] InvalidSetting),
    /// No server answered within the server selection timeout.
    #[error("cannot reach MongoDB at {hosts} within {timeout:?}: {message}")]
    Unreachable {
        /// The hosts of the URI (without credentials).
        hosts: String,
        /// The server selection timeout that passed.
        timeout: Duration,
        /// The driver's reason.
        message: String,
    },
    /// The server refused the URI's credentials.
    #[error("authentication failed {} on {hosts}: {message}", user_text(.user))]
    Authentication {
        /// The URI's user name, if it has one (never the password).
        user: Option<String>,
        /// The hosts of the URI (without credentials).
        hosts: String,
        /// The driver's reason.
        message: String,
    },
    /// A start-up call (ping, `hello`, index creation) failed.
    #[error("MongoDB at {hosts}: {operation} failed: {message}")]
    Setup {
        /// The hosts of the URI (without credentials).
        hosts: String,
        /// The call, e.g. `create index`.
        operation: &'static str,
        /// The driver's reason.
        message: String,
    },
}

fn user_text(user: &Option<String>) -> String {
    match user {
        Some(user) => format!("for user {user}"),
        None => "(no user name in the URI)".to_string(),
    }
}

/// True when the driver says the server refused the credentials: its
/// authentication error, or a command failing with `AuthenticationFailed`
/// (code 18).
fn is_auth_failure(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, mongodb::error::ErrorKind::Authentication { .. })
        || command_code(e) == Some(18)
}

/// The error for a failed first call to the server: a refused login when
/// the driver says so (`auth_failed`), else an unreachable server.
/// `message` is the driver's, already scrubbed of the password.
fn first_call_failed(
    auth_failed: bool,
    user: Option<&str>,
    hosts: &str,
    timeout: Duration,
    message: String,
) -> MongoError {
    if auth_failed {
        MongoError::Authentication {
            user: user.map(str::to_string),
            hosts: hosts.to_string(),
            message,
        }
    } else {
        MongoError::Unreachable {
            hosts: hosts.to_string(),
            timeout,
            message,
        }
    }
}

/// For a unique index limited by a partial filter (this engine's key index
/// on `log_recording`): the name of an existing unique index on the same
/// keys without a filter, which earlier versions created and which stops
/// Synergy's recordings (all with the null key) from being added. Never an
/// index that is not unique, such as Synergy's TTL index.
fn unfiltered_predecessor(requested: &IndexModel, existing: &[IndexModel]) -> Option<String> {
    let options = requested.options.as_ref()?;
    if options.unique != Some(true) || options.partial_filter_expression.is_none() {
        return None;
    }
    existing
        .iter()
        .find(|i| {
            i.keys == requested.keys
                && i.options.as_ref().is_some_and(|o| {
                    o.unique == Some(true) && o.partial_filter_expression.is_none()
                })
        })
        .and_then(|i| i.options.as_ref()?.name.clone())
}

/// The MongoDB [`FlowStore`]. Cheap to clone (the driver's client is a
/// handle on one connection pool).
#[derive(Clone)]
pub struct MongoStore {
    client: Client,
    db: Database,
    flows: Collection<FlowDoc>,
    steps: Collection<StepDoc>,
    leases: Collection<LeaseDoc>,
    runs: Collection<RunDoc>,
    clusters: Collection<ClusterDoc>,
    logs: Collection<LogDoc>,
    counters: Collection<CounterDoc>,
    transactions: bool,
    hosts: String,
    password: Option<String>,
    /// Test fault hook: stop the next `begin_run` after this many writes.
    interrupt: Arc<AtomicUsize>,
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

const DISARMED: usize = usize::MAX;

impl MongoStore {
    /// Connects, checks that a server answers within
    /// `options.server_selection_timeout`, finds out whether it supports
    /// transactions, and creates the indexes that are missing.
    pub async fn connect(options: &MongoOptions) -> Result<MongoStore, MongoError> {
        let hosts = validate_uri(&options.uri)?.join(", ");
        validate_database(&options.database)?;
        let password = settings::password(&options.uri);
        let scrub = |text: String| match &password {
            Some(p) => text.replace(p.as_str(), "***"),
            None => text,
        };
        let mut client_options = ClientOptions::parse(&options.uri).await.map_err(|e| {
            MongoError::Setting(InvalidSetting {
                what: "uri",
                message: format!("'{}': {}", redact_uri(&options.uri), scrub(e.to_string())),
            })
        })?;
        client_options.server_selection_timeout = Some(options.server_selection_timeout);
        client_options.connect_timeout = Some(options.server_selection_timeout);
        client_options
            .app_name
            .get_or_insert_with(|| "flow".to_string());
        let user = client_options
            .credential
            .as_ref()
            .and_then(|c| c.username.clone());
        let client = Client::with_options(client_options).map_err(|e| MongoError::Setup {
            hosts: hosts.clone(),
            operation: "creating the client",
            message: scrub(e.to_string()),
        })?;
        let db = client.database(&options.database);
        // The first call on a pooled connection is where the driver logs in.
        let hello = db.run_command(doc! { "hello": 1 }).await.map_err(|e| {
            first_call_failed(
                is_auth_failure(&e),
                user.as_deref(),
                &hosts,
                options.server_selection_timeout,
                scrub(e.to_string()),
            )
        })?;
        let replicated =
            hello.contains_key("setName") || hello.get_str("msg").is_ok_and(|m| m == "isdbgrid");
        let transactions = options.transactions == Transactions::Auto && replicated;
        let store = MongoStore {
            flows: Collection::new(&db),
            steps: Collection::new(&db),
            leases: Collection::new(&db),
            runs: Collection::new(&db),
            clusters: Collection::new(&db),
            logs: Collection::new(&db),
            counters: Collection::new(&db),
            client,
            db,
            transactions,
            hosts,
            password,
            interrupt: Arc::new(AtomicUsize::new(DISARMED)),
        };
        store.ensure_indexes().await?;
        debug!(hosts = %store.hosts, transactions, "MongoDB store ready");
        Ok(store)
    }

    /// True when `begin_run` and `save_flow_and_steps` run in transactions
    /// (false: the ordered fallback).
    pub fn uses_transactions(&self) -> bool {
        self.transactions
    }

    /// The database, for tests and tools that load fixtures.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Test fault hook: the next `begin_run` stops after `writes` of its
    /// writes and fails, as if the engine died there (in a transaction:
    /// before the commit, so nothing is written).
    #[doc(hidden)]
    pub fn interrupt_next_begin_run_after(&self, writes: usize) {
        self.interrupt.store(writes, Ordering::SeqCst);
    }

    async fn ensure_indexes(&self) -> Result<(), MongoError> {
        for (collection, indexes) in model::all_indexes() {
            for index in indexes {
                let keys = index.keys.clone();
                let setup = |e: mongodb::error::Error| MongoError::Setup {
                    hosts: self.hosts.clone(),
                    operation: "creating indexes",
                    message: format!("{collection} {keys}: {}", self.scrub(e.to_string())),
                };
                let target = self.db.collection::<Document>(collection);
                match target.create_index(index.clone()).await {
                    Ok(_) => {}
                    // An index on the same keys exists with other options or
                    // another name (e.g. Synergy's TTL index on created_at):
                    // it serves as well, unless it is an earlier version's
                    // unique index without the partial filter, which
                    // Synergy's recordings cannot live with: replace it.
                    Err(e) if matches!(command_code(&e), Some(85 | 86)) => {
                        let existing: Vec<IndexModel> = target
                            .list_indexes()
                            .await
                            .map_err(setup)?
                            .try_collect()
                            .await
                            .map_err(setup)?;
                        match unfiltered_predecessor(&index, &existing) {
                            Some(name) => {
                                warn!(collection, %keys, name, "replacing this engine's earlier index, which lacks the partial filter");
                                target.drop_index(&name).await.map_err(setup)?;
                                target.create_index(index).await.map_err(setup)?;
                            }
                            None => {
                                debug!(collection, %keys, "keeping the existing index: {e}")
                            }
                        }
                    }
                    Err(e) => return Err(setup(e)),
                }
            }
        }
        Ok(())
    }

    fn scrub(&self, text: String) -> String {
        match &self.password {
            Some(p) => text.replace(p.as_str(), "***"),
            None => text,
        }
    }

    fn op_error(
        &self,
        operation: &'static str,
        key: impl ToString,
        e: impl ToString,
    ) -> StoreError {
        StoreError::Operation {
            operation,
            key: key.to_string(),
            message: self.scrub(e.to_string()),
        }
    }

    fn odm_error(&self, operation: &'static str, key: &FlowKey, e: OdmError) -> StoreError {
        match e {
            OdmError::Fenced => StoreError::Operation {
                operation,
                key: key.to_string(),
                message: "refused by a newer lease".into(),
            },
            OdmError::Driver(e) => self.op_error(operation, key, e),
            OdmError::Encode(m) => self.op_error(operation, key, m),
        }
    }

    /// The `Fenced` error for `lease`, naming the current holder.
    async fn fenced(&self, lease: &Lease) -> StoreError {
        let holder = self
            .get_lease(&lease.key)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.owner);
        StoreError::Fenced {
            key: lease.key.to_string(),
            token: lease.token,
            holder,
        }
    }

    /// Maps an ODM failure of a fenced write to a store error.
    async fn fenced_error(
        &self,
        operation: &'static str,
        lease: &Lease,
        e: OdmError,
    ) -> StoreError {
        match e {
            OdmError::Fenced => self.fenced(lease).await,
            e => self.odm_error(operation, &lease.key, e),
        }
    }

    /// True while `lease`'s token is the flow's current one.
    async fn lease_current(
        &self,
        lease: &Lease,
        session: Option<&mut ClientSession>,
    ) -> Result<bool, StoreError> {
        let action = self.leases.inner.find_one(key_doc(&lease.key));
        let found = match session {
            Some(s) => action.session(s).await,
            None => action.await,
        }
        .map_err(|e| self.op_error("checking the lease", &lease.key, e))?;
        Ok(found
            .and_then(|d| integer(&d, "token"))
            .is_some_and(|t| t == token_i64(lease.token)))
    }

    /// After a write created documents: if the lease moved on meanwhile,
    /// removes them (those still stamped with this token) and fails.
    async fn confirm_created(
        &self,
        lease: &Lease,
        created: &[(&'static str, ObjectId)],
    ) -> Result<(), StoreError> {
        if created.is_empty() || self.lease_current(lease, None).await? {
            return Ok(());
        }
        for (collection, id) in created {
            let filter = doc! { "_id": id, FENCE: token_bson(lease.token) };
            if let Err(e) = self
                .db
                .collection::<Document>(collection)
                .delete_one(filter)
                .await
            {
                warn!(flow = %lease.key, collection, "cannot remove a document written with a lost lease: {}", self.scrub(e.to_string()));
            }
        }
        Err(self.fenced(lease).await)
    }

    /// Raises the fence stamp of every document of `key` to `token`.
    async fn raise_fences(&self, key: &FlowKey, token: u64) -> Result<(), StoreError> {
        let update = doc! { "$max": { FENCE: token_bson(token) } };
        for collection in [
            FlowDoc::COLLECTION,
            StepDoc::COLLECTION,
            RunDoc::COLLECTION,
            ClusterDoc::COLLECTION,
        ] {
            self.db
                .collection::<Document>(collection)
                .update_many(key_doc(key), update.clone())
                .await
                .map_err(|e| self.op_error("raising the fence", key, e))?;
        }
        Ok(())
    }

    /// Counts a `begin_run` write; fails when the fault hook says so.
    fn count_write(&self, done: &mut usize, key: &FlowKey) -> Result<(), StoreError> {
        if self
            .interrupt
            .compare_exchange(*done, DISARMED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Err(StoreError::Operation {
                operation: "begin_run",
                key: key.to_string(),
                message: format!("interrupted after {done} write(s) by the test fault hook"),
            });
        }
        *done += 1;
        Ok(())
    }

    /// The writes of `begin_run` (see the crate docs for their order).
    /// Returns the flow, the run, and the documents it created.
    async fn begin_run_writes(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        purge_steps: bool,
        steps: &[StepRecord],
        run: &RunRecord,
        mut session: Option<&mut ClientSession>,
    ) -> Result<(FlowRecord, RunRecord, Vec<(&'static str, ObjectId)>), StoreError> {
        let key = &lease.key;
        let token = lease.token;
        let mut done = 0;
        let mut created = Vec::new();
        // The flow's id, known before its steps are written.
        let existing = {
            let action = self.flows.inner.find_one(key_doc(key));
            match session.as_deref_mut() {
                Some(s) => action.session(s).await,
                None => action.await,
            }
        }
        .map_err(|e| self.op_error("begin_run", key, e))?
        .and_then(|d| d.get_object_id("_id").ok());
        let flow_id = match (existing, &flow.id) {
            (Some(id), _) => id,
            (None, Some(id)) => {
                model::object_id(id).map_err(|m| self.op_error("begin_run", key, m))?
            }
            (None, None) => ObjectId::new(),
        };
        let flow_record_id = RecordId::new(flow_id.to_hex());

        if purge_steps {
            self.count_write(&mut done, key)?;
            let mut filter = key_doc(key);
            filter.extend(fence_ok(token));
            let action = self.steps.inner.delete_many(filter);
            match session.as_deref_mut() {
                Some(s) => action.session(s).await,
                None => action.await,
            }
            .map_err(|e| self.op_error("begin_run (purge)", key, e))?;
        }
        for step in steps {
            self.count_write(&mut done, key)?;
            let mut step = step.clone();
            if step.related_flow.is_none() {
                step.related_flow = Some(flow_record_id.clone());
            }
            if purge_steps {
                step.id = None;
            }
            let document =
                StepDoc::from_record(&step).map_err(|m| self.op_error("begin_run", key, m))?;
            let upserted = self
                .steps
                .upsert_fenced(&document, token, ObjectId::new(), session.as_deref_mut())
                .await
                .map_err(|e| ("begin_run (steps)", e));
            match upserted {
                Ok(u) if u.inserted => created.push((StepDoc::COLLECTION, u.id)),
                Ok(_) => {}
                Err((op, e)) => return Err(self.fenced_error(op, lease, e).await),
            }
        }
        self.count_write(&mut done, key)?;
        let mut flow = flow.clone();
        flow.id = Some(flow_record_id);
        let document =
            FlowDoc::from_record(&flow).map_err(|m| self.op_error("begin_run", key, m))?;
        match self
            .flows
            .upsert_fenced(&document, token, flow_id, session.as_deref_mut())
            .await
        {
            Ok(u) => {
                if u.inserted {
                    created.push((FlowDoc::COLLECTION, u.id));
                }
                flow.id = Some(RecordId::new(u.id.to_hex()));
            }
            Err(e) => return Err(self.fenced_error("begin_run (flow)", lease, e).await),
        }
        self.count_write(&mut done, key)?;
        let run_id = ObjectId::new();
        let mut run = run.clone();
        run.id = Some(RecordId::new(run_id.to_hex()));
        let mut document =
            encode(&RunDoc::from_record(&run).map_err(|m| self.op_error("begin_run", key, m))?)
                .map_err(|e| self.odm_error("begin_run", key, e))?;
        document.insert(FENCE, token_bson(token));
        let action = self.runs.inner.insert_one(document);
        match session {
            Some(s) => action.session(s).await,
            None => action.await,
        }
        .map_err(|e| self.op_error("begin_run (run)", key, e))?;
        created.push((RunDoc::COLLECTION, run_id));
        Ok((flow, run, created))
    }

    /// A session for a transaction.
    async fn session(
        &self,
        key: &FlowKey,
        operation: &'static str,
    ) -> Result<ClientSession, StoreError> {
        self.client
            .start_session()
            .await
            .map_err(|e| self.op_error(operation, key, e))
    }

    /// Commits; `Ok(false)` when the whole transaction should be retried.
    async fn commit(
        &self,
        session: &mut ClientSession,
        key: &FlowKey,
        operation: &'static str,
    ) -> Result<bool, StoreError> {
        for _ in 0..5 {
            match session.commit_transaction().await {
                Ok(()) => return Ok(true),
                Err(e) if e.contains_label(mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT) => {
                    continue
                }
                Err(e) if e.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR) => {
                    return Ok(false)
                }
                Err(e) => return Err(self.op_error(operation, key, e)),
            }
        }
        Err(self.op_error(operation, key, "the commit's result stayed unknown"))
    }

    /// After a failed transaction body: aborts; true when it is worth
    /// running again (a write conflict with another engine).
    async fn abort(&self, session: &mut ClientSession, e: &StoreError, attempt: usize) -> bool {
        let _ = session.abort_transaction().await;
        attempt < 5
            && matches!(e, StoreError::Operation { message, .. }
                if message.contains("WriteConflict") || message.contains("TransientTransactionError"))
    }

    /// A fenced upsert outside a transaction, with the created-document
    /// check.
    async fn save_fenced<M: Model>(
        &self,
        collection: &Collection<M>,
        operation: &'static str,
        lease: &Lease,
        document: &M,
    ) -> Result<ObjectId, StoreError> {
        let upserted = match collection
            .upsert_fenced(document, lease.token, ObjectId::new(), None)
            .await
        {
            Ok(u) => u,
            Err(e) => return Err(self.fenced_error(operation, lease, e).await),
        };
        if upserted.inserted {
            self.confirm_created(lease, &[(M::COLLECTION, upserted.id)])
                .await?;
        }
        Ok(upserted.id)
    }

    /// Replaces the document `id` if its fence allows; `Fenced` if it exists
    /// with a newer stamp.
    async fn replace_fenced(
        &self,
        collection: &'static str,
        operation: &'static str,
        lease: &Lease,
        id: ObjectId,
        mut document: Document,
    ) -> Result<(), StoreError> {
        document.remove("_id");
        document.insert(FENCE, token_bson(lease.token));
        let mut filter = doc! { "_id": id };
        filter.extend(fence_ok(lease.token));
        let coll = self.db.collection::<Document>(collection);
        let result = coll
            .replace_one(filter, document)
            .await
            .map_err(|e| self.op_error(operation, &lease.key, e))?;
        if result.matched_count == 1 {
            return Ok(());
        }
        let exists = coll
            .find_one(doc! { "_id": id })
            .await
            .map_err(|e| self.op_error(operation, &lease.key, e))?
            .is_some();
        if exists {
            Err(self.fenced(lease).await)
        } else {
            Err(self.op_error(
                operation,
                &lease.key,
                format!("no {collection} document with id {id}"),
            ))
        }
    }

    /// The writes of `save_flow_and_steps` inside a transaction.
    async fn flow_and_steps_writes(
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

    fn corrupt(&self, what: &'static str, key: impl ToString, message: String) -> StoreError {
        StoreError::Corrupt {
            what,
            key: key.to_string(),
            message,
        }
    }

    async fn read_all<M: Model, R>(
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
fn integer(document: &Document, field: &str) -> Option<i64> {
    match document.get(field)? {
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// What `read_all` reads, and how to name it in errors.
struct Listing<'a> {
    operation: &'static str,
    what: &'static str,
    key: &'a str,
    filter: Document,
    sort: Document,
    skip: Option<u64>,
    limit: Option<i64>,
}

fn token_i64(token: u64) -> i64 {
    i64::try_from(token).unwrap_or(i64::MAX)
}

fn key_doc(key: &FlowKey) -> Document {
    doc! { "flow_name": &key.flow_name, "timeperiod": key.timeperiod.to_string() }
}

/// The server's error code of a command error.
fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

fn limit_i64(limit: Option<usize>) -> Option<i64> {
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
        let cutoff = chrono::TimeDelta::from_std(ttl)
            .ok()
            .and_then(|ttl| now.checked_sub_signed(ttl))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        // `$and` spelled out: some wire-protocol servers mis-evaluate
        // top-level fields next to `$or` in findAndModify.
        let filter = doc! {
            "$and": [
                key_doc(key),
                { "$or": [
                    { "owner": Bson::Null },
                    { "owner": owner },
                    { "heartbeat_at_ms": { "$lte": cutoff.timestamp_millis() } },
                ] },
            ]
        };
        let now_ms = now.timestamp_millis();
        let update = doc! {
            "$set": {
                "flow_name": &key.flow_name,
                "timeperiod": key.timeperiod.to_string(),
                "owner": owner,
                "acquired_at_ms": now_ms,
                "heartbeat_at_ms": now_ms,
            },
            "$inc": { "token": 1_i64 },
        };
        let options = FindOneAndUpdateOptions::builder()
            .upsert(true)
            .return_document(ReturnDocument::After)
            .build();
        for _ in 0..5 {
            let result = self
                .leases
                .inner
                .find_one_and_update(filter.clone(), update.clone())
                .with_options(options.clone())
                .await;
            match result {
                Ok(Some(document)) => {
                    let token = integer(&document, "token")
                        .and_then(|t| u64::try_from(t).ok())
                        .ok_or_else(|| {
                            self.corrupt("lease", key, "token is not a positive integer".into())
                        })?;
                    self.raise_fences(key, token).await?;
                    return Ok(LeaseOutcome::Acquired(Lease {
                        key: key.clone(),
                        owner: owner.to_string(),
                        token,
                    }));
                }
                // The unique key index refused the upsert's insert: the
                // lease exists and is held (some wire-protocol servers
                // answer with no document instead of the duplicate-key
                // error).
                Ok(None) => {}
                Err(e) if odm::is_duplicate_key(&e) => {}
                Err(e) => return Err(self.op_error("acquire_lease", key, e)),
            }
            if let Some(info) = self.get_lease(key).await? {
                match info.owner {
                    Some(holder) if info.heartbeat_at > cutoff && holder != owner => {
                        return Ok(LeaseOutcome::HeldBy {
                            owner: holder,
                            heartbeat_at: info.heartbeat_at,
                        })
                    }
                    // Released or stale in between: try again.
                    _ => continue,
                }
            }
        }
        Err(self.op_error(
            "acquire_lease",
            key,
            "the lease kept changing hands; try again",
        ))
    }

    async fn renew_lease(&self, lease: &Lease, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut filter = key_doc(&lease.key);
        filter.insert("owner", &lease.owner);
        filter.insert("token", token_i64(lease.token));
        let result = self
            .leases
            .inner
            .update_one(
                filter,
                doc! { "$set": { "heartbeat_at_ms": now.timestamp_millis() } },
            )
            .await
            .map_err(|e| self.op_error("renew_lease", &lease.key, e))?;
        Ok(result.matched_count == 1)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut filter = key_doc(&lease.key);
        filter.insert("owner", &lease.owner);
        filter.insert("token", token_i64(lease.token));
        self.leases
            .inner
            .update_one(filter, doc! { "$set": { "owner": Bson::Null } })
            .await
            .map_err(|e| self.op_error("release_lease", &lease.key, e))?;
        Ok(())
    }

    async fn get_lease(&self, key: &FlowKey) -> Result<Option<LeaseInfo>, StoreError> {
        let found = self
            .leases
            .inner
            .find_one(key_doc(key))
            .await
            .map_err(|e| self.op_error("get_lease", key, e))?;
        found
            .map(|d| {
                let lease: LeaseDoc = decode(d).map_err(|m| self.corrupt("lease", key, m))?;
                Ok(LeaseInfo {
                    owner: lease.owner.clone(),
                    token: lease.token(),
                    acquired_at: millis(lease.acquired_at_ms),
                    heartbeat_at: millis(lease.heartbeat_at_ms),
                })
            })
            .transpose()
    }

    async fn begin_run(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        purge_steps: bool,
        steps: &[StepRecord],
        run: &RunRecord,
    ) -> Result<(FlowRecord, RunRecord), StoreError> {
        if !self.lease_current(lease, None).await? {
            return Err(self.fenced(lease).await);
        }
        if self.transactions {
            let mut session = self.session(&lease.key, "begin_run").await?;
            let mut attempt = 0;
            loop {
                attempt += 1;
                session
                    .start_transaction()
                    .await
                    .map_err(|e| self.op_error("begin_run", &lease.key, e))?;
                let result = match self
                    .begin_run_writes(lease, flow, purge_steps, steps, run, Some(&mut session))
                    .await
                {
                    Ok((flow, run, _)) => match self.lease_current(lease, Some(&mut session)).await
                    {
                        Ok(true) => Ok((flow, run)),
                        Ok(false) => Err(self.fenced(lease).await),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                match result {
                    Ok(value) => {
                        if self.commit(&mut session, &lease.key, "begin_run").await? {
                            return Ok(value);
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
                        "begin_run",
                        &lease.key,
                        "the transaction kept conflicting",
                    ));
                }
            }
        }
        let (flow, run, created) = self
            .begin_run_writes(lease, flow, purge_steps, steps, run, None)
            .await?;
        self.confirm_created(lease, &created).await?;
        Ok((flow, run))
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
        // One counter bump and one insertMany per flow in the batch, in the
        // order the flows first appear.
        let mut groups: Vec<(FlowKey, Vec<&LogLine>)> = Vec::new();
        for line in lines {
            let key = FlowKey::new(line.flow_name.clone(), line.timeperiod);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push(line),
                None => groups.push((key, vec![line])),
            }
        }
        for (key, group) in groups {
            let n = group.len() as i64;
            let counter = self
                .counters
                .inner
                .find_one_and_update(key_doc(&key), doc! { "$inc": { "position": n } })
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await
                .map_err(|e| self.op_error("append_logs", &key, e))?
                .and_then(|d| integer(&d, "position"))
                .ok_or_else(|| {
                    self.op_error("append_logs", &key, "the position counter returned nothing")
                })?;
            let first = u64::try_from(counter - n + 1).unwrap_or(1);
            let documents = group
                .iter()
                .enumerate()
                .map(|(i, line)| {
                    LogDoc::from_line(line, first + i as u64)
                        .map_err(|m| self.op_error("append_logs", &key, m))
                        .and_then(|d| {
                            encode(&d).map_err(|e| self.odm_error("append_logs", &key, e))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.logs
                .inner
                .insert_many(documents)
                .await
                .map_err(|e| self.op_error("append_logs", &key, e))?;
        }
        Ok(())
    }

    async fn read_logs(&self, query: &LogQuery) -> Result<Vec<StoredLogLine>, StoreError> {
        let mut filter = key_doc(&query.key);
        filter.insert("position", doc! { "$gt": query.after.map_or(0, token_i64) });
        if let Some(step) = &query.step {
            filter.insert("step_name", step);
        }
        if let Some(run) = &query.run {
            let run = model::object_id(run).map_err(|_| StoreError::InvalidId {
                what: "run",
                id: run.to_string(),
                message: "ids of a MongoDB store are ObjectIds (24 hexadecimal digits)".into(),
            })?;
            filter.insert("run", run.to_hex());
        }
        self.read_all(
            &self.logs,
            Listing {
                operation: "read_logs",
                what: "log line",
                key: &query.key.to_string(),
                filter,
                sort: doc! { "position": 1 },
                skip: None,
                limit: limit_i64(Some(query.limit)),
            },
            LogDoc::to_line,
        )
        .await
    }

    async fn last_log_position(&self, key: &FlowKey) -> Result<u64, StoreError> {
        // The `flow_name_1_timeperiod_1_position_1` index, read backwards
        // for one document (not the counter: it runs ahead of a batch
        // still being inserted).
        let mut filter = key_doc(key);
        filter.insert("position", doc! { "$gt": 0_i64 });
        let last = self
            .read_all(
                &self.logs,
                Listing {
                    operation: "last_log_position",
                    what: "log line",
                    key: &key.to_string(),
                    filter,
                    sort: doc! { "position": -1 },
                    skip: None,
                    limit: Some(1),
                },
                LogDoc::to_line,
            )
            .await?;
        Ok(last.first().map_or(0, |line| line.position))
    }

    async fn purge_logs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        // Only this engine's lines (they have a position), never the
        // scheduler's recordings that share the collection.
        let filter = doc! {
            "created_at": { "$lt": BsonDate::from_chrono(before) },
            "position": { "$exists": true },
        };
        let result = self
            .logs
            .inner
            .delete_many(filter)
            .await
            .map_err(|e| self.op_error("purge_logs", "log_recording", e))?;
        Ok(result.deleted_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_login_names_the_user_and_the_hosts() {
        let e = first_call_failed(
            true,
            Some("flow"),
            "db1:27017, db2:27017",
            Duration::from_secs(5),
            "SCRAM failure: Authentication failed.".into(),
        );
        assert!(matches!(e, MongoError::Authentication { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "authentication failed for user flow on db1:27017, db2:27017: \
             SCRAM failure: Authentication failed."
        );
        let e = first_call_failed(true, None, "db1:27017", Duration::from_secs(5), "x".into());
        assert_eq!(
            e.to_string(),
            "authentication failed (no user name in the URI) on db1:27017: x"
        );
    }

    #[test]
    fn any_other_first_failure_is_an_unreachable_server() {
        let e = first_call_failed(
            false,
            Some("flow"),
            "db1:27017",
            Duration::from_secs(5),
            "Server selection timeout".into(),
        );
        assert!(matches!(e, MongoError::Unreachable { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("cannot reach MongoDB at db1:27017"),
            "{e}"
        );
    }

    #[test]
    fn authentication_failed_command_errors_count_as_refused_logins() {
        // The driver's own authentication error kind cannot be built outside
        // it (the nx-27017 test gets a real one); a server's
        // `AuthenticationFailed` command error (code 18) can.
        let reply = doc! { "ok": 0, "code": 18, "codeName": "AuthenticationFailed", "errmsg": "Authentication failed." };
        let command: mongodb::error::CommandError =
            bson::deserialize_from_document(reply).expect("a command error");
        let e = mongodb::error::Error::from(mongodb::error::ErrorKind::Command(command));
        assert!(is_auth_failure(&e), "{e}");
        let reply =
            doc! { "ok": 0, "code": 13, "codeName": "Unauthorized", "errmsg": "not authorized" };
        let command: mongodb::error::CommandError =
            bson::deserialize_from_document(reply).expect("a command error");
        let e = mongodb::error::Error::from(mongodb::error::ErrorKind::Command(command));
        assert!(!is_auth_failure(&e), "{e}");
    }

    fn listed(keys: Document, name: &str, unique: bool, filter: Option<Document>) -> IndexModel {
        IndexModel::builder()
            .keys(keys)
            .options(
                mongodb::options::IndexOptions::builder()
                    .name(name.to_string())
                    .unique(unique.then_some(true))
                    .partial_filter_expression(filter)
                    .build(),
            )
            .build()
    }

    #[test]
    fn only_an_earlier_unfiltered_key_index_is_replaced() {
        let (_, ours) = model::all_indexes()
            .into_iter()
            .find(|(c, _)| *c == "log_recording")
            .expect("log_recording indexes");
        let (key_index, created_at) = (&ours[0], &ours[1]);
        let keys = doc! { "flow_name": 1, "timeperiod": 1, "position": 1 };
        let synergy = [
            listed(doc! { "_id": 1 }, "_id_", false, None),
            listed(
                doc! { "parent_object_id": 1 },
                "parent_object_id_1",
                true,
                None,
            ),
            listed(doc! { "created_at": 1 }, "created_at_1", false, None),
        ];
        let mut earlier = synergy.to_vec();
        earlier.push(listed(
            keys.clone(),
            "flow_name_1_timeperiod_1_position_1",
            true,
            None,
        ));
        assert_eq!(
            unfiltered_predecessor(key_index, &earlier).as_deref(),
            Some("flow_name_1_timeperiod_1_position_1")
        );
        // Synergy's own (TTL) index on created_at stays.
        assert_eq!(unfiltered_predecessor(created_at, &earlier), None);
        assert_eq!(unfiltered_predecessor(key_index, &synergy), None);
        // Already filtered, or another engine's index on other options: kept.
        let mut filtered = synergy.to_vec();
        filtered.push(listed(
            keys.clone(),
            "k",
            true,
            Some(doc! { "position": { "$exists": true } }),
        ));
        assert_eq!(unfiltered_predecessor(key_index, &filtered), None);
        let mut not_unique = synergy.to_vec();
        not_unique.push(listed(keys, "k", false, None));
        assert_eq!(unfiltered_predecessor(key_index, &not_unique), None);
    }

    #[test]
    fn the_log_indexes_cover_only_this_engines_lines() {
        let (_, indexes) = model::all_indexes()
            .into_iter()
            .find(|(c, _)| *c == "log_recording")
            .expect("log_recording indexes");
        assert_eq!(indexes.len(), 2);
        for index in indexes {
            let options = index.options.expect("options");
            assert_eq!(
                options.partial_filter_expression,
                Some(doc! { "position": { "$exists": true } }),
                "{:?}",
                index.keys
            );
        }
        // Nowhere else: every other collection is this engine's or holds
        // Synergy documents with the key fields.
        for (collection, indexes) in model::all_indexes() {
            if collection == "log_recording" {
                continue;
            }
            for index in indexes {
                let filter = index.options.and_then(|o| o.partial_filter_expression);
                assert_eq!(filter, None, "{collection} {:?}", index.keys);
            }
        }
    }
}

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
