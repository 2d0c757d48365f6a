//! A loopback **contract fake** of Apache Livy's batch API (HDInsight's
//! Spark gateway at `/livy`; a self-hosted Livy at its root), for tests
//! only: no Livy runs here.
//!
//! Served, as Livy's `BatchSessionServlet` answers: `POST /batches`
//! (`CreateBatchRequest`; `file` required, a `name` already taken refused
//! with 400 "Duplicate session name", unknown fields refused), `GET
//! /batches?from=&size=` (`{from, total, sessions}`), `GET /batches/ID`,
//! `GET /batches/ID/state`, `GET /batches/ID/log?from=&size=` (the last
//! `size` lines when `from` is not given), `DELETE /batches/ID` (the batch
//! ends `killed`; `{"msg": "deleted"}`). An unknown id is 404 `{"msg":
//! "Session 'ID' not found."}`; a request without the gateway's HTTP basic
//! login, when one is set, 401. Errors are `{"msg": ...}`.
//!
//! A batch is `starting` when created and stays there until a test moves
//! it ([`FakeLivy::set_state`], [`FakeLivy::finish`] with its log lines):
//! what a Spark application does is the test's to say; or, started with a
//! run time ([`FakeLivy::start_with`], the binary's `--run-for`), it ends
//! `success` that long after its creation on the fake's clock. Faults, request
//! counts and answers are [`Faults`]'s (method names `batches.create`,
//! `batches.list`, `batches.get`, `batches.state`, `batches.log`,
//! `batches.delete`).

use crate::auth::BasicLogin;
use crate::clock::FakeClock;
use crate::faults::{self, Faults};
use crate::server::{json, ok, query, Fake, FakeState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use flow_cloud::Clock;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Livy's error shape: `{"msg": M}` (the code is not part of it).
pub fn livy_error(status: StatusCode, _code: &str, message: String) -> Response {
    json(status, json!({ "msg": message }))
}

/// The fields `CreateBatchRequest` has; any other is refused, as Livy's
/// JSON binding does.
const FIELDS: &[&str] = &[
    "file",
    "proxyUser",
    "args",
    "className",
    "jars",
    "pyFiles",
    "files",
    "driverMemory",
    "driverCores",
    "executorMemory",
    "executorCores",
    "numExecutors",
    "archives",
    "queue",
    "name",
    "conf",
];

/// A batch the fake holds.
#[derive(Debug, Clone)]
pub struct FakeBatch {
    /// Livy's id.
    pub id: i64,
    /// Its name, if it was given one.
    pub name: Option<String>,
    /// Its state.
    pub state: String,
    /// Its log lines.
    pub log: Vec<String>,
    /// The `POST /batches` body it was created from.
    pub body: Value,
    created: Duration,
}

impl FakeBatch {
    fn view(&self) -> Value {
        let from = self.log.len().saturating_sub(10);
        json!({
            "id": self.id,
            "name": self.name,
            "owner": null,
            "proxyUser": null,
            "state": self.state,
            "appId": format!("application_1700000000000_{:04}", self.id + 1),
            "appInfo": {"driverLogUrl": null, "sparkUiUrl": null},
            "log": &self.log[from..],
        })
    }
}

#[derive(Default)]
struct World {
    batches: Vec<FakeBatch>,
    next_id: i64,
    /// Every `POST /batches` body received, refused ones too.
    posted: Vec<Value>,
}

/// The fake's state, shared by its handler and its handle.
pub struct Service {
    faults: Faults,
    /// The service's clock and the run time of every batch, if batches
    /// end by themselves.
    run_for: Option<(FakeClock, Duration)>,
    /// The gateway's login, if it asks one.
    login: Option<BasicLogin>,
    world: Mutex<World>,
}

impl Service {
    /// The world, with batches whose run time is over ended `success`.
    fn world(&self) -> MutexGuard<'_, World> {
        let mut world = self.world.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((clock, run_for)) = &self.run_for {
            let now = clock.now();
            for batch in world.batches.iter_mut() {
                if matches!(batch.state.as_str(), "starting" | "running")
                    && now >= batch.created + *run_for
                {
                    batch.state = "success".into();
                    batch
                        .log
                        .push(format!("stdout: fake batch {} done", batch.id));
                }
            }
        }
        world
    }

    fn now(&self) -> Duration {
        self.run_for
            .as_ref()
            .map_or(Duration::ZERO, |(clock, _)| clock.now())
    }
}

/// The fake, served until dropped.
pub type FakeLivy = Fake<Service>;

