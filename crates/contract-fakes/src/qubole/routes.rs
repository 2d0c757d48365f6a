//! Which API method a request is, the faults and the token check around
//! each, and the `/fake/` control paths the binary's tests use.

use super::commands;
use super::{error, Service};
use crate::server::{ok, query};
use crate::{clock, faults};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Which API method a request is, and its path parameters.
enum Route {
    Submit,
    List,
    Get(u64),
    Kill(u64),
    Logs(u64),
    ClusterState(String),
    /// `start` or `terminate` (anything else is refused).
    SetClusterState(String, String),
}

impl Route {
    fn method_name(&self) -> &'static str {
        match self {
            Route::Submit => "commands.submit",
            Route::List => "commands.list",
            Route::Get(_) => "commands.get",
            Route::Kill(_) => "commands.kill",
            Route::Logs(_) => "commands.logs",
            Route::ClusterState(_) => "clusters.state",
            Route::SetClusterState(_, state) => match state.as_str() {
                "start" => "clusters.start",
                "terminate" => "clusters.terminate",
                _ => "clusters.set_state",
            },
        }
    }

    fn parse(method: &Method, path: &str, body: &Value) -> Option<Route> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let id = |s: &str| s.parse::<u64>().ok();
        Some(match (method.as_str(), segments.as_slice()) {
            ("POST", ["api", "v1.2", "commands"]) => Route::Submit,
            ("GET", ["api", "v1.2", "commands"]) => Route::List,
            ("GET", ["api", "v1.2", "commands", n]) => Route::Get(id(n)?),
            ("PUT", ["api", "v1.2", "commands", n]) => Route::Kill(id(n)?),
            ("GET", ["api", "v1.2", "commands", n, "logs"]) => Route::Logs(id(n)?),
            ("GET", ["api", "v1.3", "clusters", label, "state"]) => {
                Route::ClusterState(label.to_string())
            }
            ("PUT", ["api", "v1.3", "clusters", label, "state"]) => Route::SetClusterState(
                label.to_string(),
                body["state"].as_str().unwrap_or("").to_string(),
            ),
            _ => return None,
        })
    }
}

pub(super) async fn handle(
    State(shared): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let q = query(&uri);
    if let Some(control) = path.strip_prefix("/fake/") {
        return control_request(&shared, &method, control, &q);
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "",
                    format!("the body is not JSON: {e}"),
                )
            }
        }
    };
    let Some(route) = Route::parse(&method, &path, &body) else {
        return error(
            StatusCode::NOT_FOUND,
            "",
            format!("the contract fake does not serve {method} {path}"),
        );
    };
    let method_name = route.method_name();
    if let Some(throttled) = shared.faults.arrive(method_name) {
        return throttled;
    }
    let token = headers.get("X-AUTH-TOKEN").and_then(|v| v.to_str().ok());
    if token != Some(shared.options.token.as_str()) {
        return error(StatusCode::UNAUTHORIZED, "", "Invalid Token".into());
    }
    let refused = shared.faults.refuse(method_name);
    let was_refused = refused.is_some();
    let response = match refused {
        Some(refusal) => refusal,
        None => dispatch(&shared, route, &body, &q),
    };
    shared.faults.depart(method_name, was_refused, response)
}

fn dispatch(shared: &Service, route: Route, body: &Value, q: &HashMap<String, String>) -> Response {
    match route {
        Route::Submit => commands::submit(shared, body.clone()),
        Route::List => commands::list(shared, q),
        Route::Get(id) => commands::get(shared, id),
        Route::Kill(id) => commands::kill(shared, id, body),
        Route::Logs(id) => commands::logs(shared, id),
        Route::ClusterState(label) => cluster_state(shared, &label),
        Route::SetClusterState(label, state) => set_cluster_state(shared, &label, &state),
    }
}

fn no_cluster(label: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "",
        format!("Cluster with id or label {label} not found"),
    )
}

/// `GET /clusters/LABEL/state`.
fn cluster_state(shared: &Service, label: &str) -> Response {
    let now = shared.now();
    let world = shared.world();
    let Some(cluster) = world.clusters.get(label) else {
        return no_cluster(label);
    };
    let state = cluster.state(now);
    let since = cluster
        .phases
        .iter()
        .rev()
        .find(|(at, _)| *at <= now)
        .map_or(now, |(at, _)| *at);
    ok(json!({
        "state": state,
        "cluster_id": cluster.id,
        "start_at": (state != "DOWN").then(|| world.time(since)),
        "down_at": (state == "DOWN").then(|| world.time(since)),
        "terminate_reason": matches!(state, "DOWN" | "TERMINATING").then(|| cluster.terminate_reason.clone()).flatten(),
        "nodes": [],
    }))
}

/// `PUT /clusters/LABEL/state {"state": "start" | "terminate"}`: no effect
/// on a cluster already there.
fn set_cluster_state(shared: &Service, label: &str, state: &str) -> Response {
    let now = shared.now();
    let o = &shared.options;
    let mut world = shared.world();
    let Some(cluster) = world.clusters.get_mut(label) else {
        return no_cluster(label);
    };
    match state {
        "start" => {
            cluster.start(now, o.cluster_start);
        }
        "terminate" => {
            if cluster.terminate(now, o.cluster_stop) {
                world.fail_commands_on(label, now);
            }
        }
        other => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "",
                format!("state must be start or terminate, not {other:?}"),
            )
        }
    }
    ok(json!({ "message": "success" }))
}

fn control_request(
    shared: &Service,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
) -> Response {
    if let Some(answer) = faults::control(&shared.faults, method, path, q) {
        return answer;
    }
    if let Some(answer) = clock::control(&shared.clock, method, path, q, error) {
        return answer;
    }
    let now = shared.now();
    match (method.as_str(), path) {
        ("GET", "commands") => {
            let world = shared.world();
            let commands: Vec<Value> = world
                .commands
                .iter()
                .map(|c| commands::command_json(&world, c, now, true))
                .collect();
            let bodies: Vec<Value> = world.commands.iter().map(|c| c.body.clone()).collect();
            let peak = world.peak_unfinished(now);
            ok(json!({ "commands": commands, "bodies": bodies, "peak_unfinished": peak }))
        }
        ("GET", "clusters") => {
            let world = shared.world();
            let states: serde_json::Map<String, Value> = world
                .clusters
                .iter()
                .map(|(label, c)| (label.clone(), json!(c.state(now))))
                .collect();
            ok(json!({ "clusters": states }))
        }
        ("POST", "cluster") => {
            let (Some(label), Some(state)) = (q.get("label"), q.get("state")) else {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "",
                    "label and state are required".into(),
                );
            };
            let reason = q.get("reason").map(String::as_str);
            shared.world().force_cluster(label, state, reason, now);
            ok(json!({}))
        }
        ("POST", "finish") => {
            let id = q.get("id").and_then(|i| i.parse().ok()).unwrap_or(0);
            let status = q.get("status").cloned().unwrap_or_else(|| "done".into());
            if shared.world().finish(id, &status, now) {
                ok(json!({}))
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    "",
                    format!("no running command {id}"),
                )
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "",
            format!("no control endpoint {method} /fake/{path}"),
        ),
    }
}
