//! Process groups of running jobs: signalling them, and making sure none
//! outlives the code that started it.
//!
//! Every job is the leader of its own process group, so one `killpg` reaches
//! everything it started (a `sh -c` line's background children included).
//! A [`ProcessGroup`] is registered in a process-wide set while its job runs;
//! [`kill_all_jobs`] uses that set. Dropping the guard does not kill the
//! group: a job outlives the code that waited for it (as it outlives an
//! engine that dies); the cluster's `terminate` ends what is left.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A process group id (the pid of the job's first process).
pub(crate) type Pgid = libc::pid_t;

/// The process groups of every job running in this process.
static LIVE_GROUPS: Mutex<BTreeSet<Pgid>> = Mutex::new(BTreeSet::new());

/// A poisoned registry is still a correct set of pids: keep using it.
pub(crate) fn lock(set: &Mutex<BTreeSet<Pgid>>) -> MutexGuard<'_, BTreeSet<Pgid>> {
    set.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Kills (SIGKILL) the process group of every local job running in this
/// process, on every cluster.
///
/// For the moment when the process must exit at once (a second Ctrl-C): the
/// jobs' `submit` calls then return `killed by signal 9` if anything is still
/// waiting for them. Takes a mutex, so it must not be called from inside a
/// signal handler; call it from ordinary code that reacts to the signal.
pub fn kill_all_jobs() {
    let groups: Vec<Pgid> = lock(&LIVE_GROUPS).iter().copied().collect();
    for pgid in groups {
        match signal_group(pgid, libc::SIGKILL) {
            Ok(true) => tracing::warn!("killed process group {pgid}"),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot kill process group {pgid}: {e}"),
        }
    }
}

/// Sends `signal` to process group `pgid`. `Ok(false)` when the group has no
/// process left.
pub(crate) fn signal_group(pgid: Pgid, signal: libc::c_int) -> io::Result<bool> {
    // 0 would be our own group and 1 is init's; neither is ever a job's.
    if pgid <= 1 {
        return Ok(false);
    }
    // SAFETY: killpg takes plain integers and only sends a signal; `pgid`
    // names one job's group (checked above not to be ours).
    let rc = unsafe { libc::killpg(pgid, signal) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// How often [`end_group`] looks at `/proc` while it waits.
const GROUP_POLL: Duration = Duration::from_millis(20);

/// How long [`end_group`] waits for the kernel to take SIGKILLed processes
/// away (a process in uninterruptible sleep dies only when its I/O ends).
const AFTER_KILL: Duration = Duration::from_secs(30);

/// The processes of group `pgid` that still run, from `/proc`. Zombies
/// (dead, waiting to be collected by their parent) do not count: they run
/// nothing.
pub(crate) fn live_members(pgid: Pgid) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut members = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and ')'.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let group = fields.nth(1).and_then(|g| g.parse::<Pgid>().ok());
        if group == Some(pgid) && state != "Z" && state != "X" {
            members.push(pid);
        }
    }
    members
}

/// Ends process group `pgid` for good: SIGTERM, up to `grace` for every
/// member to exit, SIGKILL to what is left, then waits until `/proc` shows
/// no live member. Only then may something be started in the job's place:
/// a child that ignores SIGTERM must not run beside its replacement.
///
/// The caller makes sure `pgid` is still the job's group (a pgid stays
/// reserved while any member exists, so a non-empty group is the job's).
pub(crate) async fn end_group(pgid: Pgid, grace: Duration) -> io::Result<()> {
    if pgid <= 1 || live_members(pgid).is_empty() {
        return Ok(());
    }
    tracing::info!("sending SIGTERM to process group {pgid}");
    signal_group(pgid, libc::SIGTERM)?;
    if wait_empty(pgid, grace).await {
        return Ok(());
    }
    tracing::warn!("process group {pgid} still runs {grace:?} after SIGTERM: sending SIGKILL");
    kill_and_wait(pgid).await
}

/// SIGKILL to group `pgid`, then waits until no member is alive.
pub(crate) async fn kill_and_wait(pgid: Pgid) -> io::Result<()> {
    signal_group(pgid, libc::SIGKILL)?;
    wait_gone(pgid).await
}

/// Waits until group `pgid`, already sent SIGKILL, has no live member.
pub(crate) async fn wait_gone(pgid: Pgid) -> io::Result<()> {
    if wait_empty(pgid, AFTER_KILL).await {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "processes {:?} of process group {pgid} still run {AFTER_KILL:?} after SIGKILL",
        live_members(pgid)
    )))
}

/// Waits up to `limit` for group `pgid` to have no live member.
async fn wait_empty(pgid: Pgid, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if live_members(pgid).is_empty() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(GROUP_POLL).await;
    }
}

/// A running job's process group, registered process-wide and with its
/// cluster while this process supervises it.
///
/// A pgid stays reserved while any process of the group exists, so
/// signalling it cannot hit an unrelated process until the job's leader has
/// been reaped and its group is empty; `finish` deregisters right after the
/// reap, with no await in between.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    pgid: Pgid,
    cluster_jobs: Arc<Mutex<BTreeSet<Pgid>>>,
    live: bool,
}

