//! Notifications: which `[[notify]]` entries a run's end concerns
//! ([`Notifier::deliveries`]), the message each gets, and its delivery
//! (`deliver.rs`). Deliveries run as their own tasks after the run ended:
//! they never hold up, slow or fail a run, and each one's outcome is
//! recorded as a line of the run's flow log (in the store and in
//! `LOG_DIR/FLOW/FLOW.log`).

use crate::signal::RunEnd;
use chrono::{DateTime, Utc};
use flow_core::notify::{NotifyEvent, NotifySpec};
use flow_core::{FlowKey, FlowState, FlowStore, RecordId, RunMode, RunQuery, StepState};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Who is told what, and where the facts come from.
#[derive(Clone)]
pub struct NotifyConfig {
    /// The settings' `[[notify]]` entries: every flow's runs.
    pub global: Vec<NotifySpec>,
    /// Each flow file's own entries, by flow name.
    pub per_flow: HashMap<String, Vec<NotifySpec>>,
    /// Where the viewer is reached, for the run's link.
    pub viewer_url: Option<String>,
    /// The store the runs write (failed steps' errors, the run history,
    /// and where delivery outcomes are recorded).
    pub store: Arc<dyn FlowStore>,
    /// Root of the flow log files, if they are written.
    pub log_directory: Option<PathBuf>,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("global", &self.global)
            .field("per_flow", &self.per_flow)
            .field("viewer_url", &self.viewer_url)
            .finish_non_exhaustive()
    }
}

impl NotifyConfig {
    /// The entries that concern `flow`.
    pub fn entries(&self, flow: &str) -> impl Iterator<Item = &NotifySpec> {
        self.global
            .iter()
            .chain(self.per_flow.get(flow).into_iter().flatten())
    }

    /// Whether any entry exists at all.
    pub fn any(&self) -> bool {
        !self.global.is_empty() || self.per_flow.values().any(|v| !v.is_empty())
    }
}

/// A failed step and its (masked) error.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FailedStep {
    /// The step.
    pub step: String,
    /// Its error, as stored.
    pub error: Option<String>,
}

/// The facts a notification carries: the webhook's JSON body, and the
/// text of the Slack message and the mail. Never a secret: errors are
/// stored masked, and no setting is copied in.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Notice {
    /// `failure`, `success`, `recovered`, `sla_miss`, `cluster_left_up`,
    /// `lease_lost`.
    pub event: &'static str,
    /// The flow.
    pub flow: String,
    /// The timeperiod.
    pub timeperiod: String,
    /// The run record's id (`flow history`), when the run has one.
    pub run: Option<String>,
    /// The run mode.
    pub mode: Option<&'static str>,
    /// The flow's state.
    pub state: Option<&'static str>,
    /// Steps that failed, with their errors.
    pub failed_steps: Vec<FailedStep>,
    /// Clusters the run could not terminate ("NAME: why").
    pub clusters_left_up: Vec<String>,
    /// Why the run stopped, when it did not end normally.
    pub error: Option<String>,
    /// The run in the viewer, when `viewer_url` is set.
    pub url: Option<String>,
    /// For `sla_miss`: when the flow was due processed (RFC 3339).
    pub sla_deadline: Option<String>,
    /// The same for every attempt of this notification to this receiver:
    /// a receiver that saw it already can drop a retry.
    pub idempotency_key: String,
}

impl Notice {
    /// One line for people (Slack, the mail's subject).
    pub fn headline(&self) -> String {
        format!(
            "flow {} {}: {}{}",
            self.flow,
            self.timeperiod,
            self.event,
            self.state.map(|s| format!(" ({s})")).unwrap_or_default()
        )
    }

    /// The facts as text (Slack, the mail's body).
    pub fn text(&self) -> String {
        let mut text = self.headline();
        if let Some(run) = &self.run {
            text.push_str(&format!("\nrun {run}"));
        }
        if let Some(mode) = self.mode {
            text.push_str(&format!(" ({mode})"));
        }
        for failed in &self.failed_steps {
            text.push_str(&format!(
                "\nstep {} failed: {}",
                failed.step,
                failed.error.as_deref().unwrap_or("(no error recorded)")
            ));
        }
        for cluster in &self.clusters_left_up {
            text.push_str(&format!("\ncluster left up: {cluster}"));
        }
        if let Some(error) = &self.error {
            text.push_str(&format!("\n{error}"));
        }
        if let Some(deadline) = &self.sla_deadline {
            text.push_str(&format!("\nnot processed by its SLA deadline {deadline}"));
        }
        if let Some(url) = &self.url {
            text.push_str(&format!("\n{url}"));
        }
        text
    }
}

