//! The `Action` trait: one unit of work inside a step.
//!
//! Actions take `&self` plus a per-execution [`ActionContext`], so one value
//! serves several steps on several clusters at once: re-entrancy comes from
//! the types, not from deep copies. Each execution is `run`, then `cleanup`,
//! which the engine calls whatever `run` returned. When a step fails for good
//! (or `flow rollback` undoes it), the engine calls `rollback` on each of its
//! completed actions, newest first.

use crate::cluster::{Cluster, ClusterError, Job, JobContext, JobHandle};
use crate::context::ExecutionContext;
use crate::filesystem::{Filesystem, FsError};
use crate::store::StoreError;
use crate::template::{Template, TemplateError, Usage};
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How an action's run ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcome {
    /// The work was done.
    Done,
    /// There was nothing to do: the step becomes `noop`, which counts as
    /// complete for its dependants.
    NothingToProcess,
}

/// What an action's rollback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollback {
    /// It undid the action's work.
    Undone,
    /// The action has nothing to undo (the default): not logged or recorded.
    NothingToUndo,
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    #[error("{message}")]
    /// The action's own failure, in its words.
    Failed {
        /// What went wrong.
        message: String,
    },
    /// A job or cluster call failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A filesystem call failed.
    #[error(transparent)]
    Filesystem(#[from] FsError),
    /// An argument template could not be rendered.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Recording a job's handle failed: the engine stops, as for any store
    /// fault.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The action stopped because its cancellation token fired (cancellation or timeout).
    #[error("cancelled")]
    Cancelled,
}

impl ActionError {
    /// An [`ActionError::Failed`] with `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        ActionError::Failed {
            message: message.into(),
        }
    }
}

/// Where the engine keeps the handles of the jobs an action submits.
///
/// [`ActionContext::submit`] calls it before it waits for a job, so the
/// handle is durable while the job runs: a later engine adopts the job
/// instead of running it a second time.
#[async_trait]
pub trait JobRecorder: Send + Sync {
    /// Stores `handle` as the running action's job; returns once it is
    /// durable.
    async fn record(&self, handle: &JobHandle) -> Result<(), ActionError>;
}

/// A [`JobRecorder`] that keeps nothing, for running an action outside the
/// engine (tests, tools): its jobs cannot be adopted after a crash.
pub struct NoJobRecorder;

#[async_trait]
impl JobRecorder for NoJobRecorder {
    async fn record(&self, _handle: &JobHandle) -> Result<(), ActionError> {
        Ok(())
    }
}

/// What one execution of an action sees.
pub struct ActionContext<'a> {
    /// The run's context: flow, timeperiod, window, settings.
    pub execution: &'a ExecutionContext,
    /// The step the action belongs to.
    pub step: &'a str,
    /// The action's name within the step (the logger name's second part).
    pub action: &'a str,
    /// The step's attempt, from 1.
    pub attempt: u32,
    /// The cluster the step runs on; jobs go through [`ActionContext::submit`].
    pub cluster: &'a dyn Cluster,
    /// Fires on cancellation or timeout; long actions must watch it.
    pub cancel: &'a CancellationToken,
    /// Keeps the handles of submitted jobs durable.
    pub jobs: &'a dyn JobRecorder,
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

    /// The context clusters get for this action's jobs.
    pub fn job_context(&self) -> JobContext<'_> {
        JobContext {
            cancel: self.cancel,
            execution: self.execution,
            step: self.step,
            action: self.action,
            attempt: self.attempt,
        }
    }

    /// Runs `job` on the cluster to its end, honouring cancellation: names
    /// it, records its handle, submits it, records the completed handle if
    /// the backend added ids, and waits for it.
    ///
    /// The job runs under a [`JobSpan`].
    pub async fn submit(&self, job: &Job) -> Result<(), ActionError> {
        let span = JobSpan::new(self.cluster.name(), false);
        let result = self
            .submit_and_wait(job, &span)
            .instrument(span.span().clone())
            .await;
        span.end(match &result {
            Ok(()) => JobEnd::Succeeded,
            Err(ActionError::Cancelled) => JobEnd::Cancelled,
            Err(_) => JobEnd::Failed,
        });
        result
    }

    async fn submit_and_wait(&self, job: &Job, span: &JobSpan) -> Result<(), ActionError> {
        let cx = self.job_context();
        let cancelled = |e: ClusterError| match e {
            ClusterError::Cancelled { .. } => ActionError::Cancelled,
            other => ActionError::Cluster(other),
        };
        let prepared = self.cluster.prepare(job, &cx)?;
        span.handle(&prepared);
        self.jobs.record(&prepared).await?;
        if self.cancel.is_cancelled() {
            return Err(ActionError::Cancelled);
        }
        let handle = self
            .cluster
            .submit(&prepared, job, &cx)
            .await
            .map_err(cancelled)?;
        if handle != prepared {
            span.handle(&handle);
            self.jobs.record(&handle).await?;
        }
        self.cluster.wait(&handle, &cx).await.map_err(cancelled)
    }
}

