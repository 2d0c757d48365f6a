//! A loopback **contract fake** of the Dataproc REST v1 resources flow
//! uses, for tests only: Dataproc has no emulator.
//!
//! Served: `clusters.create/get/delete`, `operations.get`,
//! `jobs.submit/get/list/cancel` under `/v1/projects/P/regions/R/...`, with
//! bodies shaped like the published reference (long-running `Operation`s
//! with `ClusterOperationMetadata`, `Cluster.status`/`statusHistory`,
//! `Job.status`/`statusHistory`, `driverOutputResourceUri`, errors as
//! `{"error": {"code", "message", "status"}}`). Nothing else.
//!
//! Time comes from a [`Clock`]: states are computed from it on every
//! request (a cluster is `CREATING` for [`FakeOptions::cluster_create`],
//! then `RUNNING`; a job `PENDING` for [`FakeOptions::job_pending`], then
//! `RUNNING` for [`FakeOptions::job_run`], then `DONE`), so a test with a
//! [`ManualClock`](flow_cloud::ManualClock) moves every state by advancing
//! it, and the `dataproc-contract-fake` binary runs on real time.
//!
//! What a job does is read from its properties (the flow's `conf`):
//! `fake.run_for` (a duration, or `forever`), `fake.outcome` (`DONE` or
//! `ERROR`), `fake.details`, `fake.driver_output` (its text),
//! `fake.fail_if_exists` (`gs://B/O`: the job ends in `ERROR` when that
//! object exists at submission), `fake.attempt_failure` (`true`: an
//! `ATTEMPT_FAILURE` half-way, then `RUNNING` again). With a GCS endpoint
//! (fake-gcs-server), a job whose main file is a `gs://` object that does
//! not exist fails like on Dataproc, and the driver output is written there
//! at submission, as `driverOutputResourceUri` + `.000000000`.
//!
//! Tests read and steer it in process ([`FakeDataproc`]'s methods) or over
//! HTTP (`/fake/...`, for the binary): request counts per method, a 429
//! with `Retry-After` for the next calls of a method, a 503 before a call
//! is carried out or after (a lost answer), a cluster whose creation fails,
//! finishing a job by hand, the `Authorization` headers, the create bodies,
//! the submitted `requestId`s and the answers' statuses received. A second
//! `jobs.submit` or `clusters.create` with the same `requestId` answers the
//! first one's job or operation (200), as the API does; the same job id
//! under another or no `requestId` is 409 `ALREADY_EXISTS`. `POST /token` is an OAuth token endpoint for a test
//! service-account key whose `token_uri` points at the fake.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use flow_cloud::Clock;
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    pub clock: Arc<dyn Clock>,
    /// fake-gcs-server's URL: job files are checked there and driver output
    /// is written there. `None`: neither.
    pub gcs_endpoint: Option<String>,
    /// The bucket of `driverOutputResourceUri` (created at start if GCS is
    /// configured).
    pub staging_bucket: String,
    pub cluster_create: Duration,
    pub cluster_delete: Duration,
    pub job_pending: Duration,
    /// `None`: jobs run until finished by hand (or cancelled).
    pub job_run: Option<Duration>,
    pub job_cancel: Duration,
}

impl FakeOptions {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        FakeOptions {
            clock,
            gcs_endpoint: None,
            staging_bucket: "dataproc-staging-fake".into(),
            cluster_create: Duration::from_secs(90),
            cluster_delete: Duration::from_secs(30),
            job_pending: Duration::from_secs(5),
            job_run: Some(Duration::from_secs(60)),
            job_cancel: Duration::from_secs(2),
        }
    }
}

type Key = (String, String, String);

struct FakeCluster {
    project: String,
    region: String,
    name: String,
    uuid: String,
    resource: Value,
    created: Duration,
    /// The create operation's error, when this cluster fails to create.
    fail: Option<String>,
    delete_at: Option<Duration>,
}

enum OpKind {
    Create,
    Delete,
}

struct FakeOp {
    name: String,
    cluster: Key,
    uuid: String,
    kind: OpKind,
    started: Duration,
    request_id: String,
}

struct Plan {
    run: Option<Duration>,
    outcome: String,
    details: String,
    attempt_failure: bool,
}

struct FakeJob {
    key: Key,
    resource: Value,
    request_id: String,
    uuid: String,
    cluster_uuid: String,
    submitted: Duration,
    plan: Plan,
    cancel_at: Option<Duration>,
    forced: Option<(Duration, String, String)>,
}

