//! The EMR execution cluster: flow's [`Cluster`](flow_core::Cluster) on
//! Amazon EMR through `aws-sdk-emr`, with its files on S3 (`flow-fs-s3`).
//!
//! - **Launch or reuse**: a cluster named `NAME-N` (cluster `N` of the run,
//!   so N clusters really are N) that is `STARTING`, `BOOTSTRAPPING`,
//!   `RUNNING` or `WAITING` is reused; otherwise `RunJobFlow` with every
//!   setting of [`EmrConfig`] (release label, instance groups or fleets,
//!   applications, bootstrap actions, configurations, roles, key, subnet,
//!   log URI, tags, `KeepJobFlowAliveWhenNoSteps`, termination protection).
//!   `provision` returns as soon as EMR names the cluster (the engine records
//!   it), `wait_ready` polls `DescribeCluster` until `WAITING`; a cluster that
//!   ends meanwhile is a launch failure carrying EMR's state-change reason.
//! - **Jobs are steps** added with `ActionOnFailure=CONTINUE` (see
//!   [`steps::jar_step`] for each kind's `HadoopJarStep`). `prepare` chooses
//!   the step's unique name (`FLOW/TIMEPERIOD/STEP/ACTION/aATTEMPT/RANDOM`)
//!   before it exists, so after a crash between `AddJobFlowSteps` and storing
//!   the step id, `status` finds the step by name (`NotSubmitted` when EMR has
//!   none), and a retried `AddJobFlowSteps` never adds it twice.
//! - **Waiting** goes through `flow_cloud`'s poller: one `ListSteps` per EMR
//!   cluster per tick for all its watched steps, up to ten (EMR filters by
//!   at most ten step ids: more steps cost one request per ten), shared by
//!   every cluster value of a factory; a 1 s floor, backoff to a 3 s cap (a
//!   long step is noticed 1.5 s after its end on average), an overall
//!   timeout.
//!   A failed step's error carries EMR's failure details and the tails of
//!   its `stderr`, `stdout` and `controller` logs from S3 (waited for a
//!   bounded time, since EMR uploads them late), which also go into the step
//!   log.
//! - **Cancel**: `CancelSteps`, then wait until the step left `RUNNING`.
//!   **Terminate**: termination protection off, then `TerminateJobFlows`,
//!   only for clusters the run launched (or adopted from a run that launched
//!   them); reused ones stay up unless [`EmrConfig::terminate_reused`].
//! - Credentials, region and endpoints come from the AWS chain (`aws-config`:
//!   environment, profile, SSO, instance role; `AWS_ENDPOINT_URL`,
//!   `AWS_ENDPOINT_URL_EMR`, `AWS_ENDPOINT_URL_S3`); settings may name a
//!   profile, a region and endpoints. Throttling and transient errors are
//!   retried by the SDK's standard retry mode, except `RunJobFlow` and
//!   `AddJobFlowSteps`, which flow retries itself after checking that the
//!   failed call did not take effect. TLS is rustls on ring. No credential is
//!   held in [`EmrConfig`], so neither `Debug` nor a log shows one.
//!
//! What it is not: an EMR administration tool (no scaling, security
//! configurations, notebooks or Studio), or a scheduler of its own.
#![warn(missing_docs)]

mod client;
mod cluster;
mod config;
mod emr_steps;
mod factory;
mod launch;
pub mod steps;

pub use client::ClientError;

/// The SDK whose types [`steps::EmrStepInfo::from_summary`] reads, re-exported
/// so callers use the same version.
pub use aws_sdk_emr;
pub use cluster::{EmrCluster, KIND};
pub use config::{
    BootstrapAction, ConfigError, Configuration, EmrClusterBuilder, EmrConfig, FleetInstanceType,
    InstanceFleet, InstanceGroup, InstanceRole, Market, ValidatedEmrConfig,
};
pub use factory::EmrClusterFactory;

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
