//! Shared clusters: one launch among racing claimants, the last live user
//! ends the cluster, dead users count for nothing, fencing.

use super::{at, expect_fenced, key, ok, Suite, TTL};
use crate::cluster::ClusterHandle;
use crate::record::RecordId;
use crate::shared_cluster::{ClusterClaim, ClusterRelease, SharedClusterKey};
use crate::store::Lease;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs claiming one name at once (the twelve).
const CLAIMANTS: usize = 12;

fn handle(backend_id: &str) -> ClusterHandle {
    ClusterHandle {
        kind: "emr".into(),
        name: "emr-0".into(),
        backend_id: backend_id.into(),
        reused: false,
        details: BTreeMap::from([("shared_name".to_string(), "etl-0".to_string())]),
    }
}

impl Suite {
    pub(super) async fn shared_clusters(&self) {
        let cluster = SharedClusterKey::new("emr", "conformance/etl-0");
        let run = RecordId::new("1");
        let mut leases: Vec<Lease> = Vec::new();
        for i in 0..CLAIMANTS {
            leases.push(self.lease(&key(&format!("shared-{i}")), "engine", 0).await);
        }

        // Twelve runs claim one free name at once: one launches.
        let barrier = Arc::new(tokio::sync::Barrier::new(CLAIMANTS));
        let mut racers = tokio::task::JoinSet::new();
        for (i, lease) in leases.iter().enumerate() {
            let (store, barrier, lease) = (self.handle(i), barrier.clone(), lease.clone());
            let (cluster, run) = (cluster.clone(), run.clone());
            racers.spawn(async move {
                barrier.wait().await;
                let claim = store
                    .claim_cluster(&lease, &run, &cluster, at(1), TTL)
                    .await;
                (i, claim)
            });
        }
        let mut launchers = Vec::new();
        while let Some(joined) = racers.join_next().await {
            let (i, claim) = joined.unwrap_or_else(|e| panic!("claim_cluster racer panicked: {e}"));
            match ok("claim_cluster (race)", &cluster, claim) {
                ClusterClaim::Launch => launchers.push(i),
                ClusterClaim::Wait => {}
                ClusterClaim::Join(h) => {
                    panic!("claim_cluster of {cluster}: joined {h} before anyone named it")
                }
            }
        }
        assert_eq!(
            launchers.len(),
            1,
            "claim_cluster of {cluster}: {CLAIMANTS} concurrent claimants, launchers {launchers:?}"
        );
        let launcher = launchers[0];
        // Only the launcher names it; then everyone else joins.
        let others: Vec<usize> = (0..CLAIMANTS).filter(|i| *i != launcher).collect();
        assert!(
            self.store()
                .set_cluster_handle(&leases[others[0]], &cluster, &handle("j-1"))
                .await
                .is_err(),
            "set_cluster_handle of {cluster} by a run that is not launching it succeeded"
        );
        ok(
            "set_cluster_handle",
            &cluster,
            self.store()
                .set_cluster_handle(&leases[launcher], &cluster, &handle("j-1"))
                .await,
        );
        for &i in &others {
            let claim = ok(
                "claim_cluster",
                &cluster,
                self.handle(i)
                    .claim_cluster(&leases[i], &run, &cluster, at(2), TTL)
                    .await,
            );
            assert_eq!(
                claim,
                ClusterClaim::Join(handle("j-1")),
                "claim_cluster of {cluster} once named"
            );
        }

        // A stale lease writes nothing.
        let stale = Lease {
            token: leases[launcher].token.saturating_sub(1),
            ..leases[launcher].clone()
        };
        expect_fenced(
            "release_cluster",
            &cluster,
            self.store()
                .release_cluster(&stale, &cluster, at(3), TTL)
                .await,
        );

        // Every user but one leaves: the cluster stays; the last ends it.
        let (last, leaving) = others.split_last().unwrap_or_else(|| unreachable!());
        for (n, &i) in std::iter::once(&launcher).chain(leaving).enumerate() {
            let answer = ok(
                "release_cluster",
                &cluster,
                self.store()
                    .release_cluster(&leases[i], &cluster, at(3), TTL)
                    .await,
            );
            assert_eq!(
                answer,
                ClusterRelease::Others(CLAIMANTS - 1 - n),
                "release_cluster of {cluster} by user {i}"
            );
        }
        let answer = ok(
            "release_cluster",
            &cluster,
            self.store()
                .release_cluster(&leases[*last], &cluster, at(3), TTL)
                .await,
        );
        assert_eq!(
            answer,
            ClusterRelease::Last,
            "release_cluster by the last user"
        );
        // While the last user ends it, nobody joins or launches it.
        let claim = ok(
            "claim_cluster",
            &cluster,
            self.store()
                .claim_cluster(&leases[launcher], &run, &cluster, at(4), TTL)
                .await,
        );
        assert_eq!(claim, ClusterClaim::Wait, "claim_cluster while it is ended");
        ok(
            "forget_cluster",
            &cluster,
            self.store()
                .forget_cluster(&leases[*last], &cluster, "j-1")
                .await,
        );
        let claim = ok(
            "claim_cluster",
            &cluster,
            self.store()
                .claim_cluster(&leases[launcher], &run, &cluster, at(5), TTL)
                .await,
        );
        assert_eq!(claim, ClusterClaim::Launch, "claim_cluster once forgotten");

        // A dead user (no heartbeat within the time to live) keeps nothing
        // up: a live run joining after it is the last user.
        ok(
            "set_cluster_handle",
            &cluster,
            self.store()
                .set_cluster_handle(&leases[launcher], &cluster, &handle("j-2"))
                .await,
        );
        let later = at(5 + 2 * TTL.as_millis() as i64);
        let fresh = self
            .lease(
                &key("shared-late"),
                "engine",
                5 + 2 * TTL.as_millis() as i64,
            )
            .await;
        let claim = ok(
            "claim_cluster",
            &cluster,
            self.store()
                .claim_cluster(&fresh, &run, &cluster, later, TTL)
                .await,
        );
        assert_eq!(claim, ClusterClaim::Join(handle("j-2")));
        let answer = ok(
            "release_cluster",
            &cluster,
            self.store()
                .release_cluster(&fresh, &cluster, later, TTL)
                .await,
        );
        assert_eq!(
            answer,
            ClusterRelease::Last,
            "release_cluster of {cluster}: the other user's lease is stale, so it does not count"
        );
        eprintln!(
            "store conformance: {CLAIMANTS} runs claimed one shared cluster over {} handle(s): one launch",
            self.s.handles.len()
        );
    }
}
