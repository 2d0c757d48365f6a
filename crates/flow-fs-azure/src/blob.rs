//! The adapter: the one module that speaks the Azure SDK. It uses the
//! legacy, unofficial `azure_storage_blobs` 0.21 (the last release, the one
//! with shared-key and SAS credentials and the emulator); a move to
//! Microsoft's official `azure_storage_blob` changes this file and no other.
//!
//! [`BlobStore`] is one account: a call per Blob REST operation, each one
//! request (a download is a stream of ranged requests), without retries
//! (the SDK's own are turned off; [`crate::backend`] retries with
//! `flow_cloud`'s policy). Failures are [`CallError`]s holding the status,
//! the service's error code and a message, never a URL (a SAS rides in the
//! query) or a header, and the delay a throttling answer asked for
//! (`x-ms-retry-after-ms`, `retry-after-ms` or `Retry-After`), which the
//! retries honour.

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::request_options::{MaxResults, NextMarker, Prefix};
use azure_core::{HttpClient, RetryOptions, TransportOptions};
use azure_storage::{CloudLocation, ConnectionString, StorageCredentials};
use azure_storage_blobs::blob::{BlobBlockType, BlockList, CopyStatus};
use azure_storage_blobs::prelude::{BlobServiceClient, ClientBuilder, ContainerClient};
use bytes::Bytes;
use flow_cloud::retry::{is_transient_status, parse_retry_after};
use flow_cloud::tail::ObjectStream;
use flow_cloud::Transient;
use futures_util::{StreamExt, TryStreamExt};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The well-known account of Azurite and the storage emulator.
pub const EMULATOR_ACCOUNT: &str = azure_storage::EMULATOR_ACCOUNT;

/// Bytes per ranged request of a download (the SDK's default, 16 MiB); each
/// is streamed, never held whole.
const DOWNLOAD_CHUNK: u64 = 16 * 1024 * 1024;

/// How the account is reached: its key or a SAS token.
pub(crate) enum Credential {
    Key(String),
    Sas(String),
}

/// A failed call, before it names an object.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The service refused: the HTTP status and its error code, and how
    /// long it asked to be left alone, if it did.
    Status {
        status: u16,
        code: Option<String>,
        message: String,
        retry_after: Option<Duration>,
    },
    /// No answer: the connection failed or a timeout fired.
    Transport(String),
    /// Anything else (a malformed answer, bad credentials).
    Other(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Status {
                status,
                code: Some(code),
                message,
                ..
            } => write!(f, "HTTP {status} {code}: {message}"),
            CallError::Status {
                status, message, ..
            } => write!(f, "HTTP {status}: {message}"),
            CallError::Transport(message) | CallError::Other(message) => f.write_str(message),
        }
    }
}