#[derive(Default)]
struct ServiceState {
    clusters: HashMap<Key, FakeCluster>,
    operations: Vec<FakeOp>,
    jobs: Vec<FakeJob>,
    /// Clusters whose deletion finished, in order.
    deleted: Vec<String>,
    requests: BTreeMap<String, u64>,
    throttles: HashMap<String, VecDeque<u64>>,
    /// Methods whose next calls are done, then answered 503 (a lost
    /// answer), by count.
    lost_answers: HashMap<String, usize>,
    /// Methods whose next calls are refused with 503 before anything is
    /// done, by count.
    unavailable: HashMap<String, usize>,
    /// Each API request's answer status, by method, in order.
    answers: BTreeMap<String, Vec<u16>>,
    /// The `requestId` of each `jobs.submit` received, in order (`""` for
    /// none).
    submit_request_ids: Vec<String>,
    fail_creates: HashMap<String, String>,
    /// Each API request's `Authorization` header ("" without one).
    authorizations: Vec<String>,
    tokens_issued: u64,
}

struct Service {
    options: FakeOptions,
    /// Wall time of clock zero, for timestamps.
    epoch: DateTime<Utc>,
    world: Mutex<ServiceState>,
    http: reqwest::Client,
}

impl Service {
    fn world(&self) -> MutexGuard<'_, ServiceState> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn now(&self) -> Duration {
        self.options.clock.now()
    }
    fn time(&self, at: Duration) -> String {
        let at = self.epoch + chrono::Duration::from_std(at).unwrap_or_default();
        at.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

/// A running fake, stopped when dropped.
pub struct FakeDataproc {
    url: String,
    shared: Arc<Service>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDataproc {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn uuid() -> String {
    let a = fastrand::u128(..);
    let h = format!("{a:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl FakeDataproc {
    /// Starts on a free loopback port (`port` 0) or the given one.
    pub async fn start(options: FakeOptions, port: u16) -> std::io::Result<FakeDataproc> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Service {
            epoch: Utc::now() - chrono::Duration::from_std(options.clock.now()).unwrap_or_default(),
            options,
            world: Mutex::new(ServiceState::default()),
            http: reqwest::Client::new(),
        });
        if let Some(gcs) = &shared.options.gcs_endpoint {
            // 409 (it exists) is fine.
            let _ = shared
                .http
                .post(format!("{gcs}/storage/v1/b?project=fake"))
                .body(json!({ "name": shared.options.staging_bucket }).to_string())
                .header(header::CONTENT_TYPE, "application/json")
                .send()
                .await;
        }
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeDataproc {
            url,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`, the `endpoint` to configure.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests so far by method (`jobs.get`, `clusters.create`, ...).
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.shared.world().requests.clone()
    }

    /// Requests of one method so far.
    pub fn count(&self, method: &str) -> u64 {
        self.shared
            .world()
            .requests
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// All API requests so far.
    pub fn total(&self) -> u64 {
        self.shared.world().requests.values().sum()
    }

    /// The next `times` calls of `method` answer 429 with `Retry-After:
    /// retry_after_secs`.
    pub fn throttle(&self, method: &str, times: usize, retry_after_secs: u64) {
        self.shared
            .world()
            .throttles
            .entry(method.to_string())
            .or_default()
            .extend(std::iter::repeat_n(retry_after_secs, times));
    }

    /// The next `times` calls of `method` are carried out, then answered
    /// 503 `UNAVAILABLE`: the answer is lost, what was asked is done.
    pub fn lose_answers(&self, method: &str, times: usize) {
        *self
            .shared
            .world()
            .lost_answers
            .entry(method.to_string())
            .or_default() += times;
    }

    /// The next `times` calls of `method` are refused with 503
    /// `UNAVAILABLE` before anything is done.
    pub fn unavailable(&self, method: &str, times: usize) {
        *self
            .shared
            .world()
            .unavailable
            .entry(method.to_string())
            .or_default() += times;
    }

    /// The HTTP status of each answer to `method` so far, in order (the
    /// 429s of [`throttle`](Self::throttle) aside).
    pub fn answers(&self, method: &str) -> Vec<u16> {
        self.shared
            .world()
            .answers
            .get(method)
            .cloned()
            .unwrap_or_default()
    }

    /// The `requestId` of each `jobs.submit` received, in order (`""` for
    /// none).
    pub fn submit_request_ids(&self) -> Vec<String> {
        self.shared.world().submit_request_ids.clone()
    }

    /// The `Cluster` body `clusters.create` received for `name`, as sent.
    pub fn create_body(&self, name: &str) -> Option<Value> {
        self.shared
            .world()
            .clusters
            .values()
            .find(|c| c.name == name)
            .map(|c| c.resource.clone())
    }

    /// The next creation of cluster `name` fails with `message` (its
    /// operation's error; the cluster goes to `ERROR`).
    pub fn fail_create(&self, name: &str, message: &str) {
        self.shared
            .world()
            .fail_creates
            .insert(name.to_string(), message.to_string());
    }

    /// Ends a job now with `state` (`DONE`, `ERROR`) and `details`.
    pub fn finish_job(&self, job_id: &str, state: &str, details: &str) -> bool {
        let now = self.shared.now();
        let mut world = self.shared.world();
        match world.jobs.iter_mut().find(|j| j.key.2 == job_id) {
            Some(job) => {
                job.forced = Some((now, state.to_string(), details.to_string()));
                true
            }
            None => false,
        }
    }

    /// Every job as `jobs.get` would answer now, oldest first.
    pub fn jobs(&self) -> Vec<Value> {
        let now = self.shared.now();
        let world = self.shared.world();
        world
            .jobs
            .iter()
            .map(|j| job_json(&self.shared, j, now))
            .collect()
    }

    /// A cluster's state now (`None`: no such cluster, or deleted).
    pub fn cluster_state(&self, name: &str) -> Option<String> {
        let now = self.shared.now();
        let world = self.shared.world();
        world
            .clusters
            .values()
            .find(|c| c.name == name)
            .and_then(|c| cluster_state(&self.shared, c, now))
            .map(|(state, _)| state)
    }

    /// Each API request's `Authorization` header so far, in order (`""`
    /// for none).
    pub fn authorizations(&self) -> Vec<String> {
        self.shared.world().authorizations.clone()
    }

    /// Access tokens handed out by `POST /token` (an OAuth token endpoint
    /// for service-account key files whose `token_uri` points here).
    pub fn tokens_issued(&self) -> u64 {
        self.shared.world().tokens_issued
    }

    /// Names of the clusters whose deletion finished.
    pub fn deleted(&self) -> Vec<String> {
        let now = self.shared.now();
        let mut world = self.shared.world();
        sweep(&self.shared, &mut world, now);
        world.deleted.clone()
    }
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": code}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// Which API method a request is, and its path parameters.
enum Route {
    ClusterCreate(String, String),
    ClusterGet(String, String, String),
    ClusterDelete(String, String, String),
    OperationGet(String),
    JobSubmit(String, String),
    JobList(String, String),
    JobGet(String, String, String),
    JobCancel(String, String, String),
}

impl Route {
    fn method_name(&self) -> &'static str {
        match self {
            Route::ClusterCreate(..) => "clusters.create",
            Route::ClusterGet(..) => "clusters.get",
            Route::ClusterDelete(..) => "clusters.delete",
            Route::OperationGet(..) => "operations.get",
            Route::JobSubmit(..) => "jobs.submit",
            Route::JobList(..) => "jobs.list",
            Route::JobGet(..) => "jobs.get",
            Route::JobCancel(..) => "jobs.cancel",
        }
    }

    fn parse(method: &Method, path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v1/")?;
        let segments: Vec<String> = rest
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        let (p, r) = match s.as_slice() {
            ["projects", p, "regions", r, ..] => (p.to_string(), r.to_string()),
            _ => return None,
        };
        Some(match (method.as_str(), &s[4..]) {
            ("POST", ["clusters"]) => Route::ClusterCreate(p, r),
            ("GET", ["clusters", name]) => Route::ClusterGet(p, r, name.to_string()),
            ("DELETE", ["clusters", name]) => Route::ClusterDelete(p, r, name.to_string()),
            ("GET", ["operations", _]) => {
                Route::OperationGet(path.trim_start_matches("/v1/").to_string())
            }
            ("POST", ["jobs:submit"]) => Route::JobSubmit(p, r),
            ("GET", ["jobs"]) => Route::JobList(p, r),
            ("GET", ["jobs", id]) => Route::JobGet(p, r, id.to_string()),
            ("POST", ["jobs", id]) if id.ends_with(":cancel") => {
                Route::JobCancel(p, r, id.trim_end_matches(":cancel").to_string())
            }
            _ => return None,
        })
    }
}

async fn handle(
    State(shared): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if method == Method::POST && path == "/token" {
        let mut world = shared.world();
        world.tokens_issued += 1;
        let token = format!("ya29.fake-access-token-{}", world.tokens_issued);
        return ok(json!({ "access_token": token, "expires_in": 3600, "token_type": "Bearer" }));
    }
    if let Some(control) = path.strip_prefix("/fake/") {
        return control_request(&shared, &method, control, &query(&uri));
    }
    let Some(route) = Route::parse(&method, &path) else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("the contract fake does not serve {method} {path}"),
        );
    };
    {
        let mut world = shared.world();
        *world
            .requests
            .entry(route.method_name().to_string())
            .or_default() += 1;
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        world.authorizations.push(authorization);
        if let Some(retry_after) = world
            .throttles
            .get_mut(route.method_name())
            .and_then(VecDeque::pop_front)
        {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per region'".into(),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                retry_after
                    .to_string()
                    .parse()
                    .expect("digits are a header value"),
            );
            return response;
        }
    }
    let q = query(&uri);
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    format!("Invalid JSON payload received. {e}"),
                )
            }
        }
    };
    let method_name = route.method_name();
    if let Route::JobSubmit(..) = route {
        let id = body["requestId"].as_str().unwrap_or("").to_string();
        shared.world().submit_request_ids.push(id);
    }
    let refused = take_one(&mut shared.world().unavailable, method_name);
    let mut response = if refused {
        unavailable()
    } else {
        dispatch(&shared, route, body, &q).await
    };
    if !refused && take_one(&mut shared.world().lost_answers, method_name) {
        response = unavailable();
    }
    shared
        .world()
        .answers
        .entry(method_name.to_string())
        .or_default()
        .push(response.status().as_u16());
    response
}

