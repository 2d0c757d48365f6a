//! The resources as the API answers them: `Cluster`, `Operation`, `Job`.

use super::state::{
    is_active, job_events, FakeCluster, FakeJob, FakeOp, Key, OpKind, ServiceState,
};
use super::Service;
use crate::errors::google;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use std::time::Duration;

pub(super) fn cluster_json(shared: &Service, c: &FakeCluster, now: Duration) -> Value {
    let o = &shared.options;
    let mut history = vec![("CREATING", c.created, String::new())];
    let up = c.created + o.cluster_create;
    if now >= up {
        match &c.fail {
            Some(message) => history.push(("ERROR", up, message.clone())),
            None => history.push(("RUNNING", up, String::new())),
        }
    }
    if let Some((at, state, detail)) = &c.broke {
        if now >= *at {
            history.push((state.as_str(), *at, detail.clone()));
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
    if config["lifecycleConfig"].get("idleDeleteTtl").is_some() && now >= up {
        config["lifecycleConfig"]["idleStartTime"] = json!(shared.time(up));
    }
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

pub(super) fn not_found(what: &str, name: String) -> Response {
    google(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("Not found: {what} {name}"),
    )
}

pub(super) fn cluster_path(key: &Key) -> String {
    format!("projects/{}/regions/{}/clusters/{}", key.0, key.1, key.2)
}

pub(super) fn operation_json(
    shared: &Service,
    world: &ServiceState,
    op: &FakeOp,
    now: Duration,
) -> Value {
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

pub(super) fn job_path(key: &Key) -> String {
    format!("projects/{}/regions/{}/jobs/{}", key.0, key.1, key.2)
}

pub(super) fn driver_prefix(shared: &Service, j: &FakeJob) -> String {
    format!(
        "gs://{}/google-cloud-dataproc-metainfo/{}/jobs/{}/",
        shared.options.staging_bucket, j.cluster_uuid, j.key.2
    )
}

pub(super) fn job_json(shared: &Service, j: &FakeJob, now: Duration) -> Value {
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
