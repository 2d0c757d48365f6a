//! [`EmrCluster`]: flow's `Cluster` on EMR. Launching is in `launch.rs`,
//! the steps in `emr_steps.rs`, the factory in `factory.rs`.

use crate::client::{find_step_by_name, list_steps, sdk_message, Clients, EmrBackend, LazyS3};
use crate::emr_steps::job_kind;
use crate::launch::{reason_of, state_of};
use crate::steps::{
    emr_step_name, jar_step, step_log_prefix, ENDED_CLUSTER_STATES, LIVE_CLUSTER_STATES,
};
use async_trait::async_trait;
use flow_cloud::{wait_until, Look, Outcome, PollError, Wait, WaitError};
use flow_core::{
    Cluster, ClusterError, ClusterHandle, Filesystem, InstanceGroup, Job, JobContext, JobHandle,
    JobStatus, Market,
};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use tracing::{error, info};

/// The backend kind in handles and records.
pub const KIND: &str = "emr";

/// What this value knows of its EMR cluster.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClusterFacts {
    id: Option<String>,
    reused: bool,
    log_uri: Option<String>,
    /// Why the cluster ended by itself, once noticed: `STATE: CODE: message`.
    ended: Option<String>,
    /// `NormalizedInstanceHours` as `DescribeCluster` last said at `terminate`.
    normalized_instance_hours: Option<f64>,
}

/// One EMR cluster of a run. Jobs are EMR steps added with
/// `ActionOnFailure=CONTINUE`; files are on S3.
pub struct EmrCluster {
    pub(crate) name: String,
    pub(crate) emr_name: String,
    pub(crate) shared: Arc<EmrBackend>,
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

impl EmrCluster {
    pub(crate) fn new(name: &str, emr_name: String, shared: Arc<EmrBackend>) -> Self {
        EmrCluster {
            name: name.to_string(),
            emr_name,
            fs: LazyS3 {
                shared: shared.clone(),
            },
            shared,
            state: Mutex::default(),
        }
    }

    /// The EMR name of this cluster (`NAME-N`).
    pub fn emr_name(&self) -> &str {
        &self.emr_name
    }

    /// The EMR cluster id, once provisioned or adopted.
    pub fn cluster_id(&self) -> Option<String> {
        self.known().id
    }

    pub(crate) fn known(&self) -> ClusterFacts {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_known(&self, known: ClusterFacts) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = known;
    }

    pub(crate) async fn clients(&self, operation: &'static str) -> Result<&Clients, ClusterError> {
        self.shared
            .clients()
            .await
            .map_err(|e| self.backend(operation, e.to_string()))
    }

    pub(crate) fn backend(
        &self,
        operation: &'static str,
        message: impl Into<String>,
    ) -> ClusterError {
        ClusterError::Backend {
            cluster: self.name.clone(),
            operation,
            message: message.into(),
        }
    }

    pub(crate) fn launch_error(&self, message: impl Into<String>, transient: bool) -> ClusterError {
        ClusterError::Launch {
            cluster: self.name.clone(),
            message: message.into(),
            transient,
        }
    }

    pub(crate) fn bad_handle(
        &self,
        handle: &JobHandle,
        message: impl Into<String>,
    ) -> ClusterError {
        ClusterError::BadHandle {
            cluster: self.name.clone(),
            handle: handle.to_string(),
            message: message.into(),
        }
    }

    /// Keeps why the cluster ended by itself (the first reason noticed).
    fn note_end(&self, reason: String) {
        let mut known = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        known.ended.get_or_insert(reason);
    }

