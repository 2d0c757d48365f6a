//! Flow, step, run and cluster records: CRUD by key, listing filters,
//! legacy fixtures and ids that round-trip as strings.

use super::*;

impl Suite {
    pub(super) async fn legacy_fixtures_read_back(&self) {
        if self.s.legacy.is_empty() {
            crate::testkit::skip_check(
                "store-legacy",
                "store conformance: older-schema fixtures (the backend supplied none)",
            );
        }
        for fixture in &self.s.legacy {
            let key = fixture.flow.key();
            let what = format!("fixture {} ({key})", fixture.name);
            let flow = ok("get_flow", &what, self.store().get_flow(&key).await)
                .unwrap_or_else(|| panic!("get_flow of {what}: no record"));
            assert_eq!(
                flow, fixture.flow,
                "get_flow of {what}: reads back differently"
            );
            let steps = by_name(ok("get_steps", &what, self.store().get_steps(&key).await));
            assert_eq!(
                steps,
                by_name(fixture.steps.clone()),
                "get_steps of {what}: read back differently"
            );
            // An older record can be taken over and written by this version.
            let lease = self.lease(&key, "fixture-upgrader", 0).await;
            let mut flow = flow.clone();
            flow.state = FlowState::InProgress;
            let saved = ok(
                "save_flow",
                &what,
                self.store().save_flow(&lease, &flow).await,
            );
            assert_eq!(saved.id, fixture.flow.id, "save_flow of {what}: id changed");
            let mut step = steps
                .first()
                .cloned()
                .unwrap_or_else(|| panic!("{what}: a fixture needs at least one step"));
            step.attempts = 1;
            let id = ok(
                "save_step",
                &what,
                self.store().save_step(&lease, &step).await,
            );
            assert_eq!(Some(id), step.id, "save_step of {what}: id changed");
            let again = by_name(ok("get_steps", &what, self.store().get_steps(&key).await));
            assert_eq!(
                again.iter().find(|s| s.step_name == step.step_name),
                Some(&step),
                "save_step of {what}: the updated older record reads back differently"
            );
            ok(
                "release_lease",
                &what,
                self.store().release_lease(&lease).await,
            );
        }
    }

