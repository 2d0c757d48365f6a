//! The built-in actions.
//!
//! Job actions (`shell`, `spark`, `pig`, `hadoop`) render their templates and
//! hand a typed [`Job`] to the cluster; filesystem actions call the
//! cluster's [`Filesystem`](crate::Filesystem). Arguments are argument vectors;
//! only `shell` goes through `sh -c`, with its substituted values checked.

use crate::action::{Action, ActionContext, ActionError, ActionOutcome};
use crate::cluster::Job;
use crate::spec::{ActionArgs, ActionRegistry, ArgError};
use crate::template::Template;
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Does nothing and succeeds. The benchmark's action.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

#[async_trait]
impl Action for Identity {
    fn kind(&self) -> &str {
        "identity"
    }
    async fn run(&self, _cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        Ok(ActionOutcome::Done)
    }
}

/// Reports "nothing to process", which makes its step `noop`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

#[async_trait]
impl Action for Noop {
    fn kind(&self) -> &str {
        "noop"
    }
    async fn run(&self, _cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        Ok(ActionOutcome::NothingToProcess)
    }
}

/// Always fails. For tests and for rehearsing recovery. Its `message` is a
/// template like any other argument.
#[derive(Debug, Clone, Default)]
pub struct Fail {
    pub message: Option<Template>,
}

#[async_trait]
impl Action for Fail {
    fn kind(&self) -> &str {
        "fail"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let message = match &self.message {
            Some(t) => cx.render(t)?,
            None => "failed on purpose".into(),
        };
        Err(ActionError::failed(message))
    }
}

/// Waits, unless cancelled.
#[derive(Debug, Clone, Copy)]
pub struct Sleep {
    pub duration: Duration,
}

#[async_trait]
impl Action for Sleep {
    fn kind(&self) -> &str {
        "sleep"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        tokio::select! {
            _ = tokio::time::sleep(self.duration) => Ok(ActionOutcome::Done),
            _ = cx.cancel.cancelled() => Err(ActionError::Cancelled),
        }
    }
}

/// Runs a line through `sh -c` on the cluster.
#[derive(Debug, Clone)]
pub struct Shell {
    pub command: Template,
}

#[async_trait]
impl Action for Shell {
    fn kind(&self) -> &str {
        "shell"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let command = self.command.render_for_shell(cx.execution, cx.step)?;
        cx.submit(&Job::Shell { command }).await?;
        Ok(ActionOutcome::Done)
    }
}

fn render_all(cx: &ActionContext<'_>, items: &[Template]) -> Result<Vec<String>, ActionError> {
    items.iter().map(|t| cx.render(t)).collect()
}

fn render_pairs(
    cx: &ActionContext<'_>,
    items: &[(String, Template)],
) -> Result<Vec<(String, String)>, ActionError> {
    items
        .iter()
        .map(|(k, t)| Ok((k.clone(), cx.render(t)?)))
        .collect()
}

/// Submits a Spark application (`.py` or `.jar`).
#[derive(Debug, Clone)]
pub struct Spark {
    pub application: Template,
    pub main_class: Option<String>,
    pub conf: Vec<(String, Template)>,
    pub args: Vec<Template>,
}

#[async_trait]
impl Action for Spark {
    fn kind(&self) -> &str {
        "spark"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let job = Job::Spark {
            application: cx.render(&self.application)?,
            main_class: self.main_class.clone(),
            conf: render_pairs(cx, &self.conf)?,
            args: render_all(cx, &self.args)?,
        };
        cx.submit(&job).await?;
        Ok(ActionOutcome::Done)
    }
}

/// Runs a Pig script.
#[derive(Debug, Clone)]
pub struct Pig {
    pub script: Template,
    pub params: Vec<(String, Template)>,
}

#[async_trait]
impl Action for Pig {
    fn kind(&self) -> &str {
        "pig"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let job = Job::Pig {
            script: cx.render(&self.script)?,
            params: render_pairs(cx, &self.params)?,
        };
        cx.submit(&job).await?;
        Ok(ActionOutcome::Done)
    }
}

/// Runs `hadoop jar`.
#[derive(Debug, Clone)]
pub struct Hadoop {
    pub jar: Template,
    pub main_class: Option<String>,
    pub args: Vec<Template>,
}

