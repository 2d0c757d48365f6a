//! The live event stream of each `[flow, timeperiod]`: flow and step state
//! changes, run notices and recorded log lines, each with an id a client
//! resumes from (`Last-Event-ID`).
//!
//! Every flow run someone watches (or that this server runs) has a
//! *channel*: a journal of its recent events, the last state it knows and
//! the store log position it has published up to.
//!
//! **Event ids** are `I-S-P`:
//! - `I` names this server instance (random, fixed for its life);
//! - `S` is the event's place in this server's journal: one counter for all
//!   events, state changes and log lines alike, so `S` orders everything
//!   the stream delivered;
//! - `P` is the store log position the stream had reached at that event:
//!   the line's own position for a `log` event, the last line delivered
//!   before it otherwise. Positions are the store's (`read_logs`): they grow
//!   in append order within a flow run and mean the same in every process.
//!
//! Along a stream both `S` and `P` only grow, and each event raises one of
//! them, so `I-S-P` says exactly what a client has. A reconnect with
//! `Last-Event-ID: I-S-P` is served:
//! - from the journal, when `I` is this server and the journal still holds
//!   every event after `S`: exactly the events that followed, log lines and
//!   state changes interleaved as they were first sent;
//! - otherwise (another server process, a restart, a journal that moved
//!   on): the log lines after `P`, read from the store, each with the id
//!   `I-0-position` (an `S` of 0 is never resumable, so a client that drops
//!   during them comes back to the same path), then a `snapshot` event with
//!   the whole current state, then live events. State changes are not
//!   stored as history, so a snapshot (the newest state) replaces the ones
//!   missed; no log line is ever skipped or repeated.
//!
//! A client without `Last-Event-ID` gets a `snapshot` first, and fetches
//! older log lines from `/logs?after=` (the snapshot says up to where).
//!
//! Where events come from:
//! - the server's own runs write through [`crate::observed::ObservedStore`],
//!   which hands every durable write to the hub: every change, in write
//!   order;
//! - runs of other processes are seen by polling the records while someone
//!   watches (every [`Hub`] tick), as differences against the last state;
//! - log lines, whoever wrote them, are read from the store after the
//!   channel's position (on every tick, and at once when this server's
//!   engine appended some).

use crate::views::{FlowView, LogView, RunStatus, RunView, StepStateView};
use axum::response::sse::Event as SseEvent;
use flow_core::{FlowKey, FlowRecord, FlowStore, LogQuery, RunQuery, RunRecord, Settings};
use flow_core::{StepRecord, StoredLogLine};
use futures_util::Stream;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify, OnceCell};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Events a channel keeps for reconnecting clients.
pub const JOURNAL: usize = 100_000;
/// How long a channel nobody watches and nothing runs is kept.
const LINGER: Duration = Duration::from_secs(30);
/// Log lines read from the store per call.
const LOG_PAGE: usize = 1_000;
/// Store calls of log lines per watcher tick (so one busy flow cannot hog
/// the watcher; the rest comes on the next tick).
const LOG_PAGES_PER_TICK: usize = 20;

/// An event's id: see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId {
    pub instance: u32,
    /// Journal sequence (0: not resumable from the journal).
    pub seq: u64,
    /// Store log position reached.
    pub log: u64,
}

impl EventId {
    /// Parses `I-S-P`; anything else is `None`.
    pub fn parse(text: &str) -> Option<EventId> {
        let mut parts = text.trim().split('-');
        let instance = u32::from_str_radix(parts.next()?, 16).ok()?;
        let seq = parts.next()?.parse().ok()?;
        let log = parts.next()?.parse().ok()?;
        parts
            .next()
            .is_none()
            .then_some(EventId { instance, seq, log })
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}-{}-{}", self.instance, self.seq, self.log)
    }
}

/// One event of a channel's journal.
#[derive(Debug)]
pub struct Event {
    pub seq: u64,
    pub log: u64,
    pub kind: &'static str,
    pub data: String,
}

/// The whole state of a channel, sent when a client cannot be resumed.
#[derive(Serialize)]
struct Snapshot<'a> {
    flow: Option<FlowView>,
    steps: Vec<StepStateView>,
    /// The latest run of this flow run, if any.
    run: Option<RunView>,
    /// Log lines up to this store position were recorded before the
    /// snapshot (the stream sends the ones after it; `/logs?after=` pages
    /// through the earlier ones).
    log_position: u64,
    reason: &'a str,
}

