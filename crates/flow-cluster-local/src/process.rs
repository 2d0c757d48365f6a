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