/// Takes one from `method`'s count; true when there was one.
fn take_one(counts: &mut HashMap<String, usize>, method: &str) -> bool {
    match counts.get_mut(method) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "The service is currently unavailable.".into(),
    )
}

async fn dispatch(
    shared: &Arc<Service>,
    route: Route,
    body: Value,
    q: &HashMap<String, String>,
) -> Response {
    let shared = shared.clone();
    match route {
        Route::ClusterCreate(p, r) => create_cluster(&shared, p, r, body, q),
        Route::ClusterGet(p, r, name) => get_cluster(&shared, &(p, r, name)),
        Route::ClusterDelete(p, r, name) => delete_cluster(&shared, (p, r, name), q),
        Route::OperationGet(name) => get_operation(&shared, &name),
        Route::JobSubmit(p, r) => submit_job(&shared, p, r, body).await,
        Route::JobList(p, r) => list_jobs(&shared, &p, &r, q),
        Route::JobGet(p, r, id) => get_job(&shared, &(p, r, id)),
        Route::JobCancel(p, r, id) => cancel_job(&shared, &(p, r, id)),
    }
}

fn control_request(
    shared: &Arc<Service>,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
) -> Response {
    let now = shared.now();
    let mut world = shared.world();
    sweep(shared, &mut world, now);
    match (method.as_str(), path) {
        ("GET", "requests") => {
            let total: u64 = world.requests.values().sum();
            ok(json!({ "total": total, "methods": world.requests }))
        }
        ("GET", "jobs") => ok(json!({
            "jobs": world.jobs.iter().map(|j| job_json(shared, j, now)).collect::<Vec<_>>(),
            "requestIds": world.jobs.iter().map(|j| j.request_id.clone()).collect::<Vec<_>>(),
        })),
        ("GET", "clusters") => ok(json!({
            "clusters": world.clusters.values().map(|c| cluster_json(shared, c, now)).collect::<Vec<_>>(),
            "deleted": world.deleted,
        })),
        ("POST", "throttle") => {
            let method = q.get("method").cloned().unwrap_or_default();
            let times = q.get("times").and_then(|t| t.parse().ok()).unwrap_or(1);
            let after = q
                .get("retry_after")
                .and_then(|t| t.parse().ok())
                .unwrap_or(1);
            world
                .throttles
                .entry(method)
                .or_default()
                .extend(std::iter::repeat_n(after, times));
            ok(json!({}))
        }
        ("POST", "fail_create") => {
            let name = q.get("cluster").cloned().unwrap_or_default();
            let message = q
                .get("message")
                .cloned()
                .unwrap_or_else(|| "Insufficient 'CPUS' quota.".into());
            world.fail_creates.insert(name, message);
            ok(json!({}))
        }
        ("POST", "finish") => {
            let id = q.get("job").cloned().unwrap_or_default();
            let state = q.get("state").cloned().unwrap_or_else(|| "DONE".into());
            let details = q.get("details").cloned().unwrap_or_default();
            match world.jobs.iter_mut().find(|j| j.key.2 == id) {
                Some(job) => {
                    job.forced = Some((now, state, details));
                    ok(json!({}))
                }
                None => error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no job {id}")),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no control endpoint {method} /fake/{path}"),
        ),
    }
}

