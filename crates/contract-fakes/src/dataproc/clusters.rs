//! `clusters.create/get/delete` and `operations.get`.

use super::json::{cluster_json, cluster_path, not_found, operation_json};
use super::state::{sweep, uuid, FakeCluster, FakeOp, Key, OpKind};
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
        return google(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Cluster name is required".into(),
        );
    };
    if body["projectId"].as_str() != Some(project.as_str()) {
        return google(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "projectId in the body must match the path".into(),
        );
    }
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

pub(super) fn get_operation(shared: &Arc<Service>, name: &str) -> Response {
    let now = shared.now();
    let world = shared.world();
    match world.operations.iter().find(|op| op.name == name) {
        Some(op) => ok(operation_json(shared, &world, op, now)),
        None => not_found("Operation", name.to_string()),
    }
}
