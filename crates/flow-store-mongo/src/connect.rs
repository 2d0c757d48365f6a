//! Opening the store: connecting, telling a replica set (transactions)
//! from a standalone server, and creating the indexes.

use crate::error::{command_code, driver_message, first_call_failed, is_auth_failure};
use crate::odm::Collection;
use crate::store::DISARMED;
use crate::{
    model, redact_uri, settings, validate_database, validate_uri, InvalidSetting, MongoError,
    MongoOptions, MongoStore, Transactions,
};
use bson::{doc, Document};
use futures_util::TryStreamExt;
use mongodb::options::ClientOptions;
use mongodb::{Client, IndexModel};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use tracing::{debug, warn};

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
            message: scrub(driver_message(&e)),
        })?;
        let db = client.database(&options.database);
        // The first call on a pooled connection is where the driver logs in.
        let hello = db.run_command(doc! { "hello": 1 }).await.map_err(|e| {
            first_call_failed(
                is_auth_failure(&e),
                user.as_deref(),
                &hosts,
                options.server_selection_timeout,
                scrub(driver_message(&e)),
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
            committed: Arc::new(AtomicU64::new(0)),
        };
        store.ensure_indexes().await?;
        debug!(hosts = %store.hosts, transactions, "MongoDB store ready");
        Ok(store)
    }

    async fn ensure_indexes(&self) -> Result<(), MongoError> {
        for (collection, indexes) in model::all_indexes() {
            for index in indexes {
                let keys = index.keys.clone();
                let setup = |e: mongodb::error::Error| MongoError::Setup {
                    hosts: self.hosts.clone(),
                    operation: "creating indexes",
                    message: format!("{collection} {keys}: {}", self.scrub(driver_message(&e))),
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

#[cfg(test)]
mod tests {
    use super::*;

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
