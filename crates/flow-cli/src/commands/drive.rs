//! `flow drive`: one unit of work for any scheduler (cron, Airflow's
//! BashOperator, a Kubernetes CronJob, the Synergy Scheduler). The unit
//! comes as flags or as one JSON object on stdin; the answer is one JSON
//! object on stdout, whatever happened, and the exit code says the same:
//! 0 processed or noop, 1 invalid, 2 bad unit (nothing written), 3
//! cancelled, 4 clusters left up.

use super::run::{prepare, run_runtime, with_signals};
use crate::cli::{DriveArgs, UnitKind, Window};
use crate::exit::{CliError, Exit};
use crate::progress::Progress;
use flow_core::RunMode;
use flow_engine::drive::{drive as drive_unit, DriveOutcome, UnitMode};
use serde::Deserialize;
use std::io::Read;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

/// A unit as JSON on stdin (the flags' fields, by the same names).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitJson {
    flow: String,
    timeperiod: String,
    start_timeperiod: Option<String>,
    end_timeperiod: Option<String>,
    kind: Option<UnitKind>,
    run_mode: Option<String>,
    step: Option<String>,
    clusters: Option<NonZeroUsize>,
}

/// A unit, from flags or stdin, not yet checked against its flow.
struct Unit {
    flow: String,
    timeperiod: String,
    window: Window,
    kind: Option<UnitKind>,
    run_mode: Option<String>,
    step: Option<String>,
}

pub fn drive(settings: Option<&Path>, args: &DriveArgs) -> Result<Exit, CliError> {
    match drive_inner(settings, args) {
        Ok((answer, exit)) => {
            outln!("{answer}");
            Ok(exit)
        }
        Err(e) => {
            // The caller reads stdout: it gets an answer there too.
            let answer = serde_json::json!({
                "outcome": "invalid",
                "exit": e.exit.code(),
                "error": e.message,
            });
            outln!("{answer}");
            Err(e)
        }
    }
}

fn drive_inner(
    settings: Option<&Path>,
    args: &DriveArgs,
) -> Result<(serde_json::Value, Exit), CliError> {
    let unit = read_unit(args)?;
    let mut prepared = prepare(settings, &unit.flow, &unit.timeperiod, &unit.window)?;
    let mode = unit_mode(&unit)?;
    let (early_mode, step) = match &mode {
        UnitMode::Managed { requested } => (requested.unwrap_or(RunMode::Nominal), None),
        UnitMode::Freerun { mode, step } => (*mode, Some(step.as_str())),
    };
    prepared.refuse_early(early_mode, step)?;

    let telemetry = crate::telemetry::Telemetry::start(&prepared.settings)?;
    prepared.tracer = telemetry.tracer();
    crate::logs::init_with(&telemetry);
    let store = prepared.store_plan.open()?;
    let runtime = run_runtime()?;
    let answer = runtime.block_on(async {
        super::logs::purge_old_lines(&store, prepared.settings.store().log_retention).await;
        if matches!(mode, UnitMode::Freerun { .. }) {
            prepared.refuse_freerun(&store).await?;
        }
        let progress = Arc::new(Progress::for_stderr());
        // A managed nominal run takes the given window; the others keep the
        // stored run's (the mode is resolved inside, so ask for the stored
        // window unless a nominal run was requested explicitly).
        let keeps_window = !matches!(
            mode,
            UnitMode::Managed {
                requested: Some(RunMode::Nominal)
            }
        );
        let engine = prepared
            .engine(&store, keeps_window, progress.clone())
            .await;
        let (result, signalled) =
            with_signals(&engine, drive_unit(&engine, &mode), &store, &progress).await?;
        progress.finish();
        prepared.finish_signals().await;
        let driven = result.map_err(|e| prepared.engine_error(e, early_mode))?;
        let report = &driven.report;
        let exit = if signalled || report.canceled {
            Exit::Cancelled
        } else if driven.outcome == DriveOutcome::Invalid {
            Exit::FlowFailed
        } else if !report.clusters_left_up.is_empty() {
            Exit::ClustersLeftUp
        } else {
            Exit::Success
        };
        let steps: serde_json::Map<String, serde_json::Value> = report
            .steps
            .iter()
            .map(|(s, state)| (s.clone(), state.as_str().into()))
            .collect();
        let answer = serde_json::json!({
            "outcome": driven.outcome,
            "exit": exit.code(),
            "flow": report.flow.flow_name,
            "timeperiod": report.flow.timeperiod.to_string(),
            "run_id": report.run,
            "run_mode": driven.choice.mode,
            "managed": !driven.freerun,
            "mode_source": driven.choice.source,
            "reason": driven.choice.source.reason(driven.choice.mode),
            "state": report.state,
            "steps": steps,
            "canceled": report.canceled,
            "clusters_left_up": report.clusters_left_up,
            "error": report.error,
        });
        Ok((answer, exit))
    });
    // The run's spans ended with its engine: export them before exiting.
    telemetry.shutdown();
    answer
}

