//! The QDS REST calls this crate makes (Command API v1.2, Cluster API
//! v1.3), and the parts of their answers it reads. Every call carries the
//! token as `X-AUTH-TOKEN` (a sensitive header: never logged), is counted,
//! and is retried as QDS's HTTP retry policy says: 429 and 503 always
//! (honouring `Retry-After`), other 5xx, 408 and 449 only for reads, and
//! connection failures. A submission is sent once: its caller looks the
//! command up before sending it again ([`flow_cloud::retry_with_lookup`]).

use crate::error::ApiError;
use flow_cloud::errors::{found, one_line};
use flow_cloud::http::{retry_after, HttpTimeouts};
use flow_cloud::{Clock, RetryConfig};
use flow_core::Secret;
use reqwest::header::HeaderValue;
use reqwest::{Method, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The most commands asked for per history page (the API's limit).
pub(crate) const PAGE_SIZE: u32 = 100;

/// The command object (the fields read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Command {
    /// The command's id.
    pub id: u64,
    /// `waiting`, `running`, `cancelling`, `done`, `error` or `cancelled`.
    pub status: String,
    /// `SparkCommand`, `ShellCommand`, ...
    pub command_type: Option<String>,
    /// Percent done.
    pub progress: Option<u64>,
    /// When QDS received it.
    pub created_at: Option<String>,
    /// Its last change.
    pub updated_at: Option<String>,
    /// The cluster label it runs on.
    pub label: Option<String>,
    /// The name it was submitted with (flow's job id).
    pub name: Option<String>,
    /// Its tags (with `include_query_properties`).
    pub tags: Option<Vec<String>>,
}

impl Command {
    /// True if it carries flow's job id `job` as its name or a tag.
    pub fn is_named(&self, job: &str) -> bool {
        self.name.as_deref() == Some(job)
            || self
                .tags
                .as_ref()
                .is_some_and(|tags| tags.iter().any(|t| t == job))
    }
}

/// A page of the command history.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct History {
    pub commands: Vec<Command>,
    pub paging_info: PagingInfo,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PagingInfo {
    pub next_page: Option<u32>,
}

/// A cluster's state (`UP`, `DOWN`, `PENDING`, `TERMINATING`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ClusterState {
    pub state: String,
    pub cluster_id: Option<Value>,
    /// Why it went down, when QDS says (`null` while it is up).
    pub terminate_reason: Option<Value>,
    /// When it went down.
    pub down_at: Option<String>,
}

impl ClusterState {
    /// Its state, with QDS's reason and time when it is down: `DOWN
    /// (since T): REASON`.
    pub fn describe(&self) -> String {
        let mut text = self.state.clone();
        if let Some(at) = self.down_at.as_deref().filter(|a| !a.is_empty()) {
            text.push_str(&format!(" (since {at})"));
        }
        match &self.terminate_reason {
            None | Some(Value::Null) => {}
            Some(Value::String(reason)) if reason.is_empty() => {}
            Some(Value::String(reason)) => text.push_str(&format!(": {reason}")),
            Some(other) => text.push_str(&format!(": {other}")),
        }
        text
    }
}

/// The `{"error": {...}}` body of a refused call.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorDetail {
    error_code: Value,
    error_message: String,
}

/// The client. Cheap to share behind an `Arc`.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: Secret,
    retry: RetryConfig,
    clock: Arc<dyn Clock>,
    requests: AtomicU64,
    /// The client's connect and request timeouts, for messages.
    timeouts: HttpTimeouts,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .field("token", &"***")
            .field("requests", &self.requests())
            .finish()
    }
}

impl Api {
    pub fn new(
        http: reqwest::Client,
        base: String,
        token: Secret,
        retry: RetryConfig,
        clock: Arc<dyn Clock>,
        timeouts: HttpTimeouts,
    ) -> Self {
        Api {
            http,
            base,
            token,
            retry,
            clock,
            requests: AtomicU64::new(0),
            timeouts,
        }
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// One attempt: the answer, or its refusal as an [`ApiError`].
    async fn send_once(
        &self,
        what: &str,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Response, ApiError> {
        let mut token = HeaderValue::from_str(self.token.expose())
            .map_err(|_| ApiError::Decode("the token is not a header value".into()))?;
        token.set_sensitive(true);
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .query(query)
            .header("X-AUTH-TOKEN", token)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        flow_core::meter::cloud_request("qubole", what);
        let response = request.send().await.map_err(|e| self.transport(what, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(&response);
        let text = response.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) if !body.error.error_message.is_empty() => {
                let code = match body.error.error_code {
                    Value::Null => String::new(),
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (code, one_line(&body.error.error_message).into_owned())
            }
            _ => (
                String::new(),
                one_line(prefix(&text, 500).trim()).into_owned(),
            ),
        };
        let status = status.as_u16();
        let read = *method == Method::GET;
        let retryable = matches!(status, 429 | 503)
            || (read && (matches!(status, 408 | 449) || (500..600).contains(&status)));
        Err(ApiError::Status {
            status,
            code: if code == status.to_string() {
                String::new()
            } else {
                code
            },
            message,
            retry_after,
            retryable,
        })
    }

    /// A call retried while it fails transiently; the answer's JSON.
    async fn call<T: DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<T, ApiError> {
        let response = flow_cloud::retry(&self.retry, &self.clock, what, || {
            self.send_once(what, &method, path, query, body)
        })
        .await?;
        self.json(what, response).await
    }

    async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        response: Response,
    ) -> Result<T, ApiError> {
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(what, e))?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode(format!("{what}: {e}")))
    }

