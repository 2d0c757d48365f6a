//! [`Signal`]: what the engine, the store and the backends report, and
//! [`Emitter`]: the bounded queue they report into without waiting.

use chrono::{DateTime, Utc};
use flow_core::{FlowKey, RecordId, RunMode, StepState};
use flow_engine::RunReport;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// One event for the exporters.
#[derive(Debug, Clone)]
pub enum Signal {
    /// A run mode took the lease.
    RunStarted {
        /// The run's `[flow, timeperiod]`.
        flow: FlowKey,
        /// The mode.
        mode: RunMode,
    },
    /// A step started.
    StepStarted {
        /// The run's `[flow, timeperiod]`.
        flow: FlowKey,
        /// The step.
        step: String,
        /// When the attempt it starts (or goes on with) began.
        since: DateTime<Utc>,
    },
    /// A step reached its final state.
    StepFinished {
        /// The run's `[flow, timeperiod]`.
        flow: FlowKey,
        /// The step.
        step: String,
        /// Its final state.
        state: StepState,
        /// How long it ran.
        elapsed: Duration,
    },
    /// A run mode ended (also without a report: a lost lease, a store
    /// failure).
    RunFinished(Box<RunEnd>),
    /// The flow's SLA passed with the run not ended (once per flow and
    /// timeperiod).
    SlaMissed {
        /// The run's `[flow, timeperiod]`.
        flow: FlowKey,
        /// The run that noticed it.
        run: RecordId,
        /// Its mode.
        mode: RunMode,
        /// When the flow was due processed.
        deadline: DateTime<Utc>,
    },
    /// One request to a cloud API.
    CloudRequest {
        /// `emr`, `dataproc`, `gcs`, ...
        backend: String,
        /// The API call.
        call: String,
    },
    /// A cloud job's end was noticed this long after it ended.
    JobNoticed {
        /// The backend.
        backend: String,
        /// How late.
        delay: Duration,
    },
}

/// How a run mode ended.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// The run's `[flow, timeperiod]`.
    pub flow: FlowKey,
    /// The mode.
    pub mode: RunMode,
    /// Whether it took the lease and started (a run refused at the lease
    /// did not).
    pub started: bool,
    /// Whether it stopped because another engine took its lease.
    pub lease_lost: bool,
    /// The report, when the mode ran to its end.
    pub report: Option<RunReport>,
    /// Why it stopped without a report.
    pub error: Option<String>,
}

impl RunEnd {
    /// The state label: the flow's final state, or `error`.
    pub fn state_label(&self) -> &'static str {
        match &self.report {
            Some(report) => report.state.as_str(),
            None => "error",
        }
    }
}

/// The sending side of the signal queue: cheap to clone, never waits. A
/// full queue drops the signal and counts it ([`Emitter::dropped`]), so a
/// slow exporter can never slow a step.
#[derive(Clone, Debug)]
pub struct Emitter {
    queue: mpsc::Sender<Queued>,
    dropped: Arc<AtomicU64>,
    /// Wakes the exporters' thread from its tick (a flush).
    wake: Arc<Notify>,
}

/// What the queue carries: signals, and a request to report once every
/// signal before it was handled (deliveries included).
#[derive(Debug)]
pub(crate) enum Queued {
    Signal(Signal),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Emitter {
    pub(crate) fn channel(capacity: usize) -> (Emitter, mpsc::Receiver<Queued>) {
        let (queue, receiver) = mpsc::channel(capacity);
        (
            Emitter {
                queue,
                dropped: Arc::new(AtomicU64::new(0)),
                wake: Arc::new(Notify::new()),
            },
            receiver,
        )
    }

    /// Queues `signal` if there is room.
    pub fn emit(&self, signal: Signal) {
        if self.queue.try_send(Queued::Signal(signal)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Signals dropped because the queue was full (or closed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything queued before this call was handled.
    pub(crate) async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.queue.send(Queued::Flush(done)).await.is_ok() {
            self.wake.notify_one();
            let _ = wait.await;
        }
    }

    /// What a flush wakes the exporters' thread with.
    pub(crate) fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub(crate) fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

/// Feeds cloud measurements from the backends ([`flow_core::meter`]) into
/// the queue.
pub(crate) struct QueueMeter(pub Emitter);

impl flow_core::meter::Meter for QueueMeter {
    fn cloud_request(&self, backend: &str, call: &str) {
        self.0.emit(Signal::CloudRequest {
            backend: backend.to_string(),
            call: call.to_string(),
        });
    }

    fn job_noticed(&self, backend: &str, delay: Duration) {
        self.0.emit(Signal::JobNoticed {
            backend: backend.to_string(),
            delay,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (emitter, mut queue) = Emitter::channel(2);
        let started = || Signal::JobNoticed {
            backend: "emr".into(),
            delay: Duration::ZERO,
        };
        for _ in 0..5 {
            emitter.emit(started());
        }
        assert_eq!(emitter.dropped(), 3);
        assert!(queue.try_recv().is_ok());
        emitter.emit(started());
        assert_eq!(emitter.dropped(), 3, "room again after a receive");
    }
}
