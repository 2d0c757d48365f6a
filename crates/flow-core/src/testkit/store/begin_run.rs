//! `begin_run`: atomic, purging the steps when asked, and complete after
//! an interruption at any of its writes.

use super::*;

impl Suite {
    /// What an earlier run left: the flow record in `state` and two
    /// processed steps, `extract` and `obsolete` (which a purge removes).
    async fn earlier_run(&self, key: &FlowKey, lease: &Lease, state: FlowState) -> FlowRecord {
        let store = self.store();
        let flow = ok(
            "save_flow",
            key,
            store.save_flow(lease, &flow_record(key, state, 0)).await,
        );
        for step in ["extract", "obsolete"] {
            ok(
                "save_step",
                key,
                store
                    .save_step(lease, &step_record(key, step, StepState::Processed, 1))
                    .await,
            );
        }
        flow
    }

    pub(super) async fn begin_run_and_purge(&self) {
        let store = self.store();
        let key = key("begin");
        let neighbour = FlowKey::new(key.flow_name.clone(), tp("2026112900"));
        // A neighbour (other timeperiod) whose steps a purge must not touch.
        let nl = self.lease(&neighbour, "neighbour", 0).await;
        ok(
            "save_step",
            &neighbour,
            store
                .save_step(
                    &nl,
                    &step_record(&neighbour, "extract", StepState::Processed, 0),
                )
                .await,
        );

        let lease = self.lease(&key, "begin-owner", 0).await;
        let old_flow = self.earlier_run(&key, &lease, FlowState::Processed).await;
        let mut flow = flow_record(&key, FlowState::InProgress, 0);
        flow.started_at = Some(at(100));
        let steps = vec![
            StepRecord::embryo(&key.flow_name, "extract", key.timeperiod, None, at(100)),
            StepRecord::embryo(&key.flow_name, "load", key.timeperiod, None, at(100)),
        ];
        let run = run_record(&lease, RunMode::Nominal, 100);
        let (flow_back, run_back) = ok(
            "begin_run",
            &key,
            store.begin_run(&lease, &flow, true, &steps, &run).await,
        );
        assert_eq!(
            flow_back.id, old_flow.id,
            "begin_run of {key}: the flow record's id changed"
        );
        let flow_id = flow_back
            .id
            .clone()
            .unwrap_or_else(|| panic!("begin_run of {key}: flow without id"));
        let run_id = run_back
            .id
            .clone()
            .unwrap_or_else(|| panic!("begin_run of {key}: run without id"));
        let snap = self.snapshot(&key).await;
        let mut expected_flow = flow.clone();
        expected_flow.id = Some(flow_id.clone());
        assert_eq!(
            snap.flow,
            Some(expected_flow),
            "get_flow of {key} after begin_run"
        );
        let names: Vec<_> = snap.steps.iter().map(|s| s.step_name.as_str()).collect();
        assert_eq!(
            names,
            ["extract", "load"],
            "begin_run of {key} with purge: old step records remain"
        );
        for s in &snap.steps {
            assert_eq!(
                s.state,
                StepState::Embryo,
                "begin_run of {key}: step {} not as saved",
                s.step_name
            );
            assert_eq!(
                s.related_flow.as_ref(),
                Some(&flow_id),
                "begin_run of {key}: step {} did not get the flow's id as related_flow",
                s.step_name
            );
        }
        let mut expected_run = run.clone();
        expected_run.id = Some(run_id);
        assert_eq!(
            snap.runs,
            vec![expected_run.clone()],
            "list_runs of {key} after begin_run"
        );
        assert_eq!(
            run_back, expected_run,
            "begin_run of {key}: returned run differs"
        );
        assert_eq!(
            ok("get_steps", &neighbour, store.get_steps(&neighbour).await).len(),
            1,
            "begin_run of {key} with purge: deleted steps of {neighbour}"
        );

        // Without purge: other steps stay, given ones are updated by key.
        let mut extract = snap.steps[0].clone();
        extract.id = None;
        extract.state = StepState::InProgress;
        let run2 = run_record(&lease, RunMode::Recovery, 200);
        let (_, run2_back) = ok(
            "begin_run",
            &key,
            store
                .begin_run(&lease, &flow, false, std::slice::from_ref(&extract), &run2)
                .await,
        );
        let snap2 = self.snapshot(&key).await;
        assert_eq!(
            snap2.steps.len(),
            2,
            "begin_run of {key} without purge: step records lost"
        );
        assert_eq!(
            snap2.steps[0].id, snap.steps[0].id,
            "begin_run of {key} without purge: step id changed"
        );
        assert_eq!(
            snap2.steps[0].state,
            StepState::InProgress,
            "begin_run of {key} without purge: step not updated"
        );
        assert_eq!(
            snap2.runs.len(),
            2,
            "list_runs of {key}: a begin_run did not add a run"
        );
        assert_eq!(
            snap2.runs[0].id, run2_back.id,
            "list_runs of {key}: not newest first"
        );
        ok("release_lease", &key, store.release_lease(&lease).await);
        ok("release_lease", &neighbour, store.release_lease(&nl).await);
    }

