//! OpenLineage: a `RunEvent` per step (`START` when it starts; `COMPLETE`,
//! `FAIL` or `ABORT` when it ends), posted as JSON to `{url}/api/v1/lineage`
//! (Marquez's endpoint) through the deliveries' retry (`deliver.rs`).
//!
//! Names and ids, derived (UUIDv5) rather than stored, so every engine that
//! reports on one run names it alike:
//! - a step is the job `FLOW.STEP` in the configured namespace; its run is
//!   one step attempt, id `v5(flow run id, step, the attempt's start time
//!   from the step record)`: a `recover` that goes on with a dead run's
//!   attempt (adopting its job) reports on the same run, a fresh attempt is
//!   a new run;
//! - the flow run is each step run's `parent` facet: the job `FLOW`, id
//!   `v5(flow, timeperiod, the run record of the latest fresh run of that
//!   timeperiod)`: the same through `recover`, `run-one` and `run-from`, a
//!   new one for each `flow run`.
//!
//! Events are posted on the exporters' own thread (off the steps' path),
//! one per request and several at once ([`IN_FLIGHT`]) on the one
//! keep-alive client, or with `[lineage] batch` set, as JSON arrays to the
//! batch endpoint one request at a time (`lineage/batch.rs`), in the
//! order consumers rely on: a step's end after its `START`, and a step's
//! `START` after the end of every step that ended before it started (so
//! its upstream steps' outputs are complete before it reads them, the
//! order Marquez versions datasets in). Steps running side by side post
//! side by side. A failed delivery is a warning line of the flow log
//! (never with the URL or the key), and the run's end adds one line
//! counting them. At `flow run`'s end the wait for events still unsent is
//! bounded ([`Lineage::abandon`]): a receiver that is down cannot hold the
//! exit for a retry budget per event of a long chain.

mod batch;
mod event;

use crate::deliver::{post, retrying, value, Failed};
use crate::record;
use chrono::{SecondsFormat, Utc};
use flow_core::lineage::{LineageSpec, StepDatasets};
use flow_core::{
    FlowGraph, FlowKey, FlowStore, LogLevel, RecordId, RunMode, RunQuery, StepState, TimeQualifier,
};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Context;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::warn;
use uuid::Uuid;

use crate::signal::Signal;

/// The `producer` of every event and facet: this crate, at its version.
pub const PRODUCER: &str = concat!(
    env!("CARGO_PKG_REPOSITORY"),
    "/tree/v",
    env!("CARGO_PKG_VERSION"),
    "/crates/flow-signals"
);
/// The OpenLineage spec version the events follow.
pub const RUN_EVENT_SCHEMA: &str =
    "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const PARENT_SCHEMA: &str =
    "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet";
const NOMINAL_TIME_SCHEMA: &str =
    "https://openlineage.io/spec/facets/1-0-1/NominalTimeRunFacet.json#/$defs/NominalTimeRunFacet";
const JOB_TYPE_SCHEMA: &str =
    "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
/// Where events are posted, under the configured URL.
pub const ENDPOINT: &str = "/api/v1/lineage";
pub use batch::BATCH_ENDPOINT;
/// How many events may be posting at once, one per request (Marquez takes
/// one event per request: its API has no batch).
pub(crate) const IN_FLIGHT: usize = 8;
/// The UUIDv5 namespace of flow's run ids.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_0e7a_3b58_4d2e_9a47_51c2_8e0d_f3a9);

/// What is reported, where, and where outcomes are written.
#[derive(Clone)]
pub struct LineageConfig {
    /// `[lineage]`.
    pub spec: LineageSpec,
    /// What each flow's events say, by flow name.
    pub flows: HashMap<String, LineageFlow>,
    /// The store the runs write (the run history the flow run's id is
    /// derived from; where delivery outcomes are recorded).
    pub store: Arc<dyn FlowStore>,
    /// Root of the flow log files, if they are written.
    pub log_directory: Option<PathBuf>,
}

