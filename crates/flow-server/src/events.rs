//! The live event stream of each `[flow, timeperiod]`: flow and step state
//! changes, log lines and run notices, each with an id.
//!
//! Every flow run someone watches (or that this server runs) has a
//! *channel*: a journal of its recent events and the last state it knows.
//! Events get ids from one counter that starts at the server's start time
//! in microseconds, so ids grow across the channels of one server and
//! across restarts. A client that reconnects with `Last-Event-ID: N` gets
//! exactly the events after `N` from the journal; when the journal no
//! longer holds them (the server restarted, the channel was idle and
//! dropped, or more than [`JOURNAL`] events passed), it first gets a
//! `snapshot` event with the whole current state instead, so it never
//! silently misses a change.
//!
//! Where events come from:
//! - the server's own runs write through [`crate::observed::ObservedStore`],
//!   which hands every durable write to [`Hub::written`]: every change, in
//!   write order;
//! - runs of other processes are seen by polling the store while someone
//!   watches (every [`Hub`] tick), as differences against the last state;
//! - log lines are read from the log files as they grow
//!   ([`crate::logs::Tail`]): the flow log, and the log of each step while it
//!   runs (and for a moment after, for its last lines).

use crate::logs::{log_path, Tail, Window};
use crate::views::{FlowView, StepStateView};
use axum::response::sse::Event as SseEvent;
use chrono::Utc;
use flow_core::{FlowKey, FlowRecord, FlowStore, Settings, StepRecord, StepState};
use futures_util::Stream;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, OnceCell};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Events a channel keeps for reconnecting clients.
pub const JOURNAL: usize = 100_000;
/// How long a channel nobody watches and nothing runs is kept.
const LINGER: Duration = Duration::from_secs(30);
/// How long a finished step's log is still followed, for its last lines.
const TRAILING: chrono::TimeDelta = chrono::TimeDelta::seconds(3);

/// One event of a channel.
#[derive(Debug)]
pub struct Event {
    pub id: u64,
    pub kind: &'static str,
    pub data: String,
}

impl Event {
    fn sse(&self) -> SseEvent {
        SseEvent::default()
            .id(self.id.to_string())
            .event(self.kind)
            .data(&self.data)
    }
}

/// The whole state of a channel, sent when a client cannot be resumed.
#[derive(Serialize)]
struct Snapshot<'a> {
    flow: Option<FlowView>,
    steps: Vec<StepStateView>,
    /// Log lines are not repeated here: fetch `/logs?after=` for them.
    reason: &'a str,
}

struct State {
    journal: VecDeque<Arc<Event>>,
    /// Events with ids up to `floor` may be gone; resuming needs an id at
    /// or above it.
    floor: u64,
    flow: Option<FlowRecord>,
    steps: HashMap<String, StepRecord>,
    subscribers: usize,
    /// Runs of this server on this flow that are going on.
    runs: usize,
    /// Bumped by every write of this server's runs, so a poll that read the
    /// store before such a write does not roll the state back.
    generation: u64,
    idle_since: Instant,
}

/// One `[flow, timeperiod]`'s events.
pub struct Channel {
    key: FlowKey,
    state: Mutex<State>,
    notify: watch::Sender<u64>,
    seeded: OnceCell<()>,
    watching: AtomicBool,
}

impl Channel {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every
        // change is a push); keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
    channels: Mutex<HashMap<FlowKey, Arc<Channel>>>,
    next_id: AtomicU64,
    store: Arc<dyn FlowStore>,
    log_directory: Option<PathBuf>,
    redact: Arc<Settings>,
    tick: Duration,
    shutdown: CancellationToken,
}

/// The channels of one server. Cheap to clone.
#[derive(Clone)]
pub struct Hub(Arc<Inner>);

impl Hub {
    pub fn new(
        store: Arc<dyn FlowStore>,
        log_directory: Option<PathBuf>,
        redact: Arc<Settings>,
        tick: Duration,
        shutdown: CancellationToken,
    ) -> Hub {
        let start = Utc::now().timestamp_micros().max(1) as u64;
        Hub(Arc::new(Inner {
            channels: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(start),
            store,
            log_directory,
            redact,
            tick,
            shutdown,
        }))
    }

    /// The last id handed out.
    fn last_id(&self) -> u64 {
        self.0.next_id.load(Ordering::SeqCst) - 1
    }

