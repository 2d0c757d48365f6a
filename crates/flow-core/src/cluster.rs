//! Execution clusters and the jobs they run.
//!
//! A job outlives the engine that started it: submitting yields a
//! [`JobHandle`], plain data that the engine stores before it waits, and any
//! later engine can ask the cluster about that handle ([`Cluster::status`]),
//! wait for it or cancel it. Clusters work the same way: [`Cluster::provision`]
//! returns a [`ClusterHandle`] that is recorded before the cluster is waited
//! for, so a crash never leaks one.
//!
//! The order of calls for a job, and why:
//!
//! 1. [`Cluster::prepare`] names the job before it exists (a job directory,
//!    a client-chosen job id, a step name). The engine stores that handle.
//! 2. [`Cluster::submit`] hands the job over and returns the handle, completed
//!    with ids only the backend knows (the engine stores it again if it
//!    changed). A crash between 1 and 2 leaves a handle whose status is
//!    [`JobStatus::NotSubmitted`], so the next engine submits it then, once.
//! 3. [`Cluster::wait`] follows it to its end, cancelling it on the backend
//!    when the token fires. Dropping the wait future only stops watching:
//!    the job goes on, as it would if the engine had died.

use crate::context::{ExecutionContext, Secret};
use crate::filesystem::{Filesystem, FsError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A job handed to a cluster. One entry point over an enum keeps every
/// cluster's surface small; a cluster returns [`ClusterError::Unsupported`]
/// for a kind it cannot run.
///
/// Secret values never go into a job's argument vector, which every user of
/// the machine can read (`ps`): a shell line refers to them as environment
/// variables listed in `env`; Spark `conf` and Pig `params` that hold a
/// secret are kept apart (`secret_conf`, `secret_params`) for the cluster to
/// deliver privately ([`Job::secret_file`] on a local machine, the
/// backend's own secret mechanism on a cloud).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// A line for `sh -c`. Its substituted values were validated first.
    Shell {
        /// The line, with secrets as `"${FLOW_SECRET_NAME}"` references.
        command: String,
        /// Environment variables the line refers to, carrying secret values
        /// (`FLOW_SECRET_NAME`).
        env: Vec<(String, Secret)>,
    },
    /// `spark-submit [--class C] [--conf k=v]... APPLICATION ARGS...`
    Spark {
        /// The application (`.py`, `.jar`) to submit.
        application: String,
        /// `--class`, for JVM applications.
        main_class: Option<String>,
        /// `--conf k=v` entries without secrets.
        conf: Vec<(String, String)>,
        /// Conf entries whose values hold a secret.
        secret_conf: Vec<(String, Secret)>,
        /// Arguments after the application.
        args: Vec<String>,
    },
    /// `pig [-param k=v]... -f SCRIPT`
    Pig {
        /// The Pig script.
        script: String,
        /// `-param k=v` entries without secrets.
        params: Vec<(String, String)>,
        /// Params whose values hold a secret.
        secret_params: Vec<(String, Secret)>,
    },
    /// `hadoop jar JAR [MAIN_CLASS] ARGS...`
    HadoopJar {
        /// The jar to run.
        jar: String,
        /// The main class, when the jar's manifest names none.
        main_class: Option<String>,
        /// Arguments after the main class.
        args: Vec<String>,
    },
}

/// A file a job reads its secret values from: the cluster writes `contents`
/// to a file only the owner can read and passes `flag FILE` before the
/// other arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// `--properties-file` for spark-submit, `-param_file` for pig.
    pub flag: &'static str,
    /// The file's text: secret values, kept out of `Debug`.
    pub contents: Secret,
}

