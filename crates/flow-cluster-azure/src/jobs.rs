//! Jobs on HDInsight: the durable handle, the Livy batch or WebHCat job
//! built from a flow [`Job`], and the poller's [`JobSource`] (one listing
//! per tick per API for all the watched jobs of a cluster).

use crate::gateway::{CallError, Gateway};
use crate::livy::{Batch, CreateBatch, Livy, BATCH_STATES};
use crate::webhcat::{id_before, Submit, WebHcat, WebHcatJob};
use async_trait::async_trait;
use flow_cloud::job::{job_file, unique_name};
use flow_cloud::{HandleIds, JobSource, Outcome, Phase};
use flow_core::{ClusterError, Job, JobContext, JobHandle};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// The backend kind in handles and records.
pub const KIND: &str = "azure";

/// The ids an HDInsight job handle holds.
pub(crate) mod ids {
    /// `livy` or `webhcat`.
    pub const API: &str = "api";
    /// The gateway URL of that API (Livy's or WebHCat's).
    pub const URL: &str = "url";
    /// The client-chosen identity: the Livy batch `name`, or the WebHCat
    /// job's `statusdir`.
    pub const NAME: &str = "name";
    /// Livy's batch id or WebHCat's job id, once known.
    pub const ID: &str = "id";
    /// `spark`, `pig` or `hadoop`, for messages.
    pub const TYPE: &str = "type";
}

/// Which API runs a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Api {
    Livy,
    WebHcat,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Livy => "livy",
            Api::WebHcat => "webhcat",
        }
    }
}

/// A submitted job, as the poller knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct JobRef {
    pub api: Api,
    pub url: String,
    pub name: String,
    /// `None` until the submission's answer (or a lookup) gave it.
    pub id: Option<String>,
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.api, &self.id) {
            (Api::Livy, Some(id)) => write!(f, "Livy batch {id} ({})", self.name),
            (Api::Livy, None) => write!(f, "Livy batch {}", self.name),
            (Api::WebHcat, Some(id)) => write!(f, "WebHCat job {id}"),
            (Api::WebHcat, None) => write!(f, "WebHCat job of {}", self.name),
        }
    }
}

impl JobRef {
    /// Reads a handle; `cluster` names the run's cluster in errors.
    pub fn from_handle(handle: &JobHandle, cluster: &str) -> Result<JobRef, ClusterError> {
        let ids = HandleIds::read(handle, KIND, cluster)?;
        let api = match ids.required(ids::API)?.as_str() {
            "livy" => Api::Livy,
            "webhcat" => Api::WebHcat,
            other => return Err(ids.bad(format!("unknown api {other:?}"))),
        };
        Ok(JobRef {
            api,
            url: ids.required(ids::URL)?,
            name: ids.required(ids::NAME)?,
            id: ids.optional(ids::ID).map(String::from),
        })
    }
}

/// The job's type as recorded in its handle.
pub(crate) fn job_type(handle: &JobHandle) -> &'static str {
    flow_cloud::job::job_type(handle, ids::TYPE, &["spark", "pig", "hadoop"])
}

/// A client-chosen name, unique per attempt: `FLOW-STEP-ACTION-ATTEMPT-RANDOM`
/// (letters, digits, `-`, `_`), at most 100 characters.
pub(crate) fn new_job_name(cx: &JobContext<'_>) -> String {
    let text = format!(
        "{}-{}-{}-{}",
        cx.execution.flow_name, cx.step, cx.action, cx.attempt
    );
    unique_name(&text, &format!("{:08x}", fastrand::u32(..)), 100)
}

/// Where job files without a scheme are: `wasbs://CONTAINER@ACCOUNT.blob.core.windows.net`.
pub(crate) fn resolve_uri(path: &str, code_root: Option<&str>) -> Result<String, String> {
    job_file(path, code_root, || {
        format!(
        "{path:?} has no scheme and the Blob filesystem names no account and container: write wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/{path} or set [cluster.azure.blob] account and container"
    )
    })
}

/// Livy shows a batch's `conf` and WebHCat a job's arguments to whoever may
/// view them: a secret there is refused, naming only the keys.
fn refuse_secrets(field: &str, secrets: &[(String, flow_core::Secret)]) -> Result<(), String> {
    if secrets.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = secrets.iter().map(|(k, _)| k.as_str()).collect();
    Err(format!(
        "{field} {keys:?} hold secrets, and Livy and WebHCat show a job's conf and arguments to anyone who can view the job: have the job read them from Key Vault instead"
    ))
}

