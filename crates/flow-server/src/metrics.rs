//! `GET /metrics`: the process's Prometheus series
//! ([`flow_signals::MetricsRegistry`]), as OpenMetrics text when the
//! scraper asks for it (Prometheus does) and as the classic text format
//! otherwise (curl, `promtool check metrics`).

use crate::api::AppState;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use flow_signals::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use std::sync::Arc;

pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(registry) = &state.metrics else {
        return ApiError::NotFound("this server exports no metrics".into()).into_response();
    };
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
            registry.openmetrics(),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
            registry.prometheus_text(),
        )
            .into_response()
    }
}
