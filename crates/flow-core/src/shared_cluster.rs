//! Clusters that runs share, and the one rule for who launches and who
//! ends them.
//!
//! A cloud cluster found by name (EMR with `reuse`, Dataproc always) may be
//! used by several runs at once, of one flow or of many. The store keeps,
//! per shared name, which live runs use it ([`SharedCluster`]); launching
//! or reusing a name is one atomic decision there
//! ([`FlowStore::claim_cluster`](crate::FlowStore::claim_cluster)), and a
//! run that ends removes itself
//! ([`FlowStore::release_cluster`](crate::FlowStore::release_cluster)): only
//! the last user ends the cluster. The decisions themselves are the pure
//! functions here ([`SharedCluster::claim`], [`SharedCluster::release`]),
//! which every store applies inside its own atomic step, so each backend
//! keeps the same rule.
//!
//! A user is a run holding its flow's lease, named by the lease's token: an
//! entry whose token is no longer its flow's current one, or whose lease
//! has no heartbeat within the time to live, is a dead run's and counts for
//! nothing (it is dropped at the next claim or release), so a crashed run
//! never keeps a cluster alive forever, and a stalled engine that wakes
//! cannot remove its successor's entry.

use crate::cluster::ClusterHandle;
use crate::record::{FlowKey, RecordId};
use crate::store::LeaseInfo;
use crate::timeperiod::Timeperiod;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The key under which a cluster's handle records its shared name, so a
/// later engine (`recover`, `flow clusters --terminate-orphans`) finds its
/// [`SharedCluster`] record.
pub const SHARED_NAME_DETAIL: &str = "shared_name";

/// A shared cluster's identity: its kind and the name runs find it by
/// (for example the region and EMR name, or Dataproc's project, region and
/// cluster name), as the cluster crate spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SharedClusterKey {
    /// The backend kind, e.g. `emr`.
    pub kind: String,
    /// The name runs share it by.
    pub name: String,
}

impl SharedClusterKey {
    /// The key of `kind` and `name`.
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        SharedClusterKey {
            kind: kind.into(),
            name: name.into(),
        }
    }

    /// The key a recorded handle carries, if its cluster is shared.
    pub fn of_handle(handle: &ClusterHandle) -> Option<Self> {
        handle
            .details
            .get(SHARED_NAME_DETAIL)
            .map(|name| SharedClusterKey::new(handle.kind.clone(), name.clone()))
    }
}

impl fmt::Display for SharedClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cluster {}", self.kind, self.name)
    }
}

/// A run using a shared cluster, named by the lease it held when it
/// claimed the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterUser {
    /// The run's flow.
    pub flow_name: String,
    /// The run's timeperiod.
    pub timeperiod: Timeperiod,
    /// The run.
    pub run: RecordId,
    /// Its lease's fencing token.
    pub token: u64,
}

impl ClusterUser {
    /// The user of the run `run` holding a lease with `token` on `key`.
    pub fn new(key: &FlowKey, run: RecordId, token: u64) -> Self {
        ClusterUser {
            flow_name: key.flow_name.clone(),
            timeperiod: key.timeperiod,
            run,
            token,
        }
    }

    /// The user's flow.
    pub fn key(&self) -> FlowKey {
        FlowKey::new(self.flow_name.clone(), self.timeperiod)
    }

    /// True while the run still holds its lease: `lease` (its flow's, as
    /// stored) has this token, an owner, and a heartbeat newer than
    /// `now - ttl`.
    pub fn is_live(&self, lease: Option<&LeaseInfo>, now: DateTime<Utc>, ttl: Duration) -> bool {
        lease.is_some_and(|l| l.token == self.token && l.is_live(now, ttl))
    }

    fn same_flow(&self, other: &ClusterUser) -> bool {
        self.flow_name == other.flow_name && self.timeperiod == other.timeperiod
    }
}

