//! `kill_all_jobs` kills every job of the process, so it has a test binary
//! of its own: in a shared one it would kill the other tests' jobs.

mod common;

use common::*;
use flow_cluster_local::kill_all_jobs;
use flow_core::{ClusterError, Settings};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn kill_all_jobs_kills_every_running_job_group() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    // Two clusters: the registry is process-wide, not per cluster.
    let first = cluster_in(&a, |_| {}).await;
    let second = cluster_in(&b, |_| {}).await;
    let job = shell("sleep 100 & echo $$ $! > pids.tmp && mv pids.tmp pids; sleep 100; wait");
    let cancel = CancellationToken::new();
    let execution = context(Settings::new());

    let (one, two, pids) = tokio::join!(
        submit_in_span(&first, &job, &execution, &cancel),
        submit_in_span(&second, &job, &execution, &cancel),
        async {
            let mut pids = parse_pids(&wait_for_file(&a.join("pids")).await);
            pids.extend(parse_pids(&wait_for_file(&b.join("pids")).await));
            let groups = [pgid_of(pids[0]), pgid_of(pids[2])];
            kill_all_jobs();
            (groups, pids)
        }
    );
    let (groups, pids) = pids;

    for result in [one, two] {
        match result {
            Err(ClusterError::JobFailed { message, .. }) => {
                assert_eq!(message, "killed by signal 9")
            }
            other => panic!("expected the job to be killed, got {other:?}"),
        }
    }
    assert_all_gone(groups[0], &pids[..2]).await;
    assert_all_gone(groups[1], &pids[2..]).await;
    // Nothing is left to kill, and calling it again is harmless.
    kill_all_jobs();
}
