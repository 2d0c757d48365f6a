//! What a cluster's `wait` answers when its [`Poller`](crate::Poller)
//! ended the wait without a terminal state, written once for every cloud:
//!
//! - the cluster ended under the job ([`PollError::ClusterEnded`]): the job
//!   failed, with the cluster's reason (which the cluster also keeps as its
//!   [`end_reason`](flow_core::Cluster::end_reason));
//! - the backend answered without the job ([`PollError::Missing`]): the job
//!   is gone, a failure;
//! - anything else (status requests kept failing, the wait timed out):
//!   the outcome is unknown ([`ClusterError::OutcomeUnknown`]), never a
//!   failed attempt, so the engine keeps the handle and the next engine
//!   adopts or cancels the job before anything is submitted again.

use crate::poll::PollError;
use flow_core::ClusterError;

/// A wait that ended without the job's end: the error `wait` returns, and
/// the cluster's end reason when that is why.
#[derive(Debug)]
pub struct Unfinished {
    /// What `Cluster::wait` answers.
    pub error: ClusterError,
    /// Why the cluster ended, when it did.
    pub cluster_ended: Option<String>,
}

/// The answer for a wait of `job` (as people read it, e.g. `QDS command
/// 12`) of kind `kind` on the run's cluster `cluster`, which the poller
/// ended with `e`.
pub fn unfinished_wait(e: PollError, cluster: &str, kind: &'static str, job: &str) -> Unfinished {
    let job_failed = |message: String| ClusterError::JobFailed {
        cluster: cluster.to_string(),
        job: kind,
        message,
    };
    match e {
        PollError::ClusterEnded { reason, .. } => {
            tracing::error!("the cluster of {job} ended: {reason}");
            Unfinished {
                error: job_failed(format!("{job}: its cluster ended: {reason}")),
                cluster_ended: Some(reason),
            }
        }
        PollError::Missing { .. } => Unfinished {
            error: job_failed(format!("{job} is gone: {e}")),
            cluster_ended: None,
        },
        e => Unfinished {
            error: ClusterError::OutcomeUnknown {
                cluster: cluster.to_string(),
                job: kind,
                message: format!(
                    "{job}: {e}; it is left as it is for the next engine to adopt or cancel"
                ),
            },
            cluster_ended: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_job_or_an_ended_cluster_is_a_failure() {
        let ended = unfinished_wait(
            PollError::ClusterEnded {
                job: "7".into(),
                reason: "Deleting".into(),
            },
            "c-0",
            "spark",
            "batch 7",
        );
        assert_eq!(ended.cluster_ended.as_deref(), Some("Deleting"));
        assert!(
            matches!(&ended.error, ClusterError::JobFailed { message, .. } if message == "batch 7: its cluster ended: Deleting")
        );
        let gone = unfinished_wait(
            PollError::Missing {
                job: "7".into(),
                answers: 5,
            },
            "c-0",
            "spark",
            "batch 7",
        );
        assert!(matches!(gone.error, ClusterError::JobFailed { .. }));
        for e in [
            PollError::Backend {
                job: "7".into(),
                failures: 5,
                message: "503".into(),
            },
            PollError::Timeout {
                job: "7".into(),
                waited: std::time::Duration::from_secs(1),
            },
        ] {
            let unknown = unfinished_wait(e, "c-0", "spark", "batch 7");
            assert!(unknown.error.is_outcome_unknown(), "{}", unknown.error);
            assert!(unknown.cluster_ended.is_none());
        }
    }
}