/// What a flow job becomes on HDInsight.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    Livy(CreateBatch),
    Pig {
        file: String,
        args: Vec<String>,
    },
    Jar {
        jar: String,
        class: Option<String>,
        args: Vec<String>,
    },
}

impl Payload {
    pub fn api(&self) -> Api {
        match self {
            Payload::Livy(_) => Api::Livy,
            _ => Api::WebHcat,
        }
    }
}

/// The payload of `job` named `name`; a shell job is `Err(None)`, a job
/// that cannot be sent `Err(Some(why))`.
pub(crate) fn payload(
    job: &Job,
    name: &str,
    code_root: Option<&str>,
) -> Result<Payload, Option<String>> {
    match job {
        Job::Shell { .. } => Err(None),
        Job::Spark {
            application,
            main_class,
            conf,
            secret_conf,
            args,
        } => {
            refuse_secrets("conf", secret_conf)?;
            Ok(Payload::Livy(CreateBatch {
                file: resolve_uri(application, code_root)?,
                class_name: main_class.clone(),
                args: args.clone(),
                conf: conf.iter().cloned().collect::<BTreeMap<_, _>>(),
                name: name.to_string(),
                proxy_user: None,
            }))
        }
        Job::Pig {
            script,
            params,
            secret_params,
        } => {
            refuse_secrets("params", secret_params)?;
            let mut args = Vec::new();
            for (key, value) in params {
                args.push("-param".to_string());
                args.push(format!("{key}={value}"));
            }
            Ok(Payload::Pig {
                file: resolve_uri(script, code_root)?,
                args,
            })
        }
        Job::HadoopJar {
            jar,
            main_class,
            args,
        } => Ok(Payload::Jar {
            jar: resolve_uri(jar, code_root)?,
            // WebHCat's `mapreduce/jar` requires `class` (it reads no
            // manifest): refused here, before anything is sent.
            class: Some(main_class.clone().ok_or_else(|| {
                "WebHCat runs a jar only with its main class: set main_class".to_string()
            })?),
            args: args.clone(),
        }),
    }
}

/// Sends `payload` once; answers the backend's id. `statusdir` is the
/// WebHCat job's identity (its handle's name).
pub(crate) async fn submit_once(
    gateway: &Gateway,
    job: &JobRef,
    user: &str,
    payload: &Payload,
) -> Result<String, CallError> {
    match payload {
        Payload::Livy(batch) => {
            let livy = Livy {
                gateway,
                url: &job.url,
            };
            Ok(livy.submit(batch).await?.id.to_string())
        }
        Payload::Pig { file, args } => {
            let webhcat = WebHcat {
                gateway,
                url: &job.url,
                user,
            };
            webhcat
                .submit(
                    &Submit::Pig {
                        file,
                        args: args.clone(),
                    },
                    &job.name,
                )
                .await
        }
        Payload::Jar { jar, class, args } => {
            let webhcat = WebHcat {
                gateway,
                url: &job.url,
                user,
            };
            webhcat
                .submit(
                    &Submit::Jar {
                        jar,
                        class: class.as_deref(),
                        args,
                    },
                    &job.name,
                )
                .await
        }
    }
}

/// The backend's id of the job named in `job`, if it took the job: one
/// listing.
pub(crate) async fn look_up(
    gateway: &Gateway,
    job: &JobRef,
    user: &str,
) -> Result<Option<String>, CallError> {
    Ok(match job.api {
        Api::Livy => Livy {
            gateway,
            url: &job.url,
        }
        .find(&job.name)
        .await?
        .map(|b| b.id.to_string()),
        Api::WebHcat => WebHcat {
            gateway,
            url: &job.url,
            user,
        }
        .find(&job.name)
        .await?
        .map(|j| j.id),
    })
}

/// A job's status, from whichever API runs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Status {
    Livy(Batch),
    WebHcat(WebHcatJob),
}

impl Status {
    /// The state's name, for messages.
    pub fn state(&self) -> String {
        match self {
            Status::Livy(b) => b.state.clone(),
            Status::WebHcat(j) => match j.exit_value {
                Some(code) if j.status.state == "SUCCEEDED" => {
                    format!("SUCCEEDED (exit value {code})")
                }
                _ => j.status.state.clone(),
            },
        }
    }
}

