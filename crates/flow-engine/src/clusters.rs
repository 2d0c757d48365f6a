//! A run's clusters: adopted from dead runs, launched, recorded, terminated.
//!
//! Every cluster a run touches is recorded in the store as soon as the
//! backend has named it (before waiting for it to come up), and updated when
//! it comes up, fails, or is terminated, so a crash never leaks one: the next
//! run of the flow adopts the clusters a dead run left up (they may still run
//! jobs that run adopts) and terminates them at its end, and `flow clusters
//! --terminate-orphans` ends those of flows nobody runs any more.

use crate::run_context::RunContext;
use chrono::Utc;
use flow_core::{
    Cluster, ClusterError, ClusterFactory, ClusterHandle, ClusterRecord, ClusterState,
    ExecutionContext, FlowStore, Lease, RetryPolicy, StoreError,
};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::task::JoinSet;
use tracing::{error, info, info_span, warn, Instrument, Span};

/// A cluster with its record (which has its store id once saved).
pub(crate) struct Owned {
    pub cluster: Arc<dyn Cluster>,
    pub record: Option<ClusterRecord>,
}

/// The clusters of one run.
pub(crate) struct ClusterSet {
    /// Clusters that take steps.
    pub workers: Vec<Arc<dyn Cluster>>,
    /// Every cluster to terminate at the end: launched, failed to launch,
    /// or adopted from a dead run.
    pub owned: Vec<Owned>,
}

/// What launching needs besides the shared run state.
pub(crate) struct Launch<'a> {
    pub factory: &'a Arc<dyn ClusterFactory>,
    pub retry: RetryPolicy,
    pub span: &'a Span,
}

fn record_for(shared: &RunContext, handle: ClusterHandle, state: ClusterState) -> ClusterRecord {
    let now = Utc::now();
    ClusterRecord {
        id: None,
        flow_name: shared.lease.key.flow_name.clone(),
        timeperiod: shared.lease.key.timeperiod,
        run: shared.run.clone(),
        handle,
        state,
        launched_at: now,
        updated_at: now,
        message: None,
    }
}

async fn save(
    store: &Arc<dyn FlowStore>,
    lease: &Lease,
    record: &mut ClusterRecord,
    state: ClusterState,
    message: Option<String>,
) -> Result<(), StoreError> {
    record.state = state;
    record.message = message;
    record.updated_at = Utc::now();
    let id = store.save_cluster(lease, record).await?;
    record.id = Some(id);
    Ok(())
}

/// Brings up `count` workers: first clusters that dead runs of this flow
/// left up (adopted, all of them, since their jobs may be adopted too; the
/// ones beyond `count` only wait to be terminated), then new ones, launched
/// concurrently. A fenced store write stops it: clusters nobody else knows
/// of are then terminated here.
pub(crate) async fn launch(
    shared: &Arc<RunContext>,
    launch: Launch<'_>,
    count: usize,
) -> Result<ClusterSet, StoreError> {
    let Launch {
        factory,
        retry,
        span,
    } = launch;
    let mut set = ClusterSet {
        workers: Vec::new(),
        owned: Vec::new(),
    };
    adopt_previous(shared, factory, count, span, &mut set).await?;

    let mut taken: HashSet<String> = set
        .owned
        .iter()
        .map(|o| o.cluster.name().to_string())
        .collect();
    let mut launches = JoinSet::new();
    let mut index = 0;
    for _ in set.workers.len()..count {
        let name = loop {
            let name = format!("{}-{index}", factory.kind());
            index += 1;
            if taken.insert(name.clone()) {
                break name;
            }
        };
        let cluster = match factory.create(&name, &shared.context) {
            Ok(c) => c,
            Err(e) => {
                span.in_scope(|| error!(cluster = name.as_str(), "cannot create cluster: {e}"));
                continue;
            }
        };
        let cluster_span = info_span!(parent: span, "cluster", cluster = cluster.name());
        let shared = shared.clone();
        launches.spawn(
            async move {
                let outcome = launch_one(&shared, &cluster, retry).await;
                (cluster, outcome)
            }
            .instrument(cluster_span),
        );
    }
    let mut fenced = None;
    while let Some(joined) = launches.join_next().await {
        let Ok((cluster, outcome)) = joined else {
            continue;
        };
        match outcome {
            LaunchOutcome::Up(record) => {
                set.workers.push(cluster.clone());
                set.owned.push(Owned {
                    cluster,
                    record: Some(record),
                });
            }
            LaunchOutcome::Failed(record) => set.owned.push(Owned { cluster, record }),
            LaunchOutcome::Fenced(e, provisioned) => {
                if provisioned {
                    // Nobody else knows of it: end it here.
                    if let Err(e) = cluster.terminate().await {
                        span.in_scope(|| error!(cluster = cluster.name(), "terminate failed: {e}"));
                    }
                }
                fenced.get_or_insert(e);
            }
        }
    }
    if let Some(e) = fenced {
        return Err(e);
    }
    // Keep the workers in name order, so `local-0` takes the first step.
    set.workers.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(set)
}