impl FakeState for Service {
    fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl FakeLivy {
    /// Serves the fake on `port` (`0`: a free one). With `login`
    /// (`(user, password)`), requests without that HTTP basic login are 401.
    pub async fn start(login: Option<(&str, &str)>, port: u16) -> std::io::Result<FakeLivy> {
        Self::start_with(login, None, port).await
    }

    /// As [`start`](Self::start); with `run_for` (`(clock, run time)`),
    /// every batch ends `success` its run time after its creation.
    pub async fn start_with(
        login: Option<(&str, &str)>,
        run_for: Option<(Arc<dyn Clock>, Duration)>,
        port: u16,
    ) -> std::io::Result<FakeLivy> {
        let shared = Arc::new(Service {
            faults: Faults::new(livy_error),
            run_for: run_for.map(|(clock, d)| (FakeClock::new(clock), d)),
            login: login.map(|(user, password)| BasicLogin::new(user, password, "Livy")),
            world: Mutex::new(World::default()),
        });
        Fake::serve(handle, shared, port).await
    }

    /// Every `POST /batches` body received, in order.
    pub fn posted(&self) -> Vec<Value> {
        self.shared.world().posted.clone()
    }

    /// The batches held.
    pub fn batches(&self) -> Vec<FakeBatch> {
        self.shared.world().batches.clone()
    }

    /// Moves batch `id` to `state` (`running`, ...).
    pub fn set_state(&self, id: i64, state: &str) {
        if let Some(b) = self.shared.world().batches.iter_mut().find(|b| b.id == id) {
            b.state = state.to_string();
        }
    }

    /// Ends batch `id` in `state` (`success`, `dead`, ...) with `log`
    /// appended to its log.
    pub fn finish(&self, id: i64, state: &str, log: &[&str]) {
        if let Some(b) = self.shared.world().batches.iter_mut().find(|b| b.id == id) {
            b.state = state.to_string();
            b.log.extend(log.iter().map(|l| l.to_string()));
        }
    }
}

fn not_found(id: &str) -> Response {
    livy_error(
        StatusCode::NOT_FOUND,
        "",
        format!("Session '{id}' not found."),
    )
}

fn bad_request(message: impl Into<String>) -> Response {
    livy_error(StatusCode::BAD_REQUEST, "", message.into())
}

async fn handle(
    State(shared): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/').to_string();
    let q = query(&uri);
    if let Some(control) = path.strip_prefix("/fake/") {
        return faults::control(&shared.faults, &method, control, &q).unwrap_or_else(|| {
            livy_error(
                StatusCode::NOT_FOUND,
                "",
                format!("no control path {control}"),
            )
        });
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let name = match (method.as_str(), segments.as_slice()) {
        ("POST", ["batches"]) => "batches.create",
        ("GET", ["batches"]) => "batches.list",
        ("GET", ["batches", _]) => "batches.get",
        ("GET", ["batches", _, "state"]) => "batches.state",
        ("GET", ["batches", _, "log"]) => "batches.log",
        ("DELETE", ["batches", _]) => "batches.delete",
        _ => {
            return livy_error(
                StatusCode::NOT_FOUND,
                "",
                format!("the contract fake does not serve {method} {path}"),
            )
        }
    };
    if let Some(refused) = shared
        .login
        .as_ref()
        .and_then(|l| l.check(&headers, livy_error))
    {
        return refused;
    }
    if let Some(throttled) = shared.faults.arrive(name) {
        return throttled;
    }
    if let Some(refused) = shared.faults.refuse(name) {
        return shared.faults.depart(name, true, refused);
    }
    let answer = act(&shared, name, &segments, &q, &body);
    shared.faults.depart(name, false, answer)
}

fn act(
    shared: &Service,
    name: &str,
    segments: &[&str],
    q: &std::collections::HashMap<String, String>,
    body: &Bytes,
) -> Response {
    let mut world = shared.world();
    let find = |world: &World, id: &str| -> Option<usize> {
        let id: i64 = id.parse().ok()?;
        world.batches.iter().position(|b| b.id == id)
    };
    match name {
        "batches.create" => {
            let body: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return bad_request(format!("Rejected, Reason: {e}")),
            };
            world.posted.push(body.clone());
            let Some(fields) = body.as_object() else {
                return bad_request("Rejected, Reason: the body is not a JSON object");
            };
            if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
                return bad_request(format!(
                    "Rejected, Reason: Unrecognized field \"{unknown}\""
                ));
            }
            let Some(file) = body["file"].as_str().filter(|f| !f.is_empty()) else {
                return bad_request("Rejected, Reason: File is required.");
            };
            let _ = file;
            let batch_name = body["name"].as_str().map(String::from);
            let id = world.next_id;
            world.next_id += 1;
            if let Some(taken) = &batch_name {
                if world.batches.iter().any(|b| b.name.as_ref() == Some(taken)) {
                    return bad_request(format!(
                        "Duplicate session name: Some({taken}) for session {id}"
                    ));
                }
            }
            let batch = FakeBatch {
                id,
                name: batch_name,
                state: "starting".into(),
                log: vec![format!("stdout: fake batch {id} accepted")],
                body,
                created: shared.now(),
            };
            let view = batch.view();
            world.batches.push(batch);
            json(StatusCode::CREATED, view)
        }
        "batches.list" => {
            let from: usize = q.get("from").and_then(|v| v.parse().ok()).unwrap_or(0);
            let size: usize = q.get("size").and_then(|v| v.parse().ok()).unwrap_or(100);
            let sessions: Vec<Value> = world
                .batches
                .iter()
                .skip(from)
                .take(size)
                .map(FakeBatch::view)
                .collect();
            ok(json!({"from": from, "total": world.batches.len(), "sessions": sessions}))
        }
        "batches.get" | "batches.state" | "batches.log" | "batches.delete" => {
            let Some(at) = find(&world, segments[1]) else {
                return not_found(segments[1]);
            };
            let batch = &mut world.batches[at];
            match name {
                "batches.get" => ok(batch.view()),
                "batches.state" => ok(json!({"id": batch.id, "state": batch.state})),
                "batches.log" => {
                    let size: usize = q.get("size").and_then(|v| v.parse().ok()).unwrap_or(100);
                    let from: usize = q
                        .get("from")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(batch.log.len().saturating_sub(size));
                    let lines: Vec<&String> = batch.log.iter().skip(from).take(size).collect();
                    ok(
                        json!({"id": batch.id, "from": from, "total": batch.log.len(), "log": lines}),
                    )
                }
                _ => {
                    if !matches!(
                        batch.state.as_str(),
                        "success" | "dead" | "killed" | "error"
                    ) {
                        batch.state = "killed".into();
                    }
                    ok(json!({"msg": "deleted"}))
                }
            }
        }
        _ => not_found(segments.get(1).copied().unwrap_or("")),
    }
}
