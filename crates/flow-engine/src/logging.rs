//! Routing of `tracing` events to per-flow and per-step log files.
//!
//! The engine opens a `flow` span carrying a `run` id and registers where
//! that run's logs go; [`FileLogLayer`] finds the run, step and action of
//! every event from its span scope and appends a line to
//! `LOG_DIR/FLOW/FLOW.log` or `LOG_DIR/FLOW/STEP.log`:
//!
//! ```text
//! 2026-11-28T08:37:25.123Z extract.shell INFO exit code 0
//! ```
//!
//! Lines are written by one background thread so the engine never waits on
//! the disk for a log line (they reach the file within ~10 ms); [`flush`]
//! waits until everything queued is written.
//!
//! Confinement: a log file is only ever named after a valid flow or step
//! name ([`flow_core::graph::valid_name`]: one plain path component), so no
//! name can put a file outside `LOG_DIR/FLOW/`. Directories are created
//! 0700 and files 0600 whatever the umask: logs can hold what jobs print.
//!
//! A line that cannot be written (the file cannot be created, the disk is
//! full) is not a warning lost on stderr: the run's `RunLog` records the
//! first such failure and the engine fails the run with it. A step's line
//! to another file than the run's previous step line wakes the writer at
//! once (it may need to open that file), and before a step's end releases anything
//! the engine makes sure the writer has handled every such line
//! (`RunLog::settle`, which waits only when the writer is behind): a step
//! whose log file cannot be opened is known to have failed before any
//! other step starts.
//!
//! When the engine also records a run's logs in the store
//! ([`record_run_to_store`], Synergy Flow's log recording), every line that
//! goes to one of the run's files is also queued, as a [`LogLine`], in the
//! run's [`StoreSink`]: a bounded buffer that a task on the engine's runtime
//! appends to the store in batches (every [`RECORD_EVERY`], or sooner once
//! [`RECORD_BATCH`] lines wait), never one write per line. If the store
//! falls [`RECORD_LIMIT`] lines behind, further lines are counted instead of
//! kept, and a line saying how many were dropped is recorded once it catches
//! up. `RunLog::finish` appends what is left before it returns, so a run's
//! lines are in the store when the engine returns, whatever the outcome.
//!
//! [`event_text`] is the one function both the files and the CLI's stderr
//! use to turn an event into text, and it masks every secret value
//! ([`flow_core::mask`]): no log line shows one, whoever logged it.

use flow_core::graph::valid_name;
use flow_core::{CancellationToken, FlowKey, FlowStore, LogLevel, LogLine, RecordId};
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Where one run's lines go, and the first line that could not be written.
struct Route {
    flow: String,
    dir: PathBuf,
    /// The step file of the run's last step line: a step line to another
    /// one is an "opening" line (its file may need opening).
    last_file: Mutex<PathBuf>,
    /// Opening lines sent to the writer, and those it has handled: equal
    /// when `RunLog::settle` has nothing to wait for.
    opening_sent: AtomicU64,
    opening_handled: AtomicU64,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    /// Set when the run's lines are also recorded in the store.
    sink: OnceLock<Arc<StoreSink>>,
}

/// How often a run's recorded lines are appended to the store.
pub const RECORD_EVERY: Duration = Duration::from_millis(200);
/// Lines waiting that make the recorder append at once.
pub const RECORD_BATCH: usize = 2_000;
/// Lines kept in memory while the store is slow; more are dropped (and
/// counted).
pub const RECORD_LIMIT: usize = 50_000;
/// How long the end of a run waits for its last lines to reach the store.
pub const RECORD_DRAIN: Duration = Duration::from_secs(10);

