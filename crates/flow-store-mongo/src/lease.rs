//! Run leases on `flow_lease` (see the crate docs): one conditional
//! upsert takes a lease, the token only grows.

use crate::model::LeaseDoc;
use crate::odm::{self, decode};
use crate::store::{integer, key_doc, millis, token_i64};
use crate::MongoStore;
use bson::{doc, Bson};
use chrono::{DateTime, Utc};
use flow_core::{FlowKey, FlowStore, Lease, LeaseInfo, LeaseOutcome, StoreError};
use mongodb::options::{FindOneAndUpdateOptions, ReturnDocument};
use std::time::Duration;

pub(crate) async fn acquire(
    store: &MongoStore,
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
        let result = store
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
                        store.corrupt("lease", key, "token is not a positive integer".into())
                    })?;
                store.raise_fences(key, token).await?;
                store.raise_job_fence(key, token).await?;
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
            Err(e) => return Err(store.op_error("acquire_lease", key, e)),
        }
        if let Some(info) = store.get_lease(key).await? {
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
    Err(store.op_error(
        "acquire_lease",
        key,
        "the lease kept changing hands; try again",
    ))
}

pub(crate) async fn renew(
    store: &MongoStore,
    lease: &Lease,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let mut filter = key_doc(&lease.key);
    filter.insert("owner", &lease.owner);
    filter.insert("token", token_i64(lease.token));
    let result = store
        .leases
        .inner
        .update_one(
            filter,
            doc! { "$set": { "heartbeat_at_ms": now.timestamp_millis() } },
        )
        .await
        .map_err(|e| store.op_error("renew_lease", &lease.key, e))?;
    Ok(result.matched_count == 1)
}

pub(crate) async fn release(store: &MongoStore, lease: &Lease) -> Result<(), StoreError> {
    let mut filter = key_doc(&lease.key);
    filter.insert("owner", &lease.owner);
    filter.insert("token", token_i64(lease.token));
    store
        .leases
        .inner
        .update_one(filter, doc! { "$set": { "owner": Bson::Null } })
        .await
        .map_err(|e| store.op_error("release_lease", &lease.key, e))?;
    Ok(())
}

pub(crate) async fn get(
    store: &MongoStore,
    key: &FlowKey,
) -> Result<Option<LeaseInfo>, StoreError> {
    let found = store
        .leases
        .inner
        .find_one(key_doc(key))
        .await
        .map_err(|e| store.op_error("get_lease", key, e))?;
    found
        .map(|d| {
            let lease: LeaseDoc = decode(d).map_err(|m| store.corrupt("lease", key, m))?;
            Ok(LeaseInfo {
                owner: lease.owner.clone(),
                token: lease.token(),
                acquired_at: millis(lease.acquired_at_ms),
                heartbeat_at: millis(lease.heartbeat_at_ms),
            })
        })
        .transpose()
}