struct State {
    journal: VecDeque<Arc<Event>>,
    /// Events with a sequence up to `floor` may be gone; resuming needs a
    /// sequence at or above it.
    floor: u64,
    /// The store log position published up to.
    log: u64,
    flow: Option<FlowRecord>,
    steps: HashMap<String, StepRecord>,
    run: Option<RunRecord>,
    subscribers: usize,
    /// Runs of this server on this flow that are going on.
    runs: usize,
    /// Bumped by every write of this server's runs, so a poll that read the
    /// store before such a write does not roll the state back.
    generation: u64,
    idle_since: Instant,
}

impl State {
    fn last_seq(&self) -> u64 {
        self.journal.back().map_or(self.floor, |e| e.seq)
    }
}

/// One `[flow, timeperiod]`'s events.
pub struct Channel {
    key: FlowKey,
    state: Mutex<State>,
    notify: watch::Sender<u64>,
    /// Wakes the watcher to read log lines now.
    logs_nudge: Notify,
    seeded: OnceCell<bool>,
    watching: AtomicBool,
}

impl Channel {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every
        // change is a push); keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct HubState {
    instance: u32,
    channels: Mutex<HashMap<FlowKey, Arc<Channel>>>,
    next_seq: AtomicU64,
    store: Arc<dyn FlowStore>,
    redact: Arc<Settings>,
    tick: Duration,
    shutdown: CancellationToken,
}

/// The channels of one server. Cheap to clone.
#[derive(Clone)]
pub struct Hub(Arc<HubState>);

impl Hub {
    pub fn new(
        store: Arc<dyn FlowStore>,
        redact: Arc<Settings>,
        tick: Duration,
        shutdown: CancellationToken,
    ) -> Hub {
        Hub(Arc::new(HubState {
            instance: fastrand::u32(..),
            channels: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(1),
            store,
            redact,
            tick,
            shutdown,
        }))
    }

    fn id(&self, seq: u64, log: u64) -> String {
        EventId {
            instance: self.0.instance,
            seq,
            log,
        }
        .to_string()
    }

    /// The last sequence handed out.
    fn last_seq(&self) -> u64 {
        self.0.next_seq.load(Ordering::SeqCst) - 1
    }

