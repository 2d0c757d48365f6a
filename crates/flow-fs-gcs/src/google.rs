//! [`GoogleClient`]: the authorised Google API call every Google client of
//! flow makes (the GCS filesystem, the Dataproc cluster), written once: a
//! bearer token for the client's scope (unless the endpoint is an emulator
//! or a fake), `flow_cloud`'s retry of transient failures (honouring
//! `Retry-After`), a request counter, and a refused answer kept with its
//! status, body and `Retry-After`. Each caller keeps its own error type and
//! says what its transport failures mean (which timeout fired).
//!
//! It lives in this crate because Dataproc already depends on it (for its
//! filesystem) and clusters never depend on each other.

use flow_cloud::retry::parse_retry_after;
use flow_cloud::{Clock, RetryConfig, Transient};
use reqwest::{header, RequestBuilder, Response, StatusCode};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// An answer that is neither a success nor a resumable upload's 308
/// ("go on"), read whole. Holds nothing of the request, so no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// The answer's body as text (Google's `{"error": ...}` JSON, usually).
    pub body: String,
    /// What `Retry-After` asked for, if anything.
    pub retry_after: Option<Duration>,
}

impl Refusal {
    /// The body cut to at most `max` bytes (at a character boundary), for
    /// a message.
    pub fn body_prefix(&self, max: usize) -> &str {
        let mut end = max.min(self.body.len());
        while !self.body.is_char_boundary(end) {
            end -= 1;
        }
        &self.body[..end]
    }

    /// Why Google refused, readably: `error.status` (`NOT_FOUND`,
    /// `INVALID_ARGUMENT`, ...) and `error.message` on one line, out of
    /// Google's `{"error": {"code", "message", "status"}}` (often
    /// pretty-printed JSON, which shown as it is put JSON escapes and
    /// newlines into a message); for any other body, no status and the
    /// body's first 500 bytes on one line.
    pub fn reason(&self) -> (String, String) {
        #[derive(Default, serde::Deserialize)]
        #[serde(default)]
        struct Body {
            error: Detail,
        }
        #[derive(Default, serde::Deserialize)]
        #[serde(default)]
        struct Detail {
            message: String,
            status: String,
        }
        let one_line = |text: &str| flow_cloud::errors::one_line(text).into_owned();
        match serde_json::from_str::<Body>(&self.body) {
            Ok(body) if !body.error.message.is_empty() || !body.error.status.is_empty() => {
                (body.error.status, one_line(&body.error.message))
            }
            _ => (String::new(), one_line(self.body_prefix(500))),
        }
    }
}

/// No access token could be had; the reason (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoToken(pub String);

/// An HTTP client for one Google API scope. Share it behind an `Arc`.
pub struct GoogleClient {
    http: reqwest::Client,
    /// `None` for an emulator or a fake: no credentials are sent.
    credentials: Option<Arc<dyn gcp_auth::TokenProvider>>,
    scope: &'static str,
    retry: RetryConfig,
    clock: Arc<dyn Clock>,
    requests: AtomicU64,
}

impl fmt::Debug for GoogleClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.credentials.is_some() {
            "OAuth token provider"
        } else {
            "none (emulator)"
        })
    }
}

impl GoogleClient {
    /// Calls through `http` with tokens of `credentials` for `scope` (none
    /// when `credentials` is `None`), retried as `retry` says on `clock`.
    pub fn new(
        http: reqwest::Client,
        credentials: Option<Arc<dyn gcp_auth::TokenProvider>>,
        scope: &'static str,
        retry: RetryConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        GoogleClient {
            http,
            credentials,
            scope,
            retry,
            clock,
            requests: AtomicU64::new(0),
        }
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Sends the request `make` builds (called again for each attempt),
    /// authorised, retrying while the failure is transient; `what` names it
    /// in the retry log. `transport` turns a failed send into the caller's
    /// error; a refused answer and a missing token become it through
    /// `From`.
    pub async fn send<E>(
        &self,
        what: &str,
        make: impl Fn(&reqwest::Client) -> RequestBuilder + Send + Sync,
        transport: impl Fn(reqwest::Error) -> E + Send + Sync,
    ) -> Result<Response, E>
    where
        E: Transient + fmt::Display + From<Refusal> + From<NoToken>,
    {
        let (make, transport) = (&make, &transport);
        flow_cloud::retry(&self.retry, &self.clock, what, || async move {
            let mut request = make(&self.http);
            if let Some(provider) = &self.credentials {
                let token = provider
                    .token(&[self.scope])
                    .await
                    .map_err(|e| NoToken(e.to_string()))?;
                request = request.bearer_auth(token.as_str());
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let response = request.send().await.map_err(transport)?;
            Ok(refused(response).await?)
        })
        .await
    }
}

/// Keeps a success, and 308 (a resumable upload's "go on"; no other Google
/// API answers it); anything else becomes a [`Refusal`].
async fn refused(response: Response) -> Result<Response, Refusal> {
    let status = response.status();
    if status.is_success() || status == StatusCode::PERMANENT_REDIRECT {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let body = response.text().await.unwrap_or_default();
    Err(Refusal {
        status,
        body,
        retry_after,
    })
}

/// A `reqwest` error's text without its URL (long, and the caller names
/// the resource; it holds nothing secret), with its causes.
pub fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> Refusal {
        Refusal {
            status: StatusCode::NOT_FOUND,
            body: body.to_string(),
            retry_after: None,
        }
    }

    /// Google pretty-prints its error JSON: shown as it was, a message held
    /// its escapes and newlines (a literal `\n` once logged).
    #[test]
    fn a_refusal_reads_as_googles_status_and_message_on_one_line() {
        let pretty = "{\n  \"error\": {\n    \"code\": 400,\n    \"message\": \"Invalid JSON payload received. Unknown name \\\"x\\\": Cannot find field.\\nInvalid JSON payload received. Unknown name \\\"y\\\": Cannot find field.\",\n    \"status\": \"INVALID_ARGUMENT\"\n  }\n}\n";
        assert_eq!(
            refusal(pretty).reason(),
            (
                "INVALID_ARGUMENT".to_string(),
                "Invalid JSON payload received. Unknown name \"x\": Cannot find field. Invalid JSON payload received. Unknown name \"y\": Cannot find field.".to_string()
            )
        );
        assert_eq!(
            refusal("<html>\n<body>Not Found</body>\n</html>").reason(),
            (
                String::new(),
                "<html>; <body>Not Found</body>; </html>".to_string()
            )
        );
    }
}
