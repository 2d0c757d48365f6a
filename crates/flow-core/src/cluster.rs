//! Execution clusters and the jobs they run.

use crate::context::ExecutionContext;
use crate::filesystem::{Filesystem, FsError};
use async_trait::async_trait;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A job handed to a cluster. One entry point over an enum keeps every
/// cluster's surface small; a cluster returns [`ClusterError::Unsupported`]
/// for a kind it cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// A line for `sh -c`. Its substituted values were validated first.
    Shell { command: String },
    /// `spark-submit [--class C] [--conf k=v]... APPLICATION ARGS...`
    Spark {
        application: String,
        main_class: Option<String>,
        conf: Vec<(String, String)>,
        args: Vec<String>,
    },
    /// `pig [-param k=v]... -f SCRIPT`
    Pig {
        script: String,
        params: Vec<(String, String)>,
    },
    /// `hadoop jar JAR [MAIN_CLASS] ARGS...`
    HadoopJar {
        jar: String,
        main_class: Option<String>,
        args: Vec<String>,
    },
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
}

/// What a job needs from its caller besides the job itself.
pub struct JobContext<'a> {
    /// Fires when the job must stop (cancellation or timeout). The cluster
    /// stops the job on its side before returning [`ClusterError::Cancelled`].
    pub cancel: &'a CancellationToken,
    /// The run's context, e.g. to redact secrets from logged command lines.
    pub execution: &'a ExecutionContext,
}

/// A cluster failure, naming the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster '{cluster}' failed to launch: {message}")]
    Launch {
        cluster: String,
        message: String,
        /// A transient failure is worth retrying.
        transient: bool,
    },
    #[error("cluster '{cluster}' ({kind}) cannot run {job} jobs")]
    Unsupported {
        cluster: String,
        kind: &'static str,
        job: &'static str,
    },
    #[error("{job} job on cluster '{cluster}' failed: {message}")]
    JobFailed {
        cluster: String,
        job: &'static str,
        message: String,
    },
    #[error("{job} job on cluster '{cluster}' was cancelled")]
    Cancelled { cluster: String, job: &'static str },
    #[error("cluster '{cluster}' failed to terminate: {message}")]
    Terminate { cluster: String, message: String },
    #[error(transparent)]
    Filesystem(#[from] FsError),
}

/// A place where jobs run: processes on this machine, an EMR cluster, ...
#[async_trait]
pub trait Cluster: Send + Sync {
    /// This cluster's name within the run, e.g. `local-0`.
    fn name(&self) -> &str;

    /// The backend, e.g. `local` or `emr`.
    fn kind(&self) -> &'static str;

    /// Brings the cluster up. Called once before any job.
    async fn launch(&self) -> Result<(), ClusterError>;

    /// Runs `job` to completion. Honours `cx.cancel`.
    async fn submit(&self, job: &Job, cx: &JobContext<'_>) -> Result<(), ClusterError>;

    /// Shuts the cluster down. Called once at the end of every run, whatever
    /// happened; must be safe after a failed or partial launch.
    async fn terminate(&self) -> Result<(), ClusterError>;

    /// The storage this cluster reads and writes.
    fn filesystem(&self) -> &dyn Filesystem;
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
