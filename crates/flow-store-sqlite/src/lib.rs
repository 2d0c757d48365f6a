//! The embedded default [`FlowStore`]: one SQLite file in WAL mode.
//!
//! [`SqliteStore`] keeps flow records, step records and run leases in a
//! single database file next to the engine, with no server to run. Every
//! call is durable when it returns (see [`Synchronous`] for what that means
//! on power loss), and `acquire_lease` is one conditional write, so several
//! engines (threads or processes) on the same file never run the same
//! `[flow, timeperiod]` at once.
//!
//! How it works: a call whose connection is free runs inline on the caller's
//! thread when no other connection holds the write lock (a commit costs
//! less than two thread wake-ups; see `writer::run_inline`). Otherwise SQLite
//! would block, so the call goes to a dedicated thread; calls are sent to it through a
//! channel and answered through a oneshot. When the thread wakes it takes
//! every call already queued and runs all the writes among them in one
//! `BEGIN IMMEDIATE ... COMMIT` (group commit), then answers each caller,
//! only after the commit succeeded. Reads go through the same thread,
//! after the group's commit and outside its transaction.
//!
//! What it is not: a shared store for engines on different machines (SQLite
//! locking over network filesystems is unreliable; put the file on a local
//! disk), or a general migration tool (it creates schema version 10, upgrades
//! a version-1 to -9 file in place when it opens one, and refuses newer files).
//!
//! Schema (`PRAGMA user_version = 10`; version 3 added `job`, version 4
//! `shared_cluster`, version 5 the Jobs' `depends_on_flows`, version 6
//! `flow.sla_missed_at`, version 7 the Jobs' `due_at` and `started_at`,
//! version 8 `flow.trace_parent`, version 9 `cluster.usage`, the instances and
//! billed time as JSON, version 10 the partial index `flow_sla_missed` that
//! `count_sla_missed` counts on): tables `flow` (unique on `flow_name,
//! timeperiod`), `step` (unique on `flow_name, timeperiod, step_name`),
//! `lease` (primary key `flow_name, timeperiod`; released leases keep their
//! row with an empty owner, so fencing tokens only grow), `run` (one row per
//! engine invocation), `cluster` (clusters runs launched), `job` (the
//! scheduler's Jobs, unique on `process_name, time_qualifier, timeperiod`;
//! written under the lease of the Job's claim key), `shared_cluster` (which
//! live runs use each shared cluster, one JSON record per name) and `log` (recorded
//! log lines; `position` is `AUTOINCREMENT`, so it never goes back even after
//! a purge). States are stored as their `as_str()` strings, timeperiods as
//! their 10 digits and timestamps as RFC 3339 UTC text with microseconds
//! (`2026-11-28T07:00:00.123456Z`); sub-microsecond precision is dropped on
//! the way in. Ids are integers, handed out as [`RecordId`] strings.
#![warn(missing_docs)]

mod sql;
mod writer;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flow_core::{
    ClusterClaim, ClusterHandle, ClusterRecord, ClusterRelease, FlowKey, FlowQuery, FlowRecord,
    FlowStore, JobKey, JobQuery, JobTally, Lease, LeaseInfo, LeaseOutcome, LogLine, LogQuery,
    RecordId, RunQuery, RunRecord, SharedClusterKey, StepRecord, StoreError, StoredLogLine,
    TimeQualifier, TimetableJob,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{debug, warn};
use writer::{Call, DbError, Job};

/// How hard SQLite works to make each commit survive power loss.
///
/// A process crash (panic, kill -9, OOM) never loses a committed call in
/// either mode: the data is in the OS page cache, which survives the
/// process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `synchronous=NORMAL`: in WAL mode commits are not fsynced, only
    /// checkpoints are. On power loss or an OS crash the last transactions
    /// before it may roll back (calls that had returned are then missing,
    /// and a run looks like it stopped a little earlier than it did); the
    /// database is never corrupted. Much cheaper per commit, so the default.
    #[default]
    Normal,
    /// `synchronous=FULL`: fsyncs the WAL on every commit, so a returned
    /// call survives power loss too, at the cost of one fsync per group
    /// commit.
    Full,
}

