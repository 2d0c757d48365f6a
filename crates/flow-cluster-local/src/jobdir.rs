//! Job directories: what lets a local job outlive the engine that started
//! it.
//!
//! Every job gets a directory under its cluster's directory before it
//! starts. The job runs under a small `sh` wrapper, the leader of the job's
//! process group, which
//!
//! 1. writes `pid` (`PID STARTTIME BOOT_ID`: its pid, its start time in
//!    clock ticks since boot from `/proc/PID/stat`, and the kernel's boot id)
//!    before the job starts, so "no `pid` file" means "never started";
//! 2. runs the job with stdout and stderr going to files in the directory
//!    (not pipes, which would break when the engine dies);
//! 3. writes the exit code to `status` when the job ends.
//!
//! Each file is written by one `printf` (one small `write`) ending in a
//! newline, and read as present only with that newline, so a reader sees
//! all of it or nothing. (No `mv`: an external program in the job's
//! process group could be killed by a cancellation half-way.) Any engine can then tell from the directory alone
//! whether the job never started, runs, or ended and how; the start time
//! and boot id make sure a pid the kernel later gave to another process is
//! never taken for the job.

use flow_core::JobStatus;
use std::io;
use std::path::{Path, PathBuf};

/// The wrapper: `sh -c WRAPPER flow-job DIR PROGRAM ARGS...`.
///
/// `$(...)` runs in a subshell, where `$$` is still the wrapper's pid and
/// `set --` does not touch the job's arguments. The wrapper's command name
/// is `sh` (no spaces), so field 22 of its `stat` line is its start time.
/// The wrapper catches SIGTERM and SIGINT (a handler, not an ignore, so the
/// job still gets them with their default meaning): a cancelled job then
/// has the whole grace period to shut down, and its exit is recorded.
pub(crate) const WRAPPER: &str = r#"trap : TERM INT
d=$1; shift
st=$(read -r l < /proc/$$/stat && set -- $l && printf %s "${22}") || st=0
read -r b < /proc/sys/kernel/random/boot_id || b=unknown
printf '%s %s %s\n' "$$" "$st" "$b" > "$d/pid" || exit 125
"$@" > "$d/stdout" 2> "$d/stderr" < /dev/null
rc=$?
printf '%s\n' "$rc" > "$d/status"
exit "$rc""#;

/// The exit code the wrapper uses when it cannot even record its pid.
pub(crate) const WRAPPER_FAILED: i32 = 125;

/// Where one job's files are.
#[derive(Debug, Clone)]
pub(crate) struct JobDir {
    path: PathBuf,
}

/// What the wrapper wrote about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub pid: libc::pid_t,
    /// Clock ticks after boot.
    pub start_time: u64,
    pub boot_id: String,
}

/// How a job's process stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// The wrapper's process exists and is the one that wrote `pid`.
    Alive,
    Gone,
    /// Something else has the pid now, or the machine rebooted.
    NotTheJob(String),
}

impl JobDir {
    pub(crate) fn new(path: PathBuf) -> Self {
        JobDir { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn stdout(&self) -> PathBuf {
        self.path.join("stdout")
    }

    pub(crate) fn stderr(&self) -> PathBuf {
        self.path.join("stderr")
    }

    /// Creates the directory (owner-only) and its parents.
    pub(crate) fn create(&self) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
    }

    /// What the wrapper wrote into `pid`, if it got that far.
    pub(crate) fn identity(&self) -> io::Result<Option<Identity>> {
        let Some(text) = read_whole(&self.path.join("pid"))? else {
            return Ok(None);
        };
        let mut words = text.split_whitespace();
        let (Some(pid), Some(start), Some(boot)) = (words.next(), words.next(), words.next())
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}/pid holds {text:?}", self.path.display()),
            ));
        };
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}/pid: {what} is not a number in {text:?}",
                    self.path.display()
                ),
            )
        };
        Ok(Some(Identity {
            pid: pid.parse().map_err(|_| bad("the pid"))?,
            start_time: start.parse().map_err(|_| bad("the start time"))?,
            boot_id: boot.to_string(),
        }))
    }

    /// The job's exit code, once the wrapper recorded it.
    pub(crate) fn exit_code(&self) -> io::Result<Option<i32>> {
        let Some(text) = read_whole(&self.path.join("status"))? else {
            return Ok(None);
        };
        text.trim().parse().map(Some).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}/status holds {text:?}", self.path.display()),
            )
        })
    }
}

