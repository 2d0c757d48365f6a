//! `flow jobs`, `flow skip` and `flow reprocess`: a person's view of and
//! hands on a scheduled flow's Jobs (Synergy's MX). Every write takes the
//! Job's claim first, like a scheduler, so it never races a running one.

use super::{flow_file, format_time, hostname, load_graph, parse_timeperiod, small_runtime, table};
use crate::backends;
use crate::cli::Target;
use crate::exit::{CliError, Exit};
use crate::settings::SettingsFile;
use flow_core::{
    FlowGraph, FlowKey, FlowStore, JobKey, JobQuery, JobState, Lease, LeaseOutcome, RunMode,
    Schedule, TimeQualifier, TimetableJob,
};
use flow_engine::timetable::{cascade as cascade_of, readiness, Readiness};
use flow_engine::{cancel_flow, CancelError, CancelRequest};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A scheduled flow from its file.
fn scheduled(settings: &SettingsFile, arg: &str) -> Result<(Arc<FlowGraph>, Schedule), CliError> {
    let path = flow_file(arg, settings)?;
    let graph = load_graph(&path)?;
    let Some(schedule) = graph.schedule().cloned() else {
        return Err(CliError::bad_input(format!(
            "{}: flow '{}' has no [schedule] section, so it has no Jobs",
            path.display(),
            graph.name()
        )));
    };
    Ok((Arc::new(graph), schedule))
}

/// The flows of the flows directory (the ones that load; for upstream
/// qualifiers, and cascades over Jobs that do not record their upstreams).
fn flows_directory_graphs(settings: &SettingsFile) -> Vec<Arc<FlowGraph>> {
    let Some(dir) = settings.flows_directory() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut graphs: Vec<Arc<FlowGraph>> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter_map(|p| load_graph(&p).ok())
        .map(Arc::new)
        .collect();
    graphs.sort_by(|a, b| a.name().cmp(b.name()));
    graphs
}

fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "someone".into())
}

/// A person's claim of a Job; refused while a scheduler holds it.
async fn claim(
    store: &Arc<dyn FlowStore>,
    key: &JobKey,
    command: &str,
    ttl: std::time::Duration,
) -> Result<Lease, CliError> {
    let owner = format!("flow-{command}:{}:{}", hostname(), std::process::id());
    match store
        .acquire_lease(&key.claim_key(), &owner, chrono::Utc::now(), ttl)
        .await
        .map_err(|e| CliError::failed(e.to_string()))?
    {
        LeaseOutcome::Acquired(lease) => Ok(lease),
        LeaseOutcome::HeldBy { owner, .. } => Err(CliError::bad_input(format!(
            "{key} is being run by {owner}: try again when its run has ended"
        ))),
    }
}

fn list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [first, .., last] if names.len() > 4 => {
            format!("{first} … {last} ({} Jobs)", names.len())
        }
        _ => names.join(", "),
    }
}

