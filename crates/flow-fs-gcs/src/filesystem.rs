//! [`GcsFilesystem`]: the `Filesystem` operations on the GCS JSON API.

use crate::config::GcsConfig;
use async_trait::async_trait;
use bytes::Bytes;
use flow_cloud::retry::{is_transient_status, parse_retry_after};
use flow_cloud::tail::{ObjectStream, RemoteObjects, TailError};
use flow_cloud::{Clock, TokioClock, Transient};
use flow_core::filesystem::normalize_key;
use flow_core::{Filesystem, FsError};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{header, Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

const FOLDER_MARKER: &str = "_$folder$";
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// Object names are one path segment in the JSON API: `/` is encoded too.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How requests are authorized.
#[derive(Clone)]
pub(crate) enum Auth {
    /// An emulator: no credentials are sent.
    None,
    Token(Arc<dyn gcp_auth::TokenProvider>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auth::None => "none (emulator)",
            Auth::Token(_) => "OAuth token provider",
        })
    }
}

/// A bucket and an object name, shown as `gs://bucket/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GcsLocation {
    /// The bucket.
    pub bucket: String,
    /// The object name (or prefix) within it.
    pub name: String,
}

impl GcsLocation {
    fn child(&self, name: String) -> GcsLocation {
        GcsLocation {
            bucket: self.bucket.clone(),
            name,
        }
    }
    fn marker(&self) -> GcsLocation {
        self.child(format!("{}{FOLDER_MARKER}", self.name))
    }
    fn dir_prefix(&self) -> String {
        format!("{}/", self.name)
    }
}

impl fmt::Display for GcsLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gs://{}/{}", self.bucket, self.name)
    }
}

/// The GCS filesystem. Cheap to clone.
#[derive(Clone)]
pub struct GcsFilesystem {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    auth: Auth,
    endpoint: String,
    config: GcsConfig,
    prefix: String,
    clock: Arc<dyn Clock>,
    requests: AtomicU64,
}

impl fmt::Debug for GcsFilesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsFilesystem")
            .field("endpoint", &self.inner.endpoint)
            .field("auth", &self.inner.auth)
            .field("config", &self.inner.config)
            .finish()
    }
}

/// A failed request, before it becomes an [`FsError`]. Holds no header of
/// the request, so no token can leak through it.
#[derive(Debug)]
enum CallError {
    Status {
        status: StatusCode,
        body: String,
        retry_after: Option<Duration>,
    },
    Transport(reqwest::Error),
    /// A connect, request or read timeout, with the limit that fired.
    TimedOut(String),
    Auth(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Status { status, body, .. } => write!(f, "HTTP {status}: {body}"),
            // Without the URL: it holds nothing secret, but it is long and
            // the caller names the object already.
            CallError::Transport(e) => write!(f, "{}", e.without_url_ref()),
            CallError::TimedOut(message) => f.write_str(message),
            CallError::Auth(message) => write!(f, "cannot get an access token: {message}"),
        }
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text.replace(&format!(" ({url})"), "");
        }
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

