//! The life of a cluster flow creates through ARM: the create body, the
//! wait for the create (its `Azure-AsyncOperation`, else the cluster's
//! `provisioningState`) and the delete, each wait through
//! `flow_cloud::wait_until` on the factory's clock.

use crate::arm::{Arm, ArmCluster};
use crate::arm_config::ArmConfig;
use crate::config::AzureConfig;
use crate::gateway::CallError;
use flow_cloud::{wait_until, Clock, Look, Requests, Wait, WaitError};
use flow_core::Secret;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// The tag saying which run key (`FLOW-TIMEPERIOD`) created a cluster.
pub(crate) const OWNER_TAG: &str = "flow-run-key";

/// Where a created cluster is: its subscription, group and ARM name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

/// What the waits share.
pub(crate) struct Lifecycle<'a> {
    pub arm: &'a Arm,
    pub config: &'a ArmConfig,
    pub clock: &'a Arc<dyn Clock>,
    pub requests: &'a Requests,
}

/// The Clusters - Create body: `location`, the tags (the user's and
/// [`OWNER_TAG`]), and the definition as `properties` with its
/// `"env:VAR"` secrets read and the gateway's login added.
pub(crate) fn create_body(
    azure: &AzureConfig,
    arm: &ArmConfig,
    gateway_password: &Secret,
    owner: &str,
) -> Result<Value, String> {
    let mut properties = arm
        .definition
        .resolve()
        .map_err(|(place, why)| format!("[cluster.azure.arm] setting `{place}`: {why}"))?;
    let configurations = &mut properties["clusterDefinition"]["configurations"];
    if configurations.is_null() {
        *configurations = json!({});
    }
    configurations["gateway"] = json!({
        "restAuthCredential.isEnabled": true,
        "restAuthCredential.username": azure.username,
        "restAuthCredential.password": gateway_password.expose(),
    });
    let mut tags = serde_json::Map::new();
    for (k, v) in &arm.tags {
        tags.insert(k.clone(), json!(v));
    }
    tags.insert(OWNER_TAG.into(), json!(owner));
    Ok(json!({
        "location": arm.location,
        "tags": tags,
        "properties": properties,
    }))
}

impl Lifecycle<'_> {
    fn wait(&self, timeout: Duration) -> Wait {
        Wait {
            interval: self.config.launch_poll,
            timeout,
        }
    }

    /// Follows an async operation until it ends: `Err` with ARM's `code:
    /// message` when it failed, or why the wait ended.
    pub async fn follow(&self, operation: &str, timeout: Duration) -> Result<(), String> {
        let done = wait_until(self.clock, self.wait(timeout), self.requests, || async {
            let op = self.arm.operation(operation).await?;
            Ok::<_, CallError>(match op.status.as_str() {
                "Succeeded" => Look::Ready(()),
                "Failed" | "Canceled" => Look::Failed(match &op.error {
                    Some(e) => e.to_string(),
                    None => op.status.clone(),
                }),
                other => match op.retry_after {
                    Some(asked) => Look::PendingFor(other.to_string(), asked),
                    None => Look::Pending(other.to_string()),
                },
            })
        })
        .await;
        done.map_err(|e| match e {
            WaitError::Failed(message) => message,
            WaitError::Timeout { last, waited } => format!(
                "still {last} after {}",
                humantime_serde::re::humantime::format_duration(waited)
            ),
            WaitError::Request(e) => format!("Get Azure Async Operation Status: {e}"),
        })
    }

    /// Waits until the cluster's `provisioningState` is `Succeeded` (for a
    /// create whose operation is not known: an adopted cluster, or one
    /// whose create answer was lost).
    pub async fn provisioned(&self, at: &Place) -> Result<ArmCluster, String> {
        let timeout = self.config.launch_timeout;
        let ready = wait_until(self.clock, self.wait(timeout), self.requests, || async {
            let cluster = self
                .arm
                .get(&at.subscription, &at.resource_group, &at.name)
                .await
                .map_err(|e| format!("Clusters - Get {}: {e}", at.name))?
                .ok_or_else(|| format!("{} disappeared while it was being created", at.name))?;
            let state = cluster.properties.provisioning_state.clone();
            Ok::<_, String>(match state.as_str() {
                "Succeeded" => Look::Ready(cluster),
                "Failed" | "Canceled" | "Deleting" => {
                    Look::Failed(format!("{} is {state}: {}", at.name, cluster.failure()))
                }
                _ => Look::Pending(format!("{state} ({})", cluster.properties.cluster_state)),
            })
        })
        .await;
        ready.map_err(|e| match e {
            WaitError::Failed(m) | WaitError::Request(m) => m,
            WaitError::Timeout { last, waited } => format!(
                "{} is still {last} after {}",
                at.name,
                humantime_serde::re::humantime::format_duration(waited)
            ),
        })
    }

    /// Clusters - Delete, then its operation; a cluster already gone is
    /// fine.
    pub async fn delete(&self, at: &Place) -> Result<(), String> {
        let operation = self
            .arm
            .delete(&at.subscription, &at.resource_group, &at.name)
            .await
            .map_err(|e| format!("Clusters - Delete {}: {e}", at.name))?;
        let Some(operation) = operation else {
            info!("{} is already gone", at.name);
            return Ok(());
        };
        info!("deleting {} through ARM", at.name);
        self.follow(&operation, self.config.terminate_timeout)
            .await
            .map_err(|why| format!("deleting {} failed: {why}", at.name))
    }
}
