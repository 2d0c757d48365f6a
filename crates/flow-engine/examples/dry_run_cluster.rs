//! A custom [`Cluster`]: a "dry run" backend that records the jobs it would
//! submit instead of running them, plugged into the engine through a
//! [`ClusterFactory`].
//!
//! ```sh
//! cargo run -p flow-engine --example dry_run_cluster
//! ```
//!
//! What makes a cluster's jobs adoptable (a later engine can pick them up
//! after a crash instead of running them twice):
//!
//! - [`Cluster::prepare`] names the job from the handle's data alone (here
//!   `step.action.attempt`) and starts nothing; the engine stores that
//!   handle before it calls `submit`.
//! - [`Cluster::submit`] hands the job to the backend under that name and
//!   may add ids the backend assigned (the engine stores the handle again).
//! - [`Cluster::status`] and [`Cluster::wait`] answer from the handle alone,
//!   asking the backend, not this value's memory: a handle stored by another
//!   engine works the same. A name the backend never received is
//!   [`JobStatus::NotSubmitted`], so the next engine submits it then, once.
//!
//! Here the "backend" is a journal shared by every cluster the factory
//! makes, standing for the service a real cluster would ask.

use async_trait::async_trait;
use flow_cluster_local::LocalFilesystem;
use flow_core::{
    ActionRegistry, Cluster, ClusterError, ClusterFactory, ClusterHandle, ExecutionContext,
    Filesystem, FlowKey, FlowStore, Job, JobContext, JobHandle, JobStatus, Settings, Timeperiod,
};
use flow_engine::{EngineOptions, ExecutionEngine};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The backend's memory: submitted jobs by name, in submission order.
#[derive(Default)]
struct Journal {
    jobs: Mutex<BTreeMap<String, (usize, String)>>,
}

impl Journal {
    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (usize, String)>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct DryRunFactory {
    journal: Arc<Journal>,
    root: PathBuf,
}

impl ClusterFactory for DryRunFactory {
    fn kind(&self) -> &'static str {
        "dry-run"
    }

    fn create(
        &self,
        name: &str,
        _context: &ExecutionContext,
    ) -> Result<Arc<dyn Cluster>, ClusterError> {
        Ok(Arc::new(DryRunCluster {
            name: name.to_string(),
            journal: self.journal.clone(),
            filesystem: LocalFilesystem::new(&self.root),
        }))
    }
}

struct DryRunCluster {
    name: String,
    journal: Arc<Journal>,
    /// Filesystem actions (`mkdir`, `cp`, ...) still act, on a local root.
    filesystem: LocalFilesystem,
}

/// What the job would run, for the journal. Secret values stay out of it:
/// `Secret` prints as `***`.
fn describe(job: &Job) -> String {
    match job {
        Job::Shell { command, .. } => format!("sh -c {command:?}"),
        Job::Spark {
            application, args, ..
        } => format!("spark-submit {application} {}", args.join(" ")),
        Job::Pig { script, .. } => format!("pig -f {script}"),
        Job::HadoopJar { jar, args, .. } => format!("hadoop jar {jar} {}", args.join(" ")),
    }
}

impl DryRunCluster {
    fn job_id<'h>(&self, handle: &'h JobHandle) -> Result<&'h str, ClusterError> {
        handle.id("job").ok_or_else(|| ClusterError::BadHandle {
            cluster: self.name.clone(),
            handle: handle.to_string(),
            message: "no job id".into(),
        })
    }
}

