//! Declarative flow files (TOML) and the registry of action types they name.
//!
//! ```toml
//! name = "daily_report"
//! time_qualifier = "daily"
//! [[steps]]
//! name = "extract"
//! pre  = [{ action = "mkdir", path = "out/{timeperiod}" }]
//! main = { action = "shell", command = "echo extracting {start_timeperiod}" }
//! ```
//!
//! Every error carries the file and, where the parser or a span knows it, the
//! line and column.

use crate::action::{Action, ActionInstance};
use crate::actions;
use crate::context::Settings;
use crate::graph::{FlowDefinition, FlowGraph, GraphError, StepDefinition};
use crate::retry::{RetryPolicy, MAX_RETRIES};
use crate::template::{Template, TemplateError};
use crate::timeperiod::TimeQualifier;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::{Spanned, Table, Value};

/// A problem with one action's arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgError {
    #[error("missing required argument '{arg}'")]
    /// A required argument is absent.
    Missing {
        /// The argument's name.
        arg: String,
    },
    #[error("argument '{arg}' must be {expected}")]
    /// An argument has the wrong type.
    WrongType {
        /// The argument's name.
        arg: String,
        /// What it should be, e.g. `a string`.
        expected: &'static str,
    },
    #[error("unknown argument '{arg}' (this action takes: {known})")]
    /// An argument the action does not take (often a typo).
    Unknown {
        /// The argument's name.
        arg: String,
        /// The arguments it takes.
        known: String,
    },
    /// An argument's template does not parse.
    #[error("argument '{arg}': {source}")]
    Template {
        /// The argument's name.
        arg: String,
        /// Why.
        #[source]
        source: TemplateError,
    },
    #[error("argument '{arg}': {message}")]
    /// An argument's value is not acceptable.
    Invalid {
        /// The argument's name.
        arg: String,
        /// Why.
        message: String,
    },
}

/// The arguments of one action in a flow file, with typed getters that
/// remember which keys were read so unknown ones can be reported.
#[derive(Debug)]
pub struct ActionArgs {
    table: Table,
    read: BTreeSet<String>,
}

impl ActionArgs {
    /// The arguments in `table`, none read yet.
    pub fn new(table: Table) -> Self {
        ActionArgs {
            table,
            read: BTreeSet::new(),
        }
    }

    fn get(&mut self, arg: &str) -> Option<&Value> {
        self.read.insert(arg.to_string());
        self.table.get(arg)
    }

    /// A required string argument parsed as a template.
    pub fn template(&mut self, arg: &str) -> Result<Template, ArgError> {
        self.opt_template(arg)?
            .ok_or_else(|| ArgError::Missing { arg: arg.into() })
    }

    /// An optional string argument parsed as a template.
    pub fn opt_template(&mut self, arg: &str) -> Result<Option<Template>, ArgError> {
        match self.opt_string(arg)? {
            None => Ok(None),
            Some(text) => Template::parse(&text)
                .map(Some)
                .map_err(|source| ArgError::Template {
                    arg: arg.into(),
                    source,
                }),
        }
    }

