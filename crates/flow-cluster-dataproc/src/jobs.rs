//! Jobs on Dataproc: the durable handle, the `jobs.submit` body built from
//! a flow [`Job`], and the poller's [`JobSource`] (one request per tick for
//! all the watched jobs of a cluster, two when some of them ended).

use crate::api::{Api, JobInfo, Location};
use crate::config::DataprocConfig;
use crate::error::ApiError;
use async_trait::async_trait;
use flow_cloud::cluster::{answer_with, Unlisted};
use flow_cloud::job::{job_file, safe_chars, unique_name};
use flow_cloud::{HandleIds, JobSource, Phase, StateTable};
use flow_core::{ClusterError, Job, JobContext, JobHandle};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// The backend kind in handles and records.
pub const KIND: &str = "dataproc";

/// Dataproc's job states by meaning. `ATTEMPT_FAILURE` is a failed attempt
/// of a restartable job that Dataproc may still retry: not the end.
pub const JOB_STATES: StateTable = StateTable {
    running: &[
        "STATE_UNSPECIFIED",
        "PENDING",
        "SETUP_DONE",
        "RUNNING",
        "CANCEL_PENDING",
        "CANCEL_STARTED",
        "ATTEMPT_FAILURE",
    ],
    succeeded: &["DONE"],
    failed: &["ERROR"],
    cancelled: &["CANCELLED"],
};

/// The ids a Dataproc job handle holds.
pub(crate) mod ids {
    pub const PROJECT: &str = "project";
    pub const REGION: &str = "region";
    /// The Dataproc cluster's name (the handle's `cluster` is the run's).
    pub const CLUSTER: &str = "cluster_name";
    pub const JOB_ID: &str = "job_id";
    pub const REQUEST_ID: &str = "request_id";
    /// `spark`, `pig` or `hadoop`, for messages.
    pub const TYPE: &str = "type";
}

/// A job on Dataproc, as the poller knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct JobRef {
    pub location: Location,
    /// The Dataproc cluster it runs on.
    pub cluster: String,
    pub job_id: String,
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.job_id)
    }
}

impl JobRef {
    /// Reads a handle; `cluster` names the run's cluster in errors.
    pub fn from_handle(handle: &JobHandle, cluster: &str) -> Result<JobRef, ClusterError> {
        let ids = HandleIds::read(handle, KIND, cluster)?;
        Ok(JobRef {
            location: Location {
                project: ids.required(ids::PROJECT)?,
                region: ids.required(ids::REGION)?,
            },
            cluster: ids.required(ids::CLUSTER)?,
            job_id: ids.required(ids::JOB_ID)?,
        })
    }
}

/// The job's type as recorded in its handle (`spark`, `pig`, `hadoop`).
pub(crate) fn job_type(handle: &JobHandle) -> &'static str {
    flow_cloud::job::job_type(handle, ids::TYPE, &["spark", "pig", "hadoop"])
}

/// `text` as a Dataproc cluster name allows it: lowercase letters, digits
/// and `-`.
pub(crate) fn cluster_name_text(text: &str) -> String {
    safe_chars(&text.to_ascii_lowercase()).replace('_', "-")
}

/// A client-chosen job id, unique per attempt:
/// `FLOW-STEP-ACTION-ATTEMPT-RANDOM`, at most 100 characters.
pub(crate) fn new_job_id(cx: &JobContext<'_>) -> String {
    let text = format!(
        "{}-{}-{}-{}",
        cx.execution.flow_name, cx.step, cx.action, cx.attempt
    );
    unique_name(&text, &format!("{:08x}", fastrand::u32(..)), 100)
}

/// A `requestId`: 32 hex digits (the API allows up to 40 of `[a-zA-Z0-9_-]`).
pub(crate) fn new_request_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// A Dataproc label value (lowercase, at most 63 characters).
pub(crate) fn label_value(text: &str) -> String {
    flow_cloud::fit_name(&safe_chars(&text.to_ascii_lowercase()), 63)
}

/// Where a job file is: as written when it has a scheme (`gs://`,
/// `file://`, `hdfs://`), else `gs://CODE_BUCKET/PATH`.
pub(crate) fn resolve_uri(path: &str, code_bucket: Option<&str>) -> Result<String, String> {
    if path.starts_with("file:") {
        return Ok(path.to_string());
    }
    let root = code_bucket.map(|bucket| format!("gs://{bucket}"));
    job_file(path, root.as_deref(), || {
        format!(
        "{path:?} has no scheme and no code_bucket is configured: write gs://BUCKET/{path} or set code_bucket in [cluster.dataproc]"
    )
    })
}

