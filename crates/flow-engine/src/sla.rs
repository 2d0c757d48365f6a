//! The SLA watch: a timer armed when a run of a flow with an `sla` starts,
//! which fires `sla_miss` at the deadline if the run has not ended by then
//! (so a run still going is reported while it goes, not at its end).
//!
//! Once per flow and timeperiod: the miss is written to the flow record
//! (`sla_missed_at`, a fenced write under the run's lease) before anyone is
//! told, and a run whose flow record already has it (a recover of the same
//! timeperiod) or whose timeperiod was processed before (a rerun) arms
//! nothing. The timer sleeps on tokio's clock, so a test pauses and
//! advances it (`start_paused`). (Not on flow-cloud's `Clock`: a build of
//! `flow` without cloud backends has no `flow-cloud`, which `cargo xtask
//! features` checks.)

use crate::observer::RunObserver;
use chrono::{DateTime, Utc};
use flow_core::notify::{Sla, SlaFrom};
use flow_core::{FlowKey, FlowRecord, FlowState, FlowStore, Lease, RecordId, RunMode};
use std::sync::Arc;
use tokio::sync::Mutex;
use tracing::{error, warn, Instrument, Span};

/// When a run of `timeperiod`'s flow is due processed: `sla.within` after
/// the timeperiod's end (`period_end`) or after `run_start`.
pub fn deadline(sla: &Sla, period_end: DateTime<Utc>, run_start: DateTime<Utc>) -> DateTime<Utc> {
    let from = match sla.from {
        SlaFrom::PeriodEnd => period_end,
        SlaFrom::RunStart => run_start,
    };
    from + chrono::TimeDelta::from_std(sla.within).unwrap_or(chrono::TimeDelta::MAX)
}

/// Whether a run starting from `stored` watches the SLA: not when the
/// miss is recorded already, nor when the timeperiod was processed before
/// this run (a rerun of finished work is not late).
pub fn watches(stored: Option<&FlowRecord>) -> bool {
    match stored {
        None => true,
        Some(flow) => {
            flow.sla_missed_at.is_none()
                && !matches!(flow.state, FlowState::Processed | FlowState::Noop)
        }
    }
}

/// What the watch and the run's end share: whether the run ended (then the
/// watch writes nothing more) and when the miss was recorded.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    ended: bool,
    missed_at: Option<DateTime<Utc>>,
}

/// A running watch; dropping it stops the timer.
pub(crate) struct SlaWatch {
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the watch needs to record and report a miss.
pub(crate) struct Armed {
    pub sla: Sla,
    pub deadline: DateTime<Utc>,
    pub store: Arc<dyn FlowStore>,
    pub lease: Lease,
    pub flow: FlowRecord,
    pub run: RecordId,
    pub mode: RunMode,
    pub observer: Option<Arc<dyn RunObserver>>,
    pub span: Span,
}

impl SlaWatch {
    /// Starts the timer.
    pub(crate) fn arm(armed: Armed) -> SlaWatch {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = tokio::spawn(watch(armed, shared.clone()).instrument(Span::current()));
        SlaWatch { shared, task }
    }

    /// Stops the watch at the run's end and says when the miss was
    /// recorded, if it was (waiting for a write under way to finish, so the
    /// run's final save of the flow record keeps the mark).
    pub(crate) async fn end(self) -> Option<DateTime<Utc>> {
        let mut shared = self.shared.lock().await;
        shared.ended = true;
        self.task.abort();
        shared.missed_at
    }
}

impl Drop for SlaWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(armed: Armed, shared: Arc<Mutex<Shared>>) {
    let Armed {
        sla,
        deadline,
        store,
        lease,
        mut flow,
        run,
        mode,
        observer,
        span,
    } = armed;
    let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    let mut state = shared.lock().await;
    if state.ended {
        return;
    }
    let at = Utc::now();
    flow.sla_missed_at = Some(at);
    let key: FlowKey = flow.key();
    if let Err(e) = store.save_flow(&lease, &flow).await {
        span.in_scope(|| error!("the SLA passed at {deadline} but cannot be recorded: {e}"));
        return;
    }
    state.missed_at = Some(at);
    drop(state);
    let from = match sla.from {
        SlaFrom::PeriodEnd => "the timeperiod's end",
        SlaFrom::RunStart => "the run's start",
    };
    span.in_scope(|| {
        warn!(
            "SLA missed: {key} is not processed by {deadline} ({} after {from})",
            humantime::format_duration(sla.within)
        )
    });
    if let Some(o) = &observer {
        o.sla_missed(&key, &run, mode, deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn the_deadline_counts_from_the_period_end_or_the_run_start() {
        let period_end = at("2026-12-07T11:00:00Z");
        let start = at("2026-12-07T11:30:00Z");
        let two_hours = Duration::from_secs(7200);
        let sla = |from| Sla {
            within: two_hours,
            from,
        };
        assert_eq!(
            deadline(&sla(SlaFrom::PeriodEnd), period_end, start),
            at("2026-12-07T13:00:00Z")
        );
        assert_eq!(
            deadline(&sla(SlaFrom::RunStart), period_end, start),
            at("2026-12-07T13:30:00Z")
        );
    }
}
