//! Taking a flow's run lease: one call for the engine's run modes and for
//! cancelling a flow, which each say in their own error what a held lease
//! means; and reading whether a run still holds it.

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

/// Whether a run still holds its lease, as read from the store.
pub(crate) enum Held {
    Yes,
    /// Another acquisition took it: the fence error its writes now get.
    Lost(StoreError),
    /// The read failed.
    Unknown(StoreError),
}

/// Reads whether `lease` is still the flow's current lease: for a run
/// whose write failed without a fence (a busy store, the new holder's
/// write lock, a partition), which may mean the lease changed hands, before
/// it ends anything another engine may have adopted.
pub(crate) async fn still_held(store: &dyn FlowStore, lease: &Lease) -> Held {
    match store.get_lease(&lease.key).await {
        // The token grows with every acquisition, by anyone: while it is
        // the run's, so is the lease.
        Ok(Some(held)) if held.token == lease.token => Held::Yes,
        Ok(held) => Held::Lost(StoreError::Fenced {
            key: lease.key.to_string(),
            token: lease.token,
            holder: held.and_then(|h| h.owner),
        }),
        Err(e) => Held::Unknown(e),
    }
}
