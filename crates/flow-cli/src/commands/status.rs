//! `flow status`: one run's flow and step records, or the list of a flow's
//! runs. Read-only: a store that does not exist yet is not created.

use super::{elapsed, format_time, parse_timeperiod, small_runtime, table, FlowRef};
use crate::backends;
use crate::exit::{CliError, Exit};
use crate::progress::format_duration;
use crate::settings::SettingsFile;
use flow_core::{FlowGraph, FlowKey, FlowRecord, StepRecord};
use std::path::Path;

pub fn status(
    settings_path: Option<&Path>,
    flow: &str,
    timeperiod: Option<&str>,
    json: bool,
) -> Result<Exit, CliError> {
    let settings = SettingsFile::load(settings_path)?;
    let flow = FlowRef::resolve(flow, &settings)?;
    let timeperiod = timeperiod
        .map(|t| parse_timeperiod("timeperiod", t, flow.qualifier()))
        .transpose()?;
    let plan = backends::plan_store(&settings)?;
    let store_error = |e: flow_core::StoreError| CliError::failed(e.to_string());

    let Some(timeperiod) = timeperiod else {
        let runs = if plan.exists() {
            let store = plan.open()?;
            small_runtime()?
                .block_on(store.list_flows(&flow_core::FlowQuery::named(Some(&flow.name))))
                .map_err(store_error)?
        } else {
            Vec::new()
        };
        if runs.is_empty() {
            // Nothing known about it: a typo, or the wrong store. Exit 2
            // like a missing record of one run.
            return Err(CliError::bad_input(format!(
                "no runs of flow '{}' in the store at {}",
                flow.name,
                plan.location()
            )));
        }
        print_runs(&runs, json)?;
        return Ok(Exit::Success);
    };

    let key = FlowKey::new(flow.name.clone(), timeperiod);
    let no_record = || {
        CliError::bad_input(format!(
            "no record of flow {key} in the store at {}",
            plan.location()
        ))
    };
    if !plan.exists() {
        return Err(no_record());
    }
    let store = plan.open()?;
    let (record, steps, clusters) = small_runtime()?
        .block_on(async {
            let record = store.get_flow(&key).await?;
            let steps = store.get_steps(&key).await?;
            let clusters = store.list_clusters(Some(&key)).await?;
            Ok((record, steps, clusters))
        })
        .map_err(store_error)?;
    let usage = flow_core::FlowUsage::of(&clusters, settings.prices(), chrono::Utc::now());
    let Some(record) = record else {
        return Err(no_record());
    };
    let steps = in_flow_order(steps, flow.graph.as_ref());
    if json {
        let value = serde_json::json!({
            "flow": record,
            "steps": steps,
            "clusters": clusters,
            "usage": usage,
        });
        let text =
            serde_json::to_string_pretty(&value).map_err(|e| CliError::failed(e.to_string()))?;
        outln!("{text}");
    } else {
        print_run(&record, &steps, &usage.flow);
    }
    Ok(Exit::Success)
}

/// Steps in the flow's topological order when the flow file is known
/// (steps it no longer has go last), else in the order they started.
fn in_flow_order(mut steps: Vec<StepRecord>, graph: Option<&FlowGraph>) -> Vec<StepRecord> {
    let position = |name: &str| -> usize {
        graph
            .and_then(|g| {
                let index = g.index_of(name)?;
                g.topological_order().iter().position(|&i| i == index)
            })
            .unwrap_or(usize::MAX)
    };
    steps.sort_by(|a, b| {
        position(&a.step_name)
            .cmp(&position(&b.step_name))
            .then(a.started_at.is_none().cmp(&b.started_at.is_none()))
            .then(a.started_at.cmp(&b.started_at))
            .then(a.step_name.cmp(&b.step_name))
    });
    steps
}

fn duration_text(
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    elapsed(from, to).map_or_else(|| "-".into(), format_duration)
}

fn print_run(flow: &FlowRecord, steps: &[StepRecord], usage: &flow_core::UsageSummary) {
    outln!(
        "flow {} [{}]: {}",
        flow.flow_name,
        flow.timeperiod,
        flow.state
    );
    out!(
        "{}",
        table(&[
            vec!["  mode".into(), flow.run_mode.to_string()],
            vec![
                "  window".into(),
                format!("{} .. {}", flow.start_timeperiod, flow.end_timeperiod)
            ],
            vec!["  started".into(), format_time(flow.started_at)],
            vec!["  finished".into(), format_time(flow.finished_at)],
            vec![
                "  duration".into(),
                duration_text(flow.started_at, flow.finished_at)
            ],
            vec![
                "  sla".into(),
                match flow.sla_missed_at {
                    Some(at) => format!("missed ({})", format_time(Some(at))),
                    None => "-".into(),
                }
            ],
            vec![
                "  usage".into(),
                if usage.is_empty() {
                    "-".into()
                } else {
                    usage.text()
                }
            ],
        ])
    );
    if steps.is_empty() {
        outln!("no step records");
        return;
    }
    outln!();
    let mut rows = vec![[
        "step", "state", "attempts", "started", "finished", "duration", "job", "error",
    ]
    .map(String::from)
    .to_vec()];
    for s in steps {
        rows.push(vec![
            s.step_name.clone(),
            s.state.to_string(),
            s.attempts.to_string(),
            format_time(s.started_at),
            format_time(s.finished_at),
            duration_text(s.started_at, s.finished_at),
            job_text(s),
            s.error.clone().unwrap_or_default().replace('\n', " "),
        ]);
    }
    out!("{}", table(&rows));
}

/// The step's latest job, and whether a later engine adopted it.
fn job_text(step: &StepRecord) -> String {
    match &step.job {
        None => "-".to_string(),
        Some(job) => {
            let h = &job.handle;
            let adopted = if job.adopted { ", adopted" } else { "" };
            format!("{} on {} ({}{adopted})", h.kind, h.cluster, job.action)
        }
    }
}

fn print_runs(runs: &[FlowRecord], json: bool) -> Result<(), CliError> {
    if json {
        let text =
            serde_json::to_string_pretty(runs).map_err(|e| CliError::failed(e.to_string()))?;
        outln!("{text}");
        return Ok(());
    }
    let mut rows = vec![[
        "timeperiod",
        "state",
        "mode",
        "started",
        "finished",
        "duration",
        "sla",
    ]
    .map(String::from)
    .to_vec()];
    for r in runs {
        rows.push(vec![
            r.timeperiod.to_string(),
            r.state.to_string(),
            r.run_mode.to_string(),
            format_time(r.started_at),
            format_time(r.finished_at),
            duration_text(r.started_at, r.finished_at),
            if r.sla_missed_at.is_some() {
                "missed".into()
            } else {
                "-".into()
            },
        ]);
    }
    out!("{}", table(&rows));
    Ok(())
}