    /// An optional plain string.
    pub fn opt_string(&mut self, arg: &str) -> Result<Option<String>, ArgError> {
        match self.get(arg) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ArgError::WrongType {
                arg: arg.into(),
                expected: "a string",
            }),
        }
    }

    /// An optional list of string templates (empty when absent).
    pub fn template_list(&mut self, arg: &str) -> Result<Vec<Template>, ArgError> {
        let wrong = || ArgError::WrongType {
            arg: arg.into(),
            expected: "a list of strings",
        };
        match self.get(arg) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Template::parse(s).map_err(|source| ArgError::Template {
                        arg: arg.into(),
                        source,
                    }),
                    _ => Err(wrong()),
                })
                .collect(),
            Some(_) => Err(wrong()),
        }
    }

    /// An optional table of string templates, e.g. Spark `conf` (empty when
    /// absent), in key order.
    pub fn template_map(&mut self, arg: &str) -> Result<Vec<(String, Template)>, ArgError> {
        let wrong = || ArgError::WrongType {
            arg: arg.into(),
            expected: "a table of strings",
        };
        match self.get(arg) {
            None => Ok(Vec::new()),
            Some(Value::Table(t)) => {
                let mut out = Vec::with_capacity(t.len());
                for (k, v) in t {
                    let Value::String(s) = v else {
                        return Err(wrong());
                    };
                    let t = Template::parse(s).map_err(|source| ArgError::Template {
                        arg: format!("{arg}.{k}"),
                        source,
                    })?;
                    out.push((k.clone(), t));
                }
                Ok(out)
            }
            Some(_) => Err(wrong()),
        }
    }

    /// An optional duration written like `"90s"` or `"5m"`.
    pub fn opt_duration(&mut self, arg: &str) -> Result<Option<Duration>, ArgError> {
        match self.opt_string(arg)? {
            None => Ok(None),
            Some(text) => humantime_serde::re::humantime::parse_duration(&text)
                .map(Some)
                .map_err(|e| ArgError::Invalid {
                    arg: arg.into(),
                    message: format!(
                        "'{text}' is not a duration ({e}); write e.g. \"90s\" or \"5m\""
                    ),
                }),
        }
    }

    /// Fails on any argument no getter asked for.
    pub fn finish(self) -> Result<(), ArgError> {
        if let Some(unknown) = self.table.keys().find(|k| !self.read.contains(*k)) {
            return Err(ArgError::Unknown {
                arg: unknown.clone(),
                known: if self.read.is_empty() {
                    "no arguments".into()
                } else {
                    self.read.iter().cloned().collect::<Vec<_>>().join(", ")
                },
            });
        }
        Ok(())
    }
}

/// Builds an action from its arguments.
pub type ActionFactory =
    Arc<dyn Fn(&mut ActionArgs) -> Result<Arc<dyn Action>, ArgError> + Send + Sync>;

/// The action types a flow file may name. Starts with the built-ins; library
/// users register their own.
///
/// A factory gets the action's arguments from the file ([`ActionArgs`],
/// which rejects arguments the factory did not read) and returns the
/// action:
///
/// ```
/// use async_trait::async_trait;
/// use flow_core::{Action, ActionContext, ActionError, ActionOutcome, ActionRegistry};
/// use std::path::Path;
/// use std::sync::Arc;
///
/// /// Reports "nothing to process" when the setting it names is `0`.
/// #[derive(Debug)]
/// struct CheckRows {
///     setting: String,
/// }
///
/// #[async_trait]
/// impl Action for CheckRows {
///     fn kind(&self) -> &str {
///         "check_rows"
///     }
///     async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
///         match cx.execution.settings.get(&self.setting) {
///             Some(value) if value.expose() == "0" => Ok(ActionOutcome::NothingToProcess),
///             Some(_) => Ok(ActionOutcome::Done),
///             None => Err(ActionError::failed(format!("'{}' is not set", self.setting))),
///         }
///     }
/// }
///
/// let mut registry = ActionRegistry::builtin();
/// registry.register("check_rows", |args| {
///     let setting = args.template("setting")?.source().to_string();
///     Ok(Arc::new(CheckRows { setting }) as Arc<dyn Action>)
/// });
///
/// let graph = registry.parse(
///     r#"
///     name = "rows"
///     [[steps]]
///     name = "check"
///     main = { action = "check_rows", setting = "rows" }
///     "#,
///     Path::new("rows.toml"),
/// )?;
/// assert_eq!(graph.step(0).main.action.kind(), "check_rows");
///
/// // An argument the action does not take is a load error with its place.
/// let typo = registry.parse(
///     "name = \"rows\"\n[[steps]]\nname = \"check\"\nmain = { action = \"check_rows\", setting = \"rows\", setings = 1 }\n",
///     Path::new("typo.toml"),
/// );
/// let message = typo.unwrap_err().to_string();
/// assert!(message.starts_with("typo.toml:4:"), "{message}");
/// assert!(message.contains("setings"), "{message}");
/// # Ok::<(), flow_core::SpecError>(())
/// ```
#[derive(Clone)]
pub struct ActionRegistry {
    factories: HashMap<String, ActionFactory>,
    /// When set, every action's templates are checked against these
    /// settings as the file is loaded.
    settings: Option<Arc<Settings>>,
}