    pub(super) async fn crud_by_key(&self) {
        let store = self.store();
        let key = key("crud");
        assert_eq!(
            ok("get_flow", &key, store.get_flow(&key).await),
            None,
            "get_flow of {key} in an empty store"
        );
        assert!(
            ok("get_steps", &key, store.get_steps(&key).await).is_empty(),
            "get_steps of {key} in an empty store"
        );
        let lease = self.lease(&key, "crud-owner", 0).await;

        // Insert, then update by key (with and without the id).
        let mut flow = flow_record(&key, FlowState::Embryo, 0);
        let saved = ok("save_flow", &key, store.save_flow(&lease, &flow).await);
        let id = saved
            .id
            .clone()
            .unwrap_or_else(|| panic!("save_flow of {key}: no id returned"));
        flow.id = Some(id.clone());
        assert_eq!(saved, flow, "save_flow of {key}: returned record differs");
        assert_eq!(
            ok("get_flow", &key, store.get_flow(&key).await).as_ref(),
            Some(&flow),
            "get_flow of {key} after insert"
        );
        let mut changed = flow.clone();
        changed.id = None;
        changed.state = FlowState::Processed;
        changed.run_mode = RunMode::Recovery;
        changed.finished_at = Some(at(500));
        changed.graph_hash = None;
        let saved = ok("save_flow", &key, store.save_flow(&lease, &changed).await);
        assert_eq!(
            saved.id.as_ref(),
            Some(&id),
            "save_flow of {key} by key: id changed"
        );
        changed.id = Some(id.clone());
        assert_eq!(
            ok("get_flow", &key, store.get_flow(&key).await).as_ref(),
            Some(&changed),
            "get_flow of {key} after update by key"
        );

        // Steps: insert, update by key, every field round trips.
        let mut a = step_record(&key, "extract", StepState::InProgress, 10);
        a.related_flow = Some(id.clone());
        let a_id = ok("save_step", &key, store.save_step(&lease, &a).await);
        a.id = Some(a_id.clone());
        let mut b = StepRecord::embryo(
            &key.flow_name,
            "load",
            key.timeperiod,
            Some(id.clone()),
            at(11),
        );
        let b_id = ok("save_step", &key, store.save_step(&lease, &b).await);
        b.id = Some(b_id.clone());
        assert_ne!(a_id, b_id, "save_step of {key}: two steps got one id");
        assert_eq!(
            by_name(ok("get_steps", &key, store.get_steps(&key).await)),
            vec![a.clone(), b.clone()],
            "get_steps of {key} after inserts"
        );
        let mut a2 = a.clone();
        a2.id = None;
        a2.state = StepState::Processed;
        a2.finished_at = Some(at(20));
        a2.job = None;
        a2.error = None;
        a2.rollbacks.push(RollbackRecord {
            action: "main".into(),
            cause: RollbackCause::Requested,
            at: at(21),
            error: Some("could not undo".into()),
        });
        let again = ok("save_step", &key, store.save_step(&lease, &a2).await);
        assert_eq!(again, a_id, "save_step of {key} by key: id changed");
        a2.id = Some(a_id);
        assert_eq!(
            by_name(ok("get_steps", &key, store.get_steps(&key).await)),
            vec![a2.clone(), b.clone()],
            "get_steps of {key} after update by key"
        );

        // Flow and steps together.
        let mut f3 = changed.clone();
        f3.state = FlowState::Invalid;
        let mut b3 = b.clone();
        b3.state = StepState::Canceled;
        b3.finished_at = Some(at(30));
        let saved = ok(
            "save_flow_and_steps",
            &key,
            store
                .save_flow_and_steps(&lease, &f3, std::slice::from_ref(&b3))
                .await,
        );
        assert_eq!(
            saved, f3,
            "save_flow_and_steps of {key}: returned flow differs"
        );
        assert_eq!(
            self.snapshot(&key).await.flow.as_ref(),
            Some(&f3),
            "get_flow of {key} after save_flow_and_steps"
        );
        assert_eq!(
            by_name(ok("get_steps", &key, store.get_steps(&key).await)),
            vec![a2, b3],
            "get_steps of {key} after save_flow_and_steps"
        );

        // Another timeperiod of the same flow is another record.
        let other = FlowKey::new(key.flow_name.clone(), tp("2026112900"));
        assert_eq!(
            ok("get_flow", &other, store.get_flow(&other).await),
            None,
            "get_flow of {other}: sees the record of {key}"
        );
        assert!(
            ok("get_steps", &other, store.get_steps(&other).await).is_empty(),
            "get_steps of {other}: sees the steps of {key}"
        );
        let info = ok("get_lease", &key, store.get_lease(&key).await)
            .unwrap_or_else(|| panic!("get_lease of {key}: none after acquire"));
        assert_eq!(
            info.owner.as_deref(),
            Some("crud-owner"),
            "get_lease of {key}: owner"
        );
        assert_eq!(info.token, lease.token, "get_lease of {key}: token");
        assert_eq!(info.acquired_at, at(0), "get_lease of {key}: acquired_at");
        ok("release_lease", &key, store.release_lease(&lease).await);
    }

