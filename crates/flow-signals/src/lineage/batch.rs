//! `[lineage] batch`: events go as JSON arrays to
//! `{url}/api/v1/lineage/batch` (OpenLineage's `postEventBatch`), one
//! request in flight at a time, in the order the events were made (the
//! order consumers rely on). A batch takes the events queued while the one
//! before it was in flight and waits up to `[lineage] linger` after its
//! first event for more, at most `batch` of them: without the wait, a
//! receiver that answers fast got a request for every two or three events,
//! and each request costs the exporters' thread (and the machine the steps
//! run on) far more than an event. `flow run`'s wait at exit
//! ([`Batches::hurry`]) cuts the lingering short. Each event is counted on
//! its own (delivered, failed, abandoned) in its run's line, whatever batch
//! it went in.

use super::{post_one, Event, LineageConfig, Outcomes, Posted};
use crate::deliver::retrying;
use flow_core::LogLevel;
use futures_util::future::FutureExt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// Where batches are posted, under the configured URL.
pub const BATCH_ENDPOINT: &str = "/api/v1/lineage/batch";

/// The queue of events waiting for a batch, and its sending task.
pub(super) struct Batches {
    queue: mpsc::UnboundedSender<Queued>,
    hurry: Arc<Hurry>,
}

/// Set by [`Batches::hurry`]: no batch lingers until the queue was found
/// empty (every event queued before the call is then sent or in flight).
#[derive(Default)]
struct Hurry {
    now: AtomicBool,
    /// Wakes a lingering batch.
    wake: Notify,
}

/// One event waiting for its batch.
struct Queued {
    event: Event,
    outcomes: Arc<Outcomes>,
    /// The abandon generation when it was queued: a raise above it gives
    /// the event up.
    generation: u64,
    /// Dropped once the event's delivery ended (its [`Posted`] resolves).
    _done: oneshot::Sender<()>,
}

impl Batches {
    /// Starts the sending task (on the exporters' runtime) with at most
    /// `most` events a request, giving up what was queued before a raise
    /// of `abandoned`.
    pub(super) fn start(
        config: Arc<LineageConfig>,
        http: reqwest::Client,
        abandoned: watch::Receiver<u64>,
        most: NonZeroUsize,
    ) -> Batches {
        let (queue, queued) = mpsc::unbounded_channel();
        let hurry = Arc::new(Hurry::default());
        let linger = config.spec.linger();
        tokio::spawn(send(
            config,
            http,
            queued,
            abandoned,
            Shape {
                most,
                linger,
                hurry: hurry.clone(),
            },
        ));
        Batches { queue, hurry }
    }

    /// Sends what is queued without lingering (the wait at exit).
    pub(super) fn hurry(&self) {
        self.hurry.now.store(true, Ordering::Relaxed);
        self.hurry.wake.notify_one();
    }

    /// Queues `event` of the run counted in `outcomes`; returns its
    /// delivery.
    pub(super) fn post(&self, event: Event, outcomes: Arc<Outcomes>, generation: u64) -> Posted {
        let (done, ended) = oneshot::channel::<()>();
        // The task ends only when this queue is dropped: a send succeeds.
        let _ = self.queue.send(Queued {
            event,
            outcomes,
            generation,
            _done: done,
        });
        ended.map(|_| ()).boxed().shared()
    }
}

/// How batches are cut.
struct Shape {
    /// The most events a batch holds.
    most: NonZeroUsize,
    /// How long a batch waits for more after its first event.
    linger: Duration,
    hurry: Arc<Hurry>,
}

