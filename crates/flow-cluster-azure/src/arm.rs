//! [`Arm`]: the Azure Resource Manager calls that create and delete
//! HDInsight clusters (`Microsoft.HDInsight/clusters`): PUT and DELETE
//! answered with an `Azure-AsyncOperation` to follow, GET of a cluster and
//! of an operation. Bearer tokens come from `azure_identity` (client
//! secret, managed identity or the Azure CLI); every call is retried on
//! 429, 5xx and connection errors with `flow_cloud`'s policy, honouring
//! `Retry-After`. Errors carry ARM's `code: message`
//! ([`CallError`]), never a token.

use crate::arm_config::{ArmConfig, ArmCredential};
use crate::gateway::{message_of, transport, CallError};
use azure_core::auth::TokenCredential;
use flow_cloud::retry::parse_retry_after;
use flow_cloud::{Clock, RetryConfig};
use reqwest::{header, Method, Response};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The scope of ARM's tokens.
const SCOPE: &str = "https://management.azure.com/.default";

/// A cluster as Clusters - Get describes it (the parts flow reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ArmCluster {
    pub tags: std::collections::BTreeMap<String, String>,
    pub properties: ArmClusterProperties,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ArmClusterProperties {
    /// `InProgress`, `Succeeded`, `Failed`, `Canceled`, `Deleting`.
    pub provisioning_state: String,
    /// `Accepted`, `Running`, `Error`, `Deleting`, ...
    pub cluster_state: String,
    pub errors: Vec<ArmErrorBody>,
}

/// ARM's `{"code", "message"}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ArmErrorBody {
    pub code: String,
    pub message: String,
}

impl fmt::Display for ArmErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = flow_cloud::errors::service_error(Some(&self.code), Some(&self.message));
        f.write_str(text.as_deref().unwrap_or("no detail"))
    }
}

impl ArmCluster {
    /// Its failure's `code: message`s, or the states.
    pub fn failure(&self) -> String {
        let p = &self.properties;
        if p.errors.is_empty() {
            return format!("{} ({})", p.provisioning_state, p.cluster_state);
        }
        p.errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// An async operation's status (Clusters - Get Azure Async Operation
/// Status), with the `Retry-After` ARM asked for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Operation {
    /// `InProgress`, `Succeeded`, `Failed`, `Canceled`.
    pub status: String,
    pub error: Option<ArmErrorBody>,
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

/// ARM for one subscription and resource group.
pub(crate) struct Arm {
    http: reqwest::Client,
    credential: Arc<dyn TokenCredential>,
    endpoint: String,
    subscription: String,
    resource_group: String,
    api_version: String,
    retry: RetryConfig,
    clock: Arc<dyn Clock>,
    requests: AtomicU64,
}

impl fmt::Debug for Arm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arm")
            .field("endpoint", &self.endpoint)
            .field("subscription", &self.subscription)
            .field("resource_group", &self.resource_group)
            .finish_non_exhaustive()
    }
}

/// The `azure_identity` credential of the settings; reads the client
/// secret. `Err` names what is wrong.
fn credential(config: &ArmConfig) -> Result<Arc<dyn TokenCredential>, String> {
    use azure_identity::{
        AzureCliCredential, ClientSecretCredential, TokenCredentialOptions,
        VirtualMachineManagedIdentityCredential,
    };
    Ok(match &config.credential {
        ArmCredential::ClientSecret {
            tenant,
            client_id,
            secret,
            authority,
        } => {
            let secret = secret
                .read("credential.secret")
                .map_err(|e| e.to_string())?;
            let authority = azure_core::Url::parse(authority)
                .map_err(|e| format!("credential.authority: {e}"))?;
            Arc::new(ClientSecretCredential::new(
                azure_core::new_http_client(),
                authority,
                tenant.clone(),
                client_id.clone(),
                secret.expose().to_string(),
            ))
        }
        ArmCredential::ManagedIdentity => Arc::new(VirtualMachineManagedIdentityCredential::new(
            TokenCredentialOptions::default(),
        )),
        ArmCredential::AzureCli => Arc::new(AzureCliCredential::new()),
    })
}

