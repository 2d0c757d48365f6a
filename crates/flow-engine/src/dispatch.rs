//! Event-driven dispatch: a step is queued the moment its last dependency
//! completes; one worker per slot of each cluster (`Cluster::slots`: 1 on
//! most, EMR's `step_concurrency_level`, `jobs_per_cluster`) takes steps
//! from the queue.
//!
//! The worker whose step finished releases that step's dependants itself,
//! right after the step's final state was stored, then takes its next step:
//! no hop through another task, so a dependant never waits for a scheduler
//! turn. Work per finished step is O(its dependants): the [`Board`] keeps a
//! count of unfinished dependencies per step and never scans the graph.

use crate::engine::end_span;
use crate::run_context::RunContext;
use crate::step::run_step;
use flow_core::{Cluster, FlowGraph, StepRecord, StepState, StoreError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{info_span, Instrument};

struct Ready {
    index: usize,
    record: StepRecord,
    /// When the last dependency's final state was stored; `None` for steps
    /// that were ready from the start.
    released_at: Option<Instant>,
}

/// What dispatch ended with.
pub(crate) struct Dispatched {
    /// Each step's record; a step abandoned when the lease was lost has
    /// none (nothing more is written then).
    pub records: Vec<StepRecord>,
    pub failed: bool,
    pub canceled: bool,
    pub store_error: Option<StoreError>,
    /// From the moment a step could start (dependency stored, cluster free)
    /// to its start.
    pub latencies: Vec<Duration>,
    /// Bookkeeping per finished step: dependants visited.
    pub graph_visits: u64,
}

/// The run's progress, shared by the workers.
struct Progress {
    /// Unfinished dependencies (among the steps to run) per step.
    remaining: Vec<u32>,
    /// Each step's record while no worker holds it.
    slots: Vec<Option<StepRecord>>,
    /// Steps queued or running.
    outstanding: usize,
    /// No new step starts (a failure, a store error or cancellation).
    halted: bool,
    failed: bool,
    canceled: bool,
    store_error: Option<StoreError>,
    graph_visits: u64,
}

/// The ready queue and the progress behind it.
struct Board {
    graph: Arc<FlowGraph>,
    to_run: Vec<bool>,
    progress: Mutex<Progress>,
    ready: async_channel::Sender<Ready>,
}

impl Board {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        // A panic while holding the lock leaves counts that are still
        // consistent enough to wind down with.
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `index` with its record.
    fn push(&self, p: &mut Progress, index: usize, released_at: Option<Instant>) {
        if let Some(record) = p.slots[index].take() {
            p.outstanding += 1;
            let _ = self.ready.try_send(Ready {
                index,
                record,
                released_at,
            });
        }
    }

    /// Closes the queue once nothing is queued or running: the workers end.
    fn settle(&self, p: &Progress) {
        if p.outstanding == 0 {
            self.ready.close();
        }
    }

    /// A step ended with its final state stored: release its dependants, or
    /// halt the run if it did not complete.
    fn finished(
        &self,
        index: usize,
        record: StepRecord,
        result: Result<StepState, StoreError>,
        at: Instant,
        cancelled: bool,
    ) {
        let mut p = self.progress();
        p.slots[index] = Some(record);
        p.outstanding -= 1;
        match result {
            Ok(state) if state.is_complete() => {
                if !p.halted {
                    for &d in self.graph.dependants(index) {
                        p.graph_visits += 1;
                        if !self.to_run[d] {
                            continue;
                        }
                        p.remaining[d] -= 1;
                        if p.remaining[d] == 0 {
                            self.push(&mut p, d, Some(at));
                        }
                    }
                }
            }
            Ok(StepState::Canceled) => {
                p.canceled |= cancelled;
                p.failed = true;
                p.halted = true;
            }
            Ok(_) => {
                p.failed = true;
                p.halted = true;
            }
            Err(e) => {
                p.store_error.get_or_insert(e);
                p.halted = true;
            }
        }
        self.settle(&p);
    }

    /// A queued step was not started because the run halted.
    fn not_started(&self, index: usize, record: StepRecord) {
        let mut p = self.progress();
        p.slots[index] = Some(record);
        p.outstanding -= 1;
        self.settle(&p);
    }

    /// Takes `ready` unless the run halted; then hands it back.
    fn start(&self, ready: Ready) -> Option<Ready> {
        if self.progress().halted {
            self.not_started(ready.index, ready.record);
            None
        } else {
            Some(ready)
        }
    }

    /// Stops starting steps; queued ones are handed back by the workers.
    fn halt(&self, canceled: bool) {
        let mut p = self.progress();
        p.halted = true;
        p.canceled |= canceled;
    }
}

/// Runs the steps marked in `to_run` on `clusters`.
pub(crate) async fn dispatch(
    shared: Arc<RunContext>,
    to_run: &[bool],
    records: Vec<StepRecord>,
    clusters: &[Arc<dyn Cluster>],
) -> Dispatched {
    let graph = shared.graph.clone();
    let n = graph.len();
    let remaining: Vec<u32> = (0..n)
        .map(|i| {
            if to_run[i] {
                graph.dependencies(i).iter().filter(|&&d| to_run[d]).count() as u32
            } else {
                0
            }
        })
        .collect();
    let (ready_tx, ready_rx) = async_channel::unbounded::<Ready>();
    let board = Arc::new(Board {
        graph: graph.clone(),
        to_run: to_run.to_vec(),
        progress: Mutex::new(Progress {
            remaining,
            slots: records.into_iter().map(Some).collect(),
            outstanding: 0,
            halted: false,
            failed: false,
            canceled: false,
            store_error: None,
            graph_visits: 0,
        }),
        ready: ready_tx,
    });
    {
        let mut p = board.progress();
        for &i in graph.topological_order() {
            if to_run[i] && p.remaining[i] == 0 {
                board.push(&mut p, i, None);
            }
        }
        board.settle(&p);
    }

    // One worker per slot: a cluster with N slots runs N steps at once.
    let mut workers: FuturesUnordered<_> = clusters
        .iter()
        .flat_map(|cluster| std::iter::repeat_n(cluster, cluster.slots().max(1)))
        .map(|cluster| {
            tokio::spawn(worker(
                shared.clone(),
                board.clone(),
                cluster.clone(),
                ready_rx.clone(),
            ))
        })
        .collect();
    drop(ready_rx);

    let mut latencies = Vec::new();
    let mut cancel_seen = false;
    let mut lost_seen = false;
    loop {
        tokio::select! {
            joined = workers.next() => match joined {
                Some(Ok(mut l)) => latencies.append(&mut l),
                Some(Err(e)) => {
                    // A worker died (a panic outside any action): stop the
                    // run and let the others hand back what is queued.
                    tracing::error!("a cluster worker ended abnormally: {e}");
                    board.halt(false);
                    board.ready.close();
                }
                None => break,
            },
            _ = shared.cancel.cancelled(), if !cancel_seen => {
                cancel_seen = true;
                board.halt(true);
            }
            _ = shared.lost.cancelled(), if !lost_seen => {
                // The workers abandon their steps; nothing queued starts.
                lost_seen = true;
                board.halt(false);
                board.ready.close();
            }
        }
    }

    let mut p = board.progress();
    let lost = shared.lost.is_cancelled();
    let records = std::mem::take(&mut p.slots)
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            if r.is_none() && !lost {
                panic!("step record {i} was not returned by its worker")
            }
            r
        })
        .collect();
    Dispatched {
        records,
        failed: p.failed,
        canceled: p.canceled,
        store_error: p.store_error.take(),
        latencies,
        graph_visits: p.graph_visits,
    }
}