/// Which runs use a shared cluster, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedCluster {
    /// Its identity.
    pub key: SharedClusterKey,
    /// The cluster, once its launcher has it (`None` while launching).
    pub handle: Option<ClusterHandle>,
    /// The run that launched (or first reused) it.
    pub launcher: ClusterUser,
    /// The runs using it, the launcher among them while it runs.
    pub users: Vec<ClusterUser>,
    /// The last user, ending it: no one joins any more.
    pub ending: Option<ClusterUser>,
}

/// The store's answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterClaim {
    /// No live run has the name: the caller launches it (or reuses one
    /// found outside flow) and records the handle with
    /// [`FlowStore::set_cluster_handle`](crate::FlowStore::set_cluster_handle).
    Launch,
    /// The caller is now a user of this cluster, launched by another run.
    Join(ClusterHandle),
    /// Another live run is launching it or ending it: ask again shortly.
    Wait,
}

/// The store's answer to a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterRelease {
    /// The caller was its last live user: it ends the cluster, then
    /// [`forget_cluster`](crate::FlowStore::forget_cluster)s it.
    Last,
    /// Other live runs still use it (this many): leave it up.
    Others(usize),
}

impl SharedCluster {
    /// Every run the record names (users, launcher, ender), once each: the
    /// leases a store reads to tell the rules who is live.
    pub fn named_users(&self) -> Vec<&ClusterUser> {
        let mut named: Vec<&ClusterUser> = Vec::new();
        let all = self
            .users
            .iter()
            .chain(std::iter::once(&self.launcher))
            .chain(self.ending.iter());
        for user in all {
            if !named.contains(&user) {
                named.push(user);
            }
        }
        named
    }

    /// The claim rule: what `me` does with `existing` (the stored record of
    /// `key`, if any), and the record to store (`None`: leave it as it is).
    /// `live` says whether a recorded user still holds its lease.
    pub fn claim(
        existing: Option<SharedCluster>,
        key: &SharedClusterKey,
        me: &ClusterUser,
        live: impl Fn(&ClusterUser) -> bool,
    ) -> (ClusterClaim, Option<SharedCluster>) {
        let fresh = || SharedCluster {
            key: key.clone(),
            handle: None,
            launcher: me.clone(),
            users: vec![me.clone()],
            ending: None,
        };
        let Some(mut record) = existing else {
            return (ClusterClaim::Launch, Some(fresh()));
        };
        let is_me = |u: &ClusterUser| u.same_flow(me) && u.token == me.token;
        if let Some(ender) = &record.ending {
            return if live(ender) && !is_me(ender) {
                (ClusterClaim::Wait, None)
            } else {
                // Its last user died ending it: start over.
                (ClusterClaim::Launch, Some(fresh()))
            };
        }
        record.users.retain(|u| !u.same_flow(me) && live(u));
        match record.handle.clone() {
            Some(handle) => {
                record.users.push(me.clone());
                (ClusterClaim::Join(handle), Some(record))
            }
            None if is_me(&record.launcher) => {
                record.users.push(me.clone());
                (ClusterClaim::Launch, Some(record))
            }
            None if live(&record.launcher) => (ClusterClaim::Wait, None),
            None => {
                // Its launcher died before naming it: take the launch over.
                record.launcher = me.clone();
                record.users.push(me.clone());
                (ClusterClaim::Launch, Some(record))
            }
        }
    }