impl Synchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// How to open a [`SqliteStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Durability on power loss; see [`Synchronous`].
    pub synchronous: Synchronous,
    /// How long a write waits for another connection (another engine, or a
    /// person in the `sqlite3` shell) to release the write lock before the
    /// call fails with [`StoreError::Operation`]. Default 5 s.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The SQLite [`FlowStore`]. Cheap to clone: clones share one connection and
/// one writer thread. Dropping the last clone stops the thread after it
/// answered every queued call, and waits for it, so the file is closed when
/// the drop returns (at worst that wait is one `busy_timeout`).
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Database>,
}

struct Database {
    // Declared before `_writer` so it is dropped first: closing the channel
    // is what tells the thread to stop before `_writer` joins it.
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// Shared with the writer thread; see [`writer::run_inline`].
    conn: Arc<Mutex<Connection>>,
    busy: Duration,
    path: PathBuf,
    /// The test fault hook: `begin_run` fails after this many writes
    /// ([`SqliteStore::interrupt_next_begin_run_after`]); [`DISARMED`] when off.
    interrupt: Arc<AtomicUsize>,
    _writer: WriterThread,
}

/// The fault hook's resting value.
const DISARMED: usize = usize::MAX;

/// Joins the writer thread on drop, so the database is closed (and its WAL
/// checkpointed) when the last store handle is gone.
struct WriterThread(Option<JoinHandle<()>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            if handle.join().is_err() {
                warn!("the SQLite store's writer thread panicked");
            }
        }
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Test fault hook: the next `begin_run` stops after `writes` of its
    /// writes and fails, as if the engine died there. Its writes are one
    /// transaction, so nothing of it is kept (the conformance suite checks).
    #[doc(hidden)]
    pub fn interrupt_next_begin_run_after(&self, writes: usize) {
        self.shared.interrupt.store(writes, Ordering::SeqCst);
    }

    /// Opens (creating if needed) the store at `path`. The directory must
    /// exist: a mistyped path fails instead of silently starting an empty
    /// store somewhere else.
    ///
    /// Blocking (a few file operations); call it at startup or from a
    /// blocking context.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let open_error = |message: String| StoreError::Open {
            location: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(open_error(format!(
                    "directory {} does not exist",
                    dir.display()
                )));
            }
        }
        create_private(path).map_err(open_error)?;
        check_header(path).map_err(open_error)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_error(e.to_string()))?;
        let deadline = Instant::now() + options.busy_timeout;
        loop {
            match setup(&conn, &options) {
                Ok(()) => break,
                Err(e) if e.is_busy() && Instant::now() < deadline => {
                    let message = e.message(options.busy_timeout);
                    debug!(path = %path.display(), "store setup busy, retrying: {message}");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(open_error(e.message(options.busy_timeout))),
            }
        }
        // Prepare every statement now: fills the cache, and a file whose
        // tables are not ours fails here rather than at the first write.
        conn.set_prepared_statement_cache_capacity(sql::ALL_STATEMENTS.len() + 4);
        for statement in sql::ALL_STATEMENTS {
            conn.prepare_cached(statement).map_err(|e| {
                open_error(format!(
                    "the file does not hold a flow store this build can use: {e}"
                ))
            })?;
        }

        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let busy = options.busy_timeout;
        let conn = Arc::new(Mutex::new(conn));
        let for_writer = Arc::clone(&conn);
        let handle = std::thread::Builder::new()
            .name("flow-store-sqlite".to_string())
            .spawn(move || writer::serve(&for_writer, queue, busy))
            .map_err(|e| open_error(format!("cannot start the writer thread: {e}")))?;
        debug!(path = %path.display(), ?options, "opened SQLite store");
        Ok(SqliteStore {
            shared: Arc::new(Database {
                jobs,
                conn,
                busy,
                path: path.to_path_buf(),
                interrupt: Arc::new(AtomicUsize::new(DISARMED)),
                _writer: WriterThread(Some(handle)),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Runs `work` inline when the connection is free and no other
    /// connection holds the write lock, else sends it to the writer thread
    /// and waits for its answer. Writes are committed before the answer
    /// comes. If the caller stops waiting, the work still runs.
    async fn call<T, F>(
        &self,
        operation: &'static str,
        key: String,
        writes: bool,
        work: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Call {
            operation,
            key,
            writes,
            work,
            value: None,
            reply,
        });
        let job: Box<dyn Job> = job;
        // While the writer thread holds the connection, calls queue up for
        // it and share its next group commit.
        let left = match self.shared.conn.try_lock() {
            Ok(conn) => writer::run_inline(&conn, job, self.shared.busy),
            Err(_) => Some(job),
        };
        if let Some(job) = left {
            self.shared.jobs.send(job).map_err(|_| StoreError::Closed)?;
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(
        &self,
        operation: &'static str,
        key: String,
        work: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        self.call(operation, key, false, work).await
    }

    async fn write<T, F>(
        &self,
        operation: &'static str,
        key: String,
        work: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        self.call(operation, key, true, work).await
    }
}

/// Creates the database file, empty and readable only by its owner (0600
/// whatever the umask), unless it exists. SQLite gives its `-wal` and
/// `-shm` files the database file's permissions, so they are private too;
/// left to SQLite, all three would be 0644 (0666 under `umask 000`).
fn create_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create the file: {e}")),
    }
}

/// Rejects an existing non-empty file that does not start with the SQLite
/// header. SQLite itself would silently overwrite a file of a few bytes
/// instead of reporting it.
fn check_header(path: &Path) -> Result<(), String> {
    const MAGIC: &[u8; 16] = b"SQLite format 3\0";
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        // Missing: SQLite creates it. Anything else: SQLite reports it.
        Err(_) => return Ok(()),
    };
    let mut header = Vec::with_capacity(MAGIC.len());
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut file, MAGIC.len() as u64),
        &mut header,
    )
    .map_err(|e| format!("cannot read the file: {e}"))?;
    if header.is_empty() || header == MAGIC {
        Ok(())
    } else {
        Err("file is not a database (it has no SQLite header)".to_string())
    }
}

