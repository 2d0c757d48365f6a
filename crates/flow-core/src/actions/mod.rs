//! The built-in actions.
//!
//! Job actions (`shell`, `spark`, `pig`, `hadoop`) render their templates and
//! hand a typed [`Job`] to the cluster; filesystem actions call the
//! cluster's [`Filesystem`](crate::Filesystem). Arguments are argument vectors;
//! only `shell` goes through `sh -c`, with its substituted values checked.
//!
//! Secrets never enter an argument vector: a shell line refers to them as
//! environment variables, Spark `conf` and Pig `params` holding one are
//! handed over privately, and a secret anywhere else in a job's arguments is
//! refused (when the flow is checked with its settings, and again when the
//! job is built).

use crate::action::{Action, ActionContext, ActionError, ActionOutcome, TemplateUse};
use crate::cluster::Job;
use crate::context::Secret;
use crate::spec::{ActionArgs, ActionRegistry, ArgError};
use crate::template::{Template, Usage};
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
    /// The failure message, a template; a fixed text when absent.
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
    fn templates(&self) -> Vec<TemplateUse<'_>> {
        self.message
            .iter()
            .map(|t| TemplateUse::new("message", t, Usage::Private))
            .collect()
    }
}

/// Waits, unless cancelled.
#[derive(Debug, Clone, Copy)]
pub struct Sleep {
    /// How long to sleep; honours cancellation.
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
    /// The `sh -c` line, rendered with shell-safe values.
    pub command: Template,
}

#[async_trait]
impl Action for Shell {
    fn kind(&self) -> &str {
        "shell"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let rendered = self.command.render_for_shell(cx.execution, cx.step)?;
        cx.submit(&Job::Shell {
            command: rendered.command,
            env: rendered.env,
        })
        .await?;
        Ok(ActionOutcome::Done)
    }
    fn templates(&self) -> Vec<TemplateUse<'_>> {
        vec![TemplateUse::new("command", &self.command, Usage::Shell)]
    }
}

/// Where a secret can go instead of the arguments of a job kind.
const SPARK_HINT: &str = "put it in `conf` (a `spark.*` key), which reaches spark-submit through a file only you can read, and read it from the Spark configuration";
const PIG_HINT: &str = "put it in `params`, which reach pig through a file only you can read";
const HADOOP_HINT: &str = "hadoop jar has no private channel here: let the job read the secret itself (e.g. from a Hadoop credential provider)";

fn argument_usage(kind: &str, arg: &str, hint: &str) -> Usage {
    Usage::Argument {
        place: format!("{kind} `{arg}`"),
        hint: hint.to_string(),
    }
}

fn render_args(
    cx: &ActionContext<'_>,
    kind: &str,
    arg: &str,
    hint: &str,
    items: &[Template],
) -> Result<Vec<String>, ActionError> {
    items
        .iter()
        .map(|t| render_arg(cx, kind, arg, hint, t))
        .collect()
}

fn render_arg(
    cx: &ActionContext<'_>,
    kind: &str,
    arg: &str,
    hint: &str,
    t: &Template,
) -> Result<String, ActionError> {
    Ok(t.render_argument(cx.execution, cx.step, &format!("{kind} `{arg}`"), hint)?)
}

/// Renders key/value templates, keeping those that hold a secret apart.
#[allow(clippy::type_complexity)]
fn render_split(
    cx: &ActionContext<'_>,
    items: &[(String, Template)],
) -> Result<(Vec<(String, String)>, Vec<(String, Secret)>), ActionError> {
    let mut plain = Vec::new();
    let mut secret = Vec::new();
    for (k, t) in items {
        let value = cx.render(t)?;
        if t.uses_secret(&cx.execution.settings) {
            secret.push((k.clone(), Secret::new(value)));
        } else {
            plain.push((k.clone(), value));
        }
    }
    Ok((plain, secret))
}

fn pair_uses<'a>(
    arg: &str,
    items: &'a [(String, Template)],
) -> impl Iterator<Item = TemplateUse<'a>> + 'a {
    let arg = arg.to_string();
    items
        .iter()
        .map(move |(k, t)| TemplateUse::new(format!("{arg}.{k}"), t, Usage::Private))
}

/// Submits a Spark application (`.py` or `.jar`).
#[derive(Debug, Clone)]
pub struct Spark {
    /// The application (a `.py` or `.jar`), rendered.
    pub application: Template,
    /// `--class` for JVM applications.
    pub main_class: Option<String>,
    /// `--conf k=v` entries; values are templates (secrets go to a private file).
    pub conf: Vec<(String, Template)>,
    /// Arguments after the application.
    pub args: Vec<Template>,
}

