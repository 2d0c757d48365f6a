//! Runs started over HTTP: the [`RunLauncher`] the caller provides (it
//! knows the backends), and the one-run-per-flow-and-timeperiod rule inside
//! this process (across processes the store's lease decides, as for the
//! CLI). Run history itself is the store's (`list_runs`).

use async_trait::async_trait;
use flow_core::{
    ClusterFactory, FlowGraph, FlowKey, FlowState, FlowStore, RecordId, RunMode, Timeperiod,
};
use flow_engine::{ExecutionEngine, RunObserver};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the server asks a launcher for: an engine for one flow run.
pub struct EngineRequest {
    pub graph: Arc<FlowGraph>,
    pub timeperiod: Timeperiod,
    pub start_timeperiod: Timeperiod,
    pub end_timeperiod: Timeperiod,
    /// The store the engine must write through (it publishes each write).
    pub store: Arc<dyn FlowStore>,
    /// Progress hooks the engine must call.
    pub observer: Arc<dyn RunObserver>,
}

/// Why a launcher could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LaunchError {
    /// A precondition failed; nothing was written (HTTP 409).
    #[error("{0}")]
    Refused(String),
    /// Settings, backends or the store failed (HTTP 500).
    #[error("{0}")]
    Failed(String),
}

/// The outcome of cancelling a flow that is not running.
#[derive(Debug, Clone, Serialize)]
pub struct CancelOutcome {
    pub state: FlowState,
    /// The steps marked `state_canceled` now.
    pub canceled: Vec<String>,
    /// Jobs a dead run left that could not be cancelled, and similar
    /// warnings.
    pub problems: Vec<String>,
}

/// Builds engines, and lends what cancelling a stored flow needs, for the
/// server, so that which cluster and which settings a run uses stays with
/// the program that knows the backends (the `flow` CLI).
#[async_trait]
pub trait RunLauncher: Send + Sync {
    /// An engine for `request`, not started yet. May do what the program
    /// does before every run (the CLI deletes log lines past their
    /// retention).
    async fn engine(&self, request: EngineRequest) -> Result<ExecutionEngine, LaunchError>;

    /// What [`flow_engine::cancel_flow`] needs to cancel a flow that no
    /// engine runs, as `flow cancel` does: the clusters that reach the jobs
    /// a dead run left, and the lease to take.
    fn cancel_backends(&self) -> CancelBackends;
}

/// The backends and lease settings of a cancel (see
/// [`RunLauncher::cancel_backends`]).
pub struct CancelBackends {
    pub factory: Arc<dyn ClusterFactory>,
    /// The settings values clusters are made with.
    pub values: Arc<flow_core::Settings>,
    /// The lease owner id to take the flow's lease as.
    pub owner: String,
    pub lease_ttl: Duration,
}

/// A run of this server that is going on.
struct Active {
    /// The store's run id, once `begin_run` returned.
    run: Option<RecordId>,
    /// The engine's lease owner id.
    owner: String,
    cancel: CancellationToken,
    cancelling: bool,
}

/// The runs this server has going on, one per flow and timeperiod.
#[derive(Default)]
pub struct Registry {
    active: Mutex<HashMap<FlowKey, Active>>,
}

/// A reservation of a flow run's slot in this server; released on drop
/// unless the run took it over.
pub struct Slot<'a> {
    registry: &'a Registry,
    key: FlowKey,
    armed: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.registry.finish(&self.key);
        }
    }
}

impl Slot<'_> {
    /// The run owns the slot now; it releases it through
    /// [`Registry::finish`].
    pub fn keep(mut self) {
        self.armed = false;
    }
}

/// What the registry knows of a run going on.
#[derive(Debug, Clone)]
pub struct ActiveRun {
    pub run: Option<RecordId>,
    pub owner: String,
    pub cancel: CancellationToken,
    pub cancelling: bool,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FlowKey, Active>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the slot of `key` for an engine with lease owner id `owner`,
    /// or says which run holds it (its id, or its owner while it starts).
    pub fn reserve(
        &self,
        key: &FlowKey,
        owner: &str,
        cancel: CancellationToken,
    ) -> Result<Slot<'_>, String> {
        let mut active = self.lock();
        if let Some(a) = active.get(key) {
            return Err(a
                .run
                .as_ref()
                .map_or_else(|| a.owner.clone(), ToString::to_string));
        }
        active.insert(
            key.clone(),
            Active {
                run: None,
                owner: owner.to_string(),
                cancel,
                cancelling: false,
            },
        );
        Ok(Slot {
            registry: self,
            key: key.clone(),
            armed: true,
        })
    }

    /// The run of `key` began with store id `run`.
    pub fn begun(&self, key: &FlowKey, run: RecordId) {
        if let Some(a) = self.lock().get_mut(key) {
            a.run = Some(run);
        }
    }

    /// The run going on for `key`, if any.
    pub fn active(&self, key: &FlowKey) -> Option<ActiveRun> {
        self.lock().get(key).map(|a| ActiveRun {
            run: a.run.clone(),
            owner: a.owner.clone(),
            cancel: a.cancel.clone(),
            cancelling: a.cancelling,
        })
    }

    /// Asks the run of `key` to stop; returns it, or `None` if none goes on.
    pub fn cancel(&self, key: &FlowKey) -> Option<ActiveRun> {
        let mut active = self.lock();
        let a = active.get_mut(key)?;
        a.cancelling = true;
        a.cancel.cancel();
        Some(ActiveRun {
            run: a.run.clone(),
            owner: a.owner.clone(),
            cancel: a.cancel.clone(),
            cancelling: true,
        })
    }

    /// Every run going on, to cancel at shutdown.
    pub fn all_active(&self) -> Vec<CancellationToken> {
        self.lock().values().map(|a| a.cancel.clone()).collect()
    }

    pub fn active_count(&self) -> usize {
        self.lock().len()
    }

    /// The run of `key` ended: frees its slot.
    pub fn finish(&self, key: &FlowKey) {
        self.lock().remove(key);
    }
}

/// The engine's progress hooks for a run of this server: the first one
/// (`run_started`, after the lease, the mode's checks and `begin_run`)
/// tells the waiting request that the run is accepted.
pub struct Observer {
    pub started: Mutex<Option<tokio::sync::oneshot::Sender<(usize, usize)>>>,
}

impl RunObserver for Observer {
    fn run_started(&self, _flow: &FlowKey, _mode: RunMode, steps_to_run: usize, clusters: usize) {
        if let Some(tx) = self.started.lock().ok().and_then(|mut s| s.take()) {
            let _ = tx.send((steps_to_run, clusters));
        }
    }
}
