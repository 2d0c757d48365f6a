//! Error bodies in each service family's shape.

use crate::server::json;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

/// Builds an error answer: HTTP status, the service's error code (Google's
/// `status` such as `INVALID_ARGUMENT`, ARM's `code` such as
/// `ResourceNotFound`), message.
pub type ErrorShape = fn(StatusCode, &str, String) -> Response;

/// Google's: `{"error": {"code": 400, "message": M, "status": "INVALID_ARGUMENT"}}`.
pub fn google(status: StatusCode, code: &str, message: String) -> Response {
    json(
        status,
        json!({"error": {"code": status.as_u16(), "message": message, "status": code}}),
    )
}

/// The generic (Azure ARM) shape: `{"error": {"code": "Name", "message": M}}`.
pub fn generic(status: StatusCode, code: &str, message: String) -> Response {
    json(status, json!({"error": {"code": code, "message": message}}))
}
