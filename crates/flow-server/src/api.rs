//! The JSON API and the page's files. Every handler checks the flow name,
//! timeperiod and step against the known flows before it reads or writes
//! anything; GET handlers never write.

use crate::catalog::{clip, Catalog, FlowEntry, StepActions};
use crate::error::ApiError;
use crate::events::Hub;
use crate::layout::NodeKind;
use crate::runs::{CancelOutcome, EngineRequest, LaunchError, Observer, Registry};
use crate::views::{
    FlowView, JobView, LogView, RollbackView, RunStatus, RunView, StepStateView, UsageView,
};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use flow_core::{
    FlowKey, FlowQuery, FlowState, FlowStore, FlowUsage, LeaseOutcome, LogQuery, RecordId, RunMode,
    RunQuery, Settings, StepRecord, StepState, Timeperiod,
};
use flow_engine::{CancelError, CancelRequest, EngineError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What the handlers share.
pub struct AppState {
    pub catalog: Catalog,
    /// Reads.
    pub store: Arc<dyn FlowStore>,
    /// Writes of this server (they publish events).
    pub observed: Arc<dyn FlowStore>,
    pub hub: Hub,
    pub registry: Arc<Registry>,
    pub launcher: Option<Arc<dyn crate::RunLauncher>>,
    pub redact: Arc<Settings>,
    pub lease_ttl: Duration,
    /// This server's lease owner id (for run-mode writes).
    pub owner: String,
    pub shutdown: CancellationToken,
    /// The series `/metrics` shows; `None` answers it 404.
    pub metrics: Option<flow_signals::MetricsRegistry>,
    /// The timetable's series in `metrics`, refreshed at each scrape.
    pub timetable: Option<crate::metrics::TimetableSeries>,
    /// `[cost]`'s prices, for the runs' and flows' estimated cost.
    pub prices: Option<flow_core::PriceTable>,
    /// The SLA misses in `metrics`, refreshed at each scrape.
    pub sla: Option<crate::metrics::SlaSeries>,
}

type Shared = State<Arc<AppState>>;

/// The API's routes and the page's files.
pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(crate::assets::index))
        .route("/assets/{file}", get(crate::assets::asset))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/api/definitions", get(definitions))
        .route("/api/flows", get(list_flows))
        .route("/api/jobs", get(crate::jobs::jobs))
        .route("/api/flows/{name}/run-mode", post(set_run_mode))
        .route("/api/flows/{name}/{timeperiod}", get(flow_detail))
        .route(
            "/api/flows/{name}/{timeperiod}/steps/{step}",
            get(step_detail),
        )
        .route("/api/flows/{name}/{timeperiod}/logs", get(logs))
        .route("/api/flows/{name}/{timeperiod}/events", get(events))
        .route("/api/flows/{name}/{timeperiod}/runs", get(runs))
        .route("/api/flows/{name}/{timeperiod}/run", post(run))
        .route("/api/flows/{name}/{timeperiod}/recover", post(recover))
        .route("/api/flows/{name}/{timeperiod}/run-one", post(run_one))
        .route("/api/flows/{name}/{timeperiod}/run-from", post(run_from))
        .route("/api/flows/{name}/{timeperiod}/cancel", post(cancel))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// The largest request body read (a run mode's body names one step):
/// 64 KiB; a larger one is answered 413.
pub const BODY_LIMIT: usize = 64 * 1024;

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no such page or API path: {}", clip(uri.path())))
}