/// Why setting up a freshly opened connection failed.
enum SetupError {
    Sqlite {
        step: Cow<'static, str>,
        error: rusqlite::Error,
    },
    Refused(String),
}

impl SetupError {
    /// True for lock contention with another opener, worth retrying.
    fn is_busy(&self) -> bool {
        matches!(
            self,
            SetupError::Sqlite { error, .. } if matches!(
                error.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            )
        )
    }

    fn message(&self, busy: Duration) -> String {
        match self {
            SetupError::Sqlite { step, error } => {
                format!("{step}: {}", writer::describe(error, busy))
            }
            SetupError::Refused(message) => message.clone(),
        }
    }
}

/// What brings a file of version N (N >= 1) to version N + 1, at index
/// N - 1: an older file runs every step from its own on.
const UPGRADES: [&[&str]; sql::SCHEMA_VERSION as usize - 1] = [
    &[sql::MIGRATE_V1_TO_V2, sql::SCHEMA_V2_TABLES],
    &[sql::SCHEMA_V3_TABLES],
    &[sql::SCHEMA_V4_TABLES],
    &[sql::SCHEMA_V5_TABLES],
    &[sql::SCHEMA_V6_COLUMNS],
    &[sql::SCHEMA_V7_CHANGES],
    &[sql::SCHEMA_V8_COLUMNS],
    &[sql::SCHEMA_V9_COLUMNS],
    &[sql::SCHEMA_V10_INDEX],
];

