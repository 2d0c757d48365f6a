//! The per-run context every task of a run shares: the graph, the store
//! and the lease its writes carry, the run's id, its cancellation tokens,
//! the observer and the run's log.

use crate::lease::{still_held, Held};
use crate::logging;
use crate::observer::RunObserver;
use flow_core::{ExecutionContext, FlowGraph, FlowStore, Lease, RecordId, StoreError};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, Span};

/// What the dispatcher and step runner share.
pub(crate) struct RunContext {
    pub graph: Arc<FlowGraph>,
    pub context: Arc<ExecutionContext>,
    pub store: Arc<dyn FlowStore>,
    /// Every write of the run carries it (fencing).
    pub lease: Lease,
    /// The run record's id.
    pub run: RecordId,
    pub cancel: CancellationToken,
    /// Fires when this engine lost its lease (taken over by another after a
    /// stall, or a write was fenced): it stops at once, writes nothing more,
    /// and leaves running jobs and clusters to the new holder.
    pub lost: CancellationToken,
    pub grace: Duration,
    /// How long a lease lives without a heartbeat: whether another run
    /// sharing a cluster is still alive.
    pub lease_ttl: Duration,
    pub observer: Option<Arc<dyn RunObserver>>,
    pub flow_span: Span,
    /// The run's log files; a line that cannot be written stops the run.
    pub run_log: Arc<logging::RunLog>,
    /// Clusters (by name) running a job whose outcome is unknown: left up
    /// at the end, recorded, for the next engine to adopt with the job.
    pub keep_up: Mutex<BTreeSet<String>>,
    /// Set when a store write failed without a fence: the lease may have
    /// changed hands unnoticed ([`RunContext::recheck_lease`]).
    pub unsure: AtomicBool,
}

impl RunContext {
    /// Notes that a job on `cluster` was given up with its outcome unknown:
    /// the cluster is left up for the next engine.
    pub(crate) fn outcome_unknown(&self, cluster: &str) {
        self.keep_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cluster.to_string());
    }

    /// The clusters [`RunContext::outcome_unknown`] named.
    pub(crate) fn kept_up(&self) -> BTreeSet<String> {
        self.keep_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Notes a store failure: a fenced write means the lease is lost; any
    /// other may mean it too (see [`RunContext::recheck_lease`]).
    pub(crate) fn store_failed(&self, e: &StoreError) {
        if !e.is_fenced() {
            self.unsure.store(true, Ordering::Relaxed);
        } else if !self.lost.is_cancelled() {
            self.flow_span.in_scope(|| {
                error!("{e}; stopping at once, leaving running jobs to the new holder")
            });
            self.lost.cancel();
        }
    }

    /// Before the run ends its clusters: after a store write failed
    /// without a fence (the new holder's write lock, a partition look like
    /// that), reads whether the lease is still the run's, and fires `lost`
    /// when it is not. Nothing to do, and no store call, otherwise. `Err`:
    /// that cannot be told, so the clusters are not the run's to end.
    pub(crate) async fn recheck_lease(&self) -> Result<(), StoreError> {
        if self.lost.is_cancelled() || !self.unsure.load(Ordering::Relaxed) {
            return Ok(());
        }
        match still_held(&*self.store, &self.lease).await {
            Held::Yes => Ok(()),
            Held::Lost(fenced) => {
                self.store_failed(&fenced);
                Ok(())
            }
            Held::Unknown(e) => Err(e),
        }
    }
}
