//! The local execution cluster: jobs run as processes on this machine and
//! files live on the local filesystem.
//!
//! It is what `flow run` uses by default, what the engine's tests run on, and
//! the way to try a flow before it meets a real cluster.
//!
//! - [`LocalCluster`] runs each [`Job`](flow_core::Job) as a child process in
//!   its own process group: `sh -c` for shell jobs, `spark-submit`, `pig` and
//!   `hadoop jar` for the others, with their arguments passed as an argument
//!   vector (never through a shell). Secret values never enter that
//!   vector: a job gets them as environment variables
//!   ([`Job::secret_env`](flow_core::Job::secret_env)) or as a file only its
//!   owner can read in its job directory, passed by path and removed once
//!   the job has ended ([`Job::secret_file`](flow_core::Job::secret_file)).
//!   Jobs outlive the engine: each runs under
//!   a small wrapper in a job directory under [`LocalOptions::state_dir`]
//!   that records its pid (with its start time and the boot id, so a reused
//!   pid is never mistaken for it), its output and its exit status, so
//!   another engine can adopt a running job or learn how a finished one
//!   ended. The job's stdout and stderr become `tracing` events in the
//!   caller's span (INFO and WARN), so the engine routes them to the step's
//!   log. Cancelling a job stops its whole process group (SIGTERM, then
//!   SIGKILL after [`LocalOptions::kill_grace`]); dropping the wait only
//!   stops watching; `terminate` kills whatever of the cluster still runs,
//!   and [`kill_all_jobs`] kills every job of the process at once.
//! - [`LocalFilesystem`] maps `/`-separated keys to paths under
//!   [`LocalOptions::root`]: relative keys below it, absolute keys only when
//!   they lie inside it (a root of `/` allows any path). Keys that climb out
//!   of the root or name the root itself are refused.
//!
//! What it is not: a sandbox or a scheduler. Jobs run as the current user
//! with the engine's environment (plus [`LocalOptions::env`]), as many at a
//! time as the engine submits, with no resource limits. The root confines
//! filesystem keys lexically, not jobs (and a symbolic link inside the root
//! is followed). It is Unix only. Spark, Pig and Hadoop must be
//! installed separately; this crate only builds their command lines.
#![warn(missing_docs)]

#[cfg(not(unix))]
compile_error!("flow-cluster-local runs jobs as Unix process groups and needs a Unix system");

mod cluster;
mod command;
mod filesystem;
mod output;
mod process;

mod jobdir;

pub use cluster::LocalCluster;
pub use filesystem::LocalFilesystem;
pub use process::kill_all_jobs;

use flow_core::{Cluster, ClusterError, ClusterFactory, ExecutionContext};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How local clusters run their jobs and where their files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOptions {
    /// Where filesystem keys resolve, and the boundary they may not leave
    /// (`/` allows any absolute path). Default: the current directory.
    pub root: PathBuf,
    /// Where cluster and job directories live (job pids, output and exit
    /// statuses, kept so a job outlives the engine). Default:
    /// `$TMPDIR/flow-local-UID`; `flow` uses `DATA_DIR/local`.
    pub state_dir: PathBuf,
    /// The working directory of job processes. Default: the current directory.
    pub work_dir: PathBuf,
    /// The `spark-submit` to run. Default: the one found on `PATH`.
    pub spark_submit: Option<PathBuf>,
    /// The `pig` to run. Default: the one found on `PATH`.
    pub pig: Option<PathBuf>,
    /// The `hadoop` to run. Default: the one found on `PATH`.
    pub hadoop: Option<PathBuf>,
    /// Extra environment variables for job processes, on top of the engine's.
    /// A `PATH` here is also where `spark-submit`, `pig` and `hadoop` are
    /// looked up.
    pub env: Vec<(String, String)>,
    /// Variables of the engine's environment that jobs must not see: where
    /// secrets come from (`flow` lists the `env:` sources of `[secrets]`,
    /// of the `[serve] token` and of the store URI). Jobs never inherit
    /// the engine's own `FLOW_SECRET_*` either: a job gets exactly the
    /// `FLOW_SECRET_*` its command refers to ([`flow_core::Job::secret_env`]).
    pub scrub_env: Vec<String>,
    /// How long a cancelled job's process group gets between SIGTERM and
    /// SIGKILL. Default: 5 s. Also how long the job's output is still read
    /// after it ended, when a process that left its group holds it open.
    pub kill_grace: Duration,
    /// Jobs a cluster runs at once (`[cluster] jobs_per_cluster`): the
    /// engine gives each local cluster this many steps at a time. Default 1.
    pub jobs_per_cluster: NonZeroUsize,
}

impl Default for LocalOptions {
    fn default() -> Self {
        // Resolved once, so a later chdir of the engine does not move jobs.
        let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        LocalOptions {
            root: here.clone(),
            state_dir: std::env::temp_dir().join(format!("flow-local-{uid}")),
            work_dir: here,
            spark_submit: None,
            pig: None,
            hadoop: None,
            env: Vec::new(),
            scrub_env: Vec::new(),
            kill_grace: Duration::from_secs(5),
            jobs_per_cluster: NonZeroUsize::MIN,
        }
    }
}

/// Makes [`LocalCluster`]s (kind `local`) that share one set of options.
#[derive(Debug, Clone)]
pub struct LocalClusterFactory {
    options: Arc<LocalOptions>,
}

impl LocalClusterFactory {
    /// A factory of local clusters sharing `options`.
    pub fn new(options: LocalOptions) -> Self {
        LocalClusterFactory {
            options: Arc::new(options),
        }
    }

    /// The options every cluster it makes gets.
    pub fn options(&self) -> &LocalOptions {
        &self.options
    }
}

impl ClusterFactory for LocalClusterFactory {
    fn kind(&self) -> &'static str {
        cluster::KIND
    }

    fn create(
        &self,
        name: &str,
        _context: &ExecutionContext,
    ) -> Result<Arc<dyn Cluster>, ClusterError> {
        Ok(Arc::new(LocalCluster::with_shared_options(
            name,
            self.options.clone(),
        )))
    }
}

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