    /// Why the cluster `cluster_id` of an `INTERRUPTED` step ended (EMR
    /// interrupts a running step when its cluster ends, and says why only
    /// on the cluster): `STATE: CODE: message`, kept as its end; `None`
    /// when it has not ended or cannot be read.
    async fn interrupted_by(&self, cluster_id: &str) -> Option<String> {
        let cluster = self.describe(cluster_id).await.ok()??;
        let state = state_of(&cluster);
        if !ENDED_CLUSTER_STATES.contains(&state.as_str()) {
            return None;
        }
        let reason = format!("{state}: {}", reason_of(&cluster));
        self.note_end(reason.clone());
        Some(reason)
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
                    ended: None,
                    normalized_instance_hours: None,
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
            ended: None,
            normalized_instance_hours: None,
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
                    self.note_end(format!("{state}: {}", reason_of(&cluster)));
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
            ended: None,
            normalized_instance_hours: None,
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
                ("step_name", emr_step_name(cx, fastrand::u64(..))),
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
            Err(e) if e.leaves_outcome_unknown() => {
                let why = match e {
                    PollError::Timeout { .. } => "poll.timeout",
                    _ => "ListSteps",
                };
                return Err(ClusterError::OutcomeUnknown {
                    cluster: self.name.clone(),
                    job: kind,
                    message: format!(
                        "EMR step {step_id} on {}: {e} ({why}); the step is left as it is for the next engine to adopt or cancel",
                        step.cluster_id
                    ),
                });
            }
            Err(PollError::ClusterEnded { reason, .. }) => {
                error!(
                    "EMR cluster {} ended under step {step_id}: {reason}",
                    step.cluster_id
                );
                self.note_end(reason.clone());
                return Err(self.job_failed(
                    kind,
                    format!("its EMR cluster {} ended: {reason}", step.cluster_id),
                ));
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
                let mut message = self
                    .failure_message(&info, &step.cluster_id, log_uri.as_deref())
                    .await;
                if info.state == "INTERRUPTED" {
                    if let Some(reason) = self.interrupted_by(&step.cluster_id).await {
                        error!(
                            "EMR cluster {} ended under step {step_id}: {reason}",
                            step.cluster_id
                        );
                        message = format!(
                            "its EMR cluster {} ended: {reason}; {message}",
                            step.cluster_id
                        );
                    }
                }
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
        let described = self
            .describe(&id)
            .await
            .map_err(|e| terminate_error(e.to_string()))?;
        if let Some(hours) = described
            .as_ref()
            .and_then(|c| c.normalized_instance_hours())
        {
            let mut known = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            known.normalized_instance_hours = Some(f64::from(hours));
        }
        match described {
            Some(c) if ENDED_CLUSTER_STATES.contains(&state_of(&c).as_str()) => {
                info!("EMR cluster {id} is already {}", state_of(&c));
                self.note_end(format!("{}: {}", state_of(&c), reason_of(&c)));
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

    /// EMR runs `step_concurrency_level` steps at once (1 unless set).
    fn slots(&self) -> usize {
        self.shared
            .config
            .step_concurrency_level
            .map_or(1, |level| level.max(1) as usize)
    }

    fn end_reason(&self) -> Option<String> {
        self.known().ended
    }

    /// The configured instance groups; unknown with instance fleets (EMR
    /// picks their types and counts).
    fn instances(&self) -> Option<Vec<InstanceGroup>> {
        let config = &self.shared.config;
        if !config.instance_fleets.is_empty() {
            return None;
        }
        Some(
            config
                .instance_groups
                .iter()
                .map(|g| InstanceGroup {
                    role: g.role.as_str().to_string(),
                    instance_type: g.instance_type.clone(),
                    market: match g.market {
                        crate::config::Market::OnDemand => Market::OnDemand,
                        crate::config::Market::Spot => Market::Spot,
                    },
                    count: u32::try_from(g.count).unwrap_or(0),
                })
                .collect(),
        )
    }

    fn normalized_instance_hours(&self) -> Option<f64> {
        self.known().normalized_instance_hours
    }

    /// With `reuse`, every run configured with this name finds the same
    /// cluster: they share it (per region).
    fn shared_name(&self) -> Option<String> {
        let config = &self.shared.config;
        config.reuse.then(|| {
            format!(
                "{}/{}",
                config.region.as_deref().unwrap_or("default-region"),
                self.emr_name
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factory::EmrClusterFactory;
    use flow_core::ExecutionContext;

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
}
