//! [`EmrCluster`]: the `Cluster` trait on EMR, and its factory.

use crate::client::{
    find_step_by_name, is_transient, is_unknown_cluster, list_steps, sdk_message, CallError,
    ClientError, Clients, EmrBackend, LazyS3,
};
use crate::config::{
    BootstrapAction, ConfigError, Configuration, EmrClusterBuilder, EmrConfig, InstanceFleet,
    InstanceGroup, InstanceRole, Market,
};
use crate::steps::{
    jar_step, last_bytes, step_log_prefix, step_name, StepInfo, ENDED_CLUSTER_STATES,
    LIVE_CLUSTER_STATES,
};
use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_sdk_emr::types as emr;
use flow_cloud::{
    retry_with_lookup, wait_until, Clock, Look, Outcome, PollError, TokioClock, Wait, WaitError,
};
use flow_core::{
    Cluster, ClusterError, ClusterFactory, ClusterHandle, ExecutionContext, Filesystem, Job,
    JobContext, JobHandle, JobStatus,
};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use tracing::{error, info, warn};

/// The backend kind in handles and records.
pub const KIND: &str = "emr";

/// The tag that marks a cluster with the launch that created it, so a
/// `RunJobFlow` whose answer was lost is found instead of launched twice.
const LAUNCH_TAG: &str = "flow-launch";

/// Makes [`EmrCluster`]s (kind `emr`) that share settings, AWS clients and
/// step pollers. Creating it makes no request.
#[derive(Clone)]
pub struct EmrClusterFactory {
    shared: Arc<EmrBackend>,
}

impl fmt::Debug for EmrClusterFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmrClusterFactory")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl EmrClusterFactory {
    /// Checks `config` and makes the factory (see [`EmrClusterBuilder`] for
    /// a clock of one's own).
    pub fn new(config: EmrConfig) -> Result<Self, ConfigError> {
        EmrClusterBuilder::new().with_config(config).build()
    }

    pub(crate) fn from_parts(config: EmrConfig, clock: Arc<dyn Clock>) -> Self {
        EmrClusterFactory {
            shared: Arc::new(EmrBackend::new(config, clock)),
        }
    }

    /// The settings it was built with.
    pub fn config(&self) -> &EmrConfig {
        &self.shared.config
    }

    /// A cluster called `name` in the run (`emr-0`); its EMR name is the
    /// configured name with the same index (`NAME-0`).
    pub fn cluster(&self, name: &str) -> EmrCluster {
        EmrCluster {
            name: name.to_string(),
            emr_name: emr_name(&self.shared.config.name, name),
            shared: self.shared.clone(),
            fs: LazyS3 {
                shared: self.shared.clone(),
            },
            state: Mutex::default(),
        }
    }

    /// Resolves credentials and region now (they are otherwise resolved on
    /// the first request) and returns the EMR client.
    pub async fn emr_client(&self) -> Result<aws_sdk_emr::Client, ClientError> {
        Ok(self.shared.clients().await?.emr.clone())
    }

    /// The S3 filesystem the clusters use.
    pub async fn s3(&self) -> Result<flow_fs_s3::S3Filesystem, ClientError> {
        Ok(self.shared.clients().await?.s3.clone())
    }

    /// `DescribeCluster` requests made while waiting for clusters to come
    /// up.
    pub fn launch_requests(&self) -> u64 {
        self.shared.lifecycle_requests.get()
    }

    /// `ListSteps` requests the step pollers made so far.
    pub fn poll_requests(&self) -> u64 {
        self.shared.poll_requests()
    }
}

impl ClusterFactory for EmrClusterFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn create(
        &self,
        name: &str,
        _context: &ExecutionContext,
    ) -> Result<Arc<dyn Cluster>, ClusterError> {
        Ok(Arc::new(self.cluster(name)))
    }
}

/// `NAME-N` for the run's cluster `KIND-N`; `NAME-RUNNAME` for other names.
fn emr_name(configured: &str, run_name: &str) -> String {
    let suffix = match run_name.rsplit_once('-') {
        Some((_, index)) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => index,
        _ => run_name,
    };
    format!("{configured}-{suffix}")
}

