//! The flow's DAG: built once from a [`FlowDefinition`], validated, and never
//! mutated during a run.
//!
//! Run-time state lives in the engine and the store; the graph only answers
//! structural questions, with precomputed adjacency lists so the dispatcher
//! does O(out-degree) work per finished step.

use crate::action::ActionInstance;
use crate::retry::RetryPolicy;
use crate::timeperiod::TimeQualifier;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

/// Step names the engine keeps for itself.
pub const RESERVED_STEP_NAMES: [&str; 2] = ["start", "finish"];

/// The longest flow or step name. Names become file names (`FLOW/STEP.log`)
/// and must fit in one path component with room to spare.
pub const MAX_NAME_LEN: usize = 100;

/// The rule flow and step names follow, as error messages state it.
pub const NAME_RULE: &str = "use 1 to 100 ASCII letters, digits, '_' and '-'";

/// True for a valid flow or step name: 1 to [`MAX_NAME_LEN`] ASCII letters,
/// digits, `_` and `-`. Such a name is a single plain path component (no
/// `/`, no `..`, no NUL, no newline), so a log file named after it stays in
/// its directory and a log line naming it cannot be forged.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// A name for an error message: quoted with control characters escaped, and
/// cut short when long, so a hostile name cannot forge lines or flood a
/// terminal.
pub fn shown_name(name: &str) -> String {
    const SHOWN: usize = 40;
    let count = name.chars().count();
    if count <= SHOWN {
        format!("{name:?}")
    } else {
        let head: String = name.chars().take(SHOWN).collect();
        format!("{head:?}... ({count} characters)")
    }
}

/// One step as written: its actions, dependencies and options.
#[derive(Debug, Clone)]
pub struct StepDefinition {
    /// The step's name: unique in the flow, [`valid_name`].
    pub name: String,
    /// Steps that must be complete (processed or noop) before this one starts.
    pub depends_on: Vec<String>,
    /// Actions run before `main`, in order.
    pub pre: Vec<ActionInstance>,
    /// The step's one main action.
    pub main: ActionInstance,
    /// Actions run after `main`, in order.
    pub post: Vec<ActionInstance>,
    /// A skipped step does not run and counts as `noop`.
    pub skip: bool,
    /// Extra attempts after a failure, and the delays between them.
    pub retry: RetryPolicy,
    /// Limit for one attempt of the whole step.
    pub timeout: Option<Duration>,
}

impl StepDefinition {
    /// A step named `name` whose main action is `main`, with no dependencies, retries or timeout.
    pub fn new(name: impl Into<String>, main: ActionInstance) -> Self {
        StepDefinition {
            name: name.into(),
            depends_on: Vec::new(),
            pre: Vec::new(),
            main,
            post: Vec::new(),
            skip: false,
            retry: RetryPolicy::none(),
            timeout: None,
        }
    }

    /// Adds dependencies on the steps named.
    pub fn depends_on<I, S>(mut self, steps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depends_on.extend(steps.into_iter().map(Into::into));
        self
    }

    /// Adds a `pre` action (after those already added).
    pub fn pre(mut self, action: ActionInstance) -> Self {
        self.pre.push(action);
        self
    }

    /// Adds a `post` action (after those already added).
    pub fn post(mut self, action: ActionInstance) -> Self {
        self.post.push(action);
        self
    }

    /// Marks the step skipped (`true`): it counts as `noop` without running.
    pub fn skipped(mut self, skip: bool) -> Self {
        self.skip = skip;
        self
    }

