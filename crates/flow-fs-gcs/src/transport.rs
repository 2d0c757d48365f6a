//! The HTTP side of the GCS filesystem: where requests go, how they are
//! sent (the shared authorised [`GoogleClient`] call), the timeouts named
//! by their settings, and [`CallError`], a failed request before it names
//! an object.

use crate::config::GcsConfig;
use crate::google::{without_url, GoogleClient, NoToken, Refusal};
use flow_cloud::retry::is_transient_status;
use flow_cloud::Transient;
use flow_core::FsError;
use flow_fs_object::store_error;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{RequestBuilder, Response, StatusCode};
use std::fmt;
use std::time::Duration;

/// The OAuth scope of the filesystem's tokens.
pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// Object names are one path segment in the JSON API: `/` is encoded too.
pub(crate) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A failed request, before it becomes an [`FsError`]. Holds no header of
/// the request, so no token can leak through it.
#[derive(Debug)]
pub(crate) enum CallError {
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
            CallError::Transport(e) => f.write_str(&without_url(e)),
            CallError::TimedOut(message) => f.write_str(message),
            CallError::Auth(message) => write!(f, "cannot get an access token: {message}"),
        }
    }
}

impl From<Refusal> for CallError {
    fn from(refusal: Refusal) -> Self {
        CallError::Status {
            status: refusal.status,
            body: {
                let (status, message) = refusal.reason();
                flow_cloud::errors::service_error(Some(&status), Some(&message)).unwrap_or_default()
            },
            retry_after: refusal.retry_after,
        }
    }
}

impl From<NoToken> for CallError {
    fn from(NoToken(message): NoToken) -> Self {
        CallError::Auth(message)
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
    fn after_attempts(mut self, attempts: usize) -> Self {
        if let CallError::Status { body: message, .. } | CallError::TimedOut(message) = &mut self {
            *message = flow_cloud::errors::after_attempts(message, attempts);
        }
        self
    }
}

impl CallError {
    /// The filesystem error of `op` on `location`; 404 is `NotFound`.
    pub(crate) fn into_fs(self, op: &'static str, location: &impl fmt::Display) -> FsError {
        let missing =
            matches!(&self, CallError::Status { status, .. } if *status == StatusCode::NOT_FOUND);
        store_error(op, location, missing, self)
    }
}

/// The timeouts of the settings, for naming the one that fired.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
    pub read: Duration,
}

impl Timeouts {
    pub fn of(config: &GcsConfig) -> Self {
        Timeouts {
            connect: config.connect_timeout,
            request: config.request_timeout,
            read: config.read_timeout,
        }
    }
}

/// Sends the JSON API's requests to one endpoint.
pub(crate) struct Transport {
    google: GoogleClient,
    endpoint: String,
    timeouts: Timeouts,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.endpoint)
    }
}

impl Transport {
    pub fn new(google: GoogleClient, endpoint: String, timeouts: Timeouts) -> Self {
        Transport {
            google,
            endpoint,
            timeouts,
        }
    }

    /// The base URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// How requests are authorised, for `Debug`.
    pub fn google(&self) -> &GoogleClient {
        &self.google
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests(&self) -> u64 {
        self.google.requests()
    }

    /// `…/storage/v1/b/BUCKET/o`: the bucket's objects.
    pub fn objects_url(&self, bucket: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o",
            self.endpoint,
            utf8_percent_encode(bucket, SEGMENT)
        )
    }

    /// `…/storage/v1/b/BUCKET/o/NAME`: one object.
    pub fn object_url(&self, bucket: &str, name: &str) -> String {
        format!(
            "{}/{}",
            self.objects_url(bucket),
            utf8_percent_encode(name, SEGMENT)
        )
    }

    /// `…/upload/storage/v1/b/BUCKET/o`: where uploads start.
    pub fn upload_url(&self, bucket: &str) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o",
            self.endpoint,
            utf8_percent_encode(bucket, SEGMENT)
        )
    }

    /// Sends the API request `make` builds (bounded by `request_timeout`),
    /// authorised, retrying transient failures. `make` is called again for
    /// each attempt.
    pub async fn send(
        &self,
        what: &str,
        make: impl Fn(&reqwest::Client) -> RequestBuilder + Send + Sync,
    ) -> Result<Response, CallError> {
        let total = self.timeouts.request;
        self.google
            .send(
                what,
                |http| {
                    flow_core::meter::cloud_request("gcs", what);
                    make(http).timeout(total)
                },
                |e| self.timeouts.failed(e, Some(total)),
            )
            .await
    }

    /// Like [`send`](Self::send) for a transfer: no total timeout, only the
    /// client's idle `read_timeout`, so a large object is never cut.
    pub async fn send_transfer(
        &self,
        what: &str,
        make: impl Fn(&reqwest::Client) -> RequestBuilder + Send + Sync,
    ) -> Result<Response, CallError> {
        self.google
            .send(
                what,
                |http| {
                    flow_core::meter::cloud_request("gcs", what);
                    make(http)
                },
                |e| self.timeouts.failed(e, None),
            )
            .await
    }

    /// The timeouts, for naming the one a body read hit.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }
}

impl Timeouts {
    /// A failed request or body read (of a request with a `total` timeout,
    /// or none); a timeout named with its setting.
    pub fn failed(&self, e: reqwest::Error, total: Option<Duration>) -> CallError {
        if !e.is_timeout() {
            return CallError::Transport(e);
        }
        let timeouts = self;
        let (limit, setting) = if e.is_connect() {
            (timeouts.connect, "connect_timeout: no connection")
        } else {
            match total {
                Some(total) if total <= timeouts.read => {
                    (total, "request_timeout: no complete answer")
                }
                _ => (timeouts.read, "read_timeout: no data"),
            }
        };
        CallError::TimedOut(format!(
            "timed out ({setting} within {}): {}",
            humantime_serde::re::humantime::format_duration(limit),
            without_url(&e)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
