//! [`EmrConfig`]: the `[cluster.emr]` settings, and [`EmrClusterBuilder`]
//! for library users. Plain serde data holding no credential (those come
//! from the AWS chain), so `Debug` and logs can show it.

use flow_cloud::{Clock, JobLogs, PollConfig, RetryConfig, TokioClock};
use flow_fs_s3::S3Config;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Settings of the EMR cluster, as written under `[cluster.emr]`:
///
/// ```toml
/// [cluster.emr]
/// name = "etl"                     # the run's clusters are etl-0, etl-1, ...
/// release_label = "emr-7.5.0"
/// applications = ["Spark", "Pig", "Hadoop"]
/// log_uri = "s3://my-logs/emr/"
/// service_role = "EMR_DefaultRole"
/// job_flow_role = "EMR_EC2_DefaultRole"
/// instance_groups = [
///   { role = "MASTER", instance_type = "m5.xlarge", count = 1 },
///   { role = "CORE", instance_type = "m5.xlarge", count = 2 },
/// ]
/// [cluster.emr.retry]              # flow_cloud::RetryConfig
/// max_retries = 5
/// [cluster.emr.s3]                 # the cluster's filesystem (flow_fs_s3::S3Config)
/// bucket = "my-data"
/// ```
///
/// The keys are the words every cloud cluster uses for the same idea
/// (`docs/src/reference/settings.md`, "One vocabulary").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmrConfig {
    /// The EMR name of the run's clusters: cluster `N` of a run is
    /// `NAME-N`, so N clusters really are N.
    pub name: String,
    /// Reuse a cluster of that name when one is `STARTING`, `BOOTSTRAPPING`,
    /// `RUNNING` or `WAITING`, instead of launching one.
    pub reuse: bool,
    /// Terminate a reused cluster at the end of the run too (default: it is
    /// left up, as it was found).
    pub terminate_reused: bool,
    /// Default: the AWS chain (`AWS_REGION`, the profile's region).
    pub region: Option<String>,
    /// A named profile of the shared AWS config files.
    pub profile: Option<String>,
    /// EMR's endpoint. Default: `AWS_ENDPOINT_URL_EMR`, `AWS_ENDPOINT_URL`,
    /// then the region's.
    pub endpoint: Option<String>,

    // RunJobFlow
    /// EMR's release, e.g. `emr-7.5.0` (required to launch).
    pub release_label: Option<String>,
    /// `Spark`, `Pig`, `Hadoop`, ...
    pub applications: Vec<String>,
    /// Instance groups (or fleets, not both).
    pub instance_groups: Vec<InstanceGroup>,
    /// Instance fleets (or groups, not both).
    pub instance_fleets: Vec<InstanceFleet>,
    /// Scripts EMR runs on every node before it takes steps.
    pub bootstrap_actions: Vec<BootstrapAction>,
    /// Configuration objects, e.g. `spark-defaults`.
    pub configurations: Vec<Configuration>,
    /// The service role (`EMR_DefaultRole`).
    pub service_role: Option<String>,
    /// The EC2 instance profile (`EMR_EC2_DefaultRole`).
    pub job_flow_role: Option<String>,
    /// The EC2 key pair for SSH to the nodes.
    pub ec2_key_name: Option<String>,
    /// The subnet to launch in.
    pub ec2_subnet_id: Option<String>,
    /// Where EMR writes logs (`s3://bucket/prefix/`); step logs are read
    /// from there for failure messages.
    pub log_uri: Option<String>,
    /// Tags on the cluster (flow adds its own for the run).
    pub tags: BTreeMap<String, String>,
    /// `KeepJobFlowAliveWhenNoSteps`: true, or the cluster ends before the
    /// first step arrives.
    pub keep_alive: bool,
    /// Launch with termination protection; `terminate` lifts it first.
    pub termination_protected: bool,
    /// `VisibleToAllUsers`.
    pub visible_to_all_users: bool,
    /// Steps EMR runs at once on one cluster (EMR's default: 1).
    pub step_concurrency_level: Option<i32>,

    // Waiting
    /// How often `DescribeCluster` is asked while a cluster comes up.
    #[serde(with = "humantime_serde")]
    pub launch_poll: Duration,
    /// A launch not `WAITING` after this long fails.
    #[serde(with = "humantime_serde")]
    pub launch_timeout: Duration,
    /// How long a cancelled step may take to leave `RUNNING`.
    #[serde(with = "humantime_serde")]
    pub cancel_timeout: Duration,
    /// How often steps are asked about (one `ListSteps` per cluster per
    /// tick for all its running steps), the backoff and the wait's timeout.
    pub poll: PollConfig,
    /// Retries of throttled and transient EMR requests. `RunJobFlow` and
    /// `AddJobFlowSteps`, which must not take effect twice, are retried by
    /// flow with exactly this policy (looking the cluster or step up before
    /// each re-send); every other request by the SDK's standard retry mode
    /// with the same retries, first and longest delay
    /// ([`flow_fs_s3::aws::sdk_retry`]).
    pub retry: RetryConfig,
    /// A failed step's logs (`LOG_URI/CLUSTER/steps/STEP/{stderr,stdout,controller}.gz`)
    /// in the step log and its error.
    pub job_logs: JobLogs,
    /// The cluster's filesystem. Its region and profile default to the
    /// ones above.
    pub s3: S3Config,
}