impl std::fmt::Debug for LineageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineageConfig")
            .field("spec", &self.spec)
            .field("flows", &self.flows)
            .finish_non_exhaustive()
    }
}

/// What one flow's events say besides its names: its steps' datasets and
/// its timeperiods' length (the runs' nominal time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageFlow {
    /// The flow's time qualifier.
    pub time_qualifier: TimeQualifier,
    /// Its steps' datasets, by step name.
    pub datasets: BTreeMap<String, StepDatasets>,
}

impl LineageFlow {
    /// What the flow file `graph` says.
    pub fn of(graph: &FlowGraph) -> LineageFlow {
        LineageFlow {
            time_qualifier: graph.time_qualifier(),
            datasets: graph.signals().datasets.clone(),
        }
    }
}

/// The flow run's id: the same for every mode that goes on with the
/// fresh run whose run record is `anchor`.
pub fn flow_run_id(key: &FlowKey, anchor: &str) -> Uuid {
    Uuid::new_v5(
        &ID_NAMESPACE,
        format!("flow-run\0{}\0{}\0{anchor}", key.flow_name, key.timeperiod).as_bytes(),
    )
}

/// A step attempt's id within the flow run `parent`.
pub fn step_run_id(parent: Uuid, step: &str, since: chrono::DateTime<Utc>) -> Uuid {
    Uuid::new_v5(
        &ID_NAMESPACE,
        format!(
            "step-run\0{parent}\0{step}\0{}",
            since.to_rfc3339_opts(SecondsFormat::Nanos, true)
        )
        .as_bytes(),
    )
}

/// The event a step's final state is, if any: a step left in progress (its
/// job's outcome unknown) is not over, the next engine goes on with it.
fn end_event(state: StepState) -> Option<&'static str> {
    match state {
        StepState::Processed | StepState::Noop => Some("COMPLETE"),
        StepState::Invalid => Some("FAIL"),
        StepState::Canceled | StepState::Embryo => Some("ABORT"),
        StepState::InProgress => None,
    }
}

/// The exporter: the flow runs in progress and their posting tasks.
pub(crate) struct Lineage {
    config: Arc<LineageConfig>,
    limits: PostLimits,
    runs: HashMap<FlowKey, FlowRun>,
    /// With `[lineage] batch`: the queue of events, started at the first.
    batches: Option<batch::Batches>,
}

/// What bounds every flow run's posts.
struct PostLimits {
    /// How many are in flight at once.
    in_flight: Arc<Semaphore>,
    /// Raised by [`Lineage::abandon`]: the posts made before it give up.
    abandoned: watch::Sender<u64>,
}

/// Resolves once an event's delivery ended (delivered or given up).
type Posted = Shared<BoxFuture<'static, ()>>;

/// Deliveries not known to have ended. Nothing polls a [`Posted`] until
/// something awaits it, so whether one ended is found by polling it (with
/// a waker that does nothing); the ended ones are dropped whenever the
/// list has doubled since it was last pruned, so a run's cost stays linear
/// in its events (pruning at each event made a 1,000-step chain's 2,000
/// events cost millions of checks on the exporters' thread).
#[derive(Default)]
struct Pending {
    posts: Vec<Posted>,
    /// How many were left at the last pruning.
    kept: usize,
}

impl Pending {
    /// The list is pruned once it holds this many more than it kept.
    const SLACK: usize = 16;

    fn push(&mut self, post: Posted) {
        if self.posts.len() >= 2 * self.kept + Self::SLACK {
            let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
            self.posts
                .retain_mut(|post| post.poll_unpin(&mut cx).is_pending());
            self.kept = self.posts.len();
        }
        self.posts.push(post);
    }
}

