//! `clusters.create/get/delete` and `operations.get`.

use super::defaults;
use super::json::{cluster_json, cluster_path, not_found, operation_json};
use super::state::{sweep, uuid, FakeCluster, FakeOp, Key, OpKind, ServiceState};
use super::validate;
use super::Service;
use crate::errors::google;
use crate::server::ok;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

pub(super) fn create_cluster(
    shared: &Arc<Service>,
    project: String,
    region: String,
    body: Value,
    q: &HashMap<String, String>,
) -> Response {
    let invalid = |message: String| google(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message);
    let request_id = q.get("requestId").cloned().unwrap_or_default();
    if let Err(e) = validate::request_id(&request_id) {
        return invalid(e);
    }
    let now = shared.now();
    let mut world = shared.world();
    sweep(shared, &mut world, now);
    if let Some(op) = same_request(&world, &project, &region, &request_id, OpKind::Create) {
        return ok(operation_json(shared, &world, op, now));
    }
    let mut body = body;
    if let Err(e) = validate::fields(&mut body, validate::CLUSTER, "") {
        return invalid(e);
    }
    let Some(name) = body["clusterName"].as_str().map(str::to_string) else {
        return invalid("Cluster name is required".into());
    };
    if body["projectId"].as_str() != Some(project.as_str()) {
        return invalid("projectId in the body must match the path".into());
    }
    let body = match validate::cluster_name(&name)
        .and_then(|()| validate::labels(body["labels"].as_object(), 64))
        .and_then(|()| defaults::as_created(shared, &project, &region, &name, body))
    {
        Ok(body) => body,
        Err(e) => return invalid(e),
    };
    let key = (project.clone(), region.clone(), name.clone());
    if world.clusters.contains_key(&key) {
        return google(
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
            broke: None,
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

pub(super) fn get_cluster(shared: &Arc<Service>, key: &Key) -> Response {
    let now = shared.now();
    let mut world = shared.world();
    sweep(shared, &mut world, now);
    match world.clusters.get(key) {
        Some(c) => ok(cluster_json(shared, c, now)),
        None => not_found("Cluster", cluster_path(key)),
    }
}

pub(super) fn delete_cluster(
    shared: &Arc<Service>,
    key: Key,
    q: &HashMap<String, String>,
) -> Response {
    let request_id = q.get("requestId").cloned().unwrap_or_default();
    if let Err(e) = validate::request_id(&request_id) {
        return google(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", e);
    }
    let now = shared.now();
    let mut world = shared.world();
    sweep(shared, &mut world, now);
    if let Some(op) = same_request(&world, &key.0, &key.1, &request_id, OpKind::Delete) {
        return ok(operation_json(shared, &world, op, now));
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

pub(super) fn get_operation(shared: &Arc<Service>, name: &str) -> Response {
    let now = shared.now();
    let world = shared.world();
    match world.operations.iter().find(|op| op.name == name) {
        Some(op) => ok(operation_json(shared, &world, op, now)),
        None => not_found("Operation", name.to_string()),
    }
}

/// The operation an earlier call with the same `requestId` started in this
/// project and region (request ids are scoped to both).
fn same_request<'a>(
    world: &'a ServiceState,
    project: &str,
    region: &str,
    request_id: &str,
    kind: OpKind,
) -> Option<&'a FakeOp> {
    if request_id.is_empty() {
        return None;
    }
    world.operations.iter().find(|op| {
        op.request_id == request_id
            && op.kind == kind
            && op.cluster.0 == project
            && op.cluster.1 == region
    })
}
