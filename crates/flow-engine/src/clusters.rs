//! A run's clusters: adopted from dead runs, launched, recorded, terminated.
//!
//! Every cluster a run touches is recorded in the store as soon as the
//! backend has named it (before waiting for it to come up), and updated when
//! it comes up, fails, or is terminated, so a crash never leaks one: the next
//! run of the flow adopts the clusters a dead run left up (they may still run
//! jobs that run adopts) and terminates them at its end, and `flow clusters
//! --terminate-orphans` ends those of flows nobody runs any more.
//!
//! A cluster that runs share by name ([`Cluster::shared_name`]) follows the
//! store's record of its users ([`flow_core::SharedCluster`]), the same for
//! every cloud: launching or reusing the name is one claim in the store
//! (one run launches, the others wait for its handle and adopt it), a run
//! that ends releases it, and only the last live user terminates it.
//! Adoption and `--terminate-orphans` go through the same record.

use crate::lease::{still_held, Held};
use crate::run_context::RunContext;
use chrono::Utc;
use flow_core::{
    Cluster, ClusterClaim, ClusterError, ClusterFactory, ClusterHandle, ClusterRecord,
    ClusterRelease, ClusterState, ClusterUsage, ExecutionContext, FlowStore, Lease, RetryPolicy,
    SharedClusterKey, StoreError, SHARED_NAME_DETAIL,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
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
    /// Why each cluster that did not come up failed, as the backend said
    /// (for the run's error when none did).
    pub failures: Vec<String>,
    /// Clusters left up unterminated, as "NAME: why" (for the run's
    /// report: they may still be up).
    pub left_up: Vec<String>,
}

/// What launching needs besides the shared run state.
pub(crate) struct Launch<'a> {
    pub factory: &'a Arc<dyn ClusterFactory>,
    pub retry: RetryPolicy,
    pub span: &'a Span,
}

fn record_for(
    shared: &RunContext,
    cluster: &dyn Cluster,
    handle: ClusterHandle,
    state: ClusterState,
) -> ClusterRecord {
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
        usage: ClusterUsage {
            instances: cluster.instances(),
            ..ClusterUsage::default()
        },
    }
}

async fn save(
    store: &Arc<dyn FlowStore>,
    lease: &Lease,
    record: &mut ClusterRecord,
    state: ClusterState,
    message: Option<String>,
) -> Result<(), StoreError> {
    record.mark(state, message, Utc::now());
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
        failures: Vec::new(),
        left_up: Vec::new(),
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
            LaunchOutcome::Failed(record, why) => {
                set.failures.push(why);
                set.owned.push(Owned { cluster, record });
            }
            LaunchOutcome::Dropped => {}
            LaunchOutcome::LeftUp { why, left } => {
                set.failures.push(why);
                set.left_up.push(left);
            }
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
    /// Not usable; the record, if the backend named the cluster, and why.
    Failed(Option<ClusterRecord>, String),
    /// A store write was fenced; true when the backend has the cluster
    /// and no one else knows of it.
    Fenced(StoreError, bool),
    /// Not this run's: a shared cluster it could not join.
    Dropped,
    /// Not usable, and left up under its record, not known to be this
    /// run's to end: why it is not usable, and the report's line.
    LeftUp {
        why: String,
        left: String,
    },
}

/// How many times a run that joined a shared cluster found gone claims the
/// name again before it gives up.
const CLAIM_ROUNDS: usize = 5;

/// Launches `cluster`, or, when runs share it, claims its name in the store
/// first: launches it if this run won the claim, else adopts the handle of
/// the run that did.
async fn launch_one(
    shared: &RunContext,
    cluster: &Arc<dyn Cluster>,
    policy: RetryPolicy,
) -> LaunchOutcome {
    let Some(name) = cluster.shared_name() else {
        return launch_new(shared, cluster, policy, None).await;
    };
    let key = SharedClusterKey::new(cluster.kind(), name);
    for _ in 0..CLAIM_ROUNDS {
        let handle = match claim(shared, &key).await {
            Ok(None) => return launch_new(shared, cluster, policy, Some(&key)).await,
            Ok(Some(handle)) => handle,
            Err(outcome) => return outcome,
        };
        let mut handle = handle;
        handle.name = cluster.name().to_string();
        match cluster.adopt(&handle).await {
            Ok(true) => {
                info!("joined {handle}, which another run launched; the last run using it terminates it");
                return record_and_wait(shared, cluster, handle, None).await;
            }
            Ok(false) => {
                warn!("{handle} is gone; claiming {key} again");
                if let Err(e) = shared
                    .store
                    .forget_cluster(&shared.lease, &key, &handle.backend_id)
                    .await
                {
                    return store_failure(shared, &key, e).await;
                }
            }
            Err(e) => {
                error!("cannot join {handle}: {e}");
                release_quietly(shared, &key).await;
                return LaunchOutcome::Dropped;
            }
        }
    }
    error!("{key} was found gone {CLAIM_ROUNDS} times in a row");
    release_quietly(shared, &key).await;
    LaunchOutcome::Dropped
}