    /// Retries failed attempts as `retry` says.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Limits one attempt of the whole step to `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A flow as written, before validation: the builder library users write
/// flows with (flow files give the same through
/// [`ActionRegistry::parse`](crate::ActionRegistry::parse)).
///
/// [`build`](FlowDefinition::build) validates it into a [`FlowGraph`]:
///
/// ```
/// use flow_core::actions::{Identity, Noop};
/// use flow_core::{
///     ActionInstance, FlowDefinition, GraphError, RetryPolicy, StepDefinition, TimeQualifier,
/// };
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let identity = || ActionInstance::new(Arc::new(Identity));
/// let graph = FlowDefinition::new("diamond")
///     .time_qualifier(TimeQualifier::Daily)
///     .step(StepDefinition::new("extract", identity()))
///     .step(StepDefinition::new("left", identity()).depends_on(["extract"]))
///     .step(
///         StepDefinition::new("right", ActionInstance::new(Arc::new(Noop)))
///             .depends_on(["extract"])
///             .with_timeout(Duration::from_secs(3600)),
///     )
///     .step(
///         StepDefinition::new("report", identity())
///             .depends_on(["left", "right"])
///             .with_retry(RetryPolicy::none()),
///     )
///     .build()?;
///
/// // Every step comes after its dependencies.
/// let order: Vec<&str> = graph
///     .topological_order()
///     .iter()
///     .map(|&i| graph.step(i).name.as_str())
///     .collect();
/// assert_eq!(order.first(), Some(&"extract"));
/// assert_eq!(order.last(), Some(&"report"));
///
/// // Validation names the steps at fault.
/// let broken = FlowDefinition::new("broken")
///     .step(StepDefinition::new("a", identity()).depends_on(["b"]))
///     .step(StepDefinition::new("b", identity()).depends_on(["a"]))
///     .build();
/// assert!(matches!(broken, Err(GraphError::Cycle { .. })));
/// # Ok::<(), GraphError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FlowDefinition {
    /// The flow's name: [`valid_name`].
    pub name: String,
    /// The length of one timeperiod of the flow (hourly by default).
    pub time_qualifier: TimeQualifier,
    /// The steps, in the order written.
    pub steps: Vec<StepDefinition>,
    /// How `flow schedule` runs it; `None` for a flow run by hand or by
    /// another scheduler.
    pub schedule: Option<crate::schedule::Schedule>,
}

impl FlowDefinition {
    /// An empty flow called `name`, hourly.
    pub fn new(name: impl Into<String>) -> Self {
        FlowDefinition {
            name: name.into(),
            time_qualifier: TimeQualifier::default(),
            steps: Vec::new(),
            schedule: None,
        }
    }

    /// Sets the flow's schedule.
    pub fn schedule(mut self, schedule: Option<crate::schedule::Schedule>) -> Self {
        self.schedule = schedule;
        self
    }

    /// Sets the flow's time qualifier.
    pub fn time_qualifier(mut self, q: TimeQualifier) -> Self {
        self.time_qualifier = q;
        self
    }

    /// Adds a step.
    pub fn step(mut self, step: StepDefinition) -> Self {
        self.steps.push(step);
        self
    }

    /// Validates the definition into a graph.
    pub fn build(self) -> Result<FlowGraph, GraphError> {
        FlowGraph::new(self)
    }
}

/// Why a flow's shape was rejected. Each variant names the steps at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// The flow has an empty name.
    #[error("flow has no name")]
    NoName,
    #[error("flow '{flow}' has no steps")]
    /// The flow has no steps.
    NoSteps {
        /// The flow's name.
        flow: String,
    },
    #[error("step name '{step}' is reserved (reserved names: start, finish)")]
    /// A step is named `start` or `finish`.
    ReservedName {
        /// The step's name.
        step: String,
    },
    #[error("flow name {} is not valid: {NAME_RULE}", shown_name(flow))]
    /// The flow name breaks [`NAME_RULE`].
    InvalidFlowName {
        /// The name as given.
        flow: String,
    },
    #[error("step name {} is not valid: {NAME_RULE}", shown_name(step))]
    /// A step name breaks [`NAME_RULE`].
    InvalidName {
        /// The name as given.
        step: String,
    },
    #[error("step '{step}' is defined more than once")]
    /// Two steps have the same name.
    DuplicateStep {
        /// The step's name.
        step: String,
    },
    #[error("step '{step}' depends on unknown step '{dependency}'")]
    /// A step depends on a step the flow does not have.
    UnknownDependency {
        /// The step's name.
        step: String,
        /// The unknown name.
        dependency: String,
    },
    #[error("dependency cycle among steps: {}", steps.join(" -> "))]
    /// Dependencies form a cycle.
    Cycle {
        /// The steps of the cycle, in order.
        steps: Vec<String>,
    },
    #[error(
        "step '{step}' has {retries} retries; at most {} are allowed",
        crate::retry::MAX_RETRIES
    )]
    /// A step asks for more than [`MAX_RETRIES`](crate::retry::MAX_RETRIES) retries.
    TooManyRetries {
        /// The step's name.
        step: String,
        /// The retries asked for.
        retries: u32,
    },
    #[error("step '{step}' has a timeout of 0s (on the step or one of its actions), which fails every attempt at once")]
    /// A step or one of its actions has a `0s` timeout.
    ZeroTimeout {
        /// The step's name.
        step: String,
    },
}

