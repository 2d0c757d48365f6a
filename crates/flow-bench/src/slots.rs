//! `dataproc-slots-N`: N jobs at once on one Dataproc cluster with N slots
//! (`jobs_per_cluster`), against the Dataproc contract fake in this process,
//! both on one manual clock: what watching them costs in API requests per
//! tick, and how late each job's end is noticed. The figures are counts at
//! simulated instants (the fake computes every state from the clock), so
//! they are the same on any machine; the wall time is only the harness's.
//!
//! The jobs run 20 s, 30 s, ... (10 s apart), so their ends fall at every
//! phase of the polling: while the poller asks every second (the first
//! minute) and once it backs off to the 3 s cap, and some on a tick that
//! also asks about the cluster.

use crate::measure::BenchResult;
use crate::shape::Shape;
use crate::Row;
use contract_fakes::dataproc::{FakeDataproc, FakeOptions};
use flow_cloud::{Clock, JobLogs, ManualClock};
use flow_cluster_dataproc::DataprocClusterFactoryBuilder;
use flow_core::{Cluster, ExecutionContext, Job, JobContext, Settings, Timeperiod};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The requests that watch running jobs (the rest launch, submit, delete).
const POLL_METHODS: [&str; 3] = ["jobs.get", "jobs.list", "clusters.get"];

/// Measures `dataproc-slots-N` (N = `shape.len()`).
pub fn measure(shape: Shape) -> BenchResult<Row> {
    let jobs = shape.len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let figures = runtime.block_on(run(jobs))?;
    let mut row = Row::timed(&shape.to_string(), jobs, 1, started.elapsed());
    let per_tick = figures.requests as f64 / figures.ticks.max(1) as f64;
    let median = figures.delays[figures.delays.len() / 2];
    let max = figures.delays[figures.delays.len() - 1];
    row.note = Some(format!(
        "{per_tick:.2} req/tick, notice p50 {:.2} s max {:.2} s",
        median.as_secs_f64(),
        max.as_secs_f64()
    ));
    row.detail("simulated_s", figures.span.as_secs_f64());
    row.detail("poll_requests", figures.requests);
    row.detail("ticks", figures.ticks);
    row.detail("requests_per_tick", per_tick);
    row.detail("max_requests_per_tick", figures.max_per_tick);
    row.detail(
        "requests_per_s",
        figures.requests as f64 / figures.span.as_secs_f64(),
    );
    row.detail("notice_p50_ms", median.as_secs_f64() * 1e3);
    row.detail("notice_max_ms", max.as_secs_f64() * 1e3);
    row.detail(
        "requests_by_method",
        serde_json::to_value(&figures.by_method)?,
    );
    Ok(row)
}

struct Figures {
    /// Status requests (jobs and cluster) while the jobs ran.
    requests: u64,
    /// Instants at which the poller asked.
    ticks: u64,
    max_per_tick: u64,
    /// From the jobs' submission to the last one noticed.
    span: Duration,
    /// How late each job's end was noticed, sorted.
    delays: Vec<Duration>,
    by_method: std::collections::BTreeMap<String, u64>,
}

