//! Errors: what the API answers (`{"error": "..."}` with a status code) and
//! why a server could not start.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flow_core::StoreError;
use std::net::SocketAddr;

/// A failed API request. The message is shown to the user as is: it names
/// what was wrong (the flow, step, timeperiod or field) and never holds a
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Malformed timeperiod, query or body.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong `Authorization: Bearer` token.
    #[error("{0}")]
    Unauthorized(String),
    /// A request from another origin, or for a host name this server does
    /// not answer to.
    #[error("{0}")]
    Forbidden(String),
    /// Unknown flow, step, run or record.
    #[error("{0}")]
    NotFound(String),
    /// A refused run mode, a flow that is being run, nothing to cancel.
    #[error("{0}")]
    Conflict(String),
    /// This server was started without a way to run flows.
    #[error("{0}")]
    Unavailable(String),
    /// The store or a file failed.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // A malformed run id in the query: the caller's mistake.
            StoreError::InvalidId { .. } => ApiError::BadRequest(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

/// The API's error answer: `status` with `{"error": message}`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = json_error(status, &self.to_string());
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"flow\""),
            );
        }
        response
    }
}

/// Why [`Server::bind`](crate::Server::bind) refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "refusing to listen on {addr}: it is not a loopback address and no token is set; \
         set [serve] token = \"env:FLOW_TOKEN\" in the settings (POST requests then need \
         `Authorization: Bearer TOKEN`), or bind to 127.0.0.1"
    )]
    TokenRequired { addr: SocketAddr },
    #[error("the token could never match a request: {why}")]
    UnusableToken { why: &'static str },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("two flows are named '{flow}': {first} and {second}")]
    DuplicateFlow {
        flow: String,
        first: String,
        second: String,
    },
    #[error("the server stopped: {source}")]
    Serve {
        #[source]
        source: std::io::Error,
    },
}