enum LaunchOutcome {
    Up(ClusterRecord),
    /// Not usable; the record, if the backend named the cluster.
    Failed(Option<ClusterRecord>),
    /// A store write was fenced; true when the backend has the cluster.
    Fenced(StoreError, bool),
}

/// Provisions (retrying transient failures), records, waits until ready,
/// records again.
async fn launch_one(
    shared: &RunContext,
    cluster: &Arc<dyn Cluster>,
    policy: RetryPolicy,
) -> LaunchOutcome {
    let mut retry = 0;
    let handle = loop {
        match cluster.provision().await {
            Ok(handle) => break handle,
            Err(ClusterError::Launch {
                transient: true,
                ref message,
                ..
            }) if retry < policy.retries && !shared.cancel.is_cancelled() => {
                retry += 1;
                let delay = policy.delay_before(retry);
                warn!(
                    "launch failed ({message}); retry {retry} of {} in {delay:?}",
                    policy.retries
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.cancel.cancelled() => return LaunchOutcome::Failed(None),
                }
            }
            Err(e) => {
                error!("launch failed: {e}");
                return LaunchOutcome::Failed(None);
            }
        }
    };
    info!("provisioned {handle}");
    let mut record = record_for(shared, handle, ClusterState::Launching);
    if let Err(e) = save(
        &shared.store,
        &shared.lease,
        &mut record,
        ClusterState::Launching,
        None,
    )
    .await
    {
        error!("cannot record the cluster: {e}");
        return if e.is_fenced() {
            LaunchOutcome::Fenced(e, true)
        } else {
            // Unrecorded, it must not be used: terminate it at the end.
            LaunchOutcome::Failed(None)
        };
    }
    match cluster.wait_ready().await {
        Ok(()) => {
            info!("launched");
            match save(
                &shared.store,
                &shared.lease,
                &mut record,
                ClusterState::Up,
                None,
            )
            .await
            {
                Ok(()) => LaunchOutcome::Up(record),
                Err(e) if e.is_fenced() => LaunchOutcome::Fenced(e, false),
                Err(e) => {
                    error!("cannot record the cluster: {e}");
                    LaunchOutcome::Failed(Some(record))
                }
            }
        }
        Err(e) => {
            error!("launch failed: {e}");
            let message = Some(e.to_string());
            match save(
                &shared.store,
                &shared.lease,
                &mut record,
                ClusterState::LaunchFailed,
                message,
            )
            .await
            {
                Err(e) if e.is_fenced() => LaunchOutcome::Fenced(e, false),
                _ => LaunchOutcome::Failed(Some(record)),
            }
        }
    }
}

/// Adopts the clusters that runs of this flow whose engines died left up.
async fn adopt_previous(
    shared: &Arc<RunContext>,
    factory: &Arc<dyn ClusterFactory>,
    count: usize,
    span: &Span,
    set: &mut ClusterSet,
) -> Result<(), StoreError> {
    let previous = shared.store.list_clusters(Some(&shared.lease.key)).await?;
    for mut record in previous {
        if !record.state.may_be_up() || record.run == shared.run {
            continue;
        }
        let name = record.handle.name.clone();
        let cluster_span = info_span!(parent: span, "cluster", cluster = name.as_str());
        let _entered = cluster_span.enter();
        if record.handle.kind != factory.kind() {
            warn!(
                "{} of run {} may still be up, but this run uses {} clusters: end it with `flow clusters --terminate-orphans` from a configuration for {}",
                record.handle, record.run, factory.kind(), record.handle.kind
            );
            continue;
        }
        let cluster = match factory.create(&name, &shared.context) {
            Ok(c) => c,
            Err(e) => {
                error!("cannot create a cluster to adopt {}: {e}", record.handle);
                continue;
            }
        };
        match cluster
            .adopt(&record.handle)
            .instrument(Span::current())
            .await
        {
            Ok(true) => {
                info!("adopted {} left up by run {}", record.handle, record.run);
                let from = record.run.clone();
                record.run = shared.run.clone();
                save(
                    &shared.store,
                    &shared.lease,
                    &mut record,
                    ClusterState::Up,
                    Some(format!("adopted from run {from}")),
                )
                .await?;
                if set.workers.len() < count {
                    set.workers.push(cluster.clone());
                }
                set.owned.push(Owned {
                    cluster,
                    record: Some(record),
                });
            }
            Ok(false) => {
                info!("{} of run {} is gone", record.handle, record.run);
                save(
                    &shared.store,
                    &shared.lease,
                    &mut record,
                    ClusterState::Terminated,
                    Some(format!("found gone by run {}", shared.run)),
                )
                .await?;
            }
            Err(e) => warn!("cannot adopt {} of run {}: {e}", record.handle, record.run),
        }
    }
    Ok(())
}

