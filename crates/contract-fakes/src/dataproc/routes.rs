//! Which API method a request is, the faults and token record around
//! each, and the `/fake/` control paths the binary's tests use.

use super::clusters::{create_cluster, delete_cluster, get_cluster, get_operation};
use super::jobs::{cancel_job, get_job, list_jobs, submit_job};
use super::json::{cluster_json, job_json};
use super::state::sweep;
use super::validate;
use super::Service;
use crate::server::{ok, query};
use crate::{clock, errors, faults};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Which API method a request is, and its path parameters.
pub(super) enum Route {
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

    /// The query parameters the method takes (system parameters aside).
    fn query_parameters(&self) -> &'static [&'static str] {
        match self {
            Route::ClusterCreate(..) => &["requestId", "actionOnFailedPrimaryWorkers"],
            Route::ClusterDelete(..) => {
                &["requestId", "clusterUuid", "gracefulDecommissionTimeout"]
            }
            Route::JobList(..) => &[
                "pageSize",
                "pageToken",
                "clusterName",
                "jobStateMatcher",
                "filter",
            ],
            _ => &[],
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

pub(super) async fn handle(
    State(shared): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if method == Method::POST && path == "/token" {
        return shared.tokens.issue(&body);
    }
    if let Some(control) = path.strip_prefix("/fake/") {
        return control_request(&shared, &method, control, &query(&uri));
    }
    let Some(route) = Route::parse(&method, &path) else {
        return errors::google(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("the contract fake does not serve {method} {path}"),
        );
    };
    let method_name = route.method_name();
    let checked = shared.tokens.check(&headers);
    if let Some(throttled) = shared.faults.arrive(method_name) {
        return throttled;
    }
    if let Err(refusal) = checked.or_else(|r| {
        if shared.options.require_token {
            Err(r)
        } else {
            Ok(())
        }
    }) {
        let response = errors::google(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            refusal.message().into(),
        );
        return shared.faults.depart(method_name, true, response);
    }
    let q = query(&uri);
    if let Err(e) = validate::query(q.keys(), route.query_parameters()) {
        let response = errors::google(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", e);
        return shared.faults.depart(method_name, true, response);
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return errors::google(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    format!("Invalid JSON payload received. {e}"),
                )
            }
        }
    };
    if let Route::JobSubmit(..) = route {
        let id = body["requestId"].as_str().unwrap_or("").to_string();
        shared.world().submit_request_ids.push(id);
    }
    let refusal = shared.faults.refuse(method_name);
    let refused = refusal.is_some();
    let response = match refusal {
        Some(refusal) => refusal,
        None => dispatch(&shared, route, body, &q).await,
    };
    shared.faults.depart(method_name, refused, response)
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
        Route::JobCancel(p, r, id) => {
            // CancelJobRequest has no body fields.
            let mut body = body;
            if !body.is_null() {
                if let Err(e) = validate::fields(&mut body, &[], "") {
                    return errors::google(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", e);
                }
            }
            cancel_job(&shared, &(p, r, id))
        }
    }
}

fn control_request(
    shared: &Arc<Service>,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
) -> Response {
    if let Some(answer) = faults::control(&shared.faults, method, path, q)
        .or_else(|| clock::control(&shared.clock, method, path, q, errors::google))
    {
        return answer;
    }
    let now = shared.now();
    let mut world = shared.world();
    sweep(shared, &mut world, now);
    match (method.as_str(), path) {
        ("GET", "jobs") => ok(json!({
            "jobs": world.jobs.iter().map(|j| job_json(shared, j, now)).collect::<Vec<_>>(),
            "requestIds": world.jobs.iter().map(|j| j.request_id.clone()).collect::<Vec<_>>(),
        })),
        ("GET", "clusters") => ok(json!({
            "clusters": world.clusters.values().map(|c| cluster_json(shared, c, now)).collect::<Vec<_>>(),
            "deleted": world.deleted,
        })),
        ("POST", "fail_create") => {
            let name = q.get("cluster").cloned().unwrap_or_default();
            let message = q
                .get("message")
                .cloned()
                .unwrap_or_else(|| "Insufficient 'CPUS' quota.".into());
            world.fail_creates.insert(name, message);
            ok(json!({}))
        }
        ("POST", "break_cluster") => {
            let name = q.get("cluster").cloned().unwrap_or_default();
            let state = q.get("state").cloned().unwrap_or_else(|| "ERROR".into());
            let detail = q.get("detail").cloned().unwrap_or_default();
            if !matches!(state.as_str(), "ERROR" | "STOPPED") {
                return errors::google(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    format!("state {state}: ERROR or STOPPED"),
                );
            }
            if super::state::break_cluster(shared, &mut world, &name, &state, &detail) {
                ok(json!({}))
            } else {
                errors::google(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    format!("no cluster {name}"),
                )
            }
        }
        ("GET", "tokens") => ok(json!({
            "tokens": shared.tokens.issued().iter().map(|t| json!({
                "token": t.token,
                "issued_at_seconds": t.issued_at.as_secs_f64(),
                "expires_at_seconds": t.expires_at.as_secs_f64(),
            })).collect::<Vec<_>>(),
            "authorizations": shared.tokens.authorizations(),
        })),
        ("POST", "finish") => {
            let id = q.get("job").cloned().unwrap_or_default();
            let state = q.get("state").cloned().unwrap_or_else(|| "DONE".into());
            let details = q.get("details").cloned().unwrap_or_default();
            match world.jobs.iter_mut().find(|j| j.key.2 == id) {
                Some(job) => {
                    job.forced = Some((now, state, details));
                    ok(json!({}))
                }
                None => errors::google(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no job {id}")),
            }
        }
        _ => errors::google(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no control endpoint {method} /fake/{path}"),
        ),
    }
}
