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
use std::sync::mpsc::Receiver;
use std::sync::Mutex;
use std::time::Duration;
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
    /// The write's lease is no longer current; nothing was written.
    #[error("lease token {token} of {key} is no longer current")]
    Fenced {
        key: String,
        token: u64,
        holder: Option<String>,
    },
    /// The caller gave an id this store cannot hold.
    #[error("{what} id '{id}' is not an id of this store: {message}")]
    InvalidId {
        what: &'static str,
        id: String,
        message: String,
    },
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
            DbError::Fenced { key, token, holder } => StoreError::Fenced {
                key: key.clone(),
                token: *token,
                holder: holder.clone(),
            },
            DbError::InvalidId { what, id, message } => StoreError::InvalidId {
                what,
                id: id.clone(),
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
        Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure) => format!(
            "{e} (writing the database file failed: is its disk full, or is it over a size limit?)"
        ),
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
/// is empty. The connection is shared with callers that run uncontended
/// calls inline ([`run_inline`]); the thread locks it for each group.
pub(crate) fn serve(conn: &Mutex<Connection>, jobs: Receiver<Box<dyn Job>>, busy: Duration) {
    let mut writes: Vec<Box<dyn Job>> = Vec::new();
    let mut reads: Vec<Box<dyn Job>> = Vec::new();
    while let Ok(first) = jobs.recv() {
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
        let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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

/// Runs one call on the caller's thread without waiting for any lock: with
/// SQLite's busy timeout at zero, a write lock held by another connection
/// fails at once instead of blocking the caller. Returns the job untouched
/// (rolled back) in that case, so the caller hands it to the writer thread,
/// which waits up to `busy`. Otherwise the job is answered (committed or
/// failed) before this returns.
///
/// Why: a hop to the writer thread and back costs two thread wake-ups, more
/// than the commit itself; a serial flow pays that on every state change.
pub(crate) fn run_inline(
    conn: &Connection,
    mut job: Box<dyn Job>,
    busy: Duration,
) -> Option<Box<dyn Job>> {
    if conn.busy_timeout(Duration::ZERO).is_err() {
        return Some(job);
    }
    let outcome = if job.writes() {
        transaction(conn, std::slice::from_mut(&mut job)).map_err(|f| match f {
            Failure::Group(e) | Failure::Job(_, e) => e,
        })
    } else {
        job.run(conn)
    };
    let restored = conn.busy_timeout(busy);
    match outcome {
        Ok(()) if restored.is_ok() => {
            job.finish(None, busy);
            None
        }
        Ok(()) => {
            // Committed, but the connection would now fail on contention
            // instead of waiting; report it rather than hide it.
            let e = DbError::Internal("cannot restore the SQLite busy timeout".into());
            job.finish(Some(&e), busy);
            None
        }
        Err(e) => {
            rollback(conn);
            if is_busy(&e) {
                Some(job)
            } else {
                job.finish(Some(&e), busy);
                None
            }
        }
    }
}

fn is_busy(e: &DbError) -> bool {
    matches!(
        e,
        DbError::Sqlite(e) if matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)
    }

    /// The failures an operator can act on name what to look at; the
    /// others are SQLite's message alone.
    #[test]
    fn errors_an_operator_can_act_on_carry_a_hint() {
        let busy = Duration::from_millis(250);
        for code in [ffi::SQLITE_BUSY, ffi::SQLITE_LOCKED] {
            let text = describe(&failure(code), busy);
            assert!(
                text.contains("held the write lock for longer than busy_timeout 250ms"),
                "{text}"
            );
        }
        let text = describe(&failure(ffi::SQLITE_READONLY), busy);
        assert!(
            text.contains("the database file or its directory is not writable"),
            "{text}"
        );
        for code in [ffi::SQLITE_FULL, ffi::SQLITE_IOERR] {
            let text = describe(&failure(code), busy);
            assert!(text.contains("is its disk full"), "{text}");
        }
        let constraint = failure(ffi::SQLITE_CONSTRAINT);
        assert_eq!(describe(&constraint, busy), constraint.to_string());
    }
}
