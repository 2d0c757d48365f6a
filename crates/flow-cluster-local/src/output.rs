//! A job's stdout and stderr, line by line, as `tracing` events.
//!
//! Jobs write their output to files in their job directory (pipes would
//! break when the engine dies); [`Tail`] reads what was added since its last
//! look. The events are emitted from the future that waits for the job (no
//! spawned task), so they land in the caller's span, which the engine routes
//! to the step's log file.

use flow_core::Settings;
use std::path::PathBuf;
use tokio::io::AsyncReadExt;

/// Longer lines are logged in pieces of this many bytes, so a job printing
/// megabytes without a newline cannot make us hold them all.
pub(crate) const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// Stdout at INFO, stderr at WARN; the message is the line itself, with
    /// secrets redacted.
    fn emit(self, line: &str) {
        match self {
            Stream::Stdout => tracing::info!("{line}"),
            Stream::Stderr => tracing::warn!("{line}"),
        }
    }
}

/// Follows one output file of a job: each `poll` logs the complete lines
/// added since the last one; `finish` also logs an unterminated last line.
pub(crate) struct Tail {
    path: PathBuf,
    which: Stream,
    file: Option<tokio::fs::File>,
    lines: Lines,
    failed: bool,
}

/// Splits a byte stream that arrives in pieces into lines (without `\n` or
/// `\r\n`), cutting lines at [`MAX_LINE`] bytes so a job printing megabytes
/// without a newline cannot make us hold them all.
#[derive(Default)]
struct Lines {
    /// Bytes of a line whose end has not arrived yet.
    partial: Vec<u8>,
}

impl Lines {
    fn take(&mut self, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&bytes[..end]);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                out.push(line);
            } else {
                out.extend(line.chunks(MAX_LINE).map(<[u8]>::to_vec));
            }
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
        while self.partial.len() >= MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            out.push(std::mem::replace(&mut self.partial, rest));
        }
        out
    }

    /// The unterminated last line, if any.
    fn rest(&mut self) -> Option<Vec<u8>> {
        Some(std::mem::take(&mut self.partial)).filter(|l| !l.is_empty())
    }
}

impl Tail {
    pub(crate) fn new(path: PathBuf, which: Stream) -> Self {
        Tail {
            path,
            which,
            file: None,
            lines: Lines::default(),
            failed: false,
        }
    }

    /// Logs the lines completed since the last call.
    pub(crate) async fn poll(&mut self, settings: &Settings) {
        if self.failed {
            return;
        }
        if self.file.is_none() {
            match tokio::fs::File::open(&self.path).await {
                Ok(file) => self.file = Some(file),
                // The wrapper has not created it yet.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => {
                    self.failed = true;
                    tracing::warn!(
                        "cannot read the job's {} ({}): {e}",
                        self.which.name(),
                        self.path.display()
                    );
                    return;
                }
            }
        }
        let Some(mut file) = self.file.take() else {
            return;
        };
        let mut chunk = vec![0; 64 * 1024];
        loop {
            match file.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => self.take(&chunk[..n], settings),
                Err(e) => {
                    self.failed = true;
                    tracing::warn!("cannot read the job's {}: {e}", self.which.name());
                    break;
                }
            }
        }
        self.file = Some(file);
    }

    /// Logs what is left, the unterminated last line included.
    pub(crate) async fn finish(&mut self, settings: &Settings) {
        self.poll(settings).await;
        if let Some(line) = self.lines.rest() {
            self.emit(&line, settings);
        }
    }

    fn take(&mut self, bytes: &[u8], settings: &Settings) {
        for line in self.lines.take(bytes) {
            self.emit(&line, settings);
        }
    }

    fn emit(&self, line: &[u8], settings: &Settings) {
        let text = String::from_utf8_lossy(line);
        self.which.emit(&settings.redact(&text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut splitter = Lines::default();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(splitter.take(chunk));
        }
        out.extend(splitter.rest());
        out
    }

    #[test]
    fn splits_lines_across_reads_and_keeps_the_unterminated_last_one() {
        assert_eq!(
            lines(&[b"one\r\ntw", b"o\n\nthr", b"ee"]),
            vec![
                b"one".to_vec(),
                b"two".to_vec(),
                Vec::new(),
                b"three".to_vec()
            ]
        );
        assert!(lines(&[b""]).is_empty());
    }

    #[test]
    fn cuts_long_lines() {
        let mut input = vec![b'a'; MAX_LINE * 2 + 10];
        input.push(b'\n');
        input.extend_from_slice(b"next\n");
        let (first, second) = input.split_at(MAX_LINE + 7);
        let got = lines(&[first, second]);
        let lengths: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(lengths, vec![MAX_LINE, MAX_LINE, 10, 4]);
    }
}
