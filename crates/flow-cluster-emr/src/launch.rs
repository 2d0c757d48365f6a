//! Launching an EMR cluster: `RunJobFlow` with every setting (retried by
//! flow after looking for the cluster a lost answer may have made), finding
//! a live cluster to reuse, and reading a cluster's state and reason.

use crate::client::{is_transient, is_unknown_cluster, sdk_message, CallError};
use crate::cluster::EmrCluster;
use crate::config::{
    BootstrapAction, Configuration, InstanceFleet, InstanceGroup, InstanceRole, Market,
};
use crate::steps::LIVE_CLUSTER_STATES;
use aws_config::retry::RetryConfig;
use aws_sdk_emr::types as emr;
use flow_cloud::retry_with_lookup;
use flow_core::ClusterError;

/// The tag that marks a cluster with the launch that created it, so a
/// `RunJobFlow` whose answer was lost is found instead of launched twice.
const LAUNCH_TAG: &str = "flow-launch";

impl EmrCluster {
    /// Describes the cluster: state, reason, master DNS name, log URI.
    pub(crate) async fn describe(&self, id: &str) -> Result<Option<emr::Cluster>, ClusterError> {
        let emr = &self.clients("DescribeCluster").await?.emr;
        match emr.describe_cluster().cluster_id(id).send().await {
            Ok(answer) => Ok(answer.cluster().cloned()),
            Err(e) if is_unknown_cluster(&e) => Ok(None),
            Err(e) => Err(self.backend(
                "DescribeCluster",
                format!("EMR cluster {id}: {}", sdk_message(&e)),
            )),
        }
    }

    /// A live cluster named like this one, to reuse.
    pub(crate) async fn find_live(
        &self,
        emr: &aws_sdk_emr::Client,
    ) -> Result<Vec<String>, ClusterError> {
        let states: Vec<emr::ClusterState> = LIVE_CLUSTER_STATES
            .iter()
            .map(|s| emr::ClusterState::from(*s))
            .collect();
        let mut ids = Vec::new();
        let mut marker = None;
        loop {
            let answer = emr
                .list_clusters()
                .set_cluster_states(Some(states.clone()))
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| {
                    self.launch_error(
                        format!("ListClusters: {}", sdk_message(&e)),
                        is_transient(&e),
                    )
                })?;
            ids.extend(
                answer
                    .clusters()
                    .iter()
                    .filter(|c| c.name() == Some(self.emr_name.as_str()))
                    .filter_map(|c| c.id().map(str::to_string)),
            );
            match answer.marker() {
                Some(next) if !next.is_empty() => marker = Some(next.to_string()),
                _ => return Ok(ids),
            }
        }
    }

    /// `RunJobFlow` with every configured setting. flow retries it itself
    /// (not the SDK): after a failure whose answer may have been lost, it
    /// looks for a cluster carrying this launch's tag before trying again.
    pub(crate) async fn run_job_flow(
        &self,
        emr: &aws_sdk_emr::Client,
    ) -> Result<String, ClusterError> {
        let token = format!("{:016x}", fastrand::u64(..));
        let request = self.run_job_flow_request(emr, &token);
        let sent = retry_with_lookup(
            &self.shared.config.retry,
            &self.shared.clock,
            "RunJobFlow",
            || {
                let request = request.clone();
                async move {
                    let answer = request
                        .customize()
                        .config_override(
                            aws_sdk_emr::config::Builder::default()
                                .retry_config(RetryConfig::disabled()),
                        )
                        .send()
                        .await
                        .map_err(|e| {
                            CallError::sdk(
                                format_args!("RunJobFlow of EMR cluster {}", self.emr_name),
                                &e,
                            )
                        })?;
                    answer.job_flow_id().map(str::to_string).ok_or_else(|| {
                        CallError::Final(
                            self.launch_error("RunJobFlow answered without a cluster id", true),
                        )
                    })
                }
            },
            // The cluster may have been created although the answer failed.
            || async {
                self.find_by_launch_tag(emr, &token)
                    .await
                    .map_err(CallError::Final)
            },
        )
        .await;
        sent.map_err(|e| match e {
            CallError::Sdk {
                message, transient, ..
            } => self.launch_error(message, transient),
            CallError::Final(e) => e,
        })
    }

    async fn find_by_launch_tag(
        &self,
        emr: &aws_sdk_emr::Client,
        token: &str,
    ) -> Result<Option<String>, ClusterError> {
        for id in self.find_live(emr).await? {
            if let Some(cluster) = self.describe(&id).await? {
                if cluster
                    .tags()
                    .iter()
                    .any(|t| t.key() == Some(LAUNCH_TAG) && t.value() == Some(token))
                {
                    return Ok(Some(id));
                }
            }
        }
        Ok(None)
    }

    pub(crate) fn run_job_flow_request(
        &self,
        emr: &aws_sdk_emr::Client,
        token: &str,
    ) -> aws_sdk_emr::operation::run_job_flow::builders::RunJobFlowFluentBuilder {
        let config = &self.shared.config;
        let mut instances = emr::JobFlowInstancesConfig::builder()
            .keep_job_flow_alive_when_no_steps(config.keep_alive)
            .termination_protected(config.termination_protected)
            .set_ec2_key_name(config.ec2_key_name.clone())
            .set_ec2_subnet_id(config.ec2_subnet_id.clone());
        for group in &config.instance_groups {
            instances = instances.instance_groups(instance_group(group));
        }
        for fleet in &config.instance_fleets {
            instances = instances.instance_fleets(instance_fleet(fleet));
        }
        let mut request = emr
            .run_job_flow()
            .name(&self.emr_name)
            .set_release_label(config.release_label.clone())
            .set_log_uri(config.log_uri.clone())
            .set_service_role(config.service_role.clone())
            .set_job_flow_role(config.job_flow_role.clone())
            .visible_to_all_users(config.visible_to_all_users)
            .set_step_concurrency_level(config.step_concurrency_level)
            .instances(instances.build())
            .tags(emr::Tag::builder().key(LAUNCH_TAG).value(token).build());
        for app in &config.applications {
            request = request.applications(emr::Application::builder().name(app).build());
        }
        for action in &config.bootstrap_actions {
            request = request.bootstrap_actions(bootstrap_action(action));
        }
        for configuration in &config.configurations {
            request = request.configurations(emr_configuration(configuration));
        }
        for (key, value) in &config.tags {
            request = request.tags(emr::Tag::builder().key(key).value(value).build());
        }
        request
    }
}