impl Transient for CallError {
    fn is_transient(&self) -> bool {
        match self {
            CallError::Status { status, .. } => is_transient_status(*status),
            CallError::Transport(_) => true,
            CallError::Other(_) => false,
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
    /// Whether the service said the blob (not the container) is missing.
    pub fn is_missing_blob(&self) -> bool {
        matches!(self, CallError::Status { status: 404, code, .. } if code.as_deref() != Some("ContainerNotFound"))
    }

    fn is_status(&self, wanted: u16) -> bool {
        matches!(self, CallError::Status { status, .. } if *status == wanted)
    }

    /// A request that timed out, named with the setting that fired.
    pub fn timed_out(setting: &str, limit: Duration) -> Self {
        CallError::Transport(format!(
            "timed out ({setting} within {})",
            humantime_serde::re::humantime::format_duration(limit)
        ))
    }
}

/// The SDK's error as a [`CallError`]: the status and code it carries, and
/// its message with its causes, with any URL cut out (reqwest names the
/// URL, whose query may hold a SAS).
fn call_error(e: azure_core::Error, timeouts: &Timeouts) -> CallError {
    let mut message = first_line(&e.to_string());
    let mut timeout = None;
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        if let Some(http) = cause.downcast_ref::<reqwest::Error>() {
            if http.is_timeout() {
                timeout = Some(if http.is_connect() {
                    ("connect_timeout: no connection", timeouts.connect)
                } else {
                    ("read_timeout: no data", timeouts.read)
                });
            }
            message.push_str(": ");
            message.push_str(&http.to_string().replace(
                &http.url().map(|u| format!(" ({u})")).unwrap_or_default(),
                "",
            ));
        } else {
            message.push_str(": ");
            message.push_str(&first_line(&cause.to_string()));
        }
        source = cause.source();
    }
    match e.kind() {
        ErrorKind::HttpResponse { status, error_code } => CallError::Status {
            status: u16::from(*status),
            code: error_code.clone(),
            message: cut(&message, 500),
            retry_after: e.downcast_ref::<AskedToWait>().map(|a| a.delay),
        },
        ErrorKind::Io => match timeout {
            Some((setting, limit)) => CallError::Transport(format!(
                "timed out ({setting} within {}): {message}",
                humantime_serde::re::humantime::format_duration(limit)
            )),
            None => CallError::Transport(message),
        },
        _ => CallError::Other(message),
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

fn cut(text: &str, max: usize) -> String {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The limits of the HTTP client, to name the one that fired.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
}

/// reqwest under the SDK, counting requests.
#[derive(Debug)]
struct Counting {
    http: reqwest::Client,
    requests: AtomicU64,
}

#[async_trait]
impl HttpClient for Counting {
    /// Sends the request; a throttling or server-busy answer that asks for
    /// a delay becomes an error carrying it ([`AskedToWait`]), as the SDK
    /// keeps no headers in its errors.
    async fn execute_request(
        &self,
        request: &azure_core::Request,
    ) -> azure_core::Result<azure_core::Response> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        flow_core::meter::cloud_request("blob", &call_name(request));
        let response = self.http.execute_request(request).await?;
        let status = u16::from(response.status());
        if !is_transient_status(status) {
            return Ok(response);
        }
        let Some(delay) = asked_delay(response.headers()) else {
            return Ok(response);
        };
        let refused = azure_core::error::HttpError::new(response).await;
        let kind = ErrorKind::HttpResponse {
            status: refused.status(),
            error_code: refused.error_code().map(str::to_string),
        };
        Err(azure_core::Error::new(
            kind,
            AskedToWait {
                delay,
                message: refused.error_message().map(first_line),
            },
        ))
    }
}

/// A Blob request's bounded name for [`flow_core::meter`]: its method and
/// the `restype`/`comp` parameters that pick the operation
/// (`PUT ?comp=block`, `GET ?restype=container&comp=list`), never a name.
fn call_name(request: &azure_core::Request) -> String {
    let mut call = request.method().to_string();
    let mut separator = " ?";
    for (key, value) in request.url().query_pairs() {
        if key == "restype" || key == "comp" {
            call.push_str(separator);
            call.push_str(&key);
            call.push('=');
            call.push_str(&value);
            separator = "&";
        }
    }
    call
}

/// How long a refusal asks the client to wait: Azure's millisecond headers
/// first, then the standard `Retry-After` (seconds or a date).
fn asked_delay(headers: &azure_core::headers::Headers) -> Option<Duration> {
    use azure_core::headers::{RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS};
    [X_MS_RETRY_AFTER_MS, RETRY_AFTER_MS]
        .iter()
        .find_map(|name| headers.get_optional_str(name)?.trim().parse().ok())
        .map(Duration::from_millis)
        .or_else(|| parse_retry_after(headers.get_optional_str(&RETRY_AFTER)?, SystemTime::now()))
}

/// A 429 or 5xx whose answer asked for a delay: the service's message
/// (never its headers or body dump) and the delay.
#[derive(Debug)]
struct AskedToWait {
    delay: Duration,
    message: Option<String>,
}

impl fmt::Display for AskedToWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(message) = &self.message {
            write!(f, "{message}; ")?;
        }
        write!(
            f,
            "the service asked to retry after {}",
            humantime_serde::re::humantime::format_duration(self.delay)
        )
    }
}

impl std::error::Error for AskedToWait {}

/// Where the account is and how to reach it.
pub(crate) struct Account {
    pub name: String,
    /// The Blob endpoint with the account (`http://127.0.0.1:10000/devstoreaccount1`),
    /// `None`: the public one.
    pub endpoint: Option<String>,
    pub credential: Credential,
}

impl Account {
    /// The account a connection string names (`AccountName`, `AccountKey`
    /// or `SharedAccessSignature`, `BlobEndpoint`), or why not. The
    /// message never quotes the string.
    pub fn from_connection_string(text: &str) -> Result<Account, String> {
        let parsed = ConnectionString::new(text).map_err(|e| {
            format!(
                "not a storage connection string ({})",
                first_line(&e.to_string())
            )
        })?;
        let credential = match (parsed.account_key, parsed.sas) {
            (Some(key), _) => Credential::Key(key.to_string()),
            (None, Some(sas)) => Credential::Sas(sas.to_string()),
            (None, None) => {
                return Err(
                    "the connection string has neither AccountKey nor SharedAccessSignature".into(),
                )
            }
        };
        let name = match (parsed.account_name, parsed.use_development_storage) {
            (Some(name), _) => name.to_string(),
            (None, Some(true)) => EMULATOR_ACCOUNT.to_string(),
            (None, _) => return Err("the connection string has no AccountName".into()),
        };
        Ok(Account {
            name,
            endpoint: parsed
                .blob_endpoint
                .map(|e| e.trim_end_matches('/').to_string()),
            credential,
        })
    }
}

