//! Which live runs use each shared cluster, on `flow_shared_cluster`: one
//! document per name (`_id` = `KIND/NAME`) holding the
//! [`SharedCluster`] record as JSON text and a `version`. Each call reads
//! the document and the users' leases, applies flow-core's rule, and
//! writes back only if the version is unchanged (an insert for a new name,
//! which the unique `_id` settles between racers); a lost race reads
//! again. So among twelve claimants of a free name one launches.

use crate::store::{integer, token_i64};
use crate::MongoStore;
use bson::{doc, Document};
use chrono::{DateTime, Utc};
use flow_core::{
    ClusterClaim, ClusterHandle, ClusterRelease, ClusterUser, FlowStore, Lease, RecordId,
    SharedCluster, SharedClusterKey, StoreError,
};
use std::time::Duration;

/// The collection's name.
pub(crate) const COLLECTION: &str = "flow_shared_cluster";

/// How many lost races a call retries before it gives up.
const ATTEMPTS: usize = 50;

/// What a call does to the record.
enum Change {
    Keep,
    Put(Box<SharedCluster>),
    Delete,
}

fn doc_id(key: &SharedClusterKey) -> String {
    format!("{}/{}", key.kind, key.name)
}

impl MongoStore {
    /// Reads the record of `key` and the liveness of its users, lets
    /// `decide` choose, and writes the change if no one else changed the
    /// record meanwhile (else tries again).
    async fn change_shared<T>(
        &self,
        operation: &'static str,
        lease: &Lease,
        key: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
        mut decide: impl FnMut(
            Option<SharedCluster>,
            &dyn Fn(&ClusterUser) -> bool,
        ) -> Result<(T, Change), StoreError>,
    ) -> Result<T, StoreError> {
        let coll = self.db.collection::<Document>(COLLECTION);
        let id = doc_id(key);
        for _ in 0..ATTEMPTS {
            if !self.lease_current(lease, None).await? {
                return Err(self.fenced(lease).await);
            }
            let found = coll
                .find_one(doc! { "_id": &id })
                .await
                .map_err(|e| self.op_error(operation, key, e))?;
            let (existing, version) = match &found {
                Some(d) => {
                    let text = d
                        .get_str("record")
                        .map_err(|e| self.corrupt("shared cluster record", key, e.to_string()))?;
                    let record: SharedCluster = serde_json::from_str(text)
                        .map_err(|e| self.corrupt("shared cluster record", key, e.to_string()))?;
                    (Some(record), integer(d, "version").unwrap_or(0))
                }
                None => (None, 0),
            };
            let mut live = Vec::new();
            for user in existing
                .as_ref()
                .map(SharedCluster::named_users)
                .unwrap_or_default()
            {
                let user_lease = self.get_lease(&user.key()).await?;
                if user.is_live(user_lease.as_ref(), now, ttl) {
                    live.push(user.clone());
                }
            }
            let existed = existing.is_some();
            let (answer, change) = decide(existing, &|u| live.contains(u))?;
            let written = match change {
                Change::Keep => true,
                Change::Put(record) => {
                    let text = serde_json::to_string(&record)
                        .map_err(|e| self.op_error(operation, key, e))?;
                    if existed {
                        let updated = coll
                            .update_one(
                                doc! { "_id": &id, "version": version },
                                doc! { "$set": { "record": text, "version": version + 1 } },
                            )
                            .await
                            .map_err(|e| self.op_error(operation, key, e))?;
                        updated.matched_count == 1
                    } else {
                        match coll
                            .insert_one(doc! { "_id": &id, "record": text, "version": 1_i64 })
                            .await
                        {
                            Ok(_) => true,
                            Err(e) if crate::odm::is_duplicate_key(&e) => false,
                            Err(e) => return Err(self.op_error(operation, key, e)),
                        }
                    }
                }
                Change::Delete => {
                    if existed {
                        coll.delete_one(doc! { "_id": &id, "version": version })
                            .await
                            .map_err(|e| self.op_error(operation, key, e))?
                            .deleted_count
                            == 1
                    } else {
                        true
                    }
                }
            };
            if written {
                return Ok(answer);
            }
        }
        Err(self.op_error(
            operation,
            key,
            format!("the record kept changing under {ATTEMPTS} attempts"),
        ))
    }

    pub(crate) async fn claim_shared(
        &self,
        lease: &Lease,
        run: &RecordId,
        key: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClusterClaim, StoreError> {
        let me = ClusterUser::new(&lease.key, run.clone(), lease.token);
        self.change_shared("claim_cluster", lease, key, now, ttl, |existing, live| {
            let (claim, record) = SharedCluster::claim(existing, key, &me, live);
            Ok((
                claim,
                record.map_or(Change::Keep, |r| Change::Put(Box::new(r))),
            ))
        })
        .await
    }

    pub(crate) async fn set_shared_handle(
        &self,
        lease: &Lease,
        key: &SharedClusterKey,
        handle: &ClusterHandle,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        self.change_shared(
            "set_cluster_handle",
            lease,
            key,
            now,
            Duration::ZERO,
            |existing, _| match existing {
                Some(mut record)
                    if record.launcher.key() == lease.key
                        && token_i64(record.launcher.token) == token_i64(lease.token) =>
                {
                    record.handle = Some(handle.clone());
                    Ok(((), Change::Put(Box::new(record))))
                }
                _ => Err(self.op_error(
                    "set_cluster_handle",
                    key,
                    "this run is not the one launching it",
                )),
            },
        )
        .await
    }

    pub(crate) async fn release_shared(
        &self,
        lease: &Lease,
        key: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClusterRelease, StoreError> {
        let me = ClusterUser::new(&lease.key, RecordId::new(""), lease.token);
        self.change_shared("release_cluster", lease, key, now, ttl, |existing, live| {
            Ok(match existing {
                None => (ClusterRelease::Last, Change::Keep),
                Some(record) => {
                    let (answer, record) = record.release(&me, live);
                    (
                        answer,
                        record.map_or(Change::Delete, |r| Change::Put(Box::new(r))),
                    )
                }
            })
        })
        .await
    }

    pub(crate) async fn forget_shared(
        &self,
        lease: &Lease,
        key: &SharedClusterKey,
        backend_id: &str,
    ) -> Result<(), StoreError> {
        self.change_shared(
            "forget_cluster",
            lease,
            key,
            Utc::now(),
            Duration::ZERO,
            |existing, _| {
                let names_it =
                    existing.is_some_and(|r| r.handle.is_some_and(|h| h.backend_id == backend_id));
                Ok((
                    (),
                    if names_it {
                        Change::Delete
                    } else {
                        Change::Keep
                    },
                ))
            },
        )
        .await
    }
}
