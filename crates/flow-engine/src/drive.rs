//! One unit of work for any scheduler: resolve the run mode the way the
//! Synergy Scheduler did, run it, and say what happened in Synergy's words.
//!
//! Run modes come in two groups. **Managed** (`nominal`, `recovery`) runs
//! are a scheduler's: they move its Job for the timeperiod. **Freerun**
//! (`run_one`, `run_from`) runs are the user's: a scheduler's Job never sees
//! them. A managed unit's mode resolves as: the process default (`nominal`)
//! is overridden by the managed mode stored on the flow record (what the
//! viewer's run-mode button stores), and an explicit request overrides both.
//! `flow drive` and `flow schedule` both call [`drive`].

use crate::{EngineError, ExecutionEngine, RunReport};
use flow_core::{FlowRecord, FlowState, RunMode};
use serde::Serialize;

/// What a unit asks for: a managed run (with an optional explicit mode) or
/// a freerun mode on a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitMode {
    /// A scheduler's run; `requested`, when given, is `Nominal` or
    /// `Recovery` and overrides the stored and default modes.
    Managed {
        /// An explicit managed mode, if the caller asked for one.
        requested: Option<RunMode>,
    },
    /// A user's run of `mode` (`RunOne` or `RunFrom`) on `step`.
    Freerun {
        /// `RunOne` or `RunFrom`.
        mode: RunMode,
        /// The step it runs (from).
        step: String,
    },
}

/// Where the chosen run mode came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeSource {
    /// Nothing said otherwise: the process default.
    ProcessDefault,
    /// The managed mode stored on the flow record (the viewer's button, or
    /// the latest managed run).
    FlowRecord,
    /// The unit asked for it.
    Request,
}

impl ModeSource {
    /// A sentence for people: why this mode.
    pub fn reason(self, mode: RunMode) -> String {
        match self {
            ModeSource::ProcessDefault => {
                format!("{mode}: the process default (no managed mode stored on the flow record, none requested)")
            }
            ModeSource::FlowRecord => {
                format!("{mode}: stored on the flow record (the viewer's run-mode button or the latest managed run), no mode requested")
            }
            ModeSource::Request => format!("{mode}: requested explicitly"),
        }
    }
}

/// The run mode a unit runs in, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModeChoice {
    /// The mode.
    pub mode: RunMode,
    /// Why it was chosen.
    pub source: ModeSource,
}

/// Resolves a managed unit's mode: `requested` (when given) over the
/// managed mode stored on `stored` over `default`. A stored freerun mode
/// (the latest run was a `run_one`, say) is not a managed setting and is
/// passed over.
pub fn resolve_managed_mode(
    default: RunMode,
    stored: Option<&FlowRecord>,
    requested: Option<RunMode>,
) -> ModeChoice {
    if let Some(mode) = requested {
        return ModeChoice {
            mode,
            source: ModeSource::Request,
        };
    }
    match stored.map(|f| f.run_mode).filter(|m| m.is_managed()) {
        Some(mode) => ModeChoice {
            mode,
            source: ModeSource::FlowRecord,
        },
        None => ModeChoice {
            mode: default,
            source: ModeSource::ProcessDefault,
        },
    }
}

/// The outcome of a unit, in the Synergy Scheduler's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriveOutcome {
    /// Every step the run ran completed, and at least one processed data.
    Processed,
    /// Every step the run ran completed with nothing to process.
    Noop,
    /// A step failed, the run was cancelled, or it stopped on an error.
    Invalid,
}

/// How a driven unit ended.
#[derive(Debug, Clone)]
pub struct DriveReport {
    /// Synergy's outcome.
    pub outcome: DriveOutcome,
    /// The mode run, and why.
    pub choice: ModeChoice,
    /// True for the freerun modes.
    pub freerun: bool,
    /// The engine's report (run id, steps, clusters left up...).
    pub report: RunReport,
}