impl fmt::Debug for ActionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionRegistry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl Default for ActionRegistry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl ActionRegistry {
    /// A registry with no action types.
    pub fn empty() -> Self {
        ActionRegistry {
            factories: HashMap::new(),
            settings: None,
        }
    }

    /// Checks, as files are loaded, every action's templates against
    /// `settings` (see [`Action::templates`]): a `{settings.NAME}` that is
    /// not defined, a plain value that is not shell-safe in a `shell`
    /// command, or a secret in a job's argument vector is a load error at
    /// the action's `file:line:col`, found before anything runs.
    pub fn checking_settings(mut self, settings: Arc<Settings>) -> Self {
        self.settings = Some(settings);
        self
    }

    /// The built-in actions: identity, noop, fail, sleep, shell, spark, pig,
    /// hadoop, mkdir, rmdir, rm, cp, mv, copy_to_local, copy_from_local.
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        actions::register_builtins(&mut r);
        r
    }

    /// Makes `kind` available to flow files.
    pub fn register<F>(&mut self, kind: &str, factory: F)
    where
        F: Fn(&mut ActionArgs) -> Result<Arc<dyn Action>, ArgError> + Send + Sync + 'static,
    {
        self.factories.insert(kind.to_string(), Arc::new(factory));
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.factories.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }

    /// Builds one action of `kind` from `args`, rejecting unknown arguments.
    pub fn build(&self, kind: &str, args: Table) -> Result<Arc<dyn Action>, SpecProblem> {
        let factory = self
            .factories
            .get(kind)
            .ok_or_else(|| SpecProblem::UnknownAction {
                kind: kind.to_string(),
                known: self.kinds().join(", "),
            })?;
        let mut args = ActionArgs::new(args);
        match factory(&mut args) {
            Ok(action) => {
                args.finish().map_err(SpecProblem::Arg)?;
                Ok(action)
            }
            // A missing argument next to an unknown one is most likely a
            // typo: name the unknown one.
            Err(missing @ ArgError::Missing { .. }) => {
                Err(SpecProblem::Arg(args.finish().err().unwrap_or(missing)))
            }
            Err(e) => Err(SpecProblem::Arg(e)),
        }
    }

    /// Reads and validates a flow file. Files larger than
    /// [`MAX_FLOW_FILE`] are refused without reading them whole (`/dev/zero`
    /// is not a flow).
    pub fn load_file(&self, path: &Path) -> Result<FlowGraph, SpecError> {
        let text = read_capped(path, MAX_FLOW_FILE).map_err(|e| {
            let (position, problem) = *e;
            SpecError {
                file: path.to_path_buf(),
                position,
                problem: Box::new(problem),
            }
        })?;
        self.parse(&text, path)
    }

    /// Parses and validates flow-file text; `file` is used in messages.
    pub fn parse(&self, text: &str, file: &Path) -> Result<FlowGraph, SpecError> {
        match self.parse_step_by_step(text) {
            Some(graph) => Ok(graph),
            None => self.parse_whole(text, file),
        }
    }

    /// The memory-lean path for files with many steps. The `toml` crate
    /// builds a tree of the whole document before deserializing it, about
    /// 2 KB per step (a 100,000-step file needed 400 MB). Cutting the text
    /// at each top-level `[[steps]]` header and parsing the pieces one at a
    /// time keeps one step's tree alive at once.
    ///
    /// Returns `None` on any problem, and the caller parses the whole text
    /// instead, so every error (and its position) comes from one place. A
    /// cut in the wrong place (a line `[[steps]]` inside a multi-line
    /// string) leaves an unterminated string in a piece, which fails to
    /// parse and so also falls back.
    fn parse_step_by_step(&self, text: &str) -> Option<FlowGraph> {
        let cuts = step_headers(text);
        if cuts.len() < 2 {
            return None;
        }
        let head: FileSpec = toml::from_str(&text[..cuts[0]]).ok()?;
        if !head.steps.is_empty() {
            return None;
        }
        let mut definition =
            FlowDefinition::new(head.name.into_inner()).time_qualifier(head.time_qualifier);
        for (i, &start) in cuts.iter().enumerate() {
            let end = cuts.get(i + 1).copied().unwrap_or(text.len());
            let piece: StepsOnly = toml::from_str(&text[start..end]).ok()?;
            for step in piece.steps {
                definition = definition.step(self.step_definition(step).ok()?);
            }
        }
        FlowGraph::new(definition).ok()
    }

    /// One step of a file into its definition.
    fn step_definition(
        &self,
        step: StepFile,
    ) -> Result<StepDefinition, (Range<usize>, SpecProblem)> {
        let step_name = step.name.into_inner();
        let build = |tables: Vec<Spanned<Table>>| -> Result<Vec<ActionInstance>, _> {
            tables
                .into_iter()
                .map(|t| self.instance(t, &step_name))
                .collect()
        };
        let pre = build(step.pre)?;
        let main = self.instance(step.main, &step_name)?;
        let post = build(step.post)?;
        let retry = RetryPolicy {
            retries: step.retries,
            delay: step.retry_delay.unwrap_or(RetryPolicy::none().delay),
            backoff: step.retry_backoff.unwrap_or(RetryPolicy::none().backoff),
            max_delay: step
                .retry_max_delay
                .unwrap_or(RetryPolicy::none().max_delay),
        };
        let mut def = StepDefinition::new(step_name, main)
            .depends_on(step.depends_on.into_iter().map(Spanned::into_inner))
            .skipped(step.skip)
            .with_retry(retry);
        def.pre = pre;
        def.post = post;
        def.timeout = step.timeout;
        Ok(def)
    }

    /// Parses the whole text at once: the reference path, and the one that
    /// reports errors with their line and column.
    fn parse_whole(&self, text: &str, file: &Path) -> Result<FlowGraph, SpecError> {
        // Every problem has a place: the parser's span, else the start.
        let at = |span: Option<Range<usize>>, problem: SpecProblem| SpecError {
            file: file.to_path_buf(),
            position: Some(span.map_or((1, 1), |s| position(text, s.start))),
            problem: Box::new(problem),
        };
        let spec: FileSpec = toml::from_str(text)
            .map_err(|e| at(e.span(), SpecProblem::Syntax(toml_message(text, &e))))?;
        let mut name_spans: HashMap<String, Range<usize>> = HashMap::new();
        let mut definition =
            FlowDefinition::new(spec.name.get_ref().clone()).time_qualifier(spec.time_qualifier);
        for step in spec.steps {
            name_spans
                .entry(step.name.get_ref().clone())
                .or_insert(step.name.span());
            let def = self
                .step_definition(step)
                .map_err(|(span, p)| at(Some(span), p))?;
            definition = definition.step(def);
        }
        FlowGraph::new(definition).map_err(|e| {
            let span = match &e {
                GraphError::ReservedName { step }
                | GraphError::InvalidName { step }
                | GraphError::TooManyRetries { step, .. }
                | GraphError::ZeroTimeout { step }
                | GraphError::UnknownDependency { step, .. } => name_spans.get(step).cloned(),
                GraphError::DuplicateStep { step } => {
                    // Point at the second definition.
                    let needle = format!("\"{step}\"");
                    let first = name_spans.get(step).map(|s| s.end).unwrap_or(0);
                    text[first..]
                        .find(&needle)
                        .map(|i| first + i..first + i + needle.len())
                }
                GraphError::Cycle { steps } => {
                    steps.first().and_then(|s| name_spans.get(s).cloned())
                }
                // Both are about the flow as a whole: point at its name.
                GraphError::NoName
                | GraphError::InvalidFlowName { .. }
                | GraphError::NoSteps { .. } => Some(spec.name.span()),
            };
            at(span, SpecProblem::Graph(e))
        })
    }

    fn instance(
        &self,
        table: Spanned<Table>,
        step: &str,
    ) -> Result<ActionInstance, (Range<usize>, SpecProblem)> {
        let span = table.span();
        let mut table = table.into_inner();
        let in_step = |p: SpecProblem| {
            (
                span.clone(),
                SpecProblem::InStep {
                    step: step.to_string(),
                    problem: Box::new(p),
                },
            )
        };
        let kind = match table.remove("action") {
            Some(Value::String(kind)) => kind,
            Some(_) => {
                return Err(in_step(SpecProblem::Arg(ArgError::WrongType {
                    arg: "action".into(),
                    expected: "a string",
                })))
            }
            None => {
                return Err(in_step(SpecProblem::Arg(ArgError::Missing {
                    arg: "action".into(),
                })))
            }
        };
        let mut options = ActionArgs::new(Table::new());
        let name = match table.remove("name") {
            Some(Value::String(n)) => n,
            Some(_) => {
                return Err(in_step(SpecProblem::Arg(ArgError::WrongType {
                    arg: "name".into(),
                    expected: "a string",
                })))
            }
            None => kind.clone(),
        };
        let skip = match table.remove("skip") {
            Some(Value::Boolean(b)) => b,
            Some(_) => {
                return Err(in_step(SpecProblem::Arg(ArgError::WrongType {
                    arg: "skip".into(),
                    expected: "true or false",
                })))
            }
            None => false,
        };
        if let Some(t) = table.remove("timeout") {
            options.table.insert("timeout".into(), t);
        }
        let timeout = options
            .opt_duration("timeout")
            .and_then(|t| match t {
                Some(t) if t.is_zero() => Err(ArgError::Invalid {
                    arg: "timeout".into(),
                    message: ZERO_TIMEOUT.into(),
                }),
                t => Ok(t),
            })
            .map_err(|e| in_step(SpecProblem::Arg(e)))?;
        // `rollback = { action = ..., ... }`: an action that undoes this one.
        let rollback = match table.remove("rollback") {
            None => None,
            Some(Value::Table(mut undo)) => {
                let undo_kind = match undo.remove("action") {
                    Some(Value::String(k)) => k,
                    Some(_) => {
                        return Err(in_step(SpecProblem::Arg(ArgError::WrongType {
                            arg: "rollback.action".into(),
                            expected: "a string",
                        })))
                    }
                    None => {
                        return Err(in_step(SpecProblem::Arg(ArgError::Missing {
                            arg: "rollback.action".into(),
                        })))
                    }
                };
                let built = self.build(&undo_kind, undo).map_err(|p| {
                    in_step(SpecProblem::InAction {
                        action: format!("{kind} rollback {undo_kind}"),
                        problem: Box::new(p),
                    })
                })?;
                Some(built)
            }
            Some(_) => {
                return Err(in_step(SpecProblem::Arg(ArgError::WrongType {
                    arg: "rollback".into(),
                    expected: "a table such as { action = \"rmdir\", path = \"...\" }",
                })))
            }
        };
        let action = self.build(&kind, table).map_err(|p| {
            in_step(SpecProblem::InAction {
                action: kind.clone(),
                problem: Box::new(p),
            })
        })?;
        if let Some(settings) = &self.settings {
            // The action and the one that would undo it.
            let checked = std::iter::once((kind.clone(), &action)).chain(
                rollback
                    .as_ref()
                    .map(|undo| (format!("{kind} rollback {}", undo.kind()), undo)),
            );
            for (label, checked) in checked {
                for used in checked.templates() {
                    used.template
                        .check(settings, &used.usage)
                        .map_err(|source| {
                            in_step(SpecProblem::InAction {
                                action: label.clone(),
                                problem: Box::new(SpecProblem::Arg(ArgError::Template {
                                    arg: used.arg.clone(),
                                    source,
                                })),
                            })
                        })?;
                }
            }
        }
        let mut instance = ActionInstance::new(action).named(name).skipped(skip);
        instance.timeout = timeout;
        instance.rollback = rollback;
        Ok(instance)
    }
}

