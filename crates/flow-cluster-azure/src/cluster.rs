//! [`AzureCluster`]: flow's [`Cluster`] on an HDInsight cluster (Livy for
//! Spark, WebHCat for Pig and Hadoop jars), and the factory that makes them.

use crate::arm::Arm;
use crate::arm_config::name_text;
use crate::arm_watch::ArmWatch;
use crate::config::AzureConfig;
use crate::error::AzureError;
use crate::gateway::{CallError, Gateway};
use crate::jobs::{self, ids, Api, AzureJobs, ClusterWatch, JobRef, Payload, Status, KIND};
use crate::launch::{create_body, Lifecycle, Place, OWNER_TAG};
use crate::livy::Livy;
use crate::webhcat::WebHcat;
use async_trait::async_trait;
use flow_cloud::cluster::{wait_job, ClusterErrors, PollerMap};
use flow_cloud::http::HttpTimeouts;
use flow_cloud::names::{numbered_name, run_key_name};
use flow_cloud::tail::last_lines;
use flow_cloud::{
    retry_with_lookup, Clock, Outcome, PollError, Poller, Requests, TailOptions, Transient,
};
use flow_core::{
    Cluster, ClusterError, ClusterFactory, ClusterHandle, ExecutionContext, Filesystem, Job,
    JobContext, JobHandle, JobStatus, Secret,
};
use flow_fs_azure::AzureBlobFilesystem;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use tracing::{error, info, warn};

/// What every cluster of a factory shares.
struct AzureBackend {
    config: AzureConfig,
    gateway: Arc<Gateway>,
    fs: AzureBlobFilesystem,
    clock: Arc<dyn Clock>,
    livy: Option<String>,
    webhcat: Option<String>,
    /// `wasbs://CONTAINER@ACCOUNT.blob.core.windows.net[/PREFIX]`: where job
    /// files without a scheme are; `None` without a default container.
    code_root: Option<String>,
    /// Where WebHCat status directories go (one per job).
    statusdir_root: Option<String>,
    /// One poller per gateway: the run's clusters on one gateway share its
    /// listings.
    pollers: PollerMap<AzureJobs>,
    /// Asks whether a gateway's cluster has ended, if anything can.
    watch: Option<Arc<dyn ClusterWatch>>,
    /// Azure Resource Manager, with `[cluster.azure.arm]`.
    arm: Option<Arc<Arm>>,
    /// Watches the clusters ARM creates, unless a library user gave
    /// [`AzureBackend::watch`] (then that one).
    arm_watch: Option<Arc<ArmWatch>>,
    /// The gateway's password, for the clusters ARM creates.
    password: Option<Secret>,
    /// Looks at ARM's operations and clusters while waiting.
    lifecycle_requests: Requests,
}

impl AzureBackend {
    /// The gateway's address: the cluster's identity.
    fn endpoint(&self) -> String {
        self.config
            .gateway
            .clone()
            .or_else(|| self.livy.clone())
            .or_else(|| self.webhcat.clone())
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string()
    }

    fn poller(&self, endpoint: &str) -> Poller<AzureJobs> {
        self.pollers.get(endpoint, || {
            Poller::new(
                AzureJobs::new(
                    self.gateway.clone(),
                    self.config.webhcat_user().to_string(),
                    self.watch.clone().map(|w| (w, endpoint.to_string())),
                ),
                self.config.poll,
                self.clock.clone(),
            )
        })
    }
}

/// Makes [`AzureCluster`]s (kind `azure`) from one [`AzureConfig`]. Build it
/// with [`AzureConfig::builder`] or
/// [`AzureClusterFactoryBuilder`](crate::AzureClusterFactoryBuilder).
#[derive(Clone)]
pub struct AzureClusterFactory {
    shared: Arc<AzureBackend>,
}

impl fmt::Debug for AzureClusterFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureClusterFactory")
            .field("config", &self.shared.config)
            .field("gateway", &self.shared.gateway)
            .finish()
    }
}