impl Default for EmrConfig {
    fn default() -> Self {
        EmrConfig {
            name: "flow".into(),
            reuse: true,
            terminate_reused: false,
            region: None,
            profile: None,
            endpoint: None,
            release_label: None,
            applications: vec!["Hadoop".into(), "Spark".into(), "Pig".into()],
            instance_groups: Vec::new(),
            instance_fleets: Vec::new(),
            bootstrap_actions: Vec::new(),
            configurations: Vec::new(),
            service_role: None,
            job_flow_role: None,
            ec2_key_name: None,
            ec2_subnet_id: None,
            log_uri: None,
            tags: BTreeMap::new(),
            keep_alive: true,
            termination_protected: false,
            visible_to_all_users: true,
            step_concurrency_level: None,
            launch_poll: Duration::from_secs(15),
            launch_timeout: Duration::from_secs(3600),
            cancel_timeout: Duration::from_secs(600),
            poll: PollConfig::default(),
            retry: RetryConfig::default(),
            job_logs: JobLogs::default(),
            s3: S3Config::default(),
        }
    }
}

/// `MASTER`, `CORE` or `TASK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InstanceRole {
    /// The master node.
    Master,
    /// Core nodes: HDFS and tasks.
    Core,
    /// Task nodes: tasks only.
    Task,
}

impl InstanceRole {
    /// The name EMR uses.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceRole::Master => "MASTER",
            InstanceRole::Core => "CORE",
            InstanceRole::Task => "TASK",
        }
    }
}

/// `ON_DEMAND` or `SPOT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Market {
    /// On-demand instances.
    #[default]
    OnDemand,
    /// Spot instances.
    Spot,
}

/// One instance group of `RunJobFlow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceGroup {
    /// The group's role.
    pub role: InstanceRole,
    /// The EC2 instance type, e.g. `m5.xlarge`.
    pub instance_type: String,
    /// How many instances.
    pub count: i32,
    /// On-demand or spot.
    #[serde(default)]
    pub market: Market,
    /// The spot bid, in USD.
    pub bid_price: Option<String>,
    /// The group's name.
    pub name: Option<String>,
}

/// One instance fleet of `RunJobFlow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFleet {
    /// The fleet's role.
    pub role: InstanceRole,
    /// On-demand capacity units.
    #[serde(default)]
    pub target_on_demand_capacity: i32,
    /// Spot capacity units.
    #[serde(default)]
    pub target_spot_capacity: i32,
    /// The instance types the fleet may use.
    pub instance_types: Vec<FleetInstanceType>,
    /// The fleet's name.
    pub name: Option<String>,
}

/// One instance type of a fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetInstanceType {
    /// The EC2 instance type.
    pub instance_type: String,
    /// Capacity units one instance counts for.
    pub weighted_capacity: Option<i32>,
    /// The spot bid as a percentage of the on-demand price.
    pub bid_price_as_percentage_of_on_demand_price: Option<f64>,
}

/// A bootstrap action of `RunJobFlow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapAction {
    /// Its name.
    pub name: String,
    /// The script, e.g. `s3://my-bucket/bootstrap.sh`.
    pub path: String,
    /// The script's arguments.
    #[serde(default)]
    pub args: Vec<String>,
}

/// An EMR configuration object (`spark-defaults`, ...), nested as EMR nests them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Configuration {
    /// The classification, e.g. `spark-defaults`.
    pub classification: String,
    /// Its properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Nested configuration objects.
    #[serde(default)]
    pub configurations: Vec<Configuration>,
}