/// Moves clusters whose deletion finished out of the world.
fn sweep(shared: &Service, world: &mut ServiceState, now: Duration) {
    let gone: Vec<Key> = world
        .clusters
        .iter()
        .filter(|(_, c)| cluster_state(shared, c, now).is_none())
        .map(|(k, _)| k.clone())
        .collect();
    for key in gone {
        if let Some(c) = world.clusters.remove(&key) {
            world.deleted.push(c.name);
        }
    }
}

/// The state and the time it began; `None` once deleted.
fn cluster_state(shared: &Service, c: &FakeCluster, now: Duration) -> Option<(String, Duration)> {
    let o = &shared.options;
    if let Some(d) = c.delete_at {
        if now >= d + o.cluster_delete {
            return None;
        }
        return Some(("DELETING".into(), d));
    }
    let up = c.created + o.cluster_create;
    if now < up {
        return Some(("CREATING".into(), c.created));
    }
    Some((
        if c.fail.is_some() { "ERROR" } else { "RUNNING" }.into(),
        up,
    ))
}

fn cluster_json(shared: &Service, c: &FakeCluster, now: Duration) -> Value {
    let o = &shared.options;
    let mut history = vec![("CREATING", c.created, String::new())];
    let up = c.created + o.cluster_create;
    if now >= up {
        match &c.fail {
            Some(message) => history.push(("ERROR", up, message.clone())),
            None => history.push(("RUNNING", up, String::new())),
        }
    }
    if let Some(d) = c.delete_at {
        history.retain(|(_, at, _)| *at <= d);
        history.push(("DELETING", d, String::new()));
    }
    let status = |(state, at, detail): &(&str, Duration, String)| {
        let mut s = json!({ "state": state, "stateStartTime": shared.time(*at) });
        if !detail.is_empty() {
            s["detail"] = json!(detail);
        }
        s
    };
    let current = history.last().map(status).unwrap_or(Value::Null);
    let previous: Vec<Value> = history[..history.len() - 1].iter().map(status).collect();
    let mut config = c
        .resource
        .get("config")
        .cloned()
        .unwrap_or_else(|| json!({}));
    config["configBucket"] = json!(shared.options.staging_bucket);
    let mut labels = c
        .resource
        .get("labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    labels["goog-dataproc-cluster-name"] = json!(c.name);
    labels["goog-dataproc-cluster-uuid"] = json!(c.uuid);
    labels["goog-dataproc-location"] = json!(c.region);
    json!({
        "projectId": c.project,
        "clusterName": c.name,
        "config": config,
        "labels": labels,
        "status": current,
        "statusHistory": previous,
        "clusterUuid": c.uuid,
    })
}

fn not_found(what: &str, name: String) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("Not found: {what} {name}"),
    )
}