impl Job {
    /// The kind's name, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Shell { .. } => "shell",
            Job::Spark { .. } => "spark",
            Job::Pig { .. } => "pig",
            Job::HadoopJar { .. } => "hadoop",
        }
    }

    /// Environment variables carrying secret values, to set for the job's
    /// process (not in its arguments).
    pub fn secret_env(&self) -> &[(String, Secret)] {
        match self {
            Job::Shell { env, .. } => env,
            _ => &[],
        }
    }

    /// The secret entries of a Spark or Pig job as the file its tool reads
    /// them from: a Java properties file for `spark-submit
    /// --properties-file` (which then reads it instead of
    /// `spark-defaults.conf`), a parameter file for `pig -param_file`.
    /// `None` when the job has no secret entries.
    pub fn secret_file(&self) -> Option<SecretFile> {
        let (flag, entries, line): (_, _, fn(&str, &str) -> String) = match self {
            Job::Spark { secret_conf, .. } => ("--properties-file", secret_conf, properties_line),
            Job::Pig { secret_params, .. } => ("-param_file", secret_params, pig_param_line),
            _ => return None,
        };
        if entries.is_empty() {
            return None;
        }
        let contents: String = entries
            .iter()
            .map(|(key, value)| line(key, value.expose()))
            .collect();
        Some(SecretFile {
            flag,
            contents: Secret::new(contents),
        })
    }
}

/// `key=value\n` in Java properties syntax (what `spark-submit
/// --properties-file` reads, as UTF-8).
fn properties_line(key: &str, value: &str) -> String {
    fn escape(text: &str, is_key: bool, out: &mut String) {
        for (i, c) in text.chars().enumerate() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{c}' => out.push_str("\\f"),
                ' ' if is_key || i == 0 => out.push_str("\\ "),
                '=' | ':' | '#' | '!' if is_key => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
    }
    let mut line = String::new();
    escape(key, true, &mut line);
    line.push('=');
    escape(value, false, &mut line);
    line.push('\n');
    line
}

/// `key=value\n` for `pig -param_file`; a value is one line (a newline in
/// it would end the entry, so it is written as a space).
fn pig_param_line(key: &str, value: &str) -> String {
    format!("{key}={}\n", value.replace(['\n', '\r'], " "))
}

/// What a job needs from its caller besides the job itself.
pub struct JobContext<'a> {
    /// Fires when the job must stop (cancellation or timeout). The cluster
    /// stops the job on its side before returning [`ClusterError::Cancelled`].
    pub cancel: &'a CancellationToken,
    /// The run's context, e.g. to redact secrets from logged command lines.
    pub execution: &'a ExecutionContext,
    /// The step and action the job belongs to, and the step's attempt: for
    /// naming the job on the backend (`prepare`) and for messages.
    pub step: &'a str,
    /// The action the job belongs to.
    pub action: &'a str,
    /// The step's attempt, from 1.
    pub attempt: u32,
}

/// A cluster failure, naming the cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The cluster could not be launched or found.
    #[error("cluster '{cluster}' failed to launch: {message}")]
    Launch {
        /// The cluster's name within the run, e.g. `emr-0`.
        cluster: String,
        /// What went wrong, as the backend reported it.
        message: String,
        /// A transient failure is worth retrying.
        transient: bool,
    },
    /// The cluster cannot run this kind of job.
    #[error("cluster '{cluster}' ({kind}) cannot run {job} jobs")]
    Unsupported {
        /// The cluster's name within the run, e.g. `emr-0`.
        cluster: String,
        /// The cluster's backend kind.
        kind: &'static str,
        /// The job's kind (`shell`, `spark`, ...).
        job: &'static str,
    },
    /// The job ran and failed.
    #[error("{job} job on cluster '{cluster}' failed: {message}")]
    JobFailed {
        /// The cluster's name within the run, e.g. `emr-0`.
        cluster: String,
        /// The job's kind (`shell`, `spark`, ...).
        job: &'static str,
        /// What went wrong, as the backend reported it.
        message: String,
    },
    #[error("{job} job on cluster '{cluster}' was cancelled")]
    /// The job was cancelled (by the token or on the backend).
    Cancelled {
        /// The cluster's name within the run, e.g. `emr-0`.
        cluster: String,
        /// The job's kind (`shell`, `spark`, ...).
        job: &'static str,
    },
    /// Following a job was given up (status requests kept failing or were
    /// throttled past their retries, or the wait timed out): the job may
    /// still run, or may have ended either way. Not a failed attempt: the
    /// engine keeps its handle and submits nothing for the step; the next
    /// engine adopts the job or cancels it, as after a crash.
    #[error("{job} job on cluster '{cluster}': outcome unknown: {message}")]
    OutcomeUnknown {
        /// The cluster's name within the run, e.g. `emr-0`.
        cluster: String,
        /// The job's kind (`shell`, `spark`, ...).
        job: &'static str,
        /// Why following it was given up, as the backend reported it.
        message: String,
    },
    /// Asking the backend about a job or a cluster failed (not the job).
    #[error("cluster '{cluster}': {operation} failed: {message}")]
    Backend {
        /// The cluster's name within the run, e.g. `emr-0`.
        cluster: String,
        /// The backend call, e.g. `describe_step`.
        operation: &'static str,
        /// What went wrong, as the backend reported it.
        message: String,
    },
    /// A handle this cluster cannot read (another kind, missing ids).
    #[error("cluster '{cluster}' cannot use handle {handle}: {message}")]
    BadHandle {
        /// The cluster's name within the run, e.g. `emr-0`.
        cluster: String,
        /// The handle, as shown by its `Display`.
        handle: String,
        /// What went wrong, as the backend reported it.
        message: String,
    },
    #[error("cluster '{cluster}' failed to terminate: {message}")]
    /// Shutting the cluster down failed: it may still be up.
    Terminate {
        /// The cluster's name within the run, e.g. `emr-0`.
        cluster: String,
        /// What went wrong, as the backend reported it.
        message: String,
    },
    /// The cluster's filesystem failed.
    #[error(transparent)]
    Filesystem(#[from] FsError),
}

