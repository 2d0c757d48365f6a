//! The last bytes of a remote log object, for failure messages.
//!
//! [`tail`] reads a bounded suffix of an object through any
//! [`RemoteObjects`] (the S3 and GCS filesystems implement it). A plain
//! object is read from `size - max_bytes`; a `.gz` object (EMR's step logs)
//! cannot be entered in the middle, so it is streamed through a decoder and
//! only the last `max_bytes` of the text are kept: memory stays bounded,
//! the work is the object's size. Objects that appear late (EMR uploads
//! logs minutes after a step ends) are waited for, up to
//! [`TailOptions::wait`].

use crate::clock::Clock;
use async_compression::tokio::bufread::GzipDecoder;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};

/// A byte stream from a remote object.
pub type ObjectStream = Box<dyn AsyncRead + Send + Unpin>;

/// Reading remote objects by location (`s3://bucket/key`, a key, ...).
#[async_trait]
pub trait RemoteObjects: Send + Sync {
    /// The object's size, or `None` when it does not exist (yet).
    async fn size(&self, location: &str) -> Result<Option<u64>, TailError>;
    /// The object's bytes from `offset` to its end.
    async fn read_from(&self, location: &str, offset: u64) -> Result<ObjectStream, TailError>;
}

/// A failed read, naming the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the log {location}: {message}")]
pub struct TailError {
    /// The object, e.g. `s3://bucket/key`.
    pub location: String,
    /// Why the read failed.
    pub message: String,
}

/// How much to read and how long to wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailOptions {
    /// At most this many bytes of text are returned (after decompression).
    pub max_bytes: usize,
    /// How long to wait for an object that does not exist yet.
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
    /// How often to look for it meanwhile.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            max_bytes: 16 * 1024,
            wait: Duration::from_secs(300),
            interval: Duration::from_secs(15),
        }
    }
}

/// A job's logs copied into its step log: the `[cluster.KIND.job_logs]`
/// table of every cloud cluster (one vocabulary). `max_bytes`, `wait` and
/// `interval` bound the read ([`TailOptions`]); `error_bytes` is how much of
/// the end goes into a failed job's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobLogs {
    /// Copy the logs at all.
    pub enabled: bool,
    /// At most this many bytes of the log's end go to the step log.
    pub max_bytes: usize,
    /// How long to wait for a log that is not there yet.
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
    /// How often to look for it meanwhile.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// At most this many bytes of the end go into a failed job's error.
    pub error_bytes: usize,
}

impl Default for JobLogs {
    fn default() -> Self {
        let tail = TailOptions::default();
        JobLogs {
            enabled: true,
            max_bytes: tail.max_bytes,
            wait: tail.wait,
            interval: tail.interval,
            error_bytes: 2048,
        }
    }
}

impl JobLogs {
    /// On, reading as `tail` says, 2 KiB into an error (a cloud's
    /// defaults when they differ from [`JobLogs::default`]).
    pub fn from_tail(tail: TailOptions) -> Self {
        JobLogs {
            max_bytes: tail.max_bytes,
            wait: tail.wait,
            interval: tail.interval,
            ..JobLogs::default()
        }
    }

    /// The read's bounds.
    pub fn tail_options(&self) -> TailOptions {
        TailOptions {
            max_bytes: self.max_bytes,
            wait: self.wait,
            interval: self.interval,
        }
    }
}

/// The keys of a `job_logs` table as written (each may be left out).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobLogsKeys {
    enabled: Option<bool>,
    max_bytes: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    wait: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    error_bytes: Option<usize>,
}

/// Reads a `job_logs` table, taking the keys it leaves out from
/// `defaults` (a cloud's), not from [`JobLogs::default`]: for a cloud whose
/// defaults differ (Dataproc's driver output is there at once; EMR uploads
/// its logs minutes late).
///
/// ```text
/// #[serde(deserialize_with = "job_logs")]
/// job_logs: JobLogs,
/// fn job_logs<'de, D: Deserializer<'de>>(d: D) -> Result<JobLogs, D::Error> {
///     flow_cloud::deserialize_job_logs_over(d, default_job_logs())
/// }
/// ```
pub fn deserialize_job_logs_over<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    defaults: JobLogs,
) -> Result<JobLogs, D::Error> {
    let keys = JobLogsKeys::deserialize(deserializer)?;
    Ok(JobLogs {
        enabled: keys.enabled.unwrap_or(defaults.enabled),
        max_bytes: keys.max_bytes.unwrap_or(defaults.max_bytes),
        wait: keys.wait.unwrap_or(defaults.wait),
        interval: keys.interval.unwrap_or(defaults.interval),
        error_bytes: keys.error_bytes.unwrap_or(defaults.error_bytes),
    })
}

/// The end of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The last lines, lossily decoded as UTF-8. When the log was longer
    /// than `max_bytes`, it starts at a line boundary.
    pub text: String,
    /// The log was longer than what `text` holds.
    pub truncated: bool,
}