#[async_trait]
impl Cluster for DryRunCluster {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "dry-run"
    }

    async fn provision(&self) -> Result<ClusterHandle, ClusterError> {
        Ok(ClusterHandle {
            kind: "dry-run".into(),
            name: self.name.clone(),
            backend_id: format!("dry-{}", self.name),
            reused: false,
            details: BTreeMap::new(),
        })
    }

    async fn wait_ready(&self) -> Result<(), ClusterError> {
        Ok(())
    }

    async fn adopt(&self, _handle: &ClusterHandle) -> Result<bool, ClusterError> {
        // Nothing outlives a dry run's cluster but the journal.
        Ok(true)
    }

    fn prepare(&self, _job: &Job, cx: &JobContext<'_>) -> Result<JobHandle, ClusterError> {
        // A name derived from data the engine stores, so the same attempt
        // always gets the same name; nothing is started.
        let job = format!("{}.{}.{}", cx.step, cx.action, cx.attempt);
        Ok(JobHandle::new("dry-run", &self.name, [("job", job)]))
    }

    async fn submit(
        &self,
        handle: &JobHandle,
        job: &Job,
        _cx: &JobContext<'_>,
    ) -> Result<JobHandle, ClusterError> {
        let id = self.job_id(handle)?.to_string();
        let mut jobs = self.journal.jobs();
        // Submitting a name the backend has is a no-op (no job runs twice).
        let next = jobs.len() + 1;
        let (sequence, _) = jobs.entry(id).or_insert((next, describe(job))).clone();
        let mut completed = handle.clone();
        completed
            .ids
            .insert("sequence".into(), sequence.to_string());
        Ok(completed)
    }

    async fn wait(&self, handle: &JobHandle, cx: &JobContext<'_>) -> Result<(), ClusterError> {
        if cx.cancel.is_cancelled() {
            self.cancel(handle).await?;
            return Err(ClusterError::Cancelled {
                cluster: self.name.clone(),
                job: "dry-run",
            });
        }
        match self.status(handle).await? {
            JobStatus::Succeeded => Ok(()),
            other => Err(ClusterError::JobFailed {
                cluster: self.name.clone(),
                job: "dry-run",
                message: other.to_string(),
            }),
        }
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, ClusterError> {
        let id = self.job_id(handle)?;
        // A dry-run job "succeeds" the moment the backend has it.
        Ok(if self.journal.jobs().contains_key(id) {
            JobStatus::Succeeded
        } else {
            JobStatus::NotSubmitted
        })
    }

    async fn cancel(&self, _handle: &JobHandle) -> Result<(), ClusterError> {
        Ok(())
    }

    async fn terminate(&self) -> Result<(), ClusterError> {
        Ok(())
    }

    fn filesystem(&self) -> &dyn Filesystem {
        &self.filesystem
    }
}

const FLOW: &str = r#"
name = "nightly"
time_qualifier = "daily"

[[steps]]
name = "extract"
main = { action = "shell", command = "extract --day {timeperiod}" }

[[steps]]
name = "report"
depends_on = ["extract"]
main = { action = "spark", application = "jobs/report.py", args = ["--day", "{timeperiod}"] }
"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(
        &dir.path().join("flow.db"),
        SqliteOptions::default(),
    )?);
    let journal = Arc::new(Journal::default());
    let factory = Arc::new(DryRunFactory {
        journal: journal.clone(),
        root: dir.path().join("data"),
    });

    let graph = Arc::new(ActionRegistry::builtin().parse(FLOW, "nightly.toml".as_ref())?);
    let timeperiod: Timeperiod = "2026112800".parse()?;
    let context = ExecutionContext {
        flow_name: graph.name().to_string(),
        timeperiod,
        start_timeperiod: timeperiod,
        end_timeperiod: timeperiod.next(graph.time_qualifier()),
        settings: Arc::new(Settings::new()),
        number_of_clusters: 1,
    };
    let engine = ExecutionEngine::new(
        graph.clone(),
        context.clone(),
        store.clone(),
        factory.clone(),
        EngineOptions::default(),
    );
    let report = engine.run().await?;
    println!("run: {}", report.state);
    println!("jobs the run would have submitted:");
    for (name, (sequence, command)) in journal.jobs().iter() {
        println!("  #{sequence} {name}: {command}");
    }
    assert_eq!(journal.jobs().len(), 2);

    // What a later engine does with the handles in the store: rebuild a
    // cluster from the factory and ask about each job by its handle alone.
    let later = factory.create("dry-run-0", &context)?;
    let steps = store
        .get_steps(&FlowKey::new(graph.name(), timeperiod))
        .await?;
    for step in &steps {
        if let Some(job) = &step.job {
            let status = later.status(&job.handle).await?;
            println!("  {}: {} is {status}", step.step_name, job.handle);
            assert_eq!(status, JobStatus::Succeeded);
        }
    }
    // A handle that was prepared (and stored) but never submitted, as after
    // a crash between the two: the next engine submits it then, once.
    let job = Job::Shell {
        command: "true".into(),
        env: Vec::new(),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let cx = JobContext {
        cancel: &cancel,
        execution: &context,
        step: "extract",
        action: "shell",
        attempt: 2,
    };
    let prepared = later.prepare(&job, &cx)?;
    assert_eq!(later.status(&prepared).await?, JobStatus::NotSubmitted);
    println!("  {prepared} is {}", later.status(&prepared).await?);
    Ok(())
}

// `cargo test` runs the example too (see `test = true` in Cargo.toml).
#[test]
fn example_runs() {
    main().expect("the example runs");
}
