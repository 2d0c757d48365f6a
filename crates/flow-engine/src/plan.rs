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
    // A step a dead run left half-way goes on where it stopped (its job
    // adopted), unless this is a fresh run, the step changed since, or a
    // step it depends on (directly or not) runs again in this run: its job
    // then worked on outputs about to be redone, so it is cancelled and the
    // step runs again after them. (`recover` reruns nothing complete, so it
    // adopts every such job; `run-from S` adopts none downstream of S.)
    let mut resumes = vec![false; n];
    let mut rerun_upstream = vec![false; n];
    for &i in graph.topological_order() {
        rerun_upstream[i] = graph
            .dependencies(i)
            .iter()
            .any(|&d| (to_run[d] && !resumes[d]) || rerun_upstream[d]);
        resumes[i] = !purge
            && !rerun_upstream[i]
            && records[i].is_resumable()
            && fits(graph, i, &records[i]);
    }
    for (i, record) in records.iter_mut().enumerate() {
        let resume = resumes[i];
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

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::actions::Identity;
    use flow_core::{ActionInstance, FlowDefinition, JobHandle, StepDefinition};
    use std::sync::Arc;

    /// A flow `f` of independent one-action steps called `names`; the main
    /// action of each is named `main`.
    fn graph(names: &[&str]) -> FlowGraph {
        names
            .iter()
            .fold(FlowDefinition::new("f"), |flow, name| {
                flow.step(StepDefinition::new(
                    *name,
                    ActionInstance::new(Arc::new(Identity)).named("main"),
                ))
            })
            .build()
            .expect("a valid flow")
    }

    fn timeperiod() -> Timeperiod {
        "2026112900".parse().expect("a timeperiod")
    }

    fn flow(state: FlowState) -> FlowRecord {
        FlowRecord {
            id: None,
            flow_name: "f".into(),
            timeperiod: timeperiod(),
            start_timeperiod: timeperiod(),
            end_timeperiod: timeperiod(),
            state,
            run_mode: RunMode::Nominal,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            graph_hash: None,
            sla_missed_at: None,
            trace_parent: None,
        }
    }

    fn record(name: &str, state: StepState) -> StepRecord {
        let mut record = StepRecord::embryo("f", name, timeperiod(), None, Utc::now());
        record.state = state;
        record
    }

    /// An `in_progress` record whose job (of the action `action`, index 0)
    /// is on record.
    fn with_job(name: &str, state: StepState, action: &str) -> StepRecord {
        let mut record = record(name, state);
        record.job = Some(JobRecord {
            action_index: 0,
            action: action.into(),
            attempt: 1,
            handle: JobHandle::new("local", "local-0", [("pid", name)]),
            submitted_at: Utc::now(),
            adopted: false,
        });
        record
    }

    fn planned(
        mode: RunMode,
        graph: &FlowGraph,
        state: FlowState,
        steps: Vec<StepRecord>,
    ) -> Result<RunPlan, Refusal> {
        let flow = flow(state);
        plan(
            mode,
            None,
            graph,
            timeperiod(),
            Stored {
                flow: Some(&flow),
                steps,
            },
            1,
            Utc::now(),
        )
    }

    fn orphans(plan: &RunPlan) -> Vec<&str> {
        plan.orphan_jobs.iter().map(|(s, _)| s.as_str()).collect()
    }

    #[test]
    fn recover_of_a_processed_flow_runs_only_the_steps_added_since() {
        let g = graph(&["a", "b"]);
        let done = vec![record("a", StepState::Processed)];
        let plan = planned(RunMode::Recovery, &g, FlowState::Processed, done.clone())
            .expect("an added step to run");
        assert_eq!(plan.to_run, [false, true]);
        assert_eq!(plan.count, 1);
        // Nothing added: nothing to recover.
        let all = vec![
            record("a", StepState::Processed),
            record("b", StepState::Noop),
        ];
        let refused = planned(RunMode::Recovery, &g, FlowState::Processed, all).unwrap_err();
        assert!(
            matches!(
                refused,
                Refusal::NotFailed {
                    state: FlowState::Processed
                }
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn records_of_removed_steps_are_closed_and_their_jobs_cancelled() {
        let g = graph(&["a"]);
        let stored = vec![
            record("a", StepState::Invalid),
            with_job("gone_running", StepState::InProgress, "main"),
            record("gone_pending", StepState::Embryo),
            with_job("gone_done", StepState::Processed, "main"),
            record("gone_canceled", StepState::Canceled),
        ];
        let plan =
            planned(RunMode::Recovery, &g, FlowState::Invalid, stored.clone()).expect("a recovery");
        assert_eq!(orphans(&plan), ["gone_running"], "only the running job");
        let retired: Vec<&str> = plan.retired.iter().map(|r| r.step_name.as_str()).collect();
        assert_eq!(
            retired,
            ["gone_pending", "gone_running"],
            "the unfinished ones"
        );
        for record in &plan.retired {
            assert_eq!(record.state, StepState::Canceled);
            assert!(record.finished_at.is_some());
            assert_eq!(
                record.error.as_deref(),
                Some("removed from the flow definition")
            );
            assert!(record.job.is_none(), "its job went to the orphans");
        }

        // `run` purges every record: it closes none, but still cancels the job.
        let plan = planned(RunMode::Nominal, &g, FlowState::Invalid, stored).expect("a run");
        assert!(plan.purge);
        assert_eq!(orphans(&plan), ["gone_running"]);
        assert!(plan.retired.is_empty(), "{:?}", plan.retired);
    }

    #[test]
    fn a_half_done_step_resumes_only_where_its_progress_still_fits() {
        let g = graph(&["a", "b", "c"]);
        let stored = vec![
            // Its job is of the action the step still has: adopted.
            with_job("a", StepState::InProgress, "main"),
            // Its job is of an action the step no longer has: started afresh.
            with_job("b", StepState::InProgress, "renamed"),
            // A finished attempt's job is history, not an orphan.
            with_job("c", StepState::Invalid, "main"),
        ];
        let plan =
            planned(RunMode::Recovery, &g, FlowState::Invalid, stored.clone()).expect("a recovery");
        assert_eq!(plan.to_run, [true, true, true]);
        assert_eq!(orphans(&plan), ["b"]);
        assert_eq!(plan.records[0].state, StepState::InProgress, "resumed");
        assert!(plan.records[0].job.is_some(), "to be adopted");
        assert_eq!(plan.records[1].state, StepState::Embryo, "reset");
        assert_eq!(plan.records[2].state, StepState::Embryo, "reset");
        assert!(!plan.changed.contains(&0) && plan.changed.contains(&1));

        // `run` resumes nothing: every running job is cancelled.
        let plan = planned(RunMode::Nominal, &g, FlowState::Invalid, stored).expect("a run");
        assert_eq!(orphans(&plan), ["a", "b"]);
        assert!(plan.records.iter().all(|r| r.state == StepState::Embryo));
    }
}
