//! The HTTP server every fake runs on, and the binary's lifetime.

use crate::faults::Faults;
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

/// A fake's state, shared by its handler and its handle: each fake's own,
/// with the request counts and faults every fake keeps.
pub trait FakeState: Send + Sync + 'static {
    /// Request counts and injected faults.
    fn faults(&self) -> &Faults;
}

/// A fake served until dropped: its address and its state `S` (each fake's
/// module adds its own accessors, e.g. `FakeLivy::batches`).
pub struct Fake<S> {
    served: Served,
    pub(crate) shared: Arc<S>,
}

impl<S: FakeState> Fake<S> {
    /// Serves `handle` with `shared` on 127.0.0.1:`port` ([`serve`]).
    pub(crate) async fn serve<H, T>(handle: H, shared: Arc<S>, port: u16) -> std::io::Result<Self>
    where
        H: Handler<T, Arc<S>>,
        T: 'static,
    {
        Ok(Fake {
            served: serve(handle, shared.clone(), port).await?,
            shared,
        })
    }

    /// `http://127.0.0.1:PORT`, the endpoint to configure.
    pub fn url(&self) -> &str {
        self.served.url()
    }

    /// Request counts and injected faults.
    pub fn faults(&self) -> &Faults {
        self.shared.faults()
    }

    /// Requests so far by method (`jobs.get`, `clusters.create`, ...).
    pub fn requests(&self) -> std::collections::BTreeMap<String, u64> {
        self.faults().requests()
    }

    /// Requests of one method so far.
    pub fn count(&self, method: &str) -> u64 {
        self.faults().count(method)
    }

    /// All API requests so far.
    pub fn total(&self) -> u64 {
        self.faults().total()
    }

    /// The next `times` calls of `method` answer 429 with `Retry-After:
    /// retry_after_secs`.
    pub fn throttle(&self, method: &str, times: usize, retry_after_secs: u64) {
        self.faults().throttle(method, times, retry_after_secs);
    }

    /// The next `times` calls of `method` are carried out, then answered
    /// 503: the answer is lost, what was asked is done.
    pub fn lose_answers(&self, method: &str, times: usize) {
        self.faults().lose_answers(method, times);
    }

    /// The next `times` calls of `method` are refused with 503 before
    /// anything is done.
    pub fn unavailable(&self, method: &str, times: usize) {
        self.faults().unavailable(method, times);
    }

    /// The HTTP status of each answer to `method` so far, in order (the
    /// 429s of [`throttle`](Self::throttle) aside).
    pub fn answers(&self, method: &str) -> Vec<u16> {
        self.faults().answers(method)
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