impl AzureClusterFactory {
    pub(crate) fn new(
        config: AzureConfig,
        clock: Arc<dyn Clock>,
        watch: Option<Arc<dyn ClusterWatch>>,
    ) -> Result<Self, AzureError> {
        let password = match &config.password {
            Some(written) => Some(written.read("password").map_err(|e| AzureError::Invalid {
                field: "password",
                message: e.to_string(),
            })?),
            None => None,
        };
        let fs = config.blob.clone().builder().build()?;
        let code_root = match &config.blob.container {
            Some(container) => {
                let mut root =
                    format!("wasbs://{container}@{}.blob.core.windows.net", fs.account());
                if let Some(prefix) = config.blob.prefix.as_deref().filter(|p| !p.is_empty()) {
                    root.push('/');
                    root.push_str(prefix.trim_matches('/'));
                }
                Some(root)
            }
            None => None,
        };
        let statusdir_root = if config.statusdir.contains("://") {
            Some(config.statusdir.trim_end_matches('/').to_string())
        } else {
            code_root
                .as_ref()
                .map(|root| format!("{root}/{}", config.statusdir.trim_matches('/')))
        };
        let timeouts = HttpTimeouts {
            connect: config.connect_timeout,
            request: config.request_timeout,
        };
        let http = timeouts
            .client()
            .map_err(|message| AzureError::Client { message })?;
        let arm = match &config.arm {
            Some(arm) => Some(Arc::new(
                Arm::new(arm, http.clone(), config.retry, clock.clone()).map_err(|message| {
                    AzureError::InvalidArm {
                        field: "credential".into(),
                        message,
                    }
                })?,
            )),
            None => None,
        };
        // A cluster flow creates through ARM is watched through ARM.
        let arm_watch = match (&watch, &arm) {
            (None, Some(arm)) => Some(Arc::new(ArmWatch::new(arm.clone()))),
            _ => None,
        };
        let watch = watch.or_else(|| arm_watch.clone().map(|w| w as Arc<dyn ClusterWatch>));
        let gateway = Arc::new(Gateway::new(
            http,
            config.username.clone(),
            password.clone(),
            config.retry,
            clock.clone(),
        ));
        Ok(AzureClusterFactory {
            shared: Arc::new(AzureBackend {
                livy: config.livy(),
                webhcat: config.webhcat(),
                config,
                gateway,
                fs,
                clock,
                code_root,
                statusdir_root,
                pollers: PollerMap::default(),
                watch,
                arm,
                arm_watch,
                password,
                lifecycle_requests: Requests::new(),
            }),
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &AzureConfig {
        &self.shared.config
    }

    /// Gateway requests sent so far by every cluster of this factory
    /// (retries included).
    pub fn requests(&self) -> u64 {
        self.shared.gateway.requests()
    }

    /// ARM requests sent so far (retries included), with
    /// `[cluster.azure.arm]`.
    pub fn arm_requests(&self) -> u64 {
        self.shared.arm.as_ref().map_or(0, |arm| arm.requests())
    }

    /// The clusters' Blob filesystem.
    pub fn filesystem(&self) -> &AzureBlobFilesystem {
        &self.shared.fs
    }

    /// A cluster called `name` in the run, without the trait object.
    pub fn cluster(&self, name: &str, context: &ExecutionContext) -> AzureCluster {
        AzureCluster::new(name, self.shared.clone(), context)
    }
}

impl ClusterFactory for AzureClusterFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn create(
        &self,
        name: &str,
        context: &ExecutionContext,
    ) -> Result<Arc<dyn Cluster>, ClusterError> {
        Ok(Arc::new(self.cluster(name, context)))
    }
}

/// The cluster a gateway URL names (`etl` of
/// `https://etl.azurehdinsight.net`), else the URL's host.
fn cluster_of(url: &str) -> String {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', ':'])
        .next()
        .unwrap_or(url);
    host.strip_suffix(".azurehdinsight.net")
        .unwrap_or(host)
        .to_string()
}

/// The ARM name of the run's cluster `name` (`azure-0` → `BASE-0`), BASE
/// being `[cluster.azure.arm] name` or `flow-FLOW-TIMEPERIOD` (shortened
/// with a hash of the whole when long, so two keys never share a name).
fn arm_name(base: Option<&str>, name: &str, context: &ExecutionContext) -> String {
    let base = match base {
        Some(base) => base.to_string(),
        None => run_key_name(context, name_text, 40),
    };
    numbered_name(&base, name, name_text)
}

/// A cluster created through ARM, in this value's hands.
#[derive(Debug, Clone)]
struct ArmLaunch {
    place: Place,
    /// The create's `Azure-AsyncOperation`, until it is followed.
    operation: Option<String>,
    /// Deleted (or found gone) already.
    ended: bool,
}

/// An HDInsight cluster of a run, reached through its gateway.
///
/// Without `[cluster.azure.arm]` the gateway names a cluster managed
/// outside the flow: `provision` records it as reused, `wait_ready` checks
/// that the gateway answers, `terminate` leaves it up. With it,
/// `provision` creates the cluster through ARM (or takes over the one of
/// its name a dead run of this flow left, or reuses one made outside the
/// flow) and returns once ARM took the create, `wait_ready` follows the
/// create, `terminate` deletes what flow created.
pub struct AzureCluster {
    name: String,
    shared: Arc<AzureBackend>,
    poller: Poller<AzureJobs>,
    handle: Mutex<Option<ClusterHandle>>,
    /// Why the cluster ended under a job, once a wait noticed.
    end_reason: Mutex<Option<String>>,
    /// [`OWNER_TAG`]'s value for this run.
    owner: String,
    /// With ARM: the cluster (named at creation, or from an adopted
    /// handle).
    launch: Mutex<Option<ArmLaunch>>,
}

impl fmt::Debug for AzureCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureCluster")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl AzureCluster {
    fn new(name: &str, shared: Arc<AzureBackend>, context: &ExecutionContext) -> Self {
        let launch = shared.config.arm.as_ref().map(|arm| ArmLaunch {
            place: Place {
                subscription: arm.subscription.clone(),
                resource_group: arm.resource_group.clone(),
                name: arm_name(arm.name.as_deref(), name, context),
            },
            operation: None,
            ended: false,
        });
        // A cluster ARM creates has its own gateway, so its own poller
        // (unless livy_url / webhcat_url send every cluster to one).
        let endpoint = match (&shared.config.arm, &launch) {
            (Some(arm), Some(launch)) if shared.livy.is_none() && shared.webhcat.is_none() => {
                arm.gateway_of(&launch.place.name)
            }
            _ => shared.endpoint(),
        };
        let poller = shared.poller(&endpoint);
        if let (Some(watch), Some(launch)) = (&shared.arm_watch, &launch) {
            watch.watch(&endpoint, &launch.place);
        }
        AzureCluster {
            name: name.to_string(),
            shared,
            poller,
            handle: Mutex::new(None),
            end_reason: Mutex::new(None),
            owner: name_text(&format!("{}-{}", context.flow_name, context.timeperiod)),
            launch: Mutex::new(launch),
        }
    }

    /// Job status requests the poller of its gateway made so far (one per
    /// tick per API).
    pub fn poll_requests(&self) -> u64 {
        self.poller.requests()
    }

    fn config(&self) -> &AzureConfig {
        &self.shared.config
    }

    fn gateway(&self) -> &Gateway {
        &self.shared.gateway
    }

    fn user(&self) -> &str {
        self.config().webhcat_user()
    }

    /// The ARM name of the cluster (with `[cluster.azure.arm]`).
    pub fn arm_name(&self) -> Option<String> {
        self.arm_launch().map(|l| l.place.name)
    }

    fn arm_launch(&self) -> Option<ArmLaunch> {
        self.launch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The gateway of the cluster ARM created.
    fn arm_gateway(&self) -> Option<String> {
        let arm = self.config().arm.as_ref()?;
        Some(arm.gateway_of(&self.arm_name()?))
    }

    /// Livy's URL: the setting, the gateway's, or the created cluster's.
    fn livy(&self) -> Option<String> {
        self.shared
            .livy
            .clone()
            .or_else(|| self.arm_gateway().map(|g| format!("{g}/livy")))
    }

    /// WebHCat's URL, as [`livy`](Self::livy).
    fn webhcat(&self) -> Option<String> {
        self.shared
            .webhcat
            .clone()
            .or_else(|| self.arm_gateway().map(|g| format!("{g}/templeton/v1")))
    }

    fn lifecycle<'a>(&'a self, arm: &'a Arm) -> Option<Lifecycle<'a>> {
        Some(Lifecycle {
            arm,
            config: self.config().arm.as_ref()?,
            clock: &self.shared.clock,
            requests: &self.shared.lifecycle_requests,
        })
    }

    fn set_launch(&self, change: impl FnOnce(&mut ArmLaunch)) {
        if let Some(launch) = &mut *self.launch.lock().unwrap_or_else(PoisonError::into_inner) {
            change(launch);
        }
    }

    fn set_handle(&self, handle: ClusterHandle) {
        *self.handle.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
    }

    /// The handle of the ARM cluster at `place`.
    fn arm_handle(&self, place: &Place, reused: bool, operation: Option<&str>) -> ClusterHandle {
        let mut details = BTreeMap::from([
            ("subscription".to_string(), place.subscription.clone()),
            ("resource_group".to_string(), place.resource_group.clone()),
        ]);
        if let Some(gateway) = self.arm_gateway() {
            details.insert("gateway".into(), gateway);
        }
        if let Some(op) = operation {
            details.insert("operation".into(), op.to_string());
        }
        ClusterHandle {
            kind: KIND.into(),
            name: self.name.clone(),
            backend_id: place.name.clone(),
            reused,
            details,
        }
    }

    /// `provision` with ARM: takes over or reuses the cluster of its name,
    /// else creates it (a lost create answer is found by name, never sent
    /// twice).
    async fn provision_arm(
        &self,
        arm: &Arm,
        mut launch: ArmLaunch,
    ) -> Result<ClusterHandle, ClusterError> {
        let at = launch.place.clone();
        let existing = arm
            .get(&at.subscription, &at.resource_group, &at.name)
            .await
            .map_err(|e| {
                self.launch_error(format!("Clusters - Get {}: {e}", at.name), e.is_transient())
            })?;
        if let Some(cluster) = existing {
            let state = cluster.properties.provisioning_state.clone();
            return match state.as_str() {
                "Succeeded" | "InProgress" => {
                    // Made by an earlier run of this flow and timeperiod
                    // that died before recording it: this run's to delete.
                    let ours = cluster.tags.get(OWNER_TAG) == Some(&self.owner);
                    if ours {
                        info!("taking over {} ({state}), left by an earlier run of this flow; it is deleted at the end", at.name);
                    } else {
                        info!(
                            "reusing {} ({state}), made outside this flow; it is left up",
                            at.name
                        );
                    }
                    let handle = self.arm_handle(&at, !ours, None);
                    self.set_handle(handle.clone());
                    Ok(handle)
                }
                "Deleting" => Err(self.launch_error(
                    format!(
                        "{} exists and is being deleted; try again once it is gone",
                        at.name
                    ),
                    true,
                )),
                _ => Err(self.launch_error(
                    format!(
                        "{} exists and is {state} ({}); delete it, or configure another name",
                        at.name,
                        cluster.failure()
                    ),
                    false,
                )),
            };
        }
        let (Some(arm_config), Some(password)) =
            (self.config().arm.as_ref(), &self.shared.password)
        else {
            return Err(
                self.launch_error("[cluster.azure.arm] needs [cluster.azure] password", false)
            );
        };
        let body = create_body(self.config(), arm_config, password, &self.owner)
            .map_err(|message| self.launch_error(message, false))?;
        let created = retry_with_lookup(
            &self.config().retry,
            &self.shared.clock,
            "Clusters - Create",
            || arm.create_once(&at.name, &body),
            || async {
                let found = arm
                    .get(&at.subscription, &at.resource_group, &at.name)
                    .await?;
                Ok(found.map(|_| None))
            },
        )
        .await;
        let operation = match created {
            Ok(operation) => operation,
            Err(e) if e.is_status(409) => {
                return Err(self.launch_error(
                    format!("{} was created by someone else meanwhile ({e})", at.name),
                    true,
                ))
            }
            Err(e) => {
                return Err(self.launch_error(
                    format!("Clusters - Create {}: {e}", at.name),
                    e.is_transient(),
                ))
            }
        };
        info!(
            "creating {} through Azure Resource Manager in {}/{}",
            at.name, at.subscription, at.resource_group
        );
        launch.operation = operation.clone();
        launch.ended = false;
        self.set_launch(|l| *l = launch);
        let handle = self.arm_handle(&at, false, operation.as_deref());
        self.set_handle(handle.clone());
        Ok(handle)
    }

    fn backend_id(&self) -> String {
        if let Some(name) = self.arm_name() {
            return name;
        }
        cluster_of(&self.shared.endpoint())
    }

    /// The backend's id of `job`: the handle's, else one listing looking
    /// for its name; `None` when the backend never took it.
    async fn resolve(&self, job: &JobRef) -> Result<Option<JobRef>, ClusterError> {
        if job.id.is_some() {
            return Ok(Some(job.clone()));
        }
        let found = jobs::look_up(self.gateway(), job, self.user())
            .await
            .map_err(|e| self.backend_error("look up a job by name", e))?;
        Ok(found.map(|id| JobRef {
            id: Some(id),
            ..job.clone()
        }))
    }

    /// Kills the job and waits (up to `cancel_timeout`) for it to end.
    async fn cancel_and_wait(&self, job: &JobRef) -> Result<(), ClusterError> {
        let Some(id) = job.id.as_deref() else {
            return Ok(());
        };
        let killed = match job.api {
            Api::Livy => {
                let id = id.parse().map_err(|_| {
                    self.backend_error("DELETE /batches/ID", format!("{id} is not a batch id"))
                })?;
                Livy {
                    gateway: self.gateway(),
                    url: &job.url,
                }
                .delete(id)
                .await
            }
            Api::WebHcat => {
                WebHcat {
                    gateway: self.gateway(),
                    url: &job.url,
                    user: self.user(),
                }
                .kill(id)
                .await
            }
        };
        killed.map_err(|e| self.backend_error("cancel", e))?;
        info!("cancelling {job}");
        match self
            .poller
            .wait_for(job.clone(), Some(self.config().cancel_timeout))
            .await
        {
            Ok(_) | Err(PollError::Missing { .. }) => Ok(()),
            Err(e) => Err(self.backend_error("cancel", e)),
        }
    }

    /// Copies the end of the job's log into the step log (INFO after
    /// success, WARN after a failure) and returns its last lines for an
    /// error: Livy's batch log, or WebHCat's `stderr` from the status
    /// directory on Blob storage.
    async fn log_job_output(&self, job: &JobRef, failed: bool) -> Option<String> {
        let options = &self.config().job_logs;
        if !options.enabled || options.max_bytes == 0 {
            return None;
        }
        let (what, text) = match job.api {
            Api::Livy => {
                let id = job.id.as_deref()?.parse().ok()?;
                let lines = (options.max_bytes / 80).max(10);
                match (Livy {
                    gateway: self.gateway(),
                    url: &job.url,
                })
                .log_tail(id, lines)
                .await
                {
                    Ok(lines) if !lines.is_empty() => {
                        let text = lines.join("\n");
                        (
                            "the end of the batch log".to_string(),
                            last_lines(&text, options.max_bytes).to_string(),
                        )
                    }
                    Ok(_) => return None,
                    Err(e) => {
                        warn!("cannot read the log of {job}: {e}");
                        return None;
                    }
                }
            }
            Api::WebHcat => {
                let stderr = format!("{}/stderr", job.name);
                let tail_options = TailOptions {
                    max_bytes: options.max_bytes,
                    wait: options.wait,
                    interval: options.interval,
                };
                match flow_cloud::tail(&self.shared.fs, &stderr, &tail_options, &self.shared.clock)
                    .await
                {
                    Ok(Some(tail)) => (format!("the end of {stderr}"), tail.text),
                    Ok(None) => {
                        warn!("no stderr appeared at {stderr}");
                        return None;
                    }
                    Err(e) => {
                        warn!("cannot read {stderr}: {e}");
                        return None;
                    }
                }
            }
        };
        if failed {
            warn!("{what}:");
        } else {
            info!("{what}:");
        }
        for line in text.lines() {
            if failed {
                warn!("{line}");
            } else {
                info!("{line}");
            }
        }
        Some(
            last_lines(&text, options.error_bytes)
                .trim_end()
                .to_string(),
        )
    }
}

#[async_trait]
impl Cluster for AzureCluster {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    async fn provision(&self) -> Result<ClusterHandle, ClusterError> {
        if let (Some(arm), Some(launch)) = (&self.shared.arm, self.arm_launch()) {
            return self.provision_arm(arm, launch).await;
        }
        let backend = self.backend_id();
        info!("{backend} is managed outside the flow: it is used as it is and left up");
        let mut details = BTreeMap::new();
        if let Some(livy) = self.livy() {
            details.insert("livy_url".to_string(), livy);
        }
        if let Some(webhcat) = self.webhcat() {
            details.insert("webhcat_url".to_string(), webhcat);
        }
        let handle = ClusterHandle {
            kind: KIND.into(),
            name: self.name.clone(),
            backend_id: backend,
            reused: true,
            details,
        };
        *self.handle.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle.clone());
        Ok(handle)
    }

    async fn wait_ready(&self) -> Result<(), ClusterError> {
        if let (Some(arm), Some(launch)) = (&self.shared.arm, self.arm_launch()) {
            let lifecycle = self
                .lifecycle(arm)
                .ok_or_else(|| self.launch_error("no [cluster.azure.arm]", false))?;
            let at = &launch.place;
            let created = match &launch.operation {
                Some(op) => lifecycle.follow(op, lifecycle.config.launch_timeout).await,
                None => lifecycle.provisioned(at).await.map(|_| ()),
            };
            created.map_err(|why| {
                error!("creating {} failed: {why}", at.name);
                self.launch_error(
                    format!("creating {} through ARM failed: {why}", at.name),
                    false,
                )
            })?;
            self.set_launch(|l| l.operation = None);
            info!("{} is created", at.name);
        }
        // The gateway answers and takes the login: one listing of each API.
        let launch_error = |e: CallError| {
            self.launch_error(
                format!("the gateway does not answer as expected: {e}"),
                e.is_transient(),
            )
        };
        let (livy, webhcat) = (self.livy(), self.webhcat());
        if let Some(url) = &livy {
            Livy {
                gateway: self.gateway(),
                url,
            }
            .list(|_| true)
            .await
            .map_err(launch_error)?;
        }
        if livy.is_none() {
            if let Some(url) = &webhcat {
                WebHcat {
                    gateway: self.gateway(),
                    url,
                    user: self.user(),
                }
                .list()
                .await
                .map_err(launch_error)?;
            }
        }
        Ok(())
    }

    async fn adopt(&self, handle: &ClusterHandle) -> Result<bool, ClusterError> {
        if handle.kind != KIND {
            return Ok(false);
        }
        let (Some(arm), Some(subscription)) =
            (&self.shared.arm, handle.details.get("subscription"))
        else {
            self.set_handle(handle.clone());
            return Ok(true);
        };
        let at = Place {
            subscription: subscription.clone(),
            resource_group: handle
                .details
                .get("resource_group")
                .cloned()
                .unwrap_or_else(|| arm.resource_group().to_string()),
            name: handle.backend_id.clone(),
        };
        *self.launch.lock().unwrap_or_else(PoisonError::into_inner) = Some(ArmLaunch {
            place: at.clone(),
            operation: None,
            ended: false,
        });
        let cluster = arm
            .get(&at.subscription, &at.resource_group, &at.name)
            .await
            .map_err(|e| self.backend_error("Clusters - Get", e))?;
        let Some(cluster) = cluster else {
            self.set_launch(|l| l.ended = true);
            return Ok(false);
        };
        self.set_handle(handle.clone());
        let state = cluster.properties.provisioning_state.clone();
        match state.as_str() {
            "Succeeded" => Ok(true),
            "InProgress" => {
                let lifecycle = self
                    .lifecycle(arm)
                    .ok_or_else(|| self.backend_error("adopt", "no [cluster.azure.arm]"))?;
                match lifecycle.provisioned(&at).await {
                    Ok(_) => Ok(true),
                    Err(why) => {
                        warn!("adopted {} did not come up: {why}", at.name);
                        if !handle.reused {
                            self.terminate().await?;
                        }
                        Ok(false)
                    }
                }
            }
            "Deleting" => {
                self.set_launch(|l| l.ended = true);
                Ok(false)
            }
            _ => {
                // Failed: it takes no jobs, and costs money if this run's
                // predecessor made it.
                if !handle.reused {
                    warn!(
                        "adopted {} is {state} ({}): deleting it",
                        at.name,
                        cluster.failure()
                    );
                    self.terminate().await?;
                }
                Ok(false)
            }
        }
    }

    fn prepare(&self, job: &Job, cx: &JobContext<'_>) -> Result<JobHandle, ClusterError> {
        let name = jobs::new_job_name(cx);
        let payload = jobs::payload(job, &name, self.shared.code_root.as_deref()).map_err(
            |why| match why {
                None => {
                    warn!(
                        "HDInsight's gateways run no shell jobs: write the command as a spark, pig or hadoop job, or run it on the local cluster"
                    );
                    ClusterError::Unsupported {
                        cluster: self.name.clone(),
                        kind: KIND,
                        job: job.kind(),
                    }
                }
                Some(message) => self.job_failed(job.kind(), message),
            },
        )?;
        let (url, name) = match payload.api() {
            Api::Livy => (
                self.livy().ok_or_else(|| {
                    self.job_failed(
                        job.kind(),
                        "no Livy: set gateway or livy_url in [cluster.azure]",
                    )
                })?,
                name,
            ),
            Api::WebHcat => {
                let url = self.webhcat().ok_or_else(|| {
                    self.job_failed(
                        job.kind(),
                        "no WebHCat: set gateway or webhcat_url in [cluster.azure]",
                    )
                })?;
                let root = self.shared.statusdir_root.as_ref().ok_or_else(|| {
                    self.job_failed(
                        job.kind(),
                        "no status directory: set [cluster.azure] statusdir to an address, or [cluster.azure.blob] container",
                    )
                })?;
                (url, format!("{root}/{name}"))
            }
        };
        Ok(JobHandle::new(
            KIND,
            self.name.clone(),
            [
                (ids::API, payload.api().as_str().to_string()),
                (ids::URL, url),
                (ids::NAME, name),
                (ids::TYPE, job.kind().to_string()),
            ],
        ))
    }

    async fn submit(
        &self,
        handle: &JobHandle,
        job: &Job,
        _cx: &JobContext<'_>,
    ) -> Result<JobHandle, ClusterError> {
        let job_ref = JobRef::from_handle(handle, &self.name)?;
        let mut handle = handle.clone();
        handle.cluster = self.name.clone();
        if job_ref.id.is_some() {
            return Ok(handle);
        }
        let base = match job_ref.api {
            Api::Livy => job_ref.name.clone(),
            Api::WebHcat => job_ref
                .name
                .rsplit('/')
                .next()
                .unwrap_or(&job_ref.name)
                .to_string(),
        };
        let payload: Payload = jobs::payload(job, &base, self.shared.code_root.as_deref())
            .map_err(|why| self.job_failed(job.kind(), why.unwrap_or_else(|| "shell".into())))?;
        let (gateway, user) = (self.gateway(), self.user());
        let sent = retry_with_lookup(
            &self.config().retry,
            &self.shared.clock,
            "submit",
            || jobs::submit_once(gateway, &job_ref, user, &payload),
            || jobs::look_up(gateway, &job_ref, user),
        )
        .await;
        let id = match sent {
            Ok(id) => id,
            // Livy refuses a second batch of the same name: this handle's
            // job is there already (its answer was lost before it was
            // recorded).
            Err(e) if e.is_status(400) && e.to_string().contains("Duplicate session name") => {
                jobs::look_up(gateway, &job_ref, user)
                    .await
                    .map_err(|e| self.backend_error("submit", e))?
                    .ok_or_else(|| self.backend_error("submit", e))?
            }
            Err(e) => return Err(self.backend_error("submit", e)),
        };
        info!(
            "submitted {}",
            JobRef {
                id: Some(id.clone()),
                ..job_ref.clone()
            }
        );
        handle.ids.insert(ids::ID.into(), id);
        Ok(handle)
    }

    async fn wait(&self, handle: &JobHandle, cx: &JobContext<'_>) -> Result<(), ClusterError> {
        let kind = jobs::job_type(handle);
        let job = JobRef::from_handle(handle, &self.name)?;
        let Some(job) = self.resolve(&job).await? else {
            return Err(self.job_failed(kind, format!("{job} was never submitted")));
        };
        let finished = wait_job(
            &self.name,
            kind,
            &job.to_string(),
            &self.poller,
            job.clone(),
            cx.cancel,
            || self.cancel_and_wait(&job),
            |reason| {
                self.end_reason
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(reason);
            },
        )
        .await?;
        match finished.outcome {
            Outcome::Succeeded => {
                info!("{job} is {}", finished.status.state());
                self.log_job_output(&job, false).await;
                Ok(())
            }
            Outcome::Failed => {
                let state = finished.status.state();
                error!("{job} is {state}");
                let mut message = format!("{job} is {state}");
                if let Status::WebHcat(j) = &finished.status {
                    if let Some(info) = j
                        .status
                        .failure_info
                        .as_deref()
                        .filter(|i| !i.is_empty() && *i != "NA")
                    {
                        message.push_str(": ");
                        message.push_str(info);
                    }
                }
                if let Some(output) = self.log_job_output(&job, true).await {
                    message.push_str("\nits log (last lines):\n");
                    message.push_str(&output);
                }
                Err(self.job_failed(kind, message))
            }
            Outcome::Cancelled => {
                warn!("{job} was killed");
                Err(self.cancelled(kind))
            }
        }
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, ClusterError> {
        let job = JobRef::from_handle(handle, &self.name)?;
        let Some(job) = self.resolve(&job).await? else {
            return Ok(JobStatus::NotSubmitted);
        };
        let id = job.id.clone().unwrap_or_default();
        let status = match job.api {
            Api::Livy => {
                let id = id
                    .parse()
                    .map_err(|_| self.backend_error("status", format!("{id} is not a batch id")))?;
                Livy {
                    gateway: self.gateway(),
                    url: &job.url,
                }
                .get(id)
                .await
                .map_err(|e| self.backend_error("GET /batches/ID", e))?
                .map(Status::Livy)
            }
            Api::WebHcat => WebHcat {
                gateway: self.gateway(),
                url: &job.url,
                user: self.user(),
            }
            .get(&id)
            .await
            .map_err(|e| self.backend_error("GET /jobs/ID", e))?
            .map(Status::WebHcat),
        };
        let Some(status) = status else {
            return Ok(JobStatus::Lost {
                reason: format!("the gateway no longer knows {job}"),
            });
        };
        let phase = flow_cloud::JobSource::phase(self.poller.source(), &status);
        Ok(flow_cloud::cluster::job_status(Some(phase), || {
            status.state()
        }))
    }

    async fn cancel(&self, handle: &JobHandle) -> Result<(), ClusterError> {
        let job = JobRef::from_handle(handle, &self.name)?;
        match self.resolve(&job).await? {
            Some(job) => self.cancel_and_wait(&job).await,
            None => Ok(()),
        }
    }

    async fn terminate(&self) -> Result<(), ClusterError> {
        let handle = self
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let (Some(arm), Some(launch)) = (&self.shared.arm, self.arm_launch()) {
            let Some(handle) = handle else {
                return Ok(());
            };
            if launch.ended {
                return Ok(());
            }
            if handle.reused {
                info!(
                    "leaving {} up: it was there before this run",
                    launch.place.name
                );
                return Ok(());
            }
            let lifecycle = self
                .lifecycle(arm)
                .ok_or_else(|| self.terminate_error("no [cluster.azure.arm]"))?;
            lifecycle
                .delete(&launch.place)
                .await
                .map_err(|message| self.terminate_error(message))?;
            info!("deleted {}", launch.place.name);
            self.set_launch(|l| l.ended = true);
            return Ok(());
        }
        if let Some(handle) = &handle {
            info!(
                "leaving {} up: it is managed outside the flow",
                handle.backend_id
            );
        }
        Ok(())
    }

    fn filesystem(&self) -> &dyn Filesystem {
        &self.shared.fs
    }

    /// `jobs_per_cluster` batches and jobs at once (1 unless set).
    fn slots(&self) -> usize {
        self.config().jobs_per_cluster.get()
    }

    fn end_reason(&self) -> Option<String> {
        self.end_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The gateway names one cluster: every run sending to it shares it,
    /// so only the last user of a cluster a run created ends it (the store
    /// keeps who uses it), and one found up is left up.
    fn shared_name(&self) -> Option<String> {
        // A cluster ARM creates is named in its subscription and group.
        if let Some(launch) = self.arm_launch() {
            let at = launch.place;
            return Some(format!(
                "{}/{}/{}",
                at.subscription, at.resource_group, at.name
            ));
        }
        Some(self.shared.endpoint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_names_its_cluster() {
        assert_eq!(cluster_of("https://etl.azurehdinsight.net"), "etl");
        assert_eq!(cluster_of("http://127.0.0.1:8998/livy"), "127.0.0.1");
    }
}