/// Connection settings and schema. Another process opening the same new
/// file at the same moment can make a step fail with SQLITE_BUSY without
/// waiting (SQLite skips the busy handler where waiting could deadlock), so
/// the caller retries the whole setup until `busy_timeout` has passed.
fn setup(conn: &Connection, options: &SqliteOptions) -> Result<(), SetupError> {
    fn step(step: &'static str) -> impl Fn(rusqlite::Error) -> SetupError {
        move |error| SetupError::Sqlite {
            step: step.into(),
            error,
        }
    }
    conn.busy_timeout(options.busy_timeout)
        .map_err(step("setting busy_timeout"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(step("switching to WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SetupError::Refused(format!(
            "journal_mode stayed '{mode}' instead of 'wal' (WAL needs a local filesystem with shared memory)"
        )));
    }
    conn.pragma_update(None, "synchronous", options.synchronous.pragma_value())
        .map_err(step("setting synchronous"))?;
    // No foreign keys: a step's `related_flow` is informational, steps are
    // found by flow name and timeperiod.
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(step("reading the schema version"))?;
    let script = match version {
        sql::SCHEMA_VERSION => return Ok(()),
        0 => format!(
            "{}{}{}",
            sql::SCHEMA,
            sql::SCHEMA_V2_TABLES,
            UPGRADES[1..].concat().concat()
        ),
        older @ 1.. if older < sql::SCHEMA_VERSION => {
            UPGRADES[older as usize - 1..].concat().concat()
        }
        newer => {
            return Err(SetupError::Refused(format!(
                "schema version {newer} is newer than this build understands ({})",
                sql::SCHEMA_VERSION
            )))
        }
    };
    // The version is read again inside the transaction: another opener may
    // have upgraded the file in between.
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(step("creating the schema"))?;
    // A file without a version holding tables is another program's: its
    // tables are left as they are (the schema's indexes would not fit them).
    let result = (|| {
        let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if current == 0 {
            let foreign: Option<String> = conn
                .query_row(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name LIMIT 1",
                    [],
                    |row| row.get(0),
                )
                .optional()?;
            if foreign.is_some() {
                conn.execute_batch("ROLLBACK")?;
                return Ok(foreign);
            }
        }
        if current == version {
            conn.execute_batch(&format!(
                "{script} PRAGMA user_version = {};",
                sql::SCHEMA_VERSION
            ))?;
        }
        conn.execute_batch("COMMIT")?;
        Ok(None)
    })();
    if let Ok(Some(table)) = result {
        return Err(SetupError::Refused(format!(
            "the file does not hold a flow store this build can use: it has a table '{table}' and no schema version"
        )));
    }
    result.map(|_| ()).map_err(|error| {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        SetupError::Sqlite {
            step: if version == 0 {
                "creating the schema".into()
            } else {
                format!("upgrading the schema from version {version}").into()
            },
            error,
        }
    })
}

#[async_trait]
impl FlowStore for SqliteStore {
    async fn get_flow(&self, key: &FlowKey) -> Result<Option<FlowRecord>, StoreError> {
        let key = key.clone();
        self.read("get_flow", key.to_string(), move |conn| {
            sql::get_flow(conn, &key)
        })
        .await
    }

    async fn get_steps(&self, key: &FlowKey) -> Result<Vec<StepRecord>, StoreError> {
        let key = key.clone();
        self.read("get_steps", key.to_string(), move |conn| {
            sql::get_steps(conn, &key)
        })
        .await
    }

    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError> {
        let query = query.clone();
        let key = match &query.flow_name {
            Some(name) => format!("flow '{name}'"),
            None => "all flows".to_string(),
        };
        self.read("list_flows", key, move |conn| sql::list_flows(conn, &query))
            .await
    }

    async fn acquire_lease(
        &self,
        key: &FlowKey,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        let key = key.clone();
        let owner = owner.to_string();
        self.write("acquire_lease", key.to_string(), move |conn| {
            sql::acquire_lease(conn, &key, &owner, now, ttl)
        })
        .await
    }

    async fn renew_lease(&self, lease: &Lease, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let lease = lease.clone();
        self.write("renew_lease", lease.key.to_string(), move |conn| {
            sql::renew_lease(conn, &lease, now)
        })
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.write("release_lease", lease.key.to_string(), move |conn| {
            sql::release_lease(conn, &lease)
        })
        .await
    }