/// Path parameters with a JSON 400 instead of axum's plain-text rejection.
struct ApiPath<T>(T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Query parameters with a JSON 400.
pub(crate) struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| ApiQuery(t))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// A JSON body (an empty one reads as `{}`), with a JSON 400 naming the
/// problem.
fn body<T: DeserializeOwned + Default>(headers: &HeaderMap, bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| {
            c.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(ApiError::BadRequest(
            "send the body as JSON with Content-Type: application/json".into(),
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
}

#[derive(Deserialize)]
struct FlowPath {
    name: String,
    timeperiod: String,
}

impl FlowPath {
    /// The known flow and its parsed timeperiod, or 404/400.
    fn resolve(&self, state: &AppState) -> Result<(Arc<FlowEntry>, FlowKey), ApiError> {
        let flow = state.catalog.get(&self.name)?;
        let tp = flow.timeperiod(&self.timeperiod)?;
        let key = FlowKey::new(flow.graph.name(), tp);
        Ok((flow, key))
    }
}

// ---------------------------------------------------------------- reads --

#[derive(Serialize)]
struct Definition {
    name: String,
    time_qualifier: &'static str,
    steps: usize,
    latest: Option<FlowView>,
}

/// `GET /api/definitions`: the flows this server knows, each with its
/// newest record.
async fn definitions(State(state): Shared) -> Result<Json<serde_json::Value>, ApiError> {
    let mut flows = Vec::new();
    for f in state.catalog.entries() {
        let latest = newest_record(&state, f.graph.name()).await?;
        flows.push(Definition {
            name: f.graph.name().to_string(),
            time_qualifier: f.graph.time_qualifier().as_str(),
            steps: f.graph.len(),
            latest: latest.as_ref().map(FlowView::new),
        });
    }
    Ok(Json(serde_json::json!({ "flows": flows })))
}

/// The record of `flow`'s newest timeperiod, if it ever ran.
async fn newest_record(
    state: &AppState,
    flow: &str,
) -> Result<Option<flow_core::FlowRecord>, ApiError> {
    let query = FlowQuery {
        limit: Some(1),
        ..FlowQuery::named(Some(flow))
    };
    Ok(state.store.list_flows(&query).await?.into_iter().next())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    name: Option<String>,
    state: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<String>,
    per_page: Option<String>,
}

pub(crate) fn number(
    field: &str,
    text: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(default),
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "{field} must be a number from 1 to {max}, not '{}'",
                clip(t)
            ))),
        },
    }
}

/// A flow record in the list, and whether this server has its flow file
/// (only those have a flow page).
#[derive(Serialize)]
struct ListedFlow {
    #[serde(flatten)]
    flow: FlowView,
    served: bool,
}

/// `GET /api/flows?name=&state=&from=&to=&page=&per_page=`: the store's
/// flow records, newest timeperiod first, filtered and paged by the store
/// (`list_flows`).
async fn list_flows(
    State(state): Shared,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = q.name.as_deref().filter(|n| !n.is_empty());
    if let Some(name) = name {
        state.catalog.get(name)?;
    }
    let wanted_state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(FlowState::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state '{}' is not a flow state ({})",
                clip(s),
                FlowState::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
    };
    let bound = |field: &str, text: Option<&str>| -> Result<Option<Timeperiod>, ApiError> {
        text.filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<Timeperiod>()
                    .map_err(|e| ApiError::BadRequest(format!("{field}: {e}")))
            })
            .transpose()
    };
    let from = bound("from", q.from.as_deref())?;
    let to = bound("to", q.to.as_deref())?;
    let page = number("page", q.page.as_deref(), 1, 1_000_000)?;
    let per_page = number("per_page", q.per_page.as_deref(), 50, 500)?;
    // One more than a page: whether an older page exists.
    let query = FlowQuery {
        flow_name: name.map(str::to_string),
        state: wanted_state,
        from,
        to,
        limit: Some(per_page + 1),
        offset: (page - 1) * per_page,
    };
    let mut records = state.store.list_flows(&query).await?;
    let more = records.len() > per_page;
    records.truncate(per_page);
    let flows: Vec<ListedFlow> = records
        .iter()
        .map(|r| ListedFlow {
            flow: FlowView::new(r),
            served: state.catalog.contains(&r.flow_name),
        })
        .collect();
    Ok(Json(serde_json::json!({
        "flows": flows,
        "page": page,
        "per_page": per_page,
        "more": more,
    })))
}

