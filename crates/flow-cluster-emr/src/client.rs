//! What the clusters of one factory share: the AWS clients (made on first
//! use, since the AWS chain is resolved asynchronously), one step poller per
//! EMR cluster id, the clock, and the S3 filesystem wrapper.

use crate::config::EmrConfig;
use crate::steps::EmrStepInfo;
use async_trait::async_trait;
use aws_sdk_emr::config::http::HttpResponse;
use aws_sdk_emr::error::{ProvideErrorMetadata, SdkError};
use flow_cloud::cluster::PollerMap;
use flow_cloud::{Clock, JobSource, Phase, Poller, Requests};
use flow_core::DeferredFilesystem;
use flow_fs_s3::aws::{self, AwsSettings};
use flow_fs_s3::S3Filesystem;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Why the AWS clients could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(
        "EMR: no AWS region; set `region` in [cluster.emr], AWS_REGION, or a profile's region"
    )]
    /// No region in the settings, the environment or the profile.
    NoRegion,
    /// The cluster's S3 filesystem could not be made.
    #[error("EMR cluster filesystem (S3): {0}")]
    S3(String),
}

/// The SDK clients.
#[derive(Clone)]
pub(crate) struct Clients {
    pub emr: aws_sdk_emr::Client,
    pub s3: S3Filesystem,
}

/// State shared by a factory and its clusters.
pub(crate) struct EmrBackend {
    pub config: EmrConfig,
    pub clock: Arc<dyn Clock>,
    clients: OnceCell<Clients>,
    pollers: PollerMap<EmrStepSource>,
    /// `DescribeCluster` requests of launch waits.
    pub lifecycle_requests: Requests,
}

impl EmrBackend {
    pub fn new(config: EmrConfig, clock: Arc<dyn Clock>) -> Self {
        EmrBackend {
            config,
            clock,
            clients: OnceCell::new(),
            pollers: PollerMap::default(),
            lifecycle_requests: Requests::new(),
        }
    }

    /// The clients, made once: credentials, region and endpoints from the
    /// settings and the AWS chain. Makes no request.
    pub async fn clients(&self) -> Result<&Clients, ClientError> {
        self.clients.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> Result<Clients, ClientError> {
        let config = &self.config;
        let sdk = aws::load(&AwsSettings {
            region: config.region.as_deref(),
            profile: config.profile.as_deref(),
            endpoint: config.endpoint.as_deref(),
            retry: config.retry,
        })
        .await
        .map_err(|aws::NoRegion| ClientError::NoRegion)?;
        let emr = aws_sdk_emr::Client::from_conf(
            aws_sdk_emr::config::Builder::from(&sdk)
                .interceptor(aws::MeteredCalls("emr"))
                .build(),
        );
        let s3 = config
            .s3_config()
            .builder()
            .build()
            .await
            .map_err(|e| ClientError::S3(e.to_string()))?;
        Ok(Clients { emr, s3 })
    }

    /// The poller of EMR cluster `cluster_id`, shared by every cluster
    /// value of this factory: one `ListSteps` per tick for all of that
    /// cluster's watched steps.
    pub fn poller(&self, emr: &aws_sdk_emr::Client, cluster_id: &str) -> Poller<EmrStepSource> {
        self.pollers.get(cluster_id, || {
            Poller::new(
                EmrStepSource {
                    emr: emr.clone(),
                    cluster_id: cluster_id.to_string(),
                },
                self.config.poll,
                self.clock.clone(),
            )
        })
    }

    /// Status requests made by every poller so far (for tests and logs).
    pub fn poll_requests(&self) -> u64 {
        self.pollers.requests()
    }
}

/// A failed SDK call as one line: EMR's error code and message, or what
/// kept the call from an answer (the AWS clients' one formatter).
pub(crate) use flow_fs_s3::aws::sdk_error_text as sdk_message;

/// Worth another try: throttling, server errors, timeouts, connections.
pub(crate) fn is_transient<E>(e: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            flow_cloud::retry::is_transient_status(status)
                || matches!(
                    e.code(),
                    Some(
                        "ThrottlingException"
                            | "Throttling"
                            | "RequestLimitExceeded"
                            | "InternalServerError"
                            | "InternalFailure"
                            | "ServiceUnavailable"
                    )
                )
        }
        _ => false,
    }
}

/// The `Retry-After` EMR's answer carried, if any.
pub(crate) fn retry_after<E>(e: &SdkError<E, HttpResponse>) -> Option<std::time::Duration> {
    let value = e.raw_response()?.headers().get("retry-after")?;
    flow_cloud::retry::parse_retry_after(value, std::time::SystemTime::now())
}

/// A failed call that flow retries itself ([`flow_cloud::retry_with_lookup`]):
/// the SDK's error as text with what the retry needs, or an error that ends
/// the call as it is.
#[derive(Debug)]
pub(crate) enum CallError<E> {
    /// EMR refused or did not answer.
    Sdk {
        message: String,
        transient: bool,
        retry_after: Option<std::time::Duration>,
    },
    /// Not worth another try, whatever it is.
    Final(E),
}

impl<E> CallError<E> {
    /// `call` says what flow was doing: "AddJobFlowSteps on EMR cluster
    /// j-…".
    pub fn sdk<S>(call: impl std::fmt::Display, e: &SdkError<S, HttpResponse>) -> Self
    where
        S: std::error::Error + ProvideErrorMetadata + 'static,
    {
        CallError::Sdk {
            message: format!("{call}: {}", sdk_message(e)),
            transient: is_transient(e),
            retry_after: retry_after(e),
        }
    }
}

impl<E: std::fmt::Display> std::fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Sdk { message, .. } => f.write_str(message),
            CallError::Final(e) => e.fmt(f),
        }
    }
}