    /// The channel of `key`, made (empty, not yet seeded) if there is none.
    pub fn channel(&self, key: &FlowKey) -> Arc<Channel> {
        let mut channels = self.0.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(key.clone())
            .or_insert_with(|| {
                // A fresh id: whatever happened before this channel existed
                // is not in its journal, so no earlier id resumes here.
                let floor = self.0.next_id.fetch_add(1, Ordering::SeqCst);
                Arc::new(Channel {
                    key: key.clone(),
                    state: Mutex::new(State {
                        journal: VecDeque::new(),
                        floor,
                        flow: None,
                        steps: HashMap::new(),
                        subscribers: 0,
                        runs: 0,
                        generation: 0,
                        idle_since: Instant::now(),
                    }),
                    notify: watch::channel(0).0,
                    seeded: OnceCell::new(),
                    watching: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Appends an event to `state`'s journal and wakes the subscribers.
    fn push(&self, channel: &Channel, state: &mut State, kind: &'static str, data: String) {
        let id = self.0.next_id.fetch_add(1, Ordering::SeqCst);
        state.journal.push_back(Arc::new(Event { id, kind, data }));
        while state.journal.len() > JOURNAL {
            if let Some(old) = state.journal.pop_front() {
                state.floor = old.id;
            }
        }
        channel.notify.send_replace(id);
    }

    fn push_json<T: Serialize>(
        &self,
        channel: &Channel,
        state: &mut State,
        kind: &'static str,
        value: &T,
    ) {
        match serde_json::to_string(value) {
            Ok(data) => self.push(channel, state, kind, data),
            Err(e) => warn!("cannot encode a {kind} event: {e}"),
        }
    }

    /// A write of this server's run went through: publish it. `flow` is the
    /// saved flow record, `steps` the saved step records.
    pub fn written(&self, key: &FlowKey, flow: Option<&FlowRecord>, steps: &[StepRecord]) {
        let channel = self.channel(key);
        let mut state = channel.lock();
        state.generation += 1;
        if let Some(flow) = flow {
            state.flow = Some(flow.clone());
            self.push_json(&channel, &mut state, "flow", &FlowView::new(flow));
        }
        for step in steps {
            state.steps.insert(step.step_name.clone(), step.clone());
            let view = StepStateView::new(step, &self.0.redact);
            self.push_json(&channel, &mut state, "step", &view);
        }
    }

    /// Publishes a run notice (started, finished, refused, cancelling).
    pub fn run_event<T: Serialize>(&self, key: &FlowKey, run: &T) {
        let channel = self.channel(key);
        let mut state = channel.lock();
        self.push_json(&channel, &mut state, "run", run);
    }

    /// Counts a run of this server on `key` as going on (while the returned
    /// guard lives): polling is off, the channel's watcher runs.
    pub fn run_guard(&self, key: &FlowKey) -> RunGuard {
        let channel = self.channel(key);
        channel.lock().runs += 1;
        self.ensure_watcher(&channel);
        RunGuard { channel }
    }

    /// Loads the channel's state from the store once, before its first
    /// snapshot. Writes of this server that came first are kept.
    async fn seed(&self, channel: &Channel) {
        channel
            .seeded
            .get_or_init(|| async {
                let flow = self.0.store.get_flow(&channel.key).await;
                let steps = self.0.store.get_steps(&channel.key).await;
                let mut state = channel.lock();
                match flow {
                    Ok(flow) if state.flow.is_none() => state.flow = flow,
                    Ok(_) => {}
                    Err(e) => warn!(flow = %channel.key, "cannot read the flow record: {e}"),
                }
                match steps {
                    Ok(steps) => {
                        for step in steps {
                            state.steps.entry(step.step_name.clone()).or_insert(step);
                        }
                    }
                    Err(e) => warn!(flow = %channel.key, "cannot read the step records: {e}"),
                }
            })
            .await;
    }

    fn snapshot(&self, state: &State, reason: &str) -> String {
        let mut steps: Vec<StepStateView> = state
            .steps
            .values()
            .map(|s| StepStateView::new(s, &self.0.redact))
            .collect();
        steps.sort_by(|a, b| a.name.cmp(&b.name));
        serde_json::to_string(&Snapshot {
            flow: state.flow.as_ref().map(FlowView::new),
            steps,
            reason,
        })
        .unwrap_or_else(|_| "{}".into())
    }

    /// The event stream of `key` for one client, resuming after
    /// `last_event_id` when the journal still holds what followed it.
    pub async fn subscribe(
        &self,
        key: &FlowKey,
        last_event_id: Option<&str>,
    ) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
        let channel = self.channel(key);
        self.seed(&channel).await;
        let mut rx = channel.notify.subscribe();
        rx.borrow_and_update();
        let mut pending = VecDeque::new();
        let cursor = {
            let mut state = channel.lock();
            state.subscribers += 1;
            let resume = last_event_id
                .and_then(|id| id.trim().parse::<u64>().ok())
                .filter(|&id| id >= state.floor && id <= self.last_id());
            match resume {
                Some(id) => id,
                None => {
                    let reason = if last_event_id.is_some() {
                        "cannot resume after that event id: here is the current state"
                    } else {
                        "current state"
                    };
                    let at = state.journal.back().map_or(state.floor, |e| e.id);
                    pending.push_back(
                        SseEvent::default()
                            .id(at.to_string())
                            .event("snapshot")
                            .data(self.snapshot(&state, reason)),
                    );
                    at
                }
            }
        };
        self.ensure_watcher(&channel);
        let subscriber = Subscriber {
            hub: self.clone(),
            guard: SubscriberGuard(channel.clone()),
            channel,
            cursor,
            rx,
            pending,
        };
        futures_util::stream::unfold(subscriber, |mut s| async move {
            loop {
                if let Some(event) = s.pending.pop_front() {
                    return Some((Ok(event), s));
                }
                s.rx.borrow_and_update();
                s.refill();
                if !s.pending.is_empty() {
                    continue;
                }
                tokio::select! {
                    changed = s.rx.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    _ = s.hub.0.shutdown.cancelled() => return None,
                }
            }
        })
    }

    /// Starts the channel's watcher unless it runs.
    fn ensure_watcher(&self, channel: &Arc<Channel>) {
        if channel.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let hub = self.clone();
        let channel = channel.clone();
        tokio::spawn(async move { hub.watch(channel).await });
    }

    /// Follows the store (when no run of this server writes) and the log
    /// files of one channel while anyone watches or a run goes on.
    async fn watch(self, channel: Arc<Channel>) {
        let mut interval = tokio::time::interval(self.0.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tails: HashMap<Option<String>, Tail> = HashMap::new();
        let mut emitted: HashMap<Option<String>, u64> = HashMap::new();
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = self.0.shutdown.cancelled() => break,
            }
            ticks += 1;
            let (subscribers, runs, generation, idle, size) = {
                let mut state = channel.lock();
                if state.subscribers > 0 || state.runs > 0 {
                    state.idle_since = Instant::now();
                }
                (
                    state.subscribers,
                    state.runs,
                    state.generation,
                    state.idle_since.elapsed(),
                    state.steps.len(),
                )
            };
            if subscribers == 0 && runs == 0 {
                if idle > LINGER && self.remove_if_idle(&channel) {
                    return;
                }
                continue;
            }
            // Large flows are polled less often: reading 10,000 step
            // records costs milliseconds.
            let every = (size / 1000).max(1) as u64;
            if runs == 0 && ticks.is_multiple_of(every) {
                self.poll(&channel, generation).await;
            }
            self.follow_logs(&channel, &mut tails, &mut emitted).await;
        }
        channel.watching.store(false, Ordering::SeqCst);
    }

    /// Drops an idle channel; false if it is in use again.
    fn remove_if_idle(&self, channel: &Arc<Channel>) -> bool {
        let mut channels = self.0.channels.lock().unwrap_or_else(|e| e.into_inner());
        let state = channel.lock();
        if state.subscribers > 0 || state.runs > 0 {
            return false;
        }
        channels.remove(&channel.key);
        channel.watching.store(false, Ordering::SeqCst);
        true
    }

    /// Reads the records and publishes what changed since the last state.
    async fn poll(&self, channel: &Channel, generation: u64) {
        let flow = self.0.store.get_flow(&channel.key).await;
        let steps = self.0.store.get_steps(&channel.key).await;
        let (Ok(flow), Ok(steps)) = (flow, steps) else {
            return;
        };
        let mut state = channel.lock();
        if state.generation != generation || state.runs > 0 {
            // A run of this server wrote meanwhile: its events are newer.
            return;
        }
        if flow != state.flow {
            state.flow = flow.clone();
            if let Some(flow) = &flow {
                self.push_json(channel, &mut state, "flow", &FlowView::new(flow));
            }
        }
        let mut seen = std::collections::HashSet::with_capacity(steps.len());
        for step in steps {
            seen.insert(step.step_name.clone());
            if state.steps.get(&step.step_name) != Some(&step) {
                let view = StepStateView::new(&step, &self.0.redact);
                state.steps.insert(step.step_name.clone(), step);
                self.push_json(channel, &mut state, "step", &view);
            }
        }
        let gone: Vec<String> = state
            .steps
            .keys()
            .filter(|name| !seen.contains(*name))
            .cloned()
            .collect();
        for name in gone {
            state.steps.remove(&name);
            self.push_json(channel, &mut state, "step", &StepStateView::none(&name));
        }
    }

    /// Publishes the new lines of the flow's log and of each step that runs
    /// or just finished.
    async fn follow_logs(
        &self,
        channel: &Channel,
        tails: &mut HashMap<Option<String>, Tail>,
        emitted: &mut HashMap<Option<String>, u64>,
    ) {
        let Some(dir) = self.0.log_directory.clone() else {
            return;
        };
        let key = &channel.key;
        let now = Utc::now();
        let targets: Vec<(Option<String>, Window)> = {
            let state = channel.lock();
            let mut targets = Vec::new();
            if let Some(flow) = &state.flow {
                targets.push((None, Window::new(flow.started_at, None)));
            }
            for step in state.steps.values() {
                let live = step.state == StepState::InProgress
                    || step.finished_at.is_some_and(|f| now - f < TRAILING);
                if live && step.started_at.is_some() {
                    targets.push((
                        Some(step.step_name.clone()),
                        Window::new(step.started_at, None),
                    ));
                }
            }
            targets
        };
        tails.retain(|name, _| targets.iter().any(|(t, _)| t == name));
        let mut work: Vec<Tail> = Vec::with_capacity(targets.len());
        for (name, window) in targets {
            let tail = match tails.remove(&name) {
                Some(t) if t.window.from == window.from => t,
                _ => match log_path(&dir, &key.flow_name, name.as_deref()) {
                    Some(path) => Tail::new(path, name.clone(), window),
                    None => continue,
                },
            };
            work.push(tail);
        }
        let redact = self.0.redact.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut lines = Vec::new();
            for tail in &mut work {
                match tail.read_new(&redact, 10_000) {
                    Ok(new) => lines.extend(new),
                    Err(e) => warn!("cannot read a log file: {e}"),
                }
            }
            (work, lines)
        })
        .await;
        let Ok((work, lines)) = read else { return };
        for tail in work {
            let name = tail_name(&tail);
            tails.insert(name, tail);
        }
        if lines.is_empty() {
            return;
        }
        let mut state = channel.lock();
        for line in lines {
            let last = emitted.entry(line.step.clone()).or_insert(0);
            if line.position <= *last {
                continue;
            }
            *last = line.position;
            self.push_json(channel, &mut state, "log", &line);
        }
    }
}

fn tail_name(tail: &Tail) -> Option<String> {
    tail.step().map(str::to_string)
}

/// Keeps a run counted on its channel; dropping it ends the count.
pub struct RunGuard {
    channel: Arc<Channel>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut state = self.channel.lock();
        state.runs = state.runs.saturating_sub(1);
        state.idle_since = Instant::now();
    }
}

struct SubscriberGuard(Arc<Channel>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.subscribers = state.subscribers.saturating_sub(1);
        state.idle_since = Instant::now();
    }
}

struct Subscriber {
    hub: Hub,
    channel: Arc<Channel>,
    #[allow(dead_code)] // held for its Drop
    guard: SubscriberGuard,
    cursor: u64,
    rx: watch::Receiver<u64>,
    pending: VecDeque<SseEvent>,
}

impl Subscriber {
    /// Queues the journal's events after the cursor (or a snapshot when
    /// they were dropped from it).
    fn refill(&mut self) {
        let state = self.channel.lock();
        if self.cursor < state.floor {
            let at = state.journal.back().map_or(state.floor, |e| e.id);
            self.pending.push_back(
                SseEvent::default()
                    .id(at.to_string())
                    .event("snapshot")
                    .data(
                        self.hub
                            .snapshot(&state, "events were dropped: here is the current state"),
                    ),
            );
            self.cursor = at;
            return;
        }
        let start = state.journal.partition_point(|e| e.id <= self.cursor);
        for event in state.journal.range(start..) {
            self.pending.push_back(event.sse());
            self.cursor = event.id;
        }
    }
}