impl Arm {
    pub fn new(
        config: &ArmConfig,
        http: reqwest::Client,
        retry: RetryConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        Ok(Arm {
            http,
            credential: credential(config)?,
            endpoint: config.endpoint.trim_end_matches('/').to_string(),
            subscription: config.subscription.clone(),
            resource_group: config.resource_group.clone(),
            api_version: config.api_version.clone(),
            retry,
            clock,
            requests: AtomicU64::new(0),
        })
    }

    /// ARM requests sent so far (retries included), token requests aside.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn resource_group(&self) -> &str {
        &self.resource_group
    }

    /// The cluster's resource URL in `subscription`/`group`.
    fn cluster_url(&self, subscription: &str, group: &str, name: &str) -> String {
        format!(
            "{}/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.HDInsight/clusters/{name}?api-version={}",
            self.endpoint, self.api_version
        )
    }

    async fn token(&self) -> Result<String, CallError> {
        let token = self
            .credential
            .get_token(&[SCOPE])
            .await
            .map_err(|e| CallError::Status {
                status: 401,
                message: format!(
                    "cannot get a token for ARM: {}",
                    flow_cloud::errors::error_chain(&e)
                ),
                retry_after: None,
            })?;
        Ok(token.token.secret().to_string())
    }

    /// One attempt; an error status becomes [`CallError::Status`] with
    /// ARM's `code: message`.
    async fn send_once(
        &self,
        what: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Response, CallError> {
        let token = self.token().await?;
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        flow_core::meter::cloud_request("arm", what);
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(&response);
        let text = response.text().await.unwrap_or_default();
        Err(CallError::Status {
            status: status.as_u16(),
            message: message_of(&text),
            retry_after,
        })
    }

    async fn send(
        &self,
        what: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Response, CallError> {
        flow_cloud::retry(&self.retry, &self.clock, what, || {
            self.send_once(what, method.clone(), url, body)
        })
        .await
    }

    /// Clusters - Create: one PUT; the answer's `Azure-AsyncOperation`.
    pub async fn create_once(&self, name: &str, body: &Value) -> Result<Option<String>, CallError> {
        let url = self.cluster_url(&self.subscription, &self.resource_group, name);
        let response = self
            .send_once("Clusters - Create", Method::PUT, &url, Some(body))
            .await?;
        self.operation_of(&response)
    }

    /// Clusters - Get; `None` when there is no such cluster.
    pub async fn get(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<Option<ArmCluster>, CallError> {
        let url = self.cluster_url(subscription, group, name);
        match self.send("Clusters - Get", Method::GET, &url, None).await {
            Ok(response) => crate::gateway::read_json(response).await.map(Some),
            Err(e) if e.is_status(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Clusters - Delete: the operation to follow, `None` when the cluster
    /// is gone already.
    pub async fn delete(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<Option<String>, CallError> {
        let url = self.cluster_url(subscription, group, name);
        match self
            .send("Clusters - Delete", Method::DELETE, &url, None)
            .await
        {
            Ok(response) if response.status() == reqwest::StatusCode::NO_CONTENT => Ok(None),
            Ok(response) => self.operation_of(&response),
            Err(e) if e.is_status(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// An async operation's status. The URL is ARM's own answer; it is
    /// only followed under the configured endpoint, so the token never
    /// goes elsewhere.
    pub async fn operation(&self, url: &str) -> Result<Operation, CallError> {
        let response = self
            .send("Get Azure Async Operation Status", Method::GET, url, None)
            .await?;
        let retry_after = retry_after(&response);
        let mut op: Operation = crate::gateway::read_json(response).await?;
        op.retry_after = retry_after;
        Ok(op)
    }

    fn operation_of(&self, response: &Response) -> Result<Option<String>, CallError> {
        let Some(url) = response
            .headers()
            .get("azure-asyncoperation")
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(None);
        };
        if !url.starts_with(&format!("{}/", self.endpoint)) {
            return Err(CallError::Transport(format!(
                "ARM named an operation outside {}: {url}",
                self.endpoint
            )));
        }
        Ok(Some(url.to_string()))
    }
}

fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}
