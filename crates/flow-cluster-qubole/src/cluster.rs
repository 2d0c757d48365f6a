//! [`QuboleCluster`]: flow's [`Cluster`] on a labelled QDS cluster, and the
//! factory that makes them.

use crate::api::{Api, Command};
use crate::commands::{
    self, command_body, command_payload, ids, job_type, CommandRef, JobRef, QuboleCommands, KIND,
};
use crate::config::QuboleConfig;
use crate::error::{ApiError, QuboleError};
use crate::logs::command_log;
use async_trait::async_trait;
use flow_cloud::cluster::{wait_job, ClusterErrors, PollerMap};
use flow_cloud::http::HttpTimeouts;
use flow_cloud::{
    retry_with_lookup, wait_until, Clock, Look, Outcome, Poller, Requests, Transient, Wait,
    WaitError,
};
use flow_core::{
    Cluster, ClusterError, ClusterFactory, ClusterHandle, ExecutionContext, Filesystem, Job,
    JobContext, JobHandle, JobStatus, Secret,
};
use flow_fs_s3::LazyS3Filesystem;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tracing::{error, info, warn};

/// What every cluster of a factory shares.
struct QuboleBackend {
    config: QuboleConfig,
    api: Arc<Api>,
    fs: LazyS3Filesystem,
    clock: Arc<dyn Clock>,
    /// Cluster state requests of start and terminate waits.
    lifecycle_requests: Requests,
    /// One poller per cluster label: the run's clusters on one label share
    /// its history listing.
    pollers: PollerMap<QuboleCommands>,
}

impl QuboleBackend {
    fn poller(&self, label: &str) -> Poller<QuboleCommands> {
        self.pollers.get(label, || {
            Poller::new(
                QuboleCommands::new(self.api.clone()),
                self.config.poll,
                self.clock.clone(),
            )
        })
    }
}

/// Makes [`QuboleCluster`]s (kind `qubole`) from one [`QuboleConfig`].
/// Build it with [`QuboleConfig::builder`] or
/// [`QuboleClusterFactoryBuilder`](crate::QuboleClusterFactoryBuilder).
#[derive(Clone)]
pub struct QuboleClusterFactory {
    shared: Arc<QuboleBackend>,
}

impl fmt::Debug for QuboleClusterFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuboleClusterFactory")
            .field("config", &self.shared.config)
            .field("api", &self.shared.api)
            .finish()
    }
}

