//! Event-driven dispatch: a step is queued the moment its last dependency
//! completes; one worker per cluster takes steps from the queue.
//!
//! Work per finished step is O(its dependants): the dispatcher keeps a count
//! of unfinished dependencies per step and never scans the graph.

use crate::engine::Shared;
use crate::step::run_step;
use flow_core::{Cluster, StepRecord, StepState, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info_span, Instrument};

struct Ready {
    index: usize,
    record: StepRecord,
    /// When the last dependency's final state was stored; `None` for steps
    /// that were ready from the start.
    released_at: Option<Instant>,
}

enum Event {
    Finished {
        index: usize,
        record: StepRecord,
        result: Result<StepState, StoreError>,
        at: Instant,
    },
    NotStarted {
        index: usize,
        record: StepRecord,
    },
}

/// What dispatch ended with.
pub(crate) struct Dispatched {
    pub records: Vec<StepRecord>,
    pub failed: bool,
    pub canceled: bool,
    pub store_error: Option<StoreError>,
    /// From a dependency's stored finish to its dependant's start.
    pub latencies: Vec<Duration>,
    /// Dispatcher bookkeeping per finished step: dependants visited.
    pub graph_visits: u64,
}

/// Runs the steps marked in `to_run` on `clusters`.
pub(crate) async fn dispatch(
    shared: Arc<Shared>,
    to_run: &[bool],
    records: Vec<StepRecord>,
    clusters: &[Arc<dyn Cluster>],
) -> Dispatched {
    let graph = shared.graph.clone();
    let n = graph.len();
    let mut remaining: Vec<u32> = (0..n)
        .map(|i| {
            if to_run[i] {
                graph.dependencies(i).iter().filter(|&&d| to_run[d]).count() as u32
            } else {
                0
            }
        })
        .collect();
    let mut slots: Vec<Option<StepRecord>> = records.into_iter().map(Some).collect();
    let (ready_tx, ready_rx) = async_channel::unbounded::<Ready>();
    let (event_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let halted = Arc::new(AtomicBool::new(false));

    let mut outstanding = 0usize;
    for &i in graph.topological_order() {
        if to_run[i] && remaining[i] == 0 {
            if let Some(record) = slots[i].take() {
                let _ = ready_tx.try_send(Ready {
                    index: i,
                    record,
                    released_at: None,
                });
                outstanding += 1;
            }
        }
    }

    let workers: Vec<_> = clusters
        .iter()
        .map(|cluster| {
            tokio::spawn(worker(
                shared.clone(),
                cluster.clone(),
                ready_rx.clone(),
                event_tx.clone(),
                halted.clone(),
            ))
        })
        .collect();
    drop(event_tx);

    let mut failed = false;
    let mut canceled = false;
    let mut store_error = None;
    let mut graph_visits = 0u64;
    while outstanding > 0 {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shared.cancel.cancelled(), if !canceled => {
                canceled = true;
                halted.store(true, Ordering::SeqCst);
                continue;
            }
        };
        let Some(event) = event else { break };
        outstanding -= 1;
        match event {
            Event::NotStarted { index, record } => slots[index] = Some(record),
            Event::Finished {
                index,
                record,
                result,
                at,
            } => {
                slots[index] = Some(record);
                match result {
                    Ok(state) if state.is_complete() => {
                        if halted.load(Ordering::SeqCst) {
                            continue;
                        }
                        for &d in graph.dependants(index) {
                            graph_visits += 1;
                            if !to_run[d] {
                                continue;
                            }
                            remaining[d] -= 1;
                            if remaining[d] == 0 {
                                if let Some(record) = slots[d].take() {
                                    let _ = ready_tx.try_send(Ready {
                                        index: d,
                                        record,
                                        released_at: Some(at),
                                    });
                                    outstanding += 1;
                                }
                            }
                        }
                    }
                    Ok(StepState::Canceled) => {
                        canceled |= shared.cancel.is_cancelled();
                        failed = true;
                        halted.store(true, Ordering::SeqCst);
                    }
                    Ok(_) => {
                        failed = true;
                        halted.store(true, Ordering::SeqCst);
                    }
                    Err(e) => {
                        store_error.get_or_insert(e);
                        halted.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
    }
    ready_tx.close();
    let mut latencies = Vec::new();
    for w in workers {
        if let Ok(mut l) = w.await {
            latencies.append(&mut l);
        }
    }
    let records = slots
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| panic!("step record {i} was not returned by its worker")))
        .collect();
    Dispatched {
        records,
        failed,
        canceled,
        store_error,
        latencies,
        graph_visits,
    }
}

async fn worker(
    shared: Arc<Shared>,
    cluster: Arc<dyn Cluster>,
    ready: async_channel::Receiver<Ready>,
    events: mpsc::UnboundedSender<Event>,
    halted: Arc<AtomicBool>,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    while let Ok(Ready {
        index,
        record,
        released_at,
    }) = ready.recv().await
    {
        if halted.load(Ordering::SeqCst) {
            let _ = events.send(Event::NotStarted { index, record });
            continue;
        }
        if let Some(at) = released_at {
            latencies.push(at.elapsed());
        }
        let span = info_span!(
            parent: &shared.flow_span,
            "step",
            step = shared.graph.step(index).name.as_str(),
            cluster = cluster.name()
        );
        let (record, result) = run_step(&shared, index, cluster.as_ref(), record)
            .instrument(span)
            .await;
        let _ = events.send(Event::Finished {
            index,
            record,
            result,
            at: Instant::now(),
        });
    }
    latencies
}