/// The content of a file the wrapper wrote, once it is whole (ends with a
/// newline); `None` while it is missing or being written.
fn read_whole(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.ends_with('\n') => Ok(Some(text)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// An exit code as a job status: 0 succeeded; the wrapper's shell reports
/// a job killed by signal N as 128 + N.
pub(crate) fn status_of_exit(code: i32) -> JobStatus {
    match code {
        0 => JobStatus::Succeeded,
        WRAPPER_FAILED => JobStatus::Failed {
            message: "the job wrapper could not record the job's pid (is its directory writable?)"
                .to_string(),
        },
        c if c > 128 && c < 128 + 65 => JobStatus::Failed {
            message: format!("killed by signal {}", c - 128),
        },
        c => JobStatus::Failed {
            message: format!("exit code {c}"),
        },
    }
}

/// This machine's boot id, to tell a pid from before a reboot.
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The start time (clock ticks after boot) of process `pid`, if it exists.
pub(crate) fn start_time(pid: libc::pid_t) -> Option<u64> {
    stat_of(pid).map(|(_, start)| start)
}

/// The state letter and start time of process `pid`, if it exists.
fn stat_of(pid: libc::pid_t) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields
    // after its closing parenthesis (field 3 is the first one after it).
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.to_string();
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

/// Whether process group `identity.pid` is still the job's group (so
/// signalling it reaches the job's processes and nothing else): on this
/// boot, and its leader either gone (a pgid stays reserved while any
/// member lives, so the members left are the job's) or still the wrapper.
pub(crate) fn group_is_jobs(identity: &Identity) -> bool {
    identity.boot_id == boot_id()
        && start_time(identity.pid)
            .is_none_or(|t| identity.start_time == 0 || t == identity.start_time)
}

/// Whether the process the wrapper described is still that process.
pub(crate) fn liveness(identity: &Identity) -> Liveness {
    let here = boot_id();
    if identity.boot_id != here {
        return Liveness::NotTheJob(format!(
            "the machine rebooted since the job started (boot id {} then, {here} now)",
            identity.boot_id
        ));
    }
    match stat_of(identity.pid) {
        None => Liveness::Gone,
        // A zombie has ended; only its parent (whoever adopted the wrapper
        // after its engine died) has not collected it yet.
        Some((state, t)) if t == identity.start_time && state == "Z" => Liveness::Gone,
        Some((_, t)) if t == identity.start_time => Liveness::Alive,
        Some((_, t)) => Liveness::NotTheJob(format!(
            "process {} is not the job: it started at tick {t}, the job at tick {}",
            identity.pid, identity.start_time
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_statuses() {
        assert_eq!(status_of_exit(0), JobStatus::Succeeded);
        assert_eq!(
            status_of_exit(3),
            JobStatus::Failed {
                message: "exit code 3".into()
            }
        );
        assert_eq!(
            status_of_exit(137),
            JobStatus::Failed {
                message: "killed by signal 9".into()
            }
        );
    }

    /// The edges of "killed by signal N" (N from 1 to 64), and the
    /// wrapper's own failure, which is no job's exit code.
    #[test]
    fn exit_codes_at_the_edges_of_the_signal_range() {
        let failed = |code| match status_of_exit(code) {
            JobStatus::Failed { message } => message,
            other => panic!("{code}: {other:?}"),
        };
        assert_eq!(failed(128), "exit code 128");
        assert_eq!(failed(129), "killed by signal 1");
        assert_eq!(failed(192), "killed by signal 64");
        assert_eq!(failed(193), "exit code 193");
        assert!(
            failed(WRAPPER_FAILED).contains("could not record the job's pid"),
            "{}",
            failed(WRAPPER_FAILED)
        );
    }

    /// A file the wrapper is still writing (no newline yet) reads as
    /// absent, never as a truncated pid or exit code.
    #[test]
    fn a_file_without_its_newline_is_not_there_yet() {
        let dir = tempfile::tempdir().unwrap();
        let job = JobDir::new(dir.path().to_path_buf());
        std::fs::write(dir.path().join("pid"), "4242 77").unwrap();
        std::fs::write(dir.path().join("status"), "1").unwrap();
        assert_eq!(job.identity().unwrap(), None);
        assert_eq!(job.exit_code().unwrap(), None);
        std::fs::write(dir.path().join("pid"), "4242 77 boot\n").unwrap();
        std::fs::write(dir.path().join("status"), "17\n").unwrap();
        assert_eq!(
            job.identity().unwrap(),
            Some(Identity {
                pid: 4242,
                start_time: 77,
                boot_id: "boot".into()
            })
        );
        assert_eq!(job.exit_code().unwrap(), Some(17));
    }

    /// A file that is there but cannot be read is an error, never "the
    /// wrapper has not written it yet": that would make a started job look
    /// never started, or a finished one still running.
    #[test]
    fn an_unreadable_file_is_an_error_not_absent() {
        let dir = tempfile::tempdir().unwrap();
        let job = JobDir::new(dir.path().to_path_buf());
        std::fs::write(dir.path().join("pid"), b"\xff\xfe 1 boot\n").unwrap();
        std::fs::create_dir(dir.path().join("status")).unwrap();
        let err = job.identity().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(job.exit_code().is_err());
    }

    /// Signalling a job's group is safe only while it is the job's: on this
    /// boot, and its leader gone or still the process that wrote `pid`
    /// (a start time of 0: the wrapper could not read it, so the pid
    /// alone decides).
    #[test]
    fn a_group_is_the_jobs_only_on_this_boot_with_its_leader_gone_or_unchanged() {
        let me = std::process::id() as libc::pid_t;
        let t = start_time(me).expect("own stat");
        let mine = Identity {
            pid: me,
            start_time: t,
            boot_id: boot_id(),
        };
        assert!(group_is_jobs(&mine));
        let reused = Identity {
            start_time: t + 1,
            ..mine.clone()
        };
        assert!(!group_is_jobs(&reused), "a pid another process has now");
        let unread = Identity {
            start_time: 0,
            ..mine.clone()
        };
        assert!(group_is_jobs(&unread));
        let gone = Identity {
            pid: libc::pid_t::MAX,
            ..mine.clone()
        };
        assert!(group_is_jobs(&gone), "a leader gone leaves its members");
        let rebooted = Identity {
            boot_id: "another-boot".into(),
            ..mine
        };
        assert!(!group_is_jobs(&rebooted));
        assert!(!group_is_jobs(&Identity {
            pid: libc::pid_t::MAX,
            ..rebooted
        }));
    }

    /// A wrapper that ended but was not collected yet (a zombie) is gone,
    /// not running.
    #[test]
    fn a_zombie_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while stat_of(pid).is_some_and(|(state, _)| state != "Z") {
            assert!(std::time::Instant::now() < deadline, "{pid} never ended");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let identity = Identity {
            pid,
            start_time: start_time(pid).expect("a zombie keeps its stat"),
            boot_id: boot_id(),
        };
        assert_eq!(liveness(&identity), Liveness::Gone);
        child.wait().unwrap();
        assert_eq!(liveness(&identity), Liveness::Gone);
    }

    #[test]
    fn our_own_start_time_is_readable_and_stable() {
        let me = std::process::id() as libc::pid_t;
        let t = start_time(me).expect("own stat");
        assert_eq!(start_time(me), Some(t));
        let identity = Identity {
            pid: me,
            start_time: t,
            boot_id: boot_id(),
        };
        assert_eq!(liveness(&identity), Liveness::Alive);
        let wrong = Identity {
            start_time: t + 1,
            ..identity.clone()
        };
        assert!(matches!(liveness(&wrong), Liveness::NotTheJob(_)));
        let rebooted = Identity {
            boot_id: "another-boot".into(),
            ..identity
        };
        assert!(matches!(liveness(&rebooted), Liveness::NotTheJob(_)));
    }
}