/// One node of the drawn graph with its state. Fields are spelled out (no
/// `flatten`) and serialized straight to bytes: a 10,000-step graph must be
/// answered in well under 100 ms.
#[derive(Serialize)]
struct NodeOut<'a> {
    name: &'a str,
    kind: NodeKind,
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    layer: u32,
    state: Option<StepState>,
    pre: Option<flow_core::ActionSetState>,
    main: Option<flow_core::ActionSetState>,
    post: Option<flow_core::ActionSetState>,
    attempts: u32,
    actions_done: u32,
    started_at: Option<chrono::DateTime<Utc>>,
    finished_at: Option<chrono::DateTime<Utc>>,
    duration_ms: Option<i64>,
    error: Option<String>,
    /// The job handle of the current attempt (left out when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<JobView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rollbacks: Vec<RollbackView>,
    /// Action names of each phase.
    actions: Option<ActionNames<'a>>,
}

#[derive(Serialize)]
struct GraphOut<'a> {
    width: f64,
    height: f64,
    nodes: Vec<NodeOut<'a>>,
    edges: &'a [[u32; 2]],
}

#[derive(Serialize)]
struct DefinitionOut<'a> {
    name: &'a str,
    time_qualifier: &'static str,
    steps: usize,
}

#[derive(Serialize)]
struct FlowDetail<'a> {
    flow: Option<FlowView>,
    definition: DefinitionOut<'a>,
    timeperiod: String,
    graph: GraphOut<'a>,
    /// The latest run of this flow run (any process's).
    run: Option<RunView>,
    /// What every run's clusters used and cost.
    usage: Option<UsageView>,
    can_run: bool,
}

#[derive(Serialize)]
struct ActionNames<'a> {
    pre: Vec<&'a str>,
    main: Vec<&'a str>,
    post: Vec<&'a str>,
}

fn names(v: &[crate::catalog::ActionView]) -> Vec<&str> {
    v.iter().map(|a| a.name.as_str()).collect()
}

fn action_names(a: &StepActions) -> ActionNames<'_> {
    ActionNames {
        pre: names(&a.pre),
        main: names(&a.main),
        post: names(&a.post),
    }
}

/// The synthetic nodes' states: `start` has run once the flow started,
/// `finish` once it finished.
fn synthetic(name: &str, kind: NodeKind, flow: Option<&flow_core::FlowRecord>) -> StepStateView {
    let mut view = StepStateView::none(name);
    let Some(flow) = flow else { return view };
    match kind {
        NodeKind::Start if flow.started_at.is_some() => {
            view.state = Some(StepState::Processed);
            view.started_at = flow.started_at;
            view.finished_at = flow.started_at;
        }
        NodeKind::Finish if flow.finished_at.is_some() && flow.state != FlowState::InProgress => {
            view.state = Some(match flow.state {
                FlowState::Processed => StepState::Processed,
                FlowState::Noop => StepState::Noop,
                FlowState::Invalid => StepState::Invalid,
                FlowState::Embryo => StepState::Embryo,
                FlowState::InProgress => StepState::InProgress,
            });
            view.started_at = flow.finished_at;
            view.finished_at = flow.finished_at;
        }
        _ => {}
    }
    view
}