/// WebHCat's phases: the controller job `SUCCEEDED` with exit value 0 is a
/// success; with another exit value (Pig failed) a failure; `FAILED`
/// failed, `KILLED` cancelled.
fn webhcat_phase(job: &WebHcatJob) -> Phase {
    match job.status.state.as_str() {
        "SUCCEEDED" => match (job.exit_value, job.completed.as_deref()) {
            (Some(0), _) => Phase::Finished(Outcome::Succeeded),
            (Some(_), _) => Phase::Finished(Outcome::Failed),
            (None, Some("done")) => Phase::Finished(Outcome::Succeeded),
            (None, _) => Phase::Running,
        },
        "FAILED" => Phase::Finished(Outcome::Failed),
        "KILLED" => Phase::Finished(Outcome::Cancelled),
        _ => Phase::Running,
    }
}

/// How the poller asks whether the cluster behind a gateway has ended
/// (`flow_cloud`'s cluster check, every tenth tick): a cluster created
/// through Azure Resource Manager answers with its `clusterState`; a
/// cluster managed outside the flow has no such question (its gateway
/// says nothing about it), so it has none unless a library user gives one
/// ([`AzureClusterFactoryBuilder::with_cluster_watch`](crate::AzureClusterFactoryBuilder::with_cluster_watch)).
#[async_trait]
pub trait ClusterWatch: Send + Sync {
    /// `Ok(Some(reason))` once the cluster behind `gateway` has ended or
    /// is ending (its state and the service's reason), which fails the
    /// jobs watched on it with that reason; `Ok(None)` while it runs;
    /// `Err` when asking failed (asked again at the next check).
    async fn ended(&self, gateway: &str) -> Result<Option<String>, String>;
}

/// The poller's source: one cluster's jobs, asked about with one listing
/// per API per tick (`GET /livy/batches`, `GET
/// /templeton/v1/jobs?fields=*&jobid=` from the oldest job watched).
pub(crate) struct AzureJobs {
    gateway: Arc<Gateway>,
    user: String,
    /// Where the oldest watched batch was in Livy's list last time: the
    /// next listing starts there.
    livy_from: Mutex<i64>,
    /// Whether the gateway's cluster ended, and the gateway to ask about.
    watch: Option<(Arc<dyn ClusterWatch>, String)>,
}

impl AzureJobs {
    pub fn new(
        gateway: Arc<Gateway>,
        user: String,
        watch: Option<(Arc<dyn ClusterWatch>, String)>,
    ) -> Self {
        AzureJobs {
            gateway,
            user,
            livy_from: Mutex::new(0),
            watch,
        }
    }

    /// The batches of Livy at `url` from the oldest of `watched` on: one
    /// page from where that one was last seen (Livy lists its batches
    /// oldest first and keeps many finished ones), from the start again
    /// when it moved before that (Livy dropped older batches).
    async fn livy_batches(&self, url: &str, watched: &[&JobRef]) -> Result<Vec<Batch>, CallError> {
        let livy = Livy {
            gateway: &self.gateway,
            url,
        };
        let ids: Vec<i64> = watched
            .iter()
            .filter_map(|j| j.id.as_deref()?.parse().ok())
            .collect();
        let all_seen = |seen: &[Batch]| ids.iter().all(|id| seen.iter().any(|b| b.id == *id));
        let oldest = ids.iter().min().copied();
        let hint = *self
            .livy_from
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (mut start, mut batches) = livy.list_from(hint, all_seen).await?;
        let moved = match (oldest, batches.first()) {
            (Some(oldest), Some(first)) => first.id > oldest,
            (_, None) => hint > 0,
            _ => false,
        };
        if hint > 0 && moved {
            (start, batches) = livy.list_from(0, all_seen).await?;
        }
        if let Some(at) = oldest.and_then(|o| batches.iter().position(|b| b.id == o)) {
            *self
                .livy_from
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = start + at as i64;
        }
        Ok(batches)
    }
}

#[async_trait]
impl JobSource for AzureJobs {
    type Id = JobRef;
    type Status = Status;
    type Error = CallError;