    pub(super) async fn list_flows_filters(&self) {
        let store = self.store();
        let name = "conformance-list";
        let periods = ["2026112600", "2026112700", "2026112800", "2026112900"];
        for (i, p) in periods.iter().enumerate() {
            let key = FlowKey::new(name, tp(p));
            let lease = self.lease(&key, "lister", 0).await;
            let state = if i % 2 == 0 {
                FlowState::Processed
            } else {
                FlowState::Invalid
            };
            ok(
                "save_flow",
                &key,
                store
                    .save_flow(&lease, &flow_record(&key, state, i as i64))
                    .await,
            );
            ok("release_lease", &key, store.release_lease(&lease).await);
        }
        let list = |q: FlowQuery| async move {
            ok("list_flows", &name, store.list_flows(&q).await)
                .into_iter()
                .map(|f| f.timeperiod.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            list(FlowQuery::named(Some(name))).await,
            vec!["2026112900", "2026112800", "2026112700", "2026112600"],
            "list_flows of {name}: newest timeperiod first"
        );
        let all = ok(
            "list_flows",
            &"every flow",
            store.list_flows(&FlowQuery::named(None)).await,
        );
        assert!(
            all.iter().filter(|f| f.flow_name == name).count() == 4
                && all.iter().any(|f| f.flow_name == "conformance-crud"),
            "list_flows of every flow: misses records"
        );
        assert_eq!(
            list(FlowQuery {
                state: Some(FlowState::Invalid),
                ..FlowQuery::named(Some(name))
            })
            .await,
            vec!["2026112900", "2026112700"],
            "list_flows of {name} by state"
        );
        assert_eq!(
            list(FlowQuery {
                from: Some(tp("2026112700")),
                to: Some(tp("2026112900")),
                ..FlowQuery::named(Some(name))
            })
            .await,
            vec!["2026112800", "2026112700"],
            "list_flows of {name} with from (inclusive) and to (exclusive)"
        );
        assert_eq!(
            list(FlowQuery {
                limit: Some(2),
                offset: 1,
                ..FlowQuery::named(Some(name))
            })
            .await,
            vec!["2026112800", "2026112700"],
            "list_flows of {name} with limit and offset"
        );
    }

    /// `count_sla_missed` counts a flow's records marked missed, no other
    /// flow's and no unmarked record, and follows a new mark.
    pub(super) async fn sla_misses_counted(&self) {
        let store = self.store();
        let (name, other) = ("conformance-sla", "conformance-sla-other");
        let save = |name: &'static str, period: &'static str, missed: bool| async move {
            let key = FlowKey::new(name, tp(period));
            let lease = self.lease(&key, "sla", 0).await;
            let mut record = flow_record(&key, FlowState::Processed, 0);
            if !missed {
                record.sla_missed_at = None;
            }
            ok("save_flow", &key, store.save_flow(&lease, &record).await);
            ok("release_lease", &key, store.release_lease(&lease).await);
        };
        let count = |name: &'static str| async move {
            ok(
                "count_sla_missed",
                &name,
                store.count_sla_missed(name).await,
            )
        };
        assert_eq!(
            count(name).await,
            0,
            "count_sla_missed of a flow without records"
        );
        save(name, "2026112600", true).await;
        save(name, "2026112700", false).await;
        save(name, "2026112800", true).await;
        save(name, "2026112900", false).await;
        save(other, "2026112800", true).await;
        assert_eq!(count(name).await, 2, "count_sla_missed of {name}");
        assert_eq!(count(other).await, 1, "count_sla_missed of {other}");
        save(name, "2026112900", true).await;
        assert_eq!(count(name).await, 3, "count_sla_missed after a new mark");
        assert_eq!(
            count("conformance-sla-none").await,
            0,
            "count_sla_missed of an unknown flow"
        );
    }