async fn worker(
    shared: Arc<RunContext>,
    board: Arc<Board>,
    cluster: Arc<dyn Cluster>,
    ready: async_channel::Receiver<Ready>,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    // When this cluster last became free: a step released earlier could not
    // start before then, and that wait is not dispatch overhead.
    let mut idle_since = Instant::now();
    while let Ok(next) = ready.recv().await {
        if shared.run_log.has_failed() {
            // A log line was lost: start nothing more; the engine fails
            // the run with the reason.
            board.halt(false);
        }
        if shared.cancel.is_cancelled() {
            // The dispatcher halts the board when it sees the token, but a
            // step that ended right after the cancel must not start the
            // next one before it does.
            board.halt(true);
        }
        let Some(Ready {
            index,
            record,
            released_at,
        }) = board.start(next)
        else {
            continue;
        };
        if let Some(at) = released_at {
            latencies.push(at.max(idle_since).elapsed());
        }
        let span = info_span!(
            parent: &shared.flow_span,
            "step",
            step = shared.graph.step(index).name.as_str(),
            cluster = cluster.name(),
            state = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let step = run_step(&shared, index, cluster.as_ref(), record).instrument(span.clone());
        // Losing the lease abandons the step where it is: its job (if any)
        // runs on for the new holder to adopt; nothing more is written. The
        // dispatcher has halted the board and closed the queue already (it
        // watches the same token), so there is no count to settle.
        let (record, result) = tokio::select! {
            biased;
            _ = shared.lost.cancelled() => break,
            done = step => done,
        };
        match &result {
            Ok(state) => end_span(&span, state.as_str(), *state == StepState::Invalid),
            Err(_) => end_span(&span, "error", true),
        }
        // A line of this step that could not be written stops the run
        // before the step releases anything (README, "Logs").
        shared.run_log.settle().await;
        if shared.run_log.has_failed() {
            board.halt(false);
        }
        idle_since = Instant::now();
        board.finished(
            index,
            record,
            result,
            idle_since,
            shared.cancel.is_cancelled(),
        );
    }
    latencies
}