/// Why settings were refused, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[cluster.emr] {field}: {message}")]
pub struct ConfigError {
    /// The setting, e.g. `release_label`.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl EmrConfig {
    /// A builder starting from these settings.
    pub fn builder(self) -> EmrClusterBuilder {
        EmrClusterBuilder {
            config: self,
            clock: None,
        }
    }

    /// Checks what types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError {
                field,
                message: message.to_string(),
            })
        };
        // EMR names: up to 256 characters; ours gets "-N" appended.
        if self.name.is_empty() || self.name.len() > 240 {
            return invalid("name", "must be 1 to 240 characters");
        }
        if self.name.chars().any(char::is_control) {
            return invalid("name", "must not contain control characters");
        }
        if !self.instance_groups.is_empty() && !self.instance_fleets.is_empty() {
            return invalid(
                "instance_groups",
                "set instance_groups or instance_fleets, not both",
            );
        }
        for group in &self.instance_groups {
            if group.count < 1 {
                return invalid("instance_groups", "every group needs count >= 1");
            }
        }
        for fleet in &self.instance_fleets {
            if fleet.instance_types.is_empty() {
                return invalid(
                    "instance_fleets",
                    "every fleet needs at least one entry in instance_types",
                );
            }
            if fleet.target_on_demand_capacity < 0
                || fleet.target_spot_capacity < 0
                || fleet.target_on_demand_capacity + fleet.target_spot_capacity < 1
            {
                return invalid(
                    "instance_fleets",
                    "every fleet needs target_on_demand_capacity + target_spot_capacity >= 1",
                );
            }
        }
        let masters = self
            .instance_groups
            .iter()
            .filter(|g| g.role == InstanceRole::Master)
            .count()
            + self
                .instance_fleets
                .iter()
                .filter(|f| f.role == InstanceRole::Master)
                .count();
        if (!self.instance_groups.is_empty() || !self.instance_fleets.is_empty()) && masters != 1 {
            return invalid(
                "instance_groups",
                "exactly one MASTER group (or fleet) is needed",
            );
        }
        if let Some(uri) = &self.log_uri {
            if !["s3://", "s3n://", "s3a://"]
                .iter()
                .any(|s| uri.starts_with(s))
            {
                return invalid("log_uri", "must be an s3:// address");
            }
        }
        if self.launch_poll.is_zero() {
            return invalid("launch_poll", "must not be zero");
        }
        if self.poll.floor.is_zero() {
            return invalid("poll.floor", "must not be zero");
        }
        if self.poll.cap < self.poll.floor {
            return invalid("poll.cap", "must not be shorter than poll.floor");
        }
        if let Some(level) = self.step_concurrency_level {
            if !(1..=256).contains(&level) {
                return invalid("step_concurrency_level", "must be 1 to 256");
            }
        }
        self.s3.validate().map_err(|e| ConfigError {
            field: "s3",
            message: e.to_string(),
        })
    }

    /// The S3 settings with the region and profile filled in from EMR's.
    pub(crate) fn s3_config(&self) -> S3Config {
        let mut s3 = self.s3.clone();
        if s3.region.is_none() {
            s3.region = self.region.clone();
        }
        if s3.profile.is_none() {
            s3.profile = self.profile.clone();
        }
        s3
    }
}

/// [`EmrConfig`] checked while it is deserialized, so a settings loader
/// reports a bad value with the position of the `[cluster.emr]` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ValidatedEmrConfig(pub EmrConfig);

impl<'de> Deserialize<'de> for ValidatedEmrConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let config = EmrConfig::deserialize(deserializer)?;
        config.validate().map_err(serde::de::Error::custom)?;
        Ok(ValidatedEmrConfig(config))
    }
}

/// Builds an [`EmrClusterFactory`](crate::EmrClusterFactory) (object_store's
/// habit: settings in, a client out). Every `with_*` sets one field of
/// [`EmrConfig`].
#[derive(Debug, Clone, Default)]
pub struct EmrClusterBuilder {
    config: EmrConfig,
    clock: Option<Arc<dyn Clock>>,
}

impl EmrClusterBuilder {
    flow_cloud::cluster_builder_setters!(EmrConfig);
    flow_fs_s3::aws_builder_setters!(EmrConfig);