/// A run's lines on their way to the store.
pub struct StoreSink {
    key: FlowKey,
    run: RecordId,
    buffer: Mutex<SinkBuffer>,
    wake: tokio::sync::Notify,
    closed: AtomicBool,
    /// Fires when the run lost its lease: from then on nothing is appended
    /// (a fenced engine writes nothing more, log lines included).
    fence: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct SinkBuffer {
    lines: Vec<LogLine>,
    dropped: u64,
}

impl StoreSink {
    /// Queues one line; never waits for the store.
    fn push(
        &self,
        step: Option<&str>,
        logger: String,
        level: LogLevel,
        at: chrono::DateTime<chrono::Utc>,
        message: String,
    ) {
        let Ok(mut buffer) = self.buffer.lock() else {
            return;
        };
        if buffer.lines.len() >= RECORD_LIMIT {
            buffer.dropped += 1;
            return;
        }
        buffer.lines.push(LogLine {
            flow_name: self.key.flow_name.clone(),
            timeperiod: self.key.timeperiod,
            run: self.run.clone(),
            step: step.map(str::to_string),
            logger,
            level,
            at,
            message,
        });
        if buffer.lines.len() == RECORD_BATCH {
            self.wake.notify_one();
        }
    }

    /// Everything queued so far, plus a line for what was dropped.
    fn take(&self) -> Vec<LogLine> {
        let Ok(mut buffer) = self.buffer.lock() else {
            return Vec::new();
        };
        let mut lines = std::mem::take(&mut buffer.lines);
        if buffer.dropped > 0 {
            lines.push(LogLine {
                flow_name: self.key.flow_name.clone(),
                timeperiod: self.key.timeperiod,
                run: self.run.clone(),
                step: None,
                logger: self.key.flow_name.clone(),
                level: LogLevel::Warn,
                at: chrono::Utc::now(),
                message: format!(
                    "{} log line(s) were not recorded in the store: it fell {RECORD_LIMIT} lines behind (the log files have them)",
                    buffer.dropped
                ),
            });
            buffer.dropped = 0;
        }
        lines
    }

    /// Stops the recorder once it has appended everything queued; waits
    /// for it at most [`RECORD_DRAIN`].
    async fn drain(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            if tokio::time::timeout(RECORD_DRAIN, task).await.is_err() {
                tracing::warn!(flow = %self.key, "the store did not take the run's last log lines within {RECORD_DRAIN:?} (the log files have them)");
            }
        }
    }
}

/// Appends a sink's lines in batches until it is closed and empty.
async fn record_loop(sink: Arc<StoreSink>, store: Arc<dyn FlowStore>) {
    let mut reported = false;
    loop {
        let closed = sink.closed.load(Ordering::Acquire);
        let lines = sink.take();
        for batch in lines.chunks(RECORD_BATCH) {
            if sink.fence.is_cancelled() {
                // The lease is another engine's now: its run's log, not ours.
                return;
            }
            if let Err(e) = store.append_logs(batch).await {
                if !reported {
                    // Outside the run's spans: reaches stderr, not the files.
                    tracing::warn!(flow = %sink.key, "cannot record log lines in the store (the log files have them): {e}");
                    reported = true;
                }
            }
        }
        if closed {
            return;
        }
        tokio::select! {
            _ = sink.wake.notified() => {}
            _ = tokio::time::sleep(RECORD_EVERY) => {}
        }
    }
}

/// Records the lines of the registered run `id` (see `register_run`) in
/// `store` too, attributed to the run record `run` of `key`. Needs a tokio
/// runtime (the engine's): the appends run on it, off the logging path.
/// Nothing more is appended once `fence` fires (the run lost its lease).
/// Returns false when there is no such run or no runtime.
pub fn record_run_to_store(
    id: u64,
    key: &FlowKey,
    run: &RecordId,
    store: Arc<dyn FlowStore>,
    fence: CancellationToken,
) -> bool {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    let Some(route) = routes().read().ok().and_then(|r| r.get(&id).cloned()) else {
        return false;
    };
    let sink = Arc::new(StoreSink {
        key: key.clone(),
        run: run.clone(),
        buffer: Mutex::new(SinkBuffer::default()),
        wake: tokio::sync::Notify::new(),
        closed: AtomicBool::new(false),
        fence,
        task: Mutex::new(None),
    });
    if route.sink.set(sink.clone()).is_err() {
        return false;
    }
    let task = handle.spawn(record_loop(sink.clone(), store));
    if let Ok(mut slot) = sink.task.lock() {
        *slot = Some(task);
    }
    true
}