impl ClusterError {
    /// True when the error leaves a job's outcome unknown
    /// ([`ClusterError::OutcomeUnknown`]): its handle must be kept and the
    /// job adopted or cancelled before anything is submitted in its place.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, ClusterError::OutcomeUnknown { .. })
    }
}

/// The durable identity of a job on a backend: data, not a live object.
/// Stored in the step record; any engine can rebuild a client from the
/// settings and ask about it later.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobHandle {
    /// The backend kind, e.g. `local`, `emr`.
    pub kind: String,
    /// The run's name for the cluster the job went to, e.g. `emr-0`.
    pub cluster: String,
    /// The backend's ids, e.g. `cluster_id` and `step_id` on EMR; what they
    /// are is the backend's business.
    pub ids: BTreeMap<String, String>,
}

impl JobHandle {
    /// A handle of `kind` on `cluster` with the given ids.
    pub fn new<K: Into<String>, V: Into<String>>(
        kind: impl Into<String>,
        cluster: impl Into<String>,
        ids: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        JobHandle {
            kind: kind.into(),
            cluster: cluster.into(),
            ids: ids.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }

    /// The id called `name`, if present.
    pub fn id(&self, name: &str) -> Option<&str> {
        self.ids.get(name).map(String::as_str)
    }
}

impl fmt::Display for JobHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} job", self.kind)?;
        for (k, v) in &self.ids {
            write!(f, " {k}={v}")?;
        }
        write!(f, " on {}", self.cluster)
    }
}

/// What a backend says about a job, asked by handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// The handle was prepared but the backend never received the job (the
    /// engine died between `prepare` and `submit`): submitting it now runs
    /// it once.
    NotSubmitted,
    /// Queued or running.
    Running,
    /// Ended successfully.
    Succeeded,
    /// Ended with a failure.
    Failed {
        /// The backend's reason.
        message: String,
    },
    /// Cancelled (by an engine or on the backend).
    Cancelled,
    /// The backend cannot tell (a process gone without leaving its exit
    /// status, a pid now used by another process, a job the backend forgot).
    Lost {
        /// Why the job cannot be followed.
        reason: String,
    },
}

impl JobStatus {
    /// True once the job will not change any more.
    pub fn is_final(&self) -> bool {
        !matches!(self, JobStatus::NotSubmitted | JobStatus::Running)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobStatus::NotSubmitted => f.write_str("not submitted"),
            JobStatus::Running => f.write_str("running"),
            JobStatus::Succeeded => f.write_str("succeeded"),
            JobStatus::Failed { message } => write!(f, "failed: {message}"),
            JobStatus::Cancelled => f.write_str("cancelled"),
            JobStatus::Lost { reason } => write!(f, "lost: {reason}"),
        }
    }
}

