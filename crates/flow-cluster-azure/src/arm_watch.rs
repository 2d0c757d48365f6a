//! [`ArmWatch`]: the [`ClusterWatch`] of clusters flow creates through
//! Azure Resource Manager. It asks Clusters - Get (the factory's own
//! [`Arm`] client) about the cluster behind a gateway: gone (404
//! `ResourceNotFound`), or a `clusterState` / `provisioningState` saying it
//! failed or is being deleted, is ended, with that state as the reason.

use crate::arm::{Arm, ArmCluster};
use crate::jobs::ClusterWatch;
use crate::launch::Place;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// `clusterState`s of a cluster that ended or is ending (the HDInsight
/// reference's `Error`, `Deleting`, `Deleted`, `TimedOut`).
const ENDED_CLUSTER_STATES: [&str; 4] = ["Error", "Deleting", "Deleted", "TimedOut"];

/// `provisioningState`s of a cluster that ended or is ending.
const ENDED_PROVISIONING_STATES: [&str; 3] = ["Failed", "Canceled", "Deleting"];

/// Asks ARM whether the cluster behind a gateway ended; the clusters are
/// the ones the factory's [`AzureCluster`](crate::AzureCluster)s named.
pub(crate) struct ArmWatch {
    arm: Arc<Arm>,
    /// Which ARM cluster is behind each gateway.
    places: Mutex<HashMap<String, Place>>,
}

impl ArmWatch {
    pub fn new(arm: Arc<Arm>) -> Self {
        ArmWatch {
            arm,
            places: Mutex::default(),
        }
    }

    /// Records that `place` is the cluster behind `gateway`.
    pub fn watch(&self, gateway: &str, place: &Place) {
        self.places
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(gateway.to_string(), place.clone());
    }
}

/// Why `cluster` counts as ended, `None` while it is up.
fn ended(cluster: &ArmCluster) -> Option<String> {
    let p = &cluster.properties;
    let ended = ENDED_CLUSTER_STATES.contains(&p.cluster_state.as_str())
        || ENDED_PROVISIONING_STATES.contains(&p.provisioning_state.as_str());
    ended.then(|| {
        let state = if p.cluster_state.is_empty() {
            &p.provisioning_state
        } else {
            &p.cluster_state
        };
        match p.errors.is_empty() {
            true => state.clone(),
            false => format!("{state}: {}", cluster.failure()),
        }
    })
}

#[async_trait]
impl ClusterWatch for ArmWatch {
    async fn ended(&self, gateway: &str) -> Result<Option<String>, String> {
        let place = self
            .places
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(gateway.trim_end_matches('/'))
            .cloned();
        let Some(at) = place else {
            return Ok(None);
        };
        match self
            .arm
            .get(&at.subscription, &at.resource_group, &at.name)
            .await
        {
            Ok(Some(cluster)) => Ok(ended(&cluster).map(|why| format!("{} is {why}", at.name))),
            Ok(None) => Ok(Some(format!(
                "{} is Deleted (ResourceNotFound in ARM)",
                at.name
            ))),
            Err(e) => Err(format!("Clusters - Get {}: {e}", at.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(provisioning: &str, state: &str, errors: serde_json::Value) -> ArmCluster {
        serde_json::from_value(serde_json::json!({"properties": {
            "provisioningState": provisioning, "clusterState": state, "errors": errors,
        }}))
        .unwrap()
    }

    #[test]
    fn a_failed_or_deleting_cluster_is_ended_with_its_state_a_running_one_is_not() {
        let none = serde_json::json!([]);
        assert_eq!(ended(&cluster("Succeeded", "Running", none.clone())), None);
        assert_eq!(
            ended(&cluster("InProgress", "Accepted", none.clone())),
            None
        );
        assert_eq!(
            ended(&cluster("Deleting", "Deleting", none.clone())).as_deref(),
            Some("Deleting")
        );
        assert_eq!(
            ended(&cluster("Succeeded", "Deleted", none)).as_deref(),
            Some("Deleted")
        );
        let failed = serde_json::json!([{"code": "QuotaExceeded", "message": "no cores left"}]);
        assert_eq!(
            ended(&cluster("Failed", "Error", failed)).as_deref(),
            Some("Error: QuotaExceeded: no cores left")
        );
    }
}