/// Appends the queued lines of every run still recording to the store,
/// waiting at most `limit`: for a program about to exit at once (a second
/// Ctrl-C) without ending its runs.
pub async fn flush_recordings(limit: Duration) {
    flush();
    let sinks: Vec<Arc<StoreSink>> = routes()
        .read()
        .map(|r| {
            r.values()
                .filter_map(|route| route.sink.get().cloned())
                .collect()
        })
        .unwrap_or_default();
    let _ = tokio::time::timeout(limit, async {
        for sink in sinks {
            sink.drain().await;
        }
    })
    .await;
}

fn log_level(level: &tracing::Level) -> LogLevel {
    match *level {
        tracing::Level::TRACE => LogLevel::Trace,
        tracing::Level::DEBUG => LogLevel::Debug,
        tracing::Level::INFO => LogLevel::Info,
        tracing::Level::WARN => LogLevel::Warn,
        tracing::Level::ERROR => LogLevel::Error,
    }
}

impl Route {
    fn fail(&self, message: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            *failure = Some(message);
            self.failed.store(true, Ordering::Release);
        }
    }

    /// The file for `name` (a step, or the flow itself): `DIR/NAME.log`, or
    /// the flow's own file when `name` is not a valid name.
    fn file(&self, name: &str) -> PathBuf {
        let name = if valid_name(name) { name } else { &self.flow };
        self.dir.join(format!("{name}.log"))
    }
}

enum Message {
    Line {
        route: Arc<Route>,
        path: PathBuf,
        line: String,
        /// An opening line: wakes the writer, and is counted when handled.
        opening: bool,
    },
    Flush(mpsc::Sender<()>),
    /// Answered as soon as the writer reaches it: every line sent before it
    /// has been handled (its file opened, or its run failed).
    Settle(tokio::sync::oneshot::Sender<()>),
    /// A run ended: close every file under its directory.
    Close {
        dir: PathBuf,
    },
    /// A step ended: close its file, so a run holds only the files of the
    /// steps running now (a 10,000-step flow must not need 10,000 open
    /// files, nor flush them all whenever the queue drains).
    CloseFile {
        path: PathBuf,
    },
}

fn routes() -> &'static RwLock<HashMap<u64, Arc<Route>>> {
    static ROUTES: OnceLock<RwLock<HashMap<u64, Arc<Route>>>> = OnceLock::new();
    ROUTES.get_or_init(Default::default)
}

/// The writer thread's inbox: a channel plus a way to wake the thread.
///
/// Sending a line does not wake the writer (a futex wake per line would cost
/// more than formatting it): while lines keep coming the writer drains the
/// queue every [`TICK`]; once a tick finds nothing it sleeps until the next
/// message wakes it. Flushes and closes always wake it.
struct Inbox {
    tx: Mutex<Sender<Message>>,
    thread: Option<std::thread::Thread>,
    sleeping: AtomicBool,
}

/// How long lines may wait in memory before they are written.
const TICK: Duration = Duration::from_millis(10);

fn inbox() -> &'static Inbox {
    static INBOX: OnceLock<Inbox> = OnceLock::new();
    INBOX.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        // If the thread cannot start, lines are dropped: logging must never
        // stop a flow.
        let thread = std::thread::Builder::new()
            .name("flow-log-writer".into())
            .spawn(move || write_loop(rx))
            .ok()
            .map(|handle| handle.thread().clone());
        Inbox {
            tx: Mutex::new(tx),
            thread,
            sleeping: AtomicBool::new(false),
        }
    })
}

