//! The glue every cloud cluster writes around its poller the same way,
//! written once: the errors a cluster names itself in
//! ([`ClusterErrors`], for any [`Cluster`]), one poller per key shared by
//! the run's clusters on that key ([`PollerMap`]), waiting for a job unless
//! the step is cancelled ([`wait_job`]), a job's [`JobStatus`] from its
//! phase ([`job_status`]), and the skeleton of a job source that lists a
//! cluster's jobs ([`unlisted`]: the jobs no listing showed, read by id one
//! per tick). What a cloud asks, and how it names its jobs in messages,
//! stays in its crate.

use crate::outcome::{Outcome, Phase};
use crate::poll::{Finished, JobSource, Poller};
use crate::unfinished::unfinished_wait;
use flow_core::{CancellationToken, Cluster, ClusterError, JobStatus};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Mutex, PoisonError};

pub mod unlisted;

pub use unlisted::{answer_with, Read, Unlisted};

/// The errors of a cluster, each naming it (its [`Cluster::name`]).
pub trait ClusterErrors {
    /// Launching failed; `transient` says whether trying again may help.
    fn launch_error(&self, message: impl Into<String>, transient: bool) -> ClusterError;
    /// A backend call `operation` failed with `e`.
    fn backend_error(&self, operation: &'static str, e: impl fmt::Display) -> ClusterError;
    /// The job of type `job` failed.
    fn job_failed(&self, job: &'static str, message: impl Into<String>) -> ClusterError;
    /// The job of type `job` was cancelled.
    fn cancelled(&self, job: &'static str) -> ClusterError;
    /// Terminating the cluster failed.
    fn terminate_error(&self, message: impl Into<String>) -> ClusterError;
}

impl<C: Cluster + ?Sized> ClusterErrors for C {
    fn launch_error(&self, message: impl Into<String>, transient: bool) -> ClusterError {
        ClusterError::Launch {
            cluster: self.name().to_string(),
            message: message.into(),
            transient,
        }
    }

    fn backend_error(&self, operation: &'static str, e: impl fmt::Display) -> ClusterError {
        ClusterError::Backend {
            cluster: self.name().to_string(),
            operation,
            message: e.to_string(),
        }
    }

    fn job_failed(&self, job: &'static str, message: impl Into<String>) -> ClusterError {
        ClusterError::JobFailed {
            cluster: self.name().to_string(),
            job,
            message: message.into(),
        }
    }

    fn cancelled(&self, job: &'static str) -> ClusterError {
        ClusterError::Cancelled {
            cluster: self.name().to_string(),
            job,
        }
    }

    fn terminate_error(&self, message: impl Into<String>) -> ClusterError {
        ClusterError::Terminate {
            cluster: self.name().to_string(),
            message: message.into(),
        }
    }
}

/// One [`Poller`] per key (a cluster label, a gateway): the run's clusters
/// on one key share its listings, so watching them costs one request per
/// tick, not one per cluster.
pub struct PollerMap<S: JobSource> {
    pollers: Mutex<HashMap<String, Poller<S>>>,
}

impl<S: JobSource> Default for PollerMap<S> {
    fn default() -> Self {
        PollerMap {
            pollers: Mutex::default(),
        }
    }
}

impl<S: JobSource> fmt::Debug for PollerMap<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollerMap")
            .field("requests", &self.requests())
            .finish()
    }
}

impl<S: JobSource> PollerMap<S> {
    /// The poller of `key`, made by `make` the first time.
    pub fn get(&self, key: &str, make: impl FnOnce() -> Poller<S>) -> Poller<S> {
        self.pollers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_string())
            .or_insert_with(make)
            .clone()
    }

    /// Status requests of all its pollers so far.
    pub fn requests(&self) -> u64 {
        self.pollers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(Poller::requests)
            .sum()
    }
}

/// Waits on `poller` for `id`, a `kind` job of the run's cluster `cluster`
/// (`job` names it as people read it, e.g. `QDS command 12`), until it
/// ends. When `cancel` fires first, `cancel_job` kills it and the answer is
/// [`ClusterError::Cancelled`]. A wait the poller ended without the job's
/// end answers as [`unfinished_wait`] says, the cluster's end reason (when
/// that is why) going to `ended` first.
#[allow(clippy::too_many_arguments)]
pub async fn wait_job<S, T, Fut>(
    cluster: &str,
    kind: &'static str,
    job: &str,
    poller: &Poller<S>,
    id: S::Id,
    cancel: &CancellationToken,
    cancel_job: impl FnOnce() -> Fut,
    ended: impl FnOnce(String),
) -> Result<Finished<S::Status>, ClusterError>
where
    S: JobSource,
    Fut: Future<Output = Result<T, ClusterError>>,
{
    let finished = tokio::select! {
        finished = poller.wait(id) => finished,
        _ = cancel.cancelled() => {
            cancel_job().await?;
            return Err(ClusterError::Cancelled { cluster: cluster.to_string(), job: kind });
        }
    };
    finished.map_err(|e| {
        let unfinished = unfinished_wait(e, cluster, kind, job);
        if let Some(reason) = unfinished.cluster_ended {
            ended(reason);
        }
        unfinished.error
    })
}

/// What `Cluster::status` answers for a job in `phase` (`None`: a state
/// the backend's table does not know); `failed` says why it failed.
pub fn job_status(phase: Option<Phase>, failed: impl FnOnce() -> String) -> JobStatus {
    match phase {
        Some(Phase::Finished(Outcome::Succeeded)) => JobStatus::Succeeded,
        Some(Phase::Finished(Outcome::Failed)) => JobStatus::Failed { message: failed() },
        Some(Phase::Finished(Outcome::Cancelled)) => JobStatus::Cancelled,
        _ => JobStatus::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_is_a_job_status() {
        let failed = || "it broke".to_string();
        assert_eq!(
            job_status(Some(Phase::Finished(Outcome::Succeeded)), failed),
            JobStatus::Succeeded
        );
        assert_eq!(
            job_status(Some(Phase::Finished(Outcome::Failed)), failed),
            JobStatus::Failed {
                message: "it broke".into()
            }
        );
        assert_eq!(
            job_status(Some(Phase::Finished(Outcome::Cancelled)), failed),
            JobStatus::Cancelled
        );
        assert_eq!(job_status(Some(Phase::Running), failed), JobStatus::Running);
        assert_eq!(job_status(None, failed), JobStatus::Running);
    }
}
