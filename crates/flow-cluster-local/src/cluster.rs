//! [`LocalCluster`]: jobs as process groups on this machine.

use crate::filesystem::LocalFilesystem;
use crate::output::{forward_lines, Stream};
use crate::process::{lock, Pgid, ProcessGroup};
use crate::LocalOptions;
use async_trait::async_trait;
use flow_core::{Cluster, ClusterError, Filesystem, Job, JobContext, Settings};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::{pin, Pin};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::{Child, Command};

pub(crate) const KIND: &str = "local";

/// The shell for [`Job::Shell`]; an absolute path so a `PATH` in
/// [`LocalOptions::env`] cannot take it away.
const SHELL: &str = "/bin/sh";

/// A cluster that runs jobs as local processes and stores files on the
/// local filesystem. Cheap: launching checks the work directory, nothing is
/// started until a job is submitted.
#[derive(Debug)]
pub struct LocalCluster {
    name: String,
    options: Arc<LocalOptions>,
    filesystem: LocalFilesystem,
    /// Process groups of this cluster's running jobs, for `terminate`.
    jobs: Arc<Mutex<BTreeSet<Pgid>>>,
}

/// An external program a job kind needs, and how to tell the user to get it.
struct Tool<'a> {
    name: &'static str,
    product: &'static str,
    option: &'static str,
    configured: Option<&'a Path>,
}

/// A job's child process with its group guard. The guard is the first
/// field so that, when dropped, it kills the group before the `Child` handle
/// goes away.
struct RunningJob {
    group: ProcessGroup,
    child: Child,
}

impl LocalCluster {
    pub fn new(name: impl Into<String>, options: LocalOptions) -> Self {
        Self::with_shared_options(name, Arc::new(options))
    }

    pub(crate) fn with_shared_options(name: impl Into<String>, options: Arc<LocalOptions>) -> Self {
        LocalCluster {
            name: name.into(),
            filesystem: LocalFilesystem::new(options.root.clone()),
            options,
            jobs: Arc::default(),
        }
    }

    pub fn options(&self) -> &LocalOptions {
        &self.options
    }

    fn job_failed(&self, job: &Job, message: impl Into<String>) -> ClusterError {
        ClusterError::JobFailed {
            cluster: self.name.clone(),
            job: job.kind(),
            message: message.into(),
        }
    }

    fn cancelled(&self, job: &Job) -> ClusterError {
        ClusterError::Cancelled {
            cluster: self.name.clone(),
            job: job.kind(),
        }
    }

    /// The program to run for `job` and its arguments.
    async fn command_line(&self, job: &Job) -> Result<(PathBuf, Vec<String>), ClusterError> {
        let tool = match job {
            Job::Shell { .. } => return Ok((PathBuf::from(SHELL), job_args(job))),
            Job::Spark { .. } => Tool {
                name: "spark-submit",
                product: "Spark",
                option: "spark_submit",
                configured: self.options.spark_submit.as_deref(),
            },
            Job::Pig { .. } => Tool {
                name: "pig",
                product: "Pig",
                option: "pig",
                configured: self.options.pig.as_deref(),
            },
            Job::HadoopJar { .. } => Tool {
                name: "hadoop",
                product: "Hadoop",
                option: "hadoop",
                configured: self.options.hadoop.as_deref(),
            },
        };
        let program = self
            .find_tool(&tool)
            .await
            .map_err(|message| self.job_failed(job, message))?;
        Ok((program, job_args(job)))
    }

    /// The configured program, else the one on `PATH`; the error tells the
    /// user how to fix it.
    async fn find_tool(&self, tool: &Tool<'_>) -> Result<PathBuf, String> {
        let Tool {
            name,
            product,
            option,
            configured,
        } = *tool;
        let search_path = self.search_path();
        match configured {
            // A bare name like `spark-submit-3.5` is looked up on PATH.
            Some(bare) if bare.components().count() == 1 && !bare.is_absolute() => {
                find_on_path(bare, search_path.as_deref()).await.ok_or_else(|| {
                    format!(
                        "{name} not found: `{}` (from `{option}` in the local cluster options) is not on PATH; install {product} or set `{option}` to its path",
                        bare.display()
                    )
                })
            }
            Some(path) => {
                // Relative to the engine's directory, not the job's.
                let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
                if is_executable_file(&path).await {
                    Ok(path)
                } else {
                    Err(format!(
                        "{name} not found: {} (from `{option}` in the local cluster options) is not an executable file; install {product} or fix `{option}`",
                        path.display()
                    ))
                }
            }
            None => find_on_path(Path::new(name), search_path.as_deref())
                .await
                .ok_or_else(|| {
                    format!(
                        "{name} not found: install {product} or set `{option}` in the local cluster options (or put {name} on PATH)"
                    )
                }),
        }
    }

