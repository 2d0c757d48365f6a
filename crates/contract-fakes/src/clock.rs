//! The service's time: a [`flow_cloud::Clock`] plus a shift tests add.
//!
//! In-process tests pass a `ManualClock` and move it; the binary runs on
//! real time, and `POST /fake/clock?advance=30s` moves its service forward
//! (cluster and job states, token expiry) without waiting.

use crate::errors::ErrorShape;
use crate::server::ok;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use flow_cloud::Clock;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The service's clock.
#[derive(Debug, Clone)]
pub struct FakeClock {
    base: Arc<dyn Clock>,
    shift: Arc<Mutex<Duration>>,
}

impl FakeClock {
    pub fn new(base: Arc<dyn Clock>) -> Self {
        FakeClock {
            base,
            shift: Arc::default(),
        }
    }

    /// The service's time: the base clock's plus every advance.
    pub fn now(&self) -> Duration {
        self.base.now() + *self.shift.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the service's time forward by `by` (the base clock is not
    /// touched: the client under test keeps its own time).
    pub fn advance(&self, by: Duration) {
        *self.shift.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

/// `POST /fake/clock?advance=DURATION` (humantime, e.g. `2h`): answers the
/// service's time in seconds; `None` for another control path.
pub fn control(
    clock: &FakeClock,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    shape: ErrorShape,
) -> Option<Response> {
    if path != "clock" {
        return None;
    }
    if method == Method::POST {
        match q.get("advance").map(|d| humantime::parse_duration(d)) {
            Some(Ok(by)) => clock.advance(by),
            Some(Err(e)) => {
                return Some(shape(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    format!("advance: {e}"),
                ))
            }
            None => {
                return Some(shape(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "advance=DURATION is required".into(),
                ))
            }
        }
    }
    Some(ok(json!({ "now_seconds": clock.now().as_secs_f64() })))
}
