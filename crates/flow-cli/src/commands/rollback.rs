//! `flow rollback`: undo a processed step (and, with `--cascade`, its
//! processed dependants) by running its actions' rollbacks, newest first.

use super::{flow_file, load_graph_with, parse_timeperiod};
use crate::backends;
use crate::cli::Target;
use crate::exit::{CliError, Exit};
use crate::settings::SettingsFile;
use flow_core::{ExecutionContext, FlowKey, StepState};
use flow_engine::{EngineError, EngineOptions, ExecutionEngine};
use std::path::Path;
use std::sync::Arc;

pub fn rollback(
    settings_path: Option<&Path>,
    target: &Target,
    step: &str,
    cascade: bool,
) -> Result<Exit, CliError> {
    let settings = SettingsFile::load(settings_path)?;
    // Rollback actions render templates too: checked like a run's.
    let values = Arc::new(settings.values()?);
    let graph = Arc::new(load_graph_with(
        &flow_file(&target.flow, &settings)?,
        &values,
    )?);
    let timeperiod = parse_timeperiod(
        "timeperiod",
        &target.timeperiod,
        Some(graph.time_qualifier()),
    )?;
    let key = FlowKey::new(graph.name(), timeperiod);
    if graph.index_of(step).is_none() {
        return Err(CliError::bad_input(
            EngineError::Refused {
                flow: key,
                reason: flow_engine::Refusal::unknown_step(&graph, step),
            }
            .to_string(),
        ));
    }
    let factory = backends::cluster_factory(&settings)?;
    let store_plan = backends::plan_store(&settings)?;
    if !store_plan.exists() {
        return Err(CliError::bad_input(format!(
            "refused to roll back {key}: there is nothing to roll back: the flow has never run (no store at {})",
            store_plan.location()
        )));
    }
    let log_directory = settings.log_directory()?;
    flow_engine::logging::check_log_directory(&log_directory, graph.name())
        .map_err(|e| CliError::bad_input(e.to_string()))?;

    crate::logs::init();
    let store = store_plan.open()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let (start, end) = match store.get_flow(&key).await {
            Ok(Some(flow)) => (flow.start_timeperiod, flow.end_timeperiod),
            _ => (timeperiod, timeperiod.next(graph.time_qualifier())),
        };
        let context = ExecutionContext {
            flow_name: graph.name().to_string(),
            timeperiod,
            start_timeperiod: start,
            end_timeperiod: end,
            settings: values.clone(),
            number_of_clusters: 1,
        };
        let options = EngineOptions {
            log_directory: Some(log_directory.clone()),
            lease_ttl: settings.lease_ttl(),
            heartbeat_interval: settings.heartbeat_interval(),
            cancel_grace: settings.cancel_grace(),
            ..EngineOptions::default()
        };
        let engine = ExecutionEngine::new(graph.clone(), context, store.clone(), factory, options);
        let report = match engine.rollback(step, cascade).await {
            Ok(report) => report,
            Err(
                e @ (EngineError::Refused { .. }
                | EngineError::LeaseHeld { .. }
                | EngineError::Logs { .. }),
            ) => return Err(CliError::bad_input(e.to_string())),
            Err(e) => return Err(CliError::failed(e.to_string())),
        };
        outln!(
            "flow {} [{}]: {}",
            key.flow_name,
            key.timeperiod,
            report.flow_state
        );
        for (name, state) in &report.steps {
            let what = if *state == StepState::Embryo {
                "rolled back".to_string()
            } else {
                format!("rollback failed; the step is {state}")
            };
            outln!("  {name}  {what}");
        }
        outln!("logs: {}/", log_directory.join(&key.flow_name).display());
        match report.error {
            Some(error) => {
                outln!("error: {error}");
                Ok(Exit::FlowFailed)
            }
            None => {
                outln!(
                    "to run the rolled-back steps again: flow recover {} --timeperiod {}",
                    target.flow,
                    key.timeperiod
                );
                Ok(Exit::Success)
            }
        }
    })
}