    pub(super) async fn begin_run_interrupted(&self) {
        let Some(interrupt) = self.s.interrupt.clone() else {
            crate::testkit::skip_check(
                "store-interrupt",
                "store conformance: begin_run interrupted between writes (the backend has no fault hook)",
            );
            return;
        };
        let store = self.store();
        for point in 0..interrupt.writes {
            let key = key(&format!("interrupt-{point}"));
            let lease = self.lease(&key, "interrupted", 0).await;
            let old = self.earlier_run(&key, &lease, FlowState::Invalid).await;
            let before = self.snapshot(&key).await;
            let mut flow = flow_record(&key, FlowState::InProgress, 0);
            flow.started_at = Some(at(100));
            let steps = vec![
                StepRecord::embryo(&key.flow_name, "extract", key.timeperiod, None, at(100)),
                StepRecord::embryo(&key.flow_name, "load", key.timeperiod, None, at(100)),
            ];
            let run = run_record(&lease, RunMode::Nominal, 100);
            (interrupt.arm)(point);
            let result = store.begin_run(&lease, &flow, true, &steps, &run).await;
            assert!(
                result.is_err(),
                "begin_run of {key} interrupted after {point} write(s): returned Ok"
            );
            let after = self.snapshot(&key).await;
            match self.s.begin_run {
                BeginRunKind::Atomic => assert_eq!(
                    after, before,
                    "begin_run of {key} interrupted after {point} write(s): an atomic begin_run left a partial write"
                ),
                BeginRunKind::Ordered => {
                    let shows_new_run = after
                        .flow
                        .as_ref()
                        .is_some_and(|f| f.started_at == flow.started_at);
                    if shows_new_run {
                        assert!(
                            after.steps.iter().all(|s| s.state == StepState::Embryo
                                && s.step_name != "obsolete"),
                            "begin_run of {key} interrupted after {point} write(s): the flow shows the new run next to step records of the purged run: {:?}",
                            after.steps
                        );
                    }
                }
            }
            // A retry (the next engine, or the same one) completes it.
            let (flow_back, _) = ok(
                "begin_run (retry after an interruption)",
                &key,
                store.begin_run(&lease, &flow, true, &steps, &run).await,
            );
            assert_eq!(
                flow_back.id, old.id,
                "begin_run of {key} after an interruption: flow id changed"
            );
            let done = self.snapshot(&key).await;
            let names: Vec<_> = done.steps.iter().map(|s| s.step_name.as_str()).collect();
            assert_eq!(
                names,
                ["extract", "load"],
                "begin_run of {key} after an interruption at {point}: steps"
            );
            assert!(
                done.flow
                    .as_ref()
                    .is_some_and(|f| f.state == FlowState::InProgress),
                "begin_run of {key} after an interruption at {point}: flow not in progress"
            );
            assert!(
                !done.runs.is_empty() && done.runs.len() <= 2,
                "begin_run of {key} after an interruption at {point}: {} run records",
                done.runs.len()
            );
            ok("release_lease", &key, store.release_lease(&lease).await);
        }
        eprintln!(
            "store conformance: begin_run interrupted at each of its {} writes ({})",
            interrupt.writes,
            match self.s.begin_run {
                BeginRunKind::Atomic => "atomic: nothing written",
                BeginRunKind::Ordered =>
                    "ordered fallback: safe partial states, completed by a retry",
            }
        );
    }
}