fn properties(conf: &[(String, String)]) -> Value {
    Value::Object(
        conf.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// Dataproc has no private channel for job properties or script
/// variables: whoever may view the job (`jobs.get`, the console) reads them.
/// So a secret there is refused, naming only the keys.
fn refuse_secrets(field: &str, secrets: &[(String, flow_core::Secret)]) -> Result<(), String> {
    if secrets.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = secrets.iter().map(|(k, _)| k.as_str()).collect();
    Err(format!(
        "{field} {keys:?} hold secrets, and Dataproc shows a job's properties and script variables to anyone who can view the job: have the job read them from Secret Manager instead"
    ))
}

/// The job's type and its part of the `Job` resource (`pysparkJob`,
/// `sparkJob`, `pigJob`, `hadoopJob`). A shell job is
/// [`ClusterError::Unsupported`]; a file that cannot be resolved is a
/// message.
pub(crate) fn job_payload(
    job: &Job,
    config: &DataprocConfig,
) -> Result<(&'static str, Map<String, Value>), String> {
    let code = config.code_bucket.as_deref();
    let mut payload = Map::new();
    let kind = match job {
        Job::Shell { .. } => return Err("shell".into()),
        Job::Spark {
            application,
            main_class,
            conf,
            secret_conf,
            args,
        } => {
            refuse_secrets("conf", secret_conf)?;
            let uri = resolve_uri(application, code)?;
            if application.ends_with(".py") {
                if main_class.is_some() {
                    return Err(format!(
                        "main_class is for JVM applications; {application} is a Python file"
                    ));
                }
                payload.insert(
                    "pysparkJob".into(),
                    json!({ "mainPythonFileUri": uri, "args": args, "properties": properties(conf) }),
                );
            } else {
                let body = match main_class {
                    Some(class) => json!({
                        "mainClass": class, "jarFileUris": [uri], "args": args,
                        "properties": properties(conf),
                    }),
                    None => {
                        json!({ "mainJarFileUri": uri, "args": args, "properties": properties(conf) })
                    }
                };
                payload.insert("sparkJob".into(), body);
            }
            "spark"
        }
        Job::Pig {
            script,
            params,
            secret_params,
        } => {
            refuse_secrets("params", secret_params)?;
            let jars = config
                .pig_jar_uris
                .iter()
                .map(|jar| resolve_uri(jar, code))
                .collect::<Result<Vec<_>, _>>()?;
            payload.insert(
                "pigJob".into(),
                json!({
                    "queryFileUri": resolve_uri(script, code)?,
                    "scriptVariables": properties(params),
                    "jarFileUris": jars,
                }),
            );
            "pig"
        }
        Job::HadoopJar {
            jar,
            main_class,
            args,
        } => {
            let uri = resolve_uri(jar, code)?;
            let body = match main_class {
                Some(class) => json!({ "mainClass": class, "jarFileUris": [uri], "args": args }),
                None => json!({ "mainJarFileUri": uri, "args": args }),
            };
            payload.insert("hadoopJob".into(), body);
            "hadoop"
        }
    };
    Ok((kind, payload))
}

/// The whole `Job` resource for `jobs.submit`.
pub(crate) fn job_resource(
    job: &JobRef,
    payload: Map<String, Value>,
    labels: &BTreeMap<String, String>,
) -> Value {
    let mut resource = payload;
    resource.insert(
        "reference".into(),
        json!({ "projectId": job.location.project, "jobId": job.job_id }),
    );
    resource.insert("placement".into(), json!({ "clusterName": job.cluster }));
    resource.insert("labels".into(), json!(labels));
    Value::Object(resource)
}

/// The poller's view of Dataproc: one request per tick for all the watched
/// jobs of a cluster, two in a tick in which some of them ended.
///
/// - One job watched: `jobs.get` (the whole answer, details included).
/// - Several: one `jobs.list` of the cluster's `ACTIVE` jobs. When watched
///   jobs are missing from it (they ended, or are on another cluster), one
///   `jobs.list` of the cluster's finished jobs (`filter = status.state =
///   NON_ACTIVE`, newest first, whose entries carry their final status)
///   right after it, in the same tick, confirms all of them at once: jobs
///   ending together are noticed together, at the first tick after their
///   end, for one request more per tick in which jobs end. A job neither
///   listing shows (another cluster, or gone) is read with `jobs.get`, one
///   per tick, in place of the listings. Until confirmed a job counts as
///   running.
pub(crate) struct DataprocJobs {
    api: Arc<Api>,
    queues: Mutex<Queues>,
}

#[derive(Default)]
struct Queues {
    /// Jobs no listing showed, to be read one per tick.
    to_get: Unlisted<JobRef>,
    /// The cluster the last request's jobs run on, for the cluster check.
    cluster: Option<(Location, String)>,
}

impl DataprocJobs {
    pub fn new(api: Arc<Api>) -> Self {
        DataprocJobs {
            api,
            queues: Mutex::new(Queues::default()),
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A status that says nothing yet (counts as running, logs nothing).
fn not_yet_known(id: &JobRef) -> JobInfo {
    let mut info = JobInfo::default();
    info.reference.job_id = id.job_id.clone();
    info
}

#[async_trait]
impl JobSource for DataprocJobs {
    type Id = JobRef;
    type Status = JobInfo;
    type Error = ApiError;

    async fn statuses(&self, ids: &[JobRef]) -> Result<Vec<(JobRef, JobInfo)>, ApiError> {
        let get = |id: JobRef| async move {
            let job = self.api.get_job(&id.location, &id.job_id).await?;
            Ok::<_, ApiError>(job.map(|job| (id, job)))
        };
        self.queues().cluster = ids
            .first()
            .map(|id| (id.location.clone(), id.cluster.clone()));
        let read = self.queues().to_get.read(ids);
        if let Some(answer) = read.by_id(ids, get, not_yet_known).await? {
            return Ok(answer);
        }
        // One listing of the first one's cluster; the others (another
        // cluster) go to `jobs.get`.
        let first = &ids[0];
        let here = |id: &JobRef| id.location == first.location && id.cluster == first.cluster;
        let active = self
            .api
            .list_active_jobs(&first.location, &first.cluster)
            .await?;
        let mut found = Vec::with_capacity(ids.len());
        let mut unlisted = Vec::new();
        let mut elsewhere = Vec::new();
        for id in ids {
            if !here(id) {
                elsewhere.push(id.clone());
                continue;
            }
            match active.iter().find(|job| job.reference.job_id == id.job_id) {
                Some(job) => found.push((id.clone(), job.clone())),
                None => unlisted.push(id.clone()),
            }
        }
        let mut finished = Vec::new();
        if !unlisted.is_empty() {
            // Failing, the tick fails: the next one lists both again.
            let wanted: Vec<&str> = unlisted.iter().map(|id| id.job_id.as_str()).collect();
            finished = self
                .api
                .list_finished_jobs(&first.location, &first.cluster, &wanted)
                .await?;
        }
        let mut queues = self.queues();
        for id in unlisted {
            match finished
                .iter()
                .find(|job| job.reference.job_id == id.job_id)
            {
                Some(job) => found.push((id, job.clone())),
                None => queues.to_get.push(id),
            }
        }
        for id in elsewhere {
            queues.to_get.push(id);
        }
        Ok(answer_with(ids, found, not_yet_known))
    }

    fn phase(&self, status: &JobInfo) -> Phase {
        let state = status.state();
        if state.is_empty() {
            return Phase::Running;
        }
        JOB_STATES.phase(state).unwrap_or_else(|| {
            tracing::warn!(
                job = status.reference.job_id.as_str(),
                "unknown Dataproc job state {state}; still waiting"
            );
            Phase::Running
        })
    }

    fn checks_cluster(&self) -> bool {
        true
    }

    /// One `clusters.get` of the cluster the last request's jobs run on:
    /// ended when DELETING, ERROR, STOPPING or STOPPED, or gone.
    async fn cluster_ended(&self) -> Result<Option<String>, ApiError> {
        let Some((location, cluster)) = self.queues().cluster.clone() else {
            return Ok(None);
        };
        Ok(match self.api.get_cluster(&location, &cluster).await? {
            None => Some(format!("{cluster} is gone")),
            Some(info) => match info.state() {
                state @ ("DELETING" | "ERROR" | "ERROR_DUE_TO_UPDATE" | "STOPPING" | "STOPPED") => {
                    Some(format!("{cluster} is {state}: {}", info.detail()))
                }
                _ => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DataprocConfig {
        DataprocConfig {
            project: "p".into(),
            region: "r".into(),
            code_bucket: Some("code".into()),
            pig_jar_uris: vec!["udf/piggybank.jar".into()],
            ..DataprocConfig::default()
        }
    }

    #[test]
    fn job_files_without_a_scheme_resolve_against_the_code_bucket() {
        assert_eq!(
            resolve_uri("jobs/x.py", Some("code")).unwrap(),
            "gs://code/jobs/x.py"
        );
        assert_eq!(
            resolve_uri("/jobs//a/../x.py", Some("code")).unwrap(),
            "gs://code/jobs/x.py"
        );
        assert_eq!(
            resolve_uri("gs://other/x.py", None).unwrap(),
            "gs://other/x.py"
        );
        assert_eq!(
            resolve_uri(
                "file:///usr/lib/spark/examples/jars/spark-examples.jar",
                None
            )
            .unwrap(),
            "file:///usr/lib/spark/examples/jars/spark-examples.jar"
        );
        assert!(resolve_uri("jobs/x.py", None)
            .unwrap_err()
            .contains("code_bucket"));
        assert!(resolve_uri("../x.py", Some("code")).is_err());
    }

    #[test]
    fn each_job_kind_has_its_body() {
        let c = config();
        let spark = |application: &str, main_class: Option<&str>| Job::Spark {
            application: application.into(),
            main_class: main_class.map(String::from),
            conf: vec![("spark.executor.memory".into(), "4g".into())],
            secret_conf: vec![],
            args: vec!["--day".into(), "2026112800".into()],
        };
        let (kind, body) = job_payload(&spark("jobs/wc.py", None), &c).unwrap();
        assert_eq!(kind, "spark");
        assert_eq!(
            Value::Object(body),
            json!({"pysparkJob": {
                "mainPythonFileUri": "gs://code/jobs/wc.py",
                "args": ["--day", "2026112800"],
                "properties": {"spark.executor.memory": "4g"},
            }})
        );
        let (_, body) = job_payload(&spark("lib/app.jar", Some("com.x.Main")), &c).unwrap();
        assert_eq!(body["sparkJob"]["mainClass"], "com.x.Main");
        assert_eq!(
            body["sparkJob"]["jarFileUris"],
            json!(["gs://code/lib/app.jar"])
        );
        let (_, body) = job_payload(&spark("lib/app.jar", None), &c).unwrap();
        assert_eq!(body["sparkJob"]["mainJarFileUri"], "gs://code/lib/app.jar");
        assert!(job_payload(&spark("x.py", Some("Main")), &c).is_err());

        let pig = Job::Pig {
            script: "pig/report.pig".into(),
            params: vec![("day".into(), "2026112800".into())],
            secret_params: vec![],
        };
        let (kind, body) = job_payload(&pig, &c).unwrap();
        assert_eq!(kind, "pig");
        assert_eq!(
            Value::Object(body),
            json!({"pigJob": {
                "queryFileUri": "gs://code/pig/report.pig",
                "scriptVariables": {"day": "2026112800"},
                "jarFileUris": ["gs://code/udf/piggybank.jar"],
            }})
        );
        let hadoop = Job::HadoopJar {
            jar: "gs://jars/wc.jar".into(),
            main_class: None,
            args: vec!["in".into()],
        };
        let (kind, body) = job_payload(&hadoop, &c).unwrap();
        assert_eq!(kind, "hadoop");
        assert_eq!(
            body["hadoopJob"],
            json!({"mainJarFileUri": "gs://jars/wc.jar", "args": ["in"]})
        );
        let shell = Job::Shell {
            command: "ls".into(),
            env: vec![],
        };
        assert_eq!(job_payload(&shell, &c).unwrap_err(), "shell");
        let secret = Job::Pig {
            script: "pig/report.pig".into(),
            params: vec![],
            secret_params: vec![("token".into(), flow_core::Secret::new("hunter2"))],
        };
        let e = job_payload(&secret, &c).unwrap_err();
        assert!(
            e.contains("\"token\"") && e.contains("Secret Manager"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn attempt_failure_is_not_the_end() {
        assert_eq!(JOB_STATES.phase("ATTEMPT_FAILURE"), Some(Phase::Running));
        assert!(JOB_STATES.is_terminal("ERROR"));
        assert!(!JOB_STATES.is_terminal("CANCEL_STARTED"));
    }
}