#[async_trait]
impl Action for Spark {
    fn kind(&self) -> &str {
        "spark"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let (conf, secret_conf) = render_split(cx, &self.conf)?;
        let job = Job::Spark {
            application: render_arg(cx, "spark", "application", SPARK_HINT, &self.application)?,
            main_class: self.main_class.clone(),
            conf,
            secret_conf,
            args: render_args(cx, "spark", "args", SPARK_HINT, &self.args)?,
        };
        cx.submit(&job).await?;
        Ok(ActionOutcome::Done)
    }
    fn templates(&self) -> Vec<TemplateUse<'_>> {
        let mut uses = vec![TemplateUse::new(
            "application",
            &self.application,
            argument_usage("spark", "application", SPARK_HINT),
        )];
        uses.extend(pair_uses("conf", &self.conf));
        uses.extend(
            self.args
                .iter()
                .map(|t| TemplateUse::new("args", t, argument_usage("spark", "args", SPARK_HINT))),
        );
        uses
    }
}

/// Runs a Pig script.
#[derive(Debug, Clone)]
pub struct Pig {
    /// The Pig script, rendered.
    pub script: Template,
    /// `-param k=v` entries; values are templates (secrets go to a private file).
    pub params: Vec<(String, Template)>,
}

#[async_trait]
impl Action for Pig {
    fn kind(&self) -> &str {
        "pig"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let (params, secret_params) = render_split(cx, &self.params)?;
        let job = Job::Pig {
            script: render_arg(cx, "pig", "script", PIG_HINT, &self.script)?,
            params,
            secret_params,
        };
        cx.submit(&job).await?;
        Ok(ActionOutcome::Done)
    }
    fn templates(&self) -> Vec<TemplateUse<'_>> {
        let mut uses = vec![TemplateUse::new(
            "script",
            &self.script,
            argument_usage("pig", "script", PIG_HINT),
        )];
        uses.extend(pair_uses("params", &self.params));
        uses
    }
}

/// Runs `hadoop jar`.
#[derive(Debug, Clone)]
pub struct Hadoop {
    /// The jar, rendered.
    pub jar: Template,
    /// The main class, when the jar's manifest names none.
    pub main_class: Option<String>,
    /// Arguments after the main class.
    pub args: Vec<Template>,
}

#[async_trait]
impl Action for Hadoop {
    fn kind(&self) -> &str {
        "hadoop"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let job = Job::HadoopJar {
            jar: render_arg(cx, "hadoop", "jar", HADOOP_HINT, &self.jar)?,
            main_class: self.main_class.clone(),
            args: render_args(cx, "hadoop", "args", HADOOP_HINT, &self.args)?,
        };
        cx.submit(&job).await?;
        Ok(ActionOutcome::Done)
    }
    fn templates(&self) -> Vec<TemplateUse<'_>> {
        let mut uses = vec![TemplateUse::new(
            "jar",
            &self.jar,
            argument_usage("hadoop", "jar", HADOOP_HINT),
        )];
        uses.extend(
            self.args.iter().map(|t| {
                TemplateUse::new("args", t, argument_usage("hadoop", "args", HADOOP_HINT))
            }),
        );
        uses
    }
}

/// Which filesystem call a [`FsAction`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsOp {
    /// `mkdir`: create a directory and its parents.
    Mkdir,
    /// `rmdir`: remove a directory or prefix and everything under it.
    Rmdir,
    /// `rm`: remove one object or file.
    Rm,
    /// `cp`: copy an object or a prefix.
    Cp,
    /// `mv`: move an object or a prefix.
    Mv,
    /// `copy_to_local`: download to a path on the engine's machine.
    CopyToLocal,
    /// `copy_from_local`: upload from a path on the engine's machine.
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
    /// The call to make.
    pub op: FsOp,
    /// The key (`path`), or the source (`from`) of a two-path call.
    pub path: Template,
    /// The destination (`to`) of a two-path call.
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
    fn templates(&self) -> Vec<TemplateUse<'_>> {
        let op = self.op.kind();
        let key = Usage::Key { op };
        // Each argument is a key of the cluster's storage, except the local
        // side of copy_to_local / copy_from_local.
        let (first, first_usage, second_usage) = match self.op {
            FsOp::Mkdir | FsOp::Rmdir | FsOp::Rm => ("path", key, Usage::Private),
            FsOp::Cp | FsOp::Mv => ("from", key.clone(), key),
            FsOp::CopyToLocal => ("from", key, Usage::Private),
            FsOp::CopyFromLocal => ("from", Usage::Private, key),
        };
        let mut uses = vec![TemplateUse::new(first, &self.path, first_usage)];
        uses.extend(
            self.to
                .iter()
                .map(|t| TemplateUse::new("to", t, second_usage.clone())),
        );
        uses
    }
}

fn arc<A: Action + 'static>(a: A) -> Result<Arc<dyn Action>, ArgError> {
    Ok(Arc::new(a))
}

fn opt_plain(args: &mut ActionArgs, arg: &str) -> Result<Option<String>, ArgError> {
    args.opt_string(arg)
}

impl ActionRegistry {
    /// The built-in actions: identity, noop, fail, sleep, shell, spark, pig,
    /// hadoop, mkdir, rmdir, rm, cp, mv, copy_to_local, copy_from_local.
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        register_builtins(&mut r);
        r
    }
}

impl Default for ActionRegistry {
    fn default() -> Self {
        Self::builtin()
    }
}

fn register_builtins(r: &mut ActionRegistry) {
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
