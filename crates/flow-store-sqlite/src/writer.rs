//! The writer thread: the only place the connection is used.
//!
//! SQLite calls block, so they never run on the async runtime. Callers send a
//! [`Job`] through a channel and await a oneshot reply. The thread takes every
//! job already queued when it wakes and runs all the writes among them in one
//! `BEGIN IMMEDIATE ... COMMIT` (group commit): concurrent steps share one
//! commit instead of paying one each. Replies go out only after `COMMIT`
//! returned, so a caller's change is durable when its call returns.

use flow_core::StoreError;
use rusqlite::{Connection, ErrorCode};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{trace, warn};

/// The most jobs taken into one group, so one huge burst cannot delay the
/// first replies indefinitely.
const MAX_GROUP: usize = 512;

/// A failure inside the writer, turned into a [`StoreError`] per job.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("unreadable {what} for {key}: {message}")]
    Corrupt {
        what: &'static str,
        key: String,
        message: String,
    },
    #[error("{0}")]
    Internal(String),
}

impl DbError {
    /// The error a caller sees, naming its own operation and key.
    fn to_store_error(&self, operation: &'static str, key: &str, busy: Duration) -> StoreError {
        match self {
            DbError::Corrupt { what, key, message } => StoreError::Corrupt {
                what,
                key: key.clone(),
                message: message.clone(),
            },
            DbError::Sqlite(e) => StoreError::Operation {
                operation,
                key: key.to_string(),
                message: describe(e, busy),
            },
            DbError::Internal(message) => StoreError::Operation {
                operation,
                key: key.to_string(),
                message: message.clone(),
            },
        }
    }
}

/// SQLite's message plus a hint for the errors an operator can act on.
pub(crate) fn describe(e: &rusqlite::Error, busy: Duration) -> String {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
            "{e} (another connection held the write lock for longer than busy_timeout {busy:?})"
        ),
        Some(ErrorCode::ReadOnly) => {
            format!("{e} (the database file or its directory is not writable)")
        }
        _ => e.to_string(),
    }
}

/// One store call waiting for the writer thread.
pub(crate) trait Job: Send {
    /// True when the job changes the database and must be committed.
    fn writes(&self) -> bool;
    /// Runs against the connection and keeps the result until [`Job::finish`].
    /// May run more than once (a failed group is retried job by job).
    fn run(&mut self, conn: &Connection) -> Result<(), DbError>;
    /// Answers the caller: the kept result, or `failure` attributed to this
    /// job's operation and key.
    fn finish(self: Box<Self>, failure: Option<&DbError>, busy: Duration);
}

