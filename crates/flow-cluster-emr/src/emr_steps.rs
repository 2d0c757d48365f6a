//! The steps of an EMR cluster as flow's jobs: the ids a handle holds,
//! `AddJobFlowSteps` (retried by flow after looking the step up by name),
//! `CancelSteps`, and a failed step's message with the tails of its logs.

use crate::client::{find_step_by_name, sdk_message, CallError};
use crate::cluster::{EmrCluster, KIND};
use crate::steps::{jar_step, last_bytes, step_log_prefix, EmrStepInfo};
use aws_config::retry::RetryConfig;
use aws_sdk_emr::types as emr;
use flow_cloud::retry_with_lookup;
use flow_core::{ClusterError, Job, JobHandle};
use tracing::{info, warn};

/// A step's ids as a handle holds them.
pub(crate) struct EmrStepRef {
    pub cluster_id: String,
    pub step_id: Option<String>,
    pub step_name: String,
}

impl EmrCluster {
    pub(crate) fn step_ref(&self, handle: &JobHandle) -> Result<EmrStepRef, ClusterError> {
        if handle.kind != KIND {
            return Err(self.bad_handle(handle, "not an EMR job"));
        }
        let cluster_id = handle
            .id("cluster_id")
            .ok_or_else(|| self.bad_handle(handle, "it names no EMR cluster"))?;
        let step_name = handle
            .id("step_name")
            .ok_or_else(|| self.bad_handle(handle, "it has no step name"))?;
        Ok(EmrStepRef {
            cluster_id: cluster_id.to_string(),
            step_id: handle.id("step_id").map(str::to_string),
            step_name: step_name.to_string(),
        })
    }

    /// The step's id: from the handle, else found by its name (the answer
    /// to `AddJobFlowSteps` was lost). `None`: EMR has no such step.
    pub(crate) async fn step_id(&self, step: &EmrStepRef) -> Result<Option<String>, ClusterError> {
        if let Some(id) = &step.step_id {
            return Ok(Some(id.clone()));
        }
        let emr = &self.clients("ListSteps").await?.emr;
        let found = find_step_by_name(emr, &step.cluster_id, &step.step_name)
            .await
            .map_err(|e| self.backend("ListSteps", e))?;
        Ok(found.map(|s| s.id))
    }

    /// Adds the step, retrying transient failures itself: before each
    /// retry it looks the step up by name, so a step whose answer was lost
    /// is never added twice.
    pub(crate) async fn add_step(
        &self,
        emr: &aws_sdk_emr::Client,
        step: &EmrStepRef,
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
            &self.shared.config.retry,
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
                    .map_err(|e| {
                        CallError::sdk(
                            format_args!("AddJobFlowSteps on EMR cluster {}", step.cluster_id),
                            &e,
                        )
                    })?;
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

    pub(crate) fn job_failed(&self, job: &'static str, message: impl Into<String>) -> ClusterError {
        ClusterError::JobFailed {
            cluster: self.name.clone(),
            job,
            message: message.into(),
        }
    }

    /// `CancelSteps` for the step, then waits until it left `PENDING`,
    /// `RUNNING` and `CANCEL_PENDING` (up to `cancel_timeout`).
    pub(crate) async fn cancel_step(
        &self,
        cluster_id: &str,
        step_id: &str,
    ) -> Result<(), ClusterError> {
        let emr = &self.clients("CancelSteps").await?.emr;
        info!("cancelling step {step_id} on {cluster_id}");
        let answer = emr
            .cancel_steps()
            .cluster_id(cluster_id)
            .step_ids(step_id)
            .step_cancellation_option(emr::StepCancellationOption::SendInterrupt)
            .send()
            .await
            .map_err(|e| {
                self.backend(
                    "CancelSteps",
                    format!(
                        "step {step_id} on EMR cluster {cluster_id}: {}",
                        sdk_message(&e)
                    ),
                )
            })?;
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
    pub(crate) async fn failure_message(
        &self,
        step: &EmrStepInfo,
        cluster_id: &str,
        log_uri: Option<&str>,
    ) -> String {
        let mut message = step.describe();
        let logs = &self.shared.config.job_logs;
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

/// The job's kind as `prepare` recorded it, for messages.
pub(crate) fn job_kind(handle: &JobHandle) -> &'static str {
    match handle.id("job") {
        Some("shell") => "shell",
        Some("spark") => "spark",
        Some("pig") => "pig",
        Some("hadoop") => "hadoop",
        _ => "emr",
    }
}