impl<E> flow_cloud::Transient for CallError<E> {
    fn is_transient(&self) -> bool {
        matches!(
            self,
            CallError::Sdk {
                transient: true,
                ..
            }
        )
    }
    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            CallError::Sdk { retry_after, .. } => *retry_after,
            CallError::Final(_) => None,
        }
    }
    fn after_attempts(self, attempts: usize) -> Self {
        match self {
            CallError::Sdk {
                message,
                transient,
                retry_after,
            } => CallError::Sdk {
                message: flow_cloud::errors::after_attempts(&message, attempts),
                transient,
                retry_after,
            },
            e => e,
        }
    }
}

/// True when EMR says the cluster id is unknown.
pub(crate) fn is_unknown_cluster<E>(e: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    matches!(e, SdkError::ServiceError(_))
        && (matches!(e.code(), Some("ResourceNotFoundException"))
            || (matches!(
                e.code(),
                Some("InvalidRequestException" | "ValidationException")
            ) && e.message().is_some_and(|m| {
                let m = m.to_ascii_lowercase();
                m.contains("not found") || m.contains("does not exist") || m.contains("not valid")
            })))
}

/// "ask EMR about these steps": one `ListSteps` filtered by the step ids
/// (EMR takes at most ten ids per request, so more than ten watched steps
/// on one cluster cost one request per ten).
pub(crate) struct EmrStepSource {
    emr: aws_sdk_emr::Client,
    cluster_id: String,
}

#[async_trait]
impl JobSource for EmrStepSource {
    type Id = String;
    type Status = EmrStepInfo;
    type Error = String;

    async fn statuses(&self, ids: &[String]) -> Result<Vec<(String, EmrStepInfo)>, String> {
        let mut found = Vec::new();
        for chunk in ids.chunks(10) {
            let steps = list_steps(&self.emr, &self.cluster_id, Some(chunk)).await?;
            for step in steps {
                if crate::steps::EMR_STEP_STATES.phase(&step.state).is_none() {
                    tracing::warn!(
                        "step {} of cluster {} is in state {} that flow does not know; waiting on",
                        step.id,
                        self.cluster_id,
                        step.state
                    );
                }
                found.push((step.id.clone(), step));
            }
        }
        Ok(found)
    }

    fn phase(&self, status: &EmrStepInfo) -> Phase {
        status.phase()
    }

    fn checks_cluster(&self) -> bool {
        true
    }

    /// One `DescribeCluster`: ended when TERMINATING, TERMINATED or
    /// TERMINATED_WITH_ERRORS (EMR cancels its steps), or unknown.
    async fn cluster_ended(&self) -> Result<Option<String>, String> {
        let id = &self.cluster_id;
        match self.emr.describe_cluster().cluster_id(id).send().await {
            Ok(answer) => Ok(answer.cluster().and_then(|c| {
                let state = crate::launch::state_of(c);
                crate::steps::ENDED_CLUSTER_STATES
                    .contains(&state.as_str())
                    .then(|| format!("{state}: {}", crate::launch::reason_of(c)))
            })),
            Err(e) if is_unknown_cluster(&e) => {
                Ok(Some(format!("EMR no longer knows cluster {id}")))
            }
            Err(e) => Err(format!("DescribeCluster {id}: {}", sdk_message(&e))),
        }
    }
}

/// Every step of `cluster_id` (newest first), or those with `ids`, paging
/// through the answer.
pub(crate) async fn list_steps(
    emr: &aws_sdk_emr::Client,
    cluster_id: &str,
    ids: Option<&[String]>,
) -> Result<Vec<EmrStepInfo>, String> {
    let mut steps = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let answer = emr
            .list_steps()
            .cluster_id(cluster_id)
            .set_step_ids(ids.map(<[String]>::to_vec))
            .set_marker(marker.take())
            .send()
            .await
            .map_err(|e| format!("ListSteps on {cluster_id}: {}", sdk_message(&e)))?;
        steps.extend(answer.steps().iter().map(EmrStepInfo::from_summary));
        match answer.marker() {
            Some(next) if !next.is_empty() => marker = Some(next.to_string()),
            _ => return Ok(steps),
        }
    }
}

/// The step named `name` on `cluster_id`, paging through its steps (newest
/// first) until it is found.
pub(crate) async fn find_step_by_name(
    emr: &aws_sdk_emr::Client,
    cluster_id: &str,
    name: &str,
) -> Result<Option<EmrStepInfo>, String> {
    let mut marker: Option<String> = None;
    loop {
        let answer = emr
            .list_steps()
            .cluster_id(cluster_id)
            .set_marker(marker.take())
            .send()
            .await
            .map_err(|e| format!("ListSteps on {cluster_id}: {}", sdk_message(&e)))?;
        if let Some(step) = answer.steps().iter().find(|s| s.name() == Some(name)) {
            return Ok(Some(EmrStepInfo::from_summary(step)));
        }
        match answer.marker() {
            Some(next) if !next.is_empty() => marker = Some(next.to_string()),
            _ => return Ok(None),
        }
    }
}

/// The cluster's S3 filesystem, made with the clients on first use (the
/// `Cluster` trait hands out its filesystem synchronously).
pub(crate) struct LazyS3 {
    pub shared: Arc<EmrBackend>,
}

#[async_trait]
impl DeferredFilesystem for LazyS3 {
    type Fs = S3Filesystem;
    async fn built(&self) -> Result<&S3Filesystem, String> {
        match self.shared.clients().await {
            Ok(clients) => Ok(&clients.s3),
            Err(e) => Err(e.to_string()),
        }
    }
}
