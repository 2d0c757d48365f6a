//! The log-tail helper over an in-memory store whose objects can appear
//! late, on a manual clock.

use async_compression::tokio::bufread::GzipEncoder;
use async_trait::async_trait;
use flow_cloud::tail::ObjectStream;
use flow_cloud::{tail, Clock, ManualClock, RemoteObjects, TailError, TailOptions};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;

#[derive(Default)]
struct Memory {
    clock: Option<Arc<dyn Clock>>,
    /// location -> (visible from, bytes)
    objects: Mutex<HashMap<String, (Duration, Vec<u8>)>>,
    /// Bytes handed out by read_from, to check that a plain tail reads only
    /// the suffix.
    bytes_read: AtomicUsize,
    size_calls: AtomicUsize,
}

impl Memory {
    fn put(&self, location: &str, visible_from: Duration, bytes: Vec<u8>) {
        self.objects
            .lock()
            .unwrap()
            .insert(location.into(), (visible_from, bytes));
    }
    fn now(&self) -> Duration {
        self.clock.as_ref().map_or(Duration::ZERO, |c| c.now())
    }
}

#[async_trait]
impl RemoteObjects for Memory {
    async fn size(&self, location: &str) -> Result<Option<u64>, TailError> {
        self.size_calls.fetch_add(1, Ordering::Relaxed);
        let now = self.now();
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(location)
            .filter(|(from, _)| *from <= now)
            .map(|(_, bytes)| bytes.len() as u64))
    }
    async fn read_from(&self, location: &str, offset: u64) -> Result<ObjectStream, TailError> {
        let bytes = self.objects.lock().unwrap()[location].1[offset as usize..].to_vec();
        self.bytes_read.fetch_add(bytes.len(), Ordering::Relaxed);
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }
}

fn log_lines(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("line {i:06} of the step's stderr\n"))
        .collect::<String>()
        .into_bytes()
}

async fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzipEncoder::new(bytes).read_to_end(&mut out).await.unwrap();
    out
}

fn options(max_bytes: usize) -> TailOptions {
    TailOptions {
        max_bytes,
        wait: Duration::from_secs(60),
        interval: Duration::from_secs(10),
    }
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::new())
}

#[tokio::test]
async fn a_plain_log_is_read_from_its_suffix_only() {
    let memory = Memory::default();
    let log = log_lines(10_000); // ~340 KB
    memory.put("logs/stderr", Duration::ZERO, log.clone());
    let got = tail(&memory, "logs/stderr", &options(1000), &clock())
        .await
        .unwrap()
        .unwrap();
    assert!(got.truncated);
    assert!(got.text.ends_with("line 009999 of the step's stderr\n"));
    assert!(got.text.starts_with("line "), "starts at a line boundary");
    assert!(got.text.len() <= 1000);
    assert_eq!(memory.bytes_read.load(Ordering::Relaxed), 1000);

    memory.put("logs/short", Duration::ZERO, b"only line\n".to_vec());
    let got = tail(&memory, "logs/short", &options(1000), &clock())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.text, "only line\n");
    assert!(!got.truncated);
}

#[tokio::test]
async fn a_gzip_log_is_decompressed_and_its_text_tail_kept() {
    let memory = Memory::default();
    let log = log_lines(20_000);
    memory.put("steps/s-1/stderr.gz", Duration::ZERO, gzip(&log).await);
    let got = tail(&memory, "steps/s-1/stderr.gz", &options(4096), &clock())
        .await
        .unwrap()
        .unwrap();
    assert!(got.truncated);
    let expected_end = String::from_utf8(log[log.len() - 2000..].to_vec()).unwrap();
    assert!(got.text.ends_with(&expected_end));
    assert!(got.text.starts_with("line "));
    assert!(got.text.len() <= 4096);
}

#[tokio::test]
async fn a_late_log_is_waited_for_within_the_bound() {
    let manual = ManualClock::new();
    let clock: Arc<dyn Clock> = Arc::new(manual.clone());
    let memory = Arc::new(Memory {
        clock: Some(clock.clone()),
        ..Memory::default()
    });
    memory.put("late.gz", Duration::from_secs(25), gzip(b"finally\n").await);
    let task = tokio::spawn({
        let memory = memory.clone();
        let clock = clock.clone();
        async move { tail(&*memory, "late.gz", &options(100), &clock).await }
    });
    for _ in 0..3 {
        manual.wait_for_sleepers(1).await;
        manual.advance(Duration::from_secs(10));
    }
    let got = task.await.unwrap().unwrap().unwrap();
    assert_eq!(got.text, "finally\n");
    // Looked at 0, 10, 20 (absent) and 30 s.
    assert_eq!(memory.size_calls.load(Ordering::Relaxed), 4);

    // One that never comes: None after the wait, not an error.
    let task = tokio::spawn({
        let memory = memory.clone();
        let clock = clock.clone();
        async move { tail(&*memory, "never", &options(100), &clock).await }
    });
    for _ in 0..6 {
        manual.wait_for_sleepers(1).await;
        manual.advance(Duration::from_secs(10));
    }
    assert_eq!(task.await.unwrap().unwrap(), None);
    assert_eq!(memory.size_calls.load(Ordering::Relaxed), 4 + 7);
}
