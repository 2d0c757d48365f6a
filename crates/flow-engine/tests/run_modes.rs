//! Each run mode on a diamond a → {b, c} → d whose branch c fails while a
//! flag file exists; the actions append their step name to a file, so the
//! tests see exactly which steps ran.

mod support;

use flow_core::{FlowDefinition, FlowGraph, FlowState, RunMode, StepDefinition, StepState};
use flow_engine::{EngineError, Refusal};
use std::path::Path;
use std::sync::Arc;
use support::*;

fn diamond(ran: &Path, flag: &Path) -> Arc<FlowGraph> {
    Arc::new(
        FlowDefinition::new("diamond")
            .time_qualifier(flow_core::TimeQualifier::Daily)
            .step(StepDefinition::new("a", append(ran)))
            .step(StepDefinition::new("b", append(ran)).depends_on(["a"]))
            .step(StepDefinition::new("c", append_failing_while(ran, flag)).depends_on(["a"]))
            .step(StepDefinition::new("d", append(ran)).depends_on(["b", "c"]))
            .build()
            .unwrap(),
    )
}

fn states(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_on_a_diamond_with_a_failing_branch() {
    let bench = Bench::new();
    let ran = bench.path("ran.txt");
    let flag = bench.path("fail-c");
    std::fs::write(&flag, "").unwrap();
    let graph = diamond(&ran, &flag);
    let engine = bench.engine(&graph, TP, 2);

    // run: a, b and c run; c fails; d never starts.
    let report = engine.run().await.unwrap();
    assert_eq!(report.state, FlowState::Invalid);
    assert_eq!(report.mode, RunMode::Nominal);
    assert_eq!(sorted(lines(&ran)), ["a", "b", "c"]);
    assert_eq!(
        bench.step_states("diamond", TP).await,
        states(&[
            ("a", "state_processed"),
            ("b", "state_processed"),
            ("c", "state_invalid"),
            ("d", "state_embryo")
        ])
    );
    let (flow, steps) = bench.snapshot("diamond", TP).await;
    let flow = flow.unwrap();
    assert_eq!(flow.state, FlowState::Invalid);
    assert!(flow.finished_at.is_some());
    let c = steps.iter().find(|s| s.step_name == "c").unwrap();
    assert!(
        c.error.as_deref().unwrap().contains("fail-c exists"),
        "{:?}",
        c.error
    );
    assert_eq!(c.main_state, flow_core::ActionSetState::Failed);
    assert_eq!(c.related_flow, flow.id);

    // recover: only the failed part (c, then d) runs.
    std::fs::remove_file(&flag).unwrap();
    std::fs::write(&ran, "").unwrap();
    let report = engine.recover().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(lines(&ran), ["c", "d"]);
    assert!(bench
        .step_states("diamond", TP)
        .await
        .iter()
        .all(|(_, s)| s == "state_processed"));

    // run_one b: only b.
    std::fs::write(&ran, "").unwrap();
    let report = engine.run_one("b").await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(report.clusters_launched, 1);
    assert_eq!(lines(&ran), ["b"]);

    // run_from b: b and what derives from it (d); a and c are complete.
    std::fs::write(&ran, "").unwrap();
    let report = engine.run_from("b").await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(lines(&ran), ["b", "d"]);
    // 2 of 4 steps with 2 nominal clusters: max(1, floor(2 * 2 / 4)) = 1.
    assert_eq!(report.clusters_launched, 1);

    // run again from scratch: everything runs.
    std::fs::write(&ran, "").unwrap();
    let report = engine.run().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(sorted(lines(&ran)), ["a", "b", "c", "d"]);
    assert_eq!(report.steps.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_from_also_reruns_failed_steps_and_scales_clusters() {
    let bench = Bench::new();
    let ran = bench.path("ran.txt");
    let flag = bench.path("fail-c");
    std::fs::write(&flag, "").unwrap();
    let graph = diamond(&ran, &flag);
    bench.engine(&graph, TP, 4).run().await.unwrap();
    std::fs::remove_file(&flag).unwrap();
    std::fs::write(&ran, "").unwrap();
    // From b: b, d (derived) and c (failed) run: 3 of 4 steps on
    // max(1, floor(3 * 4 / 4)) = 3 clusters.
    let report = bench.engine(&graph, TP, 4).run_from("b").await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(sorted(lines(&ran)), ["b", "c", "d"]);
    assert_eq!(report.clusters_launched, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_modes_change_nothing() {
    let bench = Bench::new();
    let ran = bench.path("ran.txt");
    let graph = diamond(&ran, &bench.path("no-flag"));
    let engine = bench.engine(&graph, TP, 2);

    // recover on a flow that never ran.
    let before = bench.snapshot("diamond", TP).await;
    match engine.recover().await {
        Err(EngineError::Refused {
            reason: Refusal::NeverRan,
            ..
        }) => {}
        other => panic!("expected NeverRan, got {other:?}"),
    }
    // run_one on a blocked step names its unprocessed dependencies.
    match engine.run_one("d").await {
        Err(EngineError::Refused {
            reason: Refusal::Blocked { step, missing },
            ..
        }) => {
            assert_eq!(step, "d");
            assert_eq!(sorted(missing), ["b", "c"]);
        }
        other => panic!("expected Blocked, got {other:?}"),
    }
    match engine.run_from("ghost").await {
        Err(EngineError::Refused {
            reason: Refusal::UnknownStep { step, .. },
            ..
        }) => assert_eq!(step, "ghost"),
        other => panic!("expected UnknownStep, got {other:?}"),
    }
    assert_eq!(bench.snapshot("diamond", TP).await, before);
    assert!(lines(&ran).is_empty());

    // recover on a processed flow.
    engine.run().await.unwrap();
    let before = bench.snapshot("diamond", TP).await;
    let err = engine.recover().await.unwrap_err();
    assert!(err.to_string().contains("not failed"), "{err}");
    assert_eq!(bench.snapshot("diamond", TP).await, before);
    // A refusal releases the lease: the next mode is accepted.
    engine.run_one("d").await.unwrap();
    let steps = bench.snapshot("diamond", TP).await.1;
    assert!(steps.iter().all(|s| s.state == StepState::Processed));
}
