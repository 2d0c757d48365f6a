//! Log lines from the engine's log files (`LOG_DIR/FLOW/FLOW.log`,
//! `LOG_DIR/FLOW/STEP.log`), paged by position.
//!
//! A line's position is its 1-based line number in its file, so paging with
//! `after` never skips or repeats a line. The files are per flow, not per
//! timeperiod, so a flow run's lines are the ones within its record's time
//! window: from `started_at` to one second after `finished_at` (open while
//! it runs). When the store records log lines itself (with run ids and
//! positions), [`crate::source::Source::logs`] reads them from there instead
//! and this module only remains for stores that do not.

use chrono::{DateTime, TimeDelta, Utc};
use flow_core::Settings;
use serde::Serialize;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One log line as the API serves it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    /// Its line number in the file.
    pub position: u64,
    /// The step whose log it is; `None` for the flow's own log.
    pub step: Option<String>,
    pub at: Option<DateTime<Utc>>,
    pub logger: String,
    pub level: String,
    pub message: String,
}

/// The time window of one run's lines: from `from` to one second after `to`
/// (unbounded while the run goes on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl Window {
    pub fn new(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Self {
        // Log lines carry milliseconds; records carry more.
        let ms =
            |t: DateTime<Utc>| DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t);
        Window {
            from: from.map(ms),
            to: to.map(|t| ms(t) + TimeDelta::seconds(1)),
        }
    }

    fn contains(&self, at: Option<DateTime<Utc>>) -> bool {
        let Some(at) = at else { return true };
        self.from.is_none_or(|f| at >= f) && self.to.is_none_or(|t| at <= t)
    }
}

/// True for names that are safe as one path component.
pub fn safe_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// The log file of `step` of `flow` (the flow's own log for `None`).
pub fn log_path(log_directory: &Path, flow: &str, step: Option<&str>) -> Option<PathBuf> {
    let file = step.unwrap_or(flow);
    (safe_name(flow) && safe_name(file))
        .then(|| log_directory.join(flow).join(format!("{file}.log")))
}

/// Splits `timestamp logger LEVEL message`. A line that does not start with
/// a timestamp is a continuation and inherits `previous`.
fn parse(
    text: &str,
    previous: Option<DateTime<Utc>>,
) -> (Option<DateTime<Utc>>, String, String, String) {
    let mut parts = text.splitn(4, ' ');
    let first = parts.next().unwrap_or_default();
    match DateTime::parse_from_rfc3339(first) {
        Ok(at) => {
            let logger = parts.next().unwrap_or_default().to_string();
            let level = parts.next().unwrap_or_default().to_string();
            let message = parts.next().unwrap_or_default().to_string();
            (Some(at.with_timezone(&Utc)), logger, level, message)
        }
        Err(_) => (previous, String::new(), String::new(), text.to_string()),
    }
}

/// Reads a file forward from a byte offset, a complete line at a time, and
/// remembers where it stopped: the live tail of a log file.
#[derive(Debug, Clone)]
pub struct Tail {
    path: PathBuf,
    step: Option<String>,
    offset: u64,
    position: u64,
    last_at: Option<DateTime<Utc>>,
    pub window: Window,
}

impl Tail {
    pub fn new(path: PathBuf, step: Option<String>, window: Window) -> Tail {
        Tail {
            path,
            step,
            offset: 0,
            position: 0,
            last_at: None,
            window,
        }
    }

    /// Whose log this is: a step's, or the flow's (`None`).
    pub fn step(&self) -> Option<&str> {
        self.step.as_deref()
    }

    /// The position of the last complete line read.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The complete lines appended since the last call that fall in the
    /// window, secrets redacted. Blocking. A missing file has no lines yet;
    /// a file that shrank was replaced and is read again from its start.
    pub fn read_new(&mut self, redact: &Settings, limit: usize) -> io::Result<Vec<LogLine>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < self.offset {
            self.offset = 0;
            self.position = 0;
        }
        if len == self.offset {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(self.offset))?;
        // Bounded reads: a huge file is consumed over several calls.
        let mut bytes = Vec::new();
        file.take(4 << 20).read_to_end(&mut bytes)?;
        let mut out = Vec::new();
        let mut consumed = 0usize;
        while let Some(end) = bytes[consumed..].iter().position(|&b| b == b'\n') {
            let raw = &bytes[consumed..consumed + end];
            consumed += end + 1;
            self.position += 1;
            let text = String::from_utf8_lossy(raw);
            let (at, logger, level, message) = parse(&text, self.last_at);
            self.last_at = at;
            if self.window.contains(at) {
                out.push(LogLine {
                    position: self.position,
                    step: self.step.clone(),
                    at,
                    logger,
                    level,
                    message: redact.redact(&message),
                });
                if out.len() >= limit {
                    break;
                }
            }
        }
        self.offset += consumed as u64;
        Ok(out)
    }
}

