//! `flow validate` and `flow graph`: read flow files, touch nothing else.
//! `validate` also reads the settings (`--settings`, `FLOW_SETTINGS` or
//! `./flow.toml`) and checks every substitution against them, as a run
//! would before it starts; `graph` reads them only to find a flow by name.

use super::{flow_file, is_path, load_graph, load_graph_with};
use crate::cli::GraphFormat;
use crate::exit::{CliError, Exit};
use crate::settings::{SettingsFile, Source};
use std::path::Path;
use std::sync::Arc;

/// Checks each file; prints `FILE: ok (N steps)` or `FILE:LINE:COL: problem`.
/// A settings file in effect is checked too, and every flow against it.
pub fn validate(settings_path: Option<&Path>, files: &[String]) -> Result<Exit, CliError> {
    let settings = SettingsFile::load(settings_path)?;
    let values = match settings.source {
        Source::File(_) => Some(Arc::new(settings.values()?)),
        Source::Defaults => None,
    };
    let mut failed = 0;
    for arg in files {
        let path = if is_path(arg) {
            Ok(std::path::PathBuf::from(arg))
        } else {
            flow_file(arg, &settings)
        };
        let loaded = path.and_then(|p| {
            let graph = match &values {
                Some(values) => load_graph_with(&p, values),
                None => load_graph(&p),
            };
            graph.map(|g| (p, g))
        });
        match loaded {
            Ok((path, graph)) if values.is_some() => outln!(
                "{}: ok ({} steps; settings from {})",
                path.display(),
                graph.len(),
                settings.source
            ),
            Ok((path, graph)) => outln!(
                "{}: ok ({} steps; no settings file, so {{settings.NAME}} values were not checked)",
                path.display(),
                graph.len()
            ),
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
        flow_file(flow, &SettingsFile::load(settings_path)?)?
    };
    let graph = load_graph(&path)?;
    match format {
        GraphFormat::Dot => out!("{}", graph.to_dot()),
        GraphFormat::Mermaid => out!("{}", graph.to_mermaid()),
    }
    Ok(Exit::Success)
}
