//! The `Action` trait: one unit of work inside a step.
//!
//! Actions take `&self` plus a per-execution [`ActionContext`], so one value
//! serves several steps on several clusters at once: re-entrancy comes from
//! the types, not from deep copies. Each execution is `run`, then `cleanup`,
//! which the engine calls whatever `run` returned.

use crate::cluster::{Cluster, ClusterError, Job, JobContext};
use crate::context::ExecutionContext;
use crate::filesystem::{Filesystem, FsError};
use crate::template::{Template, TemplateError};
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How an action's run ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcome {
    /// The work was done.
    Done,
    /// There was nothing to do: the step becomes `noop`, which counts as
    /// complete for its dependants.
    NothingToProcess,
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{message}")]
    Failed { message: String },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Filesystem(#[from] FsError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("cancelled")]
    Cancelled,
}

impl ActionError {
    pub fn failed(message: impl Into<String>) -> Self {
        ActionError::Failed {
            message: message.into(),
        }
    }
}

/// What one execution of an action sees.
pub struct ActionContext<'a> {
    pub execution: &'a ExecutionContext,
    pub step: &'a str,
    pub action: &'a str,
    pub cluster: &'a dyn Cluster,
    /// Fires on cancellation or timeout; long actions must watch it.
    pub cancel: &'a CancellationToken,
}

impl ActionContext<'_> {
    /// The cluster's filesystem.
    pub fn filesystem(&self) -> &dyn Filesystem {
        self.cluster.filesystem()
    }

    /// Renders an argument template for this step.
    pub fn render(&self, template: &Template) -> Result<String, ActionError> {
        Ok(template.render(self.execution, self.step)?)
    }

    /// Hands `job` to the cluster, honouring cancellation.
    pub async fn submit(&self, job: &Job) -> Result<(), ActionError> {
        let cx = JobContext {
            cancel: self.cancel,
            execution: self.execution,
        };
        match self.cluster.submit(job, &cx).await {
            Err(ClusterError::Cancelled { .. }) => Err(ActionError::Cancelled),
            other => Ok(other?),
        }
    }
}

/// One unit of work of a step.
#[async_trait]
pub trait Action: Send + Sync + fmt::Debug {
    /// The action's type name as flow files write it, e.g. `shell`.
    fn kind(&self) -> &str;

    /// Does the work.
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError>;

    /// Undoes or releases what `run` left behind. Always called after `run`,
    /// also when it failed or was cancelled.
    async fn cleanup(&self, _cx: &ActionContext<'_>) -> Result<(), ActionError> {
        Ok(())
    }
}

/// An action placed in a step, with its per-placement options.
#[derive(Debug, Clone)]
pub struct ActionInstance {
    /// The logger name's second part: `STEP.NAME`. Defaults to the kind.
    pub name: String,
    pub action: Arc<dyn Action>,
    pub skip: bool,
    pub timeout: Option<Duration>,
}

impl ActionInstance {
    pub fn new(action: Arc<dyn Action>) -> Self {
        ActionInstance {
            name: action.kind().to_string(),
            action,
            skip: false,
            timeout: None,
        }
    }

    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn skipped(mut self, skip: bool) -> Self {
        self.skip = skip;
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}