fn instance_group(g: &InstanceGroup) -> emr::InstanceGroupConfig {
    emr::InstanceGroupConfig::builder()
        .set_name(g.name.clone())
        .instance_role(emr::InstanceRoleType::from(g.role.as_str()))
        .instance_type(&g.instance_type)
        .instance_count(g.count)
        .market(match g.market {
            Market::OnDemand => emr::MarketType::OnDemand,
            Market::Spot => emr::MarketType::Spot,
        })
        .set_bid_price(g.bid_price.clone())
        .build()
}

fn instance_fleet(f: &InstanceFleet) -> emr::InstanceFleetConfig {
    let mut fleet = emr::InstanceFleetConfig::builder()
        .set_name(f.name.clone())
        .instance_fleet_type(match f.role {
            InstanceRole::Master => emr::InstanceFleetType::Master,
            InstanceRole::Core => emr::InstanceFleetType::Core,
            InstanceRole::Task => emr::InstanceFleetType::Task,
        })
        .target_on_demand_capacity(f.target_on_demand_capacity)
        .target_spot_capacity(f.target_spot_capacity);
    for t in &f.instance_types {
        fleet = fleet.instance_type_configs(
            emr::InstanceTypeConfig::builder()
                .instance_type(&t.instance_type)
                .set_weighted_capacity(t.weighted_capacity)
                .set_bid_price_as_percentage_of_on_demand_price(
                    t.bid_price_as_percentage_of_on_demand_price,
                )
                .build(),
        );
    }
    fleet.build()
}

