//! Shared pieces of the local cluster's tests: a `tracing` layer that
//! captures events with their span, contexts, script files and
//! process-group inspection.
#![allow(dead_code)]

use flow_cluster_local::{LocalCluster, LocalOptions};
use flow_core::{Cluster, ClusterError, ExecutionContext, Job, JobContext, Settings};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::subscriber::DefaultGuard;
use tracing::{Event, Instrument, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// The name of the span the tests run jobs in, standing in for the engine's
/// step span.
pub const STEP_SPAN: &str = "test_step";

/// How long a test waits for something that should happen promptly before
/// failing; generous, never asserted as a duration.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Captured {
    pub level: Level,
    pub message: String,
    /// Names of the spans the event was in, outermost first.
    pub spans: Vec<String>,
}

/// A layer that keeps every event.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<Captured>>>);

impl Capture {
    /// Captures the events of this thread until the guard is dropped. Tests
    /// use the current-thread runtime, so the job's events come here.
    pub fn install() -> (Capture, DefaultGuard) {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        let guard = tracing::subscriber::set_default(subscriber);
        (capture, guard)
    }

    pub fn events(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }

    /// Messages at `level`, in order.
    pub fn messages(&self, level: Level) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.level == level)
            .map(|e| e.message)
            .collect()
    }

    pub fn find(&self, needle: &str) -> Option<Captured> {
        self.events()
            .into_iter()
            .find(|e| e.message.contains(needle))
    }
}

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut visitor = MessageVisitor(String::new());
        event.record(&mut visitor);
        let spans = ctx
            .event_scope(event)
            .map(|scope| scope.from_root().map(|s| s.name().to_string()).collect())
            .unwrap_or_default();
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            message: visitor.0,
            spans,
        });
    }
}

pub fn context(settings: Settings) -> ExecutionContext {
    let timeperiod = "2026112800".parse().unwrap();
    ExecutionContext {
        flow_name: "test-flow".into(),
        timeperiod,
        start_timeperiod: timeperiod,
        end_timeperiod: "2026112900".parse().unwrap(),
        settings: Arc::new(settings),
        number_of_clusters: 1,
    }
}

/// A launched cluster working in `dir`, keeping its job directories in
/// `dir/.state`.
pub async fn cluster_in(dir: &Path, tweak: impl FnOnce(&mut LocalOptions)) -> LocalCluster {
    let mut options = LocalOptions {
        root: dir.to_path_buf(),
        work_dir: dir.to_path_buf(),
        state_dir: dir.join(".state"),
        ..LocalOptions::default()
    };
    tweak(&mut options);
    let cluster = LocalCluster::new("local-test", options);
    launch(&cluster).await.unwrap();
    cluster
}

/// Provisions and waits for `cluster`, as the engine launches one.
pub async fn launch(cluster: &dyn Cluster) -> Result<(), ClusterError> {
    cluster.provision().await?;
    cluster.wait_ready().await
}

/// The context of a job of step `s`, action `a`, attempt 1.
pub fn job_context<'a>(
    cancel: &'a CancellationToken,
    execution: &'a ExecutionContext,
) -> JobContext<'a> {
    JobContext {
        cancel,
        execution,
        step: "s",
        action: "a",
        attempt: 1,
    }
}

/// Prepares, submits and waits for `job` as the engine does (without
/// recording the handle anywhere).
pub async fn run_job(
    cluster: &dyn Cluster,
    job: &Job,
    execution: &ExecutionContext,
    cancel: &CancellationToken,
) -> Result<(), ClusterError> {
    let cx = job_context(cancel, execution);
    let prepared = cluster.prepare(job, &cx)?;
    let handle = cluster.submit(&prepared, job, &cx).await?;
    cluster.wait(&handle, &cx).await
}

/// Runs `job` inside a span named [`STEP_SPAN`].
pub async fn submit_in_span(
    cluster: &LocalCluster,
    job: &Job,
    execution: &ExecutionContext,
    cancel: &CancellationToken,
) -> Result<(), ClusterError> {
    run_job(cluster, job, execution, cancel)
        .instrument(tracing::info_span!(STEP_SPAN))
        .await
}

pub fn shell(command: &str) -> Job {
    Job::Shell {
        command: command.to_string(),
        env: Vec::new(),
    }
}

/// Writes an executable script.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Waits for `path` to appear (written by a job via a rename, so whole) and
/// returns its content.
pub async fn wait_for_file(path: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pids a job wrote as `$$ $!`: its shell (the group leader) and a
/// background child.
pub fn parse_pids(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// `(state, pgid)` of a process from /proc, None if it does not exist.
#[cfg(target_os = "linux")]
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parens.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// True while `pid` runs. A zombie is dead: this container's init may never
/// reap orphans.
pub fn alive(pid: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        matches!(proc_stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: signal 0 only checks for existence.
        unsafe { libc::kill(pid, 0) == 0 }
    }
}

/// The process group of `pid`.
pub fn pgid_of(pid: i32) -> i32 {
    // SAFETY: getpgid only reads.
    unsafe { libc::getpgid(pid) }
}

/// Live (non-zombie) members of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| {
                matches!(proc_stat(pid), Some((state, g)) if g == pgid && state != 'Z' && state != 'X')
            })
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: signal 0 only checks for existence.
        if unsafe { libc::killpg(pgid, 0) } == 0 {
            vec![pgid]
        } else {
            Vec::new()
        }
    }
}

/// Waits until nothing of group `pgid` and none of `pids` runs; fails the
/// test naming the survivors otherwise.
pub async fn assert_all_gone(pgid: i32, pids: &[i32]) {
    let start = Instant::now();
    loop {
        let members = group_members(pgid);
        let survivors: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if members.is_empty() && survivors.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "process group {pgid} still has {members:?}; still alive of {pids:?}: {survivors:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