    pub(super) async fn runs(&self) {
        let store = self.store();
        let key = key("history");
        let other = FlowKey::new(key.flow_name.clone(), tp("2026112900"));
        let mut ids = Vec::new();
        for (i, k) in [&key, &other, &key].into_iter().enumerate() {
            let lease = self.lease(k, "historian", 10 * i as i64).await;
            let mut run = run_record(&lease, RunMode::Nominal, 10 * i as i64);
            run.target = Some("load".into());
            let (_, run) = ok(
                "begin_run",
                k,
                store
                    .begin_run(
                        &lease,
                        &flow_record(k, FlowState::InProgress, 0),
                        false,
                        &[],
                        &run,
                    )
                    .await,
            );
            let mut finished = run.clone();
            finished.finished_at = Some(at(10 * i as i64 + 5));
            finished.outcome = Some(FlowState::Processed);
            finished.steps = vec![RunStep {
                step_name: "extract".into(),
                state: StepState::Processed,
            }];
            finished.error = Some("none, really".into());
            ok("finish_run", k, store.finish_run(&lease, &finished).await);
            ok("release_lease", k, store.release_lease(&lease).await);
            ids.push(finished);
        }
        let q = |timeperiod: Option<Timeperiod>, limit| RunQuery {
            flow_name: Some(key.flow_name.clone()),
            timeperiod,
            limit,
        };
        let all = ok("list_runs", &key, store.list_runs(&q(None, None)).await);
        assert_eq!(
            all,
            vec![ids[2].clone(), ids[1].clone(), ids[0].clone()],
            "list_runs of {}: every run, newest first, as finished",
            key.flow_name
        );
        let one = ok(
            "list_runs",
            &key,
            store.list_runs(&q(Some(key.timeperiod), None)).await,
        );
        assert_eq!(
            one,
            vec![ids[2].clone(), ids[0].clone()],
            "list_runs of {key}: by timeperiod"
        );
        let limited = ok("list_runs", &key, store.list_runs(&q(None, Some(1))).await);
        assert_eq!(
            limited,
            vec![ids[2].clone()],
            "list_runs of {} with limit 1",
            key.flow_name
        );
        let everyone = ok(
            "list_runs",
            &"every flow",
            store.list_runs(&RunQuery::default()).await,
        );
        assert!(
            ids.iter().all(|r| everyone.contains(r)),
            "list_runs of every flow: misses runs"
        );
    }

    pub(super) async fn clusters(&self) {
        let store = self.store();
        let key = key("clusters");
        let lease = self.lease(&key, "launcher", 0).await;
        let (_, run) = ok(
            "begin_run",
            &key,
            store
                .begin_run(
                    &lease,
                    &flow_record(&key, FlowState::InProgress, 0),
                    false,
                    &[],
                    &run_record(&lease, RunMode::Nominal, 0),
                )
                .await,
        );
        let run_id = run
            .id
            .unwrap_or_else(|| panic!("begin_run of {key}: run without id"));
        let mut first = cluster_record(&key, &run_id, "emr-0", 1);
        let mut second = cluster_record(&key, &run_id, "emr-1", 2);
        second.handle.reused = true;
        first.id = Some(ok(
            "save_cluster",
            &key,
            store.save_cluster(&lease, &first).await,
        ));
        second.id = Some(ok(
            "save_cluster",
            &key,
            store.save_cluster(&lease, &second).await,
        ));
        assert_ne!(
            first.id, second.id,
            "save_cluster of {key}: two clusters got one id"
        );
        first.state = ClusterState::TerminateFailed;
        first.updated_at = at(9);
        first.message = Some("TerminateJobFlows: AccessDenied".into());
        // Its usage is kept whole (instances, end, what EMR reported).
        first.usage.ended_at = Some(at(9));
        first.usage.normalized_instance_hours = Some(32.0);
        let id = ok(
            "save_cluster",
            &key,
            store.save_cluster(&lease, &first).await,
        );
        assert_eq!(
            Some(id),
            first.id,
            "save_cluster of {key}: an update changed the id"
        );
        let listed = ok("list_clusters", &key, store.list_clusters(Some(&key)).await);
        assert_eq!(
            listed,
            vec![first.clone(), second.clone()],
            "list_clusters of {key}: oldest first, as saved"
        );
        let all = ok(
            "list_clusters",
            &"every flow",
            store.list_clusters(None).await,
        );
        assert!(
            all.contains(&first) && all.contains(&second),
            "list_clusters of every flow: misses {key}'s"
        );
        ok("release_lease", &key, store.release_lease(&lease).await);
    }

