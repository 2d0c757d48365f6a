//! [`RunObserver`]: hooks a caller gives the engine to show a run's
//! progress, and the [`DefinitionChange`] they may be told about.

use crate::{EngineError, RunReport};
use flow_core::{FlowKey, RunMode, StepState};
use std::time::Duration;

/// Hooks for showing progress (the CLI's progress bar). Called from the
/// engine's tasks; keep them quick.
pub trait RunObserver: Send + Sync {
    /// A mode took the lease and is about to run `steps_to_run` steps on `clusters` clusters.
    fn run_started(&self, _flow: &FlowKey, _mode: RunMode, _steps_to_run: usize, _clusters: usize) {
    }
    /// The attempt a step is about to start began at `since`: now for a
    /// fresh attempt, earlier when it goes on with a dead run's attempt
    /// (adopting its job). Called just before `step_started`, so an
    /// observer can name one attempt the same in every engine that runs it.
    fn step_attempt(&self, _step: &str, _since: chrono::DateTime<chrono::Utc>) {}
    /// A step started on `cluster`.
    fn step_started(&self, _step: &str, _cluster: &str) {}
    /// A job a dead run started was taken over instead of started again.
    fn job_adopted(&self, _step: &str, _job: &flow_core::JobHandle) {}
    /// A step reached its final state after `elapsed`.
    fn step_finished(&self, _step: &str, _state: StepState, _elapsed: Duration) {}
    /// The flow's definition differs from the one its stored run used
    /// (called before the mode's preconditions are checked, so also before
    /// a refusal).
    fn definition_changed(&self, _flow: &FlowKey, _change: &DefinitionChange) {}
    /// The flow's `sla` passed with the run not ended (called once per flow
    /// and timeperiod, after the miss was recorded on the flow record).
    fn sla_missed(
        &self,
        _flow: &FlowKey,
        _run: &flow_core::RecordId,
        _mode: RunMode,
        _deadline: chrono::DateTime<chrono::Utc>,
    ) {
    }
    /// A mode ended: its report, or why it stopped (a lost lease, a store
    /// failure, the lease held by another run). Not called for a mode
    /// refused before it took the lease.
    fn run_finished(
        &self,
        _flow: &FlowKey,
        _mode: RunMode,
        _result: &Result<RunReport, EngineError>,
    ) {
    }
}

/// Joins a run's span to a trace (a trace exporter: flow-signals' `otel`
/// module), so that a `recover` continues the trace of the run it
/// recovers. The engine knows traces only as the W3C `traceparent`
/// strings it keeps on the flow record.
pub trait RunTracer: Send + Sync {
    /// The run's `flow` span was opened, before anything ran under it.
    /// `continued` is the context the flow record kept from the run a
    /// `recover` continues. Returns the span's own context, for the flow
    /// record to keep.
    fn run_span(&self, span: &tracing::Span, continued: Option<&str>) -> Option<String>;
}

/// How the flow definition differs from the one the stored run used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionChange {
    /// Steps of the definition that the stored run never had: `recover`,
    /// `run-from` and `run-one` treat them as never run.
    pub added: Vec<String>,
    /// Steps the stored run had that the definition no longer has: never
    /// run again; their records are kept, an unfinished one closed as
    /// `canceled`.
    pub removed: Vec<String>,
    /// The dependencies differ too (or only they do).
    pub rewired: bool,
}

impl std::fmt::Display for DefinitionChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the flow definition changed since its stored run")?;
        if !self.added.is_empty() {
            write!(
                f,
                "; added step(s) {}: they count as never run, so recover, run-from and run-one run them like unfinished steps",
                self.added.join(", ")
            )?;
        }
        if !self.removed.is_empty() {
            write!(
                f,
                "; removed step(s) {}: never run again; their records are kept (an unfinished one is closed as state_canceled, 'removed from the flow definition')",
                self.removed.join(", ")
            )?;
        }
        if self.rewired && self.added.is_empty() && self.removed.is_empty() {
            f.write_str("; its dependencies differ: this run follows the new ones")?;
        }
        Ok(())
    }
}
