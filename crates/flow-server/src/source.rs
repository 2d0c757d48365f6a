//! Where run history and log lines come from, behind one small interface.
//!
//! Today's stores keep neither, so [`FileSource`] reads logs from the log
//! files (paged by line number, within the run's time window) and builds
//! the run history from the runs this server started plus the latest run
//! the flow record describes. When the store records runs and log lines
//! itself, a `StoreSource` implementing the same two methods with the
//! store's `list_runs` and `read_logs` replaces it; nothing else changes.

use crate::error::ApiError;
use crate::logs::{log_path, read_page, LogPage, Window};
use crate::runs::{Registry, RunView};
use async_trait::async_trait;
use flow_core::{FlowKey, FlowStore, Settings};
use std::path::PathBuf;
use std::sync::Arc;

/// Run history and log lines of flow runs.
#[async_trait]
pub trait Source: Send + Sync {
    /// The lines of `key`'s run (its flow log, or `step`'s log) after
    /// position `after`, at most `limit`.
    async fn logs(
        &self,
        key: &FlowKey,
        step: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<LogPage, ApiError>;

    /// The runs of `key`, newest first.
    async fn runs(&self, key: &FlowKey) -> Result<Vec<RunView>, ApiError>;
}

/// Logs from files, runs from this server's registry and the flow record.
pub struct FileSource {
    pub store: Arc<dyn FlowStore>,
    pub log_directory: Option<PathBuf>,
    pub registry: Arc<Registry>,
    pub redact: Arc<Settings>,
}

#[async_trait]
impl Source for FileSource {
    async fn logs(
        &self,
        key: &FlowKey,
        step: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<LogPage, ApiError> {
        let empty = LogPage {
            lines: Vec::new(),
            next_after: after,
            more: false,
            source: "log_file",
        };
        let Some(dir) = &self.log_directory else {
            return Ok(empty);
        };
        // The run's window: the step's (or flow's) record times. Without a
        // record, this timeperiod has no lines.
        let window = match step {
            Some(step) => {
                let steps = self.store.get_steps(key).await?;
                match steps.into_iter().find(|s| s.step_name == step) {
                    Some(s) => Window::new(s.started_at, s.finished_at),
                    None => return Ok(empty),
                }
            }
            None => match self.store.get_flow(key).await? {
                Some(f) => Window::new(f.started_at, f.finished_at),
                None => return Ok(empty),
            },
        };
        if window.from.is_none() {
            return Ok(empty);
        }
        let Some(path) = log_path(dir, &key.flow_name, step) else {
            return Ok(empty);
        };
        let step = step.map(str::to_string);
        let redact = self.redact.clone();
        tokio::task::spawn_blocking(move || {
            read_page(&path, step.as_deref(), window, after, limit, &redact)
                .map_err(|e| ApiError::Internal(format!("cannot read {}: {e}", path.display())))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("log reader stopped: {e}")))?
    }

    async fn runs(&self, key: &FlowKey) -> Result<Vec<RunView>, ApiError> {
        let mut runs = self.registry.runs_of(key);
        if let Some(flow) = self.store.get_flow(key).await? {
            // The record's latest run, unless it is one of ours.
            let ours = flow.started_at.is_some_and(|started| {
                runs.iter().any(|r| {
                    r.requested_at.is_some_and(|at| at <= started)
                        && r.finished_at.is_none_or(|end| started <= end)
                })
            });
            if !ours && flow.started_at.is_some() {
                let record = RunView::from_record(&flow);
                let at = runs
                    .iter()
                    .position(|r| r.requested_at < record.started_at)
                    .unwrap_or(runs.len());
                runs.insert(at, record);
            }
        }
        Ok(runs)
    }
}
