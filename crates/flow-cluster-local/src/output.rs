//! A job's stdout and stderr, line by line, as `tracing` events.
//!
//! The events are emitted from the future that runs the job (no spawned
//! task), so they land in the caller's span, which the engine routes to the
//! step's log file.

use flow_core::Settings;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};

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

/// Logs every line of `stream` until it ends.
pub(crate) async fn forward_lines<R: AsyncRead + Unpin>(
    stream: Option<R>,
    which: Stream,
    settings: &Settings,
) {
    let Some(stream) = stream else { return };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        match read_line(&mut reader, &mut line).await {
            Ok(true) => {
                let text = String::from_utf8_lossy(&line);
                which.emit(&settings.redact(&text));
            }
            Ok(false) => return,
            Err(e) => {
                tracing::warn!("cannot read the job's {}: {e}", which.name());
                return;
            }
        }
    }
}

/// Reads one line into `line` without its `\n` (or `\r\n`), cut at
/// [`MAX_LINE`] bytes. `Ok(false)` at the end of the stream.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    line.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(!line.is_empty());
        }
        let room = MAX_LINE - line.len();
        let window = &available[..available.len().min(room)];
        if let Some(end) = window.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&window[..end]);
            reader.consume(end + 1);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(true);
        }
        let taken = window.len();
        line.extend_from_slice(window);
        reader.consume(taken);
        if line.len() >= MAX_LINE {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8]) -> Vec<Vec<u8>> {
        let mut reader = BufReader::with_capacity(7, input);
        let mut line = Vec::new();
        let mut out = Vec::new();
        while read_line(&mut reader, &mut line).await.unwrap() {
            out.push(line.clone());
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_the_unterminated_last_one() {
        assert_eq!(
            lines(b"one\r\ntwo\n\nthree").await,
            vec![
                b"one".to_vec(),
                b"two".to_vec(),
                Vec::new(),
                b"three".to_vec()
            ]
        );
        assert!(lines(b"").await.is_empty());
    }

    #[tokio::test]
    async fn cuts_long_lines() {
        let mut input = vec![b'a'; MAX_LINE * 2 + 10];
        input.push(b'\n');
        input.extend_from_slice(b"next\n");
        let got = lines(&input).await;
        let lengths: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(lengths, vec![MAX_LINE, MAX_LINE, 10, 4]);
    }
}