    /// A builder with the default settings.
    pub fn new() -> Self {
        EmrClusterBuilder::default()
    }
    /// Starts from `config` (e.g. read from a settings file).
    pub fn with_config(mut self, config: EmrConfig) -> Self {
        self.config = config;
        self
    }
    /// Sets [`EmrConfig::name`].
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }
    /// Sets [`EmrConfig::reuse`].
    pub fn with_reuse(mut self, reuse: bool) -> Self {
        self.config.reuse = reuse;
        self
    }
    /// Sets [`EmrConfig::terminate_reused`].
    pub fn with_terminate_reused(mut self, on: bool) -> Self {
        self.config.terminate_reused = on;
        self
    }
    /// Sets [`EmrConfig::release_label`].
    pub fn with_release_label(mut self, label: impl Into<String>) -> Self {
        self.config.release_label = Some(label.into());
        self
    }
    /// Sets [`EmrConfig::applications`].
    pub fn with_applications<S: Into<String>>(mut self, apps: impl IntoIterator<Item = S>) -> Self {
        self.config.applications = apps.into_iter().map(Into::into).collect();
        self
    }
    /// Adds to [`EmrConfig::instance_groups`].
    pub fn with_instance_group(mut self, group: InstanceGroup) -> Self {
        self.config.instance_groups.push(group);
        self
    }
    /// Adds to [`EmrConfig::instance_fleets`].
    pub fn with_instance_fleet(mut self, fleet: InstanceFleet) -> Self {
        self.config.instance_fleets.push(fleet);
        self
    }
    /// Adds to [`EmrConfig::bootstrap_actions`].
    pub fn with_bootstrap_action(mut self, action: BootstrapAction) -> Self {
        self.config.bootstrap_actions.push(action);
        self
    }
    /// Adds to [`EmrConfig::configurations`].
    pub fn with_configuration(mut self, configuration: Configuration) -> Self {
        self.config.configurations.push(configuration);
        self
    }
    /// Sets [`EmrConfig::service_role`] and [`EmrConfig::job_flow_role`].
    pub fn with_roles(mut self, service: impl Into<String>, job_flow: impl Into<String>) -> Self {
        self.config.service_role = Some(service.into());
        self.config.job_flow_role = Some(job_flow.into());
        self
    }
    /// Sets [`EmrConfig::ec2_key_name`].
    pub fn with_ec2_key_name(mut self, key: impl Into<String>) -> Self {
        self.config.ec2_key_name = Some(key.into());
        self
    }
    /// Sets [`EmrConfig::ec2_subnet_id`].
    pub fn with_ec2_subnet_id(mut self, subnet: impl Into<String>) -> Self {
        self.config.ec2_subnet_id = Some(subnet.into());
        self
    }
    /// Sets [`EmrConfig::log_uri`].
    pub fn with_log_uri(mut self, uri: impl Into<String>) -> Self {
        self.config.log_uri = Some(uri.into());
        self
    }
    /// Adds to [`EmrConfig::tags`].
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.tags.insert(key.into(), value.into());
        self
    }
    /// Sets [`EmrConfig::keep_alive`].
    pub fn with_keep_alive(mut self, on: bool) -> Self {
        self.config.keep_alive = on;
        self
    }
    /// Sets [`EmrConfig::termination_protected`].
    pub fn with_termination_protected(mut self, on: bool) -> Self {
        self.config.termination_protected = on;
        self
    }
    /// Sets [`EmrConfig::launch_timeout`].
    pub fn with_launch_timeout(mut self, timeout: Duration) -> Self {
        self.config.launch_timeout = timeout;
        self
    }
    /// Sets [`EmrConfig::cancel_timeout`].
    pub fn with_cancel_timeout(mut self, timeout: Duration) -> Self {
        self.config.cancel_timeout = timeout;
        self
    }
    /// Sets [`EmrConfig::s3`].
    pub fn with_s3(mut self, s3: S3Config) -> Self {
        self.config.s3 = s3;
        self
    }

    /// Checks the settings and makes the factory. Makes no request: the
    /// AWS clients are made (credentials and region resolved) on first use.
    pub fn build(self) -> Result<crate::EmrClusterFactory, ConfigError> {
        self.config.validate()?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(TokioClock::new()));
        Ok(crate::EmrClusterFactory::from_parts(self.config, clock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_with_defaults_and_refuse_unknown_fields() {
        let c: EmrConfig = toml::from_str(
            r#"
name = "etl"
release_label = "emr-7.5.0"
log_uri = "s3://logs/emr/"
instance_groups = [
  { role = "MASTER", instance_type = "m5.xlarge", count = 1 },
  { role = "CORE", instance_type = "m5.xlarge", count = 2, market = "SPOT", bid_price = "0.1" },
]
bootstrap_actions = [{ name = "deps", path = "s3://b/deps.sh", args = ["-x"] }]
configurations = [{ classification = "spark-defaults", properties = { "spark.executor.memory" = "4g" } }]
tags = { team = "data" }
[poll]
floor = "2s"
cap = "30s"
[job_logs]
enabled = false
max_bytes = 1024
[retry]
max_retries = 2
[s3]
bucket = "data"
"#,
        )
        .unwrap();
        assert_eq!(c.name, "etl");
        assert_eq!(c.instance_groups[1].market, Market::Spot);
        assert_eq!(c.poll.floor, Duration::from_secs(2));
        assert!(!c.job_logs.enabled);
        assert_eq!(c.job_logs.max_bytes, 1024);
        assert_eq!(c.retry.max_retries, 2);
        assert_eq!(c.s3.bucket.as_deref(), Some("data"));
        assert!(c.keep_alive && c.reuse);
        c.validate().unwrap();
        let e = toml::from_str::<EmrConfig>("nmae = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `nmae`"), "{e}");
        let e = toml::from_str::<EmrConfig>(
            "instance_groups = [{ role = \"BOSS\", instance_type = \"x\", count = 1 }]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("BOSS"), "{e}");
    }

    #[test]
    fn validation_names_the_field_and_runs_while_deserializing() {
        let e = toml::from_str::<ValidatedEmrConfig>("log_uri = \"/var/log\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("[cluster.emr] log_uri: must be an s3:// address"),
            "{e}"
        );
        let both = EmrConfig {
            instance_groups: vec![InstanceGroup {
                role: InstanceRole::Master,
                instance_type: "m5.xlarge".into(),
                count: 1,
                market: Market::OnDemand,
                bid_price: None,
                name: None,
            }],
            instance_fleets: vec![InstanceFleet {
                role: InstanceRole::Master,
                target_on_demand_capacity: 1,
                target_spot_capacity: 0,
                instance_types: vec![],
                name: None,
            }],
            ..EmrConfig::default()
        };
        let e = both.validate().unwrap_err();
        assert_eq!(e.field, "instance_groups");
        assert_eq!(
            e.to_string(),
            "[cluster.emr] instance_groups: set instance_groups or instance_fleets, not both"
        );
        let e = toml::from_str::<ValidatedEmrConfig>(
            "instance_fleets = [{ role = \"MASTER\", target_on_demand_capacity = 1, instance_types = [] }]\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("[cluster.emr] instance_fleets: every fleet needs at least one entry in instance_types"),
            "{e}"
        );
        let e = toml::from_str::<ValidatedEmrConfig>(
            "instance_fleets = [{ role = \"MASTER\", instance_types = [{ instance_type = \"m5.xlarge\" }] }]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("target_spot_capacity >= 1"), "{e}");
        let fleets: ValidatedEmrConfig = toml::from_str(
            "instance_fleets = [{ role = \"MASTER\", target_spot_capacity = 1, instance_types = [{ instance_type = \"m5.xlarge\", bid_price_as_percentage_of_on_demand_price = 50.0 }] }]\n",
        )
        .unwrap();
        assert_eq!(fleets.0.instance_fleets[0].target_spot_capacity, 1);
        let no_master = EmrConfig {
            instance_groups: vec![InstanceGroup {
                role: InstanceRole::Core,
                instance_type: "m5.xlarge".into(),
                count: 2,
                market: Market::OnDemand,
                bid_price: None,
                name: None,
            }],
            ..EmrConfig::default()
        };
        assert!(no_master.validate().unwrap_err().message.contains("MASTER"));
        let bad_s3 = EmrConfig {
            s3: S3Config {
                part_size: 1,
                ..S3Config::default()
            },
            ..EmrConfig::default()
        };
        assert_eq!(bad_s3.validate().unwrap_err().field, "s3");
    }

    #[test]
    fn s3_inherits_region_and_profile() {
        let c = EmrClusterBuilder::new()
            .with_region("eu-west-1")
            .with_profile("etl")
            .config()
            .clone();
        let s3 = c.s3_config();
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s3.profile.as_deref(), Some("etl"));
    }
}
