//! [`DataprocCluster`]: flow's [`Cluster`] on Dataproc, and the factory
//! that makes them.

use crate::api::{Api, ClusterInfo, JobInfo, Location, Operation};
use crate::config::{DataprocConfig, InstanceGroup};
use crate::driver::driver_output;
use crate::error::DataprocError;
use crate::jobs::{self, ids, job_payload, job_resource, label_value, DataprocJobs, JobRef, KIND};
use async_trait::async_trait;
use flow_cloud::cluster::{wait_job, ClusterErrors};
use flow_cloud::http::HttpTimeouts;
use flow_cloud::names::{numbered_name, run_key_name};
use flow_cloud::{wait_until, Clock, Look, Outcome, Poller, Requests, Transient, Wait, WaitError};
use flow_core::{
    Cluster, ClusterError, ClusterFactory, ClusterHandle, ExecutionContext, Filesystem, Job,
    JobContext, JobHandle, JobStatus,
};
use flow_fs_gcs::GcsFilesystem;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tracing::{error, info, warn};

/// What every cluster of a factory shares.
struct DataprocBackend {
    config: DataprocConfig,
    api: Arc<Api>,
    fs: GcsFilesystem,
    clock: Arc<dyn Clock>,
    /// Cluster and operation requests of launch and delete waits.
    lifecycle_requests: Requests,
}

/// Makes [`DataprocCluster`]s (kind `dataproc`) from one [`DataprocConfig`].
/// Build it with [`DataprocConfig::builder`] or
/// [`DataprocClusterFactoryBuilder`](crate::DataprocClusterFactoryBuilder).
#[derive(Clone)]
pub struct DataprocClusterFactory {
    shared: Arc<DataprocBackend>,
}

impl fmt::Debug for DataprocClusterFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataprocClusterFactory")
            .field("config", &self.shared.config)
            .field("api", &self.shared.api)
            .field("fs", &self.shared.fs)
            .finish()
    }
}

