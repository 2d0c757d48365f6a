//! The commands, and what they share: finding and loading a flow, parsing
//! timeperiods, and building the async runtime.
//!
//! Every command checks all of its input before it opens the store, so bad
//! input writes nothing, not even a new database file.

mod cancel;
mod clusters;
mod drive;
mod history;
mod jobs;
mod logs;
mod rollback;
mod run;
mod schedule;
#[cfg(feature = "serve")]
mod serve;
mod status;
mod validate;

use crate::cli::{Cli, Command};
use crate::exit::{CliError, Exit};
use crate::settings::SettingsFile;
use flow_core::{ActionRegistry, FlowGraph, RunMode, TimeQualifier, Timeperiod};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Runs the parsed command line; returns the exit code to use.
pub fn execute(cli: Cli) -> Result<Exit, CliError> {
    let settings = cli.settings.as_deref();
    match cli.command {
        Command::Validate { files } => validate::validate(settings, &files),
        Command::Graph { flow, format } => validate::graph(settings, &flow, format),
        Command::Run { target, window } => {
            run::run(settings, RunMode::Nominal, &target, None, &window)
        }
        Command::Recover { target, window } => {
            run::run(settings, RunMode::Recovery, &target, None, &window)
        }
        Command::RunOne {
            target,
            step,
            window,
        } => run::run(settings, RunMode::RunOne, &target, Some(&step), &window),
        Command::RunFrom {
            target,
            step,
            window,
        } => run::run(settings, RunMode::RunFrom, &target, Some(&step), &window),
        Command::Drive(args) => drive::drive(settings, &args),
        Command::Schedule {
            flows,
            concurrency,
            until_caught_up,
            poll,
        } => schedule::schedule(
            settings,
            &flows,
            schedule::Options {
                concurrency,
                until_caught_up,
                poll,
            },
        ),
        Command::Jobs {
            flow,
            from,
            to,
            json,
        } => jobs::jobs(settings, &flow, from.as_deref(), to.as_deref(), json),
        Command::Skip { target } => jobs::skip(settings, &target),
        Command::Reprocess { target, cascade } => jobs::reprocess(settings, &target, cascade),
        Command::Status {
            flow,
            timeperiod,
            json,
        } => status::status(settings, &flow, timeperiod.as_deref(), json),
        Command::Cancel { target } => cancel::cancel(settings, &target),
        Command::Rollback {
            target,
            step,
            cascade,
        } => rollback::rollback(settings, &target, &step, cascade),
        Command::History {
            flow,
            timeperiod,
            limit,
            json,
        } => history::history(
            settings,
            &flow,
            timeperiod.as_deref(),
            limit.map(NonZeroUsize::get),
            json,
        ),
        Command::Logs {
            flow,
            timeperiod,
            step,
            run,
            follow,
        } => logs::logs(
            settings,
            logs::LogsArgs {
                flow: &flow,
                timeperiod: &timeperiod,
                step: step.as_deref(),
                run: run.as_deref(),
                follow,
            },
        ),
        Command::Clusters {
            flow,
            timeperiod,
            terminate_orphans,
            json,
        } => clusters::clusters(
            settings,
            flow.as_deref(),
            timeperiod.as_deref(),
            terminate_orphans,
            json,
        ),
        #[cfg(feature = "serve")]
        Command::Serve { flows, bind } => serve::serve(settings, &flows, bind),
        #[cfg(not(feature = "serve"))]
        Command::Serve { .. } => Err(CliError::bad_input(
            "this build has no viewer; rebuild flow-cli with --features serve (on by default)",
        )),
    }
}

/// True when `arg` names a file rather than a flow in the flows directory.
fn is_path(arg: &str) -> bool {
    arg.ends_with(".toml") || arg.contains('/')
}

/// The flow file `arg` stands for: the path itself, or
/// `FLOWS_DIR/NAME.toml`.
fn flow_file(arg: &str, settings: &SettingsFile) -> Result<PathBuf, CliError> {
    if is_path(arg) {
        return Ok(PathBuf::from(arg));
    }
    match settings.flows_directory() {
        Some(dir) => Ok(dir.join(format!("{arg}.toml"))),
        None => Err(CliError::bad_input(format!(
            "'{arg}' is not a flow file (a path ending in .toml or containing '/'), and {} sets no flows_directory to look it up in",
            settings.source
        ))),
    }
}

/// Reads and validates a flow file; errors carry `file:line:column`.
fn load_graph(path: &Path) -> Result<FlowGraph, CliError> {
    ActionRegistry::builtin()
        .load_file(path)
        .map_err(|e| CliError::bad_input(e.to_string()))
}

/// Reads and validates a flow file and checks its substitutions against
/// `values` (every `{settings.NAME}` defined, shell-safe where it must be,
/// no secret in an argument vector), so none fails at run time.
fn load_graph_with(path: &Path, values: &Arc<flow_core::Settings>) -> Result<FlowGraph, CliError> {
    ActionRegistry::builtin()
        .checking_settings(values.clone())
        .load_file(path)
        .map_err(|e| CliError::bad_input(e.to_string()))
}

/// Parses the value of `--FLAG` as a timeperiod of `qualifier` (any grid
/// point when the flow is not known).
fn parse_timeperiod(
    flag: &str,
    text: &str,
    qualifier: Option<TimeQualifier>,
) -> Result<Timeperiod, CliError> {
    let parsed = match qualifier {
        Some(q) => Timeperiod::parse_for(text, q),
        None => text.parse(),
    };
    parsed.map_err(|e| CliError::bad_input(format!("--{flag}: {e}")))
}

/// A flow as `status` and `cancel` see it: a flow file (or a name in the
/// flows directory), or else just a stored flow name.
struct FlowRef {
    name: String,
    graph: Option<FlowGraph>,
}

impl FlowRef {
    fn resolve(arg: &str, settings: &SettingsFile) -> Result<FlowRef, CliError> {
        let in_flows_dir = !is_path(arg)
            && settings
                .flows_directory()
                .is_some_and(|dir| dir.join(format!("{arg}.toml")).is_file());
        if is_path(arg) || in_flows_dir {
            let graph = load_graph(&flow_file(arg, settings)?)?;
            return Ok(FlowRef {
                name: graph.name().to_string(),
                graph: Some(graph),
            });
        }
        Ok(FlowRef {
            name: arg.to_string(),
            graph: None,
        })
    }

    fn qualifier(&self) -> Option<TimeQualifier> {
        self.graph.as_ref().map(FlowGraph::time_qualifier)
    }
}

/// A single-threaded runtime for the short store conversations of `status`
/// and `cancel`.
fn small_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))
}

/// This machine's name, for lease owner ids.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// A timestamp for tables: UTC, to the second.
fn format_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

/// The time between two stored instants, if both are known.
fn elapsed(
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<std::time::Duration> {
    (to? - from?).to_std().ok()
}

/// Left-aligned columns separated by two spaces; the last is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert!(is_path("examples/hello.toml"));
        assert!(is_path("hello.toml"));
        assert!(is_path("./hello"));
        assert!(!is_path("hello"));
    }

    #[test]
    fn tables_align() {
        let t = table(&[
            vec!["a".into(), "bb".into(), "c".into()],
            vec!["long".into(), "x".into(), "".into()],
        ]);
        assert_eq!(t, "a     bb  c\nlong  x\n");
    }
}