async fn run(jobs: usize) -> BenchResult<Figures> {
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let mut options = FakeOptions::new(shared.clone());
    options.job_pending = Duration::ZERO;
    // The client's token cache runs on wall time while the fake's clock
    // moves by minutes: tokens outlive the run.
    options.token_lifetime = Duration::from_secs(365 * 86400);
    let fake = FakeDataproc::start(options, 0).await?;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("key.json");
    fake.write_key_file(&key)?;
    let factory = DataprocClusterFactoryBuilder::new("bench", "europe-west1")
        .with_endpoint(fake.url())
        .with_endpoint_auth(true)
        .with_credentials_file(&key)
        .with_code_bucket("code")
        .with_jobs_per_cluster(NonZeroUsize::new(jobs).ok_or("no jobs")?)
        .with_job_logs(JobLogs {
            enabled: false,
            ..JobLogs::default()
        })
        .with_clock(shared)
        .build()?;
    let timeperiod: Timeperiod = "2026112800".parse()?;
    let context = ExecutionContext {
        flow_name: "slots".into(),
        timeperiod,
        start_timeperiod: timeperiod,
        end_timeperiod: timeperiod,
        settings: Arc::new(Settings::new()),
        number_of_clusters: 1,
    };
    let cluster = Arc::new(factory.cluster("dataproc-0", &context));
    if cluster.slots() != jobs {
        return Err(format!("{} slots, not {jobs}", cluster.slots()).into());
    }
    cluster.provision().await?;
    let ready = {
        let cluster = cluster.clone();
        tokio::spawn(async move { cluster.wait_ready().await })
    };
    drive(&clock, ready, |_| {}).await??;

    let cancel = CancellationToken::new();
    let lengths: Vec<Duration> = (0..jobs)
        .map(|i| Duration::from_secs(20 + 10 * i as u64))
        .collect();
    let mut handles = Vec::new();
    for (i, length) in lengths.iter().enumerate() {
        let job = Job::Spark {
            application: "jobs/count.py".into(),
            main_class: None,
            conf: [("fake.run_for".to_string(), format!("{}s", length.as_secs()))]
                .into_iter()
                .collect(),
            secret_conf: vec![],
            args: vec![],
        };
        let step = format!("s{i}");
        let cx = JobContext {
            cancel: &cancel,
            execution: &context,
            step: &step,
            action: "spark",
            attempt: 1,
        };
        let handle = cluster.prepare(&job, &cx)?;
        let handle = cluster.submit(&handle, &job, &cx).await?;
        handles.push((step.clone(), handle));
    }
    let submitted = clock.now();
    let polled = || -> u64 { POLL_METHODS.iter().map(|m| fake.count(m)).sum() };
    let before = polled();
    let waits = {
        let (cluster, context, clock) = (cluster.clone(), context.clone(), clock.clone());
        tokio::spawn(async move {
            let waits = handles.into_iter().map(|(step, handle)| {
                let (cluster, context, clock) = (cluster.clone(), context.clone(), clock.clone());
                async move {
                    let cancel = CancellationToken::new();
                    let cx = JobContext {
                        cancel: &cancel,
                        execution: &context,
                        step: &step,
                        action: "spark",
                        attempt: 1,
                    };
                    cluster.wait(&handle, &cx).await.map(|()| clock.now())
                }
            });
            futures_join_all(waits).await
        })
    };
    let mut per_tick = Vec::new();
    let mut last = before;
    let noticed = drive(&clock, waits, |_| {
        let now = polled();
        if now > last {
            per_tick.push(now - last);
        }
        last = now;
    })
    .await?;
    let requests = polled() - before;
    let mut delays = Vec::new();
    let mut end = submitted;
    for (noticed, length) in noticed.into_iter().zip(&lengths) {
        let noticed = noticed?;
        delays.push(noticed.saturating_sub(submitted + *length));
        end = end.max(noticed);
    }
    delays.sort();
    // Deleting waits on the operation, on the manual clock: driven too.
    let deleted = {
        let cluster = cluster.clone();
        tokio::spawn(async move { cluster.terminate().await })
    };
    drive(&clock, deleted, |_| {}).await??;
    Ok(Figures {
        requests,
        ticks: per_tick.len() as u64,
        max_per_tick: per_tick.iter().copied().max().unwrap_or(0),
        span: end - submitted,
        delays,
        by_method: fake.requests(),
    })
}

/// Awaits every future, in order (the harness needs no futures crate).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.expect("a wait panicked"));
    }
    out
}

/// Runs `task` to its end, moving the clock to the next pending sleep's
/// deadline whenever everything under test sleeps; `after_tick` runs once
/// everything sleeps again after each move (the requests of that instant
/// are done).
async fn drive<T: Send + 'static>(
    clock: &ManualClock,
    mut task: tokio::task::JoinHandle<T>,
    mut after_tick: impl FnMut(Duration),
) -> BenchResult<T> {
    loop {
        tokio::select! {
            out = &mut task => return Ok(out?),
            _ = clock.wait_for_sleepers(1) => {
                after_tick(clock.now());
                if let Some(deadline) = clock.next_deadline() {
                    clock.advance(deadline.saturating_sub(clock.now()));
                }
            }
        }
    }
}