    /// The `PATH` jobs see: the options' own, else the engine's.
    fn search_path(&self) -> Option<OsString> {
        self.options
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| OsString::from(v))
            .or_else(|| std::env::var_os("PATH"))
    }

    fn command(&self, program: &Path, args: &[String]) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(&self.options.work_dir)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so cancelling reaches everything it starts.
            .process_group(0);
        command
    }

    async fn start_error(&self, program: &Path, e: &io::Error) -> String {
        let work_dir = &self.options.work_dir;
        if e.kind() == io::ErrorKind::NotFound && !is_dir(work_dir).await {
            format!(
                "cannot start {}: the work directory {} does not exist",
                program.display(),
                work_dir.display()
            )
        } else {
            format!("cannot start {}: {e}", program.display())
        }
    }

    /// Runs the started job to its end, logging its output, and stops its
    /// whole process group if `cx.cancel` fires.
    async fn supervise(
        &self,
        job: &Job,
        mut running: RunningJob,
        cx: &JobContext<'_>,
    ) -> Result<(), ClusterError> {
        let settings: &Settings = &cx.execution.settings;
        let pgid = running.group.pgid();
        let stdout = running.child.stdout.take();
        let stderr = running.child.stderr.take();
        // Polled from this future, so the lines keep the caller's span.
        let mut output = pin!(async {
            tokio::join!(
                forward_lines(stdout, Stream::Stdout, settings),
                forward_lines(stderr, Stream::Stderr, settings),
            );
        });
        let mut output_done = false;

        let cancelled;
        let status = tokio::select! {
            status = wait_draining(&mut running.child, &mut output, &mut output_done) => {
                cancelled = false;
                status
            }
            () = cx.cancel.cancelled() => {
                cancelled = true;
                self.stop(&mut running, &mut output, &mut output_done).await
            }
        };

        // The leader has been reaped: nothing of the job may stay behind.
        match running.group.finish() {
            Ok(true) if !cancelled => {
                tracing::warn!("killed processes the job left running in its process group {pgid}")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot kill what is left of process group {pgid}: {e}"),
        }
        if !output_done {
            let grace = self.options.kill_grace;
            if tokio::time::timeout(grace, output.as_mut()).await.is_err() {
                tracing::warn!(
                    "the job's output is still open {grace:?} after it ended (held by a process that left its process group); no longer reading it"
                );
            }
        }

        let status = match status {
            Ok(status) => status,
            Err(e) if cancelled => {
                tracing::warn!("cannot wait for the cancelled job: {e}");
                return Err(self.cancelled(job));
            }
            Err(e) => return Err(self.job_failed(job, format!("cannot wait for the job: {e}"))),
        };
        let ending = describe(status);
        if status.code().is_some() {
            tracing::info!("{ending}");
        } else {
            tracing::warn!("{ending}");
        }
        if cancelled {
            Err(self.cancelled(job))
        } else if status.success() {
            Ok(())
        } else {
            Err(self.job_failed(job, ending))
        }
    }

    /// SIGTERM to the group, SIGKILL after the grace period; returns the
    /// leader's status once it is reaped.
    async fn stop<F: Future<Output = ()>>(
        &self,
        running: &mut RunningJob,
        output: &mut Pin<&mut F>,
        output_done: &mut bool,
    ) -> io::Result<ExitStatus> {
        let pgid = running.group.pgid();
        let grace = self.options.kill_grace;
        tracing::info!("cancelled: sending SIGTERM to process group {pgid}");
        if let Err(e) = running.group.signal(libc::SIGTERM) {
            tracing::warn!("cannot send SIGTERM to process group {pgid}: {e}");
        }
        let waited = tokio::time::timeout(
            grace,
            wait_draining(&mut running.child, output, output_done),
        )
        .await;
        if let Ok(status) = waited {
            return status;
        }
        tracing::warn!(
            "still running {grace:?} after SIGTERM: sending SIGKILL to process group {pgid}"
        );
        if let Err(e) = running.group.signal(libc::SIGKILL) {
            tracing::warn!("cannot send SIGKILL to process group {pgid}: {e}");
        }
        wait_draining(&mut running.child, output, output_done).await
    }
}

#[async_trait]
impl Cluster for LocalCluster {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    async fn launch(&self) -> Result<(), ClusterError> {
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

    async fn submit(&self, job: &Job, cx: &JobContext<'_>) -> Result<(), ClusterError> {
        if cx.cancel.is_cancelled() {
            return Err(self.cancelled(job));
        }
        let (program, args) = self.command_line(job).await?;
        tracing::info!(
            "running: {}",
            display_command(&program, &args, &cx.execution.settings)
        );
        let mut command = self.command(&program, &args);
        let mut child = match spawn(&mut command).await {
            Ok(child) => child,
            Err(e) => return Err(self.job_failed(job, self.start_error(&program, &e).await)),
        };
        let Some(pgid) = child.id().and_then(|pid| Pgid::try_from(pid).ok()) else {
            // Not reaped yet, so this cannot happen; if it does, the child
            // is already gone and there is nothing to supervise.
            let _ = child.start_kill();
            return Err(self.job_failed(job, "the job's process id is not available"));
        };
        // No await between spawn and here: the group is guarded from its
        // first instant.
        let running = RunningJob {
            group: ProcessGroup::register(pgid, self.jobs.clone()),
            child,
        };
        self.supervise(job, running, cx).await
    }

