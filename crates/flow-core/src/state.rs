//! States of flows, steps and action sets, and the run modes.
//!
//! The serialized strings are the ones Synergy Flow stores, so records stay
//! readable by both engines.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
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
        Embryo => "state_embryo",
        InProgress => "state_in_progress",
        Processed => "state_processed",
        Noop => "state_noop",
        Invalid => "state_invalid",
    }
}

string_enum! {
    /// The state of one step.
    StepState {
        Embryo => "state_embryo",
        InProgress => "state_in_progress",
        Processed => "state_processed",
        Noop => "state_noop",
        Invalid => "state_invalid",
        Canceled => "state_canceled",
    }
}

string_enum! {
    /// How the engine was asked to run the flow. `Rollback` (`flow
    /// rollback`, undoing processed steps) appears only in run records,
    /// never as a flow's mode.
    RunMode {
        Nominal => "run_mode_nominal",
        Recovery => "run_mode_recovery",
        RunOne => "run_mode_run_one",
        RunFrom => "run_mode_run_from",
        Rollback => "run_mode_rollback",
    }
}

string_enum! {
    /// Progress of one group of actions (`pre`, `main` or `post`) of a step.
    ActionSetState {
        Pending => "pending",
        Running => "running",
        Complete => "complete",
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