impl ProcessGroup {
    pub(crate) fn register(pgid: Pgid, cluster_jobs: Arc<Mutex<BTreeSet<Pgid>>>) -> Self {
        lock(&LIVE_GROUPS).insert(pgid);
        lock(&cluster_jobs).insert(pgid);
        ProcessGroup {
            pgid,
            cluster_jobs,
            live: true,
        }
    }

    pub(crate) fn pgid(&self) -> Pgid {
        self.pgid
    }

    pub(crate) fn signal(&self, signal: libc::c_int) -> io::Result<bool> {
        if self.live {
            signal_group(self.pgid, signal)
        } else {
            Ok(false)
        }
    }

    /// Called once the leader has been reaped: kills whatever the job left
    /// running in its group (a job's processes do not outlive it) and
    /// deregisters. `Ok(true)` if something was left.
    pub(crate) fn finish(&mut self) -> io::Result<bool> {
        let leftovers = self.signal(libc::SIGKILL);
        self.forget();
        leftovers
    }

    fn forget(&mut self) {
        if self.live {
            self.live = false;
            lock(&LIVE_GROUPS).remove(&self.pgid);
            lock(&self.cluster_jobs).remove(&self.pgid);
        }
    }
}

impl Drop for ProcessGroup {
    /// Stops tracking the group; the job goes on (see the module comment).
    fn drop(&mut self) {
        self.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    /// Waits (up to a minute) until `done` holds.
    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "gave up waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `sh` running `script` as the leader of a process group of its own.
    fn leader(script: &str) -> (Child, Pgid) {
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pgid = child.id() as Pgid;
        (child, pgid)
    }

    /// A group of a sleeping leader and `children` sleeping children, once
    /// all of them run.
    fn sleepers(children: usize) -> (Child, Pgid) {
        let (child, pgid) = leader(&format!(
            "i=0; while [ $i -lt {children} ]; do sleep 600 & i=$((i+1)); done; exec sleep 600"
        ));
        wait_until("the group's members", || {
            live_members(pgid).len() == children + 1
        });
        (child, pgid)
    }

    /// Only once `/proc` shows no live member may something start in the
    /// job's place; a hundred processes take a while to die.
    #[tokio::test]
    async fn kill_and_wait_returns_only_once_no_member_runs() {
        let (mut leader, pgid) = sleepers(100);
        kill_and_wait(pgid).await.unwrap();
        assert_eq!(live_members(pgid), Vec::<libc::pid_t>::new());
        leader.wait().unwrap();
    }

    /// A job that ends on SIGTERM gets the grace period to do so: no
    /// SIGKILL while it cleans up, and it exits as it chose to.
    #[tokio::test]
    async fn end_group_lets_a_job_finish_its_sigterm_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let cleaned = dir.path().join("cleaned");
        let (mut leader, pgid) = leader(&format!(
            "trap 'sleep 0.3; echo > {cleaned}; exit 3' TERM; echo > {ready}; while :; do sleep 1; done",
            cleaned = cleaned.display(),
            ready = ready.display()
        ));
        wait_until("the job's trap", || ready.exists());
        end_group(pgid, Duration::from_secs(60)).await.unwrap();
        assert!(cleaned.exists(), "the job's cleanup was cut short");
        assert_eq!(leader.wait().unwrap().code(), Some(3));
        assert_eq!(live_members(pgid), Vec::<libc::pid_t>::new());
    }

    /// A pgid is free for the kernel to reuse once its job is reaped: the
    /// guard leaves both registries then (or when dropped) and never
    /// signals the group again.
    #[test]
    fn a_finished_or_dropped_group_is_deregistered_and_never_signalled_again() {
        let cluster_jobs = Arc::new(Mutex::new(BTreeSet::new()));
        let (mut leader, pgid) = sleepers(0);
        let mut group = ProcessGroup::register(pgid, cluster_jobs.clone());
        assert!(lock(&LIVE_GROUPS).contains(&pgid));
        assert!(lock(&cluster_jobs).contains(&pgid));
        assert!(
            group.signal(libc::SIGKILL).unwrap(),
            "the group had its leader"
        );
        leader.wait().unwrap();
        assert!(!group.finish().unwrap(), "nothing was left in the group");
        assert!(!lock(&LIVE_GROUPS).contains(&pgid));
        assert!(lock(&cluster_jobs).is_empty());
        assert!(!group.signal(libc::SIGKILL).unwrap());

        let (mut leader, pgid) = sleepers(0);
        drop(ProcessGroup::register(pgid, cluster_jobs.clone()));
        assert!(!lock(&LIVE_GROUPS).contains(&pgid));
        assert!(lock(&cluster_jobs).is_empty());
        assert_eq!(
            live_members(pgid),
            [pgid],
            "dropping the guard ended the job"
        );
        assert!(signal_group(pgid, libc::SIGKILL).unwrap());
        leader.wait().unwrap();
    }
}