fn bootstrap_action(a: &BootstrapAction) -> emr::BootstrapActionConfig {
    emr::BootstrapActionConfig::builder()
        .name(&a.name)
        .script_bootstrap_action(
            emr::ScriptBootstrapActionConfig::builder()
                .path(&a.path)
                .set_args(Some(a.args.clone()))
                .build(),
        )
        .build()
}

fn emr_configuration(c: &Configuration) -> emr::Configuration {
    let mut builder = emr::Configuration::builder().classification(&c.classification);
    if !c.properties.is_empty() {
        builder = builder.set_properties(Some(c.properties.clone().into_iter().collect()));
    }
    for nested in &c.configurations {
        builder = builder.configurations(emr_configuration(nested));
    }
    builder.build()
}

pub(crate) fn state_of(cluster: &emr::Cluster) -> String {
    cluster
        .status()
        .and_then(|s| s.state())
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

/// `CODE: message` of the cluster's last state change.
pub(crate) fn reason_of(cluster: &emr::Cluster) -> String {
    let reason = cluster.status().and_then(|s| s.state_change_reason());
    let code = reason
        .and_then(|r| r.code())
        .map(|c| c.as_str().to_string());
    let message = reason.and_then(|r| r.message()).map(str::to_string);
    match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        (None, Some(m)) => m,
        (None, None) => "no reason given".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmrConfig;
    use crate::factory::EmrClusterFactory;

    /// moto keeps no instance fleets (it has no ListInstanceFleets), so the
    /// request is checked here, as the SDK would serialize it.
    #[test]
    fn instance_fleets_are_sent_with_run_job_flow() {
        use crate::config::FleetInstanceType;
        let config = EmrConfig {
            instance_fleets: vec![
                InstanceFleet {
                    role: InstanceRole::Master,
                    target_on_demand_capacity: 1,
                    target_spot_capacity: 0,
                    instance_types: vec![FleetInstanceType {
                        instance_type: "m5.xlarge".into(),
                        weighted_capacity: None,
                        bid_price_as_percentage_of_on_demand_price: None,
                    }],
                    name: Some("master".into()),
                },
                InstanceFleet {
                    role: InstanceRole::Core,
                    target_on_demand_capacity: 0,
                    target_spot_capacity: 8,
                    instance_types: vec![
                        FleetInstanceType {
                            instance_type: "m5.2xlarge".into(),
                            weighted_capacity: Some(2),
                            bid_price_as_percentage_of_on_demand_price: Some(60.0),
                        },
                        FleetInstanceType {
                            instance_type: "r5.2xlarge".into(),
                            weighted_capacity: Some(2),
                            bid_price_as_percentage_of_on_demand_price: None,
                        },
                    ],
                    name: None,
                },
            ],
            ..EmrConfig::default()
        };
        config.validate().unwrap();
        let factory = EmrClusterFactory::new(config).unwrap();
        let emr = aws_sdk_emr::Client::from_conf(
            aws_sdk_emr::Config::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .build(),
        );
        let request = factory.cluster("emr-0").run_job_flow_request(&emr, "t");
        let instances = request.as_input().get_instances().clone().unwrap();
        assert!(instances.instance_groups().is_empty(), "fleets, not groups");
        let fleets: Vec<_> = instances
            .instance_fleets()
            .iter()
            .map(|f| {
                (
                    f.instance_fleet_type().unwrap().as_str().to_string(),
                    f.name().map(str::to_string),
                    f.target_on_demand_capacity(),
                    f.target_spot_capacity(),
                    f.instance_type_configs()
                        .iter()
                        .map(|t| {
                            (
                                t.instance_type().unwrap().to_string(),
                                t.weighted_capacity(),
                                t.bid_price_as_percentage_of_on_demand_price(),
                            )
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            fleets,
            [
                (
                    "MASTER".to_string(),
                    Some("master".to_string()),
                    Some(1),
                    Some(0),
                    vec![("m5.xlarge".to_string(), None, None)]
                ),
                (
                    "CORE".to_string(),
                    None,
                    Some(0),
                    Some(8),
                    vec![
                        ("m5.2xlarge".to_string(), Some(2), Some(60.0)),
                        ("r5.2xlarge".to_string(), Some(2), None)
                    ]
                ),
            ]
        );
    }
}