/// One page of a log: lines after `after`, at most `limit`.
#[derive(Debug, Clone, Serialize)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// Pass as `after` for the next page.
    pub next_after: u64,
    /// True when more lines of the window follow.
    pub more: bool,
    /// Where the lines come from: `"log_file"` (the flow's log files, lines
    /// of every timeperiod, filtered by the run's time window).
    pub source: &'static str,
}

/// Reads one page of `path`'s lines in `window` after position `after`.
/// Blocking.
pub fn read_page(
    path: &Path,
    step: Option<&str>,
    window: Window,
    after: u64,
    limit: usize,
    redact: &Settings,
) -> io::Result<LogPage> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut lines = Vec::new();
    let mut more = false;
    let mut last_at = None;
    let mut position = 0u64;
    // Complete lines only: a line being written has no newline yet.
    let Some(last_newline) = text.iter().rposition(|&b| b == b'\n') else {
        return Ok(LogPage {
            lines,
            next_after: after,
            more,
            source: "log_file",
        });
    };
    for raw in text[..last_newline].split(|&b| b == b'\n') {
        position += 1;
        let line = String::from_utf8_lossy(raw);
        let (at, logger, level, message) = parse(&line, last_at);
        last_at = at;
        if position <= after || !window.contains(at) {
            continue;
        }
        if lines.len() == limit {
            more = true;
            break;
        }
        lines.push(LogLine {
            position,
            step: step.map(str::to_string),
            at,
            logger,
            level,
            message: redact.redact(&message),
        });
    }
    let next_after = lines.last().map_or(after, |l| l.position);
    Ok(LogPage {
        lines,
        next_after,
        more,
        source: "log_file",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
2026-11-28T08:00:00.000Z a INFO old run
2026-11-28T09:00:00.100Z a INFO started cluster=local-0
2026-11-28T09:00:00.200Z a.shell WARN token hunter2
continued
2026-11-28T09:00:05.000Z a INFO finished
";

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn pages_by_position_within_the_window_and_redacts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, TEXT).unwrap();
        let secrets = Settings::new().with_secret("token", "hunter2");
        let window = Window::new(Some(at("2026-11-28T09:00:00.100Z")), None);
        let page = read_page(&path, Some("a"), window, 0, 2, &secrets).unwrap();
        assert_eq!(
            page.lines.iter().map(|l| l.position).collect::<Vec<_>>(),
            [2, 3]
        );
        assert!(page.more);
        assert_eq!(page.lines[1].message, "token ***");
        assert_eq!(page.lines[1].logger, "a.shell");
        let page = read_page(&path, Some("a"), window, page.next_after, 10, &secrets).unwrap();
        assert_eq!(
            page.lines
                .iter()
                .map(|l| (l.position, l.message.as_str()))
                .collect::<Vec<_>>(),
            [(4, "continued"), (5, "finished")]
        );
        assert!(!page.more);
        let ended = Window::new(
            Some(at("2026-11-28T09:00:00.100Z")),
            Some(at("2026-11-28T09:00:00.300Z")),
        );
        let page = read_page(&path, Some("a"), ended, 0, 10, &secrets).unwrap();
        assert_eq!(page.lines.len(), 3, "{page:?}");
    }

    #[test]
    fn a_tail_reads_only_complete_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        let none = Settings::new();
        let mut tail = Tail::new(path.clone(), None, Window::default());
        assert!(tail.read_new(&none, 100).unwrap().is_empty());
        std::fs::write(
            &path,
            "2026-11-28T09:00:00.000Z f INFO one\n2026-11-28T09:00",
        )
        .unwrap();
        let lines = tail.read_new(&none, 100).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].position, 1);
        std::fs::write(
            &path,
            "2026-11-28T09:00:00.000Z f INFO one\n2026-11-28T09:00:01.000Z f INFO two\n",
        )
        .unwrap();
        let lines = tail.read_new(&none, 100).unwrap();
        assert_eq!(
            lines
                .iter()
                .map(|l| (l.position, l.message.as_str()))
                .collect::<Vec<_>>(),
            [(2, "two")]
        );
    }

    #[test]
    fn unsafe_names_have_no_log_path() {
        assert!(log_path(Path::new("/l"), "f", Some("../x")).is_none());
        assert!(log_path(Path::new("/l"), "..", None).is_none());
        assert_eq!(
            log_path(Path::new("/l"), "f", Some("s")).unwrap(),
            Path::new("/l/f/s.log")
        );
    }
}
