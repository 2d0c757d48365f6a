//! `jobs.submit/get/list/cancel`, and what a submitted job will do.

use super::gcs::{gcs_exists, gcs_write};
use super::json::{cluster_path, driver_prefix, job_json, job_path, not_found};
use super::state::{cluster_state, is_active, job_state, sweep, uuid, FakeJob, Key, Plan};
use super::validate;
use super::validate::JOB_TYPES;
use super::Service;
use crate::errors::google;
use crate::server::ok;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

pub(super) fn property<'a>(job: &'a Value, name: &str) -> Option<&'a str> {
    JOB_TYPES
        .iter()
        .find_map(|t| job[*t]["properties"][name].as_str())
}

pub(super) fn main_file(job: &Value) -> Option<String> {
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

pub(super) async fn submit_job(
    shared: &Arc<Service>,
    project: String,
    region: String,
    body: Value,
) -> Response {
    let mut body = body;
    let invalid = |message: String| google(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message);
    if let Err(e) = validate::fields(&mut body, validate::SUBMIT, "") {
        return invalid(e);
    }
    let request_id = body["requestId"].as_str().unwrap_or("").to_string();
    let mut job = body["job"].clone();
    if !job.is_object() {
        return invalid("job is required".into());
    }
    let checked = validate::request_id(&request_id)
        .and_then(|()| validate::job(&job).map(|_| ()))
        .and_then(|()| validate::labels(job["labels"].as_object(), 32))
        .and_then(|()| match job["reference"]["jobId"].as_str() {
            Some(id) => validate::job_id(id),
            None => Ok(()),
        })
        .and_then(|()| match job["reference"]["projectId"].as_str() {
            Some(p) if !p.is_empty() && p != project => Err(format!(
                "job.reference.projectId '{p}' does not match the project of the request '{project}'"
            )),
            _ => Ok(()),
        });
    if let Err(e) = checked {
        return invalid(e);
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
            // Request ids are scoped to the project and region.
            if let Some(existing) = world
                .jobs
                .iter()
                .find(|j| j.request_id == request_id && j.key.0 == project && j.key.1 == region)
            {
                return ok(job_json(shared, existing, now));
            }
        }
        if world.jobs.iter().any(|j| j.key == key) {
            return google(
                StatusCode::CONFLICT,
                "ALREADY_EXISTS",
                format!(
                    "Already exists: Failed to submit job: Job {}",
                    job_path(&key)
                ),
            );
        }
        let ckey = (project.clone(), region.clone(), cluster_name.clone());
        match world.clusters.get(&ckey) {
            None => return not_found("Cluster", cluster_path(&ckey)),
            Some(c) => match cluster_state(shared, c, now) {
                Some((state, _)) if state == "RUNNING" => c.uuid.clone(),
                Some((state, _)) => {
                    return google(
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
    if let Some(existing) = world.jobs.iter().find(|j| {
        j.request_id == fake.request_id
            && !fake.request_id.is_empty()
            && j.key.0 == fake.key.0
            && j.key.1 == fake.key.1
    }) {
        return ok(job_json(shared, existing, now));
    }
    let answer = job_json(shared, &fake, now);
    world.jobs.push(fake);
    ok(answer)
}

pub(super) fn get_job(shared: &Arc<Service>, key: &Key) -> Response {
    let now = shared.now();
    let world = shared.world();
    match world.jobs.iter().find(|j| &j.key == key) {
        Some(j) => ok(job_json(shared, j, now)),
        None => not_found("Job", job_path(key)),
    }
}

pub(super) fn list_jobs(
    shared: &Arc<Service>,
    project: &str,
    region: &str,
    q: &HashMap<String, String>,
) -> Response {
    let invalid = |message: String| google(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message);
    let filter = q.get("filter").map(String::as_str).unwrap_or("");
    // With a filter, jobStateMatcher is ignored (the reference says so).
    let (matcher, wanted_labels) = if filter.is_empty() {
        let matcher = q
            .get("jobStateMatcher")
            .map(String::as_str)
            .unwrap_or("ALL");
        if !matches!(matcher, "ALL" | "ACTIVE" | "NON_ACTIVE") {
            return invalid(format!(
                "Invalid value at 'job_state_matcher' (type.googleapis.com/google.cloud.dataproc.v1.ListJobsRequest.JobStateMatcher), \"{matcher}\""
            ));
        }
        (matcher.to_string(), Vec::new())
    } else {
        match validate::list_filter(filter) {
            Ok((state, labels)) => (state.unwrap_or_else(|| "ALL".into()), labels),
            Err(e) => return invalid(e),
        }
    };
    let matcher = matcher.as_str();
    let now = shared.now();
    let world = shared.world();
    let cluster = q.get("clusterName");
    let mut jobs: Vec<&FakeJob> = world
        .jobs
        .iter()
        .filter(|j| j.key.0 == project && j.key.1 == region)
        .filter(|j| cluster.is_none_or(|c| j.resource["placement"]["clusterName"] == **c))
        .filter(|j| {
            wanted_labels.iter().all(|(key, value)| {
                j.resource["labels"][key]
                    .as_str()
                    .is_some_and(|v| value == "*" || v == value)
            })
        })
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

pub(super) fn cancel_job(shared: &Arc<Service>, key: &Key) -> Response {
    let now = shared.now();
    let mut world = shared.world();
    let Some(index) = world.jobs.iter().position(|j| &j.key == key) else {
        return not_found("Job", job_path(key));
    };
    let state = job_state(shared, &world.jobs[index], now);
    if !is_active(&state) {
        return google(
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
