//! `flow validate` and `flow graph`: read flow files, touch nothing else.
//! The settings are read only when a flow is named rather than given as a
//! path, since only then are they needed.

use super::{flow_file, is_path, load_graph};
use crate::cli::GraphFormat;
use crate::exit::{CliError, Exit};
use crate::settings::Settings;
use std::path::Path;

/// Checks each file; prints `FILE: ok (N steps)` or `FILE:LINE:COL: problem`.
pub fn validate(settings_path: Option<&Path>, files: &[String]) -> Result<Exit, CliError> {
    let mut settings: Option<Settings> = None;
    let mut failed = 0;
    for arg in files {
        let path = if is_path(arg) {
            Ok(std::path::PathBuf::from(arg))
        } else {
            let loaded = match settings.take() {
                Some(s) => Ok(s),
                None => Settings::load(settings_path),
            };
            loaded.and_then(|s| {
                let path = flow_file(arg, &s);
                settings = Some(s);
                path
            })
        };
        match path.and_then(|p| load_graph(&p).map(|g| (p, g))) {
            Ok((path, graph)) => outln!("{}: ok ({} steps)", path.display(), graph.len()),
            Err(e) => {
                failed += 1;
                errln!("{e}");
            }
        }
    }
    Ok(if failed == 0 {
        Exit::Success
    } else {
        Exit::BadInput
    })
}

/// Prints the flow's DAG in dot or Mermaid.
pub fn graph(
    settings_path: Option<&Path>,
    flow: &str,
    format: GraphFormat,
) -> Result<Exit, CliError> {
    let path = if is_path(flow) {
        std::path::PathBuf::from(flow)
    } else {
        flow_file(flow, &Settings::load(settings_path)?)?
    };
    let graph = load_graph(&path)?;
    match format {
        GraphFormat::Dot => out!("{}", graph.to_dot()),
        GraphFormat::Mermaid => out!("{}", graph.to_mermaid()),
    }
    Ok(Exit::Success)
}