/// Claims `key` until the store answers launch (`None`) or join (the
/// handle), waiting while another run launches or ends it.
async fn claim(
    shared: &RunContext,
    key: &SharedClusterKey,
) -> Result<Option<ClusterHandle>, LaunchOutcome> {
    let mut delay = Duration::from_millis(100);
    let mut told = false;
    loop {
        let claimed = shared
            .store
            .claim_cluster(
                &shared.lease,
                &shared.run,
                key,
                Utc::now(),
                shared.lease_ttl,
            )
            .await;
        match claimed {
            Ok(ClusterClaim::Launch) => return Ok(None),
            Ok(ClusterClaim::Join(handle)) => return Ok(Some(handle)),
            Ok(ClusterClaim::Wait) => {
                if !told {
                    info!("another run is launching or ending {key}: waiting for it");
                    told = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.cancel.cancelled() => return Err(LaunchOutcome::Dropped),
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                error!("cannot claim {key}: {e}");
                return Err(if e.is_fenced() {
                    LaunchOutcome::Fenced(e, false)
                } else {
                    LaunchOutcome::Dropped
                });
            }
        }
    }
}

/// Gives up this run's use of `key` after a failure; a store error here
/// only leaves an entry that dies with the run's lease.
async fn release_quietly(shared: &RunContext, key: &SharedClusterKey) {
    if let Err(e) = shared
        .store
        .release_cluster(&shared.lease, key, Utc::now(), shared.lease_ttl)
        .await
    {
        warn!("cannot release {key}: {e}");
    }
}

async fn store_failure(
    shared: &RunContext,
    key: &SharedClusterKey,
    e: StoreError,
) -> LaunchOutcome {
    error!("cannot record {key}: {e}");
    if e.is_fenced() {
        LaunchOutcome::Fenced(e, false)
    } else {
        release_quietly(shared, key).await;
        LaunchOutcome::Dropped
    }
}

/// Provisions (retrying transient failures), records (and, for a shared
/// name this run claimed, names it in the store so waiting runs join it),
/// waits until ready, records again.
async fn launch_new(
    shared: &RunContext,
    cluster: &Arc<dyn Cluster>,
    policy: RetryPolicy,
    key: Option<&SharedClusterKey>,
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
                    _ = shared.cancel.cancelled() => {
                        if let Some(key) = key {
                            release_quietly(shared, key).await;
                        }
                        return LaunchOutcome::Failed(None, format!("{}: launch cancelled", cluster.name()));
                    }
                }
            }
            Err(e) => {
                error!("launch failed: {e}");
                if let Some(key) = key {
                    release_quietly(shared, key).await;
                }
                return LaunchOutcome::Failed(None, e.to_string());
            }
        }
    };
    info!("provisioned {handle}");
    record_and_wait(shared, cluster, handle, key).await
}