struct FlowRun {
    id: Uuid,
    /// Step runs started and not ended, by step: their id and their
    /// `START`'s delivery.
    open: HashMap<String, (Uuid, Posted)>,
    /// Step ends whose delivery may not have ended yet (what the next
    /// `START` waits for).
    ends: Pending,
    /// Every event's delivery not known to have ended.
    posts: Pending,
    /// Where the run's outcome lines go.
    outcomes: Arc<Outcomes>,
}

/// One flow run's delivery outcomes.
struct Outcomes {
    key: FlowKey,
    /// The run record the lines belong to.
    record: Option<RecordId>,
    delivered: AtomicU32,
    failed: AtomicU32,
    /// Given up unsent when the wait at exit ended.
    abandoned: AtomicU32,
}

impl Outcomes {
    /// Writes `message` (masked) to the run's flow log.
    async fn line(&self, config: &LineageConfig, level: LogLevel, message: &str) {
        record::line(
            &config.store,
            config.log_directory.as_deref(),
            &self.key,
            self.record.clone(),
            level,
            flow_core::mask(message).into_owned(),
        )
        .await;
    }
}

/// One event to post.
struct Event {
    kind: &'static str,
    step: String,
    body: Vec<u8>,
}

impl Lineage {
    pub(crate) fn new(config: LineageConfig) -> Lineage {
        Lineage {
            config: Arc::new(config),
            limits: PostLimits {
                in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
                abandoned: watch::Sender::new(0),
            },
            runs: HashMap::new(),
            batches: None,
        }
    }

    /// How long the exit waits for events still unsent: one delivery's
    /// longest time (the events go on being posted meanwhile).
    pub(crate) fn exit_wait(&self) -> std::time::Duration {
        self.config.spec.delivery().longest()
    }

    /// Sends the events waiting for a batch without lingering (the wait at
    /// exit begins).
    pub(crate) fn hurry(&self) {
        if let Some(batches) = &self.batches {
            batches.hurry();
        }
    }

    /// Gives up every event not yet delivered (each is counted as
    /// abandoned in its run's line); events of later runs post as usual.
    pub(crate) fn abandon(&self) {
        self.limits
            .abandoned
            .send_modify(|generation| *generation += 1);
    }

    /// Turns `signal` into events. Returns a flow run's last task when its
    /// run ended (it finishes once every event was posted or given up and
    /// the count was recorded).
    pub(crate) async fn observe(
        &mut self,
        signal: &Signal,
        http: &reqwest::Client,
    ) -> Option<JoinHandle<()>> {
        if let (None, Some(most)) = (&self.batches, self.config.spec.batch()) {
            self.batches = Some(batch::Batches::start(
                self.config.clone(),
                http.clone(),
                self.limits.abandoned.subscribe(),
                most,
            ));
        }
        let batches = self.batches.as_ref();
        match signal {
            Signal::RunStarted { flow, .. } => {
                let (id, record) = self.flow_run(flow).await;
                let run = FlowRun {
                    id,
                    open: HashMap::new(),
                    ends: Pending::default(),
                    posts: Pending::default(),
                    outcomes: Arc::new(Outcomes {
                        key: flow.clone(),
                        record,
                        delivered: AtomicU32::new(0),
                        failed: AtomicU32::new(0),
                        abandoned: AtomicU32::new(0),
                    }),
                };
                // A run whose end never came (cannot happen: one lease).
                let old = self.runs.insert(flow.clone(), run)?;
                Some(tokio::spawn(summarize(self.config.clone(), old)))
            }
            Signal::StepStarted { flow, step, since } => {
                let parent = self.runs.get(flow)?.id;
                let id = step_run_id(parent, step, *since);
                let event = self.event_in("START", flow, parent, step, id);
                let run = self.runs.get_mut(flow)?;
                // A batch queue keeps the order by itself.
                let after = match batches {
                    Some(_) => Vec::new(),
                    None => run.ends.posts.clone(),
                };
                let posted =
                    post_after(&self.config, &self.limits, batches, http, run, after, event);
                run.open.insert(step.clone(), (id, posted));
                None
            }
            Signal::StepFinished {
                flow, step, state, ..
            } => {
                let parent = self.runs.get(flow)?.id;
                let (id, started) = self.runs.get_mut(flow)?.open.remove(step)?;
                let kind = end_event(*state)?;
                let event = self.event_in(kind, flow, parent, step, id);
                let run = self.runs.get_mut(flow)?;
                let posted = post_after(
                    &self.config,
                    &self.limits,
                    batches,
                    http,
                    run,
                    vec![started],
                    event,
                );
                run.ends.push(posted);
                None
            }
            Signal::RunFinished(end) => {
                let mut run = self.runs.remove(&end.flow)?;
                // Steps the run left without an end (a lost lease, a store
                // failure): aborted under it.
                let mut open: Vec<(String, (Uuid, Posted))> = run.open.drain().collect();
                open.sort_by(|a, b| a.0.cmp(&b.0));
                for (step, (id, started)) in open {
                    let event = self.event_in("ABORT", &end.flow, run.id, &step, id);
                    // Awaited with the run's other posts (`run.posts`).
                    drop(post_after(
                        &self.config,
                        &self.limits,
                        batches,
                        http,
                        &mut run,
                        vec![started],
                        event,
                    ));
                }
                Some(tokio::spawn(summarize(self.config.clone(), run)))
            }
            _ => None,
        }
    }