/// Terminates every owned cluster concurrently and records how it went.
/// Store failures here are logged, not returned: the clusters are what
/// matters at this point.
///
/// Returns the clusters that could not be terminated, each as "NAME: why":
/// they may still be up (and billing), so the run must say so.
pub(crate) async fn terminate(
    shared: &Arc<RunContext>,
    owned: Vec<Owned>,
    span: &Span,
) -> Vec<String> {
    let mut terminations = JoinSet::new();
    for Owned { cluster, record } in owned {
        let cluster_span = info_span!(parent: span, "cluster", cluster = cluster.name());
        let name = cluster.name().to_string();
        let shared = shared.clone();
        terminations.spawn(
            async move {
                let result = cluster.terminate().await;
                let (state, message) = match &result {
                    Ok(()) => {
                        info!("terminated");
                        let reused = record.as_ref().is_some_and(|r| r.handle.reused);
                        let state = if reused {
                            ClusterState::LeftUp
                        } else {
                            ClusterState::Terminated
                        };
                        (state, None)
                    }
                    Err(e) => {
                        error!("terminate failed: {e}");
                        (ClusterState::TerminateFailed, Some(e.to_string()))
                    }
                };
                let failure = message.as_ref().map(|why| format!("{name}: {why}"));
                if let Some(mut record) = record {
                    if let Err(e) =
                        save(&shared.store, &shared.lease, &mut record, state, message).await
                    {
                        error!("cannot record the termination: {e}");
                    }
                }
                failure
            }
            .instrument(cluster_span),
        );
    }
    let mut failures = Vec::new();
    while let Some(joined) = terminations.join_next().await {
        match joined {
            Ok(Some(failure)) => failures.push(failure),
            Ok(None) => {}
            Err(e) => failures.push(format!("a termination ended abnormally: {e}")),
        }
    }
    failures.sort();
    failures
}

/// What `terminate_orphans` did with one recorded cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct OrphanOutcome {
    /// The cluster as recorded.
    pub record: ClusterRecord,
    /// `Ok` with the new state, or why it was left alone or failed.
    pub result: Result<ClusterState, String>,
}

/// Terminates the clusters whose runs are no longer alive: for each flow
/// (of `flow_name` and `timeperiod` where given, else every one: nothing
/// else is touched) with clusters that may be up, takes the
/// flow's lease (refused while a live run holds it: those are left alone),
/// terminates them through `factory`, records it and releases the lease.
/// Clusters of another kind than `factory`'s are reported and left alone.
pub async fn terminate_orphans(
    store: Arc<dyn FlowStore>,
    factory: Arc<dyn ClusterFactory>,
    flow_name: Option<&str>,
    timeperiod: Option<flow_core::Timeperiod>,
    context_for: impl Fn(&ClusterRecord) -> ExecutionContext,
    owner: &str,
    ttl: std::time::Duration,
) -> Result<Vec<OrphanOutcome>, StoreError> {
    let records: Vec<ClusterRecord> = store
        .list_clusters(None)
        .await?
        .into_iter()
        .filter(|r| flow_name.is_none_or(|name| r.flow_name == name))
        .filter(|r| timeperiod.is_none_or(|t| r.timeperiod == t))
        .collect();
    let mut outcomes = Vec::new();
    let mut keys: Vec<_> = records
        .iter()
        .filter(|r| r.state.may_be_up())
        .map(|r| r.key())
        .collect();
    keys.dedup();
    let mut seen = HashSet::new();
    for key in keys {
        if !seen.insert(key.clone()) {
            continue;
        }
        let lease = match store.acquire_lease(&key, owner, Utc::now(), ttl).await? {
            flow_core::LeaseOutcome::Acquired(lease) => Some(lease),
            flow_core::LeaseOutcome::HeldBy { owner, .. } => {
                for record in records
                    .iter()
                    .filter(|r| r.key() == key && r.state.may_be_up())
                {
                    outcomes.push(OrphanOutcome {
                        record: record.clone(),
                        result: Err(format!("its flow is being run by {owner}")),
                    });
                }
                None
            }
        };
        let Some(lease) = lease else { continue };
        // Re-read under the lease: a run that ended in between updated them.
        let current = store.list_clusters(Some(&key)).await?;
        for mut record in current.into_iter().filter(|r| r.state.may_be_up()) {
            let result = if record.handle.kind != factory.kind() {
                Err(format!(
                    "a {} cluster; this configuration makes {} clusters",
                    record.handle.kind,
                    factory.kind()
                ))
            } else {
                terminate_recorded(
                    &*store,
                    &lease,
                    &*factory,
                    &context_for(&record),
                    &mut record,
                )
                .await
            };
            outcomes.push(OrphanOutcome { record, result });
        }
        store.release_lease(&lease).await?;
    }
    Ok(outcomes)
}