    async fn statuses(&self, ids: &[JobRef]) -> Result<Vec<(JobRef, Status)>, CallError> {
        let mut answer = Vec::with_capacity(ids.len());
        let livy: Vec<&JobRef> = ids.iter().filter(|j| j.api == Api::Livy).collect();
        if let Some(first) = livy.first() {
            let batches = self.livy_batches(&first.url, &livy).await?;
            for job in &livy {
                if let Some(batch) = batches
                    .iter()
                    .find(|b| Some(b.id.to_string()) == job.id && job.url == first.url)
                {
                    answer.push(((*job).clone(), Status::Livy(batch.clone())));
                }
            }
        }
        let webhcat: Vec<&JobRef> = ids.iter().filter(|j| j.api == Api::WebHcat).collect();
        if let Some(first) = webhcat.first() {
            // Only the jobs since the oldest one watched (the ids are known:
            // `resolve` found each before its wait).
            let oldest = webhcat.iter().filter_map(|j| j.id.as_deref()).min();
            let jobs = WebHcat {
                gateway: &self.gateway,
                url: &first.url,
                user: &self.user,
            }
            .list_after(oldest.and_then(id_before).as_deref())
            .await?;
            for job in &webhcat {
                if let Some(found) = jobs
                    .iter()
                    .find(|j| Some(&j.id) == job.id.as_ref() && job.url == first.url)
                {
                    answer.push(((*job).clone(), Status::WebHcat(found.clone())));
                }
            }
        }
        Ok(answer)
    }

    fn phase(&self, status: &Status) -> Phase {
        match status {
            Status::Livy(batch) => BATCH_STATES.phase(&batch.state).unwrap_or_else(|| {
                tracing::warn!(
                    batch = batch.id,
                    "unknown Livy batch state {}; still waiting",
                    batch.state
                );
                Phase::Running
            }),
            Status::WebHcat(job) => webhcat_phase(job),
        }
    }

    fn checks_cluster(&self) -> bool {
        self.watch.is_some()
    }

    async fn cluster_ended(&self) -> Result<Option<String>, CallError> {
        match &self.watch {
            Some((watch, gateway)) => watch.ended(gateway).await.map_err(CallError::Transport),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhcat(state: &str, exit: Option<i64>, completed: Option<&str>) -> WebHcatJob {
        WebHcatJob {
            id: "job_1_0001".into(),
            status: crate::webhcat::JobState {
                state: state.into(),
                failure_info: None,
            },
            exit_value: exit,
            completed: completed.map(String::from),
            userargs: Default::default(),
        }
    }

    #[test]
    fn webhcat_success_needs_exit_value_zero() {
        assert_eq!(
            webhcat_phase(&webhcat("SUCCEEDED", Some(0), Some("done"))),
            Phase::Finished(Outcome::Succeeded)
        );
        assert_eq!(
            webhcat_phase(&webhcat("SUCCEEDED", Some(6), Some("done"))),
            Phase::Finished(Outcome::Failed)
        );
        assert_eq!(
            webhcat_phase(&webhcat("SUCCEEDED", None, None)),
            Phase::Running
        );
        assert_eq!(
            webhcat_phase(&webhcat("RUNNING", None, None)),
            Phase::Running
        );
        assert_eq!(
            webhcat_phase(&webhcat("KILLED", None, None)),
            Phase::Finished(Outcome::Cancelled)
        );
    }

    #[test]
    fn livy_states_by_meaning() {
        assert_eq!(
            BATCH_STATES.phase("success"),
            Some(Phase::Finished(Outcome::Succeeded))
        );
        assert_eq!(
            BATCH_STATES.phase("dead"),
            Some(Phase::Finished(Outcome::Failed))
        );
        assert_eq!(
            BATCH_STATES.phase("killed"),
            Some(Phase::Finished(Outcome::Cancelled))
        );
        assert_eq!(BATCH_STATES.phase("starting"), Some(Phase::Running));
    }

    #[test]
    fn files_without_a_scheme_are_in_the_default_container() {
        let root = Some("wasbs://code@acct.blob.core.windows.net");
        assert_eq!(
            resolve_uri("jobs/./x.py", root).unwrap(),
            "wasbs://code@acct.blob.core.windows.net/jobs/x.py"
        );
        assert_eq!(
            resolve_uri("abfss://c@a.dfs.core.windows.net/x.jar", None).unwrap(),
            "abfss://c@a.dfs.core.windows.net/x.jar"
        );
        assert!(resolve_uri("x.py", None).unwrap_err().contains("no scheme"));
        assert!(resolve_uri("../x.py", root).is_err());
    }
}