/// One storage account's Blob service.
pub(crate) struct BlobStore {
    service: BlobServiceClient,
    http: Arc<Counting>,
    /// Appended to copy sources, which the service reads with their own
    /// authorisation (a shared key covers same-account sources).
    sas: Option<String>,
    timeouts: Timeouts,
}

/// A blob of a listing.
pub(crate) struct Listed {
    pub name: String,
    pub size: u64,
}

impl BlobStore {
    /// The account's Blob service over `http`, with no SDK retries.
    pub fn new(
        account: Account,
        http: reqwest::Client,
        timeouts: Timeouts,
    ) -> Result<Self, String> {
        let sas = match &account.credential {
            Credential::Sas(token) => Some(token.trim_start_matches('?').to_string()),
            Credential::Key(_) => None,
        };
        let credentials = match account.credential {
            Credential::Key(key) => StorageCredentials::access_key(account.name.clone(), key),
            Credential::Sas(token) => StorageCredentials::sas_token(token)
                .map_err(|e| format!("not a SAS token ({})", first_line(&e.to_string())))?,
        };
        let location = match account.endpoint {
            Some(uri) => CloudLocation::Custom {
                account: account.name,
                uri,
            },
            None => CloudLocation::Public {
                account: account.name,
            },
        };
        let http = Arc::new(Counting {
            http,
            requests: AtomicU64::new(0),
        });
        let service = ClientBuilder::with_location(location, credentials)
            .retry(RetryOptions::none())
            .transport(TransportOptions::new(http.clone()))
            .blob_service_client();
        Ok(BlobStore {
            service,
            http,
            sas,
            timeouts,
        })
    }

    /// The storage account's name.
    pub fn account(&self) -> &str {
        self.service.account()
    }

    /// HTTP requests sent so far.
    pub fn requests(&self) -> u64 {
        self.http.requests.load(Ordering::Relaxed)
    }

    fn container(&self, container: &str) -> ContainerClient {
        self.service.container_client(container)
    }

    fn error(&self, e: azure_core::Error) -> CallError {
        call_error(e, &self.timeouts)
    }

    /// Creates the container; one that exists already is fine.
    pub async fn create_container(&self, container: &str) -> Result<(), CallError> {
        match self.container(container).create().await {
            Ok(_) => Ok(()),
            Err(e) => match self.error(e) {
                e if e.is_status(409) => Ok(()),
                e => Err(e),
            },
        }
    }

    /// The blob's size.
    pub async fn size(&self, container: &str, name: &str) -> Result<u64, CallError> {
        let properties = self
            .container(container)
            .blob_client(name)
            .get_properties()
            .await
            .map_err(|e| self.error(e))?;
        Ok(properties.blob.properties.content_length)
    }

    /// Up to `max` blobs whose names start with `prefix`, from `marker`;
    /// and the marker of the next page.
    pub async fn list(
        &self,
        container: &str,
        prefix: &str,
        marker: Option<String>,
        max: NonZeroU32,
    ) -> Result<(Vec<Listed>, Option<String>), CallError> {
        let mut list = self
            .container(container)
            .list_blobs()
            .max_results(MaxResults::new(max));
        if !prefix.is_empty() {
            list = list.prefix(Prefix::from(prefix.to_string()));
        }
        if let Some(marker) = marker {
            list = list.marker(NextMarker::new(marker));
        }
        let page = list
            .into_stream()
            .next()
            .await
            .ok_or_else(|| CallError::Other("the listing answered no page".into()))?
            .map_err(|e| self.error(e))?;
        let blobs = page
            .blobs
            .blobs()
            .map(|b| Listed {
                name: b.name.clone(),
                size: b.properties.content_length,
            })
            .collect();
        Ok((blobs, page.next_marker.map(|m| m.as_str().to_string())))
    }

