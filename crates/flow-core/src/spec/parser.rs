//! The flow-file parser: TOML text into a validated [`FlowGraph`], every
//! error with its file, line and column. Actions are built through the
//! [`ActionRegistry`] it is given.

use super::error::position;
use super::{toml_message, ActionArgs, ActionRegistry, ArgError, SpecError, SpecProblem};
use crate::action::ActionInstance;
use crate::graph::{FlowDefinition, FlowGraph, GraphError, StepDefinition};
use crate::lineage::{Dataset, StepDatasets};
use crate::notify::{FlowSignals, NotifySpec, Sla, SlaFrom};
use crate::retry::{RetryPolicy, MAX_RETRIES};
use crate::timeperiod::TimeQualifier;
use serde::Deserialize;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;
use toml::{Spanned, Table, Value};

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

impl ActionRegistry {
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
        let parser = Parser { registry: self };
        match parser.parse_step_by_step(text) {
            Some(graph) => Ok(graph),
            None => parser.parse_whole(text, file),
        }
    }
}

/// Parses one flow file's text with the actions of `registry`.
struct Parser<'a> {
    registry: &'a ActionRegistry,
}

impl Parser<'_> {
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
        let mut signals = head.signals().ok()?;
        let schedule = head
            .schedule
            .map(|s| s.check(head.time_qualifier, head.name.get_ref()))
            .transpose()
            .ok()?;
        let mut definition = FlowDefinition::new(head.name.into_inner())
            .time_qualifier(head.time_qualifier)
            .schedule(schedule);
        for (i, &start) in cuts.iter().enumerate() {
            let end = cuts.get(i + 1).copied().unwrap_or(text.len());
            let piece: StepsOnly = toml::from_str(&text[start..end]).ok()?;
            for step in piece.steps {
                if let Some(datasets) = step.datasets().ok()? {
                    signals
                        .datasets
                        .insert(step.name.get_ref().clone(), datasets);
                }
                definition = definition.step(self.step_definition(step).ok()?);
            }
        }
        FlowGraph::new(definition)
            .ok()
            .map(|graph| graph.with_signals(signals))
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
        let mut signals = spec.signals().map_err(|(span, p)| at(Some(span), p))?;
        let mut name_spans: HashMap<String, Range<usize>> = HashMap::new();
        let schedule = spec
            .schedule
            .map(|s| s.check(spec.time_qualifier, spec.name.get_ref()))
            .transpose()
            .map_err(|(span, p)| at(Some(span), p))?;
        let mut definition = FlowDefinition::new(spec.name.get_ref().clone())
            .time_qualifier(spec.time_qualifier)
            .schedule(schedule);
        for step in spec.steps {
            name_spans
                .entry(step.name.get_ref().clone())
                .or_insert(step.name.span());
            if let Some(datasets) = step.datasets().map_err(|(span, p)| at(Some(span), p))? {
                signals
                    .datasets
                    .insert(step.name.get_ref().clone(), datasets);
            }
            let def = self
                .step_definition(step)
                .map_err(|(span, p)| at(Some(span), p))?;
            definition = definition.step(def);
        }
        FlowGraph::new(definition)
            .map(|graph| graph.with_signals(signals))
            .map_err(|e| {
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
        // The name is half of the action's logger name (`STEP.ACTION`):
        // the step-name rule keeps it one plain word in every log line.
        if !crate::graph::valid_name(&name) {
            return Err(in_step(SpecProblem::Arg(ArgError::Invalid {
                arg: "name".into(),
                message: format!(
                    "{} is not a valid action name: {}",
                    crate::graph::shown_name(&name),
                    crate::graph::NAME_RULE
                ),
            })));
        }
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
                let built = self.registry.build(&undo_kind, undo).map_err(|p| {
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
        let action = self.registry.build(&kind, table).map_err(|p| {
            in_step(SpecProblem::InAction {
                action: kind.clone(),
                problem: Box::new(p),
            })
        })?;
        if let Some(settings) = self.registry.checked_settings() {
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
    #[serde(default)]
    schedule: Option<ScheduleFile>,
    /// Who is told what about this flow's runs (besides the settings').
    #[serde(default)]
    notify: Vec<Spanned<NotifySpec>>,
    /// When a run is due processed ([`Sla`]).
    #[serde(default)]
    sla: Option<Spanned<String>>,
    #[serde(default)]
    sla_from: SlaFrom,
}

/// `[schedule]` as written; [`ScheduleFile::check`] makes it a
/// [`Schedule`](crate::Schedule).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    #[serde(default, with = "humantime_serde")]
    lag: Option<Duration>,
    #[serde(default)]
    earliest_timeperiod: Option<Spanned<String>>,
    #[serde(default)]
    retry_limit: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    retry_delay: Option<Duration>,
    #[serde(default)]
    retry_backoff: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    retry_max_delay: Option<Duration>,
    #[serde(default)]
    depends_on_flows: Vec<Spanned<String>>,
}

impl ScheduleFile {
    /// The schedule of the flow `name` of `qualifier`, or what is wrong and
    /// where.
    fn check(
        self,
        qualifier: TimeQualifier,
        name: &str,
    ) -> Result<crate::Schedule, (Range<usize>, SpecProblem)> {
        let defaults = crate::Schedule::default();
        let earliest = self
            .earliest_timeperiod
            .map(|t| {
                crate::Timeperiod::parse_for(t.get_ref(), qualifier).map_err(|e| {
                    (
                        t.span(),
                        SpecProblem::Schedule(format!("earliest_timeperiod: {e}")),
                    )
                })
            })
            .transpose()?;
        let mut depends_on_flows = Vec::new();
        for flow in self.depends_on_flows {
            let problem = if !crate::graph::valid_name(flow.get_ref()) {
                Some(format!(
                    "depends_on_flows: {} is not a flow name",
                    crate::graph::shown_name(flow.get_ref())
                ))
            } else if flow.get_ref() == name {
                Some(format!(
                    "depends_on_flows: flow '{name}' cannot wait for itself"
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err((flow.span(), SpecProblem::Schedule(problem)));
            }
            depends_on_flows.push(flow.into_inner());
        }
        Ok(crate::Schedule {
            lag: self.lag.unwrap_or(defaults.lag),
            earliest_timeperiod: earliest,
            retry_limit: self.retry_limit.unwrap_or(defaults.retry_limit),
            retry_delay: self.retry_delay.unwrap_or(defaults.retry_delay),
            retry_backoff: self.retry_backoff.unwrap_or(defaults.retry_backoff),
            retry_max_delay: self.retry_max_delay.unwrap_or(defaults.retry_max_delay),
            depends_on_flows,
        })
    }
}

impl FileSpec {
    /// The file's `[[notify]]` and `sla`, checked; a problem with its span.
    fn signals(&self) -> Result<FlowSignals, (Range<usize>, SpecProblem)> {
        let mut notify = Vec::with_capacity(self.notify.len());
        for entry in &self.notify {
            if let Some(problem) = entry.get_ref().problem() {
                return Err((entry.span(), SpecProblem::Signals(problem)));
            }
            if let NotifySpec::Email {
                ca_file: Some(_), ..
            } = entry.get_ref()
            {
                return Err((
                    entry.span(),
                    SpecProblem::Signals(
                        "[[notify]] ca_file belongs in the settings' [[notify]] entries, not in a flow file (which CAs to trust is the machine's)".into(),
                    ),
                ));
            }
            notify.push(entry.get_ref().clone());
        }
        let sla = match &self.sla {
            None => None,
            Some(text) => {
                let within = humantime_serde::re::humantime::parse_duration(text.get_ref())
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        (
                            text.span(),
                            SpecProblem::Signals(format!(
                                "sla = {:?} is not a duration such as \"2h\" or \"90m\" (greater than zero)",
                                text.get_ref()
                            )),
                        )
                    })?;
                Some(Sla {
                    within,
                    from: self.sla_from,
                })
            }
        };
        Ok(FlowSignals {
            notify,
            sla,
            datasets: Default::default(),
        })
    }
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
    /// Datasets it reads, for OpenLineage (`flow_core::lineage::Dataset`).
    #[serde(default)]
    inputs: Vec<Spanned<String>>,
    /// Datasets it writes.
    #[serde(default)]
    outputs: Vec<Spanned<String>>,
}

impl StepFile {
    /// Its `inputs` and `outputs`, checked (an unknown scheme refused at
    /// the URI), when it declares any.
    fn datasets(&self) -> Result<Option<StepDatasets>, (Range<usize>, SpecProblem)> {
        if self.inputs.is_empty() && self.outputs.is_empty() {
            return Ok(None);
        }
        let step = self.name.get_ref();
        let read = |list: &[Spanned<String>], key: &str| {
            list.iter()
                .map(|uri| {
                    Dataset::try_from(uri.get_ref().clone()).map_err(|why| {
                        (
                            uri.span(),
                            SpecProblem::Signals(format!("step '{step}': {key}: {why}")),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Some(StepDatasets {
            inputs: read(&self.inputs, "inputs")?,
            outputs: read(&self.outputs, "outputs")?,
        }))
    }
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
    use crate::context::Settings;
    use std::sync::Arc;

    fn parse(text: &str) -> Result<FlowGraph, SpecError> {
        ActionRegistry::builtin().parse(text, Path::new("f.toml"))
    }

    #[test]
    fn step_datasets_are_read_and_checked_with_their_position() {
        let head = "name = \"etl\"\n[[steps]]\nname = \"a\"\nmain = { action = \"noop\" }\n";
        let good = format!(
            "{head}inputs = [\"s3://raw/events/\", \"/srv/ref.csv\"]\noutputs = [\"gs://out/daily/\"]\n[[steps]]\nname = \"b\"\nmain = {{ action = \"noop\" }}\n"
        );
        let g = parse(&good).unwrap();
        let a = &g.signals().datasets["a"];
        assert_eq!(a.inputs.len(), 2);
        assert_eq!(a.inputs[1].namespace(), "file");
        assert_eq!(a.outputs[0].namespace(), "gs://out");
        assert!(!g.signals().datasets.contains_key("b"));
        // The step-by-step path reads them too.
        let many: String = (0..3)
            .map(|i| format!("[[steps]]\nname = \"s{i}\"\nmain = {{ action = \"noop\" }}\noutputs = [\"s3://b/s{i}/\"]\n"))
            .collect();
        let g = parse(&format!("name = \"etl\"\n{many}")).unwrap();
        assert_eq!(g.signals().datasets["s2"].outputs[0].name(), "s2/");
        for (line, position, says) in [
            ("inputs = [\"ftp://h/x\"]", (5, 11), "unknown scheme ftp://"),
            ("outputs = [\"s3://b/k\", 3]", (5, 24), "expected a string"),
            ("inputs = \"s3://b/k\"", (5, 10), "expected a sequence"),
            ("input = [\"s3://b/k\"]", (5, 1), "unknown field `input`"),
        ] {
            let e = parse(&format!("{head}{line}\n")).unwrap_err();
            assert_eq!(e.position, Some(position), "{line}: {e}");
            assert!(e.to_string().contains(says), "{line}: {e}");
        }
    }

    #[test]
    fn schedules_are_read_and_checked_with_their_position() {
        let steps = "\n[[steps]]\nname = \"a\"\nmain = { action = \"noop\" }\n[[steps]]\nname = \"b\"\nmain = { action = \"noop\" }\n";
        let head = "name = \"report\"\ntime_qualifier = \"daily\"\n";
        let good = format!(
            "{head}[schedule]\nlag = \"15m\"\nearliest_timeperiod = \"2026112000\"\nretry_limit = 5\ndepends_on_flows = [\"hourly_load\"]\n{steps}"
        );
        let g = parse(&good).unwrap();
        let s = g.schedule().unwrap();
        assert_eq!(s.lag, Duration::from_secs(900));
        assert_eq!(s.earliest_timeperiod.unwrap().to_string(), "2026112000");
        assert_eq!(s.retry_limit, 5);
        assert_eq!(s.retry_delay, crate::Schedule::default().retry_delay);
        assert_eq!(s.depends_on_flows, ["hourly_load"]);
        assert!(parse(&format!("{head}{steps}"))
            .unwrap()
            .schedule()
            .is_none());

        let cases = [
            (
                "earliest_timeperiod = \"2026112007\"",
                (4, 23),
                "a daily timeperiod ends in 00",
            ),
            ("lag = \"soon\"", (4, 7), "expected a duration"),
            ("retry_limt = 3", (4, 1), "unknown field `retry_limt`"),
            (
                "depends_on_flows = [\"report\"]",
                (4, 21),
                "cannot wait for itself",
            ),
            (
                "depends_on_flows = [\"no/such\"]",
                (4, 21),
                "is not a flow name",
            ),
        ];
        for (line, position, says) in cases {
            let text = format!("{head}[schedule]\n{line}\n{steps}");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.position, Some(position), "{line}: {e}");
            assert!(e.to_string().contains(says), "{line}: {e}");
        }
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
        let parser = Parser {
            registry: &registry,
        };
        let lean = parser
            .parse_step_by_step(text)
            .expect("the lean path handles a plain file");
        let whole = parser.parse_whole(text, Path::new("f.toml")).unwrap();
        assert_eq!(summary(&lean), summary(&whole));
        assert_eq!(lean.len(), 3);
    }

    #[test]
    fn a_header_line_inside_a_string_falls_back_to_the_whole_parse() {
        let text = "name = \"f\"\ndescription = \"\"\"\n[[steps]]\n\"\"\"\n[[steps]]\nname = \"a\"\nmain = { action = \"identity\" }\n[[steps]]\nname = \"b\"\nmain = { action = \"identity\" }\n";
        let registry = ActionRegistry::builtin();
        let parser = Parser {
            registry: &registry,
        };
        assert!(parser.parse_step_by_step(text).is_none());
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
