//! `flow logs`: a flow run's log lines as recorded in the store (every line
//! of its log files, from whichever host ran it), optionally of one step or
//! one run; `--follow` keeps printing new lines while the flow is running
//! and stops once its run has ended. Also the retention purge run modes do
//! when they start.

use super::{parse_timeperiod, small_runtime, FlowRef};
use crate::backends;
use crate::exit::{CliError, Exit};
use crate::settings::SettingsFile;
use chrono::Utc;
use flow_core::{FlowKey, FlowStore, LogQuery, RecordId, StoreError, StoredLogLine};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Lines read per store call.
const PAGE: usize = 1_000;
/// How often `--follow` asks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

pub struct LogsArgs<'a> {
    pub flow: &'a str,
    pub timeperiod: &'a str,
    pub step: Option<&'a str>,
    pub run: Option<&'a str>,
    pub follow: bool,
}

pub fn logs(settings_path: Option<&Path>, args: LogsArgs<'_>) -> Result<Exit, CliError> {
    let settings = SettingsFile::load(settings_path)?;
    let flow = FlowRef::resolve(args.flow, &settings)?;
    let timeperiod = parse_timeperiod("timeperiod", args.timeperiod, flow.qualifier())?;
    if let Some(step) = args.step {
        if let Some(graph) = &flow.graph {
            if graph.index_of(step).is_none() {
                return Err(CliError::bad_input(format!(
                    "--step: flow '{}' has no step '{step}'",
                    flow.name
                )));
            }
        }
    }
    if args.run.is_some_and(|r| r.trim().is_empty()) {
        return Err(CliError::bad_input("--run: an empty run id".to_string()));
    }
    let key = FlowKey::new(flow.name.clone(), timeperiod);
    let plan = backends::plan_store(&settings)?;
    let no_record = || {
        CliError::bad_input(format!(
            "no record of flow {key} in the store at {}",
            plan.location()
        ))
    };
    if !plan.exists() {
        return Err(no_record());
    }
    let store = plan.open()?;
    let ttl = settings.lease_ttl();
    // An id the store cannot hold is the caller's mistake (exit 2), not
    // a store failure.
    let store_error = |e: StoreError| match e {
        StoreError::InvalidId { .. } => CliError::bad_input(format!("--run: {e}")),
        e => CliError::failed(e.to_string()),
    };
    small_runtime()?.block_on(async {
        if store.get_flow(&key).await.map_err(store_error)?.is_none() {
            return Err(no_record());
        }
        let mut query = LogQuery::new(key.clone(), PAGE);
        query.step = args.step.map(str::to_string);
        query.run = args.run.map(RecordId::new);
        let mut printed = print_new(&store, &mut query).await.map_err(store_error)?;
        if args.follow {
            // While the flow's lease is live its engine may still write;
            // once it is released or stale, one last read and done.
            loop {
                let running = store
                    .get_lease(&key)
                    .await
                    .map_err(store_error)?
                    .is_some_and(|l| l.is_live(Utc::now(), ttl));
                if !running {
                    printed += print_new(&store, &mut query).await.map_err(store_error)?;
                    break;
                }
                tokio::time::sleep(FOLLOW_EVERY).await;
                printed += print_new(&store, &mut query).await.map_err(store_error)?;
            }
        }
        if printed == 0 {
            errln!(
                "no recorded log lines for {key}{}",
                match (args.step, args.run) {
                    (Some(s), Some(r)) => format!(", step {s}, run {r}"),
                    (Some(s), None) => format!(", step {s}"),
                    (None, Some(r)) => format!(", run {r}"),
                    (None, None) => String::new(),
                }
            );
        }
        Ok(Exit::Success)
    })
}

/// Prints every line after `query.after`, page by page, and moves `after`
/// past them. Returns how many it printed.
async fn print_new(store: &Arc<dyn FlowStore>, query: &mut LogQuery) -> Result<usize, StoreError> {
    let mut printed = 0;
    loop {
        let page = store.read_logs(query).await?;
        for line in &page {
            outln!("{}", format_line(line));
        }
        printed += page.len();
        match page.last() {
            Some(last) if page.len() == query.limit => query.after = Some(last.position),
            Some(last) => {
                query.after = Some(last.position);
                return Ok(printed);
            }
            None => return Ok(printed),
        }
    }
}

/// A recorded line as the log file has it.
fn format_line(line: &StoredLogLine) -> String {
    let l = &line.line;
    format!(
        "{} {} {} {}",
        l.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        l.logger,
        l.level,
        l.message
    )
}

/// Deletes recorded lines older than `retention`; a failure is a warning,
/// never a reason not to run.
pub async fn purge_old_lines(store: &Arc<dyn FlowStore>, retention: Duration) {
    let Some(cutoff) = chrono::TimeDelta::from_std(retention)
        .ok()
        .and_then(|r| Utc::now().checked_sub_signed(r))
    else {
        return;
    };
    if let Err(e) = store.purge_logs(cutoff).await {
        errln!("warning: cannot delete recorded log lines older than the retention: {e}");
    }
}