    /// Writes `body` as the whole blob (a block blob) in one request.
    pub async fn put(&self, container: &str, name: &str, body: Bytes) -> Result<(), CallError> {
        self.container(container)
            .blob_client(name)
            .put_block_blob(body)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Stages block `id` of a blob (not visible until committed).
    pub async fn put_block(
        &self,
        container: &str,
        name: &str,
        id: &str,
        body: Bytes,
    ) -> Result<(), CallError> {
        self.container(container)
            .blob_client(name)
            .put_block(Bytes::from(id.to_string()), body)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Makes the staged blocks `ids`, in order, the blob's content.
    pub async fn commit_blocks(
        &self,
        container: &str,
        name: &str,
        ids: &[String],
    ) -> Result<(), CallError> {
        let blocks = BlockList {
            blocks: ids
                .iter()
                .map(|id| BlobBlockType::new_uncommitted(Bytes::from(id.clone())))
                .collect(),
        };
        self.container(container)
            .blob_client(name)
            .put_block_list(blocks)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The blob's bytes from `offset`, as a stream of ranged requests made
    /// as it is read; the first is made here, so a missing blob fails now.
    /// An offset at the end (or an empty blob) is an empty stream.
    pub async fn read(
        &self,
        container: &str,
        name: &str,
        offset: u64,
    ) -> Result<ObjectStream, CallError> {
        let mut pages = self
            .container(container)
            .blob_client(name)
            .get()
            .range(offset..)
            .chunk_size(DOWNLOAD_CHUNK)
            .into_stream();
        let first = match pages.next().await {
            Some(Ok(first)) => first,
            // 416: nothing from `offset` on (the blob exists, or it would
            // be 404).
            Some(Err(e)) => match self.error(e) {
                e if e.is_status(416) => return Ok(Box::new(tokio::io::empty())),
                e => return Err(e),
            },
            None => return Ok(Box::new(tokio::io::empty())),
        };
        let timeouts = self.timeouts;
        let rest = pages
            .map_ok(move |page| page.data.map_err(move |e| io_error(e, &timeouts)))
            .map_err(move |e| io_error(e, &timeouts))
            .try_flatten();
        let first = first.data.map_err(move |e| io_error(e, &timeouts));
        let bytes = first.chain(rest);
        Ok(Box::new(tokio_util::io::StreamReader::new(Box::pin(bytes))))
    }

    /// Copies `from` to `to` inside the account, waiting (polling every
    /// `poll`) while the service copies asynchronously.
    pub async fn copy(
        &self,
        from: (&str, &str),
        to: (&str, &str),
        poll: Duration,
    ) -> Result<(), CallError> {
        let mut source = self
            .container(from.0)
            .blob_client(from.1)
            .url()
            .map_err(|e| self.error(e))?;
        if let Some(sas) = &self.sas {
            source.set_query(Some(sas));
        }
        let target = self.container(to.0).blob_client(to.1);
        let mut status = target
            .copy(source)
            .await
            .map_err(|e| self.error(e))?
            .copy_status;
        loop {
            match status {
                CopyStatus::Success => return Ok(()),
                CopyStatus::Pending => {
                    tokio::time::sleep(poll).await;
                    let properties = target.get_properties().await.map_err(|e| self.error(e))?;
                    status = properties
                        .blob
                        .properties
                        .copy_status
                        .unwrap_or(CopyStatus::Success);
                }
                other => {
                    return Err(CallError::Other(format!(
                        "the service's copy ended {other:?}"
                    )))
                }
            }
        }
    }

    /// Deletes the blob.
    pub async fn delete(&self, container: &str, name: &str) -> Result<(), CallError> {
        self.container(container)
            .blob_client(name)
            .delete()
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}

fn io_error(e: azure_core::Error, timeouts: &Timeouts) -> std::io::Error {
    std::io::Error::other(call_error(e, timeouts).to_string())
}

#[cfg(test)]
mod tests {
    use super::call_name;
    use azure_core::{Method, Request, Url};

    #[test]
    fn a_call_is_named_by_its_method_and_operation_never_by_its_blob() {
        let named = |method, url: &str| call_name(&Request::new(Url::parse(url).unwrap(), method));
        let base = "http://127.0.0.1:10000/acct/data/day%3D1/part-0";
        assert_eq!(named(Method::Get, base), "GET");
        assert_eq!(
            named(Method::Put, &format!("{base}?comp=block&blockid=QUJD")),
            "PUT ?comp=block"
        );
        assert_eq!(
            named(
                Method::Get,
                "http://127.0.0.1:10000/acct/data?restype=container&comp=list&prefix=day"
            ),
            "GET ?restype=container&comp=list"
        );
    }
}
