//! The Qubole cluster: flow's [`Cluster`](flow_core::Cluster) on a QDS
//! (Qubole Data Service) cluster through its REST API (reqwest, rustls on
//! ring), with the S3 filesystem of `flow-fs-s3` as its filesystem (Qubole
//! on AWS reads and writes S3).
//!
//! - **Cluster**: QDS clusters are defined in QDS and named by a label
//!   ([`QuboleConfig::cluster_label`]); every command of the run goes to
//!   it. `provision` asks for its state (an unknown label fails the
//!   launch). With [`QuboleConfig::start_cluster`] a cluster that is `DOWN`
//!   is started (Cluster API, `PUT .../state {"state": "start"}`) and
//!   `wait_ready` waits for `UP`; the handle records that the run started
//!   it, and `terminate` (with [`QuboleConfig::terminate`]) terminates only
//!   such a cluster, waiting for `DOWN`. A cluster found `UP` is reused and
//!   left up. A label names one cluster of the account, so runs on it share
//!   it ([`Cluster::shared_name`](flow_core::Cluster::shared_name)): the
//!   engine records its users in the store and only the last one
//!   terminates it. It runs [`QuboleConfig::jobs_per_cluster`] commands at
//!   once (its slots).
//! - **Commands**: Spark jobs become `SparkCommand`s (a `.py`, `.scala`,
//!   `.R` or `.sql` application is a `script_location` with its `--conf`s
//!   as `arguments` and its arguments as `user_program_arguments`; a JVM
//!   application is one `cmdline`), Pig jobs `PigCommand`s
//!   (`script_location`, `parameters`), shell jobs `ShellCommand`s
//!   (`inline`), Hadoop jars `HadoopCommand`s (`sub_command = "jar"`).
//!   Paths without a scheme are `s3://CODE_BUCKET/PATH`. A job carrying a
//!   secret value is refused: QDS shows every command's body in its
//!   command history.
//! - **Handles**: `prepare` chooses the command's name (flow's job id,
//!   also sent as a tag) before anything is sent, and the engine stores it;
//!   the command id QDS answers is stored next. A submission whose answer
//!   was lost is found in the command history by that name and never sent
//!   twice ([`flow_cloud::retry_with_lookup`]); a handle without a command
//!   id is looked up the same way (`NotSubmitted` when QDS has none).
//! - **Waiting**: `flow_cloud`'s poller, one request per tick per label
//!   whatever the number of commands (`GET /commands/ID` for one, one page
//!   of the label's command history for several), floor 1 s, backoff to a
//!   3 s cap; every 10th tick asks for the label's cluster state instead,
//!   and a cluster `DOWN` or `TERMINATING` under a command fails it with
//!   QDS's reason. Polling that gives up leaves the outcome unknown
//!   (`ClusterError::OutcomeUnknown`), never a failure.
//!   `done` is success; `error` and `cancelled` end the job. The
//!   end of the command's log (`/logs`) goes to the step log and, for a
//!   failure, its last lines into the error.
//! - **Cancel**: `PUT /commands/ID {"status": "kill"}`, then waits for the
//!   command to end.
//! - Every call is retried as QDS's HTTP retry policy says (429 and 503
//!   always, other 5xx only for reads), honouring `Retry-After`. The token
//!   is read from an environment variable, sent as `X-AUTH-TOKEN`, and
//!   never reaches a log, an error or `Debug`.
//!
//! What it is not: a general QDS client (no Hive, Presto, notebooks,
//! workflows or templates; clusters are not created or configured), and it
//! does not upload job files: they must already be in S3.
#![warn(missing_docs)]

mod api;
mod cluster;
mod commands;
mod config;
mod error;
mod logs;

pub use api::Command;
pub use cluster::{QuboleCluster, QuboleClusterFactory};
pub use commands::{COMMAND_STATES, KIND};
pub use config::{
    deserialize_validated, QuboleClusterFactoryBuilder, QuboleConfig, DEFAULT_ENDPOINT,
};
pub use error::QuboleError;

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
