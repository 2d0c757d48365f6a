//! The flows this server may show and run: validated graphs loaded by the
//! caller from flow files. Every name, step and timeperiod in a request is
//! checked against them before anything else happens.

use crate::error::{ApiError, ServerError};
use crate::layout::{layout, Layout};
use flow_core::{ActionInstance, FlowGraph, Timeperiod};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// One flow the server knows: its graph and where it came from.
#[derive(Debug, Clone)]
pub struct FlowFile {
    pub graph: Arc<FlowGraph>,
    /// Where the flow was loaded from, for messages (e.g. the file path).
    pub origin: String,
}

/// A known flow with its cached drawing.
#[derive(Debug)]
pub struct FlowEntry {
    pub graph: Arc<FlowGraph>,
    pub origin: String,
    layout: OnceLock<Arc<Layout>>,
    actions: OnceLock<Arc<Vec<StepActions>>>,
}

/// One action as the page shows it. Arguments are not shown: they are
/// templates, and the page has no use for them that is worth the risk of
/// showing a literal credential someone wrote into a flow file.
#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    pub name: String,
    pub kind: String,
    pub skip: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The actions of one step, by phase.
#[derive(Debug, Clone, Serialize)]
pub struct StepActions {
    pub pre: Vec<ActionView>,
    pub main: Vec<ActionView>,
    pub post: Vec<ActionView>,
    pub depends_on: Vec<String>,
    pub skip: bool,
    pub retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

fn view(action: &ActionInstance) -> ActionView {
    ActionView {
        name: action.name.clone(),
        kind: action.action.kind().to_string(),
        skip: action.skip,
        timeout_ms: action.timeout.map(|t| t.as_millis() as u64),
    }
}

impl FlowEntry {
    /// The drawing, computed on first use. Blocking for large flows: call
    /// from the blocking pool (see [`Catalog::layout`]).
    pub fn layout_now(&self) -> Arc<Layout> {
        self.layout
            .get_or_init(|| Arc::new(layout(&self.graph)))
            .clone()
    }

    /// What each step runs, in graph order.
    pub fn actions(&self) -> Arc<Vec<StepActions>> {
        self.actions
            .get_or_init(|| {
                Arc::new(
                    self.graph
                        .steps()
                        .iter()
                        .map(|s| StepActions {
                            pre: s.pre.iter().map(view).collect(),
                            main: vec![view(&s.main)],
                            post: s.post.iter().map(view).collect(),
                            depends_on: s.depends_on.clone(),
                            skip: s.skip,
                            retries: s.retry.retries,
                            timeout_ms: s.timeout.map(|t| t.as_millis() as u64),
                        })
                        .collect(),
                )
            })
            .clone()
    }

    /// Parses `text` as a timeperiod of this flow's qualifier.
    pub fn timeperiod(&self, text: &str) -> Result<Timeperiod, ApiError> {
        Timeperiod::parse_for(text, self.graph.time_qualifier())
            .map_err(|e| ApiError::BadRequest(format!("flow '{}': {e}", self.graph.name())))
    }

    /// The index of step `name`, or 404 naming the flow's steps.
    pub fn step(&self, name: &str) -> Result<usize, ApiError> {
        self.graph.index_of(name).ok_or_else(|| {
            let known: Vec<&str> = self
                .graph
                .steps()
                .iter()
                .map(|s| s.name.as_str())
                .take(20)
                .collect();
            let more = if self.graph.len() > 20 { ", ..." } else { "" };
            ApiError::NotFound(format!(
                "flow '{}' has no step '{}' (steps: {}{more})",
                self.graph.name(),
                clip(name),
                known.join(", ")
            ))
        })
    }
}

/// At most 100 characters of user input, for messages.
pub fn clip(text: &str) -> String {
    let mut out: String = text.chars().take(100).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Every flow the server knows, by name.
#[derive(Debug, Default)]
pub struct Catalog {
    flows: HashMap<String, Arc<FlowEntry>>,
    names: Vec<String>,
}

impl Catalog {
    /// Indexes `files` by flow name; two files with one name are refused.
    pub fn new(files: Vec<FlowFile>) -> Result<Catalog, ServerError> {
        let mut catalog = Catalog::default();
        for file in files {
            let name = file.graph.name().to_string();
            if let Some(first) = catalog.flows.get(&name) {
                return Err(ServerError::DuplicateFlow {
                    flow: name,
                    first: first.origin.clone(),
                    second: file.origin,
                });
            }
            catalog.names.push(name.clone());
            catalog.flows.insert(
                name,
                Arc::new(FlowEntry {
                    graph: file.graph,
                    origin: file.origin,
                    layout: OnceLock::new(),
                    actions: OnceLock::new(),
                }),
            );
        }
        catalog.names.sort();
        Ok(catalog)
    }

    /// The flow called `name`, or 404.
    pub fn get(&self, name: &str) -> Result<Arc<FlowEntry>, ApiError> {
        self.flows.get(name).cloned().ok_or_else(|| {
            ApiError::NotFound(format!(
                "unknown flow '{}' (this server shows: {})",
                clip(name),
                self.names.join(", ")
            ))
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.flows.contains_key(name)
    }

    /// Known flows, by name.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<FlowEntry>> {
        self.names.iter().filter_map(|n| self.flows.get(n))
    }

    /// The drawing of `flow`, computed in the blocking pool the first time.
    pub async fn layout(flow: &Arc<FlowEntry>) -> Arc<Layout> {
        if let Some(l) = flow.layout.get() {
            return l.clone();
        }
        let entry = flow.clone();
        match tokio::task::spawn_blocking(move || entry.layout_now()).await {
            Ok(l) => l,
            // The blocking pool is gone (shutdown): compute here.
            Err(_) => flow.layout_now(),
        }
    }
}
