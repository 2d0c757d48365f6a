//! The Google Cloud Dataproc cluster: flow's [`Cluster`](flow_core::Cluster)
//! on Dataproc through its REST v1 API (reqwest, rustls on ring), with the
//! GCS filesystem of `flow-fs-gcs` as its filesystem.
//!
//! - **Launch**: `clusters.get` by name; a cluster that exists and is
//!   `RUNNING` (or on its way there) is reused and left up at the end
//!   (unless [`DataprocConfig::terminate_reused`]); otherwise `clusters.create`
//!   with the zone, machine types and counts, image version, initialization
//!   actions, labels and idle-delete TTL of the settings. `provision` returns
//!   as soon as Dataproc has the cluster (the engine records it);
//!   `wait_ready` waits on the long-running operation and then for
//!   `RUNNING`. A failed operation or `ERROR` is a launch failure carrying
//!   Dataproc's message. The clusters of one run are `NAME-0`, `NAME-1`, ...
//! - **Jobs**: Spark applications ending in `.py` become `pysparkJob`s,
//!   other Spark applications `sparkJob`s (a main class with the jar, or
//!   the jar's own main), Pig scripts `pigJob`s (`queryFileUri`,
//!   `scriptVariables`, [`DataprocConfig::pig_jar_uris`]), Hadoop jars
//!   `hadoopJob`s. Paths without a scheme are `gs://CODE_BUCKET/PATH`. Shell
//!   jobs are [`Unsupported`](flow_core::ClusterError::Unsupported): Dataproc
//!   has no shell job type, and running a command through Pig's `sh` would
//!   run it on the master with none of a shell's quoting guarantees.
//! - **Handles**: `prepare` chooses the job id (`reference.jobId`) and a
//!   `requestId` before anything is sent, and the engine stores them: a
//!   retried submission (same request id) never makes a second job, and a
//!   job that was never submitted answers `NotSubmitted`. Any engine can ask
//!   about, wait for or cancel a job from its handle alone.
//! - **Waiting**: `flow_cloud`'s poller, one request per tick per cluster
//!   whatever the number of jobs (`jobs.get` for one, one `jobs.list` of the
//!   cluster's active jobs for several; the jobs gone from it are all
//!   confirmed on the next tick by one `jobs.list` of its finished jobs),
//!   floor 1 s, backoff to a 3 s cap for long jobs, overall timeouts. Every
//!   request is bounded by `connect_timeout` and `request_timeout`. `DONE` is success; `ERROR` and `CANCELLED`
//!   end the job (`ATTEMPT_FAILURE` does not: Dataproc may still retry it);
//!   the driver output's tail (`driverOutputResourceUri`) goes to the step
//!   log and, for a failure, its last lines into the error with
//!   `status.details`.
//! - **Cancel**: `jobs.cancel`, then waits for the job to end. **Terminate**:
//!   `clusters.delete` for clusters the run created (or adopted from a run
//!   that created them), waiting on the operation.
//! - Every call is retried on 429, 5xx and connection errors with
//!   `flow_cloud`'s policy, honouring `Retry-After`. Credentials: a
//!   service-account key file or Application Default Credentials through
//!   `gcp_auth` (tokens cached and refreshed by it); an
//!   [`endpoint`](DataprocConfig::endpoint) (a fake) gets none. Keys and
//!   tokens never reach a log, an error or `Debug`.
//!
//! What it is not: a general Dataproc client (no autoscaling policies,
//! workflow templates, batches or Hive/SparkSQL/Presto jobs), and it does not
//! upload job files: they must already be in GCS.
#![warn(missing_docs)]

mod api;
mod cluster;
mod config;
mod driver;
mod error;
mod jobs;

pub use api::{JobInfo, JobPlacement, JobReference, JobStatusInfo};
pub use cluster::{DataprocCluster, DataprocClusterFactory};
pub use config::{
    deserialize_validated, DataprocClusterFactoryBuilder, DataprocConfig, InstanceGroup,
};
pub use error::DataprocError;
pub use jobs::{JOB_STATES, KIND};

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