/// The outcome of a finished run: for a managed run, the flow's state; for
/// a freerun one (which may leave the flow itself unfinished), the states
/// of the steps it ran.
pub fn outcome_of(report: &RunReport, freerun: bool) -> DriveOutcome {
    let steps_done = report.steps.iter().all(|(_, s)| s.is_complete());
    if report.canceled || report.error.is_some() || !steps_done {
        return DriveOutcome::Invalid;
    }
    let noop = if freerun {
        !report.steps.is_empty()
            && report
                .steps
                .iter()
                .all(|(_, s)| *s == flow_core::StepState::Noop)
    } else {
        report.state == FlowState::Noop
    };
    match report.state {
        _ if noop => DriveOutcome::Noop,
        FlowState::Processed | FlowState::Noop => DriveOutcome::Processed,
        // A freerun run whose steps completed on a flow that is still
        // unfinished elsewhere did its job.
        _ if freerun => DriveOutcome::Processed,
        _ => DriveOutcome::Invalid,
    }
}

/// Drives one unit on `engine` (built for the unit's flow and timeperiod):
/// reads the flow record, resolves the mode (managed units; freerun ones run
/// the mode they name), runs it, and reports the outcome. Refusals and lease
/// conflicts come back as the engine's errors, nothing written.
pub async fn drive(engine: &ExecutionEngine, unit: &UnitMode) -> Result<DriveReport, EngineError> {
    let (choice, step) = match unit {
        UnitMode::Managed { requested } => {
            let stored = engine
                .store
                .get_flow(&engine.key())
                .await
                .map_err(|source| EngineError::Store {
                    flow: engine.key(),
                    source,
                })?;
            (
                resolve_managed_mode(RunMode::Nominal, stored.as_ref(), *requested),
                None,
            )
        }
        UnitMode::Freerun { mode, step } => (
            ModeChoice {
                mode: *mode,
                source: ModeSource::Request,
            },
            Some(step.as_str()),
        ),
    };
    let freerun = choice.mode.is_freerun();
    let report = engine.execute(choice.mode, step).await?;
    Ok(DriveReport {
        outcome: outcome_of(&report, freerun),
        choice,
        freerun,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn record(run_mode: RunMode) -> FlowRecord {
        let tp = "2026112800".parse().expect("a timeperiod");
        FlowRecord {
            id: None,
            flow_name: "f".into(),
            timeperiod: tp,
            start_timeperiod: tp,
            end_timeperiod: tp,
            state: FlowState::Invalid,
            run_mode,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            graph_hash: None,
            sla_missed_at: None,
            trace_parent: None,
        }
    }

    /// The resolution table: default < managed mode on the record < request.
    #[test]
    fn resolution_table() {
        use ModeSource::*;
        use RunMode::*;
        let cases: &[(Option<RunMode>, Option<RunMode>, RunMode, ModeSource)] = &[
            // (stored on the record, requested) -> (chosen, source)
            (None, None, Nominal, ProcessDefault),
            (Some(Nominal), None, Nominal, FlowRecord),
            (Some(Recovery), None, Recovery, FlowRecord),
            // A freerun mode on the record is the latest run's, not a setting.
            (Some(RunOne), None, Nominal, ProcessDefault),
            (Some(RunFrom), None, Nominal, ProcessDefault),
            (Some(Rollback), None, Nominal, ProcessDefault),
            (None, Some(Recovery), Recovery, Request),
            (Some(Recovery), Some(Nominal), Nominal, Request),
            (Some(Nominal), Some(Recovery), Recovery, Request),
            (Some(RunOne), Some(Recovery), Recovery, Request),
        ];
        for (stored, requested, mode, source) in cases {
            let stored = stored.map(record);
            let choice = resolve_managed_mode(Nominal, stored.as_ref(), *requested);
            assert_eq!(
                choice,
                ModeChoice {
                    mode: *mode,
                    source: *source
                },
                "stored {stored:?}, requested {requested:?}"
            );
        }
        // The process default is the caller's.
        assert_eq!(
            resolve_managed_mode(Recovery, None, None),
            ModeChoice {
                mode: Recovery,
                source: ProcessDefault
            }
        );
    }
}