/// The durable identity of a cluster: recorded by the run that launched or
/// reused it, so a later engine can adopt it or terminate it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterHandle {
    /// The backend kind, e.g. `emr`.
    pub kind: String,
    /// The run's name for it, e.g. `emr-0`.
    pub name: String,
    /// The backend's id for it (an EMR cluster id, a Dataproc cluster name).
    pub backend_id: String,
    /// True when the cluster existed before the run and was reused: it is
    /// left up at the end unless configured otherwise. False when the run
    /// launched it: the run (or the one that recovers it) terminates it.
    pub reused: bool,
    /// Anything else the backend needs to find it again (region, project,
    /// a state directory), and facts worth showing (master DNS name).
    pub details: BTreeMap<String, String>,
}

impl fmt::Display for ClusterHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cluster {} ({})",
            self.kind, self.name, self.backend_id
        )?;
        if self.reused {
            f.write_str(", reused")?;
        }
        Ok(())
    }
}

/// A place where jobs run: processes on this machine, an EMR cluster, ...
///
/// The engine gets clusters from a [`ClusterFactory`], `provision`s each and
/// records the [`ClusterHandle`] before `wait_ready`; for every job an
/// action submits ([`ActionContext::submit`](crate::ActionContext::submit))
/// it calls `prepare`, records the [`JobHandle`], then `submit` and `wait`;
/// `recover` asks `status` about the handles a dead run left and `wait`s
/// for (or submits) them; at the end it calls `terminate`. `flow-engine`'s
/// example `dry_run_cluster` is a complete implementation.
///
/// What an implementation must guarantee:
/// - `provision` returns as soon as the backend has named the cluster;
///   `wait_ready` then waits for it. A cluster that dies while launching is
///   a [`ClusterError::Launch`] carrying the backend's reason.
/// - `prepare`, `submit`, `wait`, `status` and `cancel` work on a handle
///   alone: a handle written by another engine (another process, another
///   host) works the same as one this value made.
/// - `wait` honours `cx.cancel` by cancelling the job on the backend before
///   it returns [`ClusterError::Cancelled`]; dropping it leaves the job
///   running.
/// - `terminate` is called once at the end of every run that used the
///   cluster, whatever happened (for a shared cluster, only by its last
///   user); it must be safe after a failed or partial launch, and ends only
///   clusters flow launched (or adopted from a run that launched them),
///   never ones reused from outside flow unless configured to.
/// - `prepare` starts nothing and derives the job's name from data the
///   handle keeps, so a job submitted twice under one handle runs once;
///   `status` says [`JobStatus::NotSubmitted`] for a handle the backend
///   never received, so a later engine submits it then.
/// - Secret values never reach a job's argument vector or a log line (see
///   [`Job`]).
#[async_trait]
pub trait Cluster: Send + Sync {
    /// This cluster's name within the run, e.g. `local-0`.
    fn name(&self) -> &str;

    /// The backend, e.g. `local` or `emr`.
    fn kind(&self) -> &'static str;

    /// Finds a cluster to reuse or asks the backend for a new one, and
    /// returns as soon as the backend knows it (before it is up).
    async fn provision(&self) -> Result<ClusterHandle, ClusterError>;

    /// Waits until the provisioned (or adopted) cluster takes jobs.
    async fn wait_ready(&self) -> Result<(), ClusterError>;

    /// Takes over a cluster recorded by an earlier run whose engine died.
    /// True when it is still usable: this value then drives it, and its
    /// `terminate` ends it unless `handle.reused`. False when it is gone.
    async fn adopt(&self, handle: &ClusterHandle) -> Result<bool, ClusterError>;