/// The largest flow file read: 64 MiB, room for several hundred thousand
/// steps.
pub const MAX_FLOW_FILE: u64 = 64 * 1024 * 1024;

/// Reads a text file of at most `limit` bytes, never holding more than
/// `limit + 1` bytes of it. A file that is not UTF-8 is refused at the
/// line and column of its first bad byte.
#[allow(clippy::type_complexity)]
pub fn read_capped(
    path: &Path,
    limit: u64,
) -> Result<String, Box<(Option<(usize, usize)>, SpecProblem)>> {
    use std::io::Read;
    let read_error = |e: std::io::Error| Box::new((None, SpecProblem::Read(e.to_string())));
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(Box::new((None, SpecProblem::TooLarge { limit })));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.into_bytes();
        // Valid up to there, so this cannot fail; the position is what matters.
        let before = String::from_utf8_lossy(&bytes[..valid]);
        Box::new((
            Some(position(&before, before.len())),
            SpecProblem::Syntax("the file is not UTF-8 text".into()),
        ))
    })
}

/// A TOML parse error's message, completed where the parser leaves out
/// what it is about ("duplicate key" names the key).
pub fn toml_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    if message == "duplicate key" {
        if let Some(key) = error.span().and_then(|s| text.get(s)) {
            let key = key.trim();
            if !key.is_empty() {
                return format!("duplicate key `{key}`");
            }
        }
    }
    message.to_string()
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// What is wrong with a flow file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecProblem {
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Read(String),
    #[error("the file is larger than {} MiB; a flow file is text of at most that size", limit / (1024 * 1024))]
    /// The file is larger than the limit.
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The file is not valid TOML or not the flow-file format.
    #[error("{0}")]
    Syntax(String),
    #[error("unknown action type '{kind}' (known: {known})")]
    /// An action type the registry does not know.
    UnknownAction {
        /// The type as written.
        kind: String,
        /// The registered types.
        known: String,
    },
    /// An action's arguments are wrong.
    #[error(transparent)]
    Arg(ArgError),
    /// A problem inside an action.
    #[error("action '{action}': {problem}")]
    InAction {
        /// The action's name or type.
        action: String,
        /// The problem.
        problem: Box<SpecProblem>,
    },
    /// A problem inside a step.
    #[error("step '{step}': {problem}")]
    InStep {
        /// The step's name.
        step: String,
        /// The problem.
        problem: Box<SpecProblem>,
    },
    /// The flow's shape is wrong (names, dependencies, cycles, limits).
    #[error(transparent)]
    Graph(GraphError),
}