/// `GET /api/flows/{name}/{timeperiod}`: the flow record (null if it never
/// ran) and its graph with every node's state, plus `start` and `finish`.
async fn flow_detail(
    State(state): Shared,
    ApiPath(path): ApiPath<FlowPath>,
) -> Result<Response, ApiError> {
    let (flow, key) = path.resolve(&state)?;
    let layout = Catalog::layout(&flow).await;
    let actions = flow.actions();
    let record = state.store.get_flow(&key).await?;
    let steps = state.store.get_steps(&key).await?;
    let mut by_name: HashMap<String, StepRecord> = steps
        .into_iter()
        .map(|s| (s.step_name.clone(), s))
        .collect();
    let nodes: Vec<NodeOut> = layout
        .nodes
        .iter()
        .map(|n| {
            let (state_view, names) = match n.index {
                Some(i) => (
                    by_name.remove(&n.name).map_or_else(
                        || StepStateView::none(&n.name),
                        |r| StepStateView::new(&r, &state.redact),
                    ),
                    Some(action_names(&actions[i])),
                ),
                None => (synthetic(&n.name, n.kind, record.as_ref()), None),
            };
            NodeOut {
                name: &n.name,
                kind: n.kind,
                x: n.x,
                y: n.y,
                w: n.w,
                h: n.h,
                layer: n.layer,
                state: state_view.state,
                pre: state_view.pre,
                main: state_view.main,
                post: state_view.post,
                attempts: state_view.attempts,
                actions_done: state_view.actions_done,
                started_at: state_view.started_at,
                finished_at: state_view.finished_at,
                duration_ms: state_view.duration_ms,
                error: state_view.error,
                job: state_view.job,
                rollbacks: state_view.rollbacks,
                actions: names,
            }
        })
        .collect();
    let usage = usage_of(&state, &key).await?;
    let run = runs_of(&state, &key, 1, &usage).await?.into_iter().next();
    let detail = FlowDetail {
        flow: record.as_ref().map(FlowView::new),
        definition: DefinitionOut {
            name: flow.graph.name(),
            time_qualifier: flow.graph.time_qualifier().as_str(),
            steps: flow.graph.len(),
        },
        timeperiod: key.timeperiod.to_string(),
        graph: GraphOut {
            width: layout.width,
            height: layout.height,
            nodes,
            edges: &layout.edges,
        },
        run,
        usage: UsageView::of(&usage.flow),
        can_run: state.launcher.is_some(),
    };
    let mut body = Vec::with_capacity(400 * layout.nodes.len() + 1024);
    serde_json::to_writer(&mut body, &detail).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Deserialize)]
struct StepPath {
    name: String,
    timeperiod: String,
    step: String,
}

