//! [`SignalObserver`]: the engine's run observer that turns a run's
//! progress into [`Signal`]s, passing every hook on to the observer it
//! wraps (the CLI's progress bar, the viewer's run registry).

use crate::signal::{Emitter, RunEnd, Signal};
use chrono::{DateTime, Utc};
use flow_core::{FlowKey, JobHandle, RecordId, RunMode, StepState};
use flow_engine::{DefinitionChange, EngineError, RunObserver, RunReport};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// One run's observer (the flow and timeperiod are learnt at
/// `run_started`).
pub struct SignalObserver {
    emitter: Emitter,
    inner: Option<Arc<dyn RunObserver>>,
    flow: OnceLock<FlowKey>,
    /// When each starting step's attempt began (`step_attempt`, read at
    /// `step_started`).
    since: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl SignalObserver {
    /// Emits into `emitter`, then calls `inner`'s hooks.
    pub fn new(emitter: Emitter, inner: Option<Arc<dyn RunObserver>>) -> SignalObserver {
        SignalObserver {
            emitter,
            inner,
            flow: OnceLock::new(),
            since: Mutex::new(HashMap::new()),
        }
    }

    /// The run's key; `None` before `run_started` (the engine calls no
    /// step hook before it).
    fn flow(&self) -> Option<FlowKey> {
        self.flow.get().cloned()
    }
}

impl RunObserver for SignalObserver {
    fn run_started(&self, flow: &FlowKey, mode: RunMode, steps_to_run: usize, clusters: usize) {
        let _ = self.flow.set(flow.clone());
        self.emitter.emit(Signal::RunStarted {
            flow: flow.clone(),
            mode,
        });
        if let Some(o) = &self.inner {
            o.run_started(flow, mode, steps_to_run, clusters);
        }
    }

    fn step_attempt(&self, step: &str, since: DateTime<Utc>) {
        self.since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(step.to_string(), since);
        if let Some(o) = &self.inner {
            o.step_attempt(step, since);
        }
    }

    fn step_started(&self, step: &str, cluster: &str) {
        let since = self
            .since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(step)
            .unwrap_or_else(Utc::now);
        if let Some(flow) = self.flow() {
            self.emitter.emit(Signal::StepStarted {
                flow,
                step: step.to_string(),
                since,
            });
        }
        if let Some(o) = &self.inner {
            o.step_started(step, cluster);
        }
    }

    fn job_adopted(&self, step: &str, job: &JobHandle) {
        if let Some(o) = &self.inner {
            o.job_adopted(step, job);
        }
    }

    fn step_finished(&self, step: &str, state: StepState, elapsed: Duration) {
        if let Some(flow) = self.flow() {
            self.emitter.emit(Signal::StepFinished {
                flow,
                step: step.to_string(),
                state,
                elapsed,
            });
        }
        if let Some(o) = &self.inner {
            o.step_finished(step, state, elapsed);
        }
    }

    fn definition_changed(&self, flow: &FlowKey, change: &DefinitionChange) {
        if let Some(o) = &self.inner {
            o.definition_changed(flow, change);
        }
    }

    fn sla_missed(&self, flow: &FlowKey, run: &RecordId, mode: RunMode, deadline: DateTime<Utc>) {
        self.emitter.emit(Signal::SlaMissed {
            flow: flow.clone(),
            run: run.clone(),
            mode,
            deadline,
        });
        if let Some(o) = &self.inner {
            o.sla_missed(flow, run, mode, deadline);
        }
    }

    fn run_finished(&self, flow: &FlowKey, mode: RunMode, result: &Result<RunReport, EngineError>) {
        let (report, error) = match result {
            Ok(report) => (Some(report.clone()), None),
            Err(e) => (None, Some(flow_core::mask(&e.to_string()).into_owned())),
        };
        self.emitter.emit(Signal::RunFinished(Box::new(RunEnd {
            flow: flow.clone(),
            mode,
            started: self.flow.get().is_some(),
            lease_lost: matches!(result, Err(EngineError::LeaseLost { .. })),
            report,
            error,
        })));
        if let Some(o) = &self.inner {
            o.run_finished(flow, mode, result);
        }
    }
}
