//! What is wrong with a flow file ([`SpecProblem`]) and where
//! ([`SpecError`]: file, line, column).

use super::ArgError;
use crate::graph::GraphError;
use std::fmt;
use std::path::PathBuf;

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

pub(super) fn position(text: &str, offset: usize) -> (usize, usize) {
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
    /// A value of `[schedule]` is wrong.
    #[error("[schedule]: {0}")]
    Schedule(String),
    /// A `[[notify]]` entry or the `sla` is wrong.
    #[error("{0}")]
    Signals(String),
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