    /// The flow run's id and the current run record: the run history of
    /// the flow and timeperiod, newest first, anchored at the latest fresh
    /// (`run`) mode, else the oldest run.
    async fn flow_run(&self, key: &FlowKey) -> (Uuid, Option<RecordId>) {
        let query = RunQuery {
            flow_name: Some(key.flow_name.clone()),
            timeperiod: Some(key.timeperiod),
            limit: None,
        };
        match self.config.store.list_runs(&query).await {
            Ok(runs) => {
                let anchor = runs
                    .iter()
                    .find(|r| r.mode == RunMode::Nominal)
                    .or(runs.last())
                    .and_then(|r| r.id.as_ref())
                    .map(|id| id.as_str().to_string())
                    .unwrap_or_default();
                (
                    flow_run_id(key, &anchor),
                    runs.first().and_then(|r| r.id.clone()),
                )
            }
            Err(e) => {
                warn!(flow = %key, "lineage: cannot read the run history, the flow run's id is the flow and timeperiod's: {e}");
                (flow_run_id(key, ""), None)
            }
        }
    }

    fn event_in(
        &self,
        kind: &'static str,
        flow: &FlowKey,
        parent: Uuid,
        step: &str,
        id: Uuid,
    ) -> Event {
        let body = event::run_event(
            kind,
            &event::StepRun {
                namespace: self.config.spec.namespace(),
                flow,
                parent,
                step,
                id,
                about: self.config.flows.get(&flow.flow_name),
            },
        );
        Event {
            kind,
            step: step.to_string(),
            body,
        }
    }
}

