//! The Dataproc REST v1 calls this crate makes, and the parts of their
//! answers it reads. Every call is authorized (unless the endpoint is a
//! fake), retried on 429/5xx/connection failures with `flow_cloud`'s policy
//! (honouring `Retry-After`), and counted.

use crate::error::ApiError;
use flow_cloud::errors::{found, one_line};
use flow_cloud::http::HttpTimeouts;
use flow_cloud::{Clock, RetryConfig};
use flow_fs_gcs::google::{GoogleClient, NoToken, Refusal};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The most jobs asked for per `jobs.list` page (the API's own limit).
const LIST_PAGE_SIZE: &str = "100";

/// `projects/P/regions/R`: where a cluster or a job lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Location {
    pub project: String,
    pub region: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/regions/{}", self.project, self.region)
    }
}

/// `Job` (the fields read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobInfo {
    /// `reference`: the job's project and id.
    pub reference: JobReference,
    /// `placement`: the cluster it runs on.
    pub placement: Option<JobPlacement>,
    /// `status`: its current state.
    pub status: Option<JobStatusInfo>,
    /// `statusHistory`: its earlier states.
    pub status_history: Vec<JobStatusInfo>,
    /// `driverOutputResourceUri`: where its driver output goes (a GCS prefix).
    pub driver_output_resource_uri: Option<String>,
    /// `done`: true once it will not change.
    pub done: bool,
}

impl JobInfo {
    /// `status.state`, or `""` when the answer has none.
    pub fn state(&self) -> &str {
        self.status.as_ref().map_or("", |s| s.state.as_str())
    }
    /// `status.details` on one line (Dataproc writes them over several:
    /// the failure, then where its logs are), or `""`.
    pub fn details(&self) -> Cow<'_, str> {
        one_line(self.status.as_ref().map_or("", |s| s.details.as_str()))
    }
}

/// `JobReference`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobReference {
    /// `projectId`.
    pub project_id: String,
    /// `jobId`: the client-chosen job id.
    pub job_id: String,
}

/// `JobPlacement`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobPlacement {
    /// `clusterName`.
    pub cluster_name: String,
    /// `clusterUuid`.
    pub cluster_uuid: String,
}

/// `JobStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobStatusInfo {
    /// `state`, e.g. `RUNNING` or `DONE`.
    pub state: String,
    /// `details`: the failure message, if any.
    pub details: String,
    /// `stateStartTime` (RFC 3339).
    pub state_start_time: String,
    /// `substate`, e.g. `QUEUED`.
    pub substate: String,
}

/// `Cluster` (the fields read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ClusterInfo {
    pub cluster_name: String,
    pub cluster_uuid: String,
    pub status: Option<ClusterStatusInfo>,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl ClusterInfo {
    pub fn state(&self) -> &str {
        self.status.as_ref().map_or("", |s| s.state.as_str())
    }
    /// `status.detail` on one line, or `""`.
    pub fn detail(&self) -> Cow<'_, str> {
        one_line(self.status.as_ref().map_or("", |s| s.detail.as_str()))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ClusterStatusInfo {
    pub state: String,
    pub detail: String,
}

/// A long-running `Operation`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Operation {
    pub name: String,
    pub done: bool,
    pub error: Option<RpcStatus>,
}

/// `google.rpc.Status`, a failed operation's error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct RpcStatus {
    pub code: i32,
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct JobList {
    jobs: Vec<JobInfo>,
    next_page_token: Option<String>,
}

/// The client. Cheap to share behind an `Arc`.
pub(crate) struct Api {
    /// The authorised, retried, counted call (no token for a fake endpoint).
    google: GoogleClient,
    base: String,
    /// The client's connect and request timeouts, for messages.
    timeouts: HttpTimeouts,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .field("auth", &self.google)
            .field("requests", &self.requests())
            .finish()
    }
}