async fn terminate_recorded(
    store: &dyn FlowStore,
    lease: &Lease,
    factory: &dyn ClusterFactory,
    context: &ExecutionContext,
    record: &mut ClusterRecord,
) -> Result<ClusterState, String> {
    let cluster = factory
        .create(&record.handle.name, context)
        .map_err(|e| e.to_string())?;
    let (state, message) = match cluster.adopt(&record.handle).await {
        Ok(false) => (ClusterState::Terminated, Some("found gone".to_string())),
        Ok(true) => match cluster.terminate().await {
            Ok(()) if record.handle.reused => (ClusterState::LeftUp, None),
            Ok(()) => (
                ClusterState::Terminated,
                Some("terminated as an orphan".to_string()),
            ),
            Err(e) => (ClusterState::TerminateFailed, Some(e.to_string())),
        },
        Err(e) => return Err(e.to_string()),
    };
    record.state = state;
    record.message = message.clone();
    record.updated_at = Utc::now();
    store
        .save_cluster(lease, record)
        .await
        .map_err(|e| e.to_string())?;
    match state {
        ClusterState::TerminateFailed => Err(message.unwrap_or_default()),
        other => Ok(other),
    }
}

/// Cancels jobs that steps of a dead run left running, when this run is
/// going to run those steps afresh instead of adopting them; returns one
/// line per job it could not stop (the run must then start nothing).
pub(crate) async fn cancel_orphan_jobs(
    factory: &Arc<dyn ClusterFactory>,
    context: &ExecutionContext,
    jobs: Vec<(String, flow_core::JobRecord)>,
    span: &Span,
) -> Vec<String> {
    cancel_jobs(factory, context, jobs)
        .instrument(span.clone())
        .await
}

/// Cancels the jobs (step name, job) that a dead run's steps left, if they
/// still run, through clusters made by `factory`; logs what it did and
/// returns one line per job it could not cancel or reach. For a new run
/// that starts those steps afresh, and for `flow cancel`.
pub async fn cancel_jobs(
    factory: &Arc<dyn ClusterFactory>,
    context: &ExecutionContext,
    jobs: Vec<(String, flow_core::JobRecord)>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (step, job) in jobs {
        let handle = &job.handle;
        if handle.kind != factory.kind() {
            let problem = format!(
                "step {step}: {handle} is not reachable from this configuration ({} clusters); it may still be running",
                factory.kind()
            );
            warn!("{problem}");
            problems.push(problem);
            continue;
        }
        let cluster = match factory.create(&handle.cluster, context) {
            Ok(c) => c,
            Err(e) => {
                let problem = format!("step {step}: cannot cancel {handle}: {e}");
                warn!("{problem}");
                problems.push(problem);
                continue;
            }
        };
        match cluster.status(handle).await {
            // Lost: its leader is gone, what it started may not be.
            Ok(flow_core::JobStatus::Running | flow_core::JobStatus::Lost { .. }) => {
                warn!("cancelling {handle} that step {step} left running in a dead run");
                if let Err(e) = cluster.cancel(handle).await {
                    let problem = format!("step {step}: cannot cancel {handle}: {e}");
                    error!("{problem}");
                    problems.push(problem);
                }
            }
            Ok(_) => {}
            Err(e) => {
                let problem = format!("step {step}: cannot ask about {handle}: {e}");
                warn!("{problem}");
                problems.push(problem);
            }
        }
    }
    problems
}