impl DataprocClusterFactory {
    pub(crate) fn new(
        config: DataprocConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<DataprocClusterFactory, DataprocError> {
        let (base, with_credentials) = config.api_endpoint();
        let auth_error = |e: flow_fs_gcs::GcsError| DataprocError::Auth {
            message: match e {
                flow_fs_gcs::GcsError::Auth { message } => message,
                other => other.to_string(),
            },
        };
        let credentials = if with_credentials {
            Some(
                flow_fs_gcs::auth::token_provider(config.credentials_file.as_deref())
                    .map_err(auth_error)?,
            )
        } else {
            None
        };
        // The filesystem uses its own key file if it has one, else the
        // cluster's (shared, when already loaded). An emulator endpoint
        // reads none.
        let mut gcs = config.gcs.clone();
        let shared = match gcs.credentials_file {
            Some(_) => None,
            None => {
                gcs.credentials_file = config.credentials_file.clone();
                credentials.clone()
            }
        };
        let fs = gcs.builder().build_with_credentials(shared)?;
        let timeouts = HttpTimeouts {
            connect: config.connect_timeout,
            request: config.request_timeout,
        };
        let http = timeouts
            .client()
            .map_err(|message| DataprocError::Client { message })?;
        let api = Arc::new(Api::new(
            http,
            base,
            credentials,
            config.retry,
            clock.clone(),
            timeouts,
        ));
        Ok(DataprocClusterFactory {
            shared: Arc::new(DataprocBackend {
                config,
                api,
                fs,
                clock,
                lifecycle_requests: Requests::new(),
            }),
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &DataprocConfig {
        &self.shared.config
    }

    /// Dataproc API requests sent so far by every cluster of this factory
    /// (retries included).
    pub fn requests(&self) -> u64 {
        self.shared.api.requests()
    }

    /// Cluster and operation requests sent while waiting for clusters to
    /// come up or go (a share of [`requests`](Self::requests)).
    pub fn lifecycle_requests(&self) -> u64 {
        self.shared.lifecycle_requests.get()
    }

    /// The clusters' GCS filesystem.
    pub fn filesystem(&self) -> &GcsFilesystem {
        &self.shared.fs
    }

    /// A cluster called `name` in the run, without the trait object.
    pub fn cluster(&self, name: &str, context: &ExecutionContext) -> DataprocCluster {
        DataprocCluster::new(
            name,
            backend_name(&self.shared.config, name, context),
            owner_label(context),
            self.shared.clone(),
        )
    }
}

impl ClusterFactory for DataprocClusterFactory {
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

/// The Dataproc name of the run's cluster `name` (`dataproc-0` →
/// `BASE-0`), BASE being `name` or `flow-FLOW-TIMEPERIOD`.
fn backend_name(config: &DataprocConfig, name: &str, context: &ExecutionContext) -> String {
    let base = match &config.name {
        Some(base) => base.clone(),
        None => run_key_name(context, jobs::cluster_name_text, 48),
    };
    numbered_name(&base, name, |name| label_value(name).replace('_', "-"))
}

/// The label saying which run key (`FLOW-TIMEPERIOD`) made a cluster.
const OWNER_LABEL: &str = "flow-run-key";

fn owner_label(context: &ExecutionContext) -> String {
    label_value(&format!("{}-{}", context.flow_name, context.timeperiod))
}

/// Where a cluster stands in this value's hands.
#[derive(Debug, Clone)]
struct Launch {
    /// The Dataproc cluster's name and place (from the settings, or from
    /// the handle of an adopted cluster).
    backend: String,
    location: Location,
    /// Set once provisioned or adopted.
    handle: Option<ClusterHandle>,
    /// The create operation to wait on.
    operation: Option<String>,
    /// Deleted (or found gone) already.
    ended: bool,
    /// Why it ended by itself, once noticed.
    end_reason: Option<String>,
}

/// A Dataproc cluster of a run.
///
/// `provision` reuses a cluster of its name that exists (`RUNNING`, or on
/// its way there), else creates it and returns with the create operation;
/// `wait_ready` waits on the operation and then for `RUNNING` (`ERROR` or a
/// failed operation is a launch failure with Dataproc's message).
/// `terminate` deletes the cluster and waits on the delete operation,
/// unless it was reused (and `terminate_reused` is off).
pub struct DataprocCluster {
    name: String,
    /// [`OWNER_LABEL`]'s value for this run.
    owner: String,
    shared: Arc<DataprocBackend>,
    poller: Poller<DataprocJobs>,
    launch: Mutex<Launch>,
}

impl fmt::Debug for DataprocCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataprocCluster")
            .field("name", &self.name)
            .field("launch", &*self.state())
            .finish()
    }
}

impl DataprocCluster {
    fn new(name: &str, backend: String, owner: String, shared: Arc<DataprocBackend>) -> Self {
        let poller = Poller::new(
            DataprocJobs::new(shared.api.clone()),
            shared.config.poll,
            shared.clock.clone(),
        );
        let location = Location {
            project: shared.config.project.clone(),
            region: shared.config.region.clone(),
        };
        DataprocCluster {
            name: name.to_string(),
            owner,
            shared,
            poller,
            launch: Mutex::new(Launch {
                backend,
                location,
                handle: None,
                operation: None,
                ended: false,
                end_reason: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, Launch> {
        self.launch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Dataproc cluster's name.
    pub fn backend_name(&self) -> String {
        self.state().backend.clone()
    }

    /// Job status requests the poller made so far (one per tick).
    pub fn poll_requests(&self) -> u64 {
        self.poller.requests()
    }

    fn config(&self) -> &DataprocConfig {
        &self.shared.config
    }

    fn api(&self) -> &Api {
        &self.shared.api
    }

    /// The `Cluster` resource for `clusters.create`.
    fn cluster_resource(&self, backend: &str) -> Value {
        let c = self.config();
        let group = |g: &InstanceGroup| {
            let mut group = json!({ "numInstances": g.count, "machineTypeUri": g.machine_type });
            if let Some(gb) = g.boot_disk_gb {
                group["diskConfig"] = json!({ "bootDiskSizeGb": gb });
            }
            group
        };
        let mut gce = Map::new();
        if let Some(zone) = &c.zone {
            gce.insert("zoneUri".into(), json!(zone));
        }
        if let Some(account) = &c.service_account {
            gce.insert("serviceAccount".into(), json!(account));
        }
        if let Some(subnetwork) = &c.subnetwork {
            gce.insert("subnetworkUri".into(), json!(subnetwork));
        }
        let mut software = Map::new();
        if let Some(version) = &c.image_version {
            software.insert("imageVersion".into(), json!(version));
        }
        let mut properties = c.properties.clone();
        if c.workers.count == 0 {
            properties
                .entry("dataproc:dataproc.allow.zero.workers".into())
                .or_insert_with(|| "true".into());
        }
        if !properties.is_empty() {
            software.insert("properties".into(), json!(properties));
        }
        let mut config = json!({
            "gceClusterConfig": gce,
            "masterConfig": group(&c.master),
            "softwareConfig": software,
        });
        if c.workers.count > 0 {
            config["workerConfig"] = group(&c.workers);
        }
        if !c.init_actions.is_empty() {
            let actions: Vec<Value> = c
                .init_actions
                .iter()
                .map(|action| {
                    // Validated with the settings.
                    let file = jobs::resolve_uri(action, c.code_bucket.as_deref())
                        .unwrap_or_else(|_| action.clone());
                    let mut action = json!({ "executableFile": file });
                    if let Some(timeout) = c.init_action_timeout {
                        action["executionTimeout"] = json!(format!("{}s", timeout.as_secs()));
                    }
                    action
                })
                .collect();
            config["initializationActions"] = json!(actions);
        }
        if let Some(ttl) = c.idle_delete_ttl {
            config["lifecycleConfig"] = json!({ "idleDeleteTtl": format!("{}s", ttl.as_secs()) });
        }
        let mut labels = c.labels.clone();
        labels.insert("flow-cluster".into(), label_value(&self.name));
        labels.insert(OWNER_LABEL.into(), self.owner.clone());
        json!({
            "projectId": c.project,
            "clusterName": backend,
            "labels": labels,
            "config": config,
        })
    }

    /// How often and how long to ask about a cluster or an operation.
    fn wait(&self, timeout: Duration) -> Wait {
        Wait {
            interval: self.config().launch_poll,
            timeout,
        }
    }

    /// Asks about a long-running operation every `launch_poll`
    /// until it is done; `Err` with its message when it failed or `timeout`
    /// passed.
    async fn wait_operation(&self, name: &str, timeout: Duration) -> Result<(), String> {
        let done = wait_until(
            &self.shared.clock,
            self.wait(timeout),
            &self.shared.lifecycle_requests,
            || async {
                let op: Operation = self
                    .api()
                    .get_operation(name)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(match (op.done, op.error) {
                    (false, _) => Look::Pending("running".into()),
                    (true, None) => Look::Ready(()),
                    (true, Some(e)) => Look::Failed(format!(
                        "{} (code {})",
                        flow_cloud::errors::one_line(&e.message),
                        e.code
                    )),
                })
            },
        )
        .await;
        done.map_err(|e| match e {
            WaitError::Failed(message) => message,
            WaitError::Timeout { .. } => format!(
                "operation {name} not done after {}",
                humantime_serde::re::humantime::format_duration(timeout)
            ),
            WaitError::Request(e) => format!("operations.get {name}: {e}"),
        })
    }

    /// Waits until the cluster is `RUNNING`. `Err(message)` when it is in
    /// `ERROR` (with Dataproc's detail), gone, or not up in time.
    async fn wait_running(&self, at: &Location, backend: &str) -> Result<ClusterInfo, String> {
        let timeout = self.config().launch_timeout;
        let running = wait_until(
            &self.shared.clock,
            self.wait(timeout),
            &self.shared.lifecycle_requests,
            || async {
                let cluster = self
                    .api()
                    .get_cluster(at, backend)
                    .await
                    .map_err(|e| format!("clusters.get {backend}: {e}"))?
                    .ok_or_else(|| format!("{backend} disappeared while launching"))?;
                Ok(match cluster.state() {
                    "RUNNING" => Look::Ready(cluster),
                    "ERROR" | "ERROR_DUE_TO_UPDATE" | "DELETING" | "STOPPING" | "STOPPED" => {
                        Look::Failed(format!(
                            "{backend} is {}: {}",
                            cluster.state(),
                            cluster.detail()
                        ))
                    }
                    state => Look::Pending(state.to_string()),
                })
            },
        )
        .await;
        running.map_err(|e| match e {
            WaitError::Failed(message) | WaitError::Request(message) => message,
            WaitError::Timeout { last, .. } => format!(
                "{backend} is still {last} after {}",
                humantime_serde::re::humantime::format_duration(timeout)
            ),
        })
    }

    /// `clusters.delete`, then waits on its operation. A cluster that is
    /// not there is fine; one that cannot be deleted yet (still creating)
    /// is asked again until `terminate_timeout`.
    async fn delete(&self, at: &Location, backend: &str) -> Result<(), String> {
        let clock = &self.shared.clock;
        let timeout = self.config().terminate_timeout;
        let deadline = clock.now() + timeout;
        let request_id = jobs::new_request_id();
        let sent = wait_until(
            clock,
            self.wait(timeout),
            &self.shared.lifecycle_requests,
            || async {
                match self.api().delete_cluster(at, backend, &request_id).await {
                    Ok(op) => Ok(Look::Ready(op)),
                    Err(e) if e.is_failed_precondition() => {
                        info!("{backend} cannot be deleted yet ({e}); asking again");
                        Ok(Look::Pending(e.to_string()))
                    }
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await;
        let op = match sent {
            Ok(Some(op)) => op,
            Ok(None) => {
                info!("{backend} is already gone");
                return Ok(());
            }
            Err(WaitError::Request(e) | WaitError::Failed(e))
            | Err(WaitError::Timeout { last: e, .. }) => {
                return Err(format!("clusters.delete {backend}: {e}"))
            }
        };
        info!("deleting {backend} (operation {})", op.name);
        if op.done {
            return op.error.map_or(Ok(()), |e| Err(e.message));
        }
        let left = deadline.saturating_sub(clock.now());
        self.wait_operation(&op.name, left).await
    }

    fn set_handle(&self, handle: ClusterHandle, operation: Option<String>) {
        let mut state = self.state();
        state.handle = Some(handle);
        state.operation = operation;
        state.ended = false;
    }

    fn handle_for(
        &self,
        launch: &Launch,
        reused: bool,
        info: Option<&ClusterInfo>,
    ) -> ClusterHandle {
        let mut details = BTreeMap::from([
            ("project".to_string(), launch.location.project.clone()),
            ("region".to_string(), launch.location.region.clone()),
        ]);
        if let Some(zone) = &self.config().zone {
            details.insert("zone".into(), zone.clone());
        }
        if let Some(uuid) = info
            .map(|i| i.cluster_uuid.as_str())
            .filter(|u| !u.is_empty())
        {
            details.insert("cluster_uuid".into(), uuid.to_string());
        }
        ClusterHandle {
            kind: KIND.into(),
            name: self.name.clone(),
            backend_id: launch.backend.clone(),
            reused,
            details,
        }
    }

    /// Tails the driver output into the step log (INFO after success, WARN
    /// after a failure) and returns its last lines for an error.
    async fn log_driver_output(&self, job: &JobInfo, failed: bool) -> Option<String> {
        let uri = job
            .driver_output_resource_uri
            .as_deref()
            .filter(|u| !u.is_empty())?;
        let logs = &self.config().job_logs;
        if !logs.enabled || logs.max_bytes == 0 {
            return None;
        }
        let options = logs.tail_options();
        match driver_output(&self.shared.fs, uri, &options, &self.shared.clock).await {
            Ok(Some(tail)) => Some(tail.log(
                &format!("the driver output ({uri})"),
                failed,
                logs.error_bytes,
            )),
            Ok(None) => {
                warn!("no driver output appeared at {uri}");
                None
            }
            Err(e) => {
                warn!("cannot read the driver output: {e}");
                None
            }
        }
    }

    /// Cancels the job and waits (up to `cancel_timeout`) for it to end.
    async fn cancel_and_wait(&self, job: &JobRef) -> Result<Option<Outcome>, ClusterError> {
        match self.api().cancel_job(&job.location, &job.job_id).await {
            Ok(_) => info!("cancelling Dataproc job {job}"),
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) if e.is_failed_precondition() => {
                info!("Dataproc job {job} already ended ({e})");
                return Ok(None);
            }
            Err(e) => return Err(self.backend_error("jobs.cancel", e)),
        }
        match self
            .poller
            .wait_for(job.clone(), Some(self.config().cancel_timeout))
            .await
        {
            Ok(finished) => Ok(Some(finished.outcome)),
            Err(e) => Err(self.backend_error("jobs.cancel", format!("{e}"))),
        }
    }
}

fn job_status(job: &JobInfo) -> JobStatus {
    flow_cloud::cluster::job_status(crate::jobs::JOB_STATES.phase(job.state()), || {
        format!("{}: {}", job.state(), job.details())
    })
}

#[async_trait]
impl Cluster for DataprocCluster {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    async fn provision(&self) -> Result<ClusterHandle, ClusterError> {
        let launch = self.state().clone();
        let (at, backend) = (&launch.location, launch.backend.as_str());
        let existing = self.api().get_cluster(at, backend).await.map_err(|e| {
            self.launch_error(format!("clusters.get {backend}: {e}"), e.is_transient())
        })?;
        if let Some(cluster) = existing {
            return match cluster.state() {
                "RUNNING" | "CREATING" | "STARTING" | "UPDATING" | "REPAIRING" => {
                    // Made by an earlier run of this flow and timeperiod
                    // that died before recording it: this run's to delete.
                    let ours = cluster.labels.get(OWNER_LABEL) == Some(&self.owner);
                    if ours {
                        info!(
                            "taking over {backend} ({}), left by an earlier run of this flow; it is deleted at the end",
                            cluster.state()
                        );
                    } else {
                        info!("reusing {backend} ({})", cluster.state());
                    }
                    let handle = self.handle_for(&launch, !ours, Some(&cluster));
                    self.set_handle(handle.clone(), None);
                    Ok(handle)
                }
                "DELETING" | "STOPPING" => Err(self.launch_error(
                    format!("{backend} exists and is {}; try again once it is gone", cluster.state()),
                    true,
                )),
                state => Err(self.launch_error(
                    format!(
                        "{backend} exists and is {state} ({}); delete or start it, or configure another name",
                        cluster.detail()
                    ),
                    false,
                )),
            };
        }
        let request_id = jobs::new_request_id();
        let body = self.cluster_resource(backend);
        let op = match self.api().create_cluster(at, &body, &request_id).await {
            Ok(op) => op,
            Err(e) if e.is_conflict() => {
                return Err(self.launch_error(
                    format!("{backend} was created by someone else meanwhile ({e})"),
                    true,
                ))
            }
            Err(e) => {
                return Err(
                    self.launch_error(format!("clusters.create {backend}: {e}"), e.is_transient())
                )
            }
        };
        info!("creating {backend} (operation {})", op.name);
        let mut handle = self.handle_for(&launch, false, None);
        handle.details.insert("operation".into(), op.name.clone());
        self.set_handle(handle.clone(), Some(op.name));
        Ok(handle)
    }

    async fn wait_ready(&self) -> Result<(), ClusterError> {
        let launch = self.state().clone();
        if launch.handle.is_none() {
            return Err(self.launch_error("not provisioned", false));
        }
        if let Some(op) = &launch.operation {
            self.wait_operation(op, self.config().launch_timeout)
                .await
                .map_err(|message| {
                    self.launch_error(
                        format!("creating {} failed: {message}", launch.backend),
                        false,
                    )
                })?;
        }
        let cluster = self
            .wait_running(&launch.location, &launch.backend)
            .await
            .map_err(|message| self.launch_error(message, false))?;
        info!("{} is RUNNING", launch.backend);
        let mut state = self.state();
        if let Some(handle) = &mut state.handle {
            if !cluster.cluster_uuid.is_empty() {
                handle
                    .details
                    .insert("cluster_uuid".into(), cluster.cluster_uuid.clone());
            }
        }
        state.operation = None;
        Ok(())
    }

    async fn adopt(&self, handle: &ClusterHandle) -> Result<bool, ClusterError> {
        if handle.kind != KIND {
            return Ok(false);
        }
        let location = Location {
            project: handle
                .details
                .get("project")
                .cloned()
                .unwrap_or_else(|| self.config().project.clone()),
            region: handle
                .details
                .get("region")
                .cloned()
                .unwrap_or_else(|| self.config().region.clone()),
        };
        let backend = handle.backend_id.clone();
        {
            let mut state = self.state();
            state.backend = backend.clone();
            state.location = location.clone();
        }
        let cluster = self
            .api()
            .get_cluster(&location, &backend)
            .await
            .map_err(|e| self.backend_error("clusters.get", e))?;
        let Some(cluster) = cluster else {
            return Ok(false);
        };
        match cluster.state() {
            "RUNNING" => {
                self.set_handle(handle.clone(), None);
                Ok(true)
            }
            "CREATING" | "STARTING" | "UPDATING" | "REPAIRING" | "UNKNOWN" => {
                self.set_handle(handle.clone(), None);
                match self.wait_running(&location, &backend).await {
                    Ok(_) => Ok(true),
                    Err(message) => {
                        warn!("adopted {backend} did not come up: {message}");
                        if !handle.reused {
                            self.terminate().await?;
                        }
                        Ok(false)
                    }
                }
            }
            "DELETING" => Ok(false),
            state => {
                // ERROR, STOPPED, ...: it takes no jobs, and costs money if
                // this run's predecessor made it.
                if !handle.reused {
                    warn!(
                        "adopted {backend} is {state} ({}): deleting it",
                        cluster.detail()
                    );
                    self.set_handle(handle.clone(), None);
                    self.terminate().await?;
                }
                Ok(false)
            }
        }
    }

    fn prepare(&self, job: &Job, cx: &JobContext<'_>) -> Result<JobHandle, ClusterError> {
        let (kind, _) = job_payload(job, self.config()).map_err(|message| {
            if matches!(job, Job::Shell { .. }) {
                warn!(
                    "Dataproc runs no shell jobs: write the command as a pyspark, spark, pig or hadoop job, or run it on the local cluster"
                );
                ClusterError::Unsupported {
                    cluster: self.name.clone(),
                    kind: KIND,
                    job: job.kind(),
                }
            } else {
                self.job_failed(job.kind(), message)
            }
        })?;
        let state = self.state();
        Ok(JobHandle::new(
            KIND,
            self.name.clone(),
            [
                (ids::PROJECT, state.location.project.clone()),
                (ids::REGION, state.location.region.clone()),
                (ids::CLUSTER, state.backend.clone()),
                (ids::JOB_ID, jobs::new_job_id(cx)),
                (ids::REQUEST_ID, jobs::new_request_id()),
                (ids::TYPE, kind.to_string()),
            ],
        ))
    }

    async fn submit(
        &self,
        handle: &JobHandle,
        job: &Job,
        cx: &JobContext<'_>,
    ) -> Result<JobHandle, ClusterError> {
        let mut job_ref = JobRef::from_handle(handle, &self.name)?;
        let request_id = handle
            .id(ids::REQUEST_ID)
            .map(str::to_string)
            .unwrap_or_else(jobs::new_request_id);
        // A handle prepared for another cluster (a dead run's) goes to this one.
        let backend = self.backend_name();
        let mut handle = handle.clone();
        if job_ref.cluster != backend {
            job_ref.cluster = backend.clone();
            handle.ids.insert(ids::CLUSTER.into(), backend);
        }
        handle.cluster = self.name.clone();
        let (_, payload) = job_payload(job, self.config())
            .map_err(|message| self.job_failed(job.kind(), message))?;
        let mut labels = self.config().labels.clone();
        labels.insert("flow-name".into(), label_value(&cx.execution.flow_name));
        labels.insert("flow-step".into(), label_value(cx.step));
        let resource = job_resource(&job_ref, payload, &labels);
        match self
            .api()
            .submit_job(&job_ref.location, resource, &request_id)
            .await
        {
            Ok(info) => info!(
                "submitted Dataproc job {} to {} ({})",
                job_ref.job_id,
                job_ref.cluster,
                info.state()
            ),
            // The id is taken: an earlier submission of this very handle
            // (its request id expired meanwhile) made it.
            Err(e) if e.is_conflict() => {
                info!(
                    "Dataproc job {} was already submitted ({e})",
                    job_ref.job_id
                )
            }
            Err(e) => return Err(self.backend_error("jobs.submit", e)),
        }
        Ok(handle)
    }

    async fn wait(&self, handle: &JobHandle, cx: &JobContext<'_>) -> Result<(), ClusterError> {
        let job = JobRef::from_handle(handle, &self.name)?;
        let kind = jobs::job_type(handle);
        let finished = wait_job(
            &self.name,
            kind,
            &format!("Dataproc job {job}"),
            &self.poller,
            job.clone(),
            cx.cancel,
            || self.cancel_and_wait(&job),
            |reason| {
                self.state().end_reason.get_or_insert(reason);
            },
        )
        .await?;
        let info = finished.status;
        notice_delay(&info);
        match finished.outcome {
            Outcome::Succeeded => {
                info!("Dataproc job {job} is DONE");
                self.log_driver_output(&info, false).await;
                Ok(())
            }
            Outcome::Failed => {
                error!("Dataproc job {job} is {}: {}", info.state(), info.details());
                let mut message = format!("Dataproc job {job} is {}", info.state());
                if !info.details().is_empty() {
                    message.push_str(": ");
                    message.push_str(&info.details());
                }
                if let Some(output) = self.log_driver_output(&info, true).await {
                    message.push_str("\ndriver output (last lines):\n");
                    message.push_str(&output);
                }
                Err(self.job_failed(kind, message))
            }
            Outcome::Cancelled => {
                warn!("Dataproc job {job} was cancelled");
                Err(self.cancelled(kind))
            }
        }
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, ClusterError> {
        let job = JobRef::from_handle(handle, &self.name)?;
        match self.api().get_job(&job.location, &job.job_id).await {
            Ok(None) => Ok(JobStatus::NotSubmitted),
            Ok(Some(info)) => Ok(job_status(&info)),
            Err(e) => Err(self.backend_error("jobs.get", e)),
        }
    }

    async fn cancel(&self, handle: &JobHandle) -> Result<(), ClusterError> {
        let job = JobRef::from_handle(handle, &self.name)?;
        self.cancel_and_wait(&job).await.map(|_| ())
    }

    async fn terminate(&self) -> Result<(), ClusterError> {
        let launch = self.state().clone();
        let Some(handle) = &launch.handle else {
            return Ok(());
        };
        if launch.ended {
            return Ok(());
        }
        if handle.reused && !self.config().terminate_reused {
            info!(
                "leaving {} up: it was there before this run",
                launch.backend
            );
            return Ok(());
        }
        self.delete(&launch.location, &launch.backend)
            .await
            .map_err(|message| self.terminate_error(message))?;
        info!("deleted {}", launch.backend);
        self.state().ended = true;
        Ok(())
    }

    fn filesystem(&self) -> &dyn Filesystem {
        &self.shared.fs
    }

    fn slots(&self) -> usize {
        self.config().jobs_per_cluster.get()
    }

    fn end_reason(&self) -> Option<String> {
        self.state().end_reason.clone()
    }

    /// The configured master and workers (Dataproc reports no usage).
    fn instances(&self) -> Option<Vec<flow_core::InstanceGroup>> {
        let config = self.config();
        Some(
            [("master", &config.master), ("workers", &config.workers)]
                .into_iter()
                .filter(|(_, g)| g.count > 0)
                .map(|(role, g)| flow_core::InstanceGroup {
                    role: role.to_string(),
                    instance_type: g.machine_type.clone(),
                    market: flow_core::Market::OnDemand,
                    count: g.count,
                })
                .collect(),
        )
    }

    /// Dataproc names are unique in a project and region: every run that
    /// names one shares it.
    fn shared_name(&self) -> Option<String> {
        let state = self.state();
        Some(format!(
            "{}/{}/{}",
            state.location.project, state.location.region, state.backend
        ))
    }
}

/// Reports how late the job's end was noticed: from the terminal state's
/// `stateStartTime` to now ([`flow_core::meter::job_noticed`]).
fn notice_delay(info: &JobInfo) {
    let Some(ended) = info
        .status
        .as_ref()
        .and_then(|s| flow_core::chrono::DateTime::parse_from_rfc3339(&s.state_start_time).ok())
    else {
        return;
    };
    if let Ok(delay) = (flow_core::chrono::Utc::now() - ended.to_utc()).to_std() {
        flow_core::meter::job_noticed("dataproc", delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::Timeperiod;

    #[test]
    fn clusters_of_a_run_get_distinct_names() {
        let timeperiod = "2026112800".parse::<Timeperiod>().unwrap();
        let context = ExecutionContext {
            flow_name: "Daily_Report".into(),
            timeperiod,
            start_timeperiod: timeperiod,
            end_timeperiod: timeperiod,
            settings: Default::default(),
            number_of_clusters: 1,
        };
        let mut config = DataprocConfig::default();
        assert_eq!(
            backend_name(&config, "dataproc-0", &context),
            "flow-daily-report-2026112800-0"
        );
        assert_eq!(
            backend_name(&config, "dataproc-12", &context),
            "flow-daily-report-2026112800-12"
        );
        config.name = Some("etl".into());
        assert_eq!(backend_name(&config, "dataproc-1", &context), "etl-1");
    }

    #[test]
    fn long_flow_names_at_two_timeperiods_get_two_names_and_labels() {
        let context = |timeperiod: &str| {
            let timeperiod = timeperiod.parse::<Timeperiod>().unwrap();
            ExecutionContext {
                flow_name: "customer_lifetime_value_rollup_by_region".repeat(3)[..100].into(),
                timeperiod,
                start_timeperiod: timeperiod,
                end_timeperiod: timeperiod,
                settings: Default::default(),
                number_of_clusters: 1,
            }
        };
        let (a, b) = (context("2026112810"), context("2026112811"));
        let config = DataprocConfig::default();
        let (name_a, name_b) = (
            backend_name(&config, "dataproc-0", &a),
            backend_name(&config, "dataproc-0", &b),
        );
        assert_ne!(name_a, name_b);
        assert!(name_a.len() <= 51, "{name_a}");
        assert!(
            name_a.starts_with("flow-customer-lifetime-value"),
            "{name_a}"
        );
        assert_ne!(owner_label(&a), owner_label(&b));
        assert!(owner_label(&a).len() <= 63);
    }
}
