//! `flow history`: the runs of a flow (one per engine invocation), newest
//! first, from the store's run records. Read-only.

use super::{elapsed, format_time, parse_timeperiod, small_runtime, table, FlowRef};
use crate::backends;
use crate::exit::{CliError, Exit};
use crate::progress::format_duration;
use crate::settings::SettingsFile;
use flow_core::{
    FlowKey, FlowUsage, LeaseInfo, RunQuery, RunRecord, RunStanding, StepState, UsageSummary,
};
use std::collections::{BTreeMap, HashMap};
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
    let mut usage: HashMap<FlowKey, FlowUsage> = HashMap::new();
    let runs: Vec<(RunRecord, RunStanding, Option<SlaMissed>)> = if plan.exists() {
        let store = plan.open()?;
        let failed = |e: flow_core::StoreError| CliError::failed(e.to_string());
        small_runtime()?.block_on(async {
            let runs = store
                .list_runs(&RunQuery {
                    flow_name: Some(flow.name.clone()),
                    timeperiod,
                    limit,
                })
                .await
                .map_err(failed)?;
            // An open run is running only while its engine holds the
            // flow's lease: the rule the viewer applies too.
            let mut leases: HashMap<FlowKey, Option<LeaseInfo>> = HashMap::new();
            let mut missed: HashMap<FlowKey, Option<SlaMissed>> = HashMap::new();
            let now = chrono::Utc::now();
            let mut standings = Vec::with_capacity(runs.len());
            for run in runs {
                let key = FlowKey::new(run.flow_name.clone(), run.timeperiod);
                if !leases.contains_key(&key) {
                    let lease = store.get_lease(&key).await.map_err(failed)?;
                    leases.insert(key.clone(), lease);
                }
                if !usage.contains_key(&key) {
                    let clusters = store.list_clusters(Some(&key)).await.map_err(failed)?;
                    usage.insert(
                        key.clone(),
                        FlowUsage::of(&clusters, settings.prices(), now),
                    );
                }
                if !missed.contains_key(&key) {
                    let flow = store.get_flow(&key).await.map_err(failed)?;
                    missed.insert(key.clone(), flow.and_then(|f| f.sla_missed_at));
                }
                let lease = leases.get(&key).and_then(Option::as_ref);
                let standing = RunStanding::of(&run, lease, now, settings.lease_ttl());
                let sla = missed
                    .get(&key)
                    .copied()
                    .flatten()
                    .filter(|at| during(&run, *at));
                standings.push((run, standing, sla));
            }
            Ok::<_, CliError>(standings)
        })?
    } else {
        Vec::new()
    };
    if json {
        let mut values = Vec::with_capacity(runs.len());
        for (run, standing, sla) in &runs {
            let mut value =
                serde_json::to_value(run).map_err(|e| CliError::failed(e.to_string()))?;
            if let Some(fields) = value.as_object_mut() {
                fields.insert("status".into(), standing.as_str().into());
                if let Some(summary) = run_usage(&usage, run) {
                    fields.insert(
                        "usage".into(),
                        serde_json::to_value(summary)
                            .map_err(|e| CliError::failed(e.to_string()))?,
                    );
                }
                fields.insert(
                    "sla_missed_at".into(),
                    serde_json::to_value(sla).map_err(|e| CliError::failed(e.to_string()))?,
                );
            }
            values.push(value);
        }
        let text =
            serde_json::to_string_pretty(&values).map_err(|e| CliError::failed(e.to_string()))?;
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
    out!("{}", history_table(&runs, &usage));
    let mut told = std::collections::HashSet::new();
    for (run, _, _) in &runs {
        let key = FlowKey::new(run.flow_name.clone(), run.timeperiod);
        match usage.get(&key) {
            Some(flow) if !flow.flow.is_empty() && told.insert(key.clone()) => {
                outln!(
                    "flow {} [{}], all its runs: {}",
                    key.flow_name,
                    key.timeperiod,
                    flow.flow.text()
                );
            }
            _ => {}
        }
    }
    Ok(Exit::Success)
}

/// What `run`'s clusters used, if it had any.
fn run_usage<'a>(
    usage: &'a HashMap<FlowKey, FlowUsage>,
    run: &RunRecord,
) -> Option<&'a UsageSummary> {
    let key = FlowKey::new(run.flow_name.clone(), run.timeperiod);
    usage.get(&key)?.runs.get(run.id.as_ref()?)
}

/// When a flow's SLA was missed (the flow record's `sla_missed_at`).
type SlaMissed = chrono::DateTime<chrono::Utc>;

/// Whether `at` falls in `run` (its start to its end, or now while open):
/// the run the SLA miss is shown on.
fn during(run: &RunRecord, at: SlaMissed) -> bool {
    at >= run.started_at && run.finished_at.is_none_or(|end| at <= end)
}

/// The runs as a table: id, timeperiod, mode, who, when, how it ended.
fn history_table(
    runs: &[(RunRecord, RunStanding, Option<SlaMissed>)],
    usage: &HashMap<FlowKey, FlowUsage>,
) -> String {
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
        "usage",
        "error",
    ]
    .map(String::from)
    .to_vec()];
    for (r, standing, sla) in runs {
        let mode = match &r.target {
            Some(step) => format!("{} {step}", r.mode),
            None => r.mode.to_string(),
        };
        let mut outcome = match r.outcome {
            Some(state) => state.to_string(),
            None => standing.as_str().to_string(),
        };
        if sla.is_some() {
            outcome.push_str(" (SLA missed)");
        }
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
            run_usage(usage, r)
                .filter(|u| !u.is_empty())
                .map_or_else(|| "-".into(), UsageSummary::text),
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
