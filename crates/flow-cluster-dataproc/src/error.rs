//! Errors of this crate: bad settings, and failed API calls before they
//! become [`ClusterError`](flow_core::ClusterError)s naming the cluster.

use flow_cloud::Transient;
use std::fmt;
use std::time::Duration;

/// Why a [`DataprocClusterFactory`](crate::DataprocClusterFactory) could not
/// be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataprocError {
    /// A setting is out of range or malformed.
    #[error("Dataproc setting `{field}`: {message}")]
    Invalid {
        /// The setting's name.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    #[error("Dataproc: no credentials: {message}")]
    /// No credentials could be found or read.
    Auth {
        /// Why.
        message: String,
    },
    #[error("Dataproc: cannot make the HTTP client: {message}")]
    /// The HTTP client could not be made.
    Client {
        /// Why.
        message: String,
    },
    /// The cluster's GCS filesystem could not be made.
    #[error("Dataproc: the GCS filesystem: {0}")]
    Gcs(#[from] flow_fs_gcs::GcsError),
}

/// A failed Dataproc API call. Holds no header of the request, so no token
/// can leak through it.
#[derive(Debug, Clone)]
pub(crate) enum ApiError {
    /// An HTTP error answer: its status, the `error.status` name
    /// (`NOT_FOUND`, `ALREADY_EXISTS`, ...) and `error.message`.
    Status {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// No answer (connection refused, reset, timed out).
    Transport {
        message: String,
        transient: bool,
    },
    Auth(String),
    /// An answer that is not the expected JSON.
    Decode(String),
}

impl ApiError {
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { status: 404, .. })
    }
    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, ApiError::Status { status: 409, .. })
    }
    /// 400 `FAILED_PRECONDITION`: e.g. cancelling a job that already ended.
    pub(crate) fn is_failed_precondition(&self) -> bool {
        matches!(self, ApiError::Status { code, .. } if code == "FAILED_PRECONDITION")
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
                if !code.is_empty() {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            ApiError::Transport { message, .. } => f.write_str(message),
            ApiError::Auth(message) => write!(f, "cannot get an access token: {message}"),
            ApiError::Decode(message) => write!(f, "unexpected answer: {message}"),
        }
    }
}

impl Transient for ApiError {
    fn is_transient(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => flow_cloud::retry::is_transient_status(*status),
            ApiError::Transport { transient, .. } => *transient,
            ApiError::Auth(_) | ApiError::Decode(_) => false,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
    fn after_attempts(mut self, attempts: usize) -> Self {
        if let ApiError::Status { message, .. } | ApiError::Transport { message, .. } = &mut self {
            *message = flow_cloud::errors::after_attempts(message, attempts);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_given_up_says_how_often_it_was_tried() {
        let e = ApiError::Status {
            status: 429,
            code: "RESOURCE_EXHAUSTED".into(),
            message: "Quota exceeded".into(),
            retry_after: None,
        };
        assert_eq!(
            e.after_attempts(6).to_string(),
            "HTTP 429 RESOURCE_EXHAUSTED: Quota exceeded (after 6 attempts)"
        );
    }
}
