//! Where a delivery's outcome is written: a line of the run's flow log, in
//! the store (`flow logs`, the viewer) and in `LOG_DIR/FLOW/FLOW.log`, in
//! the engine's line format.

use crate::deliver::Outcome;
use crate::notify::{Notice, NotifyConfig};
use flow_core::notify::NotifySpec;
use flow_core::{FlowKey, FlowStore, LogLevel, LogLine, RecordId};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use tracing::warn;

/// Records how the delivery of `notice` to entry `number` went.
pub(crate) async fn outcome(
    config: &NotifyConfig,
    key: &FlowKey,
    run: Option<RecordId>,
    number: usize,
    entry: &NotifySpec,
    notice: &Notice,
    outcome: &Outcome,
) {
    let verdict = if outcome.delivered {
        "delivered"
    } else {
        "failed"
    };
    let message = flow_core::mask(&format!(
        "notification {number} ({}, {}): {verdict} after {} attempt(s): {}",
        entry.kind(),
        notice.event,
        outcome.attempts,
        outcome.detail
    ))
    .into_owned();
    let level = if outcome.delivered {
        LogLevel::Info
    } else {
        LogLevel::Warn
    };
    line(
        &config.store,
        config.log_directory.as_deref(),
        key,
        run,
        level,
        message,
    )
    .await;
}

/// Writes `message` as a line of the run's flow log: in the store (with
/// the run record `run`, when known) and in `LOG_DIR/FLOW/FLOW.log`.
pub(crate) async fn line(
    store: &Arc<dyn FlowStore>,
    log_directory: Option<&Path>,
    key: &FlowKey,
    run: Option<RecordId>,
    level: LogLevel,
    message: String,
) {
    let at = chrono::Utc::now();
    if let Some(run) = run {
        let line = LogLine {
            flow_name: key.flow_name.clone(),
            timeperiod: key.timeperiod,
            run,
            step: None,
            logger: key.flow_name.clone(),
            level,
            at,
            message: message.clone(),
        };
        if let Err(e) = store.append_logs(&[line]).await {
            warn!(flow = %key, "cannot record a delivery's outcome in the store: {e}");
        }
    }
    if let Some(dir) = log_directory {
        let file = dir
            .join(&key.flow_name)
            .join(format!("{}.log", key.flow_name));
        let text = format!(
            "{} {} {} {message}\n",
            at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            key.flow_name,
            level.as_str()
        );
        let written = tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&file)
                .and_then(|mut f| f.write_all(text.as_bytes()))
        })
        .await;
        if let Ok(Err(e)) = written {
            warn!(flow = %key, "cannot write a delivery's outcome to the flow log: {e}");
        }
    }
}