    async fn terminate(&self) -> Result<(), ClusterError> {
        let leftovers: Vec<Pgid> = lock(&self.jobs).iter().copied().collect();
        let mut failures = Vec::new();
        for pgid in leftovers {
            match crate::process::signal_group(pgid, libc::SIGKILL) {
                Ok(true) => tracing::warn!(
                    cluster = %self.name,
                    "killed process group {pgid} of a job still running at terminate"
                ),
                Ok(false) => {}
                Err(e) => failures.push(format!("cannot kill process group {pgid}: {e}")),
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
}

/// The arguments after the program, in the order each tool expects.
fn job_args(job: &Job) -> Vec<String> {
    let mut args = Vec::new();
    match job {
        Job::Shell { command } => {
            args.push("-c".to_string());
            args.push(command.clone());
        }
        Job::Spark {
            application,
            main_class,
            conf,
            args: app_args,
        } => {
            if let Some(class) = main_class {
                args.push("--class".to_string());
                args.push(class.clone());
            }
            for (key, value) in conf {
                args.push("--conf".to_string());
                args.push(format!("{key}={value}"));
            }
            args.push(application.clone());
            args.extend(app_args.iter().cloned());
        }
        Job::Pig { script, params } => {
            for (key, value) in params {
                args.push("-param".to_string());
                args.push(format!("{key}={value}"));
            }
            args.push("-f".to_string());
            args.push(script.clone());
        }
        Job::HadoopJar {
            jar,
            main_class,
            args: jar_args,
        } => {
            args.push("jar".to_string());
            args.push(jar.clone());
            args.extend(main_class.iter().cloned());
            args.extend(jar_args.iter().cloned());
        }
    }
    args
}

/// The command line for the log: quoted where needed so it reads like the
/// argv it is, with every secret value replaced by `***`.
fn display_command(program: &Path, args: &[String], settings: &Settings) -> String {
    let program = program.to_string_lossy();
    let words: Vec<String> = std::iter::once(program.as_ref())
        .chain(args.iter().map(String::as_str))
        // Redact before quoting: quoting a `'` inside a secret would split it.
        .map(|word| quote(&settings.redact(word)).into_owned())
        .collect();
    settings.redact(&words.join(" "))
}

fn quote(word: &str) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b);
    if !word.is_empty() && word.bytes().all(plain) {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exit code {code}")
    } else if let Some(signal) = status.signal() {
        format!("killed by signal {signal}")
    } else {
        format!("ended with {status}")
    }
}

/// Waits for the leader to exit while the job's output keeps flowing (a
/// job blocked on a full pipe would never exit otherwise).
async fn wait_draining<F: Future<Output = ()>>(
    child: &mut Child,
    output: &mut Pin<&mut F>,
    output_done: &mut bool,
) -> io::Result<ExitStatus> {
    loop {
        tokio::select! {
            status = child.wait() => return status,
            () = output.as_mut(), if !*output_done => *output_done = true,
        }
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

async fn find_on_path(name: &Path, search_path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    for dir in std::env::split_paths(search_path?) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let candidate = dir.join(name);
        if is_executable_file(&candidate).await {
            return Some(candidate);
        }
    }
    None
}

async fn is_executable_file(path: &Path) -> bool {
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

async fn is_dir(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn argv_of_each_kind() {
        assert_eq!(
            job_args(&Job::Shell {
                command: "echo hi".into()
            }),
            strings(&["-c", "echo hi"])
        );
        assert_eq!(
            job_args(&Job::Spark {
                application: "app.py".into(),
                main_class: None,
                conf: vec![],
                args: strings(&["a"]),
            }),
            strings(&["app.py", "a"])
        );
        assert_eq!(
            job_args(&Job::Pig {
                script: "s.pig".into(),
                params: vec![("a".into(), "1".into()), ("b".into(), "x y".into())],
            }),
            strings(&["-param", "a=1", "-param", "b=x y", "-f", "s.pig"])
        );
        assert_eq!(
            job_args(&Job::HadoopJar {
                jar: "j.jar".into(),
                main_class: Some("M".into()),
                args: strings(&["in", "out"]),
            }),
            strings(&["jar", "j.jar", "M", "in", "out"])
        );
        assert_eq!(
            job_args(&Job::HadoopJar {
                jar: "j.jar".into(),
                main_class: None,
                args: strings(&["in"]),
            }),
            strings(&["jar", "j.jar", "in"])
        );
    }

    #[test]
    fn logged_command_lines_are_quoted_and_redacted() {
        let settings = Settings::new().with_secret("token", "it's-secret");
        let line = display_command(
            Path::new("/bin/sh"),
            &strings(&["-c", "curl -H it's-secret", "plain", ""]),
            &settings,
        );
        assert_eq!(line, "/bin/sh -c 'curl -H ***' plain ''");
        assert_eq!(quote("a'b"), r"'a'\''b'");
    }
}