#[async_trait]
impl Action for Hadoop {
    fn kind(&self) -> &str {
        "hadoop"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let job = Job::HadoopJar {
            jar: cx.render(&self.jar)?,
            main_class: self.main_class.clone(),
            args: render_all(cx, &self.args)?,
        };
        cx.submit(&job).await?;
        Ok(ActionOutcome::Done)
    }
}

/// Which filesystem call a [`FsAction`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsOp {
    Mkdir,
    Rmdir,
    Rm,
    Cp,
    Mv,
    CopyToLocal,
    CopyFromLocal,
}

impl FsOp {
    fn kind(self) -> &'static str {
        match self {
            FsOp::Mkdir => "mkdir",
            FsOp::Rmdir => "rmdir",
            FsOp::Rm => "rm",
            FsOp::Cp => "cp",
            FsOp::Mv => "mv",
            FsOp::CopyToLocal => "copy_to_local",
            FsOp::CopyFromLocal => "copy_from_local",
        }
    }
}

/// A filesystem call on the cluster's storage. One-path operations use
/// `path`; two-path ones use `from` and `to`.
#[derive(Debug, Clone)]
pub struct FsAction {
    pub op: FsOp,
    pub path: Template,
    pub to: Option<Template>,
}

#[async_trait]
impl Action for FsAction {
    fn kind(&self) -> &str {
        self.op.kind()
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let path = cx.render(&self.path)?;
        let to = match &self.to {
            Some(t) => cx.render(t)?,
            None => String::new(),
        };
        let fs = cx.filesystem();
        match self.op {
            FsOp::Mkdir => fs.mkdir(&path).await?,
            FsOp::Rmdir => fs.rmdir(&path).await?,
            FsOp::Rm => fs.rm(&path).await?,
            FsOp::Cp => fs.cp(&path, &to).await?,
            FsOp::Mv => fs.mv(&path, &to).await?,
            FsOp::CopyToLocal => fs.copy_to_local(&path, &PathBuf::from(&to)).await?,
            FsOp::CopyFromLocal => fs.copy_from_local(&PathBuf::from(&path), &to).await?,
        }
        tracing::info!(op = self.op.kind(), path = %path, to = %to, "done");
        Ok(ActionOutcome::Done)
    }
}

fn arc<A: Action + 'static>(a: A) -> Result<Arc<dyn Action>, ArgError> {
    Ok(Arc::new(a))
}

fn opt_plain(args: &mut ActionArgs, arg: &str) -> Result<Option<String>, ArgError> {
    args.opt_string(arg)
}

pub(crate) fn register_builtins(r: &mut ActionRegistry) {
    r.register("identity", |_| arc(Identity));
    r.register("noop", |_| arc(Noop));
    r.register("fail", |a| {
        arc(Fail {
            message: a.opt_template("message")?,
        })
    });
    r.register("sleep", |a| {
        let duration = a
            .opt_duration("duration")?
            .ok_or_else(|| ArgError::Missing {
                arg: "duration".into(),
            })?;
        arc(Sleep { duration })
    });
    r.register("shell", |a| {
        arc(Shell {
            command: a.template("command")?,
        })
    });
    r.register("spark", |a| {
        let application = match a.opt_template("application")? {
            Some(t) => t,
            None => a.template("script")?,
        };
        arc(Spark {
            application,
            main_class: opt_plain(a, "main_class")?,
            conf: a.template_map("conf")?,
            args: a.template_list("args")?,
        })
    });
    r.register("pig", |a| {
        arc(Pig {
            script: a.template("script")?,
            params: a.template_map("params")?,
        })
    });
    r.register("hadoop", |a| {
        arc(Hadoop {
            jar: a.template("jar")?,
            main_class: opt_plain(a, "main_class")?,
            args: a.template_list("args")?,
        })
    });
    for op in [FsOp::Mkdir, FsOp::Rmdir, FsOp::Rm] {
        r.register(op.kind(), move |a| {
            arc(FsAction {
                op,
                path: a.template("path")?,
                to: None,
            })
        });
    }
    for op in [FsOp::Cp, FsOp::Mv, FsOp::CopyToLocal, FsOp::CopyFromLocal] {
        r.register(op.kind(), move |a| {
            arc(FsAction {
                op,
                path: a.template("from")?,
                to: Some(a.template("to")?),
            })
        });
    }
}