/// What this value knows of its EMR cluster.
#[derive(Debug, Default, Clone)]
struct ClusterFacts {
    id: Option<String>,
    reused: bool,
    log_uri: Option<String>,
}

/// One EMR cluster of a run. Jobs are EMR steps added with
/// `ActionOnFailure=CONTINUE`; files are on S3.
pub struct EmrCluster {
    name: String,
    emr_name: String,
    shared: Arc<EmrBackend>,
    fs: LazyS3,
    state: Mutex<ClusterFacts>,
}

impl fmt::Debug for EmrCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmrCluster")
            .field("name", &self.name)
            .field("emr_name", &self.emr_name)
            .field("cluster_id", &self.known().id)
            .finish_non_exhaustive()
    }
}

/// A step's ids as a handle holds them.
struct StepRef {
    cluster_id: String,
    step_id: Option<String>,
    step_name: String,
}

impl EmrCluster {
    /// The EMR name of this cluster (`NAME-N`).
    pub fn emr_name(&self) -> &str {
        &self.emr_name
    }

    /// The EMR cluster id, once provisioned or adopted.
    pub fn cluster_id(&self) -> Option<String> {
        self.known().id
    }

    fn known(&self) -> ClusterFacts {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_known(&self, known: ClusterFacts) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = known;
    }

    async fn clients(&self, operation: &'static str) -> Result<&Clients, ClusterError> {
        self.shared
            .clients()
            .await
            .map_err(|e| self.backend(operation, e.to_string()))
    }

    fn backend(&self, operation: &'static str, message: impl Into<String>) -> ClusterError {
        ClusterError::Backend {
            cluster: self.name.clone(),
            operation,
            message: message.into(),
        }
    }

    fn launch_error(&self, message: impl Into<String>, transient: bool) -> ClusterError {
        ClusterError::Launch {
            cluster: self.name.clone(),
            message: message.into(),
            transient,
        }
    }

    fn bad_handle(&self, handle: &JobHandle, message: impl Into<String>) -> ClusterError {
        ClusterError::BadHandle {
            cluster: self.name.clone(),
            handle: handle.to_string(),
            message: message.into(),
        }
    }

    fn handle(&self, known: &ClusterFacts) -> ClusterHandle {
        let mut details = BTreeMap::from([("emr_name".to_string(), self.emr_name.clone())]);
        if let Some(uri) = &known.log_uri {
            details.insert("log_uri".into(), uri.clone());
        }
        ClusterHandle {
            kind: KIND.to_string(),
            name: self.name.clone(),
            backend_id: known.id.clone().unwrap_or_default(),
            reused: known.reused,
            details,
        }
    }

    fn step_ref(&self, handle: &JobHandle) -> Result<StepRef, ClusterError> {
        if handle.kind != KIND {
            return Err(self.bad_handle(handle, "not an EMR job"));
        }
        let cluster_id = handle
            .id("cluster_id")
            .ok_or_else(|| self.bad_handle(handle, "it names no EMR cluster"))?;
        let step_name = handle
            .id("step_name")
            .ok_or_else(|| self.bad_handle(handle, "it has no step name"))?;
        Ok(StepRef {
            cluster_id: cluster_id.to_string(),
            step_id: handle.id("step_id").map(str::to_string),
            step_name: step_name.to_string(),
        })
    }

    /// The step's id: from the handle, else found by its name (the answer
    /// to `AddJobFlowSteps` was lost). `None`: EMR has no such step.
    async fn step_id(&self, step: &StepRef) -> Result<Option<String>, ClusterError> {
        if let Some(id) = &step.step_id {
            return Ok(Some(id.clone()));
        }
        let emr = &self.clients("ListSteps").await?.emr;
        let found = find_step_by_name(emr, &step.cluster_id, &step.step_name)
            .await
            .map_err(|e| self.backend("ListSteps", e))?;
        Ok(found.map(|s| s.id))
    }

    /// Describes the cluster: state, reason, master DNS name, log URI.
    async fn describe(&self, id: &str) -> Result<Option<emr::Cluster>, ClusterError> {
        let emr = &self.clients("DescribeCluster").await?.emr;
        match emr.describe_cluster().cluster_id(id).send().await {
            Ok(answer) => Ok(answer.cluster().cloned()),
            Err(e) if is_unknown_cluster(&e) => Ok(None),
            Err(e) => Err(self.backend("DescribeCluster", sdk_message(&e))),
        }
    }