/// The unit from the flags, or from stdin when no FLOW is given.
fn read_unit(args: &DriveArgs) -> Result<Unit, CliError> {
    let Some(flow) = &args.flow else {
        if args.timeperiod.is_some()
            || args.kind.is_some()
            || args.run_mode.is_some()
            || args.step.is_some()
            || args.window.start_timeperiod.is_some()
            || args.window.end_timeperiod.is_some()
            || args.window.clusters.is_some()
        {
            return Err(CliError::bad_input(
                "flow drive reads the unit from stdin when no FLOW is given: give either FLOW and flags, or JSON on stdin, not both",
            ));
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::bad_input(format!("cannot read the unit from stdin: {e}")))?;
        let json: UnitJson = serde_json::from_str(&text).map_err(|e| {
            CliError::bad_input(format!(
                "the unit on stdin (line {}, column {}): {e}",
                e.line(),
                e.column()
            ))
        })?;
        return Ok(Unit {
            flow: json.flow,
            timeperiod: json.timeperiod,
            window: Window {
                start_timeperiod: json.start_timeperiod,
                end_timeperiod: json.end_timeperiod,
                clusters: json.clusters,
            },
            kind: json.kind,
            run_mode: json.run_mode,
            step: json.step,
        });
    };
    let Some(timeperiod) = &args.timeperiod else {
        return Err(CliError::bad_input("flow drive FLOW needs --timeperiod"));
    };
    Ok(Unit {
        flow: flow.clone(),
        timeperiod: timeperiod.clone(),
        window: Window {
            start_timeperiod: args.window.start_timeperiod.clone(),
            end_timeperiod: args.window.end_timeperiod.clone(),
            clusters: args.window.clusters,
        },
        kind: args.kind,
        run_mode: args.run_mode.clone(),
        step: args.step.clone(),
    })
}

/// Checks the unit's kind, run mode and step against each other.
fn unit_mode(unit: &Unit) -> Result<UnitMode, CliError> {
    let mode = unit
        .run_mode
        .as_deref()
        .map(|text| {
            RunMode::parse(text)
                .or_else(|| RunMode::parse(&format!("run_mode_{text}")))
                .filter(|m| m.is_managed() || m.is_freerun())
                .ok_or_else(|| {
                    CliError::bad_input(format!(
                        "run_mode '{text}' is not one of run_mode_nominal, run_mode_recovery (managed), run_mode_run_one, run_mode_run_from (freerun)"
                    ))
                })
        })
        .transpose()?;
    let kind = match (unit.kind, mode) {
        (Some(kind), _) => kind,
        (None, Some(m)) if m.is_freerun() => UnitKind::Freerun,
        (None, _) => UnitKind::Managed,
    };
    match kind {
        UnitKind::Managed => {
            if let Some(m) = mode.filter(|m| !m.is_managed()) {
                return Err(CliError::bad_input(format!(
                    "a managed unit runs run_mode_nominal or run_mode_recovery, not {m}"
                )));
            }
            if unit.step.is_some() {
                return Err(CliError::bad_input(
                    "a managed unit runs the whole flow: step is for freerun units (run_mode_run_one, run_mode_run_from)",
                ));
            }
            Ok(UnitMode::Managed { requested: mode })
        }
        UnitKind::Freerun => {
            let Some(mode) = mode.filter(|m| m.is_freerun()) else {
                return Err(CliError::bad_input(
                    "a freerun unit needs run_mode run_mode_run_one or run_mode_run_from",
                ));
            };
            let Some(step) = unit.step.clone() else {
                return Err(CliError::bad_input(format!(
                    "a freerun unit of {mode} needs a step"
                )));
            };
            Ok(UnitMode::Freerun { mode, step })
        }
    }
}
