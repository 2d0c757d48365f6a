//! [`GcsBackend`]: the object primitives of `flow_fs_object` on the GCS
//! JSON API: object metadata, listings, simple and resumable uploads,
//! downloads, deletions, and copies with `rewriteTo` following
//! `rewriteToken`. The requests go through [`Transport`].

use crate::config::GcsConfig;
use crate::transport::{CallError, Transport, SEGMENT};
use async_trait::async_trait;
use bytes::Bytes;
use flow_cloud::tail::ObjectStream;
use flow_core::FsError;
use flow_fs_object::{ListPage, ObjectBackend, ObjectInfo, ObjectLocation};
use futures_util::stream::TryStreamExt;
use percent_encoding::utf8_percent_encode;
use reqwest::{header, Method, StatusCode};
use serde::Deserialize;
use std::fmt;
use std::future::Future;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

#[derive(Deserialize)]
struct ObjectMeta {
    #[serde(default)]
    size: Option<String>,
}

impl ObjectMeta {
    /// The JSON API writes sizes as decimal strings.
    fn bytes(&self) -> u64 {
        self.size
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectsPage {
    #[serde(default)]
    items: Vec<ListItem>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct ListItem {
    name: String,
    #[serde(flatten)]
    meta: ObjectMeta,
}

/// One `rewriteTo` answer.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RewriteAnswer {
    pub done: bool,
    #[serde(default)]
    pub rewrite_token: Option<String>,
}

/// Calls `call` with the previous answer's `rewriteToken` until the answer
/// says `done`: how a large or cross-location copy completes.
pub(crate) async fn rewrite_until_done<F, Fut, E>(mut call: F) -> Result<u32, E>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<RewriteAnswer, E>>,
{
    let mut token = None;
    let mut calls = 0;
    loop {
        let answer = call(token.take()).await?;
        calls += 1;
        if answer.done {
            return Ok(calls);
        }
        token = answer.rewrite_token.filter(|t| !t.is_empty());
    }
}

/// The GCS primitives: the transport and the settings.
pub struct GcsBackend {
    transport: Transport,
    config: GcsConfig,
}

impl fmt::Debug for GcsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsFilesystem")
            .field("endpoint", &self.transport.endpoint())
            .field("auth", self.transport.google())
            .field("config", &self.config)
            .finish()
    }
}

impl GcsBackend {
    pub(crate) fn new(transport: Transport, config: GcsConfig) -> Self {
        GcsBackend { transport, config }
    }

    /// The settings it was built with.
    pub fn config(&self) -> &GcsConfig {
        &self.config
    }

    /// The base URL requests go to.
    pub fn endpoint(&self) -> &str {
        self.transport.endpoint()
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests_made(&self) -> u64 {
        self.transport.requests()
    }

    /// Uploads `body` as one request (small objects and markers).
    async fn upload_bytes(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        body: Bytes,
    ) -> Result<(), FsError> {
        let url = self.transport.upload_url(&at.bucket);
        self.transport
            .send_transfer(op, |http| {
                http.post(&url)
                    .query(&[("uploadType", "media"), ("name", at.key.as_str())])
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone())
            })
            .await
            .map_err(|e| e.into_fs(op, at))?;
        Ok(())
    }

    /// A resumable upload of the `size` bytes of `local`, one chunk in
    /// memory at a time; resumes from what the service says it has.
    async fn upload_resumable(
        &self,
        op: &'static str,
        local: &Path,
        size: u64,
        at: &ObjectLocation,
    ) -> Result<(), FsError> {
        let url = self.transport.upload_url(&at.bucket);
        let started = self
            .transport
            .send(op, |http| {
                http.post(&url)
                    .query(&[("uploadType", "resumable"), ("name", at.key.as_str())])
                    .header("X-Upload-Content-Type", "application/octet-stream")
                    .header("X-Upload-Content-Length", size)
                    .json(&serde_json::json!({}))
            })
            .await
            .map_err(|e| e.into_fs(op, at))?;
        let session = started
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| FsError::Backend {
                op,
                location: at.to_string(),
                message: "the resumable upload answer has no Location".into(),
            })?;
        let shown = local.display().to_string();
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| FsError::io(op, shown.clone(), e))?;
        let chunk = self.config.upload_chunk_size;
        let mut offset = 0u64;
        while offset < size {
            let len = chunk.min(size - offset);
            let mut buffer = vec![0u8; len as usize];
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| FsError::io(op, shown.clone(), e))?;
            file.read_exact(&mut buffer)
                .await
                .map_err(|e| FsError::io(op, shown.clone(), e))?;
            let body = Bytes::from(buffer);
            let end = offset + len - 1;
            let range = format!("bytes {offset}-{end}/{size}");
            let answer = self
                .transport
                .send_transfer(op, |http| {
                    http.put(&session)
                        .header(header::CONTENT_RANGE, &range)
                        .body(body.clone())
                })
                .await
                .map_err(|e| e.into_fs(op, at))?;
            if answer.status() != StatusCode::PERMANENT_REDIRECT {
                // 200/201: the object is complete.
                return Ok(());
            }
            // 308: go on after what the service has persisted.
            offset = answer
                .headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit('-').next())
                .and_then(|last| last.parse::<u64>().ok())
                .map_or(0, |last| last + 1);
        }
        Err(FsError::Backend {
            op,
            location: at.to_string(),
            message: format!("the service did not complete the upload after all {size} bytes"),
        })
    }
}

