//! A backend's states, mapped onto what the engine needs to know.

use std::fmt;

/// How a finished job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The job did its work.
    Succeeded,
    /// The job failed.
    Failed,
    /// The job was cancelled.
    Cancelled,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        })
    }
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Not finished (queued, starting, running, being cancelled, or a
    /// restartable failure the backend may still retry).
    Running,
    /// Done, with how it ended.
    Finished(Outcome),
}

/// A backend's state names, by meaning. States it does not list are
/// unknown: [`StateTable::phase`] returns `None`, and the cloud crate
/// decides (usually: log it and keep waiting, since clouds add states).
///
/// ```
/// use flow_cloud::{Outcome, Phase, StateTable};
/// // EMR's step states.
/// const EMR_STEP: StateTable = StateTable {
///     running: &["PENDING", "CANCEL_PENDING", "RUNNING"],
///     succeeded: &["COMPLETED"],
///     failed: &["FAILED", "INTERRUPTED"],
///     cancelled: &["CANCELLED"],
/// };
/// assert_eq!(EMR_STEP.phase("RUNNING"), Some(Phase::Running));
/// assert_eq!(EMR_STEP.phase("INTERRUPTED"), Some(Phase::Finished(Outcome::Failed)));
/// assert_eq!(EMR_STEP.phase("SOMETHING_NEW"), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTable {
    /// States of a job not finished yet.
    pub running: &'static [&'static str],
    /// States of a job that succeeded.
    pub succeeded: &'static [&'static str],
    /// States of a job that failed.
    pub failed: &'static [&'static str],
    /// States of a job that was cancelled.
    pub cancelled: &'static [&'static str],
}

impl StateTable {
    /// The phase of `state`, compared exactly (backends are consistent in
    /// their case), or `None` for a state the table does not know.
    pub fn phase(&self, state: &str) -> Option<Phase> {
        if self.running.contains(&state) {
            Some(Phase::Running)
        } else if self.succeeded.contains(&state) {
            Some(Phase::Finished(Outcome::Succeeded))
        } else if self.failed.contains(&state) {
            Some(Phase::Finished(Outcome::Failed))
        } else if self.cancelled.contains(&state) {
            Some(Phase::Finished(Outcome::Cancelled))
        } else {
            None
        }
    }

    /// True if `state` is one of the terminal states.
    pub fn is_terminal(&self, state: &str) -> bool {
        matches!(self.phase(state), Some(Phase::Finished(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dataproc's job states: `ATTEMPT_FAILURE` is a restartable job's
    /// failed attempt, not the end.
    const DATAPROC_JOB: StateTable = StateTable {
        running: &[
            "PENDING",
            "SETUP_DONE",
            "RUNNING",
            "CANCEL_PENDING",
            "CANCEL_STARTED",
            "ATTEMPT_FAILURE",
        ],
        succeeded: &["DONE"],
        failed: &["ERROR"],
        cancelled: &["CANCELLED"],
    };

    #[test]
    fn states_map_onto_phases() {
        assert_eq!(
            DATAPROC_JOB.phase("DONE"),
            Some(Phase::Finished(Outcome::Succeeded))
        );
        assert_eq!(
            DATAPROC_JOB.phase("ERROR"),
            Some(Phase::Finished(Outcome::Failed))
        );
        assert_eq!(
            DATAPROC_JOB.phase("CANCELLED"),
            Some(Phase::Finished(Outcome::Cancelled))
        );
        assert_eq!(DATAPROC_JOB.phase("ATTEMPT_FAILURE"), Some(Phase::Running));
        assert!(!DATAPROC_JOB.is_terminal("CANCEL_PENDING"));
        assert_eq!(DATAPROC_JOB.phase("done"), None);
    }
}