impl QuboleClusterFactory {
    pub(crate) fn new(
        config: QuboleConfig,
        token: Secret,
        clock: Arc<dyn Clock>,
    ) -> Result<QuboleClusterFactory, QuboleError> {
        let timeouts = HttpTimeouts {
            connect: config.connect_timeout,
            request: config.request_timeout,
        };
        let http = timeouts
            .client()
            .map_err(|message| QuboleError::Client { message })?;
        let api = Arc::new(Api::new(
            http,
            config.api_endpoint(),
            token,
            config.retry,
            clock.clone(),
            timeouts,
        ));
        Ok(QuboleClusterFactory {
            shared: Arc::new(QuboleBackend {
                fs: LazyS3Filesystem::new(config.s3.clone()),
                config,
                api,
                clock,
                lifecycle_requests: Requests::new(),
                pollers: PollerMap::default(),
            }),
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &QuboleConfig {
        &self.shared.config
    }

    /// QDS API requests sent so far by every cluster of this factory
    /// (retries included).
    pub fn requests(&self) -> u64 {
        self.shared.api.requests()
    }

    /// Command status requests of the pollers so far (one per tick).
    pub fn poll_requests(&self) -> u64 {
        self.shared.pollers.requests()
    }

    /// Cluster state requests sent while waiting for a cluster to start or
    /// stop (a share of [`requests`](Self::requests)).
    pub fn lifecycle_requests(&self) -> u64 {
        self.shared.lifecycle_requests.get()
    }

    /// The clusters' S3 filesystem.
    pub fn filesystem(&self) -> &LazyS3Filesystem {
        &self.shared.fs
    }

    /// A cluster called `name` in the run, without the trait object.
    pub fn cluster(&self, name: &str, _context: &ExecutionContext) -> QuboleCluster {
        QuboleCluster {
            name: name.to_string(),
            shared: self.shared.clone(),
            launch: Mutex::new(Launch {
                label: self.shared.config.cluster_label.clone(),
                handle: None,
                ended: false,
                end_reason: None,
            }),
        }
    }
}

impl ClusterFactory for QuboleClusterFactory {
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

/// Where a cluster stands in this value's hands.
#[derive(Debug, Clone)]
struct Launch {
    /// The QDS cluster label (from the settings, or an adopted handle).
    label: String,
    /// Set once provisioned or adopted.
    handle: Option<ClusterHandle>,
    /// Terminated (or found down) already.
    ended: bool,
    /// Why it ended by itself, once a wait noticed.
    end_reason: Option<String>,
}

/// The QDS cluster of a label, as one of a run's clusters.
///
/// `provision` asks for the cluster's state (an unknown label fails the
/// launch); with `start_cluster`, a cluster that is `DOWN` is started and
/// the run records that it started it, one found `UP` (or `PENDING`) is
/// reused. `wait_ready` waits for `UP` when it was started. `terminate`
/// terminates it only when the run started it and `terminate` is set (or
/// `terminate_reused`), waiting for `DOWN`.
pub struct QuboleCluster {
    name: String,
    shared: Arc<QuboleBackend>,
    launch: Mutex<Launch>,
}

impl fmt::Debug for QuboleCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuboleCluster")
            .field("name", &self.name)
            .field("launch", &*self.state())
            .finish()
    }
}

/// The handle's detail saying the run started the cluster.
const STARTED: &str = "started_by_run";

impl QuboleCluster {
    fn state(&self) -> MutexGuard<'_, Launch> {
        self.launch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn config(&self) -> &QuboleConfig {
        &self.shared.config
    }

    fn api(&self) -> &Api {
        &self.shared.api
    }

    /// The QDS cluster label its commands go to.
    pub fn label(&self) -> String {
        self.state().label.clone()
    }

    fn handle_for(&self, label: &str, started: bool) -> ClusterHandle {
        ClusterHandle {
            kind: KIND.into(),
            name: self.name.clone(),
            backend_id: label.to_string(),
            // Only a cluster the run started and is set to terminate is
            // the run's to end: any other is left up at the end, and the
            // engine records it so (`left_up`, not `terminated`).
            reused: !(started && self.config().terminate),
            details: BTreeMap::from([
                ("endpoint".to_string(), self.config().api_endpoint()),
                (STARTED.to_string(), started.to_string()),
            ]),
        }
    }

    fn set_handle(&self, handle: ClusterHandle) {
        let mut state = self.state();
        state.label = handle.backend_id.clone();
        state.handle = Some(handle);
        state.ended = false;
    }

    fn wait(&self, timeout: Duration) -> Wait {
        Wait {
            interval: self.config().launch_poll,
            timeout,
        }
    }

    /// Asks for the cluster's state every `launch_poll` until it is
    /// `wanted`; `Err` with a message when it went another way, or after
    /// `timeout`.
    async fn wait_for_state(
        &self,
        label: &str,
        wanted: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        // A start that fails goes back to DOWN: failed once PENDING was seen.
        let seen_pending = AtomicBool::new(false);
        let reached = wait_until(
            &self.shared.clock,
            self.wait(timeout),
            &self.shared.lifecycle_requests,
            || {
                let seen = &seen_pending;
                async move {
                    let state = self
                        .api()
                        .cluster_state(label)
                        .await
                        .map_err(|e| format!("cluster {label}: {e}"))?
                        .state;
                    Ok::<_, String>(match (wanted, state.as_str()) {
                        (w, s) if w == s => Look::Ready(()),
                        ("UP", "PENDING") => {
                            seen.store(true, Ordering::Relaxed);
                            Look::Pending(state)
                        }
                        // Started but back down: the start failed.
                        ("UP", "DOWN" | "TERMINATING") if seen.load(Ordering::Relaxed) => Look::Failed(format!(
                            "cluster {label} went {state} while starting (see its start logs in QDS)"
                        )),
                        (_, s) => Look::Pending(s.to_string()),
                    })
                }
            },
        )
        .await;
        reached.map_err(|e| match e {
            WaitError::Failed(message) | WaitError::Request(message) => message,
            WaitError::Timeout { last, .. } => format!(
                "cluster {label} is still {last} after {}",
                humantime_serde::re::humantime::format_duration(timeout)
            ),
        })
    }

    /// The command id of `job`: the handle's, or the one QDS has under the
    /// job's name (an engine died before recording it). `None`: QDS has no
    /// such command.
    async fn command_id(&self, job: &JobRef) -> Result<Option<u64>, ApiError> {
        if let Some(id) = job.command_id {
            return Ok(Some(id));
        }
        Ok(self
            .api()
            .find_command(&job.label, &job.name)
            .await?
            .map(|c| c.id))
    }

    /// Copies the end of the command's log into the step log (INFO after
    /// success, WARN after a failure) and returns its last lines for an
    /// error.
    async fn log_tail(&self, id: u64, failed: bool) -> Option<String> {
        let logs = &self.config().job_logs;
        if !logs.enabled || logs.max_bytes == 0 {
            return None;
        }
        match command_log(self.api(), id, &logs.tail_options(), &self.shared.clock).await {
            Ok(Some(tail)) => Some(tail.log(
                &format!("the log of QDS command {id}"),
                failed,
                logs.error_bytes,
            )),
            Ok(None) => {
                warn!("QDS has no log of command {id}");
                None
            }
            Err(e) => {
                warn!("cannot read the log of command {id}: {e}");
                None
            }
        }
    }

    /// Kills the command and waits (up to `cancel_timeout`) for it to end.
    async fn cancel_and_wait(&self, job: &JobRef) -> Result<Option<Outcome>, ClusterError> {
        let id = self
            .command_id(job)
            .await
            .map_err(|e| self.backend_error("cancel command", e))?;
        let Some(id) = id else {
            return Ok(None);
        };
        match self.api().kill_command(id).await {
            Ok(command) => match commands::COMMAND_STATES.phase(&command.status) {
                Some(flow_cloud::Phase::Finished(outcome)) => {
                    info!("QDS command {id} already ended ({})", command.status);
                    return Ok(Some(outcome));
                }
                _ => info!("cancelling QDS command {id}"),
            },
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(self.backend_error("cancel command", e)),
        }
        let command = CommandRef {
            label: job.label.clone(),
            id,
        };
        match self
            .shared
            .poller(&job.label)
            .wait_for(command, Some(self.config().cancel_timeout))
            .await
        {
            Ok(finished) => Ok(Some(finished.outcome)),
            Err(e) => Err(self.backend_error("cancel command", e)),
        }
    }

    /// Sends the command once; after a failure that may have taken effect
    /// (a lost answer, a server error, no answer) it looks the command up
    /// by its name before sending it again, and once more before giving up.
    async fn send_command(
        &self,
        job: &JobRef,
        body: &serde_json::Value,
    ) -> Result<Command, ApiError> {
        let sent = retry_with_lookup(
            &self.config().retry,
            &self.shared.clock,
            "submit command",
            || self.api().submit_command(body),
            || self.api().find_command(&job.label, &job.name),
        )
        .await;
        match sent {
            Err(e) if !matches!(&e, ApiError::Status { status, .. } if *status < 500) => {
                match self.api().find_command(&job.label, &job.name).await {
                    Ok(Some(found)) => {
                        info!(
                            "submitting {} failed ({e}) but QDS has it as command {}",
                            job.name, found.id
                        );
                        Ok(found)
                    }
                    _ => Err(e),
                }
            }
            other => other,
        }
    }
}

fn job_status(command: &Command) -> JobStatus {
    flow_cloud::cluster::job_status(commands::COMMAND_STATES.phase(&command.status), || {
        format!("QDS command {} is {}", command.id, command.status)
    })
}

#[async_trait]
impl Cluster for QuboleCluster {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    async fn provision(&self) -> Result<ClusterHandle, ClusterError> {
        let label = self.label();
        let state = self
            .api()
            .cluster_state(&label)
            .await
            .map_err(|e| {
                let transient = e.is_transient();
                match e {
                    ApiError::Status { status: 404 | 422, .. } => self.launch_error(
                        format!("QDS has no cluster labelled {label:?} ({e}); set cluster_label in [cluster.qubole]"),
                        false,
                    ),
                    other => self.launch_error(format!("cluster {label}: {other}"), transient),
                }
            })?
            .state;
        let started = if !self.config().start_cluster {
            info!("commands go to QDS cluster {label} ({state}); QDS starts it when it is down");
            false
        } else {
            match state.as_str() {
                "UP" | "PENDING" => {
                    info!("reusing QDS cluster {label} ({state}); it is left up at the end");
                    false
                }
                "DOWN" => {
                    self.api()
                        .set_cluster_state(&label, "start")
                        .await
                        .map_err(|e| {
                            self.launch_error(format!("starting {label}: {e}"), e.is_transient())
                        })?;
                    info!("starting QDS cluster {label}");
                    true
                }
                other => {
                    return Err(self.launch_error(
                        format!("QDS cluster {label} is {other}; try again once it is down"),
                        true,
                    ))
                }
            }
        };
        let handle = self.handle_for(&label, started);
        self.set_handle(handle.clone());
        Ok(handle)
    }

    async fn wait_ready(&self) -> Result<(), ClusterError> {
        let launch = self.state().clone();
        if launch.handle.is_none() {
            return Err(self.launch_error("not provisioned", false));
        }
        if !self.config().start_cluster {
            return Ok(());
        }
        self.wait_for_state(&launch.label, "UP", self.config().launch_timeout)
            .await
            .map_err(|message| self.launch_error(message, false))?;
        info!("QDS cluster {} is UP", launch.label);
        Ok(())
    }

    async fn adopt(&self, handle: &ClusterHandle) -> Result<bool, ClusterError> {
        if handle.kind != KIND {
            return Ok(false);
        }
        let label = handle.backend_id.clone();
        self.set_handle(handle.clone());
        if !self.config().start_cluster {
            return Ok(true);
        }
        let state = self
            .api()
            .cluster_state(&label)
            .await
            .map_err(|e| self.backend_error("check cluster status", e))?
            .state;
        match state.as_str() {
            "UP" => Ok(true),
            "PENDING" => match self
                .wait_for_state(&label, "UP", self.config().launch_timeout)
                .await
            {
                Ok(()) => Ok(true),
                Err(message) => {
                    warn!("adopted QDS cluster {label} did not come up: {message}");
                    Ok(false)
                }
            },
            other => {
                info!("QDS cluster {label} is {other}: nothing to adopt");
                self.state().ended = true;
                Ok(false)
            }
        }
    }

    fn prepare(&self, job: &Job, cx: &JobContext<'_>) -> Result<JobHandle, ClusterError> {
        let (kind, _) = command_payload(job, self.config())
            .map_err(|message| self.job_failed(job.kind(), message))?;
        Ok(JobHandle::new(
            KIND,
            self.name.clone(),
            [
                (ids::LABEL, self.label()),
                (ids::NAME, commands::new_job_name(cx)),
                (ids::TYPE, kind.to_string()),
            ],
        ))
    }

    async fn submit(
        &self,
        handle: &JobHandle,
        job: &Job,
        _cx: &JobContext<'_>,
    ) -> Result<JobHandle, ClusterError> {
        let mut job_ref = JobRef::from_handle(handle, &self.name)?;
        let mut handle = handle.clone();
        if job_ref.command_id.is_some() {
            return Ok(handle);
        }
        // A handle prepared for another label (a dead run's) goes to this one.
        let label = self.label();
        if job_ref.label != label {
            job_ref.label = label.clone();
            handle.ids.insert(ids::LABEL.into(), label);
        }
        handle.cluster = self.name.clone();
        let (_, payload) = command_payload(job, self.config())
            .map_err(|message| self.job_failed(job.kind(), message))?;
        let body = command_body(payload, &job_ref);
        let command = self
            .send_command(&job_ref, &body)
            .await
            .map_err(|e| self.backend_error("submit command", e))?;
        info!(
            "submitted QDS command {} ({}) to {} ({})",
            command.id, job_ref.name, job_ref.label, command.status
        );
        handle
            .ids
            .insert(ids::COMMAND_ID.into(), command.id.to_string());
        Ok(handle)
    }

    async fn wait(&self, handle: &JobHandle, cx: &JobContext<'_>) -> Result<(), ClusterError> {
        let job = JobRef::from_handle(handle, &self.name)?;
        let kind = job_type(handle);
        let id = self
            .command_id(&job)
            .await
            .map_err(|e| self.backend_error("command history", e))?
            .ok_or_else(|| {
                self.job_failed(kind, format!("QDS has no command named {}", job.name))
            })?;
        let command = CommandRef {
            label: job.label.clone(),
            id,
        };
        let finished = wait_job(
            &self.name,
            kind,
            &format!("QDS {command}"),
            &self.shared.poller(&job.label),
            command,
            cx.cancel,
            || self.cancel_and_wait(&job),
            |reason| {
                self.state().end_reason.get_or_insert(reason);
            },
        )
        .await?;
        match finished.outcome {
            Outcome::Succeeded => {
                info!("QDS command {id} is done");
                self.log_tail(id, false).await;
                Ok(())
            }
            Outcome::Failed => {
                error!("QDS command {id} is {}", finished.status.status);
                let mut message = format!("QDS command {id} is {}", finished.status.status);
                if let Some(log) = self.log_tail(id, true).await {
                    message.push_str("\nits log (last lines):\n");
                    message.push_str(&log);
                }
                Err(self.job_failed(kind, message))
            }
            Outcome::Cancelled => {
                warn!("QDS command {id} was cancelled");
                Err(self.cancelled(kind))
            }
        }
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, ClusterError> {
        let job = JobRef::from_handle(handle, &self.name)?;
        let found = match job.command_id {
            Some(id) => match self.api().get_command(id).await {
                Ok(Some(command)) => Some(command),
                Ok(None) => {
                    return Ok(JobStatus::Lost {
                        reason: format!("QDS does not know command {id} any more"),
                    })
                }
                Err(e) => return Err(self.backend_error("view command status", e)),
            },
            None => self
                .api()
                .find_command(&job.label, &job.name)
                .await
                .map_err(|e| self.backend_error("command history", e))?,
        };
        Ok(found.map_or(JobStatus::NotSubmitted, |c| job_status(&c)))
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
        let config = self.config();
        let ours = !handle.reused;
        if !config.terminate || (!ours && !config.terminate_reused) {
            info!(
                "leaving QDS cluster {} up: {}",
                launch.label,
                if ours {
                    "terminate is off"
                } else {
                    "this run did not start it"
                }
            );
            return Ok(());
        }
        let terminate_error = |message: String| self.terminate_error(message);
        self.api()
            .set_cluster_state(&launch.label, "terminate")
            .await
            .map_err(|e| terminate_error(format!("terminating {}: {e}", launch.label)))?;
        info!("terminating QDS cluster {}", launch.label);
        self.wait_for_state(&launch.label, "DOWN", config.terminate_timeout)
            .await
            .map_err(terminate_error)?;
        info!("QDS cluster {} is DOWN", launch.label);
        self.state().ended = true;
        Ok(())
    }

    fn filesystem(&self) -> &dyn Filesystem {
        &self.shared.fs
    }

    /// `jobs_per_cluster` commands at once (1 unless set).
    fn slots(&self) -> usize {
        self.config().jobs_per_cluster.get()
    }

    fn end_reason(&self) -> Option<String> {
        self.state().end_reason.clone()
    }

    /// A label names one cluster of the account: every run sending to it
    /// shares it, so the one that started it terminates it only as its
    /// last user (the store keeps who uses it).
    fn shared_name(&self) -> Option<String> {
        Some(format!("{}/{}", self.config().api_endpoint(), self.label()))
    }
}