/// Records a provisioned or joined cluster (`key`: the shared name this run
/// launched, to name in the store), waits until it is ready and records
/// that.
async fn record_and_wait(
    shared: &RunContext,
    cluster: &Arc<dyn Cluster>,
    mut handle: ClusterHandle,
    key: Option<&SharedClusterKey>,
) -> LaunchOutcome {
    if let Some(name) = cluster.shared_name() {
        handle.details.insert(SHARED_NAME_DETAIL.to_string(), name);
    }
    let mut record = record_for(shared, &**cluster, handle, ClusterState::Launching);
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
            // A joined cluster is not this run's to end.
            LaunchOutcome::Fenced(e, key.is_some() || cluster.shared_name().is_none())
        } else {
            // Unrecorded, it must not be used: terminate it at the end
            // (a shared one: release it, so it is its last user's to end).
            if let Some(shared_key) = SharedClusterKey::of_handle(&record.handle) {
                release_quietly(shared, &shared_key).await;
                if key.is_none() {
                    return LaunchOutcome::Dropped;
                }
            }
            LaunchOutcome::Failed(None, format!("{}: cannot record it: {e}", cluster.name()))
        };
    }
    if let Some(key) = key {
        if let Err(e) = shared
            .store
            .set_cluster_handle(&shared.lease, key, &record.handle)
            .await
        {
            error!("cannot record {key} for the runs sharing it: {e}");
            if e.is_fenced() {
                return LaunchOutcome::Fenced(e, true);
            }
        }
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
                Err(e) => {
                    let why = format!("{}: cannot record it: {e}", cluster.name());
                    unrecorded(shared, record, why, e).await
                }
            }
        }
        Err(e) => {
            error!("launch failed: {e}");
            let why = e.to_string();
            match save(
                &shared.store,
                &shared.lease,
                &mut record,
                ClusterState::LaunchFailed,
                Some(why.clone()),
            )
            .await
            {
                Ok(()) => LaunchOutcome::Failed(Some(record), why),
                Err(e) => unrecorded(shared, record, why, e).await,
            }
        }
    }
}

