//! Leases and fencing: the lifecycle, the race with one winner, stale
//! takeover, and writes with an old token refused.

use super::*;

/// Concurrent acquirers in the lease race.
const RACERS: usize = 16;

impl Suite {
    pub(super) async fn lease_lifecycle(&self) {
        let store = self.store();
        let key = key("lease");
        let ttl_ms = TTL.as_millis() as i64;
        assert_eq!(
            ok("get_lease", &key, store.get_lease(&key).await),
            None,
            "get_lease of {key} before any acquisition"
        );
        let a = self.lease(&key, "engine-a", 0).await;
        // Live: refused, naming the holder.
        match ok(
            "acquire_lease",
            &key,
            store
                .acquire_lease(&key, "engine-b", at(ttl_ms / 2), TTL)
                .await,
        ) {
            LeaseOutcome::HeldBy {
                owner,
                heartbeat_at,
            } => {
                assert_eq!(
                    owner, "engine-a",
                    "acquire_lease of {key}: refusal names the wrong holder"
                );
                assert_eq!(
                    heartbeat_at,
                    at(0),
                    "acquire_lease of {key}: refusal's heartbeat"
                );
            }
            other => panic!("acquire_lease of {key} while live: expected HeldBy, got {other:?}"),
        }
        // Renewing keeps it live past the first ttl.
        assert!(
            ok(
                "renew_lease",
                &key,
                store.renew_lease(&a, at(ttl_ms - 1)).await
            ),
            "renew_lease of {key} by its holder returned false"
        );
        let info = ok("get_lease", &key, store.get_lease(&key).await)
            .unwrap_or_else(|| panic!("get_lease of {key}: none"));
        assert_eq!(
            info.heartbeat_at,
            at(ttl_ms - 1),
            "renew_lease of {key}: heartbeat not moved"
        );
        assert!(
            info.is_live(at(ttl_ms + 1), TTL),
            "get_lease of {key}: renewed lease not live"
        );
        match ok(
            "acquire_lease",
            &key,
            store
                .acquire_lease(&key, "engine-b", at(ttl_ms + 1), TTL)
                .await,
        ) {
            LeaseOutcome::HeldBy { .. } => {}
            other => {
                panic!("acquire_lease of {key} after a renewal: expected HeldBy, got {other:?}")
            }
        }
        // Stale: taken over, with a larger token.
        let b = match ok(
            "acquire_lease",
            &key,
            store
                .acquire_lease(&key, "engine-b", at(2 * ttl_ms), TTL)
                .await,
        ) {
            LeaseOutcome::Acquired(b) => b,
            other => panic!("acquire_lease of {key}: a stale lease was not taken over: {other:?}"),
        };
        assert!(
            b.token > a.token,
            "acquire_lease of {key}: takeover token {} not larger than {}",
            b.token,
            a.token
        );
        assert!(
            !ok(
                "renew_lease",
                &key,
                store.renew_lease(&a, at(2 * ttl_ms + 1)).await
            ),
            "renew_lease of {key} after losing it returned true"
        );
        ok("release_lease", &key, store.release_lease(&a).await);
        let info = ok("get_lease", &key, store.get_lease(&key).await)
            .unwrap_or_else(|| panic!("get_lease of {key}: none"));
        assert_eq!(
            info.owner.as_deref(),
            Some("engine-b"),
            "release_lease of {key} by a former holder released the new holder's lease"
        );
        assert!(
            ok(
                "renew_lease",
                &key,
                store.renew_lease(&b, at(2 * ttl_ms + 2)).await
            ),
            "renew_lease of {key} by the new holder returned false"
        );
        // Release: free at once, token kept, the next token still larger.
        ok("release_lease", &key, store.release_lease(&b).await);
        let info = ok("get_lease", &key, store.get_lease(&key).await)
            .unwrap_or_else(|| panic!("get_lease of {key}: none"));
        assert_eq!(info.owner, None, "release_lease of {key}: still owned");
        assert_eq!(
            info.token, b.token,
            "release_lease of {key}: token not kept"
        );
        assert!(
            !ok(
                "renew_lease",
                &key,
                store.renew_lease(&b, at(2 * ttl_ms + 3)).await
            ),
            "renew_lease of {key} after release returned true"
        );
        let c = self.lease(&key, "engine-c", 2 * ttl_ms + 4).await;
        assert!(
            c.token > b.token,
            "acquire_lease of {key} after release: token {} not larger than {}",
            c.token,
            b.token
        );
        // The same owner acquiring again gets a new, larger token.
        let c2 = self.lease(&key, "engine-c", 2 * ttl_ms + 5).await;
        assert!(
            c2.token > c.token,
            "acquire_lease of {key} by its holder: token {} not larger than {}",
            c2.token,
            c.token
        );
        ok("release_lease", &key, store.release_lease(&c2).await);
    }