/// `GET /api/flows/{name}/{timeperiod}/steps/{step}`: one step in detail.
async fn step_detail(
    State(state): Shared,
    ApiPath(path): ApiPath<StepPath>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (flow, key) = FlowPath {
        name: path.name,
        timeperiod: path.timeperiod,
    }
    .resolve(&state)?;
    let index = flow.step(&path.step)?;
    let actions = flow.actions();
    let record = state
        .store
        .get_steps(&key)
        .await?
        .into_iter()
        .find(|s| s.step_name == path.step);
    let view = record.as_ref().map_or_else(
        || StepStateView::none(&path.step),
        |r| StepStateView::new(r, &state.redact),
    );
    let dependants: Vec<&str> = flow
        .graph
        .dependants(index)
        .iter()
        .map(|&d| flow.graph.step(d).name.as_str())
        .collect();
    Ok(Json(serde_json::json!({
        "flow_name": flow.graph.name(),
        "timeperiod": key.timeperiod.to_string(),
        "step": view,
        "definition": actions[index],
        "dependants": dependants,
        "log": format!("/api/flows/{}/{}/logs?step={}", flow.graph.name(), key.timeperiod, path.step),
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogQueryParams {
    step: Option<String>,
    run: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/flows/{name}/{timeperiod}/logs?step=&run=&after=&limit=`: the
/// flow run's recorded log lines (every run's, the flow's and its steps';
/// or one step's, or one run's) after a store position, in position order.
async fn logs(
    State(state): Shared,
    ApiPath(path): ApiPath<FlowPath>,
    ApiQuery(q): ApiQuery<LogQueryParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (flow, key) = path.resolve(&state)?;
    let step = q.step.as_deref().filter(|s| !s.is_empty());
    if let Some(step) = step {
        flow.step(step)?;
    }
    let run = q.run.as_deref().filter(|r| !r.is_empty());
    let after = match q.after.as_deref().filter(|a| !a.is_empty()) {
        None => 0,
        Some(a) => a.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!(
                "after must be a log position (a number), not '{}'",
                clip(a)
            ))
        })?,
    };
    let limit = number("limit", q.limit.as_deref(), 500, 10_000)?;
    // One more than asked: whether more lines follow.
    let query = LogQuery {
        key: key.clone(),
        step: step.map(str::to_string),
        run: run.map(RecordId::new),
        after: Some(after),
        limit: limit + 1,
    };
    let mut lines = state.store.read_logs(&query).await?;
    let more = lines.len() > limit;
    lines.truncate(limit);
    let next_after = lines.last().map_or(after, |l| l.position);
    let lines: Vec<LogView> = lines
        .iter()
        .map(|l| LogView::new(l, &state.redact))
        .collect();
    Ok(Json(serde_json::json!({
        "flow_name": key.flow_name,
        "timeperiod": key.timeperiod.to_string(),
        "step": step,
        "run": run,
        "lines": lines,
        "next_after": next_after,
        "more": more,
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    last_event_id: Option<String>,
}

/// `GET /api/flows/{name}/{timeperiod}/events`: server-sent events
/// (`flow`, `step`, `log`, `run`, `snapshot`), resumable with
/// `Last-Event-ID` (see [`crate::events`]).
async fn events(
    State(state): Shared,
    ApiPath(path): ApiPath<FlowPath>,
    ApiQuery(q): ApiQuery<EventQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, key) = path.resolve(&state)?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.last_event_id);
    let stream = state
        .hub
        .subscribe(&key, last.as_deref())
        .await
        .map_err(ApiError::Internal)?;
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// What the clusters of `key`'s runs used and cost, per run and in all.
async fn usage_of(state: &AppState, key: &FlowKey) -> Result<FlowUsage, ApiError> {
    let clusters = state.store.list_clusters(Some(key)).await?;
    Ok(FlowUsage::of(&clusters, state.prices.as_ref(), Utc::now()))
}

/// The runs of `key`, newest first, at most `limit`, each with its status
/// (its record's end, or the flow's lease and this server's cancel) and
/// what its clusters used (`usage`).
async fn runs_of(
    state: &AppState,
    key: &FlowKey,
    limit: usize,
    usage: &FlowUsage,
) -> Result<Vec<RunView>, ApiError> {
    let records = state
        .store
        .list_runs(&RunQuery {
            flow_name: Some(key.flow_name.clone()),
            timeperiod: Some(key.timeperiod),
            limit: Some(limit),
        })
        .await?;
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let lease = state.store.get_lease(key).await?;
    let sla_missed_at = state
        .store
        .get_flow(key)
        .await?
        .and_then(|f| f.sla_missed_at);
    let active = state.registry.active(key);
    let now = Utc::now();
    Ok(records
        .iter()
        .map(|r| {
            let mut view = RunView::new(r, lease.as_ref(), now, state.lease_ttl, &state.redact);
            view.mark_sla(sla_missed_at);
            view.usage =
                r.id.as_ref()
                    .and_then(|id| usage.runs.get(id))
                    .and_then(UsageView::of);
            let cancelling = active
                .as_ref()
                .is_some_and(|a| a.cancelling && a.owner == r.owner);
            if view.status == RunStatus::Running && cancelling {
                view.status = RunStatus::Cancelling;
            }
            view
        })
        .collect())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    limit: Option<String>,
}

/// `GET /api/flows/{name}/{timeperiod}/runs?limit=`: run history from the
/// store (every process's runs), newest first.
async fn runs(
    State(state): Shared,
    ApiPath(path): ApiPath<FlowPath>,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, key) = path.resolve(&state)?;
    let limit = number("limit", q.limit.as_deref(), 50, 1_000)?;
    let usage = usage_of(&state, &key).await?;
    let runs = runs_of(&state, &key, limit, &usage).await?;
    Ok(Json(serde_json::json!({
        "flow_name": key.flow_name,
        "timeperiod": key.timeperiod.to_string(),
        "runs": runs,
        "usage": UsageView::of(&usage.flow),
    })))
}

// --------------------------------------------------------------- writes --

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StepBody {
    step: Option<String>,
}

async fn run(
    State(state): Shared,
    ApiPath(path): ApiPath<FlowPath>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    start(state, path, RunMode::Nominal, &headers, &bytes).await
}

async fn recover(
    State(state): Shared,
    ApiPath(path): ApiPath<FlowPath>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    start(state, path, RunMode::Recovery, &headers, &bytes).await
}

async fn run_one(
    State(state): Shared,
    ApiPath(path): ApiPath<FlowPath>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    start(state, path, RunMode::RunOne, &headers, &bytes).await
}

async fn run_from(
    State(state): Shared,
    ApiPath(path): ApiPath<FlowPath>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    start(state, path, RunMode::RunFrom, &headers, &bytes).await
}

/// The answer to an accepted run mode: the run as the store recorded it.
#[derive(Serialize)]
struct Accepted {
    #[serde(flatten)]
    run: RunView,
    steps_to_run: usize,
    clusters: usize,
}

/// Starts the engine in this process for one run mode and answers as soon
/// as it took the lease, accepted the mode and recorded the run (202 with
/// the run and its store id), or refused (409 with the engine's reason).
async fn start(
    state: Arc<AppState>,
    path: FlowPath,
    mode: RunMode,
    headers: &HeaderMap,
    bytes: &Bytes,
) -> Result<Response, ApiError> {
    let (flow, key) = path.resolve(&state)?;
    let body: StepBody = body(headers, bytes)?;
    let needs_step = matches!(mode, RunMode::RunOne | RunMode::RunFrom);
    let step = match (needs_step, body.step) {
        (true, Some(step)) => {
            flow.step(&step)?;
            Some(step)
        }
        (true, None) => {
            return Err(ApiError::BadRequest(format!(
                "{} needs the step in the body: {{\"step\": \"NAME\"}}",
                mode_name(mode)
            )))
        }
        (false, Some(_)) => {
            return Err(ApiError::BadRequest(format!(
                "{} runs the whole flow and takes no step",
                mode_name(mode)
            )))
        }
        (false, None) => None,
    };
    let Some(launcher) = state.launcher.clone() else {
        return Err(ApiError::Unavailable(
            "this server was started without a way to run flows".into(),
        ));
    };
    if state.shutdown.is_cancelled() {
        return Err(ApiError::Unavailable("the server is shutting down".into()));
    }

    // A freerun mode on a scheduled flow needs its Job finished, like the
    // CLI's.
    if mode.is_freerun() {
        if let Some(why) = flow_engine::timetable::freerun_refusal(
            state.store.as_ref(),
            &flow.graph,
            key.timeperiod,
        )
        .await?
        {
            return Err(ApiError::Conflict(why));
        }
    }

    // recover, run-one and run-from keep the stored run's window, like the
    // CLI.
    let q = flow.graph.time_qualifier();
    let stored = state.store.get_flow(&key).await?;
    let (start_tp, end_tp) = match (&stored, mode) {
        (Some(f), RunMode::Recovery | RunMode::RunOne | RunMode::RunFrom) => {
            (f.start_timeperiod, f.end_timeperiod)
        }
        _ => {
            // Year 9999's last period has no end a timeperiod can hold.
            let end = key
                .timeperiod
                .checked_next(q)
                .map_err(|e| ApiError::BadRequest(format!("flow '{}': {e}", flow.graph.name())))?;
            (key.timeperiod, end)
        }
    };
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let observer = Arc::new(Observer {
        started: Mutex::new(Some(started_tx)),
    });
    let engine = launcher
        .engine(EngineRequest {
            graph: flow.graph.clone(),
            timeperiod: key.timeperiod,
            start_timeperiod: start_tp,
            end_timeperiod: end_tp,
            store: state.observed.clone(),
            observer,
        })
        .await
        .map_err(|e| match e {
            LaunchError::Refused(m) => ApiError::Conflict(state.redact.redact(&m)),
            LaunchError::Failed(m) => ApiError::Internal(state.redact.redact(&m)),
        })?;
    let owner = engine.owner().to_string();
    let cancel = CancellationToken::new();
    let slot = state
        .registry
        .reserve(&key, &owner, cancel.clone())
        .map_err(|holder| {
            ApiError::Conflict(format!(
                "flow {key} is being run by this server (run {holder}); cancel it or wait for it to end"
            ))
        })?;
    slot.keep();

    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<Result<(), EngineError>>();
    let task_state = state.clone();
    let task_key = key.clone();
    let task_owner = owner.clone();
    let guard = state.hub.run_guard(&key);
    tokio::spawn(async move {
        let engine_cancel = engine.cancel_token();
        let run = engine.execute(mode, step.as_deref());
        tokio::pin!(run);
        let mut fired = false;
        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                _ = cancel.cancelled(), if !fired => {
                    fired = true;
                    engine_cancel.cancel();
                }
            }
        };
        task_state.registry.finish(&task_key);
        drop(guard);
        // A run that began and then failed (store, lost lease) left its
        // record open: say why on the stream.
        if let Err(e) = &result {
            let begun = task_state
                .hub
                .current_run(&task_key)
                .filter(|r| r.owner == task_owner && r.finished_at.is_none());
            if let Some(run) = begun {
                let mut view = RunView::with_status(&run, RunStatus::Failed, &task_state.redact);
                view.error = Some(task_state.redact.redact(&e.to_string()));
                task_state.hub.run_notice(&task_key, &view);
            }
        }
        let _ = done_tx.send(result.map(|_| ()));
    });

    tokio::select! {
        started = started_rx => {
            if let Ok((steps_to_run, clusters)) = started {
                // begin_run came before run_started: the hub has the run.
                let run = state
                    .hub
                    .current_run(&key)
                    .filter(|r| r.owner == owner)
                    .ok_or_else(|| ApiError::Internal(format!("the run of {key} started without a run record")))?;
                if let Some(id) = &run.id {
                    state.registry.begun(&key, id.clone());
                }
                let run = RunView::with_status(&run, RunStatus::Running, &state.redact);
                info!(flow = %key, run = %run.id, "{} started over HTTP", mode_name(mode));
                return Ok((StatusCode::ACCEPTED, Json(Accepted { run, steps_to_run, clusters })).into_response());
            }
            // The observer was dropped without a start: the engine ended
            // first; its result says why.
            finished_early(&state, &key, done_rx.await)
        }
        done = &mut done_rx => finished_early(&state, &key, done),
    }
}

/// The answer when the engine ended before it started the run: its refusal
/// (409), its failure (500), or, when it ended well without starting
/// anything, its record.
fn finished_early(
    state: &AppState,
    key: &FlowKey,
    done: Result<Result<(), EngineError>, tokio::sync::oneshot::error::RecvError>,
) -> Result<Response, ApiError> {
    match done {
        Ok(Err(e)) => Err(engine_error(e, &state.redact)),
        Ok(Ok(())) => Ok((
            StatusCode::OK,
            Json(serde_json::json!({ "flow": key.to_string() })),
        )
            .into_response()),
        Err(_) => Err(ApiError::Internal(format!(
            "the engine of {key} stopped without an answer"
        ))),
    }
}

fn engine_error(e: EngineError, redact: &Settings) -> ApiError {
    let message = redact.redact(&e.to_string());
    match e {
        EngineError::Refused { .. } | EngineError::LeaseHeld { .. } | EngineError::Logs { .. } => {
            ApiError::Conflict(message)
        }
        _ => ApiError::Internal(message),
    }
}

fn mode_name(mode: RunMode) -> &'static str {
    match mode {
        RunMode::Nominal => "run",
        RunMode::Recovery => "recover",
        RunMode::RunOne => "run-one",
        RunMode::RunFrom => "run-from",
        RunMode::Rollback => "rollback",
    }
}

/// `POST .../cancel`: a run of this server is cancelled (like Ctrl-C: no
/// new step starts, running jobs stop, the flow ends `invalid`; 202); a
/// flow no engine runs gets what `flow cancel` does (the jobs a dead run
/// left are cancelled, unfinished steps marked `canceled`; 200); a flow
/// another engine runs is refused (409).
async fn cancel(
    State(state): Shared,
    ApiPath(path): ApiPath<FlowPath>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let (flow, key) = path.resolve(&state)?;
    let _: StepBody = body(&headers, &bytes)?;
    if let Some(active) = state.registry.cancel(&key) {
        let run = state
            .hub
            .current_run(&key)
            .filter(|r| r.owner == active.owner && r.finished_at.is_none());
        let view = run.map(|r| RunView::with_status(&r, RunStatus::Cancelling, &state.redact));
        if let Some(view) = &view {
            state.hub.run_notice(&key, view);
        }
        return Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "cancelling": true, "run": view })),
        )
            .into_response());
    }
    let Some(launcher) = state.launcher.clone() else {
        return Err(ApiError::Unavailable(
            "this server was started without a way to run flows".into(),
        ));
    };
    let backends = launcher.cancel_backends();
    let request = CancelRequest {
        key: &key,
        graph: Some(&flow.graph),
        factory: &backends.factory,
        values: &backends.values,
        owner: &backends.owner,
        ttl: backends.lease_ttl,
    };
    match flow_engine::cancel_flow(&state.observed, request).await {
        Ok(outcome) => {
            let outcome = CancelOutcome {
                state: outcome.state,
                canceled: outcome.canceled,
                problems: outcome
                    .problems
                    .iter()
                    .map(|p| state.redact.redact(p))
                    .collect(),
            };
            Ok((StatusCode::OK, Json(outcome)).into_response())
        }
        Err(CancelError::NoRecord) => {
            Err(ApiError::Conflict(state.redact.redact(&format!(
                "no record of flow {key}: nothing to cancel"
            ))))
        }
        Err(e @ CancelError::Held { .. }) => {
            Err(ApiError::Conflict(state.redact.redact(&e.to_string())))
        }
        Err(e) => Err(ApiError::Internal(state.redact.redact(&e.to_string()))),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunModeBody {
    run_mode: Option<String>,
    timeperiod: Option<String>,
}

/// `POST /api/flows/{name}/run-mode` `{"run_mode": "run_mode_nominal" |
/// "run_mode_recovery", "timeperiod": "..."}`: stores the managed run mode
/// on the flow record of that timeperiod (the newest one when none is
/// given), under the flow's lease so it cannot race a running engine (the
/// write is fenced by it).
async fn set_run_mode(
    State(state): Shared,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let flow = state.catalog.get(&name)?;
    let body: RunModeBody = body(&headers, &bytes)?;
    let mode = match body.run_mode.as_deref() {
        Some(m) => match RunMode::parse(m) {
            Some(mode @ (RunMode::Nominal | RunMode::Recovery)) => mode,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "run_mode must be \"run_mode_nominal\" or \"run_mode_recovery\", not '{}'",
                    clip(m)
                )))
            }
        },
        None => return Err(ApiError::BadRequest("the body needs \"run_mode\"".into())),
    };
    let key = match body.timeperiod.as_deref() {
        Some(tp) => FlowKey::new(flow.graph.name(), flow.timeperiod(tp)?),
        None => match newest_record(&state, flow.graph.name()).await? {
            Some(r) => r.key(),
            None => {
                return Err(ApiError::NotFound(format!(
                    "flow '{}' has no record yet to store a run mode on",
                    flow.graph.name()
                )))
            }
        },
    };
    if state.store.get_flow(&key).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "no record of flow {key} to store a run mode on"
        )));
    }
    let owner = format!("{}:{:08x}", state.owner, fastrand::u32(..));
    let lease = match state
        .store
        .acquire_lease(&key, &owner, Utc::now(), state.lease_ttl)
        .await?
    {
        LeaseOutcome::Acquired(lease) => lease,
        LeaseOutcome::HeldBy {
            owner,
            heartbeat_at,
        } => {
            return Err(ApiError::Conflict(format!(
                "flow {key} is being run by {owner} (last heartbeat {heartbeat_at}); set the run mode when it has ended"
            )))
        }
    };
    let result = async {
        let Some(mut record) = state.store.get_flow(&key).await? else {
            return Err(ApiError::NotFound(format!("no record of flow {key}")));
        };
        record.run_mode = mode;
        Ok(state.observed.save_flow(&lease, &record).await?)
    }
    .await;
    if let Err(e) = state.store.release_lease(&lease).await {
        warn!(flow = %key, "cannot release the lease taken to set the run mode: {e}");
    }
    let saved = result?;
    Ok(Json(serde_json::json!({ "flow": FlowView::new(&saved) })))
}