/// A validated, immutable flow DAG.
#[derive(Debug)]
pub struct FlowGraph {
    name: String,
    time_qualifier: TimeQualifier,
    schedule: Option<crate::schedule::Schedule>,
    steps: Vec<StepDefinition>,
    index: HashMap<String, usize>,
    dependencies: Vec<Vec<usize>>,
    dependants: Vec<Vec<usize>>,
    topological: Vec<usize>,
    signals: crate::notify::FlowSignals,
}

impl FlowGraph {
    /// The graph with the flow file's `[[notify]]` and `sla`.
    pub fn with_signals(mut self, signals: crate::notify::FlowSignals) -> Self {
        self.signals = signals;
        self
    }

    /// The flow file's `[[notify]]` and `sla` (none for a flow built in
    /// code unless [`FlowGraph::with_signals`] set them).
    pub fn signals(&self) -> &crate::notify::FlowSignals {
        &self.signals
    }

    /// Validates `definition`: names, duplicates, dependencies, cycles.
    pub fn new(definition: FlowDefinition) -> Result<Self, GraphError> {
        if definition.name.is_empty() {
            return Err(GraphError::NoName);
        }
        if !valid_name(&definition.name) {
            return Err(GraphError::InvalidFlowName {
                flow: definition.name,
            });
        }
        if definition.steps.is_empty() {
            return Err(GraphError::NoSteps {
                flow: definition.name,
            });
        }
        let mut index = HashMap::with_capacity(definition.steps.len());
        for (i, step) in definition.steps.iter().enumerate() {
            if RESERVED_STEP_NAMES.contains(&step.name.as_str()) {
                return Err(GraphError::ReservedName {
                    step: step.name.clone(),
                });
            }
            if !valid_name(&step.name) {
                return Err(GraphError::InvalidName {
                    step: step.name.clone(),
                });
            }
            if index.insert(step.name.clone(), i).is_some() {
                return Err(GraphError::DuplicateStep {
                    step: step.name.clone(),
                });
            }
            if step.retry.retries > crate::retry::MAX_RETRIES {
                return Err(GraphError::TooManyRetries {
                    step: step.name.clone(),
                    retries: step.retry.retries,
                });
            }
            let zero = |t: Option<Duration>| t.is_some_and(|t| t.is_zero());
            if zero(step.timeout)
                || step
                    .pre
                    .iter()
                    .chain(std::iter::once(&step.main))
                    .chain(&step.post)
                    .any(|a| zero(a.timeout))
            {
                return Err(GraphError::ZeroTimeout {
                    step: step.name.clone(),
                });
            }
        }
        let n = definition.steps.len();
        let mut dependencies = vec![Vec::new(); n];
        let mut dependants = vec![Vec::new(); n];
        let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(n, n);
        for i in 0..n {
            graph.add_node(i);
        }
        for (i, step) in definition.steps.iter().enumerate() {
            for dep in &step.depends_on {
                let Some(&d) = index.get(dep) else {
                    return Err(GraphError::UnknownDependency {
                        step: step.name.clone(),
                        dependency: dep.clone(),
                    });
                };
                if dependencies[i].contains(&d) {
                    continue;
                }
                dependencies[i].push(d);
                dependants[d].push(i);
                graph.add_edge(NodeIndex::new(d), NodeIndex::new(i), ());
            }
        }
        let topological = match kahn_order(&dependencies, &dependants) {
            Some(order) => order,
            None => {
                // Name one cycle: the first strongly connected component with
                // more than one node, or a self-loop.
                let cycle = tarjan_scc(&graph)
                    .into_iter()
                    .find(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
                    .unwrap_or_default();
                let mut steps: Vec<String> = cycle
                    .iter()
                    .map(|n| definition.steps[n.index()].name.clone())
                    .collect();
                steps.sort();
                return Err(GraphError::Cycle { steps });
            }
        };
        Ok(FlowGraph {
            name: definition.name,
            time_qualifier: definition.time_qualifier,
            schedule: definition.schedule,
            steps: definition.steps,
            index,
            dependencies,
            dependants,
            topological,
            signals: crate::notify::FlowSignals::default(),
        })
    }

    /// The flow's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The length of one timeperiod of the flow.
    pub fn time_qualifier(&self) -> TimeQualifier {
        self.time_qualifier
    }

    /// The flow file's `[schedule]`, if it has one.
    pub fn schedule(&self) -> Option<&crate::schedule::Schedule> {
        self.schedule.as_ref()
    }

    /// The number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// True for a flow without steps (never, once validated).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The steps; a step's index is its position here.
    pub fn steps(&self) -> &[StepDefinition] {
        &self.steps
    }

    /// The step at `index`.
    pub fn step(&self, index: usize) -> &StepDefinition {
        &self.steps[index]
    }

    /// The index of the step called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Steps that `index` depends on directly.
    pub fn dependencies(&self, index: usize) -> &[usize] {
        &self.dependencies[index]
    }

    /// Steps that depend on `index` directly.
    pub fn dependants(&self, index: usize) -> &[usize] {
        &self.dependants[index]
    }

    /// Every step in an order where dependencies come first.
    pub fn topological_order(&self) -> &[usize] {
        &self.topological
    }

    /// `index` and every step derived from it, transitively.
    pub fn derived_from(&self, index: usize) -> Vec<bool> {
        let mut seen = vec![false; self.len()];
        let mut queue = VecDeque::from([index]);
        seen[index] = true;
        while let Some(i) = queue.pop_front() {
            for &d in &self.dependants[i] {
                if !seen[d] {
                    seen[d] = true;
                    queue.push_back(d);
                }
            }
        }
        seen
    }

    /// A fingerprint of the graph's shape: its steps and their dependencies
    /// (not their actions), independent of the order of the file. Stored
    /// with the flow record, so a recovery can tell that steps were added or
    /// removed since the run it continues. 16 hex digits of 64-bit FNV-1a:
    /// change detection, not security.
    pub fn shape_hash(&self) -> String {
        let mut steps: Vec<(&str, Vec<&str>)> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut deps: Vec<&str> = self.dependencies[i]
                    .iter()
                    .map(|&d| self.steps[d].name.as_str())
                    .collect();
                deps.sort_unstable();
                (s.name.as_str(), deps)
            })
            .collect();
        steps.sort_unstable();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for &b in bytes {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for (name, deps) in &steps {
            feed(name.as_bytes());
            feed(b"<");
            for dep in deps {
                feed(dep.as_bytes());
                feed(b",");
            }
            feed(b";");
        }
        format!("{hash:016x}")
    }