fn cluster_path(key: &Key) -> String {
    format!("projects/{}/regions/{}/clusters/{}", key.0, key.1, key.2)
}

fn create_cluster(
    shared: &Arc<Service>,
    project: String,
    region: String,
    body: Value,
    q: &HashMap<String, String>,
) -> Response {
    let now = shared.now();
    let request_id = q.get("requestId").cloned().unwrap_or_default();
    let mut world = shared.world();
    sweep(shared, &mut world, now);
    if !request_id.is_empty() {
        if let Some(op) = world
            .operations
            .iter()
            .find(|op| op.request_id == request_id && matches!(op.kind, OpKind::Create))
        {
            return ok(operation_json(shared, &world, op, now));
        }
    }
    let Some(name) = body["clusterName"].as_str().map(str::to_string) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Cluster name is required".into(),
        );
    };
    if body["projectId"].as_str() != Some(project.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "projectId in the body must match the path".into(),
        );
    }
    let key = (project.clone(), region.clone(), name.clone());
    if world.clusters.contains_key(&key) {
        return error(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!(
                "Already exists: Failed to create cluster: Cluster {}",
                cluster_path(&key)
            ),
        );
    }
    let fail = world.fail_creates.remove(&name);
    let uuid = uuid();
    world.clusters.insert(
        key.clone(),
        FakeCluster {
            project: project.clone(),
            region: region.clone(),
            name,
            uuid: uuid.clone(),
            resource: body,
            created: now,
            fail,
            delete_at: None,
        },
    );
    let op = FakeOp {
        name: format!(
            "projects/{project}/regions/{region}/operations/{}",
            self::uuid()
        ),
        cluster: key,
        uuid,
        kind: OpKind::Create,
        started: now,
        request_id,
    };
    let answer = operation_json(shared, &world, &op, now);
    world.operations.push(op);
    ok(answer)
}

fn get_cluster(shared: &Arc<Service>, key: &Key) -> Response {
    let now = shared.now();
    let mut world = shared.world();
    sweep(shared, &mut world, now);
    match world.clusters.get(key) {
        Some(c) => ok(cluster_json(shared, c, now)),
        None => not_found("Cluster", cluster_path(key)),
    }
}

fn delete_cluster(shared: &Arc<Service>, key: Key, q: &HashMap<String, String>) -> Response {
    let now = shared.now();
    let request_id = q.get("requestId").cloned().unwrap_or_default();
    let mut world = shared.world();
    sweep(shared, &mut world, now);
    if !request_id.is_empty() {
        if let Some(op) = world
            .operations
            .iter()
            .find(|op| op.request_id == request_id && matches!(op.kind, OpKind::Delete))
        {
            return ok(operation_json(shared, &world, op, now));
        }
    }
    let Some(cluster) = world.clusters.get_mut(&key) else {
        return not_found("Cluster", cluster_path(&key));
    };
    if cluster.delete_at.is_none() {
        cluster.delete_at = Some(now);
    }
    let op = FakeOp {
        name: format!("projects/{}/regions/{}/operations/{}", key.0, key.1, uuid()),
        uuid: cluster.uuid.clone(),
        cluster: key,
        kind: OpKind::Delete,
        started: now,
        request_id,
    };
    let answer = operation_json(shared, &world, &op, now);
    world.operations.push(op);
    ok(answer)
}

