//! [`LocalCluster`]: jobs as process groups on this machine, each with a
//! job directory that outlives the engine (see `jobdir.rs`).

use crate::command::display_command;
use crate::filesystem::LocalFilesystem;
use crate::jobdir::{self, Identity, JobDir, Liveness};
use crate::output::{Stream, Tail};
use crate::process::{self, lock, signal_group, Pgid, ProcessGroup};
use crate::LocalOptions;
use async_trait::async_trait;
use flow_core::{
    Cluster, ClusterError, ClusterHandle, Filesystem, Job, JobContext, JobHandle, JobStatus,
    Settings,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::{Child, Command};

pub(crate) const KIND: &str = "local";

/// How often a running job's output files are read into the log.
const OUTPUT_TICK: Duration = Duration::from_millis(100);

/// Polling an adopted job (not this process's child) starts here and backs
/// off to [`ADOPTED_POLL_MAX`].
const ADOPTED_POLL_MIN: Duration = Duration::from_millis(100);
const ADOPTED_POLL_MAX: Duration = Duration::from_secs(1);

/// Marks a cluster directory whose cluster was terminated: it is not
/// adopted again.
const TERMINATED_MARK: &str = "terminated";

/// A cluster that runs jobs as local processes and stores files on the
/// local filesystem. Cheap: provisioning makes a directory, nothing runs
/// until a job is submitted.
#[derive(Debug)]
pub struct LocalCluster {
    name: String,
    options: Arc<LocalOptions>,
    filesystem: LocalFilesystem,
    /// This cluster's directory under the state directory: its jobs'
    /// directories live in `jobs/`. Replaced by `adopt`.
    dir: Mutex<PathBuf>,
    /// Process groups of running jobs this value started, for `terminate`.
    jobs: Arc<Mutex<BTreeSet<Pgid>>>,
    /// Jobs submitted here and not yet waited for, by job directory.
    started: Mutex<HashMap<PathBuf, RunningJob>>,
}

/// A job this process started: its wrapper's child handle and group.
#[derive(Debug)]
struct RunningJob {
    group: ProcessGroup,
    child: Child,
}

impl LocalCluster {
    /// A cluster called `name` (e.g. `local-0`) run as `options` say.
    pub fn new(name: impl Into<String>, options: LocalOptions) -> Self {
        Self::with_shared_options(name, Arc::new(options))
    }

    pub(crate) fn with_shared_options(name: impl Into<String>, options: Arc<LocalOptions>) -> Self {
        let name = name.into();
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
        let dir = options.state_dir.join("clusters").join(format!(
            "{}-{stamp}-{:08x}",
            safe_component(&name),
            fastrand::u32(..)
        ));
        LocalCluster {
            filesystem: LocalFilesystem::new(options.root.clone()),
            name,
            options,
            dir: Mutex::new(dir),
            jobs: Arc::default(),
            started: Mutex::default(),
        }
    }

    /// How it runs jobs and where its files are.
    pub fn options(&self) -> &LocalOptions {
        &self.options
    }

    /// The directory holding this cluster's job directories.
    pub fn directory(&self) -> PathBuf {
        self.dir
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn job_failed(&self, job: &'static str, message: impl Into<String>) -> ClusterError {
        ClusterError::JobFailed {
            cluster: self.name.clone(),
            job,
            message: message.into(),
        }
    }

    fn cancelled(&self, job: &'static str) -> ClusterError {
        ClusterError::Cancelled {
            cluster: self.name.clone(),
            job,
        }
    }

    fn bad_handle(&self, handle: &JobHandle, message: impl Into<String>) -> ClusterError {
        ClusterError::BadHandle {
            cluster: self.name.clone(),
            handle: handle.to_string(),
            message: message.into(),
        }
    }

    /// The job directory of `handle`, checked to be a local job's.
    fn job_dir(&self, handle: &JobHandle) -> Result<JobDir, ClusterError> {
        if handle.kind != KIND {
            return Err(self.bad_handle(handle, "not a local job"));
        }
        let dir = handle
            .id("dir")
            .ok_or_else(|| self.bad_handle(handle, "it has no job directory"))?;
        Ok(JobDir::new(PathBuf::from(dir)))
    }

    /// The job's process as the handle recorded it, when it has one.
    fn handle_identity(&self, handle: &JobHandle) -> Result<Option<Identity>, ClusterError> {
        let (Some(pgid), Some(start)) = (handle.id("pgid"), handle.id("start_time")) else {
            return Ok(None);
        };
        let pid = pgid
            .parse()
            .map_err(|_| self.bad_handle(handle, format!("pgid '{pgid}' is not a number")))?;
        let start_time = start.parse().map_err(|_| {
            self.bad_handle(handle, format!("start_time '{start}' is not a number"))
        })?;
        Ok(Some(Identity {
            pid,
            start_time,
            boot_id: handle.id("boot_id").unwrap_or("unknown").to_string(),
        }))
    }

    /// What the job's directory and the process table say about it, checked
    /// against the identity the handle recorded: a handle whose process is
    /// not the one that wrote the directory is never taken for the job.
    async fn job_status(&self, handle: &JobHandle) -> Result<JobStatus, ClusterError> {
        let dir = self.job_dir(handle)?;
        let recorded = self.handle_identity(handle)?;
        let cluster = self.name.clone();
        blocking(&cluster, "reading the job's status", move || {
            if let Some(code) = dir.exit_code()? {
                return Ok(jobdir::status_of_exit(code));
            }
            let written = dir.identity()?;
            let identity = match (recorded, written) {
                (None, None) => return Ok(JobStatus::NotSubmitted),
                // A start time of 0: the wrapper could not read its own.
                (Some(r), Some(w))
                    if r.pid != w.pid || (w.start_time != 0 && r.start_time != w.start_time) =>
                {
                    return Ok(JobStatus::Lost {
                        reason: format!(
                            "the handle names process {} (started at tick {}) but the job directory {} was written by process {} (tick {})",
                            r.pid,
                            r.start_time,
                            dir.path().display(),
                            w.pid,
                            w.start_time
                        ),
                    })
                }
                (Some(r), _) => r,
                (None, Some(w)) => w,
            };
            Ok(match jobdir::liveness(&identity) {
                Liveness::Alive => JobStatus::Running,
                Liveness::NotTheJob(reason) => JobStatus::Lost { reason },
                Liveness::Gone => match dir.exit_code()? {
                    Some(code) => jobdir::status_of_exit(code),
                    None => JobStatus::Lost {
                        reason: format!(
                            "its process {} ended without recording an exit status",
                            identity.pid
                        ),
                    },
                },
            })
        })
        .await
    }

    /// Follows a job this process started to its end, logging its output,
    /// and stops its whole process group if `cx.cancel` fires.
    async fn supervise(
        &self,
        kind: &'static str,
        dir: &JobDir,
        mut running: RunningJob,
        cx: &JobContext<'_>,
    ) -> Result<(), ClusterError> {
        let settings: &Settings = &cx.execution.settings;
        let pgid = running.group.pgid();
        let mut out = Tail::new(dir.stdout(), Stream::Stdout);
        let mut err = Tail::new(dir.stderr(), Stream::Stderr);
        let mut tick = tokio::time::interval(OUTPUT_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cancelled = false;
        let status = loop {
            tokio::select! {
                status = running.child.wait() => break status,
                () = cx.cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    break self.stop(&mut running).await;
                }
                _ = tick.tick() => {
                    out.poll(settings).await;
                    err.poll(settings).await;
                }
            }
        };
        // The leader has been reaped: nothing of the job may stay behind.
        remove_secret_file(dir).await;
        match running.group.finish() {
            Ok(true) => {
                if !cancelled {
                    tracing::warn!(
                        "killed processes the job left running in its process group {pgid}"
                    );
                }
                if let Err(e) = process::wait_gone(pgid).await {
                    tracing::warn!("{e}");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot kill what is left of process group {pgid}: {e}"),
        }
        out.finish(settings).await;
        err.finish(settings).await;
        let status = match status {
            Ok(status) => status,
            Err(e) if cancelled => {
                tracing::warn!("cannot wait for the cancelled job: {e}");
                return Err(self.cancelled(kind));
            }
            Err(e) => return Err(self.job_failed(kind, format!("cannot wait for the job: {e}"))),
        };
        if cancelled {
            tracing::warn!("{}", describe(status));
            return Err(self.cancelled(kind));
        }
        self.outcome(kind, wrapper_status(status))
    }

    /// Logs how the job ended and turns it into the result of `wait`.
    fn outcome(&self, kind: &'static str, status: JobStatus) -> Result<(), ClusterError> {
        match status {
            JobStatus::Succeeded => {
                tracing::info!("exit code 0");
                Ok(())
            }
            JobStatus::Failed { message } => {
                if message.starts_with("exit code") {
                    tracing::info!("{message}");
                } else {
                    tracing::warn!("{message}");
                }
                Err(self.job_failed(kind, message))
            }
            JobStatus::Cancelled => Err(self.cancelled(kind)),
            JobStatus::Lost { reason } => {
                tracing::warn!("the job is lost: {reason}");
                Err(self.job_failed(kind, format!("the job is lost: {reason}")))
            }
            JobStatus::NotSubmitted | JobStatus::Running => Err(self.job_failed(
                kind,
                "internal error: asked for the outcome of a job that has not ended",
            )),
        }
    }

    /// Follows a job another engine started (found through its handle) to
    /// its end, reading its output files into the log.
    async fn follow(
        &self,
        kind: &'static str,
        handle: &JobHandle,
        dir: &JobDir,
        cx: &JobContext<'_>,
    ) -> Result<(), ClusterError> {
        let settings = &cx.execution.settings;
        tracing::info!(
            "following {handle} started by another engine; its output from the start follows"
        );
        let mut out = Tail::new(dir.stdout(), Stream::Stdout);
        let mut err = Tail::new(dir.stderr(), Stream::Stderr);
        let mut delay = ADOPTED_POLL_MIN;
        let status = loop {
            out.poll(settings).await;
            err.poll(settings).await;
            let status = self.job_status(handle).await?;
            match status {
                JobStatus::Running => {}
                JobStatus::NotSubmitted => {
                    return Err(self.job_failed(kind, "the job was never started"))
                }
                other => break other,
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cx.cancel.cancelled() => {
                    self.cancel(handle).await?;
                    out.finish(settings).await;
                    err.finish(settings).await;
                    return Err(self.cancelled(kind));
                }
            }
            delay = (delay * 2).min(ADOPTED_POLL_MAX);
        };
        // Its leader ended (or is lost): nothing it started may stay behind,
        // least of all beside a retry.
        self.cancel(handle).await?;
        remove_secret_file(dir).await;
        out.finish(settings).await;
        err.finish(settings).await;
        self.outcome(kind, status)
    }

    /// Ends the job's whole process group (SIGTERM, the grace period,
    /// SIGKILL, then until `/proc` shows no member); returns the leader's
    /// status once it is reaped. The leader, a zombie until reaped, keeps
    /// the group id reserved meanwhile.
    async fn stop(&self, running: &mut RunningJob) -> io::Result<ExitStatus> {
        let pgid = running.group.pgid();
        tracing::info!("cancelled: ending process group {pgid}");
        if let Err(e) = process::end_group(pgid, self.options.kill_grace).await {
            tracing::warn!("cannot end process group {pgid}: {e}");
        }
        running.child.wait().await
    }

    /// Ends what is left of the job `identity` names (another engine's
    /// job, or one whose wrapper is gone), if its group is still the
    /// job's: SIGTERM, grace, SIGKILL, then until no member is left.
    async fn end_job_group(&self, identity: &Identity) -> io::Result<()> {
        if !jobdir::group_is_jobs(identity) {
            return Ok(());
        }
        process::end_group(identity.pid, self.options.kill_grace).await
    }

    /// Ends (as `cancel` does) every job of the cluster directory `dir`
    /// whose process group still has members. Returns the failures.
    async fn kill_jobs_in(&self, dir: PathBuf) -> Vec<String> {
        let cluster = self.name.clone();
        let scan = blocking(&cluster, "scanning the job directories", move || {
            let mut live = Vec::new();
            let entries = match std::fs::read_dir(dir.join("jobs")) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(live),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let job = JobDir::new(entry?.path());
                // A job that ended may have left processes in its group.
                if let Some(identity) = job.identity()? {
                    if jobdir::group_is_jobs(&identity)
                        && !process::live_members(identity.pid).is_empty()
                    {
                        live.push((identity, job.path().to_path_buf()));
                    }
                }
            }
            Ok(live)
        })
        .await;
        let live = match scan {
            Ok(live) => live,
            Err(e) => return vec![e.to_string()],
        };
        let ends = live.into_iter().map(|(identity, path)| async move {
            let pgid = identity.pid;
            tracing::warn!(
                cluster = %self.name,
                "ending process group {pgid} of the job in {} still running at terminate",
                path.display()
            );
            self.end_job_group(&identity)
                .await
                .err()
                .map(|e| format!("cannot end process group {pgid}: {e}"))
        });
        futures_util::future::join_all(ends)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// Runs blocking file work off the runtime's threads, naming the cluster
/// and what it did in errors.
async fn blocking<T: Send + 'static>(
    cluster: &str,
    operation: &'static str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, ClusterError> {
    let backend = |message: String| ClusterError::Backend {
        cluster: cluster.to_string(),
        operation,
        message,
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| backend(format!("the worker thread failed: {e}")))?
        .map_err(|e| backend(e.to_string()))
}

#[async_trait]
impl Cluster for LocalCluster {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    /// Makes the cluster's directory under the state directory.
    async fn provision(&self) -> Result<ClusterHandle, ClusterError> {
        let dir = self.directory();
        let create = dir.join("jobs");
        blocking(&self.name, "creating the cluster directory", move || {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&create)
        })
        .await
        .map_err(|e| ClusterError::Launch {
            cluster: self.name.clone(),
            message: e.to_string(),
            transient: false,
        })?;
        Ok(self.handle(&dir))
    }

    async fn wait_ready(&self) -> Result<(), ClusterError> {
        let work_dir = &self.options.work_dir;
        let problem = match tokio::fs::metadata(work_dir).await {
            Ok(meta) if meta.is_dir() => None,
            Ok(_) => Some("is not a directory".to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Some("does not exist".to_string()),
            Err(e) => Some(format!("cannot be read: {e}")),
        };
        if let Some(problem) = problem {
            return Err(ClusterError::Launch {
                cluster: self.name.clone(),
                message: format!("the work directory {} {problem}", work_dir.display()),
                transient: false,
            });
        }
        tracing::info!(
            cluster = %self.name,
            work_dir = %work_dir.display(),
            root = %self.options.root.display(),
            "local cluster ready"
        );
        Ok(())
    }

    /// Usable when its directory is on this host and was not terminated.
    async fn adopt(&self, handle: &ClusterHandle) -> Result<bool, ClusterError> {
        if handle.kind != KIND {
            return Ok(false);
        }
        if handle.details.get("host").map(String::as_str) != Some(hostname().as_str()) {
            return Ok(false);
        }
        let Some(dir) = handle.details.get("dir").map(PathBuf::from) else {
            return Ok(false);
        };
        let usable = dir.join("jobs").is_dir() && !dir.join(TERMINATED_MARK).exists();
        if usable {
            *self
                .dir
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = dir;
        }
        Ok(usable)
    }

    /// A directory for the job under the cluster's; nothing is created yet.
    fn prepare(&self, job: &Job, cx: &JobContext<'_>) -> Result<JobHandle, ClusterError> {
        let name = format!(
            "{}.{}.{}.{:08x}",
            safe_component(cx.step),
            safe_component(cx.action),
            cx.attempt,
            fastrand::u32(..)
        );
        let dir = self.directory().join("jobs").join(name);
        Ok(JobHandle::new(
            KIND,
            self.name.clone(),
            [
                ("dir", dir.to_string_lossy().into_owned()),
                ("job", job.kind().to_string()),
            ],
        ))
    }

    async fn submit(
        &self,
        handle: &JobHandle,
        job: &Job,
        cx: &JobContext<'_>,
    ) -> Result<JobHandle, ClusterError> {
        let kind = job.kind();
        if cx.cancel.is_cancelled() {
            return Err(self.cancelled(kind));
        }
        let dir = self.job_dir(handle)?;
        let (program, mut args) = self.command_line(job).await?;
        let to_create = dir.clone();
        blocking(&self.name, "creating the job directory", move || {
            to_create.create()
        })
        .await?;
        // Secret entries go into an owner-only file in the (owner-only) job
        // directory, passed by path, never into argv; removed once the job
        // is seen to end.
        if let Some(file) = job.secret_file() {
            let path = secret_file(&dir);
            let (to_write, contents) = (path.clone(), file.contents.clone());
            blocking(&self.name, "writing the job's secret file", move || {
                write_private(&to_write, contents.expose())
            })
            .await?;
            args.splice(
                0..0,
                [file.flag.to_string(), path.to_string_lossy().into_owned()],
            );
        }
        tracing::info!(
            "running: {}",
            display_command(&program, &args, &cx.execution.settings)
        );
        let mut command = self.command(dir.path(), &program, &args);
        // Secret values a shell line refers to, as environment variables.
        command.envs(job.secret_env().iter().map(|(k, v)| (k, v.expose())));
        let child = match spawn(&mut command).await {
            Ok(child) => child,
            Err(e) => return Err(self.job_failed(kind, self.start_error(&program, &e).await)),
        };
        let Some(pgid) = child.id().and_then(|pid| Pgid::try_from(pid).ok()) else {
            // Not reaped yet, so this cannot happen.
            return Err(self.job_failed(kind, "the job's process id is not available"));
        };
        // No await between spawn and here: the group is registered from its
        // first instant (for `kill_all_jobs` and `terminate`).
        let group = ProcessGroup::register(pgid, self.jobs.clone());
        let start_time = jobdir::start_time(pgid).unwrap_or(0);
        let mut handle = handle.clone();
        handle.ids.insert("pgid".into(), pgid.to_string());
        handle
            .ids
            .insert("start_time".into(), start_time.to_string());
        handle.ids.insert("boot_id".into(), jobdir::boot_id());
        lock_started(&self.started).insert(dir.path().to_path_buf(), RunningJob { group, child });
        Ok(handle)
    }

    async fn wait(&self, handle: &JobHandle, cx: &JobContext<'_>) -> Result<(), ClusterError> {
        let dir = self.job_dir(handle)?;
        let kind = job_kind(handle);
        let running = lock_started(&self.started).remove(dir.path());
        match running {
            Some(running) => self.supervise(kind, &dir, running, cx).await,
            None => self.follow(kind, handle, &dir, cx).await,
        }
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, ClusterError> {
        self.job_status(handle).await
    }

    /// Ends the job's whole process group and returns once `/proc` shows
    /// no member of it: SIGTERM, `kill_grace`, SIGKILL. For a job another
    /// engine started (or whose wrapper died) too, as long as the group is
    /// still the job's; a finished job's leftovers are ended the same way.
    async fn cancel(&self, handle: &JobHandle) -> Result<(), ClusterError> {
        let kind = job_kind(handle);
        let dir = self.job_dir(handle)?;
        let started = lock_started(&self.started).remove(dir.path());
        if let Some(mut running) = started {
            let _ = self.stop(&mut running).await;
            let _ = running.group.finish();
            return Ok(());
        }
        let identity = match self.handle_identity(handle)? {
            Some(identity) => identity,
            None => {
                let reader = dir.clone();
                match blocking(&self.name, "reading the job's pid", move || {
                    reader.identity()
                })
                .await?
                {
                    Some(identity) => identity,
                    // Never started.
                    None => return Ok(()),
                }
            }
        };
        tracing::info!("cancelling {handle}");
        self.end_job_group(&identity).await.map_err(|e| {
            self.job_failed(
                kind,
                format!("cannot end process group {}: {e}", identity.pid),
            )
        })
    }

    /// Kills every job of this cluster still running (those this value
    /// started, and, for an adopted cluster, those of the run that started
    /// it), and marks the directory terminated.
    async fn terminate(&self) -> Result<(), ClusterError> {
        let leftovers: Vec<Pgid> = lock(&self.jobs).iter().copied().collect();
        let mut failures = Vec::new();
        for pgid in leftovers {
            match signal_group(pgid, libc::SIGKILL) {
                Ok(true) => {
                    tracing::warn!(
                        cluster = %self.name,
                        "killed process group {pgid} of a job still running at terminate"
                    );
                    if let Err(e) = process::wait_gone(pgid).await {
                        failures.push(e.to_string());
                    }
                }
                Ok(false) => {}
                Err(e) => failures.push(format!("cannot kill process group {pgid}: {e}")),
            }
        }
        let dir = self.directory();
        failures.extend(self.kill_jobs_in(dir.clone()).await);
        if dir.is_dir() {
            if let Err(e) = std::fs::write(dir.join(TERMINATED_MARK), b"") {
                failures.push(format!("cannot mark {} terminated: {e}", dir.display()));
            }
        }
        if !failures.is_empty() {
            return Err(ClusterError::Terminate {
                cluster: self.name.clone(),
                message: failures.join("; "),
            });
        }
        tracing::info!(cluster = %self.name, "local cluster terminated");
        Ok(())
    }

    fn filesystem(&self) -> &dyn Filesystem {
        &self.filesystem
    }

    fn slots(&self) -> usize {
        self.options.jobs_per_cluster.get()
    }

    /// This machine: no instances, nothing billed.
    fn instances(&self) -> Option<Vec<flow_core::InstanceGroup>> {
        Some(Vec::new())
    }
}

impl LocalCluster {
    fn handle(&self, dir: &Path) -> ClusterHandle {
        ClusterHandle {
            kind: KIND.to_string(),
            name: self.name.clone(),
            backend_id: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            reused: false,
            details: BTreeMap::from([
                ("dir".to_string(), dir.to_string_lossy().into_owned()),
                ("host".to_string(), hostname()),
            ]),
        }
    }
}

fn lock_started(
    started: &Mutex<HashMap<PathBuf, RunningJob>>,
) -> std::sync::MutexGuard<'_, HashMap<PathBuf, RunningJob>> {
    started
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The job's kind as `prepare` recorded it, for messages.
fn job_kind(handle: &JobHandle) -> &'static str {
    match handle.id("job") {
        Some("shell") => "shell",
        Some("spark") => "spark",
        Some("pig") => "pig",
        Some("hadoop") => "hadoop",
        _ => "local",
    }
}

/// This machine's name, to keep a cluster directory to its host.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// `name` made safe as one path component: anything but letters, digits,
/// `_` and `-` becomes `_`.
fn safe_component(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if safe.is_empty() {
        "_".to_string()
    } else {
        safe
    }
}

/// The wrapper's exit as the job's status: it exits with the job's code.
fn wrapper_status(status: ExitStatus) -> JobStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => jobdir::status_of_exit(code),
        (None, Some(signal)) => JobStatus::Failed {
            message: format!("killed by signal {signal}"),
        },
        _ => JobStatus::Failed {
            message: format!("ended with {status}"),
        },
    }
}

fn describe(status: ExitStatus) -> String {
    match wrapper_status(status) {
        JobStatus::Succeeded => "exit code 0".to_string(),
        JobStatus::Failed { message } => message,
        other => other.to_string(),
    }
}

/// Where a job's secret file goes: in its job directory.
fn secret_file(dir: &JobDir) -> PathBuf {
    dir.path().join("secrets")
}

/// Writes `contents` to `path`, readable only by its owner (0600).
fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

/// Removes the job's secret file once the job has ended (if it had one).
async fn remove_secret_file(dir: &JobDir) {
    let path = secret_file(dir);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            "cannot remove the job's secret file {}: {e}",
            path.display()
        ),
    }
}

/// Starts `command`, retrying while the program is busy being written: a
/// script just written by this process can be briefly held open by another
/// thread's fork (ETXTBSY).
async fn spawn(command: &mut Command) -> io::Result<Child> {
    let mut attempt = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            other => return other,
        }
    }
}
