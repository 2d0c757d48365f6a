//! Durable handles: another cluster value (standing in for another engine,
//! after the first one died) finds, follows, cancels and terminates jobs
//! from their handles alone.

mod common;

use common::*;
use flow_cluster_local::{LocalCluster, LocalOptions};
use flow_core::{Cluster, ClusterError, JobStatus, Settings};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Level;

fn options(dir: &Path) -> LocalOptions {
    LocalOptions {
        root: dir.to_path_buf(),
        work_dir: dir.to_path_buf(),
        state_dir: dir.join(".state"),
        ..LocalOptions::default()
    }
}

/// Starts `command` on `cluster` and returns its handle without waiting.
async fn start(cluster: &LocalCluster, command: &str) -> flow_core::JobHandle {
    let execution = context(Settings::new());
    let cancel = CancellationToken::new();
    let cx = job_context(&cancel, &execution);
    let job = shell(command);
    let prepared = cluster.prepare(&job, &cx).unwrap();
    assert_eq!(
        cluster.status(&prepared).await.unwrap(),
        JobStatus::NotSubmitted,
        "a prepared job has not started"
    );
    let handle = cluster.submit(&prepared, &job, &cx).await.unwrap();
    for id in ["dir", "pgid", "start_time", "boot_id"] {
        assert!(handle.id(id).is_some(), "the handle has no {id}: {handle}");
    }
    // Past the wrapper's first lines, as any job a later engine meets is.
    wait_for_file(&Path::new(handle.id("dir").unwrap()).join("pid")).await;
    handle
}

#[tokio::test]
async fn another_cluster_follows_a_running_job_to_its_end_and_logs_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let first = cluster_in(dir.path(), |_| {}).await;
    let handle = start(
        &first,
        "echo early; while [ ! -f go ]; do sleep 0.02; done; echo late; echo oops >&2; exit 0",
    )
    .await;
    // The first engine is gone: nobody waits for the job through `first`.
    drop(first);

    let second = LocalCluster::new("local-0", options(dir.path()));
    assert_eq!(second.status(&handle).await.unwrap(), JobStatus::Running);
    let (capture, _guard) = Capture::install();
    let execution = context(Settings::new());
    let cancel = CancellationToken::new();
    let cx = job_context(&cancel, &execution);
    let (result, ()) = tokio::join!(second.wait(&handle, &cx), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        std::fs::write(dir.path().join("go"), "").unwrap();
    });
    result.unwrap();
    let info = capture.messages(Level::INFO);
    assert!(info.iter().any(|m| m == "early"), "{info:?}");
    assert!(info.iter().any(|m| m == "late"), "{info:?}");
    assert_eq!(capture.messages(Level::WARN), ["oops"]);
    assert_eq!(second.status(&handle).await.unwrap(), JobStatus::Succeeded);
}