fn operation_json(shared: &Service, world: &ServiceState, op: &FakeOp, now: Duration) -> Value {
    let o = &shared.options;
    let (kind, ends) = match op.kind {
        OpKind::Create => ("CREATE", op.started + o.cluster_create),
        OpKind::Delete => ("DELETE", op.started + o.cluster_delete),
    };
    let done = now >= ends;
    let fail = match op.kind {
        OpKind::Create => world
            .clusters
            .get(&op.cluster)
            .filter(|c| c.uuid == op.uuid)
            .and_then(|c| c.fail.clone()),
        OpKind::Delete => None,
    };
    let state = if done { "DONE" } else { "RUNNING" };
    let mut metadata = json!({
        "@type": "type.googleapis.com/google.cloud.dataproc.v1.ClusterOperationMetadata",
        "clusterName": op.cluster.2,
        "clusterUuid": op.uuid,
        "status": { "state": state, "innerState": state, "stateStartTime": shared.time(if done { ends } else { op.started }) },
        "statusHistory": [{ "state": "PENDING", "stateStartTime": shared.time(op.started) }],
        "operationType": kind,
        "description": match op.kind { OpKind::Create => "Create cluster with 2 workers", OpKind::Delete => "Delete cluster" },
    });
    if done && fail.is_some() {
        metadata["status"]["details"] = json!(fail);
    }
    let mut answer = json!({ "name": op.name, "metadata": metadata, "done": done });
    if done {
        match (&op.kind, fail) {
            (_, Some(message)) => {
                answer["error"] = json!({ "code": 8, "message": message });
            }
            (OpKind::Create, None) => {
                let mut response = world
                    .clusters
                    .get(&op.cluster)
                    .map(|c| cluster_json(shared, c, now))
                    .unwrap_or_else(|| json!({}));
                response["@type"] = json!("type.googleapis.com/google.cloud.dataproc.v1.Cluster");
                answer["response"] = response;
            }
            (OpKind::Delete, None) => {
                answer["response"] =
                    json!({ "@type": "type.googleapis.com/google.protobuf.Empty" });
            }
        }
    }
    answer
}

fn get_operation(shared: &Arc<Service>, name: &str) -> Response {
    let now = shared.now();
    let world = shared.world();
    match world.operations.iter().find(|op| op.name == name) {
        Some(op) => ok(operation_json(shared, &world, op, now)),
        None => not_found("Operation", name.to_string()),
    }
}

const JOB_TYPES: [&str; 4] = ["pysparkJob", "sparkJob", "pigJob", "hadoopJob"];

fn job_path(key: &Key) -> String {
    format!("projects/{}/regions/{}/jobs/{}", key.0, key.1, key.2)
}

/// A job status event: state, details, when.
type Event = (String, String, Duration);

/// The job's events up to `now`.
fn job_events(shared: &Service, j: &FakeJob, now: Duration) -> Vec<Event> {
    let o = &shared.options;
    let mut events = vec![("PENDING".to_string(), String::new(), j.submitted)];
    let start = j.submitted + o.job_pending;
    events.push(("SETUP_DONE".into(), String::new(), start));
    events.push(("RUNNING".into(), String::new(), start));
    // The earliest of: its natural end, a forced end, a cancellation.
    let mut end: Option<(Duration, Vec<Event>)> = None;
    let mut consider = |at: Duration, tail: Vec<Event>| {
        if end.as_ref().is_none_or(|(e, _)| at < *e) {
            end = Some((at, tail));
        }
    };
    if let Some(run) = j.plan.run {
        let at = start + run;
        consider(
            at,
            vec![(j.plan.outcome.clone(), j.plan.details.clone(), at)],
        );
        if j.plan.attempt_failure {
            let mid = start + run / 2;
            events.push((
                "ATTEMPT_FAILURE".into(),
                "Job attempt failed; the job will be restarted".into(),
                mid,
            ));
            events.push((
                "RUNNING".into(),
                String::new(),
                mid + Duration::from_millis(100).min(run / 4),
            ));
        }
    }
    if let Some((at, state, details)) = &j.forced {
        consider(*at, vec![(state.clone(), details.clone(), *at)]);
    }
    if let Some(c) = j.cancel_at {
        let at = c + o.job_cancel;
        consider(
            c,
            vec![
                ("CANCEL_PENDING".into(), String::new(), c),
                ("CANCEL_STARTED".into(), String::new(), c),
                ("CANCELLED".into(), String::new(), at),
            ],
        );
    }
    if let Some((at, tail)) = end {
        events.retain(|(_, _, t)| *t < at || (*t == at && at == j.submitted));
        events.extend(tail);
    }
    events.retain(|(_, _, t)| *t <= now);
    events
}

fn job_state(shared: &Service, j: &FakeJob, now: Duration) -> String {
    job_events(shared, j, now)
        .last()
        .map(|e| e.0.clone())
        .unwrap_or_default()
}

fn is_active(state: &str) -> bool {
    !matches!(state, "DONE" | "ERROR" | "CANCELLED")
}

fn driver_prefix(shared: &Service, j: &FakeJob) -> String {
    format!(
        "gs://{}/google-cloud-dataproc-metainfo/{}/jobs/{}/",
        shared.options.staging_bucket, j.cluster_uuid, j.key.2
    )
}

