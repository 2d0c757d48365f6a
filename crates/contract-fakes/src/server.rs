//! The HTTP server every fake runs on, and the binary's lifetime.

use axum::handler::Handler;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use percent_encoding::percent_decode_str;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// A fake being served, stopped when dropped.
pub struct Served {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `handle` on 127.0.0.1:`port` (`0`: a free port) with `shared`
/// as its state: every fake's shape, one handler for every request that
/// routes by method and path itself (as the service's reference lists
/// them, a path it does not serve answered in the service's error shape).
pub async fn serve<S, H, T>(handle: H, shared: Arc<S>, port: u16) -> std::io::Result<Served>
where
    S: Send + Sync + 'static,
    H: Handler<T, Arc<S>>,
    T: 'static,
{
    let router = Router::new().fallback(handle).with_state(shared);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(Served { url, task })
}

/// A JSON answer.
pub fn json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A 200 JSON answer.
pub fn ok(body: Value) -> Response {
    json(StatusCode::OK, body)
}

/// The query string, decoded (`+` as a space); a repeated key keeps its
/// last value.
pub fn query(uri: &Uri) -> HashMap<String, String> {
    query_pairs(uri.query().unwrap_or("")).into_iter().collect()
}

/// Every `key=value` of a query string or form body, decoded, in order.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// The binary's life once a fake is served: prints `listening on URL` on
/// stdout, then returns when standard input closes (so the fake never
/// outlives the test that started it).
pub async fn until_stdin_closes(url: &str) {
    println!("listening on {url}");
    let _ = std::io::stdout().flush();
    let mut stdin = tokio::io::stdin();
    let mut buffer = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buffer).await {
        if n == 0 {
            break;
        }
    }
}
