//! [`Gateway`]: the HTTP side of the cluster's gateway (Livy and WebHCat
//! behind it): the HTTP basic login, `flow_cloud`'s retries of 429, 5xx and
//! connection errors (honouring `Retry-After`), a request counter, and
//! [`CallError`], a refused or failed request holding the service's status
//! and message (never a header, so never the password).

use flow_cloud::errors::found;
use flow_cloud::http::retry_after;
use flow_cloud::retry::is_transient_status;
use flow_cloud::{Clock, RetryConfig, Transient};
use flow_core::Secret;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A failed request.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    /// The service answered with an error status; its message (Livy's
    /// `msg`, WebHCat's `error`, else the body's start).
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// No answer (connection, timeout) or an unreadable one.
    Transport(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Status {
                status, message, ..
            } if message.is_empty() => write!(f, "HTTP {status}"),
            CallError::Status {
                status, message, ..
            } => write!(f, "HTTP {status}: {message}"),
            CallError::Transport(message) => f.write_str(message),
        }
    }
}

impl Transient for CallError {
    fn is_transient(&self) -> bool {
        match self {
            CallError::Status { status, .. } => is_transient_status(*status),
            CallError::Transport(_) => true,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Status { retry_after, .. } => *retry_after,
            CallError::Transport(_) => None,
        }
    }
}

impl CallError {
    pub fn is_status(&self, wanted: u16) -> bool {
        matches!(self, CallError::Status { status, .. } if *status == wanted)
    }
}

/// A `reqwest` error without its URL, with its causes.
pub(crate) fn transport(e: reqwest::Error) -> CallError {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" ({url})"), "");
    }
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    CallError::Transport(text)
}

/// The service's message in an error body: Livy's `{"msg": ...}`,
/// WebHCat's `{"error": ...}`, ARM's `{"error": {"code", "message"}}`,
/// else the body's first 300 bytes.
pub(crate) fn message_of(body: &str) -> String {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(msg) = value.get("msg").and_then(|m| m.as_str()) {
            return msg.to_string();
        }
        match value.get("error") {
            Some(serde_json::Value::String(e)) => return e.clone(),
            Some(e) if e.get("message").is_some() => {
                let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                let message = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
                return format!("{code}: {message}");
            }
            _ => {}
        }
    }
    let mut end = body.len().min(300);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].trim().to_string()
}

/// Requests to one cluster's gateway with its login.
pub(crate) struct Gateway {
    http: reqwest::Client,
    username: String,
    password: Option<Secret>,
    retry: RetryConfig,
    clock: Arc<dyn Clock>,
    requests: AtomicU64,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Gateway {
    pub fn new(
        http: reqwest::Client,
        username: String,
        password: Option<Secret>,
        retry: RetryConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Gateway {
            http,
            username,
            password,
            retry,
            clock,
            requests: AtomicU64::new(0),
        }
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// One attempt of the request `make` builds, with the login; an error
    /// status becomes [`CallError::Status`]. Counted in
    /// [`flow_core::meter`] as `backend`'s (`livy`, `webhcat`) call `what`
    /// (a route template such as `GET /batches/ID`).
    pub async fn send_once(
        &self,
        backend: &str,
        what: &str,
        make: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Send + Sync),
    ) -> Result<Response, CallError> {
        let mut request = make(&self.http).header("X-Requested-By", "flow");
        if let Some(password) = &self.password {
            request = request.basic_auth(&self.username, Some(password.expose()));
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        flow_core::meter::cloud_request(backend, what);
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(&response);
        let body = response.text().await.unwrap_or_default();
        Err(CallError::Status {
            status: status.as_u16(),
            message: message_of(&body),
            retry_after,
        })
    }

    /// The request, retried while its failure is transient; `what` names
    /// it in the retry warnings.
    pub async fn send(
        &self,
        backend: &str,
        what: &str,
        make: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Send + Sync),
    ) -> Result<Response, CallError> {
        flow_cloud::retry(&self.retry, &self.clock, what, || {
            self.send_once(backend, what, make)
        })
        .await
    }

    /// [`send`](Self::send), the answer read as JSON; 404 is `None`.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        backend: &str,
        what: &str,
        make: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Send + Sync),
    ) -> Result<Option<T>, CallError> {
        let sent = self.send(backend, what, make).await;
        match found(sent, |e| e.is_status(StatusCode::NOT_FOUND.as_u16()))? {
            Some(response) => read_json(response).await.map(Some),
            None => Ok(None),
        }
    }
}

/// The answer's body as `T`.
pub(crate) async fn read_json<T: DeserializeOwned>(response: Response) -> Result<T, CallError> {
    let body = response.bytes().await.map_err(transport)?;
    serde_json::from_slice(&body)
        .map_err(|e| CallError::Transport(format!("unreadable answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_services_message_is_taken_from_its_error_body() {
        assert_eq!(
            message_of(r#"{"msg":"Duplicate session name"}"#),
            "Duplicate session name"
        );
        assert_eq!(
            message_of(r#"{"error":"User not authorized"}"#),
            "User not authorized"
        );
        assert_eq!(
            message_of(r#"{"error":{"code":"ResourceNotFound","message":"gone"}}"#),
            "ResourceNotFound: gone"
        );
        assert_eq!(message_of("  plain text \n"), "plain text");
    }
}