/// The `job` span a cluster job runs under, submitted or adopted after a
/// crash: `cluster`, `job_kind`, `job_id` (the backend's ids as
/// `name=value` pairs), `adopted`, and at its end `state` (and
/// `otel.status_code = "error"` for a failed job), which a trace exporter
/// turns into the job's span.
pub struct JobSpan(tracing::Span);

/// How a job ended, for its [`JobSpan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    /// It succeeded.
    Succeeded,
    /// It failed (an error status).
    Failed,
    /// It was cancelled.
    Cancelled,
}

impl JobSpan {
    /// A span for a job on `cluster` (a child of the current span).
    pub fn new(cluster: &str, adopted: bool) -> JobSpan {
        JobSpan(tracing::info_span!(
            "job",
            cluster,
            adopted,
            job_kind = tracing::field::Empty,
            job_id = tracing::field::Empty,
            state = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        ))
    }

    /// The span, to instrument the job's work with.
    pub fn span(&self) -> &tracing::Span {
        &self.0
    }

    /// Records the job's handle (again when the backend added ids).
    pub fn handle(&self, handle: &JobHandle) {
        let ids: Vec<String> = handle.ids.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.0.record("job_kind", handle.kind.as_str());
        self.0.record("job_id", ids.join(","));
    }

    /// Records how the job ended.
    pub fn end(&self, end: JobEnd) {
        let state = match end {
            JobEnd::Succeeded => "succeeded",
            JobEnd::Failed => "failed",
            JobEnd::Cancelled => "cancelled",
        };
        self.0.record("state", state);
        if end == JobEnd::Failed {
            self.0.record("otel.status_code", "error");
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

    /// Undoes what a completed `run` did, when its step failed for good or
    /// is rolled back on request. Nothing by default: an action that can be
    /// undone says how (flow files give any action a `rollback` action
    /// instead, which takes precedence).
    async fn rollback(&self, _cx: &ActionContext<'_>) -> Result<Rollback, ActionError> {
        Ok(Rollback::NothingToUndo)
    }

    /// The action's argument templates and how each reaches the job, so
    /// undefined or unsafe substitutions are found when the flow is loaded
    /// with its settings, before anything runs. The default (none) leaves an
    /// action's templates to be checked when they are rendered.
    fn templates(&self) -> Vec<TemplateUse<'_>> {
        Vec::new()
    }
}

/// One argument template of an action and how the job receives it.
#[derive(Debug, Clone)]
pub struct TemplateUse<'a> {
    /// The argument's name in the flow file, e.g. `command` or `conf.k`.
    pub arg: String,
    /// The template itself.
    pub template: &'a Template,
    /// How the rendered value reaches the job, which decides what it may hold.
    pub usage: Usage,
}

impl<'a> TemplateUse<'a> {
    /// Describes `template`, the argument `arg`, used as `usage`.
    pub fn new(arg: impl Into<String>, template: &'a Template, usage: Usage) -> Self {
        TemplateUse {
            arg: arg.into(),
            template,
            usage,
        }
    }
}

/// An action placed in a step, with its per-placement options.
#[derive(Debug, Clone)]
pub struct ActionInstance {
    /// The logger name's second part: `STEP.NAME`. Defaults to the kind.
    pub name: String,
    /// The action to run.
    pub action: Arc<dyn Action>,
    /// A skipped action does not run (its step goes on).
    pub skip: bool,
    /// Limit for one run of the action; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Runs instead of `action.rollback` to undo this action.
    pub rollback: Option<Arc<dyn Action>>,
}

impl ActionInstance {
    /// The action placed as it is, named after its kind.
    pub fn new(action: Arc<dyn Action>) -> Self {
        ActionInstance {
            name: action.kind().to_string(),
            action,
            skip: false,
            timeout: None,
            rollback: None,
        }
    }

    /// Names it (`STEP.NAME` in logs) instead of after its kind.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Skips it (`true`) or runs it.
    pub fn skipped(mut self, skip: bool) -> Self {
        self.skip = skip;
        self
    }

    /// Limits one run of it to `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Undo this action with `rollback` (run like an action, logged as
    /// `STEP.NAME.rollback`).
    pub fn with_rollback(mut self, rollback: Arc<dyn Action>) -> Self {
        self.rollback = Some(rollback);
        self
    }
}
