//! The Azure HDInsight cluster: flow's [`Cluster`](flow_core::Cluster) on an
//! HDInsight cluster through its HTTPS gateway, with the Blob filesystem of
//! `flow-fs-azure` as its filesystem.
//!
//! - **Jobs**: Spark applications become Livy batches (`POST /livy/batches`
//!   with `file`, `className`, `args`, `conf` and a client-chosen `name`);
//!   Pig scripts and Hadoop jars become WebHCat jobs (`POST
//!   /templeton/v1/pig`, `/mapreduce/jar`, `user.name` on every call) with a
//!   client-chosen status directory on Blob storage. Paths without a scheme
//!   are `wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/PATH` of the Blob
//!   filesystem's container. Shell jobs are
//!   [`Unsupported`](flow_core::ClusterError::Unsupported): the gateways run
//!   none.
//! - **Handles**: `prepare` chooses the batch name (or status directory)
//!   before anything is sent and the engine stores it: a submission whose
//!   answer is lost is found by one listing and never sent twice; Livy
//!   refuses a second batch of a name anyway.
//! - **Waiting**: `flow_cloud`'s poller, one listing per tick per API for
//!   all of a cluster's jobs (`GET /livy/batches?from=&size=` from where
//!   the oldest watched batch was, `GET /templeton/v1/jobs?fields=*&jobid=`
//!   after it), shared by the run's clusters on one gateway. Livy's `success` succeeds, `dead` and
//!   `error` fail, `killed` is cancelled; a WebHCat job succeeds when its
//!   controller `SUCCEEDED` with exit value 0. The end of the batch log
//!   (Livy) or of `stderr` in the status directory (WebHCat, read from
//!   Blob) goes to the step log and a failure's error.
//! - **Cancel**: `DELETE /livy/batches/ID` or `DELETE
//!   /templeton/v1/jobs/ID`, then waits for the job to end.
//! - **Clusters**: by default the gateway names a cluster managed outside
//!   the flow: it is used as it is and left up. The gateway's address is its
//!   [`shared_name`](flow_core::Cluster::shared_name) (the store records
//!   every run using it; only the last user of a cluster a run created
//!   ends it), and it runs `jobs_per_cluster` jobs at once (its slots).
//!   With `[cluster.azure.arm]` launch creates the run's clusters
//!   `NAME-0..N-1` through Azure Resource Manager (`PUT
//!   .../Microsoft.HDInsight/clusters/NAME`, then its
//!   `Azure-AsyncOperation` followed with `flow_cloud::wait_until`,
//!   honouring `Retry-After`), returns as soon as ARM took the create so
//!   the engine records the cluster before waiting, and deletes the
//!   clusters it created at the end (DELETE, then its operation); their
//!   shared name is the ARM resource's. Tokens come from `azure_identity`
//!   (client secret, managed identity, Azure CLI). A recovering run adopts
//!   a recorded cluster (and deletes it if its run created it); `flow
//!   clusters --terminate-orphans` deletes a dead run's.
//! - **A cluster ending under a job** fails it with the cluster's reason
//!   when a [`ClusterWatch`] can tell (`flow_cloud`'s cluster check, every
//!   tenth tick); a gateway alone cannot, ARM can for the clusters flow
//!   created there (`arm_watch`).
//! - **Unknown outcomes**: a wait whose status requests keep failing ends
//!   with [`OutcomeUnknown`](flow_core::ClusterError::OutcomeUnknown), never
//!   a failure, so the next engine adopts the job before anything is sent
//!   again (`flow_cloud::unfinished_wait`).
//! - Every call is retried on 429, 5xx and connection errors with
//!   `flow_cloud`'s policy, honouring `Retry-After`. The gateway's password
//!   is a secret read from the environment; it never reaches a log, an
//!   error or `Debug`.
//!
//! Livy is not HDInsight's alone: `livy_url` points the same cluster kind
//! at any Livy (a self-hosted one, EMR's on port 8998).
#![warn(missing_docs)]

mod arm;
mod arm_config;
mod arm_watch;
mod cluster;
mod config;
mod error;
mod gateway;
mod jobs;
mod launch;
mod livy;
mod webhcat;

pub use arm_config::{ArmConfig, ArmCredential, Definition};
pub use cluster::{AzureCluster, AzureClusterFactory};
pub use config::{deserialize_validated, AzureClusterFactoryBuilder, AzureConfig};
pub use error::AzureError;
pub use jobs::{ClusterWatch, KIND};
pub use livy::{Batch, BATCH_STATES};
pub use webhcat::{JobState, WebHcatJob};

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
