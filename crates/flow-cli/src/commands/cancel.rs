//! `flow cancel`: give up on the unfinished steps of a flow that is not
//! running (Synergy's "skip job"), through [`flow_engine::cancel_flow`].

use super::{hostname, parse_timeperiod, small_runtime, FlowRef};
use crate::backends;
use crate::cli::Target;
use crate::exit::{CliError, Exit};
use crate::settings::SettingsFile;
use flow_core::FlowKey;
use flow_engine::{cancel_flow, CancelError, CancelRequest};
use std::path::Path;
use std::sync::Arc;

pub fn cancel(settings_path: Option<&Path>, target: &Target) -> Result<Exit, CliError> {
    let settings = SettingsFile::load(settings_path)?;
    let flow = FlowRef::resolve(&target.flow, &settings)?;
    let timeperiod = parse_timeperiod("timeperiod", &target.timeperiod, flow.qualifier())?;
    let key = FlowKey::new(flow.name.clone(), timeperiod);
    let plan = backends::plan_store(&settings)?;
    let no_record = |location: &str| {
        CliError::bad_input(format!(
            "no record of flow {key} in the store at {location}: nothing to cancel"
        ))
    };
    if !plan.exists() {
        return Err(no_record(&plan.location()));
    }
    let factory = backends::cluster_factory(&settings)?;
    let values = Arc::new(settings.values()?);
    let store = plan.open()?;
    let owner = format!("flow-cancel:{}:{}", hostname(), std::process::id());
    let ttl = settings.lease_ttl();
    small_runtime()?.block_on(async {
        let request = CancelRequest {
            key: &key,
            graph: flow.graph.as_ref(),
            factory: &factory,
            values: &values,
            owner: &owner,
            ttl,
        };
        let outcome = match cancel_flow(&store, request).await {
            Ok(outcome) => outcome,
            Err(CancelError::NoRecord) => return Err(no_record(&plan.location())),
            Err(e @ CancelError::Held { .. }) => return Err(CliError::bad_input(e.to_string())),
            Err(e @ CancelError::Store(_)) => return Err(CliError::failed(e.to_string())),
        };
        for problem in &outcome.problems {
            errln!("warning: {problem}");
        }
        if outcome.canceled.is_empty() {
            outln!(
                "flow {} [{}]: {}; no unfinished step to cancel",
                key.flow_name,
                key.timeperiod,
                outcome.state
            );
        } else {
            outln!(
                "flow {} [{}]: {}; canceled {}",
                key.flow_name,
                key.timeperiod,
                outcome.state,
                outcome.canceled.join(", ")
            );
        }
        Ok(Exit::Success)
    })
}