impl Transient for CallError {
    fn is_transient(&self) -> bool {
        match self {
            CallError::Status { status, .. } => is_transient_status(status.as_u16()),
            CallError::Transport(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            CallError::TimedOut(_) => true,
            CallError::Auth(_) => false,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl CallError {
    fn into_fs(self, op: &'static str, location: &impl fmt::Display) -> FsError {
        if let CallError::Status { status, .. } = &self {
            if *status == StatusCode::NOT_FOUND {
                return FsError::NotFound {
                    op,
                    location: location.to_string(),
                };
            }
        }
        FsError::Backend {
            op,
            location: location.to_string(),
            message: self.to_string(),
        }
    }
}

/// Turns a non-success answer into a [`CallError`]; keeps 308 (resumable
/// upload: "go on") as success.
async fn check(response: Response) -> Result<Response, CallError> {
    let status = response.status();
    if status.is_success() || status == StatusCode::PERMANENT_REDIRECT {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let mut body = response.text().await.unwrap_or_default();
    body.truncate(500);
    Err(CallError::Status {
        status,
        body,
        retry_after,
    })
}

#[derive(Deserialize)]
struct ObjectMeta {
    #[serde(default)]
    size: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<ListItem>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct ListItem {
    name: String,
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

impl GcsFilesystem {
    pub(crate) fn new(
        http: reqwest::Client,
        auth: Auth,
        endpoint: String,
        config: GcsConfig,
        prefix: String,
    ) -> Self {
        GcsFilesystem {
            inner: Arc::new(Inner {
                http,
                auth,
                endpoint,
                config,
                prefix,
                clock: Arc::new(TokioClock::new()),
                requests: AtomicU64::new(0),
            }),
        }
    }

    /// The settings it was built with.
    pub fn config(&self) -> &GcsConfig {
        &self.inner.config
    }

    /// The base URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests_made(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Where `key` is: `gs://bucket/name`, or a key in the default bucket
    /// under the prefix. Refuses keys that leave their bucket or prefix.
    pub fn locate(&self, op: &'static str, key: &str) -> Result<GcsLocation, FsError> {
        if let Some(rest) = key.strip_prefix("gs://") {
            let (bucket, name) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(FsError::Backend {
                    op,
                    location: key.to_string(),
                    message: "the address names no bucket".into(),
                });
            }
            let name = normalize_key(op, name).map_err(|e| match e {
                FsError::InvalidKey { problem, .. } => FsError::invalid_key(op, key, problem),
                other => other,
            })?;
            return Ok(GcsLocation {
                bucket: bucket.to_string(),
                name,
            });
        }
        let Some(bucket) = &self.inner.config.bucket else {
            return Err(FsError::Backend {
                op,
                location: key.to_string(),
                message: "no default bucket: set `bucket` in the settings or write gs://BUCKET/KEY"
                    .into(),
            });
        };
        let relative = normalize_key(op, key)?;
        let name = if self.inner.prefix.is_empty() {
            relative
        } else {
            format!("{}/{relative}", self.inner.prefix)
        };
        Ok(GcsLocation {
            bucket: bucket.clone(),
            name,
        })
    }

    fn object_url(&self, at: &GcsLocation) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.inner.endpoint,
            utf8_percent_encode(&at.bucket, SEGMENT),
            utf8_percent_encode(&at.name, SEGMENT)
        )
    }

    fn upload_url(&self, bucket: &str) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o",
            self.inner.endpoint,
            utf8_percent_encode(bucket, SEGMENT)
        )
    }

    /// Sends the API request `make` builds (bounded by `request_timeout`),
    /// authorized, retrying transient failures. `make` is called again for
    /// each attempt.
    async fn send(
        &self,
        what: &str,
        make: impl Fn(reqwest::Client) -> RequestBuilder + Send + Sync,
    ) -> Result<Response, CallError> {
        self.send_with(what, Some(self.inner.config.request_timeout), make)
            .await
    }

    /// Like [`send`](Self::send) for a transfer: no total timeout, only the
    /// client's idle `read_timeout`, so a large object is never cut.
    async fn send_transfer(
        &self,
        what: &str,
        make: impl Fn(reqwest::Client) -> RequestBuilder + Send + Sync,
    ) -> Result<Response, CallError> {
        self.send_with(what, None, make).await
    }

    /// A failed request or body read, a timeout named with its setting.
    fn transport(&self, e: reqwest::Error, total: Option<Duration>) -> CallError {
        if !e.is_timeout() {
            return CallError::Transport(e);
        }
        let config = &self.inner.config;
        let (limit, setting) = if e.is_connect() {
            (config.connect_timeout, "connect_timeout: no connection")
        } else {
            match total {
                Some(total) if total <= config.read_timeout => {
                    (total, "request_timeout: no complete answer")
                }
                _ => (config.read_timeout, "read_timeout: no data"),
            }
        };
        CallError::TimedOut(format!(
            "timed out ({setting} within {}): {}",
            humantime_serde::re::humantime::format_duration(limit),
            e.without_url_ref()
        ))
    }

    async fn send_with(
        &self,
        what: &str,
        total: Option<Duration>,
        make: impl Fn(reqwest::Client) -> RequestBuilder + Send + Sync,
    ) -> Result<Response, CallError> {
        let inner = &self.inner;
        let make = &make;
        flow_cloud::retry(&inner.config.retry, &inner.clock, what, || async move {
            let mut request = make(inner.http.clone());
            if let Some(total) = total {
                request = request.timeout(total);
            }
            if let Auth::Token(provider) = &inner.auth {
                let token = provider
                    .token(&[SCOPE])
                    .await
                    .map_err(|e| CallError::Auth(e.to_string()))?;
                request = request.bearer_auth(token.as_str());
            }
            inner.requests.fetch_add(1, Ordering::Relaxed);
            let response = request.send().await.map_err(|e| self.transport(e, total))?;
            check(response).await
        })
        .await
    }

    /// Every object whose name starts with `location`'s name (a plain
    /// prefix, not only a folder), as `gs://bucket/name`, in name order,
    /// paging through the listing. For logs written in numbered parts,
    /// such as Dataproc's `driveroutput.000000000`, `.000000001`, ...
    pub async fn list_prefix(&self, location: &str) -> Result<Vec<String>, FsError> {
        let op = "list";
        let at = self.locate(op, location)?;
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let (page, next) = self
                .list_page(op, &at, &at.name, token, self.inner.config.list_page_size)
                .await?;
            names.extend(page.into_iter().map(|name| at.child(name).to_string()));
            match next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        names.sort();
        Ok(names)
    }

    /// The object's size, or `None` when there is no such object.
    async fn size_of(&self, op: &'static str, at: &GcsLocation) -> Result<Option<u64>, FsError> {
        let url = self.object_url(at);
        match self
            .send(op, |http| http.get(&url).query(&[("fields", "size")]))
            .await
        {
            Ok(response) => {
                let meta: ObjectMeta = response
                    .json()
                    .await
                    .map_err(|e| CallError::Transport(e).into_fs(op, at))?;
                Ok(Some(meta.size.and_then(|s| s.parse().ok()).unwrap_or(0)))
            }
            Err(e) => match e.into_fs(op, at) {
                FsError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// One page of object names under `prefix`.
    async fn list_page(
        &self,
        op: &'static str,
        at: &GcsLocation,
        prefix: &str,
        token: Option<String>,
        max: u32,
    ) -> Result<(Vec<String>, Option<String>), FsError> {
        let url = format!(
            "{}/storage/v1/b/{}/o",
            self.inner.endpoint,
            utf8_percent_encode(&at.bucket, SEGMENT)
        );
        let max = max.to_string();
        let response = self
            .send(op, |http| {
                let mut query = vec![
                    ("prefix", prefix),
                    ("maxResults", max.as_str()),
                    ("fields", "items(name),nextPageToken"),
                ];
                if let Some(token) = &token {
                    query.push(("pageToken", token));
                }
                http.get(&url).query(&query)
            })
            .await
            .map_err(|e| e.into_fs(op, at))?;
        let page: ListPage = response
            .json()
            .await
            .map_err(|e| CallError::Transport(e).into_fs(op, at))?;
        Ok((
            page.items.into_iter().map(|i| i.name).collect(),
            page.next_page_token.filter(|t| !t.is_empty()),
        ))
    }

    async fn delete(&self, op: &'static str, at: &GcsLocation) -> Result<(), FsError> {
        let url = self.object_url(at);
        self.send(op, |http| http.delete(&url))
            .await
            .map_err(|e| e.into_fs(op, at))?;
        Ok(())
    }

    /// Deletes `names` (concurrently); already absent ones are fine.
    async fn delete_all(
        &self,
        op: &'static str,
        at: &GcsLocation,
        names: Vec<String>,
    ) -> Result<(), FsError> {
        stream::iter(names)
            .map(|name| {
                let target = at.child(name);
                async move {
                    match self.delete(op, &target).await {
                        Err(FsError::NotFound { .. }) => Ok(()),
                        other => other,
                    }
                }
            })
            .buffer_unordered(self.inner.config.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Uploads `body` as one request (small objects and markers).
    async fn upload_bytes(
        &self,
        op: &'static str,
        at: &GcsLocation,
        body: Bytes,
    ) -> Result<(), FsError> {
        let url = self.upload_url(&at.bucket);
        self.send_transfer(op, |http| {
            http.post(&url)
                .query(&[("uploadType", "media"), ("name", at.name.as_str())])
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
        at: &GcsLocation,
    ) -> Result<(), FsError> {
        let url = self.upload_url(&at.bucket);
        let started = self
            .send(op, |http| {
                http.post(&url)
                    .query(&[("uploadType", "resumable"), ("name", at.name.as_str())])
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
        let chunk = self.inner.config.upload_chunk_size;
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

    /// Server-side copy with `rewriteTo`, following `rewriteToken`.
    async fn rewrite(
        &self,
        op: &'static str,
        from: &GcsLocation,
        to: &GcsLocation,
    ) -> Result<(), FsError> {
        let url = format!(
            "{}/rewriteTo/b/{}/o/{}",
            self.object_url(from),
            utf8_percent_encode(&to.bucket, SEGMENT),
            utf8_percent_encode(&to.name, SEGMENT)
        );
        let shown = format!("{from} -> {to}");
        let max = self
            .inner
            .config
            .rewrite_max_bytes_per_call
            .map(|n| n.to_string());
        rewrite_until_done(|token| {
            let (url, shown, max) = (&url, &shown, &max);
            async move {
                let response = self
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

    async fn transfer(
        &self,
        op: &'static str,
        from: &str,
        to: &str,
        remove: bool,
    ) -> Result<(), FsError> {
        let (from, to) = (self.locate(op, from)?, self.locate(op, to)?);
        if from == to {
            return Err(FsError::Backend {
                op,
                location: from.to_string(),
                message: "source and destination are the same object".into(),
            });
        }
        if self.size_of(op, &from).await?.is_some() {
            self.rewrite(op, &from, &to).await?;
            if remove {
                self.delete(op, &from).await?;
            }
            return Ok(());
        }
        if to.bucket == from.bucket && to.name.starts_with(&from.dir_prefix()) {
            return Err(FsError::Backend {
                op,
                location: format!("{from} -> {to}"),
                message: "cannot copy a prefix into itself".into(),
            });
        }
        let prefix = from.dir_prefix();
        let page_size = self.inner.config.list_page_size;
        let mut token = None;
        let mut found = false;
        loop {
            let (names, next) = self.list_page(op, &from, &prefix, token, page_size).await?;
            found |= !names.is_empty();
            stream::iter(names.iter().cloned())
                .map(|name| {
                    let target = to.child(format!("{}/{}", to.name, &name[prefix.len()..]));
                    let source = from.child(name);
                    async move { self.rewrite(op, &source, &target).await }
                })
                .buffer_unordered(self.inner.config.concurrency)
                .try_collect::<Vec<()>>()
                .await?;
            if remove {
                self.delete_all(op, &from, names).await?;
            }
            match next {
                Some(next) if !remove => token = Some(next),
                Some(_) => token = None,
                None => break,
            }
        }
        let marker = from.marker();
        if self.size_of(op, &marker).await?.is_some() {
            found = true;
            self.rewrite(op, &marker, &to.marker()).await?;
            if remove {
                self.delete(op, &marker).await?;
            }
        }
        if !found {
            return Err(FsError::NotFound {
                op,
                location: from.to_string(),
            });
        }
        Ok(())
    }

    /// A streaming download of `at` from `offset`.
    async fn download(
        &self,
        op: &'static str,
        at: &GcsLocation,
        offset: u64,
    ) -> Result<Response, FsError> {
        let url = self.object_url(at);
        self.send_transfer(op, |http| {
            let request = http.get(&url).query(&[("alt", "media")]);
            if offset > 0 {
                request.header(header::RANGE, format!("bytes={offset}-"))
            } else {
                request
            }
        })
        .await
        .map_err(|e| e.into_fs(op, at))
    }
}

fn partial_path(local: &Path) -> PathBuf {
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    local.with_file_name(format!(".{name}.flow-partial-{}", std::process::id()))
}

#[async_trait]
impl Filesystem for GcsFilesystem {
    async fn mkdir(&self, path: &str) -> Result<(), FsError> {
        let at = self.locate("mkdir", path)?;
        let mut folder = String::new();
        for segment in at.name.split('/') {
            if !folder.is_empty() {
                folder.push('/');
            }
            folder.push_str(segment);
            let marker = at.child(format!("{folder}{FOLDER_MARKER}"));
            self.upload_bytes("mkdir", &marker, Bytes::new()).await?;
        }
        Ok(())
    }

    async fn rmdir(&self, path: &str) -> Result<(), FsError> {
        let at = self.locate("rmdir", path)?;
        let prefix = at.dir_prefix();
        loop {
            let (names, next) = self
                .list_page(
                    "rmdir",
                    &at,
                    &prefix,
                    None,
                    self.inner.config.list_page_size,
                )
                .await?;
            if names.is_empty() {
                break;
            }
            self.delete_all("rmdir", &at, names).await?;
            if next.is_none() {
                break;
            }
        }
        match self.delete("rmdir", &at.marker()).await {
            Err(FsError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    async fn rm(&self, path: &str) -> Result<(), FsError> {
        let at = self.locate("rm", path)?;
        self.delete("rm", &at).await
    }

    async fn cp(&self, from: &str, to: &str) -> Result<(), FsError> {
        self.transfer("cp", from, to, false).await
    }

    async fn mv(&self, from: &str, to: &str) -> Result<(), FsError> {
        self.transfer("mv", from, to, true).await
    }

    async fn copy_to_local(&self, remote: &str, local: &Path) -> Result<(), FsError> {
        let op = "copy_to_local";
        let at = self.locate(op, remote)?;
        let response = self.download(op, &at, 0).await?;
        if let Some(parent) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| FsError::io(op, parent.display().to_string(), e))?;
        }
        let partial = partial_path(local);
        let written = async {
            let mut file = tokio::fs::File::create(&partial)
                .await
                .map_err(|e| FsError::io(op, partial.display().to_string(), e))?;
            let mut body = response.bytes_stream();
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| self.transport(e, None).into_fs(op, &at))?;
                file.write_all(&piece)
                    .await
                    .map_err(|e| FsError::io(op, partial.display().to_string(), e))?;
            }
            file.flush()
                .await
                .map_err(|e| FsError::io(op, partial.display().to_string(), e))?;
            tokio::fs::rename(&partial, local)
                .await
                .map_err(|e| FsError::io(op, local.display().to_string(), e))
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        written
    }

    async fn copy_from_local(&self, local: &Path, remote: &str) -> Result<(), FsError> {
        let op = "copy_from_local";
        let at = self.locate(op, remote)?;
        let shown = local.display().to_string();
        let meta = tokio::fs::metadata(local)
            .await
            .map_err(|e| FsError::io(op, shown.clone(), e))?;
        if meta.is_dir() {
            return Err(FsError::Backend {
                op,
                location: shown,
                message: "is a directory, not a file".into(),
            });
        }
        if meta.len() > self.inner.config.resumable_threshold {
            return self.upload_resumable(op, local, meta.len(), &at).await;
        }
        let bytes = tokio::fs::read(local)
            .await
            .map_err(|e| FsError::io(op, shown, e))?;
        self.upload_bytes(op, &at, Bytes::from(bytes)).await
    }

    async fn exists(&self, path: &str) -> Result<bool, FsError> {
        let at = self.locate("exists", path)?;
        if self.size_of("exists", &at).await?.is_some()
            || self.size_of("exists", &at.marker()).await?.is_some()
        {
            return Ok(true);
        }
        let (names, _) = self
            .list_page("exists", &at, &at.dir_prefix(), None, 1)
            .await?;
        Ok(!names.is_empty())
    }
}

/// Log tails (`flow_cloud::tail`), e.g. of Dataproc's driver output.
#[async_trait]
impl RemoteObjects for GcsFilesystem {
    async fn size(&self, location: &str) -> Result<Option<u64>, TailError> {
        let at = self
            .locate("tail", location)
            .map_err(|e| tail_error(location, e))?;
        self.size_of("tail", &at)
            .await
            .map_err(|e| tail_error(location, e))
    }

    async fn read_from(&self, location: &str, offset: u64) -> Result<ObjectStream, TailError> {
        let at = self
            .locate("tail", location)
            .map_err(|e| tail_error(location, e))?;
        let response = self
            .download("tail", &at, offset)
            .await
            .map_err(|e| tail_error(location, e))?;
        let stream = response.bytes_stream().map_err(std::io::Error::other);
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }
}

fn tail_error(location: &str, e: FsError) -> TailError {
    TailError {
        location: location.to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

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

    #[test]
    fn throttling_and_server_errors_are_transient_with_their_retry_after() {
        let status = |code: u16, retry_after: Option<u64>| CallError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            body: String::new(),
            retry_after: retry_after.map(Duration::from_secs),
        };
        assert!(status(429, Some(7)).is_transient());
        assert_eq!(
            status(429, Some(7)).retry_after(),
            Some(Duration::from_secs(7))
        );
        assert!(status(503, None).is_transient());
        assert!(!status(404, None).is_transient());
        assert!(!status(403, None).is_transient());
        assert!(!CallError::Auth("no key".into()).is_transient());
        let e = status(404, None).into_fs("rm", &"gs://b/k");
        assert!(matches!(e, FsError::NotFound { op: "rm", .. }));
    }

    #[test]
    fn object_names_are_one_path_segment() {
        assert_eq!(
            utf8_percent_encode("a/b c_$folder$", SEGMENT).to_string(),
            "a%2Fb%20c_%24folder%24"
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
