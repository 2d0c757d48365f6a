//! `flow history`: the runs of a flow (one per engine invocation), newest
//! first, from the store's run records. Read-only.

use super::{elapsed, format_time, parse_timeperiod, small_runtime, table, FlowRef};
use crate::backends;
use crate::exit::{CliError, Exit};
use crate::progress::format_duration;
use crate::settings::SettingsFile;
use flow_core::{RunQuery, RunRecord, StepState};
use std::collections::BTreeMap;
use std::path::Path;

pub fn history(
    settings_path: Option<&Path>,
    flow: &str,
    timeperiod: Option<&str>,
    limit: Option<usize>,
    json: bool,
) -> Result<Exit, CliError> {
    let settings = SettingsFile::load(settings_path)?;
    let flow = FlowRef::resolve(flow, &settings)?;
    let timeperiod = timeperiod
        .map(|t| parse_timeperiod("timeperiod", t, flow.qualifier()))
        .transpose()?;
    let plan = backends::plan_store(&settings)?;
    let runs = if plan.exists() {
        let store = plan.open()?;
        small_runtime()?
            .block_on(store.list_runs(&RunQuery {
                flow_name: Some(flow.name.clone()),
                timeperiod,
                limit,
            }))
            .map_err(|e| CliError::failed(e.to_string()))?
    } else {
        Vec::new()
    };
    if json {
        let text =
            serde_json::to_string_pretty(&runs).map_err(|e| CliError::failed(e.to_string()))?;
        outln!("{text}");
        return Ok(Exit::Success);
    }
    if runs.is_empty() {
        outln!(
            "no runs of flow '{}' in the store at {}",
            flow.name,
            plan.location()
        );
        return Ok(Exit::Success);
    }
    out!("{}", history_table(&runs));
    Ok(Exit::Success)
}

/// The runs as a table: id, timeperiod, mode, who, when, how it ended.
fn history_table(runs: &[RunRecord]) -> String {
    let mut rows = vec![[
        "run",
        "timeperiod",
        "mode",
        "started",
        "duration",
        "outcome",
        "steps",
        "host",
        "user",
        "error",
    ]
    .map(String::from)
    .to_vec()];
    for r in runs {
        let mode = match &r.target {
            Some(step) => format!("{} {step}", r.mode),
            None => r.mode.to_string(),
        };
        let outcome = match (r.outcome, r.finished_at) {
            (Some(state), _) => state.to_string(),
            (None, None) => "running (or its engine died)".into(),
            (None, Some(_)) => "-".into(),
        };
        rows.push(vec![
            r.id.as_ref()
                .map_or_else(|| "-".into(), ToString::to_string),
            r.timeperiod.to_string(),
            mode,
            format_time(Some(r.started_at)),
            elapsed(Some(r.started_at), r.finished_at).map_or_else(|| "-".into(), format_duration),
            outcome,
            step_summary(r.steps.iter().map(|s| s.state)),
            r.host.clone(),
            r.user.clone(),
            r.error.clone().unwrap_or_default().replace('\n', " "),
        ]);
    }
    table(&rows)
}

/// `3 processed, 1 invalid`.
fn step_summary(states: impl Iterator<Item = StepState>) -> String {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for s in states {
        *counts
            .entry(s.as_str().trim_start_matches("state_"))
            .or_default() += 1;
    }
    if counts.is_empty() {
        return "-".into();
    }
    counts
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_summarised_by_state() {
        let s = step_summary(
            [
                StepState::Processed,
                StepState::Invalid,
                StepState::Processed,
            ]
            .into_iter(),
        );
        assert_eq!(s, "1 invalid, 2 processed");
        assert_eq!(step_summary(std::iter::empty()), "-");
    }
}
