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

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
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

/// Where one run's lines go.
struct Route {
    flow: String,
    dir: PathBuf,
}

enum Message {
    Line {
        path: PathBuf,
        line: String,
    },
    Flush(mpsc::Sender<()>),
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
    let urgent = !matches!(message, Message::Line { .. });
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

/// The writer thread's state.
#[derive(Default)]
struct Writer {
    files: HashMap<PathBuf, BufWriter<File>>,
    /// Directories known to exist, so a new file costs no `mkdir -p`.
    made_dirs: HashSet<PathBuf>,
    /// Files that could not be opened: reported once, not once per line.
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
            Message::Line { path, line } => {
                if let Some(f) = self.file(path) {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            Message::Flush(done) => self.pending_flushes.push(done),
            Message::CloseFile { path } => {
                if let Some(f) = self.files.remove(&path) {
                    close(&path, f);
                }
            }
            Message::Close { dir } => {
                self.made_dirs.remove(&dir);
                self.unopenable.retain(|p| !p.starts_with(&dir));
                for (path, f) in self.files.extract_if(|p, _| p.starts_with(&dir)) {
                    close(&path, f);
                }
            }
        }
    }

    /// The open file at `path`, opened (and its directory made) if needed.
    fn file(&mut self, path: PathBuf) -> Option<&mut BufWriter<File>> {
        if !self.files.contains_key(&path) {
            if self.unopenable.contains(&path) {
                return None;
            }
            if let Some(parent) = path.parent() {
                if !self.made_dirs.contains(parent) && std::fs::create_dir_all(parent).is_ok() {
                    self.made_dirs.insert(parent.to_path_buf());
                }
            }
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => {
                    self.files.insert(path.clone(), BufWriter::new(f));
                }
                Err(e) => {
                    eprintln!("flow: cannot open log file {}: {e}", path.display());
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
        for f in self.files.values_mut() {
            let _ = f.flush();
        }
        for done in self.pending_flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

fn close(path: &Path, mut f: BufWriter<File>) {
    if let Err(e) = f.flush() {
        eprintln!("flow: cannot write log file {}: {e}", path.display());
    }
}

/// Registers a run: events under a span with `run = id` go to
/// `log_directory/flow/`. Returns the id to put on the flow span.
pub(crate) fn register_run(flow: &str, log_directory: &Path) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let route = Route {
        flow: flow.to_string(),
        dir: log_directory.join(flow),
    };
    if let Ok(mut r) = routes().write() {
        r.insert(id, Arc::new(route));
    }
    id
}

/// Unregisters a run, writes out its lines and closes its files.
pub(crate) fn finish_run(id: u64) {
    let route = routes().write().ok().and_then(|mut r| r.remove(&id));
    if let Some(route) = route {
        send(Message::Close {
            dir: route.dir.clone(),
        });
    }
    flush();
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
    use tracing_subscriber::prelude::*;
    let stderr = stderr_filter.map(|filter| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_filter(tracing_subscriber::EnvFilter::new(filter))
    });
    let subscriber = tracing_subscriber::registry()
        .with(FileLogLayer)
        .with(stderr);
    tracing::subscriber::set_global_default(subscriber).is_ok()
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
    tags_of(event, ctx).logger()
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
    text.message + &text.fields
}

/// The `tracing` layer that writes run logs to files.
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
            path: route.dir.join(format!("{step}.log")),
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let tags = tags_of(event, &ctx);
        let Some(run) = tags.run else { return };
        let Some(route) = routes().read().ok().and_then(|r| r.get(&run).cloned()) else {
            return;
        };
        let file = tags.step.as_deref().unwrap_or(&route.flow);
        let path = route.dir.join(format!("{file}.log"));
        let logger = tags.logger().unwrap_or_else(|| route.flow.clone());
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let level = event.metadata().level();
        let line = format!("{now} {logger} {level} {}\n", event_text(event));
        send(Message::Line { path, line });
    }
}