pub fn jobs(
    settings_path: Option<&Path>,
    flow: &str,
    from: Option<&str>,
    to: Option<&str>,
    json: bool,
) -> Result<Exit, CliError> {
    let settings = SettingsFile::load(settings_path)?;
    let (graph, schedule) = scheduled(&settings, flow)?;
    let q = Some(graph.time_qualifier());
    let from = from.map(|t| parse_timeperiod("from", t, q)).transpose()?;
    let to = to.map(|t| parse_timeperiod("to", t, q)).transpose()?;
    let plan = backends::plan_store(&settings)?;
    if !plan.exists() {
        return Err(CliError::bad_input(format!(
            "no store at {}: flow '{}' has no Jobs yet",
            plan.location(),
            graph.name()
        )));
    }
    // Upstream qualifiers: from the flows directory.
    let known: HashMap<String, TimeQualifier> = flows_directory_graphs(&settings)
        .iter()
        .map(|g| (g.name().to_string(), g.time_qualifier()))
        .collect();
    let mut upstream = HashMap::new();
    let mut unknown = Vec::new();
    for name in &schedule.depends_on_flows {
        match known.get(name) {
            Some(q) => {
                upstream.insert(name.clone(), *q);
            }
            None => unknown.push(name.clone()),
        }
    }
    let store = plan.open()?;
    small_runtime()?.block_on(async {
        let jobs = store
            .list_jobs(&JobQuery {
                process_name: Some(graph.name().to_string()),
                time_qualifier: Some(graph.time_qualifier()),
                from,
                to,
                ..JobQuery::default()
            })
            .await
            .map_err(|e| CliError::failed(e.to_string()))?;
        let mut rows = vec![vec![
            "TIMEPERIOD".to_string(),
            "STATE".into(),
            "FAILURES".into(),
            "RUN".into(),
            "NOTE".into(),
        ]];
        let mut out = Vec::new();
        for job in &jobs {
            let ready = if job.state == JobState::Embryo {
                readiness(store.as_ref(), &graph, &upstream, job.timeperiod)
                    .await
                    .map_err(|e| CliError::failed(e.to_string()))?
            } else {
                Readiness::Ready
            };
            let (waiting, blocked) = match &ready {
                Readiness::Ready => (Vec::new(), Vec::new()),
                Readiness::Waiting(w) => (w.clone(), Vec::new()),
                Readiness::Blocked(b) => (Vec::new(), b.clone()),
            };
            let mut note = match (&ready, job.not_before) {
                (Readiness::Blocked(b), _) => format!("blocked by failed/skipped {}", list(b)),
                (Readiness::Waiting(w), _) => format!("waiting for {}", list(w)),
                (_, Some(t)) if !job.state.is_finished() => {
                    format!("next run not before {}", format_time(Some(t)))
                }
                _ => String::new(),
            };
            if job.state == JobState::Embryo && !unknown.is_empty() {
                note = format!(
                    "{note}{}upstream {} not in the flows directory",
                    if note.is_empty() { "" } else { "; " },
                    unknown.join(", ")
                );
            }
            let shown = job.shown_state(&schedule);
            rows.push(vec![
                job.timeperiod.to_string(),
                shown.clone(),
                job.number_of_failures.to_string(),
                job.related_unit_of_work
                    .as_ref()
                    .map_or_else(|| "-".into(), |r| r.to_string()),
                note,
            ]);
            out.push(serde_json::json!({
                "timeperiod": job.timeperiod.to_string(),
                "state": job.state,
                "shown": shown,
                "number_of_failures": job.number_of_failures,
                "related_unit_of_work": job.related_unit_of_work,
                "run_mode": job.run_mode,
                "not_before": job.not_before,
                "waiting_for": waiting,
                "blocked_by": blocked,
                "event_log": job.event_log,
            }));
        }
        if json {
            outln!(
                "{}",
                serde_json::json!({
                    "flow": graph.name(),
                    "time_qualifier": graph.time_qualifier(),
                    "retry_limit": schedule.retry_limit,
                    "jobs": out,
                })
            );
        } else if jobs.is_empty() {
            outln!("flow {}: no Jobs", graph.name());
        } else {
            out!("{}", table(&rows));
        }
        Ok(Exit::Success)
    })
}

pub fn skip(settings_path: Option<&Path>, target: &Target) -> Result<Exit, CliError> {
    let settings = SettingsFile::load(settings_path)?;
    let (graph, _) = scheduled(&settings, &target.flow)?;
    let tp = parse_timeperiod(
        "timeperiod",
        &target.timeperiod,
        Some(graph.time_qualifier()),
    )?;
    let key = JobKey::new(graph.name(), graph.time_qualifier(), tp);
    let factory = backends::cluster_factory(&settings)?;
    let values = Arc::new(settings.values()?);
    let plan = backends::plan_store(&settings)?;
    let ttl = settings.lease_ttl();
    let store = plan.open()?;
    small_runtime()?.block_on(async {
        let failed = |e: flow_core::StoreError| CliError::failed(e.to_string());
        let lease = claim(&store, &key, "skip", ttl).await?;
        let result = async {
            let now = chrono::Utc::now();
            let mut job = store
                .create_job(&TimetableJob::embryo(&key, now))
                .await
                .map_err(failed)?;
            if job.state == JobState::Skipped {
                return Ok(false);
            }
            job.state = JobState::Skipped;
            job.not_before = None;
            job.log_event(now, &format!("skipped by {}@{}", user(), hostname()));
            store.save_job(&lease, &job).await.map_err(failed)?;
            Ok(true)
        }
        .await;
        let _ = store.release_lease(&lease).await;
        let changed = result?;
        outln!(
            "{}: state_skipped{}",
            key,
            if changed { "" } else { " already" }
        );
        // Its flow's unfinished steps are cancelled, as `flow cancel` does.
        let flow_key = FlowKey::new(graph.name(), tp);
        match store.get_flow(&flow_key).await.map_err(failed)? {
            Some(f) if !f.state.is_complete() => {}
            _ => return Ok(Exit::Success),
        }
        let owner = format!("flow-skip:{}:{}", hostname(), std::process::id());
        let request = CancelRequest {
            key: &flow_key,
            graph: Some(&graph),
            factory: &factory,
            values: &values,
            owner: &owner,
            ttl,
        };
        match cancel_flow(&store, request).await {
            Ok(outcome) => {
                for problem in &outcome.problems {
                    errln!("warning: {problem}");
                }
                if !outcome.canceled.is_empty() {
                    outln!("flow {flow_key}: canceled {}", outcome.canceled.join(", "));
                }
                Ok(Exit::Success)
            }
            Err(CancelError::NoRecord) => Ok(Exit::Success),
            Err(e @ CancelError::Held { .. }) => Err(CliError::bad_input(format!(
                "the Job is skipped, but its flow's steps were not cancelled: {e}"
            ))),
            Err(e) => Err(CliError::failed(e.to_string())),
        }
    })
}

