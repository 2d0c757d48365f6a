//! Runs started over HTTP: the [`RunLauncher`] the caller provides (it
//! knows the backends), the runs this server started, and the one-run-per-
//! flow-and-timeperiod rule inside this process (across processes the
//! store's lease decides, as for the CLI).

use crate::events::{Hub, RunGuard};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flow_core::{
    FlowGraph, FlowKey, FlowRecord, FlowState, FlowStore, RunMode, StepState, Timeperiod,
};
use flow_engine::{ExecutionEngine, RunObserver};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
}

/// Builds engines and cancels stored flows for the server, so that which
/// cluster and which settings a run uses stays with the program that knows
/// the backends (the `flow` CLI).
#[async_trait]
pub trait RunLauncher: Send + Sync {
    /// An engine for `request`, not started yet.
    fn engine(&self, request: EngineRequest) -> Result<ExecutionEngine, LaunchError>;

    /// For a flow that no engine runs: marks every unfinished step
    /// `state_canceled` and the flow `state_invalid`, under the flow's lease
    /// (refused while an engine holds it), writing through `store`.
    async fn cancel_stored(
        &self,
        key: &FlowKey,
        graph: &FlowGraph,
        store: Arc<dyn FlowStore>,
    ) -> Result<CancelOutcome, LaunchError>;
}

/// Where a run of this server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Asked for; the engine is taking the lease and checking the mode.
    Starting,
    Running,
    /// Cancellation was asked for; the engine is winding down.
    Cancelling,
    Finished,
    /// The engine refused the mode (or the lease); nothing was written.
    Refused,
    /// The engine stopped with an error (e.g. the store failed).
    Failed,
}

/// A run as `/runs` and `run` events show it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub id: String,
    pub flow_name: String,
    pub timeperiod: String,
    pub mode: RunMode,
    pub step: Option<String>,
    pub status: RunStatus,
    /// `"server"`: started by this server, which tracks it; `"flow_record"`:
    /// the latest run as the flow record tells it (any process), for which
    /// the store keeps no history yet.
    pub source: &'static str,
    pub requested_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<FlowState>,
    pub steps_to_run: Option<usize>,
    pub clusters: Option<usize>,
    /// Steps this run ran and how they ended.
    pub steps: Vec<(String, StepState)>,
    pub error: Option<String>,
}

impl RunView {
    /// The latest run as a flow record describes it.
    pub fn from_record(flow: &FlowRecord) -> RunView {
        let running = flow.state == FlowState::InProgress;
        RunView {
            id: format!("record-{}-{}", flow.flow_name, flow.timeperiod),
            flow_name: flow.flow_name.clone(),
            timeperiod: flow.timeperiod.to_string(),
            mode: flow.run_mode,
            step: None,
            status: if running {
                RunStatus::Running
            } else {
                RunStatus::Finished
            },
            source: "flow_record",
            requested_at: None,
            started_at: flow.started_at,
            finished_at: flow.finished_at,
            outcome: (!running).then_some(flow.state),
            steps_to_run: None,
            clusters: None,
            steps: Vec::new(),
            error: None,
        }
    }
}

/// A run of this server that is going on.
struct Active {
    id: String,
    cancel: CancellationToken,
}

/// The runs this server started (the latest [`KEEP`] of them) and those
/// going on, one per flow and timeperiod.
pub struct Registry {
    runs: Mutex<Vec<RunView>>,
    active: Mutex<HashMap<FlowKey, Active>>,
    epoch: String,
    counter: AtomicU64,
}

/// How many finished runs the registry remembers.
const KEEP: usize = 1000;

impl Default for Registry {
    fn default() -> Self {
        Registry {
            runs: Mutex::new(Vec::new()),
            active: Mutex::new(HashMap::new()),
            epoch: format!("{:x}", Utc::now().timestamp_millis()),
            counter: AtomicU64::new(1),
        }
    }
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
            self.registry.release(&self.key);
        }
    }
}

impl Registry {
    /// A new run id: unique across restarts of the server.
    pub fn new_id(&self) -> String {
        format!(
            "{}-{}",
            self.epoch,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Takes the slot of `key` for run `id`, or says which run holds it.
    pub fn reserve(
        &self,
        key: &FlowKey,
        id: &str,
        cancel: CancellationToken,
    ) -> Result<Slot<'_>, String> {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = active.get(key) {
            return Err(a.id.clone());
        }
        active.insert(
            key.clone(),
            Active {
                id: id.to_string(),
                cancel,
            },
        );
        Ok(Slot {
            registry: self,
            key: key.clone(),
            armed: true,
        })
    }

    /// The run going on for `key`, if any: its id and cancel token.
    pub fn active(&self, key: &FlowKey) -> Option<(String, CancellationToken)> {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.get(key).map(|a| (a.id.clone(), a.cancel.clone()))
    }

    /// Every run going on, to cancel at shutdown.
    pub fn all_active(&self) -> Vec<CancellationToken> {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.values().map(|a| a.cancel.clone()).collect()
    }

    pub fn active_count(&self) -> usize {
        self.active.lock().map_or(0, |a| a.len())
    }

    fn release(&self, key: &FlowKey) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.remove(key);
    }

    /// Records (or replaces, by id) a run.
    pub fn record(&self, run: &RunView) {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        match runs.iter_mut().find(|r| r.id == run.id) {
            Some(r) => *r = run.clone(),
            None => {
                runs.push(run.clone());
                if runs.len() > KEEP {
                    runs.remove(0);
                }
            }
        }
    }

    /// Updates run `id` in place and returns the result.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut RunView)) -> Option<RunView> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let run = runs.iter_mut().find(|r| r.id == id)?;
        change(run);
        Some(run.clone())
    }

    /// Runs of `key` this server started, newest first.
    pub fn runs_of(&self, key: &FlowKey) -> Vec<RunView> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let tp = key.timeperiod.to_string();
        runs.iter()
            .rev()
            .filter(|r| r.flow_name == key.flow_name && r.timeperiod == tp)
            .cloned()
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<RunView> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.iter().find(|r| r.id == id).cloned()
    }
}

impl Slot<'_> {
    /// The run owns the slot now; it releases it through
    /// [`Registry::finish`].
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Registry {
    /// The run of `key` ended: frees its slot.
    pub fn finish(&self, key: &FlowKey) {
        self.release(key);
    }
}

/// The engine's progress hooks for a run of this server: the first one
/// (`run_started`, after the lease and the mode's checks) tells the waiting
/// request that the run is accepted.
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

/// What a run task holds while the engine runs.
pub struct RunTask {
    pub hub: Hub,
    pub guard: RunGuard,
}