    /// A live cluster named like this one, to reuse.
    async fn find_live(&self, emr: &aws_sdk_emr::Client) -> Result<Vec<String>, ClusterError> {
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
    async fn run_job_flow(&self, emr: &aws_sdk_emr::Client) -> Result<String, ClusterError> {
        let token = format!("{:016x}", fastrand::u64(..));
        let request = self.run_job_flow_request(emr, &token);
        let sent = retry_with_lookup(
            &self.shared.config.call_retry(),
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
                        .map_err(|e| CallError::sdk("RunJobFlow", &e))?;
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

    fn run_job_flow_request(
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

    /// Adds the step, retrying transient failures itself: before each
    /// retry it looks the step up by name, so a step whose answer was lost
    /// is never added twice.
    async fn add_step(
        &self,
        emr: &aws_sdk_emr::Client,
        step: &StepRef,
        job: &Job,
    ) -> Result<String, ClusterError> {
        let jar = jar_step(job);
        let hadoop = emr::HadoopJarStepConfig::builder()
            .jar(jar.jar)
            .set_main_class(jar.main_class)
            .set_args(Some(jar.args))
            .build();
        let config = emr::StepConfig::builder()
            .name(&step.step_name)
            .action_on_failure(emr::ActionOnFailure::Continue)
            .hadoop_jar_step(hadoop)
            .build();
        let sent = retry_with_lookup(
            &self.shared.config.call_retry(),
            &self.shared.clock,
            "AddJobFlowSteps",
            || async {
                let answer = emr
                    .add_job_flow_steps()
                    .job_flow_id(&step.cluster_id)
                    .steps(config.clone())
                    .customize()
                    .config_override(
                        aws_sdk_emr::config::Builder::default()
                            .retry_config(RetryConfig::disabled()),
                    )
                    .send()
                    .await
                    .map_err(|e| CallError::sdk("AddJobFlowSteps", &e))?;
                answer.step_ids().first().cloned().ok_or_else(|| {
                    CallError::Final(self.backend("AddJobFlowSteps", "the answer names no step id"))
                })
            },
            // The step may have been added although the answer failed.
            || async {
                match find_step_by_name(emr, &step.cluster_id, &step.step_name).await {
                    Ok(found) => Ok(found.map(|found| {
                        info!("step {} named {} was added", found.id, step.step_name);
                        found.id
                    })),
                    Err(e) => {
                        warn!("cannot look the step up by name: {e}");
                        Ok(None)
                    }
                }
            },
        )
        .await;
        sent.map_err(|e| match e {
            CallError::Sdk {
                message,
                transient: false,
                ..
            } => self.job_failed(job.kind(), message),
            CallError::Sdk { message, .. } => self.backend("AddJobFlowSteps", message),
            CallError::Final(e) => e,
        })
    }

    fn job_failed(&self, job: &'static str, message: impl Into<String>) -> ClusterError {
        ClusterError::JobFailed {
            cluster: self.name.clone(),
            job,
            message: message.into(),
        }
    }

    /// `CancelSteps` for the step, then waits until it left `PENDING`,
    /// `RUNNING` and `CANCEL_PENDING` (up to `cancel_timeout`).
    async fn cancel_step(&self, cluster_id: &str, step_id: &str) -> Result<(), ClusterError> {
        let emr = &self.clients("CancelSteps").await?.emr;
        info!("cancelling step {step_id} on {cluster_id}");
        let answer = emr
            .cancel_steps()
            .cluster_id(cluster_id)
            .step_ids(step_id)
            .step_cancellation_option(emr::StepCancellationOption::SendInterrupt)
            .send()
            .await
            .map_err(|e| self.backend("CancelSteps", sdk_message(&e)))?;
        for info in answer.cancel_steps_info_list() {
            if info.status() == Some(&emr::CancelStepsRequestStatus::Failed) {
                // EMR refuses to cancel a step that already ended: fine.
                warn!(
                    "EMR did not cancel step {step_id}: {}",
                    info.reason().unwrap_or("no reason given")
                );
            }
        }
        let poller = self.shared.poller(emr, cluster_id);
        match poller
            .wait_for(step_id.to_string(), Some(self.shared.config.cancel_timeout))
            .await
        {
            Ok(finished) => {
                info!(
                    "step {step_id} is {} after the cancel",
                    finished.status.state
                );
                Ok(())
            }
            Err(e) => Err(self.backend("CancelSteps", format!("the step did not stop: {e}"))),
        }
    }

    /// The message of a failed step: EMR's failure details and, when the
    /// cluster has a log URI, the tails of its logs (also written to the
    /// step log, line by line).
    async fn failure_message(
        &self,
        step: &StepInfo,
        cluster_id: &str,
        log_uri: Option<&str>,
    ) -> String {
        let mut message = step.describe();
        let logs = &self.shared.config.step_logs;
        let Some(log_uri) = log_uri.filter(|_| logs.enabled) else {
            return message;
        };
        let Ok(clients) = self.shared.clients().await else {
            return message;
        };
        let prefix = step_log_prefix(log_uri, cluster_id, &step.id);
        info!(
            "reading the step's logs under {prefix} (EMR uploads them minutes after the step ends)"
        );
        let options = logs.tail_options();
        let clock = &self.shared.clock;
        let fetch = |name: &'static str| {
            let location = format!("{prefix}{name}.gz");
            async move {
                let tail = flow_cloud::tail(&clients.s3, &location, &options, clock).await;
                (name, location, tail)
            }
        };
        let (a, b, c) = tokio::join!(fetch("stderr"), fetch("stdout"), fetch("controller"));
        let mut found = false;
        for (name, location, tail) in [a, b, c] {
            match tail {
                Ok(Some(tail)) => {
                    found = true;
                    warn!(
                        "{name} of step {}{}:",
                        step.id,
                        if tail.truncated { " (last part)" } else { "" }
                    );
                    for line in tail.text.lines() {
                        warn!("{name}: {line}");
                    }
                    let excerpt = last_bytes(&tail.text, logs.error_bytes);
                    if !excerpt.trim().is_empty() {
                        message.push_str(&format!(
                            "\n--- {name} (last lines) ---\n{}",
                            excerpt.trim_end()
                        ));
                    }
                }
                Ok(None) => info!("{location} did not appear within {:?}", options.wait),
                Err(e) => warn!("{e}"),
            }
        }
        if !found {
            message.push_str(&format!(" (no step logs under {prefix} yet)"));
        }
        message
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

fn state_of(cluster: &emr::Cluster) -> String {
    cluster
        .status()
        .and_then(|s| s.state())
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

/// `CODE: message` of the cluster's last state change.
fn reason_of(cluster: &emr::Cluster) -> String {
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

#[async_trait]
impl Cluster for EmrCluster {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    /// Reuses a live cluster of this name (when configured), else
    /// `RunJobFlow`; returns as soon as EMR named the cluster.
    async fn provision(&self) -> Result<ClusterHandle, ClusterError> {
        let config = &self.shared.config;
        let emr = &self
            .shared
            .clients()
            .await
            .map_err(|e| self.launch_error(e.to_string(), false))?
            .emr;
        if config.reuse {
            if let Some(id) = self.find_live(emr).await?.into_iter().next() {
                let log_uri = self
                    .describe(&id)
                    .await?
                    .and_then(|c| c.log_uri().map(str::to_string));
                info!("reusing EMR cluster {id} named {}", self.emr_name);
                let known = ClusterFacts {
                    id: Some(id),
                    reused: true,
                    log_uri,
                };
                self.set_known(known.clone());
                return Ok(self.handle(&known));
            }
        }
        let id = self.run_job_flow(emr).await?;
        info!("launched EMR cluster {id} named {}", self.emr_name);
        let known = ClusterFacts {
            id: Some(id),
            reused: false,
            log_uri: config.log_uri.clone(),
        };
        self.set_known(known.clone());
        Ok(self.handle(&known))
    }

    /// Polls `DescribeCluster` every `launch_poll` until the cluster is
    /// `WAITING` (or `RUNNING`: a reused cluster busy with steps); ending
    /// meanwhile is a launch failure with EMR's reason.
    async fn wait_ready(&self) -> Result<(), ClusterError> {
        let Some(id) = self.known().id else {
            return Err(self.launch_error("wait_ready before provision", false));
        };
        let config = &self.shared.config;
        let wait = Wait {
            interval: config.launch_poll,
            timeout: config.launch_timeout,
        };
        let last = Mutex::new(String::new());
        let ready = wait_until(
            &self.shared.clock,
            wait,
            &self.shared.lifecycle_requests,
            || async {
                let cluster = self.describe(&id).await?.ok_or_else(|| {
                    self.launch_error(format!("EMR does not know cluster {id}"), false)
                })?;
                let state = state_of(&cluster);
                {
                    let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
                    if state != *last {
                        info!("EMR cluster {id} is {state}");
                        last.clone_from(&state);
                    }
                }
                Ok(if state == "WAITING" || state == "RUNNING" {
                    Look::Ready(cluster)
                } else if ENDED_CLUSTER_STATES.contains(&state.as_str()) {
                    Look::Failed(format!(
                        "EMR cluster {id} became {state} while launching: {}",
                        reason_of(&cluster)
                    ))
                } else {
                    Look::Pending(state)
                })
            },
        )
        .await;
        let cluster = ready.map_err(|e| match e {
            WaitError::Failed(message) => self.launch_error(message, false),
            WaitError::Timeout { last, waited } => self.launch_error(
                format!("EMR cluster {id} is still {last} after {waited:?} (launch_timeout)"),
                false,
            ),
            WaitError::Request(ClusterError::Launch { message, .. }) => {
                self.launch_error(message, false)
            }
            WaitError::Request(e) => self.launch_error(e.to_string(), true),
        })?;
        info!(
            "EMR cluster {id} ({}) is up; master node {}",
            self.emr_name,
            cluster.master_public_dns_name().unwrap_or("unknown")
        );
        let mut known = self.known();
        if known.log_uri.is_none() {
            known.log_uri = cluster.log_uri().map(str::to_string);
            self.set_known(known);
        }
        Ok(())
    }

    async fn adopt(&self, handle: &ClusterHandle) -> Result<bool, ClusterError> {
        if handle.kind != KIND || handle.backend_id.is_empty() {
            return Ok(false);
        }
        let Some(cluster) = self.describe(&handle.backend_id).await? else {
            return Ok(false);
        };
        let state = state_of(&cluster);
        if !LIVE_CLUSTER_STATES.contains(&state.as_str()) {
            info!("EMR cluster {} is {state}", handle.backend_id);
            return Ok(false);
        }
        self.set_known(ClusterFacts {
            id: Some(handle.backend_id.clone()),
            reused: handle.reused,
            log_uri: cluster.log_uri().map(str::to_string),
        });
        Ok(true)
    }

    /// The step's unique name, chosen here and stored before the step
    /// exists.
    fn prepare(&self, job: &Job, cx: &JobContext<'_>) -> Result<JobHandle, ClusterError> {
        let Some(cluster_id) = self.known().id else {
            return Err(self.backend("prepare", "the cluster was not launched"));
        };
        Ok(JobHandle::new(
            KIND,
            self.name.clone(),
            [
                ("cluster_id", cluster_id),
                ("step_name", step_name(cx, fastrand::u64(..))),
                ("job", job.kind().to_string()),
            ],
        ))
    }

    async fn submit(
        &self,
        handle: &JobHandle,
        job: &Job,
        cx: &JobContext<'_>,
    ) -> Result<JobHandle, ClusterError> {
        if cx.cancel.is_cancelled() {
            return Err(ClusterError::Cancelled {
                cluster: self.name.clone(),
                job: job.kind(),
            });
        }
        // A step's arguments are visible to anyone who may list the
        // cluster's steps: secret values have no safe way onto EMR here.
        if !job.secret_env().is_empty() || job.secret_file().is_some() {
            return Err(self.job_failed(
                job.kind(),
                "the job uses secret values, and EMR shows a step's arguments to anyone who may list its steps: pass secrets through the cluster's own configuration (e.g. a bootstrap action or an instance role) instead",
            ));
        }
        let step = self.step_ref(handle)?;
        let emr = &self.clients("AddJobFlowSteps").await?.emr;
        let jar = jar_step(job);
        let settings = &cx.execution.settings;
        let shown: Vec<String> = std::iter::once(jar.jar.as_str())
            .chain(jar.main_class.as_deref())
            .chain(jar.args.iter().map(String::as_str))
            .map(|w| settings.redact(w))
            .collect();
        info!(
            "adding step {} to {}: {}",
            step.step_name,
            step.cluster_id,
            shown.join(" ")
        );
        let step_id = self.add_step(emr, &step, job).await?;
        let mut handle = handle.clone();
        handle.ids.insert("step_id".into(), step_id.clone());
        let log_uri = self.known().log_uri;
        if let Some(uri) = &log_uri {
            info!(
                "step {step_id} added; its logs will be under {}",
                step_log_prefix(uri, &step.cluster_id, &step_id)
            );
            handle.ids.insert("log_uri".into(), uri.clone());
        } else {
            info!("step {step_id} added");
        }
        Ok(handle)
    }

    async fn wait(&self, handle: &JobHandle, cx: &JobContext<'_>) -> Result<(), ClusterError> {
        let step = self.step_ref(handle)?;
        let kind = job_kind(handle);
        let Some(step_id) = self.step_id(&step).await? else {
            return Err(self.bad_handle(handle, "EMR has no step of that name: it was never added"));
        };
        let emr = &self.clients("ListSteps").await?.emr;
        let poller = self.shared.poller(emr, &step.cluster_id);
        let finished = tokio::select! {
            finished = poller.wait(step_id.clone()) => finished,
            _ = cx.cancel.cancelled() => {
                if let Err(e) = self.cancel_step(&step.cluster_id, &step_id).await {
                    error!("{e}");
                }
                return Err(ClusterError::Cancelled { cluster: self.name.clone(), job: kind });
            }
        };
        let finished = match finished {
            Ok(finished) => finished,
            Err(e @ PollError::Timeout { .. }) => {
                return Err(self.job_failed(
                    kind,
                    format!("{e} (poll.timeout); the step is left running"),
                ))
            }
            Err(e) => return Err(self.backend("ListSteps", e.to_string())),
        };
        let info = finished.status;
        match finished.outcome {
            Outcome::Succeeded => {
                info!("step {step_id} COMPLETED");
                Ok(())
            }
            Outcome::Failed | Outcome::Cancelled => {
                error!("{}", info.describe());
                let log_uri = handle
                    .id("log_uri")
                    .map(str::to_string)
                    .or(self.known().log_uri);
                let message = self
                    .failure_message(&info, &step.cluster_id, log_uri.as_deref())
                    .await;
                Err(self.job_failed(kind, message))
            }
        }
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, ClusterError> {
        let step = self.step_ref(handle)?;
        let emr = &self.clients("ListSteps").await?.emr;
        let info = match &step.step_id {
            Some(id) => list_steps(emr, &step.cluster_id, Some(std::slice::from_ref(id)))
                .await
                .map_err(|e| self.backend("ListSteps", e))?
                .into_iter()
                .find(|s| &s.id == id),
            None => find_step_by_name(emr, &step.cluster_id, &step.step_name)
                .await
                .map_err(|e| self.backend("ListSteps", e))?,
        };
        let Some(info) = info else {
            return Ok(match step.step_id {
                None => JobStatus::NotSubmitted,
                Some(id) => JobStatus::Lost {
                    reason: format!("EMR cluster {} has no step {id}", step.cluster_id),
                },
            });
        };
        Ok(match info.outcome() {
            Some(Outcome::Succeeded) => JobStatus::Succeeded,
            Some(Outcome::Cancelled) => JobStatus::Cancelled,
            Some(Outcome::Failed) => JobStatus::Failed {
                message: info.describe(),
            },
            None => {
                // A step of a cluster that ended will never run.
                match self.describe(&step.cluster_id).await? {
                    Some(c) if ENDED_CLUSTER_STATES.contains(&state_of(&c).as_str()) => {
                        JobStatus::Lost {
                            reason: format!(
                                "step {} is {} but its cluster {} is {}",
                                info.id,
                                info.state,
                                step.cluster_id,
                                state_of(&c)
                            ),
                        }
                    }
                    _ => JobStatus::Running,
                }
            }
        })
    }

    async fn cancel(&self, handle: &JobHandle) -> Result<(), ClusterError> {
        let step = self.step_ref(handle)?;
        let Some(step_id) = self.step_id(&step).await? else {
            return Ok(());
        };
        self.cancel_step(&step.cluster_id, &step_id).await
    }

    /// Lifts termination protection, then `TerminateJobFlows`; only for a
    /// cluster this run launched (or adopted from a run that launched it),
    /// or a reused one with `terminate_reused`.
    async fn terminate(&self) -> Result<(), ClusterError> {
        let known = self.known();
        let Some(id) = known.id else {
            return Ok(());
        };
        if known.reused && !self.shared.config.terminate_reused {
            info!("leaving reused EMR cluster {id} up");
            return Ok(());
        }
        let terminate_error = |message: String| ClusterError::Terminate {
            cluster: self.name.clone(),
            message,
        };
        match self
            .describe(&id)
            .await
            .map_err(|e| terminate_error(e.to_string()))?
        {
            Some(c) if ENDED_CLUSTER_STATES.contains(&state_of(&c).as_str()) => {
                info!("EMR cluster {id} is already {}", state_of(&c));
                return Ok(());
            }
            None => {
                info!("EMR cluster {id} is gone");
                return Ok(());
            }
            Some(_) => {}
        }
        let emr = &self
            .shared
            .clients()
            .await
            .map_err(|e| terminate_error(e.to_string()))?
            .emr;
        emr.set_termination_protection()
            .job_flow_ids(&id)
            .termination_protected(false)
            .send()
            .await
            .map_err(|e| {
                terminate_error(format!(
                    "SetTerminationProtection {id}: {}",
                    sdk_message(&e)
                ))
            })?;
        emr.terminate_job_flows()
            .job_flow_ids(&id)
            .send()
            .await
            .map_err(|e| terminate_error(format!("TerminateJobFlows {id}: {}", sdk_message(&e))))?;
        info!("terminating EMR cluster {id} ({})", self.emr_name);
        Ok(())
    }

    fn filesystem(&self) -> &dyn Filesystem {
        &self.fs
    }
}

/// The job's kind as `prepare` recorded it, for messages.
fn job_kind(handle: &JobHandle) -> &'static str {
    match handle.id("job") {
        Some("shell") => "shell",
        Some("spark") => "spark",
        Some("pig") => "pig",
        Some("hadoop") => "hadoop",
        _ => "emr",
    }
}

impl Default for EmrClusterFactory {
    /// The default settings (region and credentials from the AWS chain).
    fn default() -> Self {
        EmrClusterFactory::from_parts(EmrConfig::default(), Arc::new(TokioClock::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_with_secret_values_are_refused_before_any_request() {
        let cluster = EmrClusterFactory::default().cluster("emr-0");
        let timeperiod: flow_core::Timeperiod = "2026112800".parse().unwrap();
        let execution = ExecutionContext {
            flow_name: "f".into(),
            timeperiod,
            start_timeperiod: timeperiod,
            end_timeperiod: timeperiod,
            settings: Arc::new(flow_core::Settings::new()),
            number_of_clusters: 1,
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let cx = JobContext {
            cancel: &cancel,
            execution: &execution,
            step: "s",
            action: "shell",
            attempt: 1,
        };
        let job = Job::Shell {
            command: "curl -H \"$FLOW_SECRET_TOKEN\" x".into(),
            env: vec![(
                "FLOW_SECRET_TOKEN".into(),
                flow_core::Secret::new("hunter2"),
            )],
        };
        let handle = JobHandle::new(KIND, "emr-0", [("cluster_id", "j-1"), ("step_name", "n")]);
        let e = cluster.submit(&handle, &job, &cx).await.unwrap_err();
        assert!(
            matches!(&e, ClusterError::JobFailed { message, .. } if message.contains("secret values")),
            "{e}"
        );
        assert!(!e.to_string().contains("hunter2"));
    }

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

    #[test]
    fn emr_names_follow_the_run_index() {
        assert_eq!(emr_name("etl", "emr-0"), "etl-0");
        assert_eq!(emr_name("etl", "emr-12"), "etl-12");
        assert_eq!(emr_name("etl", "special"), "etl-special");
    }
}
