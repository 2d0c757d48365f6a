//! Deciding what a run mode will run, before anything is written.

use crate::error::Refusal;
use chrono::{DateTime, Utc};
use flow_core::{
    FlowGraph, FlowRecord, FlowState, JobRecord, RunMode, StepRecord, StepState, Timeperiod,
};
use std::collections::HashMap;

/// What a run will do: which steps run, which records start it.
#[derive(Debug)]
pub(crate) struct RunPlan {
    /// Indexed like the graph's steps.
    pub to_run: Vec<bool>,
    pub count: usize,
    /// Delete every step record first (`run` only).
    pub purge: bool,
    /// One record per step of the graph, those to run reset to `embryo`.
    pub records: Vec<StepRecord>,
    /// Records to write when the run starts: reset or new ones.
    pub changed: Vec<usize>,
    /// Unfinished records of steps the definition no longer has, marked
    /// `canceled`; written when the run starts.
    pub retired: Vec<StepRecord>,
    pub clusters: usize,
    /// Jobs that steps of a dead run left, of steps this run starts afresh
    /// (instead of adopting them): cancelled before anything runs, so no job
    /// runs twice at once.
    pub orphan_jobs: Vec<(String, JobRecord)>,
}

/// What the store holds for the flow before the run.
pub(crate) struct Stored<'a> {
    pub flow: Option<&'a FlowRecord>,
    pub steps: Vec<StepRecord>,
}

