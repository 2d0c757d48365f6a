//! The REST clusters' HTTP plumbing, written once (feature `http`, which
//! brings reqwest; the SDK clusters leave it off): the client bounded by
//! the settings' `connect_timeout` and `request_timeout`, a request that got
//! no answer as people read it (without its URL, naming the timeout setting
//! that fired), and an answer's `Retry-After`. Each cloud's crate keeps its
//! own URLs, authentication and error bodies.

use crate::errors::error_chain;
use crate::retry::parse_retry_after;
use reqwest::header::RETRY_AFTER;
use std::time::{Duration, SystemTime};

/// The client's timeouts (the settings' `connect_timeout` and
/// `request_timeout`), kept to name the one that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// No connection within this.
    pub connect: Duration,
    /// No complete answer within this.
    pub request: Duration,
}

impl HttpTimeouts {
    /// A client bounded by these timeouts; `Err` with reqwest's reason
    /// (its TLS setup failed).
    pub fn client(&self) -> Result<reqwest::Client, String> {
        reqwest::Client::builder()
            .connect_timeout(self.connect)
            .timeout(self.request)
            .build()
            .map_err(|e| e.to_string())
    }

    /// The request `what` got no answer: the error with its causes and
    /// without its URL (long, and the caller names the resource), a timeout
    /// naming the setting that bounded it; and whether trying again may
    /// help.
    pub fn no_answer(&self, what: &str, e: reqwest::Error) -> (String, bool) {
        let transient = e.is_connect() || e.is_timeout() || e.is_request() || e.is_body();
        let (timed_out, connecting) = (e.is_timeout(), e.is_connect());
        let mut message = error_chain(&e.without_url());
        if timed_out {
            let (setting, limit) = if connecting {
                ("connect_timeout: no connection", self.connect)
            } else {
                ("request_timeout: no complete answer", self.request)
            };
            message = format!(
                "{what} timed out ({setting} within {}): {message}",
                humantime_serde::re::humantime::format_duration(limit)
            );
        }
        (message, transient)
    }
}

/// The wait an answer's `Retry-After` asks for, if it has a valid one.
pub fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}
