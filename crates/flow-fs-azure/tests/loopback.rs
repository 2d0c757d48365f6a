//! Retries and timeouts against a raw HTTP server on a loopback port (no
//! emulator answers 503 or hangs on purpose): what the service's throttling
//! and a hung connection do to a call, and the delay a throttling answer
//! asks for.

use flow_core::{Filesystem, Secret};
use flow_fs_azure::{AzureBlobFilesystem, AzureBlobFilesystemBuilder, AzureCredential};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A Put Blob's answer as the service writes it.
const CREATED: &str = "HTTP/1.1 201 Created\r\netag: \"0x8D\"\r\nlast-modified: Mon, 07 Dec 2026 08:00:00 GMT\r\ndate: Mon, 07 Dec 2026 08:00:00 GMT\r\nx-ms-request-id: 9a0d2b0e-0000-0000-0000-000000000000\r\nx-ms-request-server-encrypted: true\r\ncontent-md5: 1B2M2Y8AsgTpgAmY7PhCfg==\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const BUSY: &str = "HTTP/1.1 503 Server Busy\r\nx-ms-error-code: ServerBusy\r\nx-ms-request-id: 9a0d2b0e-0000-0000-0000-000000000001\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const THROTTLED: &str = "HTTP/1.1 429 Too Many Requests\r\nx-ms-error-code: TooManyRequests\r\nx-ms-request-id: 9a0d2b0e-0000-0000-0000-000000000002\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// A 429 asking for 7 s (`Retry-After`, seconds), and a 503 asking for
/// 1.5 s (Azure's `x-ms-retry-after-ms`).
const THROTTLED_7S: &str = "HTTP/1.1 429 Too Many Requests\r\nx-ms-error-code: TooManyRequests\r\nretry-after: 7\r\nx-ms-request-id: 9a0d2b0e-0000-0000-0000-000000000003\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const BUSY_1500MS: &str = "HTTP/1.1 503 Server Busy\r\nx-ms-error-code: ServerBusy\r\nx-ms-retry-after-ms: 1500\r\nx-ms-request-id: 9a0d2b0e-0000-0000-0000-000000000004\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// A server answering its n-th request with `answers[n]` (`None`: read the
/// request, never answer); the count of requests it read.
async fn peer(answers: Vec<Option<&'static str>>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/devstoreaccount1", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let answer = answers.get(n).copied().flatten();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                match answer {
                    Some(answer) => {
                        let _ = socket.write_all(answer.as_bytes()).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            });
        }
    });
    (url, seen)
}

fn against(url: &str) -> AzureBlobFilesystem {
    builder(url).build().unwrap()
}

fn builder(url: &str) -> AzureBlobFilesystemBuilder {
    AzureBlobFilesystemBuilder::new()
        .with_endpoint(url)
        .with_account("devstoreaccount1")
        .with_credential(AzureCredential::Key(Secret::new(
            "bG9vcGJhY2sta2V5LWZvci10ZXN0cw==",
        )))
        .with_container("data")
        .with_retry(flow_cloud::RetryConfig {
            max_retries: 2,
            initial_delay: Duration::from_millis(10),
            jitter: false,
            ..Default::default()
        })
        .with_timeouts(
            Duration::from_millis(200),
            Duration::from_millis(300),
            Duration::from_secs(1),
        )
}

/// Without the client's timeouts the call would hang forever; this bound
/// turns that into a failure.
async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the call hung: no timeout fired")
}

#[tokio::test]
async fn throttling_and_server_busy_are_retried_until_the_service_accepts() {
    let (url, seen) = peer(vec![Some(THROTTLED), Some(BUSY), Some(CREATED)]).await;
    let fs = against(&url);
    bounded(fs.mkdir("reports")).await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 3, "429, 503, then 201");
}

#[tokio::test]
async fn retries_end_with_the_services_code_in_the_error() {
    let (url, seen) = peer(vec![Some(BUSY), Some(BUSY), Some(BUSY), Some(CREATED)]).await;
    let fs = against(&url);
    let e = bounded(fs.mkdir("reports")).await.unwrap_err().to_string();
    assert!(e.contains("mkdir"), "{e}");
    assert!(e.contains("HTTP 503 ServerBusy"), "{e}");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "the first try and 2 retries"
    );
}

#[tokio::test]
async fn a_hung_connection_fails_naming_the_request_timeout_and_is_retried() {
    let (url, seen) = peer(vec![None, None, None]).await;
    let fs = against(&url);
    let e = bounded(fs.mkdir("reports")).await.unwrap_err().to_string();
    assert!(
        e.contains("timed out (request_timeout: no complete answer within 300ms)"),
        "{e}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_throttled_call_waits_as_long_as_the_service_asked_on_a_manual_clock() {
    let (url, seen) = peer(vec![Some(THROTTLED_7S), Some(BUSY_1500MS), Some(CREATED)]).await;
    let clock = flow_cloud::ManualClock::new();
    let fs = builder(&url)
        .with_clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let call = tokio::spawn(async move { fs.mkdir("reports").await });
    for _ in 0..2 {
        bounded(clock.wait_for_sleepers(1)).await;
        let deadline = clock.next_deadline().unwrap();
        clock.advance(deadline.saturating_sub(flow_cloud::Clock::now(&clock)));
    }
    bounded(call).await.unwrap().unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 3, "429, 503, then 201");
    // The service's delays, not the policy's 10 ms and 20 ms.
    assert_eq!(
        clock.sleeps(),
        [Duration::from_secs(7), Duration::from_millis(1500)]
    );
}

#[tokio::test]
async fn each_attempt_is_counted_on_the_meter_by_its_operation() {
    let meter = flow_core::testkit::meter::RecordingMeter::installed();
    let before = meter.requests("blob", "PUT");
    let (url, seen) = peer(vec![Some(THROTTLED), Some(CREATED)]).await;
    let fs = against(&url);
    bounded(fs.mkdir("reports")).await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    // Both attempts; other tests of this binary add to the same counts.
    assert!(
        meter.requests("blob", "PUT") >= before + 2,
        "{:?}",
        meter.calls()
    );
}