    /// The graph in Graphviz dot. Every name is a quoted ID with `"` and
    /// `\` escaped, so no name can break the syntax.
    pub fn to_dot(&self) -> String {
        let mut out = format!("digraph {} {{\n  rankdir=LR;\n", dot_id(&self.name));
        for &i in &self.topological {
            let _ = writeln!(out, "  {};", dot_id(&self.steps[i].name));
        }
        for &i in &self.topological {
            for &d in &self.dependants[i] {
                let _ = writeln!(
                    out,
                    "  {} -> {};",
                    dot_id(&self.steps[i].name),
                    dot_id(&self.steps[d].name)
                );
            }
        }
        out.push_str("}\n");
        out
    }

    /// The graph as a Mermaid flowchart. Node ids are `s0`, `s1`, ... (a
    /// step called `end`, `graph` or `subgraph` would otherwise end the
    /// chart); the step names are the quoted labels.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for &i in &self.topological {
            let _ = writeln!(out, "  s{i}[{}]", mermaid_label(&self.steps[i].name));
        }
        for &i in &self.topological {
            for &d in &self.dependants[i] {
                let _ = writeln!(out, "  s{i} --> s{d}");
            }
        }
        out
    }
}

/// A Graphviz double-quoted ID.
fn dot_id(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Mermaid quoted label; `"` becomes the entity `#quot;`.
fn mermaid_label(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "#quot;"))
}

