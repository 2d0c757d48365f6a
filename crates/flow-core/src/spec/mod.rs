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

mod args;
mod error;
mod parser;
mod registry;

pub use args::{ActionArgs, ArgError};
pub use error::{toml_message, SpecError, SpecProblem};
pub use parser::{read_capped, MAX_FLOW_FILE};
pub use registry::{ActionFactory, ActionRegistry};
