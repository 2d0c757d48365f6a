//! Log lines in `log_recording`, shared with Synergy's scheduler: a batch
//! reserves its positions with one counter bump (two more writes the first
//! time, see [`reserve_positions`]) and lands in one `insertMany`.

use crate::odm::encode;
use crate::store::{integer, key_doc, limit_i64, token_i64, Listing};
use crate::{model, LogDoc, MongoStore};
use bson::{doc, DateTime as BsonDate};
use chrono::{DateTime, Utc};
use flow_core::{FlowKey, LogLine, LogQuery, StoreError, StoredLogLine};
use mongodb::options::ReturnDocument;

pub(crate) async fn append(store: &MongoStore, lines: &[LogLine]) -> Result<(), StoreError> {
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
        let counter = reserve_positions(store, &key, n).await?;
        let first = u64::try_from(counter - n + 1).unwrap_or(1);
        let documents = group
            .iter()
            .enumerate()
            .map(|(i, line)| {
                LogDoc::from_line(line, first + i as u64)
                    .map_err(|m| store.op_error("append_logs", &key, m))
                    .and_then(|d| encode(&d).map_err(|e| store.odm_error("append_logs", &key, e)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        store
            .logs
            .inner
            .insert_many(documents)
            .await
            .map_err(|e| store.op_error("append_logs", &key, e))?;
    }
    Ok(())
}

/// Bumps the flow's position counter by `n` and returns its new value.
///
/// No upsert in the bump: when the first appends of a flow race, an
/// upserting `findAndModify` of the loser is answered with a duplicate-key
/// error by MongoDB, and with *no document* by some wire-compatible servers
/// (SecantusDB) although its increment was applied, so a retry would skip
/// positions and a caller could not know its own. So the bump only updates
/// an existing counter; when there is none, the counter is created with
/// `$setOnInsert` (a racing creator's duplicate-key error means it exists
/// now) and the bump runs again. A bump that matched nothing changed
/// nothing, so retrying it is safe.
async fn reserve_positions(store: &MongoStore, key: &FlowKey, n: i64) -> Result<i64, StoreError> {
    for _ in 0..5 {
        let bumped = store
            .counters
            .inner
            .find_one_and_update(key_doc(key), doc! { "$inc": { "position": n } })
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| store.op_error("append_logs", key, e))?;
        if let Some(counter) = bumped {
            return integer(&counter, "position").ok_or_else(|| {
                store.op_error("append_logs", key, "the position counter is not an integer")
            });
        }
        let created = store
            .counters
            .inner
            .update_one(key_doc(key), doc! { "$setOnInsert": { "position": 0_i64 } })
            .upsert(true)
            .await;
        match created {
            Ok(_) => {}
            Err(e) if crate::odm::is_duplicate_key(&e) => {}
            Err(e) => return Err(store.op_error("append_logs", key, e)),
        }
    }
    Err(store.op_error(
        "append_logs",
        key,
        "the position counter could not be created",
    ))
}

pub(crate) async fn read(
    store: &MongoStore,
    query: &LogQuery,
) -> Result<Vec<StoredLogLine>, StoreError> {
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
    store
        .read_all(
            &store.logs,
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

pub(crate) async fn purge(store: &MongoStore, before: DateTime<Utc>) -> Result<u64, StoreError> {
    // Only this engine's lines (they have a position), never the
    // scheduler's recordings that share the collection.
    let filter = doc! {
        "created_at": { "$lt": BsonDate::from_chrono(before) },
        "position": { "$exists": true },
    };
    let result = store
        .logs
        .inner
        .delete_many(filter)
        .await
        .map_err(|e| store.op_error("purge_logs", "log_recording", e))?;
    Ok(result.deleted_count)
}

pub(crate) async fn last_position(store: &MongoStore, key: &FlowKey) -> Result<u64, StoreError> {
    // The `flow_name_1_timeperiod_1_position_1` index, read backwards
    // for one document (not the counter: it runs ahead of a batch
    // still being inserted).
    let mut filter = key_doc(key);
    filter.insert("position", doc! { "$gt": 0_i64 });
    let last = store
        .read_all(
            &store.logs,
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