    /// `POST /commands`, sent once (see the module's docs).
    pub async fn submit_command(&self, body: &Value) -> Result<Command, ApiError> {
        let what = "submit command";
        let response = self
            .send_once(what, &Method::POST, "/api/v1.2/commands", &[], Some(body))
            .await?;
        self.json(what, response).await
    }

    /// `GET /commands/ID`; `None` when there is no such command.
    pub async fn get_command(&self, id: u64) -> Result<Option<Command>, ApiError> {
        let path = format!("/api/v1.2/commands/{id}");
        let got = self
            .call("view command status", Method::GET, &path, &[], None)
            .await;
        found(got, ApiError::is_not_found)
    }

    /// One page (from 1) of the history of commands on `label`, newest
    /// first, with their tags.
    pub async fn history(
        &self,
        label: &str,
        name: Option<&str>,
        page: u32,
    ) -> Result<History, ApiError> {
        let mut query = vec![
            ("cluster_label", label.to_string()),
            ("include_query_properties", "true".to_string()),
            ("per_page", PAGE_SIZE.to_string()),
            ("page", page.to_string()),
        ];
        if let Some(name) = name {
            query.push(("name", name.to_string()));
        }
        self.call(
            "command history",
            Method::GET,
            "/api/v1.2/commands",
            &query,
            None,
        )
        .await
    }

    /// The command on `label` named (or tagged) `job`, if QDS has one.
    pub async fn find_command(&self, label: &str, job: &str) -> Result<Option<Command>, ApiError> {
        let mut page = 1;
        loop {
            let history = self.history(label, Some(job), page).await?;
            if let Some(found) = history.commands.into_iter().find(|c| c.is_named(job)) {
                return Ok(Some(found));
            }
            match history.paging_info.next_page {
                Some(next) if next > page => page = next,
                _ => return Ok(None),
            }
        }
    }

    /// `PUT /commands/ID {"status": "kill"}`: the command as it is now
    /// (a finished one is left as it is).
    pub async fn kill_command(&self, id: u64) -> Result<Command, ApiError> {
        let path = format!("/api/v1.2/commands/{id}");
        let body = serde_json::json!({ "status": "kill" });
        self.call("cancel command", Method::PUT, &path, &[], Some(&body))
            .await
    }

    /// `GET /commands/ID/logs`: the answer, to be read as a stream.
    /// `None` when there is no log (yet).
    pub async fn logs(&self, id: u64) -> Result<Option<Response>, ApiError> {
        let path = format!("/api/v1.2/commands/{id}/logs");
        let what = "view command logs";
        let got = flow_cloud::retry(&self.retry, &self.clock, what, || {
            self.send_once(what, &Method::GET, &path, &[], None)
        })
        .await;
        found(got, ApiError::is_not_found)
    }

    /// `GET /clusters/LABEL/state`.
    pub async fn cluster_state(&self, label: &str) -> Result<ClusterState, ApiError> {
        let path = format!("/api/v1.3/clusters/{label}/state");
        self.call("check cluster status", Method::GET, &path, &[], None)
            .await
    }

    /// `PUT /clusters/LABEL/state {"state": "start" | "terminate"}` (no
    /// effect on a cluster already there).
    pub async fn set_cluster_state(&self, label: &str, state: &str) -> Result<(), ApiError> {
        let path = format!("/api/v1.3/clusters/{label}/state");
        let body = serde_json::json!({ "state": state });
        let _: Value = self
            .call(
                "start or terminate a cluster",
                Method::PUT,
                &path,
                &[],
                Some(&body),
            )
            .await?;
        Ok(())
    }

    /// No answer: the reqwest error with its causes (without the URL), a
    /// timeout naming the setting that bounded it.
    fn transport(&self, what: &str, e: reqwest::Error) -> ApiError {
        let (message, transient) = self.timeouts.no_answer(what, e);
        ApiError::Transport { message, transient }
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
