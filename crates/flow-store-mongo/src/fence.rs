//! Fencing: every document carries the largest lease token that wrote it
//! (see the crate docs); these are the fenced writes and the checks that
//! a lease is still the flow's current one.

use crate::odm::{fence_ok, token_bson, Collection, Model, OdmError, FENCE};
use crate::store::{integer, key_doc, token_i64};
use crate::{ClusterDoc, FlowDoc, MongoStore, RunDoc, StepDoc};
use bson::oid::ObjectId;
use bson::{doc, Document};
use flow_core::{FlowKey, FlowStore, Lease, StoreError};
use mongodb::ClientSession;
use tracing::warn;

impl MongoStore {
    /// The `Fenced` error for `lease`, naming the current holder.
    pub(crate) async fn fenced(&self, lease: &Lease) -> StoreError {
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
    pub(crate) async fn fenced_error(
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
    pub(crate) async fn lease_current(
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
    pub(crate) async fn confirm_created(
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
                warn!(flow = %lease.key, collection, "cannot remove a document written with a lost lease: {}", self.scrub(crate::error::driver_message(&e)));
            }
        }
        Err(self.fenced(lease).await)
    }

    /// Raises the fence stamp of every document of `key` to `token`.
    pub(crate) async fn raise_fences(&self, key: &FlowKey, token: u64) -> Result<(), StoreError> {
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

    /// A fenced upsert outside a transaction, with the created-document
    /// check.
    pub(crate) async fn save_fenced<M: Model>(
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
    pub(crate) async fn replace_fenced(
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
}