/// A flow-file error with its file and, where known, line and column.
#[derive(Debug, thiserror::Error)]
pub struct SpecError {
    /// The file, as given.
    pub file: PathBuf,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    /// Boxed: keeps `Result<_, SpecError>` small on the happy path.
    pub problem: Box<SpecProblem>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{}:{line}:{column}: {}",
                self.file.display(),
                self.problem
            ),
            None => write!(f, "{}: {}", self.file.display(), self.problem),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    name: Spanned<String>,
    #[serde(default)]
    time_qualifier: TimeQualifier,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    steps: Vec<StepFile>,
}

/// A piece of a file cut at a `[[steps]]` header (see
/// `parse_step_by_step`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepsOnly {
    steps: Vec<StepFile>,
}

/// Byte offsets of the lines that are a top-level `[[steps]]` header
/// (optionally followed by a comment).
fn step_headers(text: &str) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("[[steps]]") {
            let rest = rest.trim_start();
            if rest.is_empty() || rest.starts_with('#') {
                cuts.push(offset);
            }
        }
        offset += line.len();
    }
    cuts
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    name: Spanned<String>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
    #[serde(default)]
    pre: Vec<Spanned<Table>>,
    main: Spanned<Table>,
    #[serde(default)]
    post: Vec<Spanned<Table>>,
    #[serde(default)]
    skip: bool,
    #[serde(default, deserialize_with = "capped_retries")]
    retries: u32,
    #[serde(default, with = "humantime_serde")]
    retry_delay: Option<Duration>,
    #[serde(default)]
    retry_backoff: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    retry_max_delay: Option<Duration>,
    #[serde(default, deserialize_with = "nonzero_timeout")]
    timeout: Option<Duration>,
}

