//! Taking a flow's run lease: one call for the engine's run modes and for
//! cancelling a flow, which each say in their own error what a held lease
//! means.

use chrono::{DateTime, Utc};
use flow_core::{FlowKey, FlowStore, Lease, LeaseOutcome, StoreError};
use std::time::Duration;

/// Why the lease was not taken.
pub(crate) enum NotTaken {
    /// The store failed.
    Store(StoreError),
    /// Another live engine holds it.
    Held {
        /// The holder's owner id.
        owner: String,
        /// The holder's latest heartbeat.
        heartbeat_at: DateTime<Utc>,
    },
}

/// Takes the lease of `key` for `owner` now, unless another owner's lease
/// had a heartbeat within `ttl`.
pub(crate) async fn take_lease(
    store: &dyn FlowStore,
    key: &FlowKey,
    owner: &str,
    ttl: Duration,
) -> Result<Lease, NotTaken> {
    match store
        .acquire_lease(key, owner, Utc::now(), ttl)
        .await
        .map_err(NotTaken::Store)?
    {
        LeaseOutcome::Acquired(lease) => Ok(lease),
        LeaseOutcome::HeldBy {
            owner,
            heartbeat_at,
        } => Err(NotTaken::Held {
            owner,
            heartbeat_at,
        }),
    }
}