/// Spawns the post of `event` once every delivery in `after` ended,
/// within the bound of posts in flight (or, with `batches`, queues it for
/// the next batch: the queue's order is the order `after` asks for);
/// counts its outcome in `run` and writes a failure to the flow log.
/// Returns its delivery. A raise of `limits.abandoned` after this call
/// gives it up (counted, not logged).
fn post_after(
    config: &Arc<LineageConfig>,
    limits: &PostLimits,
    batches: Option<&batch::Batches>,
    http: &reqwest::Client,
    run: &mut FlowRun,
    after: Vec<Posted>,
    event: Event,
) -> Posted {
    if let Some(batches) = batches {
        let posted = batches.post(event, run.outcomes.clone(), *limits.abandoned.borrow());
        run.posts.push(posted.clone());
        return posted;
    }
    let (config, in_flight, http, outcomes) = (
        config.clone(),
        limits.in_flight.clone(),
        http.clone(),
        run.outcomes.clone(),
    );
    let mut abandoned = limits.abandoned.subscribe();
    let generation = *abandoned.borrow();
    let task = tokio::spawn(async move {
        let delivery = async {
            for earlier in after {
                earlier.await;
            }
            let endpoint = format!(
                "{}{ENDPOINT}",
                config.spec.url.as_str().trim_end_matches('/')
            );
            // Never closed, so a permit always comes.
            let _permit = in_flight.acquire().await;
            retrying(config.spec.delivery(), || {
                post_one(&config.spec, &http, &endpoint, &event.body)
            })
            .await
        };
        let outcome = tokio::select! {
            outcome = delivery => outcome,
            Ok(_) = abandoned.wait_for(|raised| *raised > generation) => {
                outcomes.abandoned.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if outcome.delivered {
            outcomes.delivered.fetch_add(1, Ordering::Relaxed);
            return;
        }
        outcomes.failed.fetch_add(1, Ordering::Relaxed);
        let message = format!(
            "lineage event {} of step {}: failed after {} attempt(s): {}",
            event.kind, event.step, outcome.attempts, outcome.detail
        );
        outcomes.line(&config, LogLevel::Warn, &message).await;
    });
    let posted: Posted = task.map(|_| ()).boxed().shared();
    run.posts.push(posted.clone());
    posted
}

/// Waits until every event of `run` was posted or given up, then records
/// how many were delivered.
async fn summarize(config: Arc<LineageConfig>, run: FlowRun) {
    for post in run.posts.posts {
        post.await;
    }
    let outcomes = &run.outcomes;
    let delivered = outcomes.delivered.load(Ordering::Relaxed);
    let failed = outcomes.failed.load(Ordering::Relaxed);
    let abandoned = outcomes.abandoned.load(Ordering::Relaxed);
    if delivered + failed + abandoned == 0 {
        return;
    }
    let mut message = format!("lineage: {delivered} event(s) delivered, {failed} failed");
    if abandoned > 0 {
        message.push_str(&format!(
            ", {abandoned} abandoned unsent when the wait at exit ended"
        ));
    }
    let level = if failed + abandoned == 0 {
        LogLevel::Info
    } else {
        LogLevel::Warn
    };
    outcomes.line(&config, level, &message).await;
}

async fn post_one(
    spec: &LineageSpec,
    http: &reqwest::Client,
    endpoint: &str,
    body: &[u8],
) -> Result<String, Failed> {
    let mut request = http
        .post(endpoint)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(key) = &spec.api_key {
        request = request.bearer_auth(value(key)?);
    }
    post(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_derived_so_every_engine_names_a_run_alike() {
        let key = FlowKey::new("etl", "2026112800".parse().unwrap());
        let flow = flow_run_id(&key, "7");
        assert_eq!(flow, flow_run_id(&key, "7"));
        assert_ne!(flow, flow_run_id(&key, "8"), "a fresh run is a new run");
        let since = Utc::now();
        let step = step_run_id(flow, "load", since);
        assert_eq!(step, step_run_id(flow, "load", since));
        assert_ne!(
            step,
            step_run_id(flow, "load", since + chrono::TimeDelta::seconds(1))
        );
        assert_ne!(step, step_run_id(flow, "clean", since));
        assert_eq!(flow.get_version_num(), 5);
    }

    #[test]
    fn each_final_state_is_one_event() {
        assert_eq!(end_event(StepState::Processed), Some("COMPLETE"));
        assert_eq!(end_event(StepState::Noop), Some("COMPLETE"));
        assert_eq!(end_event(StepState::Invalid), Some("FAIL"));
        assert_eq!(end_event(StepState::Canceled), Some("ABORT"));
        assert_eq!(end_event(StepState::InProgress), None);
    }
}