/// The events a run's end is.
pub(crate) async fn events(end: &RunEnd, store: &dyn FlowStore) -> Vec<NotifyEvent> {
    let mut events = Vec::new();
    if end.lease_lost {
        events.push(NotifyEvent::LeaseLost);
    }
    let Some(report) = &end.report else {
        return events;
    };
    match report.state {
        FlowState::Invalid if !report.canceled => events.push(NotifyEvent::Failure),
        FlowState::Processed | FlowState::Noop => {
            events.push(NotifyEvent::Success);
            if previous_run_failed(store, &end.flow, &report.run).await {
                events.push(NotifyEvent::Recovered);
            }
        }
        _ => {}
    }
    if !report.clusters_left_up.is_empty() {
        events.push(NotifyEvent::ClusterLeftUp);
    }
    events
}

/// Whether the run of `key` before `run` ended `state_invalid`.
async fn previous_run_failed(store: &dyn FlowStore, key: &FlowKey, run: &RecordId) -> bool {
    let query = RunQuery {
        flow_name: Some(key.flow_name.clone()),
        timeperiod: Some(key.timeperiod),
        limit: Some(2),
    };
    let Ok(runs) = store.list_runs(&query).await else {
        return false;
    };
    runs.iter()
        .find(|r| r.id.as_ref() != Some(run))
        .is_some_and(|r| r.outcome == Some(FlowState::Invalid))
}

/// The notice of `event` for a run's end.
pub(crate) async fn notice(event: NotifyEvent, end: &RunEnd, config: &NotifyConfig) -> Notice {
    let key = &end.flow;
    let failed_steps = match &end.report {
        Some(report) if event == NotifyEvent::Failure => {
            let failed: Vec<&str> = report
                .steps
                .iter()
                .filter(|(_, s)| *s == StepState::Invalid)
                .map(|(n, _)| n.as_str())
                .collect();
            let records = config.store.get_steps(key).await.unwrap_or_default();
            failed
                .into_iter()
                .map(|step| FailedStep {
                    step: step.to_string(),
                    error: records
                        .iter()
                        .find(|r| r.step_name == step)
                        .and_then(|r| r.error.clone()),
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let run = end.report.as_ref().map(|r| r.run.to_string());
    Notice {
        event: event.as_str(),
        flow: key.flow_name.clone(),
        timeperiod: key.timeperiod.to_string(),
        idempotency_key: idempotency_key(event, key, run.as_deref()),
        run,
        mode: Some(end.mode.as_str()),
        state: end.report.as_ref().map(|r| r.state.as_str()),
        failed_steps,
        clusters_left_up: end
            .report
            .as_ref()
            .map(|r| r.clusters_left_up.clone())
            .unwrap_or_default(),
        error: end
            .report
            .as_ref()
            .and_then(|r| r.error.clone())
            .or_else(|| end.error.clone()),
        url: viewer_link(config.viewer_url.as_deref(), key),
        sla_deadline: None,
    }
}

/// The notice of an SLA miss, sent while the run may still be going: its
/// state is the flow's (`state_in_progress`), and the idempotency key is
/// the flow and timeperiod's, since it is sent once per both.
pub(crate) fn sla_notice(
    key: &FlowKey,
    run: &RecordId,
    mode: RunMode,
    deadline: DateTime<Utc>,
    config: &NotifyConfig,
) -> Notice {
    Notice {
        event: NotifyEvent::SlaMiss.as_str(),
        flow: key.flow_name.clone(),
        timeperiod: key.timeperiod.to_string(),
        idempotency_key: idempotency_key(NotifyEvent::SlaMiss, key, None),
        run: Some(run.to_string()),
        mode: Some(mode.as_str()),
        state: Some(FlowState::InProgress.as_str()),
        failed_steps: Vec::new(),
        clusters_left_up: Vec::new(),
        error: None,
        url: viewer_link(config.viewer_url.as_deref(), key),
        sla_deadline: Some(deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    }
}

/// The viewer's page of the run (`BASE/#/flows/FLOW/TIMEPERIOD`).
pub(crate) fn viewer_link(base: Option<&str>, key: &FlowKey) -> Option<String> {
    base.map(|base| {
        format!(
            "{}/#/flows/{}/{}",
            base.trim_end_matches('/'),
            key.flow_name,
            key.timeperiod
        )
    })
}

/// The same for every attempt of one notification: the event, the flow
/// run and (without a run record) the timeperiod, hashed.
pub(crate) fn idempotency_key(event: NotifyEvent, key: &FlowKey, run: Option<&str>) -> String {
    let mut hash = Sha256::new();
    for part in [
        event.as_str(),
        key.flow_name.as_str(),
        &key.timeperiod.to_string(),
        run.unwrap_or(""),
    ] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    hex(&hash.finalize()[..16])
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