fn job_json(shared: &Service, j: &FakeJob, now: Duration) -> Value {
    let events = job_events(shared, j, now);
    let status = |(state, details, at): &(String, String, Duration)| {
        let mut s = json!({ "state": state, "stateStartTime": shared.time(*at) });
        if !details.is_empty() {
            s["details"] = json!(details);
        }
        s
    };
    let (last, previous) = events.split_last().expect("a job has its PENDING event");
    let mut job = j.resource.clone();
    job["reference"] = json!({ "projectId": j.key.0, "jobId": j.key.2 });
    job["placement"]["clusterUuid"] = json!(j.cluster_uuid);
    job["status"] = status(last);
    job["statusHistory"] = json!(previous.iter().map(status).collect::<Vec<_>>());
    let prefix = driver_prefix(shared, j);
    job["driverControlFilesUri"] = json!(prefix);
    job["driverOutputResourceUri"] = json!(format!("{prefix}driveroutput"));
    job["jobUuid"] = json!(j.uuid);
    job["done"] = json!(!is_active(&last.0));
    job
}

fn property<'a>(job: &'a Value, name: &str) -> Option<&'a str> {
    JOB_TYPES
        .iter()
        .find_map(|t| job[*t]["properties"][name].as_str())
}

fn main_file(job: &Value) -> Option<String> {
    let t = &job["pysparkJob"];
    if let Some(f) = t["mainPythonFileUri"].as_str() {
        return Some(f.into());
    }
    for t in ["sparkJob", "hadoopJob"] {
        if let Some(f) = job[t]["mainJarFileUri"].as_str() {
            return Some(f.into());
        }
        if let Some(f) = job[t]["jarFileUris"][0].as_str() {
            return Some(f.into());
        }
    }
    job["pigJob"]["queryFileUri"].as_str().map(str::to_string)
}

/// `gs://bucket/name` → (bucket, name).
fn split_gs(uri: &str) -> Option<(&str, &str)> {
    uri.strip_prefix("gs://")?.split_once('/')
}

async fn gcs_exists(shared: &Service, uri: &str) -> bool {
    let (Some(gcs), Some((bucket, name))) = (&shared.options.gcs_endpoint, split_gs(uri)) else {
        return false;
    };
    let url = format!(
        "{gcs}/storage/v1/b/{}/o/{}",
        utf8_percent_encode(bucket, NON_ALPHANUMERIC),
        utf8_percent_encode(name, NON_ALPHANUMERIC)
    );
    matches!(shared.http.get(url).send().await, Ok(r) if r.status().is_success())
}

async fn gcs_write(shared: &Service, uri: &str, text: String) {
    let (Some(gcs), Some((bucket, name))) = (&shared.options.gcs_endpoint, split_gs(uri)) else {
        return;
    };
    let url = format!(
        "{gcs}/upload/storage/v1/b/{}/o?uploadType=media&name={}",
        utf8_percent_encode(bucket, NON_ALPHANUMERIC),
        utf8_percent_encode(name, NON_ALPHANUMERIC)
    );
    let _ = shared.http.post(url).body(text).send().await;
}