fn send(message: Message) {
    let inbox = inbox();
    let urgent = !matches!(message, Message::Line { opening: false, .. });
    if let Ok(tx) = inbox.tx.lock() {
        let _ = tx.send(message);
    }
    if urgent || inbox.sleeping.load(Ordering::Acquire) {
        inbox.sleeping.store(false, Ordering::Release);
        if let Some(thread) = &inbox.thread {
            thread.unpark();
        }
    }
}

/// An open log file and the run it belongs to.
struct OpenFile {
    out: BufWriter<File>,
    route: Arc<Route>,
}

impl OpenFile {
    fn flush(&mut self, path: &Path) {
        if let Err(e) = self.out.flush() {
            self.route
                .fail(format!("cannot write log file {}: {e}", path.display()));
        }
    }
}

/// The writer thread's state.
#[derive(Default)]
struct Writer {
    files: HashMap<PathBuf, OpenFile>,
    /// Directories known to exist, so a new file costs no `mkdir -p`.
    made_dirs: HashSet<PathBuf>,
    /// Files that could not be opened: tried once, not once per line.
    unopenable: HashSet<PathBuf>,
    pending_flushes: Vec<mpsc::Sender<()>>,
}

fn write_loop(rx: Receiver<Message>) {
    let mut writer = Writer::default();
    loop {
        let mut got = 0usize;
        loop {
            match rx.try_recv() {
                Ok(message) => {
                    got += 1;
                    writer.handle(message);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        writer.drained();
        if got > 0 {
            std::thread::park_timeout(TICK);
        } else {
            let inbox = inbox();
            inbox.sleeping.store(true, Ordering::Release);
            // A message sent before `sleeping` was set did not wake us.
            match rx.try_recv() {
                Ok(message) => {
                    inbox.sleeping.store(false, Ordering::Release);
                    writer.handle(message);
                }
                Err(TryRecvError::Empty) => std::thread::park(),
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }
}

impl Writer {
    fn handle(&mut self, message: Message) {
        match message {
            Message::Line {
                route,
                path,
                line,
                opening,
            } => {
                if let Some(f) = self.file(path.clone(), &route) {
                    if let Err(e) = f.out.write_all(line.as_bytes()) {
                        route.fail(format!("cannot write log file {}: {e}", path.display()));
                    }
                }
                if opening {
                    route.opening_handled.fetch_add(1, Ordering::Release);
                }
            }
            Message::Flush(done) => self.pending_flushes.push(done),
            Message::Settle(done) => {
                let _ = done.send(());
            }
            Message::CloseFile { path } => {
                if let Some(mut f) = self.files.remove(&path) {
                    f.flush(&path);
                }
            }
            Message::Close { dir } => {
                self.made_dirs.remove(&dir);
                self.unopenable.retain(|p| !p.starts_with(&dir));
                for (path, mut f) in self.files.extract_if(|p, _| p.starts_with(&dir)) {
                    f.flush(&path);
                }
            }
        }
    }

    /// The open file at `path`, opened (and its directory made) if needed.
    /// A file that cannot be opened fails `route`.
    fn file(&mut self, path: PathBuf, route: &Arc<Route>) -> Option<&mut OpenFile> {
        if !self.files.contains_key(&path) {
            if self.unopenable.contains(&path) {
                return None;
            }
            if let Some(parent) = path.parent() {
                if !self.made_dirs.contains(parent) && create_private_dir(parent).is_ok() {
                    self.made_dirs.insert(parent.to_path_buf());
                }
            }
            match open_private_append(&path) {
                Ok(f) => {
                    let file = OpenFile {
                        out: BufWriter::new(f),
                        route: route.clone(),
                    };
                    self.files.insert(path.clone(), file);
                }
                Err(e) => {
                    route.fail(format!("cannot open log file {}: {e}", path.display()));
                    self.unopenable.insert(path);
                    return None;
                }
            }
        }
        self.files.get_mut(&path)
    }

    /// The queue is drained: put everything on disk, then answer whoever
    /// waits for a flush.
    fn drained(&mut self) {
        for (path, f) in self.files.iter_mut() {
            f.flush(path);
        }
        for done in self.pending_flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Creates `dir` and its missing parents, each 0700 (before the umask, which
/// can only take permissions away).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Opens `path` for appending, creating it 0600.
fn open_private_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Why a run's logs cannot be written, found before the run starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log directory: {path}: {problem}")]
pub struct LogDirectoryError {
    /// The directory (or the flow's directory in it).
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

/// Checks, without creating anything, that the logs of `flow` can be
/// written under `log_directory`: the directory (or its nearest existing
/// ancestor) and `FLOW/` are directories this process may write in, and
/// `FLOW/FLOW.log` is a regular file or can be created. For callers that
/// must refuse a run before it writes anything (the `flow` CLI); the engine
/// makes the same check before it takes the lease.
pub fn check_log_directory(log_directory: &Path, flow: &str) -> Result<(), LogDirectoryError> {
    let bad = |path: &Path, problem: String| LogDirectoryError {
        path: path.to_path_buf(),
        problem,
    };
    if !valid_name(flow) {
        return Err(bad(
            log_directory,
            format!(
                "flow name {} cannot name a log directory: {}",
                flow_core::graph::shown_name(flow),
                flow_core::graph::NAME_RULE
            ),
        ));
    }
    let flow_dir = log_directory.join(flow);
    let flow_log = flow_dir.join(format!("{flow}.log"));
    for (path, directory) in [(log_directory, true), (&flow_dir, true), (&flow_log, false)] {
        match std::fs::metadata(path) {
            Ok(m) if directory && !m.is_dir() => {
                return Err(bad(path, "is not a directory".into()));
            }
            Ok(m) if !directory && !m.is_file() => {
                return Err(bad(path, "is not a regular file".into()));
            }
            Ok(_) => {
                let what = if directory {
                    libc::W_OK | libc::X_OK
                } else {
                    libc::W_OK
                };
                may_access(path, what).map_err(|e| bad(path, format!("cannot be written: {e}")))?;
            }
            Err(e) if missing(&e) => {
                // Created at run time: the nearest existing ancestor must be
                // a directory this process can create entries in.
                let mut ancestor = path.parent();
                while let Some(a) = ancestor {
                    let a = if a.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        a
                    };
                    match std::fs::metadata(a) {
                        Ok(m) if m.is_dir() => {
                            return may_access(a, libc::W_OK | libc::X_OK).map_err(|e| {
                                bad(path, format!("cannot be created in {}: {e}", a.display()))
                            });
                        }
                        Ok(_) => {
                            return Err(bad(
                                path,
                                format!("cannot be created: {} is not a directory", a.display()),
                            ))
                        }
                        Err(e) if missing(&e) => {
                            ancestor = a.parent();
                        }
                        Err(e) => return Err(bad(a, e.to_string())),
                    }
                }
                return Ok(());
            }
            Err(e) => return Err(bad(path, e.to_string())),
        }
    }
    Ok(())
}

/// The path does not exist (also when a file stands where a directory on
/// the way should be: the walk up then finds that file).
fn missing(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

/// `access(2)`: may this process (its real ids) do `mode` on `path`?
fn may_access(path: &Path, mode: libc::c_int) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One run's log files, from [`register_run`] to [`RunLog::finish`].
pub(crate) struct RunLog {
    id: u64,
    route: Option<Arc<Route>>,
}

impl RunLog {
    /// No log files (the engine was given no log directory).
    pub(crate) fn none() -> RunLog {
        RunLog { id: 0, route: None }
    }

    /// The id to put on the run's `flow` span.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether a line of this run could not be written so far. Cheap: one
    /// atomic load.
    pub(crate) fn has_failed(&self) -> bool {
        self.route
            .as_ref()
            .is_some_and(|r| r.failed.load(Ordering::Acquire))
    }

    /// Waits until the writer has handled every opening line of this run
    /// sent so far (each line's file opened, or the run failed because it
    /// could not be), so [`RunLog::has_failed`] then knows about every file
    /// that could not be opened. Does not wait for the disk; returns at once
    /// when the writer is caught up (as it usually is: opening lines wake
    /// it).
    pub(crate) async fn settle(&self) {
        let Some(route) = &self.route else { return };
        if route.opening_handled.load(Ordering::Acquire)
            >= route.opening_sent.load(Ordering::Acquire)
        {
            return;
        }
        let (done, settled) = tokio::sync::oneshot::channel();
        send(Message::Settle(done));
        // The writer answers unless it is gone (then lines are dropped and
        // nothing more can fail); the limit is only a safety net.
        let _ = tokio::time::timeout(Duration::from_secs(10), settled).await;
    }

    /// Writes out every line queued so far and returns the first write
    /// failure of the run, if any.
    pub(crate) fn flushed_failure(&self) -> Option<String> {
        let route = self.route.as_ref()?;
        flush();
        route
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Also records the run's lines in `store` (see [`record_run_to_store`]).
    pub(crate) fn record_to_store(
        &self,
        key: &FlowKey,
        run: &RecordId,
        store: Arc<dyn FlowStore>,
        fence: CancellationToken,
    ) -> bool {
        self.route.is_some() && record_run_to_store(self.id, key, run, store, fence)
    }

    /// Unregisters the run, writes out its lines and closes its files, and
    /// appends its last recorded lines to the store; returns the first
    /// write failure of the run's files, if any.
    pub(crate) async fn finish(&self) -> Option<String> {
        let route = routes().write().ok().and_then(|mut r| r.remove(&self.id))?;
        send(Message::Close {
            dir: route.dir.clone(),
        });
        flush();
        if let Some(sink) = route.sink.get() {
            sink.drain().await;
        }
        let failure = route
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        failure
    }
}

/// Registers a run: events under a span with `run = id` go to
/// `log_directory/flow/`. Creates that directory (0700) and the flow's log
/// file (0600) now, so a log directory that cannot be written stops the run
/// before it starts.
pub(crate) fn register_run(flow: &str, log_directory: &Path) -> Result<RunLog, LogDirectoryError> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    check_log_directory(log_directory, flow)?;
    let dir = log_directory.join(flow);
    let flow_log = dir.join(format!("{flow}.log"));
    create_private_dir(&dir).map_err(|e| LogDirectoryError {
        path: dir.clone(),
        problem: format!("cannot be created: {e}"),
    })?;
    open_private_append(&flow_log).map_err(|e| LogDirectoryError {
        path: flow_log.clone(),
        problem: format!("cannot be created: {e}"),
    })?;
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let route = Arc::new(Route {
        flow: flow.to_string(),
        dir,
        last_file: Mutex::new(PathBuf::new()),
        opening_sent: AtomicU64::new(0),
        opening_handled: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        failure: Mutex::new(None),
        sink: OnceLock::new(),
    });
    if let Ok(mut r) = routes().write() {
        r.insert(id, route.clone());
    }
    Ok(RunLog {
        id,
        route: Some(route),
    })
}

/// Blocks until every line queued so far is written to its file.
pub fn flush() {
    let (tx, rx) = mpsc::channel();
    send(Message::Flush(tx));
    let _ = rx.recv_timeout(Duration::from_secs(10));
}

/// Installs a global subscriber made of [`FileLogLayer`] and, when
/// `stderr_filter` is given (e.g. `"warn"`), a human-readable layer on stderr.
/// Returns false if a global subscriber was already set; compose
/// [`FileLogLayer`] into yours in that case.
pub fn init(stderr_filter: Option<&str>) -> bool {
    init_with(stderr_filter, None)
}

/// [`init`] with `first` (a trace exporter's layer, say) under the other
/// layers.
pub fn init_with(
    stderr_filter: Option<&str>,
    first: Option<Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>>,
) -> bool {
    tracing::subscriber::set_global_default(subscriber(stderr_filter, first)).is_ok()
}

fn subscriber(
    stderr_filter: Option<&str>,
    first: Option<Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>>,
) -> impl Subscriber + Send + Sync {
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::prelude::*;
    let stderr = stderr_filter.map(|filter| {
        StderrLines.with_filter(
            tracing_subscriber::EnvFilter::new(filter)
                .or(tracing_subscriber::filter::filter_fn(|m| m.is_span())),
        )
    });
    tracing_subscriber::registry()
        .with(first)
        .with(FileLogLayer.with_filter(tracing_subscriber::filter::filter_fn(kept_in_files)))
        .with(stderr)
}

/// `LEVEL logger: message` on stderr, with the same text (masked) as the
/// files.
struct StderrLines;

impl<S> Layer<S> for StderrLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = event.metadata().level();
        let text = event_text(event);
        let line = match logger_name(event, &ctx) {
            Some(logger) => format!("{level} {logger}: {text}\n"),
            None => format!("{level} {text}\n"),
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// Makes sure some subscriber routes run logs to files; a no-op if the
/// program installed its own.
pub(crate) fn ensure_installed() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        init(None);
    });
}

/// What a span tells the router: set on the `flow` span (`run`, `flow`),
/// step spans (`step`) and action spans (`action`).
#[derive(Default, Clone)]
struct SpanTags {
    run: Option<u64>,
    flow: Option<String>,
    step: Option<String>,
    action: Option<String>,
}

impl SpanTags {
    fn is_empty(&self) -> bool {
        self.run.is_none() && self.flow.is_none() && self.step.is_none() && self.action.is_none()
    }

    /// The logger name: `STEP.ACTION`, `STEP`, else the flow's name.
    fn logger(&self) -> Option<String> {
        match (&self.step, &self.action) {
            (Some(step), Some(action)) => Some(format!("{step}.{action}")),
            (Some(step), None) => Some(step.clone()),
            (None, _) => self.flow.clone(),
        }
    }
}

impl Visit for SpanTags {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "run" {
            self.run = Some(value);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let slot = match field.name() {
            "flow" => &mut self.flow,
            "step" => &mut self.step,
            "action" => &mut self.action,
            _ => return,
        };
        *slot = Some(value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, format!("{value:?}").trim_matches('"'));
    }
}

/// The nearest step and action above an event, and the run and flow of the
/// `flow` span enclosing them. Reads the tags [`FileLogLayer`] keeps on the
/// spans, so that layer must be part of the subscriber.
fn tags_of<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> SpanTags
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut tags = SpanTags::default();
    for span in ctx.event_scope(event).into_iter().flatten() {
        if let Some(t) = span.extensions().get::<SpanTags>() {
            if tags.action.is_none() {
                tags.action.clone_from(&t.action);
            }
            if tags.step.is_none() {
                tags.step.clone_from(&t.step);
            }
            if t.run.is_some() || t.flow.is_some() {
                tags.run = t.run;
                tags.flow.clone_from(&t.flow);
                break;
            }
        }
    }
    tags
}

/// The logger name of an event, as the log files show it: `STEP.ACTION`,
/// `STEP` or the flow's name; `None` outside a run. For other layers of a
/// subscriber that includes [`FileLogLayer`] (e.g. a stderr layer).
pub fn logger_name<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> Option<String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tags_of(event, ctx).logger().map(plain_logger)
}

/// An event's message followed by its other fields as ` key=value`.
pub fn event_text(event: &Event<'_>) -> String {
    struct Text {
        message: String,
        fields: String,
    }
    impl Visit for Text {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "message" {
                self.message.push_str(value);
            } else {
                let _ = write!(self.fields, " {}={value}", field.name());
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.message, "{value:?}");
            } else {
                let _ = write!(self.fields, " {}={value:?}", field.name());
            }
        }
    }
    let mut text = Text {
        message: String::new(),
        fields: String::new(),
    };
    event.record(&mut text);
    let mut out = text.message + &text.fields;
    if let std::borrow::Cow::Owned(masked) = flow_core::mask(&out) {
        out = masked;
    }
    // One event is one line: a newline inside a message must not forge
    // another line in the file.
    if out.contains(['\n', '\r']) {
        out = out.replace('\n', "\\n").replace('\r', "\\r");
    }
    out
}

/// A logger name as a line shows it: as it is when it is made of valid
/// names joined by `.` (what flow files allow), else quoted with every
/// control character escaped (names from library code or from spans this
/// module did not make), so no name can end a line or pass for a level.
fn plain_logger(logger: String) -> String {
    if logger.split('.').all(valid_name) {
        logger
    } else {
        format!("{logger:?}")
    }
}

/// True for what the log files (and the store) get by default: every event
/// of flow's own crates (targets `flow` and `flow_*`), and the events of
/// any other crate at `INFO` and above. Dependencies' debug and trace
/// events (hyper's "pooling idle connection", h2, rustls, aws-smithy's
/// attempts, the MongoDB driver's topology) would otherwise fill step logs
/// and the store; `flow` adds `FLOW_LOG`'s directives to this filter, so
/// `FLOW_LOG=hyper_util=debug` brings them back. Use it as the
/// [`FileLogLayer`]'s per-layer filter (`filter_fn(logging::kept_in_files)`).
pub fn kept_in_files(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    let crate_name = target.split("::").next().unwrap_or(target);
    meta.is_span()
        || crate_name == "flow"
        || crate_name.starts_with("flow_")
        || *meta.level() <= tracing::Level::INFO
}

/// The `tracing` layer that writes run logs to files. Compose it with the
/// [`kept_in_files`] filter (as [`init`] does): without it, every event of
/// every dependency is written.
pub struct FileLogLayer;

impl<S> Layer<S> for FileLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut tags = SpanTags::default();
        attrs.record(&mut tags);
        if !tags.is_empty() {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(tags);
            }
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            let mut tags = ext.remove::<SpanTags>().unwrap_or_default();
            values.record(&mut tags);
            ext.insert(tags);
        }
    }

    /// A step span closing means the step ended: its file can be closed.
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let step = match span.extensions().get::<SpanTags>() {
            Some(SpanTags {
                run: None,
                step: Some(step),
                action: None,
                ..
            }) => step.clone(),
            _ => return,
        };
        let run = span
            .scope()
            .skip(1)
            .find_map(|s| s.extensions().get::<SpanTags>().and_then(|t| t.run));
        let Some(run) = run else { return };
        let Some(route) = routes().read().ok().and_then(|r| r.get(&run).cloned()) else {
            return;
        };
        send(Message::CloseFile {
            path: route.file(&step),
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let tags = tags_of(event, &ctx);
        let Some(run) = tags.run else { return };
        let Some(route) = routes().read().ok().and_then(|r| r.get(&run).cloned()) else {
            return;
        };
        let path = route.file(tags.step.as_deref().unwrap_or(&route.flow));
        let logger = plain_logger(tags.logger().unwrap_or_else(|| route.flow.clone()));
        let at = chrono::Utc::now();
        let now = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let level = event.metadata().level();
        let text = event_text(event);
        let line = format!("{now} {logger} {level} {text}\n");
        if let Some(sink) = route.sink.get() {
            sink.push(tags.step.as_deref(), logger, log_level(level), at, text);
        }
        // The flow's own file was created when the run was registered.
        let opening = tags.step.is_some() && {
            let mut last = route.last_file.lock().unwrap_or_else(|p| p.into_inner());
            if *last == path {
                false
            } else {
                last.clone_from(&path);
                true
            }
        };
        if opening {
            route.opening_sent.fetch_add(1, Ordering::Release);
        }
        send(Message::Line {
            route,
            path,
            line,
            opening,
        });
    }
}