/// Posts the queued events, a batch at a time, until the queue closes.
async fn send(
    config: Arc<LineageConfig>,
    http: reqwest::Client,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    mut abandoned: watch::Receiver<u64>,
    shape: Shape,
) {
    let endpoint = format!(
        "{}{BATCH_ENDPOINT}",
        config.spec.url.as_str().trim_end_matches('/')
    );
    loop {
        // This task and the exporters' loop share one thread: nothing
        // queues between this check and the wait.
        if queue.is_empty() {
            shape.hurry.now.store(false, Ordering::Relaxed);
        }
        let Some(first) = queue.recv().await else {
            break;
        };
        let batch = fill(first, &mut queue, &shape, &mut abandoned).await;
        let generation = *abandoned.borrow_and_update();
        // Queued before the wait at exit ended: given up unsent.
        let (gone, batch): (Vec<Queued>, Vec<Queued>) = batch
            .into_iter()
            .partition(|queued| queued.generation < generation);
        for queued in &gone {
            queued.outcomes.abandoned.fetch_add(1, Ordering::Relaxed);
        }
        drop(gone);
        if batch.is_empty() {
            continue;
        }
        let body = array(&batch);
        let outcome = tokio::select! {
            outcome = retrying(config.spec.delivery(), || {
                post_one(&config.spec, &http, &endpoint, &body)
            }) => outcome,
            Ok(_) = abandoned.wait_for(|raised| *raised > generation) => {
                for queued in &batch {
                    queued.outcomes.abandoned.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
        };
        if outcome.delivered {
            for queued in &batch {
                queued.outcomes.delivered.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        // Each run with events in the batch counts them and says so in
        // its own log.
        for (outcomes, events) in by_run(&batch) {
            let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
            outcomes.failed.fetch_add(count, Ordering::Relaxed);
            let message = format!(
                "lineage batch of {} event(s) failed after {} attempt(s): {} ({} of them this run's: {})",
                batch.len(),
                outcome.attempts,
                outcome.detail,
                events.len(),
                span(&events)
            );
            outcomes.line(&config, LogLevel::Warn, &message).await;
        }
    }
}

/// The batch `first` starts: the events queued after it, as many as came
/// within `linger` of it (none when hurried), at most `most`; the wait
/// ends early when events are given up (`abandoned` raised).
async fn fill(
    first: Queued,
    queue: &mut mpsc::UnboundedReceiver<Queued>,
    shape: &Shape,
    abandoned: &mut watch::Receiver<u64>,
) -> Vec<Queued> {
    let deadline = tokio::time::Instant::now() + shape.linger;
    // Lets the exporters' loop hand over the signals already queued (on
    // this one-thread runtime), so the batch takes them too.
    tokio::task::yield_now().await;
    let mut batch = vec![first];
    while batch.len() < shape.most.get() {
        if let Ok(next) = queue.try_recv() {
            batch.push(next);
            continue;
        }
        if shape.linger.is_zero() || shape.hurry.now.load(Ordering::Relaxed) {
            break;
        }
        tokio::select! {
            next = queue.recv() => match next {
                Some(next) => batch.push(next),
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => break,
            () = shape.hurry.wake.notified() => break,
            _ = abandoned.changed() => break,
        }
    }
    batch
}

/// The batch's request body: its events as one JSON array, in order.
fn array(batch: &[Queued]) -> Vec<u8> {
    let mut body =
        Vec::with_capacity(2 + batch.iter().map(|q| q.event.body.len() + 1).sum::<usize>());
    body.push(b'[');
    for (i, queued) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&queued.event.body);
    }
    body.push(b']');
    body
}

/// The batch's events grouped by run, runs in order of their first event.
fn by_run(batch: &[Queued]) -> Vec<(&Arc<Outcomes>, Vec<&Event>)> {
    let mut runs: Vec<(&Arc<Outcomes>, Vec<&Event>)> = Vec::new();
    for queued in batch {
        match runs
            .iter_mut()
            .find(|(outcomes, _)| Arc::ptr_eq(outcomes, &queued.outcomes))
        {
            Some((_, events)) => events.push(&queued.event),
            None => runs.push((&queued.outcomes, vec![&queued.event])),
        }
    }
    runs
}

/// Which events: the one, or the first and the last.
fn span(events: &[&Event]) -> String {
    let name = |e: &Event| format!("{} of step {}", e.kind, e.step);
    match events {
        [] => String::new(),
        [one] => name(one),
        [first, .., last] => format!("from {} to {}", name(first), name(last)),
    }
}
