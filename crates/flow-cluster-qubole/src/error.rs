//! Errors of this crate: bad settings, and failed API calls before they
//! become [`ClusterError`](flow_core::ClusterError)s naming the cluster.

use flow_cloud::Transient;
use std::fmt;
use std::time::Duration;

/// Why a [`QuboleClusterFactory`](crate::QuboleClusterFactory) could not be
/// made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuboleError {
    /// A setting is out of range or malformed.
    #[error("Qubole setting `{field}`: {message}")]
    Invalid {
        /// The setting's name.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The API token could not be read (never shown).
    #[error("Qubole API token: {message}")]
    Token {
        /// Why.
        message: String,
    },
    #[error("Qubole: cannot make the HTTP client: {message}")]
    /// The HTTP client could not be made.
    Client {
        /// Why.
        message: String,
    },
}

/// A failed QDS API call. Holds no header of the request, so no token can
/// leak through it.
#[derive(Debug, Clone)]
pub(crate) enum ApiError {
    /// An HTTP error answer: its status, QDS's `error.error_code` and
    /// `error.error_message` (or the body's start), `Retry-After`, and
    /// whether the call may be sent again (QDS's retry policy: 429 and 503
    /// always, other 5xx only for reads).
    Status {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
        retryable: bool,
    },
    /// No answer (connection refused, reset, timed out).
    Transport { message: String, transient: bool },
    /// An answer that is not the expected JSON.
    Decode(String),
}

impl ApiError {
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { status: 404, .. })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Status {
                status,
                code,
                message,
                ..
            } => {
                write!(f, "HTTP {status}")?;
                match flow_cloud::errors::service_error(Some(code), Some(message)) {
                    Some(said) => write!(f, ": {said}"),
                    None => Ok(()),
                }
            }
            ApiError::Transport { message, .. } => f.write_str(message),
            ApiError::Decode(message) => write!(f, "unexpected answer: {message}"),
        }
    }
}

impl Transient for ApiError {
    fn is_transient(&self) -> bool {
        match self {
            ApiError::Status { retryable, .. } => *retryable,
            ApiError::Transport { transient, .. } => *transient,
            ApiError::Decode(_) => false,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
    /// Says how often a call was tried once its retries are spent.
    fn after_attempts(self, attempts: usize) -> Self {
        match self {
            ApiError::Status {
                status,
                code,
                message,
                retry_after,
                retryable,
            } => ApiError::Status {
                status,
                code,
                message: flow_cloud::errors::after_attempts(&message, attempts),
                retry_after,
                retryable,
            },
            ApiError::Transport { message, transient } => ApiError::Transport {
                message: flow_cloud::errors::after_attempts(&message, attempts),
                transient,
            },
            other => other,
        }
    }
}