    pub(super) async fn lease_race(&self) {
        let key = key("race");
        let ttl_ms = TTL.as_millis() as i64;
        let mut last_token = 0;
        // Round 1: no lease yet. Round 2: a stale one. Round 3: a released one.
        for (round, now) in [(1, 0), (2, 2 * ttl_ms), (3, 2 * ttl_ms + 1)] {
            let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
            let mut racers = tokio::task::JoinSet::new();
            for i in 0..RACERS {
                let store = self.handle(i);
                let key = key.clone();
                let barrier = barrier.clone();
                racers.spawn(async move {
                    barrier.wait().await;
                    let owner = format!("racer-{round}-{i}");
                    (
                        owner.clone(),
                        store.acquire_lease(&key, &owner, at(now), TTL).await,
                    )
                });
            }
            let mut winners = Vec::new();
            let mut refused = Vec::new();
            while let Some(joined) = racers.join_next().await {
                let (owner, result) =
                    joined.unwrap_or_else(|e| panic!("acquire_lease racer panicked: {e}"));
                match ok("acquire_lease (race)", &key, result) {
                    LeaseOutcome::Acquired(lease) => winners.push(lease),
                    LeaseOutcome::HeldBy { owner: holder, .. } => refused.push((owner, holder)),
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "acquire_lease of {key}, round {round}: {RACERS} concurrent acquirers, {} winners: {winners:?}",
                winners.len()
            );
            let winner = &winners[0];
            for (owner, holder) in &refused {
                assert_eq!(holder, &winner.owner, "acquire_lease of {key}, round {round}: {owner} was refused naming {holder}, but {} won", winner.owner);
            }
            assert!(
                winner.token > last_token,
                "acquire_lease of {key}, round {round}: token {} not larger than {last_token}",
                winner.token
            );
            last_token = winner.token;
            if round == 2 {
                ok(
                    "release_lease",
                    &key,
                    self.store().release_lease(winner).await,
                );
            }
        }
        eprintln!("store conformance: lease race of {RACERS} acquirers over {} handle(s): one winner in each of 3 rounds", self.s.handles.len());
    }

    pub(super) async fn fencing(&self) {
        let store = self.store();
        let key = key("fence");
        let ttl_ms = TTL.as_millis() as i64;
        let a = self.lease(&key, "stalled-engine", 0).await;
        let flow = ok(
            "save_flow",
            &key,
            store
                .save_flow(&a, &flow_record(&key, FlowState::InProgress, 0))
                .await,
        );
        let mut step = step_record(&key, "extract", StepState::InProgress, 1);
        step.related_flow = flow.id.clone();
        step.id = Some(ok("save_step", &key, store.save_step(&a, &step).await));
        let (_, run) = ok(
            "begin_run",
            &key,
            store
                .begin_run(&a, &flow, false, &[], &run_record(&a, RunMode::Nominal, 2))
                .await,
        );
        let run_id = run
            .id
            .clone()
            .unwrap_or_else(|| panic!("begin_run of {key}: run without id"));
        let mut cluster = cluster_record(&key, &run_id, "emr-0", 3);
        cluster.id = Some(ok(
            "save_cluster",
            &key,
            store.save_cluster(&a, &cluster).await,
        ));

        // Another engine takes the stale lease over; the first one wakes up.
        let b = match ok(
            "acquire_lease",
            &key,
            store
                .acquire_lease(&key, "new-engine", at(2 * ttl_ms), TTL)
                .await,
        ) {
            LeaseOutcome::Acquired(b) => b,
            other => panic!("acquire_lease of {key}: stale lease not taken over: {other:?}"),
        };
        let before = self.snapshot(&key).await;
        let mut f2 = flow.clone();
        f2.state = FlowState::Invalid;
        let mut s2 = step.clone();
        s2.state = StepState::Canceled;
        let mut new_step = StepRecord::embryo(
            &key.flow_name,
            "brand-new",
            key.timeperiod,
            flow.id.clone(),
            at(5),
        );
        let mut c2 = cluster.clone();
        c2.state = ClusterState::Terminated;
        let mut c_new = cluster_record(&key, &run_id, "emr-1", 6);
        let mut r2 = run.clone();
        r2.finished_at = Some(at(7));
        r2.outcome = Some(FlowState::Invalid);
        expect_fenced("save_flow", &key, store.save_flow(&a, &f2).await);
        expect_fenced("save_step (update)", &key, store.save_step(&a, &s2).await);
        expect_fenced(
            "save_step (insert)",
            &key,
            store.save_step(&a, &new_step).await,
        );
        expect_fenced(
            "save_flow_and_steps",
            &key,
            store
                .save_flow_and_steps(&a, &f2, &[s2.clone(), new_step.clone()])
                .await,
        );
        expect_fenced(
            "begin_run (no purge)",
            &key,
            store
                .begin_run(
                    &a,
                    &f2,
                    false,
                    std::slice::from_ref(&new_step),
                    &run_record(&a, RunMode::Recovery, 8),
                )
                .await,
        );
        expect_fenced(
            "begin_run (purge)",
            &key,
            store
                .begin_run(&a, &f2, true, &[], &run_record(&a, RunMode::Nominal, 8))
                .await,
        );
        expect_fenced("finish_run", &key, store.finish_run(&a, &r2).await);
        expect_fenced(
            "save_cluster (update)",
            &key,
            store.save_cluster(&a, &c2).await,
        );
        expect_fenced(
            "save_cluster (insert)",
            &key,
            store.save_cluster(&a, &c_new).await,
        );
        assert_eq!(
            self.snapshot(&key).await,
            before,
            "fenced writes of {key} with a stale token changed the store"
        );

        // The new holder writes the same things.
        ok("save_flow", &key, store.save_flow(&b, &f2).await);
        ok("save_step", &key, store.save_step(&b, &s2).await);
        new_step.id = Some(ok("save_step", &key, store.save_step(&b, &new_step).await));
        ok("finish_run", &key, store.finish_run(&b, &r2).await);
        ok("save_cluster", &key, store.save_cluster(&b, &c2).await);
        c_new.id = Some(ok(
            "save_cluster",
            &key,
            store.save_cluster(&b, &c_new).await,
        ));
        let after = self.snapshot(&key).await;
        assert_eq!(
            after.flow.as_ref().map(|f| f.state),
            Some(FlowState::Invalid),
            "save_flow of {key} by the new holder"
        );
        assert_eq!(after.steps.len(), 2, "save_step of {key} by the new holder");
        assert_eq!(
            after.runs[0].outcome,
            Some(FlowState::Invalid),
            "finish_run of {key} by the new holder"
        );
        assert_eq!(
            after.clusters.len(),
            2,
            "save_cluster of {key} by the new holder"
        );

        // Released or taken over again: the old tokens stay fenced.
        ok("release_lease", &key, store.release_lease(&b).await);
        let c = self.lease(&key, "third-engine", 2 * ttl_ms + 1).await;
        expect_fenced(
            "save_flow (after two takeovers)",
            &key,
            store.save_flow(&a, &f2).await,
        );
        expect_fenced(
            "save_step (token of a released lease)",
            &key,
            store.save_step(&b, &s2).await,
        );
        ok("save_flow", &key, store.save_flow(&c, &f2).await);
        ok("release_lease", &key, store.release_lease(&c).await);
        // A fenced error names the key and the stale token.
        match store.save_flow(&a, &f2).await {
            Err(StoreError::Fenced { key: k, token, .. }) => {
                assert!(
                    k.contains(&key.flow_name),
                    "Fenced error of {key}: names key {k}"
                );
                assert_eq!(token, a.token, "Fenced error of {key}: names token {token}");
            }
            other => panic!("save_flow of {key} with a stale token: {other:?}"),
        }
    }
}
