//! Why the engine did not run a flow, or stopped.

use crate::logging::LogDirectoryError;
use chrono::{DateTime, Utc};
use flow_core::{FlowGraph, FlowKey, FlowState, StoreError};

/// Why a run mode was refused. A refusal changes nothing in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("unknown step '{step}' (steps: {known})")]
    /// The step is not in the flow.
    UnknownStep {
        /// The name as given.
        step: String,
        /// The flow's steps.
        known: String,
    },
    #[error("step '{step}' is blocked: its dependencies {} are not processed", missing.join(", "))]
    /// `run_one`: the step's dependencies are not complete.
    Blocked {
        /// The step.
        step: String,
        /// Dependencies that are not processed (or noop).
        missing: Vec<String>,
    },
    /// `recover`: the flow has never run.
    #[error("there is nothing to recover: the flow has never run")]
    NeverRan,
    #[error("there is nothing to recover: the flow is {state}, not failed")]
    /// `recover`: the flow has not failed (it is complete or still running).
    NotFailed {
        /// Its state.
        state: FlowState,
    },
    #[error("{mode} is not a mode that runs steps")]
    /// The mode does not run steps (`Rollback`).
    NotARunMode {
        /// The mode given.
        mode: flow_core::RunMode,
    },
    /// `flow rollback`: the flow has never run.
    #[error("there is nothing to roll back: the flow has never run")]
    NothingToRollBack,
    /// `flow rollback`: the step is not processed (or noop).
    #[error("step '{step}' is {state}: only a processed (or noop) step can be rolled back")]
    NotProcessed {
        /// The step.
        step: String,
        /// Its state.
        state: flow_core::StepState,
    },
    /// `flow rollback` without cascade: the step has processed dependants.
    #[error("step '{step}' has processed dependants ({}): roll them back first, or pass --cascade to roll them back with it", dependants.join(", "))]
    ProcessedDependants {
        /// The step.
        step: String,
        /// Its processed dependants.
        dependants: Vec<String>,
    },
}

impl Refusal {
    /// `step` is not in `graph`; the message lists the steps that are.
    pub fn unknown_step(graph: &FlowGraph, step: &str) -> Refusal {
        Refusal::UnknownStep {
            step: step.to_string(),
            known: graph
                .steps()
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

fn humantime_ttl(ttl: std::time::Duration) -> String {
    let secs = ttl.as_secs_f64();
    if secs >= 1.0 {
        format!("{secs}s")
    } else {
        format!("{}ms", ttl.as_millis())
    }
}

fn holder_text(holder: &Option<String>) -> String {
    match holder {
        Some(owner) => format!(" to {owner}"),
        None => String::new(),
    }
}

/// An engine failure. A flow whose step failed is not an error: it is a
/// [`RunReport`](crate::RunReport) whose flow state is `invalid`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("refused to run {flow}: {reason}")]
    /// The mode's precondition failed; nothing was written.
    Refused {
        /// The flow.
        flow: FlowKey,
        /// Why.
        reason: Refusal,
    },
    /// Another live engine holds the flow's lease.
    #[error("flow {flow} is already being run by {owner} (last heartbeat {heartbeat_at}); if that engine died, its lease turns stale {} after that heartbeat", humantime_ttl(*.ttl))]
    LeaseHeld {
        /// The flow.
        flow: FlowKey,
        /// The holder's owner id (host, pid, random part).
        owner: String,
        /// The holder's latest heartbeat.
        heartbeat_at: DateTime<Utc>,
        /// How long a lease lives without a heartbeat.
        ttl: std::time::Duration,
    },
    /// Another engine took the lease over (this one stalled past the
    /// lease's time to live): this one stopped at once and wrote nothing
    /// more; the new holder adopts its running jobs and clusters.
    #[error("lost the run lease of {flow}{}: stopped without writing anything more; running jobs and clusters are left to the new holder", holder_text(.holder))]
    LeaseLost {
        /// The flow.
        flow: FlowKey,
        /// Who holds it now, if anyone.
        holder: Option<String>,
    },
    /// The run's logs could not be written; nothing ran and nothing was
    /// stored.
    #[error("refused to run {flow}: {source}")]
    Logs {
        /// The flow.
        flow: FlowKey,
        /// Why.
        #[source]
        source: LogDirectoryError,
    },
    /// Jobs a dead run left running could not be stopped, so the run
    /// started nothing (it would have run them twice at once) and wrote
    /// nothing: the records still name the jobs for the next try.
    #[error("refused to run {flow}: cannot stop the jobs a dead run left running, so nothing was started: {}", .problems.join("; "))]
    OrphansLeft {
        /// The flow.
        flow: FlowKey,
        /// One line per job not stopped, naming its step and handle.
        problems: Vec<String>,
    },
    /// The store failed; the run stopped where it was (`recover` goes on from there).
    #[error("store failed for flow {flow}: {source}")]
    Store {
        /// The flow.
        flow: FlowKey,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}