/// The outcome for a recorded cluster whose next state could not be saved
/// (`e`): it is this run's to terminate only while the run holds its lease.
/// A write can fail without being fenced after the lease changed hands
/// (the new holder keeps the write lock, the store is busy), and the new
/// holder may adopt the cluster by its record; so the lease is read before
/// the cluster is taken as this run's, only on this failure path.
async fn unrecorded(
    shared: &RunContext,
    record: ClusterRecord,
    why: String,
    e: StoreError,
) -> LaunchOutcome {
    if e.is_fenced() {
        return LaunchOutcome::Fenced(e, false);
    }
    error!("cannot record the cluster: {e}");
    match still_held(&*shared.store, &shared.lease).await {
        Held::Yes => LaunchOutcome::Failed(Some(record), why),
        Held::Lost(fenced) => LaunchOutcome::Fenced(fenced, false),
        Held::Unknown(check) => {
            error!("cannot tell whether this run still holds its lease ({check}): leaving the cluster up to the next run of the flow or `flow clusters --terminate-orphans`, by its record");
            let left = format!(
                "{}: left up, its record standing: cannot record it ({e}) nor tell whether this run still holds its lease ({check})",
                record.handle.name
            );
            LaunchOutcome::LeftUp { why, left }
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
        let key = SharedClusterKey::of_handle(&record.handle);
        if let Some(key) = &key {
            // Its users are recorded: adopt it only as one of them, once the
            // name's record says it is still this cluster (waiting while
            // another run launches or ends the name's cluster).
            match claim(shared, key).await {
                Ok(None) => {}
                Ok(Some(named)) if named.backend_id == record.handle.backend_id => {}
                Ok(Some(named)) => {
                    // The name is another cluster's: this one was ended by
                    // its last user, or its launcher died before naming it.
                    // Either way no run uses it.
                    release_quietly(shared, key).await;
                    let now = format!("{key} is {} now", named.backend_id);
                    end_unnamed(shared, &cluster, &mut record, &now).await?;
                    continue;
                }
                Err(LaunchOutcome::Fenced(e, _)) => return Err(e),
                // Cancelled, or the store failed (logged): left for the
                // flow's next run.
                Err(_) => continue,
            }
        }
        match cluster
            .adopt(&record.handle)
            .instrument(Span::current())
            .await
        {
            Ok(true) => {
                if let Some(key) = &key {
                    // Named again for the runs that claim it after this one
                    // (a no-op refusal when another run launched it).
                    let _ = shared
                        .store
                        .set_cluster_handle(&shared.lease, key, &record.handle)
                        .await;
                }
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
                if let Some(key) = &key {
                    shared
                        .store
                        .forget_cluster(&shared.lease, key, &record.handle.backend_id)
                        .await?;
                    release_quietly(shared, key).await;
                }
                save(
                    &shared.store,
                    &shared.lease,
                    &mut record,
                    ClusterState::Terminated,
                    Some(format!("found gone by run {}", shared.run)),
                )
                .await?;
            }
            Err(e) => {
                warn!("cannot adopt {} of run {}: {e}", record.handle, record.run);
                if let Some(key) = &key {
                    release_quietly(shared, key).await;
                }
            }
        }
    }
    Ok(())
}

/// Ends `cluster`, a dead run's cluster that its shared name no longer
/// names (`now` says what it names): no run knows of it, so it would be
/// left up forever. Ended at once, before this run starts anything (a job
/// of the dead run still on it must not run beside its step's rerun),
/// unless it was found outside flow.
async fn end_unnamed(
    shared: &RunContext,
    cluster: &Arc<dyn Cluster>,
    record: &mut ClusterRecord,
    now: &str,
) -> Result<(), StoreError> {
    let (state, message) = match cluster.adopt(&record.handle).await {
        Ok(false) => (
            ClusterState::Terminated,
            format!("found gone by run {}; {now}", shared.run),
        ),
        Ok(true) if record.handle.reused => (
            ClusterState::LeftUp,
            format!("{now}; left up, since it was found outside flow"),
        ),
        Ok(true) => match cluster.terminate().await {
            Ok(()) => (
                ClusterState::Terminated,
                format!("ended by run {}, since no run used it: {now}", shared.run),
            ),
            Err(e) => {
                error!("cannot terminate {}, which no run uses: {e}", record.handle);
                (ClusterState::TerminateFailed, e.to_string())
            }
        },
        Err(e) => {
            warn!("cannot adopt {} of run {}: {e}", record.handle, record.run);
            return Ok(());
        }
    };
    info!("{} of run {}: {message}", record.handle, record.run);
    save(&shared.store, &shared.lease, record, state, Some(message)).await
}

/// Leaves every owned cluster up under its record (the next run of the
/// flow adopts it, `flow clusters --terminate-orphans` ends it), for a run
/// that cannot tell whether it still holds its lease (`why`): they may be
/// the new holder's. Returns them as [`terminate`] does.
pub(crate) fn leave_up(owned: Vec<Owned>, why: &StoreError, span: &Span) -> Vec<String> {
    let left: Vec<String> = owned
        .iter()
        .map(|o| {
            format!(
                "{}: left up, since whether this run still holds its lease is unknown ({why})",
                o.cluster.name()
            )
        })
        .collect();
    for line in &left {
        span.in_scope(|| error!("{line}"));
    }
    left
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
                let key = record
                    .as_ref()
                    .and_then(|r| SharedClusterKey::of_handle(&r.handle));
                if let Some(key) = &key {
                    match shared
                        .store
                        .release_cluster(&shared.lease, key, Utc::now(), shared.lease_ttl)
                        .await
                    {
                        Ok(ClusterRelease::Last) => {}
                        Ok(ClusterRelease::Others(n)) => {
                            info!("leaving it up: {n} other run(s) still use it; the last one terminates it");
                            if let Some(mut record) = record {
                                let message = Some(format!("left up for the {n} other run(s) still using it"));
                                if let Err(e) = save(&shared.store, &shared.lease, &mut record, ClusterState::LeftUp, message).await {
                                    error!("cannot record it: {e}");
                                }
                            }
                            return None;
                        }
                        Err(e) => {
                            // Whether others still use it is unknown: never
                            // end it under them.
                            error!("cannot release {key}: {e}; leaving it up");
                            return Some(format!("{name}: left up, since whether other runs still use it is unknown ({e})"));
                        }
                    }
                }
                let result = cluster.terminate().await;
                if let (Some(key), Some(record), Ok(())) = (&key, &record, &result) {
                    if let Err(e) = shared
                        .store
                        .forget_cluster(&shared.lease, key, &record.handle.backend_id)
                        .await
                    {
                        error!("cannot record that {key} ended: {e}");
                    }
                }
                let (state, message, failure) = match &result {
                    Ok(()) => {
                        info!("terminated");
                        let reused = record.as_ref().is_some_and(|r| r.handle.reused);
                        let launch_failed = record
                            .as_ref()
                            .is_some_and(|r| r.state == ClusterState::LaunchFailed);
                        let state = if reused {
                            ClusterState::LeftUp
                        } else if launch_failed {
                            // Down now; the record still says it never came up.
                            ClusterState::LaunchFailed
                        } else {
                            ClusterState::Terminated
                        };
                        // A cluster that ended by itself keeps why (EMR's
                        // state change reason: `TERMINATED_WITH_ERRORS:
                        // BOOTSTRAP_FAILURE: ...`); a failed launch keeps its
                        // error when the backend knows no more.
                        let why = cluster.end_reason().or_else(|| {
                            record
                                .as_ref()
                                .filter(|_| launch_failed)
                                .and_then(|r| r.message.clone())
                        });
                        (state, why, None)
                    }
                    Err(e) => {
                        error!("terminate failed: {e}");
                        (ClusterState::TerminateFailed, Some(e.to_string()), Some(format!("{name}: {e}")))
                    }
                };
                if let Some(mut record) = record {
                    if let Some(n) = cluster.normalized_instance_hours() {
                        record.usage.normalized_instance_hours = Some(n);
                    }
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
        let mut ended = Vec::new();
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
                    ttl,
                )
                .await
            };
            if result == Ok(ClusterState::Terminated) {
                ended.push(record.handle.clone());
            }
            outcomes.push(OrphanOutcome { record, result });
        }
        close_steps_on(&*store, &lease, &ended).await?;
        store.release_lease(&lease).await?;
    }
    Ok(outcomes)
}