/// Checks the mode's preconditions and plans the run.
pub(crate) fn plan(
    mode: RunMode,
    target: Option<&str>,
    graph: &FlowGraph,
    timeperiod: Timeperiod,
    stored: Stored<'_>,
    nominal_clusters: usize,
    now: DateTime<Utc>,
) -> Result<RunPlan, Refusal> {
    let n = graph.len();
    let Stored {
        flow,
        steps: existing,
    } = stored;
    let flow_id = flow.and_then(|f| f.id.clone());
    let mut by_name: HashMap<String, StepRecord> = existing
        .into_iter()
        .map(|s| (s.step_name.clone(), s))
        .collect();
    let mut changed = vec![false; n];
    let mut records: Vec<StepRecord> = graph
        .steps()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            by_name.remove(&s.name).unwrap_or_else(|| {
                changed[i] = true;
                StepRecord::embryo(graph.name(), &s.name, timeperiod, flow_id.clone(), now)
            })
        })
        .collect();
    let complete = |i: usize, records: &[StepRecord]| records[i].state.is_complete();

    let target_index = |name: &str| {
        graph
            .index_of(name)
            .ok_or_else(|| Refusal::unknown_step(graph, name))
    };
    let check_unblocked = |i: usize, records: &[StepRecord]| {
        let missing: Vec<String> = graph
            .dependencies(i)
            .iter()
            .filter(|&&d| !complete(d, records))
            .map(|&d| graph.step(d).name.clone())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Refusal::Blocked {
                step: graph.step(i).name.clone(),
                missing,
            })
        }
    };

    let (to_run, purge): (Vec<bool>, bool) = match mode {
        RunMode::Nominal => (vec![true; n], true),
        RunMode::Recovery => {
            let unfinished: Vec<bool> = (0..n).map(|i| !complete(i, &records)).collect();
            match flow.map(|f| f.state) {
                None => return Err(Refusal::NeverRan),
                Some(FlowState::Invalid | FlowState::InProgress) => {}
                // A completed flow has nothing to recover, unless steps were
                // added to its definition since: those it runs.
                Some(FlowState::Processed | FlowState::Noop) if unfinished.contains(&true) => {}
                Some(state) => return Err(Refusal::NotFailed { state }),
            }
            (unfinished, false)
        }
        RunMode::RunOne => {
            let i = target_index(target.unwrap_or_default())?;
            check_unblocked(i, &records)?;
            let mut to_run = vec![false; n];
            to_run[i] = true;
            (to_run, false)
        }
        RunMode::Rollback => return Err(Refusal::NotARunMode { mode }),
        RunMode::RunFrom => {
            let i = target_index(target.unwrap_or_default())?;
            check_unblocked(i, &records)?;
            let derived = graph.derived_from(i);
            // The step, everything derived from it, and every step that has
            // not completed (failed, cancelled or never run).
            (
                (0..n)
                    .map(|j| derived[j] || !complete(j, &records))
                    .collect(),
                false,
            )
        }
    };
    let count = to_run.iter().filter(|r| **r).count();
    let mut orphan_jobs = Vec::new();
    // Records left in `by_name` are of steps the definition no longer has
    // (it was edited since the stored run). A job a dead run left running
    // for one is cancelled; the record is kept as history, and an unfinished
    // one, which would look pending forever, is closed as canceled (a fresh
    // run purges them all).
    let mut retired: Vec<StepRecord> = Vec::new();
    let mut removed: Vec<StepRecord> = by_name.into_values().collect();
    removed.sort_by(|a, b| a.step_name.cmp(&b.step_name));
    for mut record in removed {
        if record.state == StepState::InProgress {
            if let Some(job) = record.job.take() {
                orphan_jobs.push((record.step_name.clone(), job));
            }
        }
        if mode != RunMode::Nominal
            && !record.state.is_complete()
            && record.state != StepState::Canceled
        {
            record.state = StepState::Canceled;
            record.finished_at.get_or_insert(now);
            record.error = Some("removed from the flow definition".into());
            retired.push(record);
        }
    }
    for (i, record) in records.iter_mut().enumerate() {
        // A step a dead run left half-way goes on where it stopped (its job
        // adopted), unless this is a fresh run or the step changed since.
        let resume = !purge && record.is_resumable() && fits(graph, i, record);
        if record.state == flow_core::StepState::InProgress && !resume && (purge || to_run[i]) {
            if let Some(job) = record.job.take() {
                orphan_jobs.push((record.step_name.clone(), job));
            }
        }
        if to_run[i] && !changed[i] && !resume {
            record.reset(flow_id.clone());
            changed[i] = true;
        }
    }
    let changed: Vec<usize> = (0..n).filter(|&i| purge || changed[i]).collect();
    let clusters = match mode {
        RunMode::RunOne => 1,
        RunMode::RunFrom => (count * nominal_clusters / n.max(1)).max(1),
        RunMode::Nominal | RunMode::Recovery | RunMode::Rollback => {
            nominal_clusters.min(count).max(1)
        }
    };
    Ok(RunPlan {
        to_run,
        count,
        purge,
        records,
        changed,
        retired,
        clusters,
        orphan_jobs,
    })
}

/// True when a stored step's progress still fits the step as defined now
/// (the flow file may have changed between the runs).
fn fits(graph: &FlowGraph, index: usize, record: &StepRecord) -> bool {
    let step = graph.step(index);
    let actions = step.pre.len() + 1 + step.post.len();
    let done = record.actions_done as usize;
    done < actions
        && record.job.as_ref().is_none_or(|job| {
            let at = job.action_index as usize;
            at <= done && crate::step::action_at(step, at).is_some_and(|a| a.name == job.action)
        })
}

/// Why `mode` would be refused for `graph` at `timeperiod`, given what the
/// store holds for it (`flow` and its `steps`; nothing for a flow that never
/// ran), or `None` if it would run. Runs no step and touches no store: for
/// callers that check input before creating a store (the `flow` CLI), with
/// the engine's own rules.
pub fn refusal(
    mode: RunMode,
    target: Option<&str>,
    graph: &FlowGraph,
    timeperiod: Timeperiod,
    flow: Option<&FlowRecord>,
    steps: Vec<StepRecord>,
) -> Option<Refusal> {
    plan(
        mode,
        target,
        graph,
        timeperiod,
        Stored { flow, steps },
        1,
        chrono::Utc::now(),
    )
    .err()
}