    /// The channel of `key`, made (empty, not yet seeded) if there is none.
    pub fn channel(&self, key: &FlowKey) -> Arc<Channel> {
        let mut channels = self.0.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(key.clone())
            .or_insert_with(|| {
                // A fresh sequence: whatever happened before this channel
                // existed is not in its journal, so no earlier one resumes
                // here.
                let floor = self.0.next_seq.fetch_add(1, Ordering::SeqCst);
                Arc::new(Channel {
                    key: key.clone(),
                    state: Mutex::new(State {
                        journal: VecDeque::new(),
                        floor,
                        log: 0,
                        flow: None,
                        steps: HashMap::new(),
                        run: None,
                        subscribers: 0,
                        runs: 0,
                        generation: 0,
                        idle_since: Instant::now(),
                    }),
                    notify: watch::channel(0).0,
                    logs_nudge: Notify::new(),
                    seeded: OnceCell::new(),
                    watching: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Appends an event to `state`'s journal and wakes the subscribers.
    fn push(&self, channel: &Channel, state: &mut State, kind: &'static str, data: String) {
        let seq = self.0.next_seq.fetch_add(1, Ordering::SeqCst);
        let log = state.log;
        state.journal.push_back(Arc::new(Event {
            seq,
            log,
            kind,
            data,
        }));
        while state.journal.len() > JOURNAL {
            if let Some(old) = state.journal.pop_front() {
                state.floor = old.seq;
            }
        }
        channel.notify.send_replace(seq);
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

    fn run_view(&self, run: &RunRecord) -> RunView {
        let status = if run.finished_at.is_some() {
            RunStatus::Finished
        } else {
            RunStatus::Running
        };
        RunView::with_status(run, status, &self.0.redact)
    }

    /// A write of this server went through: publish it. `flow` is the saved
    /// flow record, `steps` the saved step records.
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

    /// A run of this server began (`begin_run` returned): the flow, the
    /// steps it wrote (after purging the others when `purge`), and the run.
    pub fn begun(
        &self,
        key: &FlowKey,
        flow: &FlowRecord,
        purge: bool,
        steps: &[StepRecord],
        run: &RunRecord,
    ) {
        let channel = self.channel(key);
        let mut state = channel.lock();
        state.generation += 1;
        if purge {
            let gone: Vec<String> = state
                .steps
                .keys()
                .filter(|name| !steps.iter().any(|s| &&s.step_name == name))
                .cloned()
                .collect();
            for name in gone {
                state.steps.remove(&name);
                self.push_json(&channel, &mut state, "step", &StepStateView::none(&name));
            }
        }
        state.run = Some(run.clone());
        self.push_json(&channel, &mut state, "run", &self.run_view(run));
        state.flow = Some(flow.clone());
        self.push_json(&channel, &mut state, "flow", &FlowView::new(flow));
        for step in steps {
            state.steps.insert(step.step_name.clone(), step.clone());
            let view = StepStateView::new(step, &self.0.redact);
            self.push_json(&channel, &mut state, "step", &view);
        }
    }

    /// A run of this server recorded its end.
    pub fn run_written(&self, key: &FlowKey, run: &RunRecord) {
        let channel = self.channel(key);
        let mut state = channel.lock();
        state.generation += 1;
        state.run = Some(run.clone());
        self.push_json(&channel, &mut state, "run", &self.run_view(run));
    }

    /// Publishes what this server knows of a run beyond its record
    /// (cancelling, failed).
    pub fn run_notice(&self, key: &FlowKey, view: &RunView) {
        let channel = self.channel(key);
        let mut state = channel.lock();
        self.push_json(&channel, &mut state, "run", view);
    }

    /// The latest run this channel knows of.
    pub fn current_run(&self, key: &FlowKey) -> Option<RunRecord> {
        self.channel(key).lock().run.clone()
    }

    /// This server's engine appended log lines of `key`: read them now
    /// rather than on the next tick.
    pub fn logs_appended(&self, key: &FlowKey) {
        let channel = {
            let channels = self.0.channels.lock().unwrap_or_else(|e| e.into_inner());
            channels.get(key).cloned()
        };
        if let Some(channel) = channel {
            channel.logs_nudge.notify_one();
        }
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
    /// snapshot: the records, the latest run, and the log position reached
    /// so far. Writes of this server that came first are kept. False when
    /// the store failed (the next subscriber tries again).
    async fn seed(&self, channel: &Channel) -> bool {
        let seeded = channel
            .seeded
            .get_or_try_init(|| async {
                let key = &channel.key;
                let store = &self.0.store;
                let flow = store.get_flow(key).await?;
                let steps = store.get_steps(key).await?;
                let run = store
                    .list_runs(&RunQuery {
                        flow_name: Some(key.flow_name.clone()),
                        timeperiod: Some(key.timeperiod),
                        limit: Some(1),
                    })
                    .await?
                    .into_iter()
                    .next();
                // Where the recorded lines end: what is already there is
                // the past (`/logs` serves it), not news. One indexed
                // lookup, however many lines the run has.
                let log = store.last_log_position(key).await?;
                let mut state = channel.lock();
                if state.flow.is_none() {
                    state.flow = flow;
                }
                if state.run.is_none() {
                    state.run = run;
                }
                for step in steps {
                    state.steps.entry(step.step_name.clone()).or_insert(step);
                }
                state.log = state.log.max(log);
                Ok::<bool, flow_core::StoreError>(true)
            })
            .await;
        match seeded {
            Ok(_) => true,
            Err(e) => {
                warn!(flow = %channel.key, "cannot read the flow run from the store: {e}");
                false
            }
        }
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
            run: state.run.as_ref().map(|r| self.run_view(r)),
            log_position: state.log,
            reason,
        })
        .unwrap_or_else(|_| "{}".into())
    }

    /// The event stream of `key` for one client, resuming after
    /// `last_event_id` (see the module documentation). `Err` when the store
    /// cannot be read.
    pub async fn subscribe(
        &self,
        key: &FlowKey,
        last_event_id: Option<&str>,
    ) -> Result<impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static, String> {
        let channel = self.channel(key);
        if !self.seed(&channel).await {
            return Err(format!("cannot read flow {key} from the store"));
        }
        let mut rx = channel.notify.subscribe();
        rx.borrow_and_update();
        let last = last_event_id.map(EventId::parse);
        let (cursor, log, reason) = {
            let mut state = channel.lock();
            state.subscribers += 1;
            match last {
                None => (None, None, "current state"),
                Some(None) => (
                    None,
                    None,
                    "cannot resume after that event id (not one of this viewer's): here is the current state",
                ),
                Some(Some(id)) => {
                    let ours = id.instance == self.0.instance
                        && id.seq >= state.floor
                        && id.seq <= self.last_seq();
                    if ours {
                        (Some(id.seq), Some(id.log), "")
                    } else {
                        (
                            None,
                            Some(id.log),
                            "the events after that id are not kept here: the log lines after its position, then the current state",
                        )
                    }
                }
            }
        };
        self.ensure_watcher(&channel);
        let subscriber = Subscriber {
            hub: self.clone(),
            guard: SubscriberGuard(channel.clone()),
            channel,
            cursor,
            log,
            reason,
            backlog: None,
            rx,
            pending: VecDeque::new(),
        };
        Ok(futures_util::stream::unfold(
            subscriber,
            |mut s| async move {
                loop {
                    if let Some(event) = s.pending.pop_front() {
                        return Some((Ok(event), s));
                    }
                    if s.backlog.is_some() {
                        if !s.read_backlog().await {
                            // The store failed: end the stream, so the
                            // client reconnects and tries again from the
                            // last line it got, rather than skip lines.
                            return None;
                        }
                        continue;
                    }
                    s.rx.borrow_and_update();
                    if s.refill() {
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
            },
        ))
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

    /// Follows the records (when no run of this server writes) and the
    /// recorded log lines of one channel while anyone watches or a run goes
    /// on.
    async fn watch(self, channel: Arc<Channel>) {
        let mut interval = tokio::time::interval(self.0.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            let nudged = tokio::select! {
                _ = interval.tick() => false,
                _ = channel.logs_nudge.notified() => true,
                _ = self.0.shutdown.cancelled() => break,
            };
            if !nudged {
                ticks += 1;
            }
            // A run of this server may start the watcher before anyone
            // subscribed: learn where the recorded lines end first, so the
            // lines of earlier runs are not published as news.
            if channel.seeded.get().is_none() && !self.seed(&channel).await {
                continue;
            }
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
            if !nudged && runs == 0 && ticks.is_multiple_of(every) {
                self.poll(&channel, generation).await;
            }
            self.follow_logs(&channel).await;
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

    /// Reads the records and publishes what changed since the last state
    /// (runs of other processes).
    async fn poll(&self, channel: &Channel, generation: u64) {
        let key = &channel.key;
        let flow = self.0.store.get_flow(key).await;
        let steps = self.0.store.get_steps(key).await;
        let (Ok(flow), Ok(steps)) = (flow, steps) else {
            return;
        };
        // A new or ended run shows in the flow record first.
        let flow_changed = flow != channel.lock().flow;
        let run = if flow_changed {
            self.0
                .store
                .list_runs(&RunQuery {
                    flow_name: Some(key.flow_name.clone()),
                    timeperiod: Some(key.timeperiod),
                    limit: Some(1),
                })
                .await
                .ok()
                .and_then(|runs| runs.into_iter().next())
        } else {
            None
        };
        let mut state = channel.lock();
        if state.generation != generation || state.runs > 0 {
            // A run of this server wrote meanwhile: its events are newer.
            return;
        }
        if let Some(run) = run.filter(|r| state.run.as_ref() != Some(r)) {
            let view = self.run_view(&run);
            state.run = Some(run);
            self.push_json(channel, &mut state, "run", &view);
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

    /// Publishes the log lines recorded after the channel's position.
    async fn follow_logs(&self, channel: &Channel) {
        for _ in 0..LOG_PAGES_PER_TICK {
            let after = channel.lock().log;
            let mut query = LogQuery::new(channel.key.clone(), LOG_PAGE);
            query.after = Some(after);
            let lines = match self.0.store.read_logs(&query).await {
                Ok(lines) => lines,
                Err(e) => {
                    warn!(flow = %channel.key, "cannot read recorded log lines: {e}");
                    return;
                }
            };
            let full = lines.len() == LOG_PAGE;
            self.publish_lines(channel, &lines);
            if !full {
                return;
            }
        }
    }

    fn publish_lines(&self, channel: &Channel, lines: &[StoredLogLine]) {
        if lines.is_empty() {
            return;
        }
        let mut state = channel.lock();
        for line in lines {
            // Only this watcher moves the position, but a page read before
            // a reseed must not go back.
            if line.position <= state.log {
                continue;
            }
            state.log = line.position;
            self.push_json(
                channel,
                &mut state,
                "log",
                &LogView::new(line, &self.0.redact),
            );
        }
    }
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

/// Log lines a subscriber is owed from the store before its snapshot.
struct Backlog {
    /// Sent up to this position.
    after: u64,
    /// Owed up to this position (the channel's when the gap was found).
    upto: u64,
    snapshot: SseEvent,
}

struct Subscriber {
    hub: Hub,
    channel: Arc<Channel>,
    #[allow(dead_code)] // held for its Drop
    guard: SubscriberGuard,
    /// Journal sequence delivered up to; `None`: a snapshot is due.
    cursor: Option<u64>,
    /// Store log position delivered up to; `None`: the client has no log
    /// position, so it gets no backlog (it reads `/logs`).
    log: Option<u64>,
    /// Why a snapshot is sent.
    reason: &'static str,
    backlog: Option<Backlog>,
    rx: watch::Receiver<u64>,
    pending: VecDeque<SseEvent>,
}

impl Subscriber {
    /// Queues the journal's events after the cursor, or, when they are not
    /// all there (or never were), prepares the backlog and snapshot. True
    /// when something was queued or prepared.
    fn refill(&mut self) -> bool {
        let state = self.channel.lock();
        match self.cursor {
            Some(cursor) if cursor >= state.floor => {
                let start = state.journal.partition_point(|e| e.seq <= cursor);
                for event in state.journal.range(start..) {
                    self.pending.push_back(
                        SseEvent::default()
                            .id(self.hub.id(event.seq, event.log))
                            .event(event.kind)
                            .data(&event.data),
                    );
                    self.cursor = Some(event.seq);
                    self.log = Some(event.log);
                }
                !self.pending.is_empty()
            }
            cursor => {
                let reason = if cursor.is_some() {
                    "events were dropped from this viewer's journal: the log lines after the last one received, then the current state"
                } else {
                    self.reason
                };
                let end = state.last_seq();
                let snapshot = SseEvent::default()
                    .id(self.hub.id(end, state.log))
                    .event("snapshot")
                    .data(self.hub.snapshot(&state, reason));
                self.cursor = Some(end);
                match self.log.filter(|&after| after < state.log) {
                    Some(after) => {
                        self.backlog = Some(Backlog {
                            after,
                            upto: state.log,
                            snapshot,
                        })
                    }
                    None => self.pending.push_back(snapshot),
                }
                self.log = Some(state.log);
                true
            }
        }
    }

    /// Reads the next page of the backlog into `pending` (the snapshot once
    /// it is complete). False when the store failed.
    async fn read_backlog(&mut self) -> bool {
        let Some(backlog) = &mut self.backlog else {
            return true;
        };
        let mut query = LogQuery::new(self.channel.key.clone(), LOG_PAGE);
        query.after = Some(backlog.after);
        let lines = match self.hub.0.store.read_logs(&query).await {
            Ok(lines) => lines,
            Err(e) => {
                warn!(flow = %self.channel.key, "cannot read recorded log lines: {e}");
                return false;
            }
        };
        let full = lines.len() == LOG_PAGE;
        for line in lines.iter().take_while(|l| l.position <= backlog.upto) {
            backlog.after = line.position;
            match serde_json::to_string(&LogView::new(line, &self.hub.0.redact)) {
                Ok(data) => self.pending.push_back(
                    SseEvent::default()
                        .id(self.hub.id(0, line.position))
                        .event("log")
                        .data(data),
                ),
                Err(e) => warn!("cannot encode a log event: {e}"),
            }
        }
        let done = !full || backlog.after >= backlog.upto || lines.is_empty();
        if done {
            if let Some(backlog) = self.backlog.take() {
                self.pending.push_back(backlog.snapshot);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_other_shapes() {
        let id = EventId {
            instance: 0xab,
            seq: 42,
            log: 7,
        };
        assert_eq!(id.to_string(), "000000ab-42-7");
        assert_eq!(EventId::parse("000000ab-42-7"), Some(id));
        for bad in ["", "12", "x-1-2", "ab-1", "ab-1-2-3", "ab--2", "ab-1-x"] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }
}