async fn submit_job(
    shared: &Arc<Service>,
    project: String,
    region: String,
    body: Value,
) -> Response {
    let request_id = body["requestId"].as_str().unwrap_or("").to_string();
    let mut job = body["job"].clone();
    if !job.is_object() {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "job is required".into(),
        );
    }
    let now = shared.now();
    let id = job["reference"]["jobId"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| uuid().replace('-', ""));
    let key = (project.clone(), region.clone(), id.clone());
    let cluster_name = job["placement"]["clusterName"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let cluster_uuid = {
        let mut world = shared.world();
        sweep(shared, &mut world, now);
        if !request_id.is_empty() {
            if let Some(existing) = world.jobs.iter().find(|j| j.request_id == request_id) {
                return ok(job_json(shared, existing, now));
            }
        }
        if world.jobs.iter().any(|j| j.key == key) {
            return error(
                StatusCode::CONFLICT,
                "ALREADY_EXISTS",
                format!(
                    "Already exists: Failed to submit job: Job {}",
                    job_path(&key)
                ),
            );
        }
        if JOB_TYPES.iter().filter(|t| job[**t].is_object()).count() != 1 {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "exactly one job type is required".into(),
            );
        }
        let ckey = (project.clone(), region.clone(), cluster_name.clone());
        match world.clusters.get(&ckey) {
            None => return not_found("Cluster", cluster_path(&ckey)),
            Some(c) => match cluster_state(shared, c, now) {
                Some((state, _)) if state == "RUNNING" => c.uuid.clone(),
                Some((state, _)) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "FAILED_PRECONDITION",
                        format!(
                        "Cluster '{cluster_name}' must be RUNNING to accept jobs; it is {state}"
                    ),
                    )
                }
                None => return not_found("Cluster", cluster_path(&ckey)),
            },
        }
    };
    // What the job will do.
    let o = &shared.options;
    let mut plan = Plan {
        run: match property(&job, "fake.run_for") {
            Some("forever") => None,
            Some(d) => humantime::parse_duration(d).ok().or(o.job_run),
            None => o.job_run,
        },
        outcome: property(&job, "fake.outcome").unwrap_or("DONE").to_string(),
        details: property(&job, "fake.details").unwrap_or("").to_string(),
        attempt_failure: property(&job, "fake.attempt_failure") == Some("true"),
    };
    let mut output = property(&job, "fake.driver_output")
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "fake driver of job {id}: running {}\n",
                main_file(&job).unwrap_or_default()
            )
        });
    if let Some(marker) = property(&job, "fake.fail_if_exists") {
        if gcs_exists(shared, marker).await {
            plan.outcome = "ERROR".into();
            output.push_str(&format!(
                "Traceback (most recent call last):\nRuntimeError: {marker} exists\n"
            ));
        }
    }
    if let (Some(_), Some(file)) = (&o.gcs_endpoint, main_file(&job)) {
        if file.starts_with("gs://") && !gcs_exists(shared, &file).await {
            plan.outcome = "ERROR".into();
            output.push_str(&format!(
                "java.io.FileNotFoundException: File not found : {file}\n"
            ));
        }
    }
    if plan.outcome == "ERROR" && plan.details.is_empty() {
        plan.details = format!(
            "Google Cloud Dataproc Agent reports job failure. If logs are available, they can be found at:\nhttps://console.cloud.google.com/dataproc/jobs/{id}?project={project}&region={region}\ngcloud dataproc jobs wait '{id}' --region '{region}' --project '{project}'"
        );
    }
    if let Some(labels) = job.get_mut("labels") {
        if labels.is_null() {
            *labels = Value::Object(Map::new());
        }
    }
    let fake = FakeJob {
        key,
        resource: job,
        request_id,
        uuid: uuid(),
        cluster_uuid,
        submitted: now,
        plan,
        cancel_at: None,
        forced: None,
    };
    gcs_write(
        shared,
        &format!("{}driveroutput.000000000", driver_prefix(shared, &fake)),
        output,
    )
    .await;
    let mut world = shared.world();
    // A concurrent duplicate may have won meanwhile.
    if let Some(existing) = world
        .jobs
        .iter()
        .find(|j| j.request_id == fake.request_id && !fake.request_id.is_empty())
    {
        return ok(job_json(shared, existing, now));
    }
    let answer = job_json(shared, &fake, now);
    world.jobs.push(fake);
    ok(answer)
}

fn get_job(shared: &Arc<Service>, key: &Key) -> Response {
    let now = shared.now();
    let world = shared.world();
    match world.jobs.iter().find(|j| &j.key == key) {
        Some(j) => ok(job_json(shared, j, now)),
        None => not_found("Job", job_path(key)),
    }
}

fn list_jobs(
    shared: &Arc<Service>,
    project: &str,
    region: &str,
    q: &HashMap<String, String>,
) -> Response {
    let now = shared.now();
    let world = shared.world();
    let cluster = q.get("clusterName");
    let filter = q.get("filter").map(String::as_str).unwrap_or("");
    let matcher = if filter.contains("status.state = NON_ACTIVE") {
        "NON_ACTIVE"
    } else if filter.contains("status.state = ACTIVE") {
        "ACTIVE"
    } else if filter.is_empty() {
        q.get("jobStateMatcher")
            .map(String::as_str)
            .unwrap_or("ALL")
    } else {
        "ALL"
    };
    let mut jobs: Vec<&FakeJob> = world
        .jobs
        .iter()
        .filter(|j| j.key.0 == project && j.key.1 == region)
        .filter(|j| cluster.is_none_or(|c| j.resource["placement"]["clusterName"] == **c))
        .filter(|j| {
            let active = is_active(&job_state(shared, j, now));
            match matcher {
                "ACTIVE" => active,
                "NON_ACTIVE" => !active,
                _ => true,
            }
        })
        .collect();
    jobs.reverse(); // newest first
    let size = q
        .get("pageSize")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(10);
    let offset = q
        .get("pageToken")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let page: Vec<Value> = jobs
        .iter()
        .skip(offset)
        .take(size)
        .map(|j| job_json(shared, j, now))
        .collect();
    let mut answer = json!({ "jobs": page });
    if offset + size < jobs.len() {
        answer["nextPageToken"] = json!((offset + size).to_string());
    }
    ok(answer)
}

fn cancel_job(shared: &Arc<Service>, key: &Key) -> Response {
    let now = shared.now();
    let mut world = shared.world();
    let Some(index) = world.jobs.iter().position(|j| &j.key == key) else {
        return not_found("Job", job_path(key));
    };
    let state = job_state(shared, &world.jobs[index], now);
    if !is_active(&state) {
        return error(
            StatusCode::BAD_REQUEST,
            "FAILED_PRECONDITION",
            format!(
                "Cannot cancel jobId '{}' in projectId '{}' in state: '{state}'",
                key.2, key.0
            ),
        );
    }
    let job = &mut world.jobs[index];
    if job.cancel_at.is_none() {
        job.cancel_at = Some(now);
    }
    ok(job_json(shared, &world.jobs[index], now))
}