pub fn reprocess(
    settings_path: Option<&Path>,
    target: &Target,
    cascade: bool,
) -> Result<Exit, CliError> {
    let settings = SettingsFile::load(settings_path)?;
    let (graph, _) = scheduled(&settings, &target.flow)?;
    let q = graph.time_qualifier();
    let tp = parse_timeperiod("timeperiod", &target.timeperiod, Some(q))?;
    let key = JobKey::new(graph.name(), q, tp);
    // Dependants are found by their Jobs in the store; the flows directory
    // adds those whose Jobs do not record their upstreams.
    let graphs = if cascade {
        flows_directory_graphs(&settings)
    } else {
        Vec::new()
    };
    let plan = backends::plan_store(&settings)?;
    if !plan.exists() {
        return Err(CliError::bad_input(format!(
            "no store at {}: no {key}",
            plan.location()
        )));
    }
    let ttl = settings.lease_ttl();
    let store = plan.open()?;
    small_runtime()?.block_on(async {
        let job = store
            .get_job(&key)
            .await
            .map_err(|e| CliError::failed(e.to_string()))?;
        match job {
            Some(job) if job.state.is_finished() => {}
            Some(job) => {
                return Err(CliError::bad_input(format!(
                    "{key} is {}: only a finished Job (processed, noop, skipped) is reprocessed",
                    job.state
                )))
            }
            None => return Err(CliError::bad_input(format!("there is no {key}"))),
        }
        let dependants = if cascade {
            cascade_of(store.as_ref(), &key, &graphs)
                .await
                .map_err(|e| CliError::failed(e.to_string()))?
        } else {
            Vec::new()
        };
        send_back(&store, &key, ttl).await?;
        outln!("{key}: back to state_embryo for a nominal run");
        for dependant in dependants {
            let k = dependant.key();
            send_back(&store, &k, ttl).await?;
            outln!("{k}: back to state_embryo (--cascade)");
        }
        Ok(Exit::Success)
    })
}

/// A finished Job back to `embryo`, its next run nominal, failures reset
/// (Synergy's `reprocess_job`).
async fn send_back(
    store: &Arc<dyn FlowStore>,
    key: &JobKey,
    ttl: std::time::Duration,
) -> Result<(), CliError> {
    let lease = claim(store, key, "reprocess", ttl).await?;
    let result = async {
        let Some(mut job) = store.get_job(key).await? else {
            return Ok(());
        };
        let now = chrono::Utc::now();
        job.state = JobState::Embryo;
        job.number_of_failures = 0;
        job.run_mode = Some(RunMode::Nominal);
        job.not_before = None;
        job.log_event(
            now,
            &format!("reprocess requested by {}@{}", user(), hostname()),
        );
        store.save_job(&lease, &job).await.map(|_| ())
    }
    .await;
    let _ = store.release_lease(&lease).await;
    result.map_err(|e| CliError::failed(e.to_string()))
}