const ZERO_TIMEOUT: &str =
    "a timeout of 0s would fail every attempt at once; leave `timeout` out for no limit";

/// `retries`, at most [`MAX_RETRIES`]; errors get the value's position.
fn capped_retries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let retries = u32::deserialize(d)?;
    if retries > MAX_RETRIES {
        return Err(serde::de::Error::custom(format!(
            "retries = {retries} is more than {MAX_RETRIES}, the most a step may retry"
        )));
    }
    Ok(retries)
}

/// A step `timeout`, which must not be zero.
fn nonzero_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let timeout: Option<Duration> = humantime_serde::deserialize(d)?;
    if timeout.is_some_and(|t| t.is_zero()) {
        return Err(serde::de::Error::custom(ZERO_TIMEOUT));
    }
    Ok(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FlowGraph, SpecError> {
        ActionRegistry::builtin().parse(text, Path::new("f.toml"))
    }

    #[test]
    fn parses_the_readme_sketch() {
        let g = parse(
            r#"
name = "daily_report"
time_qualifier = "daily"
[[steps]]
name = "extract"
pre  = [{ action = "mkdir", path = "out/{timeperiod}" }]
main = { action = "shell", command = "echo extracting {start_timeperiod} {end_timeperiod}" }
[[steps]]
name = "report"
depends_on = ["extract"]
retries = 2
retry_delay = "1s"
main = { action = "spark", application = "jobs/report.py", args = ["--day", "{timeperiod}"], timeout = "10m" }
"#,
        )
        .unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g.time_qualifier(), TimeQualifier::Daily);
        assert_eq!(g.step(1).retry.retries, 2);
        assert_eq!(g.step(1).main.timeout, Some(Duration::from_secs(600)));
        assert_eq!(g.step(0).pre[0].name, "mkdir");
    }

    #[test]
    fn errors_carry_line_and_column() {
        let e = parse("name = \"f\"\n[[steps]]\nname = \"a\"\nmain = { action = \"teleport\" }\n")
            .unwrap_err();
        assert_eq!(e.position, Some((4, 8)));
        assert!(
            e.to_string().contains("unknown action type 'teleport'"),
            "{e}"
        );

        let e = parse("name = \"f\"\n[[steps]]\nname = \"a\"\nmain = { action = \"shell\", comand = \"x\" }\n").unwrap_err();
        assert!(e.to_string().contains("unknown argument 'comand'"), "{e}");
        assert!(e.to_string().starts_with("f.toml:4:"), "{e}");

        let e = parse("name = \"f\"\n[[steps]]\nname = \"a\"\nmain = { action = \"mkdir\" }\n")
            .unwrap_err();
        assert!(
            e.to_string().contains("missing required argument 'path'"),
            "{e}"
        );

        let e = parse("name = \"f\"\n[[steps]]\nname = \"a\"\nmain = { action = \"shell\", command = \"echo {today}\" }\n").unwrap_err();
        assert!(
            e.to_string().contains("unknown placeholder '{today}'"),
            "{e}"
        );

        let e = parse("name = \"f\"\n[[steps]]\nname = \"a\"\nmain = { action = \"identity\" }\n[[steps]]\nname = \"a\"\nmain = { action = \"identity\" }\n").unwrap_err();
        assert_eq!(e.position, Some((6, 8)), "{e}");

        let e = parse("name = \"f\"\nsteps = [\n").unwrap_err();
        assert!(e.position.is_some(), "{e}");

        let e = parse("name = \"f\"\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn settings_are_checked_at_load_time_with_a_position() {
        let settings = Arc::new(
            Settings::new()
                .with_plain("evil", "x; rm -rf /")
                .with_plain("ok", "fine")
                .with_secret("token", "a-long-secret"),
        );
        let registry = ActionRegistry::builtin().checking_settings(settings);
        let load = |main: &str| {
            registry.parse(
                &format!("name = \"f\"\n[[steps]]\nname = \"a\"\nmain = {main}\n"),
                Path::new("f.toml"),
            )
        };
        let e = load(r#"{ action = "shell", command = "echo {settings.missing}" }"#).unwrap_err();
        assert_eq!(e.position, Some((4, 8)), "{e}");
        assert!(e.to_string().contains("setting 'missing' used in"), "{e}");
        let e = load(r#"{ action = "shell", command = "echo {settings.evil}" }"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("not safe to put into a shell command"),
            "{e}"
        );
        let e = load(r#"{ action = "spark", application = "a.py", args = ["{settings.token}"] }"#)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("is a secret and cannot be put into spark `args`"),
            "{e}"
        );
        // Fine: a secret in a shell line, in spark conf, in a path.
        for ok in [
            r#"{ action = "shell", command = "echo {settings.token} {settings.ok}" }"#,
            r#"{ action = "spark", application = "a.py", conf = { "spark.k" = "{settings.token}" } }"#,
            r#"{ action = "mkdir", path = "d/{settings.token}" }"#,
        ] {
            load(ok).unwrap();
        }
        // A rollback action is checked too.
        let e = load(r#"{ action = "mkdir", path = "d", rollback = { action = "shell", command = "echo {settings.evil}" } }"#).unwrap_err();
        assert!(
            e.to_string().contains("action 'mkdir rollback shell'"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("not safe to put into a shell command"),
            "{e}"
        );
        // Without settings to check against, only the syntax is checked.
        ActionRegistry::builtin()
            .parse("name = \"f\"\n[[steps]]\nname = \"a\"\nmain = { action = \"shell\", command = \"echo {settings.missing}\" }\n", Path::new("f.toml"))
            .unwrap();
    }

    #[test]
    fn custom_actions_can_be_registered() {
        let mut r = ActionRegistry::builtin();
        r.register("custom", |args| {
            let _ = args.template("target")?;
            Ok(Arc::new(crate::actions::Identity))
        });
        let g = r
            .parse("name = \"f\"\n[[steps]]\nname = \"a\"\nmain = { action = \"custom\", target = \"{timeperiod}\" }\n", Path::new("f.toml"))
            .unwrap();
        assert_eq!(g.step(0).main.name, "custom");
    }

    /// What a graph says about its steps, to compare two parses.
    fn summary(g: &FlowGraph) -> Vec<String> {
        let mut out = vec![format!("{} {:?}", g.name(), g.time_qualifier())];
        for (i, s) in g.steps().iter().enumerate() {
            let deps: Vec<&str> = g
                .dependencies(i)
                .iter()
                .map(|&d| g.step(d).name.as_str())
                .collect();
            let names = |v: &[ActionInstance]| {
                v.iter()
                    .map(|a| a.name.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            out.push(format!(
                "{} deps={deps:?} pre={} main={} post={} skip={} retries={} timeout={:?}",
                s.name,
                names(&s.pre),
                s.main.name,
                names(&s.post),
                s.skip,
                s.retry.retries,
                s.timeout
            ));
        }
        out
    }

    #[test]
    fn step_by_step_parse_matches_the_whole_parse() {
        let text = r#"
name = "many"   # a comment
time_qualifier = "daily"
description = "three steps"

[[steps]]
name = "a"
pre = [{ action = "mkdir", path = "out/{timeperiod}" }]
main = { action = "identity" }

[[steps]]  # the second
name = "b"
depends_on = ["a"]
retries = 2
timeout = "5s"
main = { action = "shell", command = "echo b" }
post = [{ action = "rm", path = "out/x", name = "tidy" }]

  [[steps]]
name = "c"
depends_on = ["a", "b"]
skip = true
main = { action = "sleep", duration = "1ms" }
"#;
        let registry = ActionRegistry::builtin();
        let lean = registry
            .parse_step_by_step(text)
            .expect("the lean path handles a plain file");
        let whole = registry.parse_whole(text, Path::new("f.toml")).unwrap();
        assert_eq!(summary(&lean), summary(&whole));
        assert_eq!(lean.len(), 3);
    }

    #[test]
    fn a_header_line_inside_a_string_falls_back_to_the_whole_parse() {
        let text = "name = \"f\"\ndescription = \"\"\"\n[[steps]]\n\"\"\"\n[[steps]]\nname = \"a\"\nmain = { action = \"identity\" }\n[[steps]]\nname = \"b\"\nmain = { action = \"identity\" }\n";
        let registry = ActionRegistry::builtin();
        assert!(registry.parse_step_by_step(text).is_none());
        let g = parse(text).unwrap();
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn errors_in_large_files_keep_their_position() {
        let mut text = String::from("name = \"f\"\n");
        for i in 0..50 {
            text.push_str(&format!(
                "[[steps]]\nname = \"s{i}\"\nmain = {{ action = \"identity\" }}\n"
            ));
        }
        text.push_str("[[steps]]\nname = \"bad\"\nmain = { action = \"nope\" }\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.position, Some((154, 8)), "{e}");
        assert!(e.to_string().contains("unknown action type 'nope'"), "{e}");
    }
}