    /// The release rule: `me` stops using the cluster. Returns the answer
    /// and the record to store (`None`: delete it). A launcher that never
    /// named the cluster deletes the record, so that waiting runs claim the
    /// launch again.
    pub fn release(
        mut self,
        me: &ClusterUser,
        live: impl Fn(&ClusterUser) -> bool,
    ) -> (ClusterRelease, Option<SharedCluster>) {
        let is_me = |u: &ClusterUser| u.same_flow(me) && u.token == me.token;
        let abandoned = self.handle.is_none() && is_me(&self.launcher);
        self.users.retain(|u| !is_me(u) && live(u));
        let answer = if self.users.is_empty() {
            ClusterRelease::Last
        } else {
            ClusterRelease::Others(self.users.len())
        };
        if abandoned {
            return (answer, None);
        }
        if self.users.is_empty() {
            self.ending = Some(me.clone());
        }
        (answer, Some(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(flow: &str, token: u64) -> ClusterUser {
        ClusterUser::new(
            &FlowKey::new(flow.to_string(), "2026120700".parse().unwrap()),
            RecordId::new("1"),
            token,
        )
    }

    fn handle() -> ClusterHandle {
        ClusterHandle {
            kind: "emr".into(),
            name: "emr-0".into(),
            backend_id: "j-1".into(),
            reused: false,
            details: Default::default(),
        }
    }

    #[test]
    fn one_launches_the_others_wait_then_join_and_the_last_ends_it() {
        let key = SharedClusterKey::new("emr", "etl-0");
        let (a, b) = (user("a", 1), user("b", 1));
        let (claim, record) = SharedCluster::claim(None, &key, &a, |_| true);
        assert_eq!(claim, ClusterClaim::Launch);
        let mut record = record.unwrap();
        let (claim, unchanged) = SharedCluster::claim(Some(record.clone()), &key, &b, |_| true);
        assert_eq!((claim, unchanged), (ClusterClaim::Wait, None));
        record.handle = Some(handle());
        let (claim, record) = SharedCluster::claim(Some(record), &key, &b, |_| true);
        assert_eq!(claim, ClusterClaim::Join(handle()));
        let record = record.unwrap();
        assert_eq!(record.users, [a.clone(), b.clone()]);
        let (answer, record) = record.release(&a, |_| true);
        assert_eq!(answer, ClusterRelease::Others(1));
        let (answer, record) = record.unwrap().release(&b, |_| true);
        assert_eq!(answer, ClusterRelease::Last);
        let record = record.unwrap();
        assert_eq!(record.ending, Some(b.clone()));
        // While b ends it, a newcomer waits; once b is dead, it launches.
        let c = user("c", 1);
        assert_eq!(
            SharedCluster::claim(Some(record.clone()), &key, &c, |_| true).0,
            ClusterClaim::Wait
        );
        assert_eq!(
            SharedCluster::claim(Some(record), &key, &c, |u| u != &b).0,
            ClusterClaim::Launch
        );
    }

    #[test]
    fn dead_users_count_for_nothing() {
        let key = SharedClusterKey::new("emr", "etl-0");
        let (a, b) = (user("a", 1), user("b", 1));
        let mut record = SharedCluster::claim(None, &key, &a, |_| true).1.unwrap();
        // The launcher died before naming it: the next claimant launches.
        let (claim, taken) = SharedCluster::claim(Some(record.clone()), &key, &b, |u| u != &a);
        assert_eq!(claim, ClusterClaim::Launch);
        assert_eq!(taken.unwrap().launcher, b);
        // A dead user does not keep it up.
        record.handle = Some(handle());
        let record = SharedCluster::claim(Some(record), &key, &b, |_| true)
            .1
            .unwrap();
        assert_eq!(record.release(&b, |u| u != &a).0, ClusterRelease::Last);
        // A launcher that never named it deletes the record.
        let fresh = SharedCluster::claim(None, &key, &a, |_| true).1.unwrap();
        assert_eq!(fresh.release(&a, |_| true), (ClusterRelease::Last, None));
        // A stale engine (older token) does not remove its successor.
        let mut record = SharedCluster::claim(None, &key, &user("a", 2), |_| true)
            .1
            .unwrap();
        record.handle = Some(handle());
        let (answer, _) = record.release(&user("a", 1), |u| u.token == 2);
        assert_eq!(answer, ClusterRelease::Others(1));
    }
}