    pub(super) async fn ids_round_trip_as_strings(&self) {
        let store = self.store();
        let key = key("ids");
        let lease = self.lease(&key, "ids", 0).await;
        let (flow, run) = ok(
            "begin_run",
            &key,
            store
                .begin_run(
                    &lease,
                    &flow_record(&key, FlowState::InProgress, 0),
                    false,
                    &[StepRecord::embryo(
                        &key.flow_name,
                        "extract",
                        key.timeperiod,
                        None,
                        at(0),
                    )],
                    &run_record(&lease, RunMode::Nominal, 0),
                )
                .await,
        );
        let flow_id = flow
            .id
            .clone()
            .unwrap_or_else(|| panic!("begin_run of {key}: flow without id"));
        let run_id = run
            .id
            .clone()
            .unwrap_or_else(|| panic!("begin_run of {key}: run without id"));
        for id in [&flow_id, &run_id] {
            let text = id.to_string();
            assert!(!text.is_empty(), "ids of {key}: empty id");
            let json = serde_json_like(id);
            assert_eq!(
                json,
                format!("\"{text}\""),
                "ids of {key}: not serialized as a string"
            );
        }
        // Ids rebuilt from their text (as a CLI argument or a JSON answer
        // would) find the same records.
        let rebuilt_run = RecordId::new(run_id.to_string());
        let mut finished = run.clone();
        finished.id = Some(rebuilt_run.clone());
        finished.outcome = Some(FlowState::Processed);
        ok(
            "finish_run (id from its text)",
            &key,
            store.finish_run(&lease, &finished).await,
        );
        let runs = ok(
            "list_runs",
            &key,
            store
                .list_runs(&RunQuery {
                    flow_name: Some(key.flow_name.clone()),
                    timeperiod: Some(key.timeperiod),
                    limit: None,
                })
                .await,
        );
        assert_eq!(
            runs,
            vec![finished.clone()],
            "finish_run of {key} with an id rebuilt from text"
        );
        let mut cluster = cluster_record(&key, &rebuilt_run, "emr-0", 0);
        let cid = ok(
            "save_cluster",
            &key,
            store.save_cluster(&lease, &cluster).await,
        );
        cluster.id = Some(RecordId::new(cid.to_string()));
        cluster.state = ClusterState::Up;
        let cid2 = ok(
            "save_cluster (id from its text)",
            &key,
            store.save_cluster(&lease, &cluster).await,
        );
        assert_eq!(
            cid2, cid,
            "save_cluster of {key} with an id rebuilt from text: another id"
        );
        assert_eq!(
            ok("list_clusters", &key, store.list_clusters(Some(&key)).await),
            vec![cluster],
            "list_clusters of {key}"
        );
        ok(
            "append_logs",
            &key,
            store
                .append_logs(&[line(&key, &run_id, None, "by id".into(), 0)])
                .await,
        );
        let mut q = LogQuery::new(key.clone(), 10);
        q.run = Some(rebuilt_run);
        assert_eq!(
            ok("read_logs", &key, store.read_logs(&q).await).len(),
            1,
            "read_logs of {key} by a run id rebuilt from text"
        );
        let steps = ok("get_steps", &key, store.get_steps(&key).await);
        assert_eq!(
            steps[0].related_flow.as_ref().map(RecordId::as_str),
            Some(flow_id.as_str()),
            "get_steps of {key}: related_flow is not the flow's id"
        );
        ok("release_lease", &key, store.release_lease(&lease).await);
    }
}

/// The JSON text of an id, without a JSON dependency in `flow-core`: ids
/// are `#[serde(transparent)]` strings, so their TOML value is the same
/// quoted text.
fn serde_json_like(id: &RecordId) -> String {
    #[derive(serde::Serialize)]
    struct Wrap<'a> {
        id: &'a RecordId,
    }
    toml::to_string(&Wrap { id })
        .unwrap_or_default()
        .trim()
        .trim_start_matches("id = ")
        .replace('\'', "\"")
}
