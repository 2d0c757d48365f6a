//! `begin_run`: purge steps, save steps, save the flow, insert the run; in
//! one transaction where the server has them, else in the order the crate
//! docs explain, with a test fault hook that stops it after any write.

use crate::model;
use crate::odm::{encode, fence_ok, is_duplicate_key, token_bson, Model, FENCE};
use crate::store::{key_doc, DISARMED};
use crate::{FlowDoc, MongoStore, RunDoc, StepDoc};
use bson::oid::ObjectId;
use flow_core::{FlowKey, FlowRecord, Lease, RecordId, RunRecord, StepRecord, StoreError};
use mongodb::ClientSession;
use std::sync::atomic::Ordering;

impl MongoStore {
    /// Test fault hook: the next `begin_run` stops after `writes` of its
    /// writes and fails, as if the engine died there (in a transaction:
    /// before the commit, so nothing is written).
    #[doc(hidden)]
    pub fn interrupt_next_begin_run_after(&self, writes: usize) {
        self.interrupt.store(writes, Ordering::SeqCst);
    }

    /// Counts a `begin_run` write; fails when the fault hook says so.
    pub(crate) fn count_write(&self, done: &mut usize, key: &FlowKey) -> Result<(), StoreError> {
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
    pub(crate) async fn begin_run_writes(
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
            self.purge_steps(lease, session.as_deref_mut()).await?;
        }
        let mut steps: Vec<StepRecord> = steps
            .iter()
            .map(|step| {
                let mut step = step.clone();
                if step.related_flow.is_none() {
                    step.related_flow = Some(flow_record_id.clone());
                }
                if purge_steps {
                    step.id = None;
                }
                step
            })
            .collect();
        let in_one_write = purge_steps && !steps.is_empty();
        if in_one_write {
            // The purge left no step of the key: one `insert_many`, not a
            // lookup and an insert per step. A step written meanwhile (a
            // duplicate key) sends the rest through the fenced upsert.
            self.count_write(&mut done, key)?;
            let inserted = self
                .insert_steps(lease, &steps, session.as_deref_mut())
                .await?;
            created.extend(inserted.iter().map(|id| (StepDoc::COLLECTION, *id)));
            steps.drain(..inserted.len());
        }
        for step in &steps {
            if !in_one_write {
                self.count_write(&mut done, key)?;
            }
            let document =
                StepDoc::from_record(step).map_err(|m| self.op_error("begin_run", key, m))?;
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
}

impl MongoStore {
    /// Deletes the key's step documents stamped with at most the lease's
    /// token. By their ids, looked up by key: SecantusDB answers a delete
    /// filtered on the key fields and the fence's range with a scan of every
    /// timeperiod's steps of the flow (10 s for 200 steps next to 100,000).
    async fn purge_steps(
        &self,
        lease: &Lease,
        mut session: Option<&mut ClientSession>,
    ) -> Result<(), StoreError> {
        use futures_util::TryStreamExt;
        let key = &lease.key;
        let failed = |e| self.op_error("begin_run (purge)", key, e);
        let action = self
            .steps
            .inner
            .find(key_doc(key))
            .projection(bson::doc! { "_id": 1 });
        let ids: Vec<bson::Bson> = match session.as_deref_mut() {
            Some(s) => {
                let mut cursor = action.session(&mut *s).await.map_err(failed)?;
                let mut ids = Vec::new();
                while let Some(d) = cursor.next(&mut *s).await.transpose().map_err(failed)? {
                    ids.extend(d.get("_id").cloned());
                }
                ids
            }
            None => action
                .await
                .map_err(failed)?
                .try_collect::<Vec<_>>()
                .await
                .map_err(failed)?
                .into_iter()
                .filter_map(|d| d.get("_id").cloned())
                .collect(),
        };
        if ids.is_empty() {
            return Ok(());
        }
        let mut filter = bson::doc! { "_id": { "$in": ids } };
        filter.extend(fence_ok(lease.token));
        let action = self.steps.inner.delete_many(filter);
        match session {
            Some(s) => action.session(s).await,
            None => action.await,
        }
        .map_err(failed)?;
        Ok(())
    }

    /// Inserts `steps` (new documents, stamped with the lease's token) in
    /// order with one `insert_many`; returns the ids of those inserted: all,
    /// or those before the first that already existed.
    async fn insert_steps(
        &self,
        lease: &Lease,
        steps: &[StepRecord],
        session: Option<&mut ClientSession>,
    ) -> Result<Vec<ObjectId>, StoreError> {
        let key = &lease.key;
        let mut documents = Vec::with_capacity(steps.len());
        let mut ids = Vec::with_capacity(steps.len());
        for step in steps {
            let mut document = encode(
                &StepDoc::from_record(step).map_err(|m| self.op_error("begin_run", key, m))?,
            )
            .map_err(|e| self.odm_error("begin_run", key, e))?;
            let id = ObjectId::new();
            document.insert("_id", id);
            document.insert(FENCE, token_bson(lease.token));
            ids.push(id);
            documents.push(document);
        }
        let keys: Vec<_> = documents
            .iter()
            .map(crate::odm::Collection::<StepDoc>::key_filter)
            .collect();
        let action = self.steps.inner.insert_many(documents).ordered(true);
        let result = match session {
            Some(s) => action.session(s).await,
            None => action.await,
        };
        let inserted = match result {
            Ok(_) => ids.len(),
            Err(e) if is_duplicate_key(&e) => first_failed(&e).unwrap_or(0),
            Err(e) => return Err(self.op_error("begin_run (steps)", key, e)),
        };
        for (key, id) in keys.iter().zip(&ids).take(inserted) {
            self.steps.remember(key, *id);
        }
        ids.truncate(inserted);
        Ok(ids)
    }
}

/// The index of the first document an ordered `insert_many` refused (those
/// before it were inserted).
fn first_failed(e: &mongodb::error::Error) -> Option<usize> {
    match &*e.kind {
        mongodb::error::ErrorKind::InsertMany(i) => i
            .write_errors
            .as_ref()
            .and_then(|errors| errors.iter().map(|w| w.index).min()),
        _ => None,
    }
}

pub(crate) async fn begin_run(
    store: &MongoStore,
    lease: &Lease,
    flow: &FlowRecord,
    purge_steps: bool,
    steps: &[StepRecord],
    run: &RunRecord,
) -> Result<(FlowRecord, RunRecord), StoreError> {
    if !store.lease_current(lease, None).await? {
        return Err(store.fenced(lease).await);
    }
    if store.transactions {
        let mut session = store.session(&lease.key, "begin_run").await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            session
                .start_transaction()
                .await
                .map_err(|e| store.op_error("begin_run", &lease.key, e))?;
            let result = match store
                .begin_run_writes(lease, flow, purge_steps, steps, run, Some(&mut session))
                .await
            {
                Ok((flow, run, _)) => match store.lease_current(lease, Some(&mut session)).await {
                    Ok(true) => Ok((flow, run)),
                    Ok(false) => Err(store.fenced(lease).await),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(value) => {
                    if store.commit(&mut session, &lease.key, "begin_run").await? {
                        store
                            .committed
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return Ok(value);
                    }
                }
                Err(e) => {
                    if !store.abort(&mut session, &e, attempt).await {
                        return Err(e);
                    }
                }
            }
            if attempt >= 5 {
                return Err(store.op_error(
                    "begin_run",
                    &lease.key,
                    "the transaction kept conflicting",
                ));
            }
        }
    }
    let (flow, run, created) = store
        .begin_run_writes(lease, flow, purge_steps, steps, run, None)
        .await?;
    store.confirm_created(lease, &created).await?;
    Ok((flow, run))
}
