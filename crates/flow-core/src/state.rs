//! States of flows, steps and action sets, and the run modes.
//!
//! The serialized strings are the ones Synergy Flow stores, so records stay
//! readable by both engines.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored string.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the stored string.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// The state of a whole flow run.
    FlowState {
        /// Created, not started yet.
        Embryo => "state_embryo",
        /// A run is at work on it (or died at work: `recover` takes over).
        InProgress => "state_in_progress",
        /// Every step completed.
        Processed => "state_processed",
        /// Every step completed and none had anything to process.
        Noop => "state_noop",
        /// A step failed (or the run could not go on): `recover` after fixing the cause.
        Invalid => "state_invalid",
    }
}

string_enum! {
    /// The state of one step.
    StepState {
        /// Not started yet.
        Embryo => "state_embryo",
        /// Running (or its engine died while it ran).
        InProgress => "state_in_progress",
        /// Done; dependants may run.
        Processed => "state_processed",
        /// Nothing to process (or skipped); counts as complete for dependants.
        Noop => "state_noop",
        /// Failed, retries exhausted.
        Invalid => "state_invalid",
        /// Stopped by cancellation, or left unfinished by a failed run.
        Canceled => "state_canceled",
    }
}

string_enum! {
    /// How the engine was asked to run the flow. `Rollback` (`flow
    /// rollback`, undoing processed steps) appears only in run records,
    /// never as a flow's mode.
    RunMode {
        /// `run`: a fresh run of every step.
        Nominal => "run_mode_nominal",
        /// `recover`: keep completed steps, run the rest.
        Recovery => "run_mode_recovery",
        /// `run_one`: one step alone.
        RunOne => "run_mode_run_one",
        /// `run_from`: a step, what derives from it and every unfinished step.
        RunFrom => "run_mode_run_from",
        /// `flow rollback`: undo processed steps (run records only).
        Rollback => "run_mode_rollback",
    }
}

string_enum! {
    /// The state of a scheduler's Job (one per flow and timeperiod): the
    /// Synergy Scheduler 2.3's strings (`synergy/db/model/job.py`).
    JobState {
        /// Waiting for its period to close (and its dependencies).
        Embryo => "state_embryo",
        /// A managed run is at work on it, or failed and waits for the
        /// garbage collector's retry.
        InProgress => "state_in_progress",
        /// Synergy's "final run" of an aggregation; `flow` treats it as
        /// `in_progress` (it never writes it).
        FinalRun => "state_final_run",
        /// A managed run processed the period.
        Processed => "state_processed",
        /// A managed run found nothing to process.
        Noop => "state_noop",
        /// Muted: skipped by a person, or given up after the retry limit.
        /// Only reprocessing runs it again.
        Skipped => "state_skipped",
    }
}

impl JobState {
    /// Synergy's `is_finished`: processed, noop or skipped.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Processed | JobState::Noop | JobState::Skipped
        )
    }

    /// True for the states dependants may start after: processed or noop.
    pub fn is_complete(self) -> bool {
        matches!(self, JobState::Processed | JobState::Noop)
    }
}

string_enum! {
    /// Progress of one group of actions (`pre`, `main` or `post`) of a step.
    ActionSetState {
        /// Not started.
        Pending => "pending",
        /// Its actions are running.
        Running => "running",
        /// Every action of the group succeeded (or was skipped).
        Complete => "complete",
        /// An action of the group failed.
        Failed => "failed",
    }
}

impl StepState {
    /// True for the states that let dependants run: `processed` and `noop`.
    pub fn is_complete(self) -> bool {
        matches!(self, StepState::Processed | StepState::Noop)
    }

    /// True for the states a step ends a run in after it went wrong.
    pub fn is_failed(self) -> bool {
        matches!(self, StepState::Invalid | StepState::Canceled)
    }
}

impl RunMode {
    /// True for the managed modes (`nominal`, `recovery`): a scheduler's Job
    /// follows them, and only they may be stored as a flow's managed mode.
    pub fn is_managed(self) -> bool {
        matches!(self, RunMode::Nominal | RunMode::Recovery)
    }

    /// True for the freerun modes (`run_one`, `run_from`): the user's
    /// responsibility, invisible to a scheduler's Job.
    pub fn is_freerun(self) -> bool {
        matches!(self, RunMode::RunOne | RunMode::RunFrom)
    }
}

impl FlowState {
    /// True once the flow finished successfully.
    pub fn is_complete(self) -> bool {
        matches!(self, FlowState::Processed | FlowState::Noop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for s in StepState::ALL {
            assert_eq!(StepState::parse(s.as_str()), Some(*s));
        }
        assert_eq!(RunMode::RunFrom.as_str(), "run_mode_run_from");
        assert_eq!(FlowState::InProgress.to_string(), "state_in_progress");
        assert_eq!(StepState::parse("state_unknown"), None);
    }
}