/// The last `options.max_bytes` of `location`, or `None` if it did not
/// appear within `options.wait`. A location ending in `.gz` is decompressed.
pub async fn tail(
    objects: &dyn RemoteObjects,
    location: &str,
    options: &TailOptions,
    clock: &Arc<dyn Clock>,
) -> Result<Option<Tail>, TailError> {
    let started = clock.now();
    let size = loop {
        if let Some(size) = objects.size(location).await? {
            break size;
        }
        let waited = clock.now().saturating_sub(started);
        if waited >= options.wait {
            return Ok(None);
        }
        tracing::debug!(location, ?waited, "log not there yet");
        clock
            .sleep(options.interval.min(options.wait - waited))
            .await;
    };
    let max = options.max_bytes;
    let (bytes, truncated) = if location.ends_with(".gz") {
        let compressed = objects.read_from(location, 0).await?;
        let mut decoder = GzipDecoder::new(BufReader::new(compressed));
        decoder.multiple_members(true);
        keep_last(decoder, max, location).await?
    } else {
        let offset = size.saturating_sub(max as u64);
        let stream = objects.read_from(location, offset).await?;
        let (bytes, more) = keep_last(stream, max, location).await?;
        (bytes, more || offset > 0)
    };
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if truncated {
        // Drop the partial first line.
        if let Some(newline) = text.find('\n') {
            text.drain(..=newline);
        }
    }
    Ok(Some(Tail { text, truncated }))
}

impl Tail {
    /// Writes the text into the log line by line under a heading naming
    /// `what` (INFO, or WARN after a failure), and returns its last
    /// `error_bytes`, starting at a line, for an error message.
    pub fn log(&self, what: &str, failed: bool, error_bytes: usize) -> String {
        let heading = if self.truncated {
            format!("the end of {what}:")
        } else {
            format!("{what}:")
        };
        for line in std::iter::once(heading.as_str()).chain(self.text.lines()) {
            if failed {
                tracing::warn!("{line}");
            } else {
                tracing::info!("{line}");
            }
        }
        last_lines(&self.text, error_bytes).trim_end().to_string()
    }
}

/// The last `max` bytes of `text`, starting at a line (for the lines of a
/// log's tail that go into an error message).
///
/// ```
/// assert_eq!(flow_cloud::tail::last_lines("first line\nsecond\nthird\n", 10), "third\n");
/// ```
pub fn last_lines(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let tail = &text[start..];
    match tail.find('\n') {
        Some(newline) if newline + 1 < tail.len() => &tail[newline + 1..],
        _ => tail,
    }
}

/// Reads `stream` to its end keeping its last `max` bytes; returns them and
/// whether anything was dropped.
async fn keep_last(
    mut stream: impl AsyncRead + Unpin,
    max: usize,
    location: &str,
) -> Result<(Vec<u8>, bool), TailError> {
    let mut kept: VecDeque<u8> = VecDeque::with_capacity(max.min(1 << 20));
    let mut dropped = false;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buffer).await.map_err(|e| TailError {
            location: location.to_string(),
            message: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        kept.extend(&buffer[..n]);
        if kept.len() > max {
            dropped = true;
            let excess = kept.len() - max;
            kept.drain(..excess);
        }
    }
    Ok((kept.into(), dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Section {
        #[serde(deserialize_with = "short")]
        job_logs: JobLogs,
    }

    fn short<'de, D: serde::Deserializer<'de>>(d: D) -> Result<JobLogs, D::Error> {
        deserialize_job_logs_over(
            d,
            JobLogs::from_tail(TailOptions {
                max_bytes: 100,
                wait: Duration::from_secs(30),
                interval: Duration::from_secs(5),
            }),
        )
    }

    #[test]
    fn a_job_logs_table_takes_the_keys_it_lacks_from_the_clouds_defaults() {
        let s: Section = toml::from_str("[job_logs]\nmax_bytes = 7\n").unwrap();
        assert_eq!(s.job_logs.max_bytes, 7);
        assert_eq!(s.job_logs.wait, Duration::from_secs(30));
        assert_eq!(s.job_logs.interval, Duration::from_secs(5));
        assert!(s.job_logs.enabled);
        assert_eq!(s.job_logs.error_bytes, 2048);
        let e = toml::from_str::<Section>("[job_logs]\nmax_byte = 7\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `max_byte`"), "{e}");
        let plain: JobLogs = toml::from_str("enabled = false\n").unwrap();
        assert_eq!(plain.wait, TailOptions::default().wait);
        assert!(!plain.enabled);
    }

    #[test]
    fn last_lines_start_at_a_line() {
        assert_eq!(last_lines("a\nb\nc\n", 100), "a\nb\nc\n");
        assert_eq!(last_lines("first line\nsecond\nthird\n", 10), "third\n");
        assert_eq!(last_lines("ééé", 3), "é");
    }
}