impl Api {
    pub fn new(
        http: reqwest::Client,
        base: String,
        auth: Option<Arc<dyn gcp_auth::TokenProvider>>,
        retry: RetryConfig,
        clock: Arc<dyn Clock>,
        timeouts: HttpTimeouts,
    ) -> Self {
        Api {
            google: GoogleClient::new(http, auth, SCOPE, retry, clock),
            base,
            timeouts,
        }
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests(&self) -> u64 {
        self.google.requests()
    }

    /// One call, retried while it fails transiently; the answer's JSON.
    async fn call<T: DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<T, ApiError> {
        let url = format!("{}/v1/{path}", self.base);
        let response = self
            .google
            .send(
                what,
                |http| {
                    // Each attempt is a request.
                    flow_core::meter::cloud_request("dataproc", what);
                    let request = http.request(method.clone(), &url).query(query);
                    match body {
                        Some(body) => request.json(body),
                        None => request,
                    }
                },
                |e| self.transport(what, e),
            )
            .await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(what, e))?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode(format!("{what}: {e}")))
    }

    pub async fn get_cluster(
        &self,
        at: &Location,
        name: &str,
    ) -> Result<Option<ClusterInfo>, ApiError> {
        let path = format!("{at}/clusters/{name}");
        let got = self
            .call("clusters.get", Method::GET, &path, &[], None)
            .await;
        found(got, ApiError::is_not_found)
    }

    pub async fn create_cluster(
        &self,
        at: &Location,
        cluster: &Value,
        request_id: &str,
    ) -> Result<Operation, ApiError> {
        let path = format!("{at}/clusters");
        self.call(
            "clusters.create",
            Method::POST,
            &path,
            &[("requestId", request_id)],
            Some(cluster),
        )
        .await
    }

    /// `None` when there is no such cluster.
    pub async fn delete_cluster(
        &self,
        at: &Location,
        name: &str,
        request_id: &str,
    ) -> Result<Option<Operation>, ApiError> {
        let path = format!("{at}/clusters/{name}");
        let deleted = self
            .call(
                "clusters.delete",
                Method::DELETE,
                &path,
                &[("requestId", request_id)],
                None,
            )
            .await;
        found(deleted, ApiError::is_not_found)
    }

    /// `operations.get`; `name` is the operation's full name.
    pub async fn get_operation(&self, name: &str) -> Result<Operation, ApiError> {
        self.call("operations.get", Method::GET, name, &[], None)
            .await
    }

    pub async fn submit_job(
        &self,
        at: &Location,
        job: Value,
        request_id: &str,
    ) -> Result<JobInfo, ApiError> {
        let path = format!("{at}/jobs:submit");
        let body = serde_json::json!({ "job": job, "requestId": request_id });
        self.call("jobs.submit", Method::POST, &path, &[], Some(&body))
            .await
    }

    /// `None` when there is no such job.
    pub async fn get_job(&self, at: &Location, id: &str) -> Result<Option<JobInfo>, ApiError> {
        let path = format!("{at}/jobs/{id}");
        let got = self.call("jobs.get", Method::GET, &path, &[], None).await;
        found(got, ApiError::is_not_found)
    }

    /// The jobs of `cluster` that are not finished (`jobStateMatcher =
    /// ACTIVE`), every page.
    pub async fn list_active_jobs(
        &self,
        at: &Location,
        cluster: &str,
    ) -> Result<Vec<JobInfo>, ApiError> {
        self.list_jobs(
            at,
            cluster,
            ("jobStateMatcher", "ACTIVE"),
            |_| true,
            |_| false,
        )
        .await
    }

    /// The finished jobs of `cluster` (`filter = status.state =
    /// NON_ACTIVE`) among `wanted`, newest first, paging only until every
    /// one of `wanted` is found: the jobs that just ended are on the first
    /// page.
    pub async fn list_finished_jobs(
        &self,
        at: &Location,
        cluster: &str,
        wanted: &[&str],
    ) -> Result<Vec<JobInfo>, ApiError> {
        self.list_jobs(
            at,
            cluster,
            ("filter", "status.state = NON_ACTIVE"),
            |job| wanted.contains(&job.reference.job_id.as_str()),
            |kept| kept >= wanted.len(),
        )
        .await
    }

    /// `jobs.list` of `cluster` matching `matcher` (a query parameter),
    /// page by page: the jobs `keep` wants, until `enough` of them are
    /// kept or the last page was read.
    async fn list_jobs(
        &self,
        at: &Location,
        cluster: &str,
        matcher: (&str, &str),
        keep: impl Fn(&JobInfo) -> bool,
        enough: impl Fn(usize) -> bool,
    ) -> Result<Vec<JobInfo>, ApiError> {
        let path = format!("{at}/jobs");
        let mut jobs = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("clusterName", cluster),
                matcher,
                ("pageSize", LIST_PAGE_SIZE),
            ];
            if let Some(token) = &token {
                query.push(("pageToken", token));
            }
            let page: JobList = self
                .call("jobs.list", Method::GET, &path, &query, None)
                .await?;
            jobs.extend(page.jobs.into_iter().filter(|job| keep(job)));
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) if !enough(jobs.len()) => token = Some(next),
                _ => return Ok(jobs),
            }
        }
    }

    pub async fn cancel_job(&self, at: &Location, id: &str) -> Result<JobInfo, ApiError> {
        let path = format!("{at}/jobs/{id}:cancel");
        self.call(
            "jobs.cancel",
            Method::POST,
            &path,
            &[],
            Some(&serde_json::json!({})),
        )
        .await
    }
}

impl Api {
    /// No answer: the reqwest error with its causes, a timeout naming the
    /// call and the setting that bounded it.
    fn transport(&self, what: &str, e: reqwest::Error) -> ApiError {
        let (message, transient) = self.timeouts.no_answer(what, e);
        ApiError::Transport { message, transient }
    }
}

/// A refused answer becomes an [`ApiError`] with the API's reason.
impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let (code, message) = refusal.reason();
        ApiError::Status {
            status: refusal.status.as_u16(),
            code,
            message,
            retry_after: refusal.retry_after,
        }
    }
}

impl From<NoToken> for ApiError {
    fn from(NoToken(message): NoToken) -> Self {
        ApiError::Auth(message)
    }
}