/// Kahn's algorithm; `None` when there is a cycle.
fn kahn_order(dependencies: &[Vec<usize>], dependants: &[Vec<usize>]) -> Option<Vec<usize>> {
    let mut remaining: Vec<usize> = dependencies.iter().map(Vec::len).collect();
    let mut queue: VecDeque<usize> = (0..remaining.len())
        .filter(|&i| remaining[i] == 0)
        .collect();
    let mut order = Vec::with_capacity(remaining.len());
    while let Some(i) = queue.pop_front() {
        order.push(i);
        for &d in &dependants[i] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                queue.push_back(d);
            }
        }
    }
    (order.len() == remaining.len()).then_some(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Identity;
    use std::sync::Arc;

    fn step(name: &str, deps: &[&str]) -> StepDefinition {
        StepDefinition::new(name, ActionInstance::new(Arc::new(Identity)))
            .depends_on(deps.iter().copied())
    }

    fn flow(steps: Vec<StepDefinition>) -> Result<FlowGraph, GraphError> {
        steps
            .into_iter()
            .fold(FlowDefinition::new("f"), FlowDefinition::step)
            .build()
    }

    #[test]
    fn diamond_is_valid() {
        let g = flow(vec![
            step("a", &[]),
            step("b", &["a"]),
            step("c", &["a"]),
            step("d", &["b", "c"]),
        ])
        .unwrap();
        assert_eq!(g.topological_order()[0], 0);
        assert_eq!(g.dependants(0), &[1, 2]);
        let derived = g.derived_from(1);
        assert_eq!(derived, vec![false, true, false, true]);
        assert!(g.to_dot().contains("\"a\" -> \"b\""));
        assert!(g.to_mermaid().contains("s1 --> s3"));
        assert!(g.to_mermaid().contains("s3[\"d\"]"));
    }

    #[test]
    fn the_shape_hash_sees_steps_and_edges_not_order() {
        let a = flow(vec![step("a", &[]), step("b", &["a"])]).unwrap();
        let reordered = flow(vec![step("b", &["a"]), step("a", &[])]).unwrap();
        let added = flow(vec![step("a", &[]), step("b", &["a"]), step("c", &[])]).unwrap();
        let rewired = flow(vec![step("a", &[]), step("b", &[])]).unwrap();
        assert_eq!(a.shape_hash(), reordered.shape_hash());
        assert_eq!(a.shape_hash().len(), 16);
        assert_ne!(a.shape_hash(), added.shape_hash());
        assert_ne!(a.shape_hash(), rewired.shape_hash());
    }

    #[test]
    fn drawings_escape_names_and_avoid_reserved_ids() {
        assert_eq!(dot_id(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(mermaid_label("say \"hi\""), "\"say #quot;hi#quot;\"");
        let g = flow(vec![step("end", &[]), step("graph", &["end"])]).unwrap();
        let mermaid = g.to_mermaid();
        assert_eq!(
            mermaid,
            "flowchart LR\n  s0[\"end\"]\n  s1[\"graph\"]\n  s0 --> s1\n"
        );
    }

    #[test]
    fn rejects_bad_shapes_naming_steps() {
        assert_eq!(
            flow(vec![step("start", &[])]).unwrap_err(),
            GraphError::ReservedName {
                step: "start".into()
            }
        );
        assert_eq!(
            flow(vec![step("finish", &[])]).unwrap_err(),
            GraphError::ReservedName {
                step: "finish".into()
            }
        );
        assert_eq!(
            flow(vec![step("a", &[]), step("a", &[])]).unwrap_err(),
            GraphError::DuplicateStep { step: "a".into() }
        );
        assert_eq!(
            flow(vec![step("a", &["ghost"])]).unwrap_err(),
            GraphError::UnknownDependency {
                step: "a".into(),
                dependency: "ghost".into()
            }
        );
        assert_eq!(
            flow(vec![
                step("a", &[]),
                step("b", &["a", "d"]),
                step("c", &["b"]),
                step("d", &["c"])
            ])
            .unwrap_err(),
            GraphError::Cycle {
                steps: vec!["b".into(), "c".into(), "d".into()]
            }
        );
        assert_eq!(
            flow(vec![step("self", &["self"])]).unwrap_err(),
            GraphError::Cycle {
                steps: vec!["self".into()]
            }
        );
        assert!(matches!(
            flow(vec![]).unwrap_err(),
            GraphError::NoSteps { .. }
        ));
    }
}
