//! What the cloud clusters share, written once instead of once per cloud.
//!
//! Every cloud cluster (EMR and Dataproc; Qubole and HDInsight are planned)
//! launches or reuses a cluster, submits a job, waits for it, cancels it and
//! terminates. The waiting and the retrying are not cloud-specific, so they
//! live here:
//!
//! - [`poll::Poller`]: waits for many jobs of one cluster with **one backend
//!   request per tick** for all of them, a floor (1 s by default), backoff
//!   for long jobs up to a cap, an overall timeout, and a request counter
//!   tests read. A cloud crate supplies only a [`poll::JobSource`]: "ask the
//!   backend about these ids" and "what its states mean".
//! - [`lifecycle`]: [`wait_until`] a cluster or an operation reaches a
//!   state (or a failure state, or a deadline), and [`retry_with_lookup`]
//!   for calls that must not take effect twice (a launch, a step
//!   submission): after a transient failure the resource is looked up
//!   before the call is sent again.
//! - [`outcome`]: a backend's terminal states mapped onto
//!   [`Outcome::Succeeded`], [`Outcome::Failed`] and [`Outcome::Cancelled`]
//!   ([`StateTable`]).
//! - [`mod@retry`]: the retry policy for transient errors (through `backon`),
//!   honouring `Retry-After`.
//! - [`mod@tail`]: the last bytes of a remote log object, gzip-aware, waiting a
//!   bounded time for objects that appear late (EMR uploads step logs
//!   minutes after the step ends).
//! - [`names`]: names a cloud limits in length, shortened with a hash of
//!   the whole instead of cut, so two keys never share a cluster by
//!   accident; the names of a run's clusters (a base, configured or from
//!   the run key, and the run's index of the cluster).
//! - [`errors`]: errors as people read them: a service's code and message
//!   on one line, an error with its causes, how often a call was tried;
//!   never a client library's `Debug` dump.
//! - [`unfinished`]: what a cluster's `wait` answers when its poller gave
//!   up before the job ended, the same for every cloud (an unknown outcome
//!   is never a failed attempt).
//! - [`job`]: reading a durable job handle's ids (a wrong kind or a
//!   missing id is a bad handle naming the cluster), the job's recorded
//!   type, unique client-chosen job names, and where a job file without a
//!   scheme is.
//! - [`mod@cluster`]: the glue every cloud's `Cluster` writes alike around
//!   its poller: the errors a cluster names itself in ([`cluster::ClusterErrors`]),
//!   one poller per key shared by the run's clusters on it
//!   ([`cluster::PollerMap`]), a job's wait unless the step is cancelled
//!   ([`cluster::wait_job`]), a job's status from its phase, and the
//!   skeleton of a job source that lists a cluster's jobs
//!   ([`cluster::unlisted`]: the jobs no listing showed, read by id one per
//!   tick, the others counting as running meanwhile).
//! - `http` (feature `http`): the REST clusters' HTTP client bounded by
//!   the settings' timeouts, a request without an answer as people read it
//!   (naming the timeout setting that fired), an answer's `Retry-After`.
//! - [`cluster_builder_setters!`]: the setters every cloud cluster's
//!   factory builder has (`with_poll`, `with_launch_poll`, `with_retry`,
//!   `with_job_logs`, `with_clock`, `config`), written into each builder's
//!   own `impl` block.
//! - [`clock`]: time as a trait, so tests assert polling and retry figures
//!   by counting requests, never by sleeping.
//!
//! What it is not: a cloud client. It speaks no HTTP and knows no SDK; it
//! depends on no AWS or GCP crate, so a cluster crate adds only its own.
#![warn(missing_docs)]

mod builder;
pub mod clock;
pub mod cluster;
pub mod errors;
#[cfg(feature = "http")]
pub mod http;
pub mod job;
pub mod lifecycle;
pub mod names;
pub mod outcome;
pub mod poll;
pub mod retry;
pub mod tail;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod unfinished;

pub use clock::{Clock, ManualClock, TokioClock};
pub use job::HandleIds;
pub use lifecycle::{retry_with_lookup, wait_until, Look, Requests, Wait, WaitError};
pub use names::{fit_name, short_hash};
pub use outcome::{Outcome, Phase, StateTable};
pub use poll::{Finished, JobSource, PollConfig, PollError, Poller};
pub use retry::{retry, RetryConfig, Transient};
pub use tail::{
    deserialize_job_logs_over, tail, JobLogs, RemoteObjects, Tail, TailError, TailOptions,
};
pub use unfinished::{unfinished_wait, Unfinished};

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