    async fn get_lease(&self, key: &FlowKey) -> Result<Option<LeaseInfo>, StoreError> {
        let key = key.clone();
        self.read("get_lease", key.to_string(), move |conn| {
            sql::get_lease(conn, &key)
        })
        .await
    }

    /// Also fills in `related_flow` with the flow's id for steps that have
    /// none (at a flow's first run the caller cannot know the id yet).
    async fn begin_run(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        purge_steps: bool,
        steps: &[StepRecord],
        run: &RunRecord,
    ) -> Result<(FlowRecord, RunRecord), StoreError> {
        let lease = lease.clone();
        let flow = flow.clone();
        let steps = steps.to_vec();
        let run = run.clone();
        let interrupt = self.shared.interrupt.clone();
        self.write("begin_run", flow.key().to_string(), move |conn| {
            let mut done = 0;
            let mut count_write = || {
                if interrupt
                    .compare_exchange(done, DISARMED, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    return Err(DbError::Internal(format!(
                        "interrupted after {done} write(s) by the test fault hook"
                    )));
                }
                done += 1;
                Ok(())
            };
            sql::begin_run(
                conn,
                &lease,
                &flow,
                purge_steps,
                &steps,
                &run,
                &mut count_write,
            )
        })
        .await
    }

    async fn save_flow(&self, lease: &Lease, flow: &FlowRecord) -> Result<FlowRecord, StoreError> {
        let lease = lease.clone();
        let flow = flow.clone();
        self.write("save_flow", flow.key().to_string(), move |conn| {
            sql::check_fence(conn, &lease)?;
            sql::upsert_flow(conn, &flow)
        })
        .await
    }

    async fn save_step(&self, lease: &Lease, step: &StepRecord) -> Result<RecordId, StoreError> {
        let lease = lease.clone();
        let step = step.clone();
        self.write("save_step", sql::step_record_key(&step), move |conn| {
            sql::check_fence(conn, &lease)?;
            sql::upsert_step(conn, &step, step.related_flow.as_ref())
        })
        .await
    }

    async fn save_flow_and_steps(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        steps: &[StepRecord],
    ) -> Result<FlowRecord, StoreError> {
        let lease = lease.clone();
        let flow = flow.clone();
        let steps = steps.to_vec();
        self.write("save_flow_and_steps", flow.key().to_string(), move |conn| {
            sql::save_flow_and_steps(conn, &lease, &flow, &steps)
        })
        .await
    }

    async fn finish_run(&self, lease: &Lease, run: &RunRecord) -> Result<(), StoreError> {
        let lease = lease.clone();
        let run = run.clone();
        self.write("finish_run", run.key().to_string(), move |conn| {
            sql::finish_run(conn, &lease, &run)
        })
        .await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let query = query.clone();
        let key = match &query.flow_name {
            Some(name) => format!("flow '{name}'"),
            None => "all flows".to_string(),
        };
        self.read("list_runs", key, move |conn| sql::list_runs(conn, &query))
            .await
    }

    async fn save_cluster(
        &self,
        lease: &Lease,
        cluster: &ClusterRecord,
    ) -> Result<RecordId, StoreError> {
        let lease = lease.clone();
        let cluster = cluster.clone();
        let key = format!("{} cluster '{}'", cluster.key(), cluster.handle.name);
        self.write("save_cluster", key, move |conn| {
            sql::save_cluster(conn, &lease, &cluster)
        })
        .await
    }

    async fn list_clusters(&self, key: Option<&FlowKey>) -> Result<Vec<ClusterRecord>, StoreError> {
        let key = key.cloned();
        let name = key
            .as_ref()
            .map_or_else(|| "all flows".to_string(), ToString::to_string);
        self.read("list_clusters", name, move |conn| {
            sql::list_clusters(conn, key.as_ref())
        })
        .await
    }

