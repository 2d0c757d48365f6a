//! Flow runs written straight into a store, as an engine would have
//! recorded them, without running one: for the viewer's benchmark
//! (`viewer_bench`) and its tests (`tests/first_event.rs`, which includes
//! this file by path).

use chrono::Utc;
use flow_core::actions::Identity;
use flow_core::{
    ActionInstance, FlowDefinition, FlowGraph, FlowKey, FlowRecord, FlowState, FlowStore, Lease,
    LeaseOutcome, LogLevel, LogLine, RecordId, RunMode, RunRecord, StepDefinition, StepRecord,
    TimeQualifier,
};
use std::sync::Arc;
use std::time::Duration;

/// Log lines appended per store call.
const BATCH: usize = 10_000;

/// A daily flow `name` of one step, `step`, an identity action.
pub fn one_step_flow(name: &str, step: &str) -> Arc<FlowGraph> {
    let graph = FlowDefinition::new(name)
        .time_qualifier(TimeQualifier::Daily)
        .step(StepDefinition::new(
            step,
            ActionInstance::new(Arc::new(Identity)),
        ))
        .build()
        .expect("a valid flow");
    Arc::new(graph)
}

/// Takes the lease of `key` and begins a run of it: the flow record in
/// `state`, `steps` (every other step record purged) and a run record,
/// finished unless the flow is in progress. Returns the lease (still held)
/// and the run's id.
pub async fn record_run(
    store: &dyn FlowStore,
    key: &FlowKey,
    state: FlowState,
    steps: &[StepRecord],
) -> (Lease, RecordId) {
    let now = Utc::now();
    let LeaseOutcome::Acquired(lease) = store
        .acquire_lease(key, "recorded", now, Duration::from_secs(3600))
        .await
        .unwrap()
    else {
        panic!("{key}: the lease is held");
    };
    let tp = key.timeperiod;
    let finished = (state != FlowState::InProgress).then_some(now);
    let flow = FlowRecord {
        id: None,
        flow_name: key.flow_name.clone(),
        timeperiod: tp,
        start_timeperiod: tp,
        end_timeperiod: tp.next(TimeQualifier::Daily),
        state,
        run_mode: RunMode::Nominal,
        created_at: now,
        started_at: Some(now),
        finished_at: finished,
        graph_hash: None,
        sla_missed_at: None,
        trace_parent: None,
    };
    let run = RunRecord {
        id: None,
        flow_name: key.flow_name.clone(),
        timeperiod: tp,
        mode: RunMode::Nominal,
        target: None,
        owner: "recorded".into(),
        token: lease.token,
        host: "localhost".into(),
        user: "bench".into(),
        started_at: now,
        finished_at: finished,
        outcome: finished.map(|_| state),
        steps: Vec::new(),
        error: None,
    };
    let (_, run) = store
        .begin_run(&lease, &flow, true, steps, &run)
        .await
        .unwrap();
    (lease, run.id.expect("a stored run has an id"))
}

/// Appends `count` log lines of `step` to `run` of `key`.
pub async fn record_lines(
    store: &dyn FlowStore,
    key: &FlowKey,
    run: &RecordId,
    step: &str,
    count: usize,
) {
    let now = Utc::now();
    for first in (0..count).step_by(BATCH) {
        let lines: Vec<LogLine> = (first..count.min(first + BATCH))
            .map(|i| LogLine {
                flow_name: key.flow_name.clone(),
                timeperiod: key.timeperiod,
                run: run.clone(),
                step: Some(step.into()),
                logger: format!("{step}.identity"),
                level: LogLevel::Info,
                at: now,
                message: format!("line {i} of a step that talks a lot"),
            })
            .collect();
        store.append_logs(&lines).await.unwrap();
    }
}