#[async_trait]
impl ObjectBackend for GcsBackend {
    fn schemes(&self) -> &'static [&'static str] {
        &["gs"]
    }

    async fn head(&self, op: &'static str, at: &ObjectLocation) -> Result<u64, FsError> {
        let url = self.transport.object_url(&at.bucket, &at.key);
        let response = self
            .transport
            .send(op, |http| http.get(&url).query(&[("fields", "size")]))
            .await
            .map_err(|e| e.into_fs(op, at))?;
        let meta: ObjectMeta = response
            .json()
            .await
            .map_err(|e| CallError::Transport(e).into_fs(op, at))?;
        Ok(meta.bytes())
    }

    async fn list_page(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        prefix: &str,
        token: Option<String>,
        max: u32,
    ) -> Result<ListPage, FsError> {
        let url = self.transport.objects_url(&at.bucket);
        let max = max.to_string();
        let response = self
            .transport
            .send(op, |http| {
                let mut query = vec![
                    ("prefix", prefix),
                    ("maxResults", max.as_str()),
                    ("fields", "items(name,size),nextPageToken"),
                ];
                if let Some(token) = &token {
                    query.push(("pageToken", token));
                }
                http.get(&url).query(&query)
            })
            .await
            .map_err(|e| e.into_fs(op, at))?;
        let page: ObjectsPage = response
            .json()
            .await
            .map_err(|e| CallError::Transport(e).into_fs(op, at))?;
        Ok(ListPage {
            objects: page
                .items
                .into_iter()
                .map(|item| ObjectInfo {
                    size: item.meta.bytes(),
                    key: item.name,
                })
                .collect(),
            next: page.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    async fn put(&self, op: &'static str, at: &ObjectLocation, body: Bytes) -> Result<(), FsError> {
        self.upload_bytes(op, at, body).await
    }

    /// Above [`GcsConfig::resumable_threshold`] a resumable upload, one
    /// chunk in memory; else one request with the file's bytes.
    async fn upload_file(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        local: &Path,
        size: u64,
    ) -> Result<(), FsError> {
        if size > self.config.resumable_threshold {
            return self.upload_resumable(op, local, size, at).await;
        }
        let bytes = tokio::fs::read(local)
            .await
            .map_err(|e| FsError::io(op, local.display().to_string(), e))?;
        self.upload_bytes(op, at, Bytes::from(bytes)).await
    }

    async fn get(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        offset: u64,
    ) -> Result<ObjectStream, FsError> {
        let url = self.transport.object_url(&at.bucket, &at.key);
        let response = self
            .transport
            .send_transfer(op, |http| {
                let request = http.get(&url).query(&[("alt", "media")]);
                if offset > 0 {
                    request.header(header::RANGE, format!("bytes={offset}-"))
                } else {
                    request
                }
            })
            .await
            .map_err(|e| e.into_fs(op, at))?;
        // A failed read says which timeout fired, like a failed request.
        let timeouts = self.transport.timeouts();
        let stream = response
            .bytes_stream()
            .map_err(move |e| std::io::Error::other(timeouts.failed(e, None).to_string()));
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    async fn delete(&self, op: &'static str, at: &ObjectLocation) -> Result<(), FsError> {
        let url = self.transport.object_url(&at.bucket, &at.key);
        self.transport
            .send(op, |http| http.delete(&url))
            .await
            .map_err(|e| e.into_fs(op, at))?;
        Ok(())
    }

    /// `rewriteTo`, following `rewriteToken` until the service is done
    /// (large objects, other locations or storage classes).
    async fn copy(
        &self,
        op: &'static str,
        from: &ObjectLocation,
        to: &ObjectLocation,
        _size: u64,
    ) -> Result<(), FsError> {
        let url = format!(
            "{}/rewriteTo/b/{}/o/{}",
            self.transport.object_url(&from.bucket, &from.key),
            utf8_percent_encode(&to.bucket, SEGMENT),
            utf8_percent_encode(&to.key, SEGMENT)
        );
        let shown = format!("{from} -> {to}");
        let max = self
            .config
            .rewrite_max_bytes_per_call
            .map(|n| n.to_string());
        rewrite_until_done(|token| {
            let (url, shown, max) = (&url, &shown, &max);
            async move {
                let response = self
                    .transport
                    .send(op, |http| {
                        let mut query: Vec<(&str, &str)> = Vec::new();
                        if let Some(token) = &token {
                            query.push(("rewriteToken", token));
                        }
                        if let Some(max) = max {
                            query.push(("maxBytesRewrittenPerCall", max));
                        }
                        http.request(Method::POST, url.as_str())
                            .query(&query)
                            .json(&serde_json::json!({}))
                    })
                    .await
                    .map_err(|e| e.into_fs(op, shown))?;
                response
                    .json::<RewriteAnswer>()
                    .await
                    .map_err(|e| CallError::Transport(e).into_fs(op, shown))
            }
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GcsFilesystem;
    use flow_core::Filesystem;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    /// The `rewriteToken` continuation, on scripted answers: fake-gcs-server
    /// always finishes a rewrite in one call, so the loop is checked here.
    #[tokio::test]
    async fn a_rewrite_follows_its_token_until_done() {
        let answers = Mutex::new(VecDeque::from([
            RewriteAnswer {
                done: false,
                rewrite_token: Some("t1".into()),
            },
            RewriteAnswer {
                done: false,
                rewrite_token: Some("t2".into()),
            },
            RewriteAnswer {
                done: true,
                rewrite_token: None,
            },
        ]));
        let seen = Mutex::new(Vec::new());
        let calls = rewrite_until_done(|token| {
            seen.lock().unwrap().push(token);
            let answer = answers.lock().unwrap().pop_front().unwrap();
            async move { Ok::<_, ()>(answer) }
        })
        .await
        .unwrap();
        assert_eq!(calls, 3);
        assert_eq!(
            *seen.lock().unwrap(),
            [None, Some("t1".to_string()), Some("t2".to_string())]
        );
    }

    /// How the loopback server of the timeout tests answers.
    #[derive(Clone, Copy)]
    enum Peer {
        /// Accepts, reads the request, never answers.
        Silent,
        /// Sends the headers of a 1,000-byte object and 10 bytes, then
        /// nothing.
        Stalls,
        /// Sends a 1,000-byte object 50 bytes at a time, 50 ms apart.
        Trickles,
    }

    /// A raw HTTP/1.1 server on a free loopback port (no emulator answers
    /// wrongly on purpose); its connections live as long as the task.
    async fn peer(mode: Peer) -> (String, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                held.push(tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let headers = "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 1000\r\n\r\n";
                    match mode {
                        Peer::Silent => {}
                        Peer::Stalls => {
                            let _ = socket.write_all(headers.as_bytes()).await;
                            let _ = socket.write_all(&[b'x'; 10]).await;
                        }
                        Peer::Trickles => {
                            let _ = socket.write_all(headers.as_bytes()).await;
                            for _ in 0..20 {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                let _ = socket.write_all(&[b'x'; 50]).await;
                            }
                        }
                    }
                    std::future::pending::<()>().await;
                }));
            }
        });
        (url, task)
    }

    /// Short limits: a 200 ms connect and request timeout, a 1 s idle
    /// read timeout, one retry.
    fn against(url: &str) -> GcsFilesystem {
        crate::GcsFilesystemBuilder::new()
            .with_endpoint(url)
            .with_bucket("data")
            .with_retry(flow_cloud::RetryConfig {
                max_retries: 1,
                initial_delay: Duration::from_millis(10),
                jitter: false,
                ..Default::default()
            })
            .with_timeouts(
                Duration::from_millis(200),
                Duration::from_millis(200),
                Duration::from_secs(1),
            )
            .build_with_credentials(None)
            .unwrap()
    }

    /// The test's own bound: without the client's timeouts the call would
    /// hang forever; this turns that into a failure.
    async fn bounded<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("the call hung: no timeout fired")
    }

    #[tokio::test]
    async fn an_api_call_on_a_hung_connection_fails_naming_the_timeout_on_a_silent_loopback_peer() {
        let (url, _server) = peer(Peer::Silent).await;
        let fs = against(&url);
        let e = bounded(fs.exists("reports/day.csv")).await.unwrap_err();
        let message = e.to_string();
        assert!(message.contains("exists"), "{message}");
        assert!(
            message.contains("timed out (request_timeout: no complete answer within 200ms)"),
            "{message}"
        );
        assert_eq!(fs.requests_made(), 2, "retried once");
    }

    #[tokio::test]
    async fn a_download_that_stalls_fails_on_the_read_timeout_and_leaves_no_file_on_a_stalling_loopback_peer(
    ) {
        let (url, _server) = peer(Peer::Stalls).await;
        let fs = against(&url);
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("day.csv");
        let e = bounded(fs.copy_to_local("reports/day.csv", &local))
            .await
            .unwrap_err();
        let message = e.to_string();
        assert!(message.contains("copy_to_local"), "{message}");
        assert!(
            message.contains("timed out (read_timeout: no data within 1s)"),
            "{message}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_download_longer_than_the_request_timeout_is_not_cut_while_data_flows_on_a_trickling_loopback_peer(
    ) {
        let (url, _server) = peer(Peer::Trickles).await;
        let fs = against(&url);
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("day.csv");
        bounded(fs.copy_to_local("reports/day.csv", &local))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&local).unwrap(), vec![b'x'; 1000]);
    }
}