/// Closes the steps that the dead run left running on the clusters just
/// `ended` (their jobs ended with them): failed, with the reason, so the
/// next `recover` runs them again at once instead of finding them lost.
async fn close_steps_on(
    store: &dyn FlowStore,
    lease: &Lease,
    ended: &[ClusterHandle],
) -> Result<(), StoreError> {
    if ended.is_empty() {
        return Ok(());
    }
    for mut step in store.get_steps(&lease.key).await? {
        let Some(cluster) = step.job.as_ref().and_then(|job| {
            ended
                .iter()
                .find(|c| c.kind == job.handle.kind && c.name == job.handle.cluster)
        }) else {
            continue;
        };
        if step.state != flow_core::StepState::InProgress {
            continue;
        }
        let message = format!(
            "its job ended with {cluster}, terminated by `flow clusters --terminate-orphans`; `flow recover` runs the step again"
        );
        warn!(flow = %lease.key, step = step.step_name.as_str(), "{message}");
        step.state = flow_core::StepState::Invalid;
        step.finished_at = Some(Utc::now());
        step.error = Some(message);
        store.save_step(lease, &step).await?;
    }
    Ok(())
}

async fn terminate_recorded(
    store: &dyn FlowStore,
    lease: &Lease,
    factory: &dyn ClusterFactory,
    context: &ExecutionContext,
    record: &mut ClusterRecord,
    ttl: std::time::Duration,
) -> Result<ClusterState, String> {
    let cluster = factory
        .create(&record.handle.name, context)
        .map_err(|e| e.to_string())?;
    let mut key = SharedClusterKey::of_handle(&record.handle);
    let mut others = None;
    if let Some(shared) = key.clone() {
        // Claimed for the dead run that recorded it, to learn whether the
        // name is still this cluster's: if not (its launcher died before
        // naming it, or its last user ended it), no run uses it.
        let claim = store
            .claim_cluster(lease, &record.run, &shared, Utc::now(), ttl)
            .await
            .map_err(|e| e.to_string())?;
        let named = match claim {
            ClusterClaim::Join(h) => h.backend_id == record.handle.backend_id,
            ClusterClaim::Launch => false,
            ClusterClaim::Wait => {
                return Err(format!(
                    "another run is launching or ending {shared}: run this again later"
                ))
            }
        };
        // Ended only if no live run uses it any more.
        match store
            .release_cluster(lease, &shared, Utc::now(), ttl)
            .await
            .map_err(|e| e.to_string())?
        {
            ClusterRelease::Others(n) if named => others = Some(n),
            _ if named => {}
            _ => key = None,
        }
    }
    let (state, message) = match others {
        Some(n) => (
            ClusterState::LeftUp,
            Some(format!("left up for the {n} live run(s) still using it")),
        ),
        None => match cluster.adopt(&record.handle).await {
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
        },
    };
    if let (Some(key), ClusterState::Terminated | ClusterState::LeftUp, None) =
        (&key, state, others)
    {
        store
            .forget_cluster(lease, key, &record.handle.backend_id)
            .await
            .map_err(|e| e.to_string())?;
    }
    if let Some(n) = cluster.normalized_instance_hours() {
        record.usage.normalized_instance_hours = Some(n);
    }
    record.mark(state, message.clone(), Utc::now());
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