    async fn claim_cluster(
        &self,
        lease: &Lease,
        run: &RecordId,
        cluster: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClusterClaim, StoreError> {
        let (lease, run, cluster) = (lease.clone(), run.clone(), cluster.clone());
        self.write("claim_cluster", cluster.to_string(), move |conn| {
            sql::claim_cluster(conn, &lease, &run, &cluster, now, ttl)
        })
        .await
    }

    async fn set_cluster_handle(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        handle: &ClusterHandle,
    ) -> Result<(), StoreError> {
        let (lease, cluster, handle) = (lease.clone(), cluster.clone(), handle.clone());
        self.write("set_cluster_handle", cluster.to_string(), move |conn| {
            sql::set_cluster_handle(conn, &lease, &cluster, &handle)
        })
        .await
    }

    async fn release_cluster(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClusterRelease, StoreError> {
        let (lease, cluster) = (lease.clone(), cluster.clone());
        self.write("release_cluster", cluster.to_string(), move |conn| {
            sql::release_cluster(conn, &lease, &cluster, now, ttl)
        })
        .await
    }

    async fn forget_cluster(
        &self,
        lease: &Lease,
        cluster: &SharedClusterKey,
        backend_id: &str,
    ) -> Result<(), StoreError> {
        let (lease, cluster, backend_id) = (lease.clone(), cluster.clone(), backend_id.to_string());
        self.write("forget_cluster", cluster.to_string(), move |conn| {
            sql::forget_cluster(conn, &lease, &cluster, &backend_id)
        })
        .await
    }

    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        let Some(first) = lines.first() else {
            return Ok(());
        };
        let key = FlowKey::new(first.flow_name.clone(), first.timeperiod).to_string();
        let lines = lines.to_vec();
        self.write("append_logs", key, move |conn| {
            sql::append_logs(conn, &lines)
        })
        .await
    }

    async fn read_logs(&self, query: &LogQuery) -> Result<Vec<StoredLogLine>, StoreError> {
        let query = query.clone();
        self.read("read_logs", query.key.to_string(), move |conn| {
            sql::read_logs(conn, &query)
        })
        .await
    }

    async fn last_log_position(&self, key: &FlowKey) -> Result<u64, StoreError> {
        let key = key.clone();
        self.read("last_log_position", key.to_string(), move |conn| {
            sql::last_log_position(conn, &key)
        })
        .await
    }

    async fn purge_logs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.write("purge_logs", "every flow".to_string(), move |conn| {
            sql::purge_logs(conn, before)
        })
        .await
    }

    async fn create_job(&self, job: &TimetableJob) -> Result<TimetableJob, StoreError> {
        let job = job.clone();
        self.write("create_job", job.key().to_string(), move |conn| {
            sql::create_job(conn, &job)
        })
        .await
    }

    async fn get_job(&self, key: &JobKey) -> Result<Option<TimetableJob>, StoreError> {
        let key = key.clone();
        self.read("get_job", key.to_string(), move |conn| {
            sql::get_job(conn, &key)
        })
        .await
    }

    async fn save_job(
        &self,
        lease: &Lease,
        job: &TimetableJob,
    ) -> Result<TimetableJob, StoreError> {
        let lease = lease.clone();
        let job = job.clone();
        self.write("save_job", job.key().to_string(), move |conn| {
            sql::save_job(conn, &lease, &job)
        })
        .await
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<TimetableJob>, StoreError> {
        let query = query.clone();
        let key = match &query.process_name {
            Some(name) => format!("flow '{name}'"),
            None => "all flows".to_string(),
        };
        self.read("list_jobs", key, move |conn| sql::list_jobs(conn, &query))
            .await
    }

    async fn tally_jobs(
        &self,
        process_name: &str,
        q: TimeQualifier,
    ) -> Result<Vec<JobTally>, StoreError> {
        let name = process_name.to_string();
        self.read("tally_jobs", format!("flow '{name}'"), move |conn| {
            sql::tally_jobs(conn, &name, q)
        })
        .await
    }

    async fn count_sla_missed(&self, flow_name: &str) -> Result<u64, StoreError> {
        let name = flow_name.to_string();
        self.read("count_sla_missed", format!("flow '{name}'"), move |conn| {
            sql::count_sla_missed(conn, &name)
        })
        .await
    }
}

#[cfg(test)]
mod tests;

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