    /// Names `job` before it is submitted, so the engine can store the handle
    /// first. Must not start anything.
    fn prepare(&self, job: &Job, cx: &JobContext<'_>) -> Result<JobHandle, ClusterError>;

    /// Hands the prepared job to the backend and returns its handle with any
    /// ids the backend assigned. Returns once the backend has the job, not
    /// when it ends.
    async fn submit(
        &self,
        handle: &JobHandle,
        job: &Job,
        cx: &JobContext<'_>,
    ) -> Result<JobHandle, ClusterError>;

    /// Follows the job to its end: `Ok` when it succeeded,
    /// [`ClusterError::JobFailed`] or [`ClusterError::Cancelled`] otherwise.
    /// Honours `cx.cancel`. Also used for jobs another engine submitted.
    async fn wait(&self, handle: &JobHandle, cx: &JobContext<'_>) -> Result<(), ClusterError>;

    /// Asks the backend about the job, without waiting.
    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, ClusterError>;

    /// Stops the job on the backend (idempotent: a finished job is left as
    /// it is).
    async fn cancel(&self, handle: &JobHandle) -> Result<(), ClusterError>;

    /// Shuts the cluster down if this run launched it (or adopted it from a
    /// run that launched it). Called once at the end of every run, whatever
    /// happened; must be safe after a failed or partial launch.
    async fn terminate(&self) -> Result<(), ClusterError>;

    /// The storage this cluster reads and writes.
    fn filesystem(&self) -> &dyn Filesystem;

    /// How many jobs the cluster runs at once: the engine gives it that
    /// many steps at a time (EMR: `step_concurrency_level`; Dataproc and
    /// the local cluster: `jobs_per_cluster`). At least 1; 1 by default.
    fn slots(&self) -> usize {
        1
    }

    /// The name under which concurrent runs find and share this cluster
    /// (an EMR cluster reused by name, a Dataproc cluster name in its
    /// project and region), or `None` when each run's cluster is its own.
    /// For a shared one the engine decides in the store who launches it
    /// and who ends it ([`SharedCluster`](crate::SharedCluster)): the
    /// others [`adopt`](Cluster::adopt) the launcher's handle, and only
    /// the last user's engine calls `terminate`.
    fn shared_name(&self) -> Option<String> {
        None
    }

    /// Why the cluster ended by itself, once this value noticed (while
    /// launching, while waiting for a job, or at `terminate`): the
    /// backend's state and reason, e.g. `TERMINATED_WITH_ERRORS:
    /// BOOTSTRAP_FAILURE: ...`. The engine keeps it on the cluster's
    /// record.
    fn end_reason(&self) -> Option<String> {
        None
    }

    /// The cluster's instances, for its record's instance-hours: `None`
    /// when this backend cannot say (the record then shows them as
    /// unknown, never as zero), empty when it has none (local).
    fn instances(&self) -> Option<Vec<crate::cost::InstanceGroup>> {
        None
    }

    /// The usage the backend reports itself, once this value asked (EMR's
    /// `NormalizedInstanceHours` at `terminate`); kept on the record.
    fn normalized_instance_hours(&self) -> Option<f64> {
        None
    }
}

/// Makes clusters of one kind; the engine asks it for as many as a run needs.
pub trait ClusterFactory: Send + Sync {
    /// The backend these clusters are, e.g. `local`.
    fn kind(&self) -> &'static str;

    /// A new, not yet launched cluster called `name`.
    fn create(
        &self,
        name: &str,
        context: &ExecutionContext,
    ) -> Result<Arc<dyn Cluster>, ClusterError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_escape_their_entries() {
        let job = Job::Spark {
            application: "a.py".into(),
            main_class: None,
            conf: vec![],
            secret_conf: vec![
                ("spark.k".into(), Secret::new(" lead\\ing=x:y#z\nnext")),
                ("odd key=1".into(), Secret::new("v")),
            ],
            args: vec![],
        };
        let file = job.secret_file().unwrap();
        assert_eq!(file.flag, "--properties-file");
        assert_eq!(
            file.contents.expose(),
            "spark.k=\\ lead\\\\ing=x:y#z\\nnext\nodd\\ key\\=1=v\n"
        );
        let pig = Job::Pig {
            script: "s.pig".into(),
            params: vec![],
            secret_params: vec![("token".into(), Secret::new("a b\nc"))],
        };
        assert_eq!(
            pig.secret_file().unwrap().contents.expose(),
            "token=a b c\n"
        );
        assert_eq!(pig.secret_file().unwrap().flag, "-param_file");
        let plain = Job::Shell {
            command: "true".into(),
            env: vec![],
        };
        assert!(plain.secret_file().is_none());
    }
}
