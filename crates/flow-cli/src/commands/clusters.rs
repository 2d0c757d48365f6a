//! `flow clusters`: the clusters runs launched, as recorded in the store,
//! and `--terminate-orphans`: end those whose run is no longer alive.

use super::{format_time, hostname, parse_timeperiod, small_runtime, table, FlowRef};
use crate::backends;
use crate::exit::{CliError, Exit};
use crate::settings::SettingsFile;
use flow_core::{ClusterRecord, ClusterState, ExecutionContext, FlowKey};
use std::path::Path;
use std::sync::Arc;

pub fn clusters(
    settings_path: Option<&Path>,
    flow: Option<&str>,
    timeperiod: Option<&str>,
    terminate_orphans: bool,
    json: bool,
) -> Result<Exit, CliError> {
    let settings = SettingsFile::load(settings_path)?;
    let flow = flow.map(|f| FlowRef::resolve(f, &settings)).transpose()?;
    let timeperiod = match (timeperiod, &flow) {
        (Some(t), Some(flow)) => Some(parse_timeperiod("timeperiod", t, flow.qualifier())?),
        (Some(_), None) => {
            return Err(CliError::bad_input(
                "--timeperiod needs a FLOW to go with it".to_string(),
            ))
        }
        (None, _) => None,
    };
    let factory = if terminate_orphans {
        Some(backends::cluster_factory(&settings)?)
    } else {
        None
    };
    let plan = backends::plan_store(&settings)?;
    if !plan.exists() {
        outln!(
            "no clusters recorded: there is no store at {}",
            plan.location()
        );
        return Ok(Exit::Success);
    }
    let store = plan.open()?;
    let name = flow.as_ref().map(|f| f.name.clone());
    let key = name
        .as_ref()
        .zip(timeperiod)
        .map(|(n, t)| FlowKey::new(n.clone(), t));
    let store_error = |e: flow_core::StoreError| CliError::failed(e.to_string());
    let runtime = small_runtime()?;

    let Some(factory) = factory else {
        let records: Vec<ClusterRecord> = runtime
            .block_on(store.list_clusters(key.as_ref()))
            .map_err(store_error)?
            .into_iter()
            .filter(|r| name.as_ref().is_none_or(|n| &r.flow_name == n))
            .collect();
        print_records(&records, json)?;
        return Ok(Exit::Success);
    };

    let values = Arc::new(settings.values()?);
    let owner = format!("flow-clusters:{}:{}", hostname(), std::process::id());
    crate::logs::init();
    let outcomes = runtime
        .block_on(flow_engine::terminate_orphans(
            store,
            factory,
            name.as_deref(),
            timeperiod,
            |record| ExecutionContext {
                flow_name: record.flow_name.clone(),
                timeperiod: record.timeperiod,
                start_timeperiod: record.timeperiod,
                end_timeperiod: record.timeperiod,
                settings: values.clone(),
                number_of_clusters: 1,
            },
            &owner,
            settings.lease_ttl(),
        ))
        .map_err(store_error)?;
    if json {
        let value: Vec<_> = outcomes
            .iter()
            .map(|o| {
                serde_json::json!({
                    "cluster": o.record,
                    "terminated": o.result.is_ok(),
                    "result": match &o.result {
                        Ok(state) => state.to_string(),
                        Err(why) => why.clone(),
                    },
                })
            })
            .collect();
        let text =
            serde_json::to_string_pretty(&value).map_err(|e| CliError::failed(e.to_string()))?;
        outln!("{text}");
    } else if outcomes.is_empty() {
        outln!("no orphaned clusters");
    } else {
        for o in &outcomes {
            let r = &o.record;
            match &o.result {
                Ok(state) => outln!("{} [{}] {}: {state}", r.flow_name, r.timeperiod, r.handle),
                Err(why) => outln!(
                    "{} [{}] {}: left alone: {why}",
                    r.flow_name,
                    r.timeperiod,
                    r.handle
                ),
            }
        }
    }
    let failed = outcomes
        .iter()
        .any(|o| o.record.state == ClusterState::TerminateFailed);
    Ok(if failed {
        Exit::FlowFailed
    } else {
        Exit::Success
    })
}

fn print_records(records: &[ClusterRecord], json: bool) -> Result<(), CliError> {
    if json {
        let text =
            serde_json::to_string_pretty(records).map_err(|e| CliError::failed(e.to_string()))?;
        outln!("{text}");
        return Ok(());
    }
    if records.is_empty() {
        outln!("no clusters recorded");
        return Ok(());
    }
    let mut rows = vec![[
        "flow",
        "timeperiod",
        "run",
        "cluster",
        "kind",
        "id",
        "reused",
        "state",
        "launched",
        "updated",
        "message",
    ]
    .map(String::from)
    .to_vec()];
    for r in records {
        rows.push(vec![
            r.flow_name.clone(),
            r.timeperiod.to_string(),
            r.run.to_string(),
            r.handle.name.clone(),
            r.handle.kind.clone(),
            r.handle.backend_id.clone(),
            if r.handle.reused { "yes" } else { "no" }.to_string(),
            r.state.to_string(),
            format_time(Some(r.launched_at)),
            format_time(Some(r.updated_at)),
            r.message.clone().unwrap_or_default().replace('\n', " "),
        ]);
    }
    out!("{}", table(&rows));
    Ok(())
}
