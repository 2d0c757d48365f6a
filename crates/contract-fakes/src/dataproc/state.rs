//! The fake's world: clusters, operations and jobs, and their states
//! computed from the clock on every request.

use super::Service;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// (project, region, name or job id).
pub(crate) type Key = (String, String, String);

pub(crate) struct FakeCluster {
    pub project: String,
    pub region: String,
    pub name: String,
    pub uuid: String,
    pub resource: Value,
    pub created: Duration,
    /// The create operation's error, when this cluster fails to create.
    pub fail: Option<String>,
    pub delete_at: Option<Duration>,
    /// When it left `RUNNING` on its own (`ERROR`, `STOPPED`), and why.
    pub broke: Option<(Duration, String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Create,
    Delete,
}

pub(crate) struct FakeOp {
    pub name: String,
    pub cluster: Key,
    pub uuid: String,
    pub kind: OpKind,
    pub started: Duration,
    pub request_id: String,
}

pub(crate) struct Plan {
    pub run: Option<Duration>,
    pub outcome: String,
    pub details: String,
    pub attempt_failure: bool,
}

pub(crate) struct FakeJob {
    pub key: Key,
    pub resource: Value,
    pub request_id: String,
    pub uuid: String,
    pub cluster_uuid: String,
    pub submitted: Duration,
    pub plan: Plan,
    pub cancel_at: Option<Duration>,
    pub forced: Option<(Duration, String, String)>,
}

#[derive(Default)]
pub(crate) struct ServiceState {
    pub clusters: HashMap<Key, FakeCluster>,
    pub operations: Vec<FakeOp>,
    pub jobs: Vec<FakeJob>,
    /// Clusters whose deletion finished, in order.
    pub deleted: Vec<String>,
    /// The `requestId` of each `jobs.submit` received, in order (`""` for
    /// none).
    pub submit_request_ids: Vec<String>,
    pub fail_creates: HashMap<String, String>,
}

/// A random UUID, as Dataproc gives clusters, jobs and operations.
pub(crate) fn uuid() -> String {
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

/// Moves clusters whose deletion finished out of the world.
pub(crate) fn sweep(shared: &Service, world: &mut ServiceState, now: Duration) {
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
pub(crate) fn cluster_state(
    shared: &Service,
    c: &FakeCluster,
    now: Duration,
) -> Option<(String, Duration)> {
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
    if let Some((at, state, _)) = &c.broke {
        if now >= *at {
            return Some((state.clone(), *at));
        }
    }
    Some((
        if c.fail.is_some() { "ERROR" } else { "RUNNING" }.into(),
        up,
    ))
}

/// A job status event: state, details, when.
pub(crate) type Event = (String, String, Duration);

/// The job's events up to `now`.
pub(crate) fn job_events(shared: &Service, j: &FakeJob, now: Duration) -> Vec<Event> {
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

pub(crate) fn job_state(shared: &Service, j: &FakeJob, now: Duration) -> String {
    job_events(shared, j, now)
        .last()
        .map(|e| e.0.clone())
        .unwrap_or_default()
}

pub(crate) fn is_active(state: &str) -> bool {
    !matches!(state, "DONE" | "ERROR" | "CANCELLED")
}

/// A running cluster leaves `RUNNING` now on its own: `state` is `ERROR`
/// or `STOPPED`, `detail` Dataproc's reason. Its active jobs fail then, as
/// on Dataproc when the agent stops reporting. False when there is no
/// such running cluster.
pub(crate) fn break_cluster(
    shared: &Service,
    world: &mut ServiceState,
    name: &str,
    state: &str,
    detail: &str,
) -> bool {
    let now = shared.now();
    let Some(cluster) = world
        .clusters
        .values_mut()
        .find(|c| c.name == name && c.delete_at.is_none())
    else {
        return false;
    };
    cluster.broke = Some((now, state.to_string(), detail.to_string()));
    let uuid = cluster.uuid.clone();
    let reason = format!(
        "Job failed: the Dataproc agent stopped reporting: cluster '{name}' is {state}: {detail}"
    );
    for job in world.jobs.iter_mut().filter(|j| j.cluster_uuid == uuid) {
        if is_active(&job_state(shared, job, now)) && job.forced.is_none() {
            job.forced = Some((now, "ERROR".into(), reason.clone()));
        }
    }
    true
}