#[tokio::test]
async fn a_job_that_ended_while_nobody_watched_reports_how_it_ended() {
    let dir = tempfile::tempdir().unwrap();
    let first = cluster_in(dir.path(), |_| {}).await;
    let ok = start(&first, "true").await;
    let failed = start(&first, "exit 3").await;
    drop(first);
    let second = LocalCluster::new("local-0", options(dir.path()));
    let until_final = |handle| {
        let second = &second;
        async move {
            loop {
                let status = second.status(handle).await.unwrap();
                if status.is_final() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(until_final(&ok).await, JobStatus::Succeeded);
    assert_eq!(
        until_final(&failed).await,
        JobStatus::Failed {
            message: "exit code 3".into()
        }
    );
    let execution = context(Settings::new());
    let cancel = CancellationToken::new();
    let cx = job_context(&cancel, &execution);
    match second.wait(&failed, &cx).await {
        Err(ClusterError::JobFailed { message, job, .. }) => {
            assert_eq!((job, message.as_str()), ("shell", "exit code 3"))
        }
        other => panic!("expected the job's failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_handle_whose_process_is_another_one_is_lost_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let first = cluster_in(dir.path(), |_| {}).await;
    let mut handle = start(&first, "sleep 30").await;
    let real: u64 = handle.id("start_time").unwrap().parse().unwrap();
    // A pid the kernel gave to another process: same pid, other start time.
    handle
        .ids
        .insert("start_time".into(), (real + 1).to_string());
    let second = LocalCluster::new("local-0", options(dir.path()));
    match second.status(&handle).await.unwrap() {
        JobStatus::Lost { reason } => assert!(reason.contains("tick"), "{reason}"),
        other => panic!("expected a lost job, got {other:?}"),
    }
    first.terminate().await.unwrap();
}

#[tokio::test]
async fn a_job_from_before_a_reboot_is_lost_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let first = cluster_in(dir.path(), |_| {}).await;
    let mut handle = start(&first, "sleep 30").await;
    // Everything about the process matches (pid, start time), as it can
    // after a reboot, where pids and start ticks begin again: only the boot
    // id, in the handle and in the job directory, is another one.
    handle.ids.insert("boot_id".into(), "another-boot".into());
    let pid_file = Path::new(handle.id("dir").unwrap()).join("pid");
    let written = std::fs::read_to_string(&pid_file).unwrap();
    let mut words: Vec<&str> = written.split_whitespace().collect();
    assert_eq!(words.len(), 3, "pid, start time, boot id: {written:?}");
    words[2] = "another-boot";
    std::fs::write(&pid_file, words.join(" ") + "\n").unwrap();
    let second = LocalCluster::new("local-0", options(dir.path()));
    match second.status(&handle).await.unwrap() {
        JobStatus::Lost { reason } => assert!(reason.contains("rebooted"), "{reason}"),
        other => panic!("expected a lost job, got {other:?}"),
    }
    let execution = context(Settings::new());
    let cancel = CancellationToken::new();
    let cx = job_context(&cancel, &execution);
    match second.wait(&handle, &cx).await {
        Err(e) => assert!(e.to_string().contains("rebooted"), "{e}"),
        Ok(()) => panic!("a job from another boot was waited for as if it ran"),
    }
    first.terminate().await.unwrap();
}

#[tokio::test]
async fn another_cluster_cancels_a_job_by_its_handle() {
    let dir = tempfile::tempdir().unwrap();
    let first = cluster_in(dir.path(), |_| {}).await;
    let handle = start(&first, "sleep 30").await;
    drop(first);
    let second = LocalCluster::new("local-0", options(dir.path()));
    second.cancel(&handle).await.unwrap();
    let status = loop {
        let status = second.status(&handle).await.unwrap();
        if status.is_final() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The wrapper records the job's death by SIGTERM.
    assert_eq!(
        status,
        JobStatus::Failed {
            message: "killed by signal 15".into()
        }
    );
    // Cancelling a finished job is a no-op.
    second.cancel(&handle).await.unwrap();
}

#[tokio::test]
async fn an_adopted_cluster_terminates_the_jobs_of_the_run_that_launched_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalCluster::new("local-0", options(dir.path()));
    let cluster_handle = first.provision().await.unwrap();
    first.wait_ready().await.unwrap();
    assert!(!cluster_handle.reused);
    let job = start(&first, "sleep 30").await;
    drop(first);

    let second = LocalCluster::new("local-0", options(dir.path()));
    assert!(second.adopt(&cluster_handle).await.unwrap());
    assert_eq!(second.status(&job).await.unwrap(), JobStatus::Running);
    second.terminate().await.unwrap();
    let status = loop {
        let status = second.status(&job).await.unwrap();
        if status.is_final() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(status, JobStatus::Lost { .. } | JobStatus::Failed { .. }),
        "{status:?}"
    );
    // A terminated cluster is not adopted again.
    let third = LocalCluster::new("local-0", options(dir.path()));
    assert!(!third.adopt(&cluster_handle).await.unwrap());
}