/// A [`Job`] made of a closure and the channel its caller waits on.
pub(crate) struct Call<T, F> {
    pub operation: &'static str,
    pub key: String,
    pub writes: bool,
    pub work: F,
    pub value: Option<T>,
    pub reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> Result<T, DbError> + Send,
{
    fn writes(&self) -> bool {
        self.writes
    }

    fn run(&mut self, conn: &Connection) -> Result<(), DbError> {
        self.value = Some((self.work)(conn)?);
        Ok(())
    }

    fn finish(self: Box<Self>, failure: Option<&DbError>, busy: Duration) {
        let this = *self;
        let result = match (failure, this.value) {
            (Some(e), _) => Err(e.to_store_error(this.operation, &this.key, busy)),
            (None, Some(value)) => Ok(value),
            (None, None) => Err(StoreError::Operation {
                operation: this.operation,
                key: this.key,
                message: "internal error: the job finished without a result".to_string(),
            }),
        };
        // The caller may have stopped waiting (its future was dropped); the
        // change is committed either way.
        let _ = this.reply.send(result);
    }
}

/// Where a group transaction failed.
enum Failure {
    /// `BEGIN` or `COMMIT`: nothing of the group is committed.
    Group(DbError),
    /// The job at this index failed; the rest may be fine.
    Job(usize, DbError),
}

/// The writer thread's loop; returns when every sender is gone and the queue
/// is empty. Dropping `conn` afterwards closes the database.
pub(crate) fn serve(conn: Connection, jobs: Receiver<Box<dyn Job>>, busy: Duration) {
    let mut writes: Vec<Box<dyn Job>> = Vec::new();
    let mut reads: Vec<Box<dyn Job>> = Vec::new();
    while let Some(first) = next_job(&jobs) {
        let mut queued = Some(first);
        let mut taken = 0;
        while let Some(job) = queued.take() {
            if job.writes() {
                writes.push(job);
            } else {
                reads.push(job);
            }
            taken += 1;
            if taken < MAX_GROUP {
                queued = jobs.try_recv().ok();
            }
        }
        trace!(writes = writes.len(), reads = reads.len(), "store group");
        commit_group(&conn, &mut writes, busy);
        // Reads run outside the write transaction, after it committed, so a
        // failed write group does not fail them and they never see
        // uncommitted data.
        for mut job in reads.drain(..) {
            match job.run(&conn) {
                Ok(()) => job.finish(None, busy),
                Err(e) => job.finish(Some(&e), busy),
            }
        }
    }
}

/// How long the thread stays awake polling for the next job before it
/// sleeps in `recv`. Waking a sleeping thread costs tens of microseconds on
/// small VMs, more than a commit; an engine usually sends its next write
/// within this window, so polling makes back-to-back calls much cheaper.
/// The poll yields the CPU to any other runnable thread, so it only uses
/// time nobody else wants.
const SPIN: Duration = Duration::from_micros(SPIN_US);
const SPIN_US: u64 = 200;

/// The next job: polled for [`SPIN`], then waited for. `None` once every
/// sender is gone and the queue is empty.
fn next_job(jobs: &Receiver<Box<dyn Job>>) -> Option<Box<dyn Job>> {
    let start = Instant::now();
    loop {
        match jobs.try_recv() {
            Ok(job) => return Some(job),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if start.elapsed() < SPIN => std::thread::yield_now(),
            Err(TryRecvError::Empty) => return jobs.recv().ok(),
        }
    }
}

/// Runs `jobs` in one transaction and answers them after it committed.
fn commit_group(conn: &Connection, jobs: &mut Vec<Box<dyn Job>>, busy: Duration) {
    if jobs.is_empty() {
        return;
    }
    match transaction(conn, jobs) {
        Ok(()) => {
            for job in jobs.drain(..) {
                job.finish(None, busy);
            }
        }
        Err(Failure::Group(e)) => {
            rollback(conn);
            warn!("store transaction of {} change(s) failed: {e}", jobs.len());
            for job in jobs.drain(..) {
                job.finish(Some(&e), busy);
            }
        }
        Err(Failure::Job(_, e)) if jobs.len() == 1 => {
            rollback(conn);
            for job in jobs.drain(..) {
                job.finish(Some(&e), busy);
            }
        }
        Err(Failure::Job(index, e)) => {
            // One change failed; do not let it take the others down: retry
            // each in its own transaction.
            rollback(conn);
            warn!(
                "store change {index} of a group of {} failed ({e}); retrying one by one",
                jobs.len()
            );
            for mut job in jobs.drain(..) {
                match transaction(conn, std::slice::from_mut(&mut job)) {
                    Ok(()) => job.finish(None, busy),
                    Err(Failure::Group(e) | Failure::Job(_, e)) => {
                        rollback(conn);
                        job.finish(Some(&e), busy);
                    }
                }
            }
        }
    }
}

fn transaction(conn: &Connection, jobs: &mut [Box<dyn Job>]) -> Result<(), Failure> {
    if !conn.is_autocommit() {
        // A previous rollback failed; never stack work on a stale transaction.
        rollback(conn);
    }
    run_statement(conn, "BEGIN IMMEDIATE").map_err(Failure::Group)?;
    for (index, job) in jobs.iter_mut().enumerate() {
        job.run(conn).map_err(|e| Failure::Job(index, e))?;
    }
    run_statement(conn, "COMMIT").map_err(Failure::Group)
}

fn run_statement(conn: &Connection, sql: &str) -> Result<(), DbError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Rolls back whatever is open so the connection stays usable.
fn rollback(conn: &Connection) {
    if conn.is_autocommit() {
        // SQLite already rolled back (it does after some I/O errors).
        return;
    }
    if let Err(e) = conn.execute_batch("ROLLBACK") {
        warn!("store rollback failed: {e}");
    }
}
