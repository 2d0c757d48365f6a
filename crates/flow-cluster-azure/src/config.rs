//! [`AzureConfig`] (the `[cluster.azure]` section of `flow.toml`) and its
//! builder.

use crate::arm_config::ArmConfig;
use crate::cluster::AzureClusterFactory;
use crate::error::AzureError;
use crate::jobs::ClusterWatch;
use flow_cloud::{Clock, JobLogs, PollConfig, RetryConfig, TokioClock};
use flow_fs_azure::{AzureBlobConfig, SecretRef};
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Settings of the HDInsight cluster. Holds where the password is read
/// from (`"env:VAR"`), never the password, so it is safe to `Debug`.
///
/// ```toml
/// [cluster.azure]
/// gateway = "https://etl.azurehdinsight.net"   # the cluster's HTTPS gateway
/// username = "admin"
/// password = "env:HDINSIGHT_PASSWORD"
/// jobs_per_cluster = 4                          # batches and jobs the cluster runs at once
/// [cluster.azure.blob]
/// account = "etldata"
/// key = "env:AZURE_STORAGE_KEY"
/// container = "flows"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureConfig {
    /// The cluster's HTTPS gateway (`https://CLUSTER.azurehdinsight.net`);
    /// Livy and WebHCat are under it unless `livy_url` / `webhcat_url` say
    /// otherwise. Without `[cluster.azure.arm]` it names the cluster, which
    /// is managed outside the flow.
    pub gateway: Option<String>,
    /// Livy's URL (a self-hosted Livy, EMR's on port 8998). Default:
    /// `GATEWAY/livy`.
    pub livy_url: Option<String>,
    /// WebHCat's URL. Default: `GATEWAY/templeton/v1`.
    pub webhcat_url: Option<String>,
    /// The gateway's HTTP basic login.
    pub username: String,
    /// Its password (a secret, `"env:VAR"`); none: requests carry no login
    /// (a Livy without authentication).
    pub password: Option<SecretRef>,
    /// WebHCat's `user.name`. Default: `username`.
    pub webhcat_user: Option<String>,
    /// Where WebHCat jobs write their status directories (one per job,
    /// named after it): an address (`wasbs://...`), or a key in the Blob
    /// filesystem's default container. Read back for a failed job's
    /// `stderr`.
    pub statusdir: String,
    /// Jobs a cluster runs at once: the engine gives each cluster this many
    /// steps at a time, all watched by one listing per API per tick.
    /// Default 1.
    pub jobs_per_cluster: std::num::NonZeroUsize,
    /// How jobs are polled: floor, backoff, cap, timeout of one wait.
    pub poll: PollConfig,
    /// Retries of 429, 5xx and connection failures (`Retry-After` honoured).
    pub retry: RetryConfig,
    /// The longest wait for a cancelled job to end.
    #[serde(with = "humantime_serde")]
    pub cancel_timeout: Duration,
    /// The longest wait for a TCP (and TLS) connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The longest whole request (every answer is small).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How much of a job's log reaches the step log and its error.
    pub job_logs: JobLogs,
    /// The cluster's filesystem.
    pub blob: AzureBlobConfig,
    /// With it, launch creates the run's clusters through Azure Resource
    /// Manager and deletes them at the end; without it `gateway` names a
    /// cluster managed outside the flow.
    pub arm: Option<ArmConfig>,
}

impl Default for AzureConfig {
    fn default() -> Self {
        AzureConfig {
            gateway: None,
            livy_url: None,
            webhcat_url: None,
            username: "admin".into(),
            password: None,
            webhcat_user: None,
            statusdir: "flow/webhcat".into(),
            jobs_per_cluster: std::num::NonZeroUsize::MIN,
            poll: PollConfig {
                cap: Duration::from_secs(3),
                ..PollConfig::default()
            },
            retry: RetryConfig::default(),
            cancel_timeout: Duration::from_secs(5 * 60),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            job_logs: JobLogs {
                wait: Duration::from_secs(30),
                interval: Duration::from_secs(5),
                ..JobLogs::default()
            },
            blob: AzureBlobConfig::default(),
            arm: None,
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> Result<(), AzureError> {
    Err(AzureError::Invalid {
        field,
        message: message.into(),
    })
}

fn is_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

impl AzureConfig {
    /// A builder starting from these settings.
    pub fn builder(self) -> AzureClusterFactoryBuilder {
        AzureClusterFactoryBuilder {
            config: self,
            clock: None,
            watch: None,
        }
    }

    /// Livy's URL: the setting, else `GATEWAY/livy`.
    pub fn livy(&self) -> Option<String> {
        self.livy_url
            .clone()
            .or_else(|| {
                self.gateway
                    .as_ref()
                    .map(|g| format!("{}/livy", g.trim_end_matches('/')))
            })
            .map(|u| u.trim_end_matches('/').to_string())
    }

    /// WebHCat's URL: the setting, else `GATEWAY/templeton/v1`.
    pub fn webhcat(&self) -> Option<String> {
        self.webhcat_url
            .clone()
            .or_else(|| {
                self.gateway
                    .as_ref()
                    .map(|g| format!("{}/templeton/v1", g.trim_end_matches('/')))
            })
            .map(|u| u.trim_end_matches('/').to_string())
    }

    /// WebHCat's `user.name`.
    pub fn webhcat_user(&self) -> &str {
        self.webhcat_user.as_deref().unwrap_or(&self.username)
    }

    /// Checks the values; called when the settings are read and by
    /// [`AzureClusterFactoryBuilder::build`].
    pub fn validate(&self) -> Result<(), AzureError> {
        if let Some(arm) = &self.arm {
            arm.validate()
                .map_err(|(field, message)| AzureError::InvalidArm { field, message })?;
            if self.gateway.is_some() {
                return invalid(
                    "gateway",
                    "with [cluster.azure.arm] each created cluster's gateway is derived from its name: set [cluster.azure.arm] gateway to change how",
                );
            }
            if self.password.is_none() {
                return invalid(
                    "password",
                    "required with [cluster.azure.arm]: the gateway login of the clusters flow creates",
                );
            }
        } else if self.gateway.is_none() && self.livy_url.is_none() && self.webhcat_url.is_none() {
            return invalid(
                "gateway",
                "required: the cluster's gateway (https://CLUSTER.azurehdinsight.net), or livy_url / webhcat_url",
            );
        }
        for (field, value) in [
            ("gateway", &self.gateway),
            ("livy_url", &self.livy_url),
            ("webhcat_url", &self.webhcat_url),
        ] {
            if let Some(url) = value {
                if !is_url(url) {
                    return invalid(field, format!("{url:?} is not an http:// or https:// URL"));
                }
            }
        }
        if let Some(password) = &self.password {
            // Never echo the value: it may be the password itself.
            if password.variable().is_none() {
                return invalid("password", flow_fs_azure::PLAIN_TEXT_SECRET);
            }
        }
        if self.username.trim().is_empty() {
            return invalid("username", "must not be empty");
        }
        if self.statusdir.trim().is_empty() {
            return invalid("statusdir", "must not be empty");
        }
        for (field, value) in [
            ("cancel_timeout", self.cancel_timeout),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return invalid(field, "must not be zero");
            }
        }
        self.blob.validate().map_err(|e| match e {
            flow_fs_azure::AzureBlobError::Invalid { field, message } => {
                AzureError::InvalidBlob { field, message }
            }
            other => AzureError::Blob(other),
        })
    }
}

/// `deserialize_with` for `[cluster.azure]`: the settings, validated, so a
/// bad value is reported at its place in the file.
pub fn deserialize_validated<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<AzureConfig>, D::Error> {
    let config = AzureConfig::deserialize(deserializer)?;
    config.validate().map_err(serde::de::Error::custom)?;
    Ok(Some(config))
}

/// Builds an [`AzureClusterFactory`].
#[derive(Clone, Default)]
pub struct AzureClusterFactoryBuilder {
    config: AzureConfig,
    clock: Option<Arc<dyn Clock>>,
    watch: Option<Arc<dyn ClusterWatch>>,
}

impl std::fmt::Debug for AzureClusterFactoryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureClusterFactoryBuilder")
            .field("config", &self.config)
            .field("cluster_watch", &self.watch.is_some())
            .finish_non_exhaustive()
    }
}

impl AzureClusterFactoryBuilder {
    /// A builder for the cluster behind `gateway`, with the default settings.
    pub fn new(gateway: impl Into<String>) -> Self {
        AzureConfig {
            gateway: Some(gateway.into()),
            ..AzureConfig::default()
        }
        .builder()
    }

    /// The settings so far.
    pub fn config(&self) -> &AzureConfig {
        &self.config
    }

    /// Changes the settings.
    pub fn with(mut self, change: impl FnOnce(&mut AzureConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// The clock of polls, retries and waits (a manual one in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How the poller asks whether a gateway's cluster has ended: a job
    /// whose cluster ended fails at once with the cluster's reason (see
    /// [`ClusterWatch`]).
    pub fn with_cluster_watch(mut self, watch: Arc<dyn ClusterWatch>) -> Self {
        self.watch = Some(watch);
        self
    }

    /// Reads the password and the storage credential and makes the
    /// clients. Sends no request.
    pub fn build(self) -> Result<AzureClusterFactory, AzureError> {
        self.config.validate()?;
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(TokioClock::new()) as Arc<dyn Clock>);
        AzureClusterFactory::new(self.config, clock, self.watch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_default_to_the_gateways_paths() {
        let c = AzureConfig {
            gateway: Some("https://etl.azurehdinsight.net/".into()),
            ..AzureConfig::default()
        };
        assert_eq!(c.livy().unwrap(), "https://etl.azurehdinsight.net/livy");
        assert_eq!(
            c.webhcat().unwrap(),
            "https://etl.azurehdinsight.net/templeton/v1"
        );
        let own = AzureConfig {
            livy_url: Some("http://emr-master:8998".into()),
            ..AzureConfig::default()
        };
        assert_eq!(own.livy().unwrap(), "http://emr-master:8998");
        assert!(own.webhcat().is_none());
        assert!(own.validate().is_ok());
        assert!(AzureConfig::default().validate().is_err());
    }

    #[test]
    fn a_plain_text_secret_is_refused_naming_its_key_never_its_value() {
        #[derive(Debug, Deserialize)]
        struct Wrapper {
            #[serde(default, deserialize_with = "deserialize_validated")]
            #[allow(dead_code)]
            azure: Option<AzureConfig>,
        }
        for (text, key) in [
            (
                "[azure]\ngateway = \"https://x.azurehdinsight.net\"\npassword = \"hunter2-hunter2\"\n",
                "[cluster.azure] setting `password`",
            ),
            (
                "[azure]\ngateway = \"https://x.azurehdinsight.net\"\npassword = \"env:P\"\n[azure.blob]\naccount = \"a\"\nkey = \"hunter2-hunter2\"\n",
                "[cluster.azure.blob] setting `key`",
            ),
            (
                "[azure]\ngateway = \"https://x.azurehdinsight.net\"\n[azure.blob]\nconnection_string = \"hunter2-hunter2\"\n",
                "[cluster.azure.blob] setting `connection_string`",
            ),
        ] {
            let e = toml::from_str::<Wrapper>(text).unwrap_err();
            let shown = e.to_string();
            assert!(shown.contains(key) && shown.contains("env:VAR"), "{shown}");
            assert!(!shown.contains("hunter2"), "the secret is echoed: {shown}");
            assert!(shown.contains("line 1, column 1"), "{shown}");
        }
        let ok: Wrapper = toml::from_str(
            "[azure]\ngateway = \"https://x.azurehdinsight.net\"\npassword = \"env:P\"\n",
        )
        .unwrap();
        assert_eq!(ok.azure.unwrap().password.unwrap().variable(), Some("P"));
    }

    #[test]
    fn jobs_per_cluster_is_one_by_default_and_zero_is_refused_at_its_place() {
        #[derive(Debug, Deserialize)]
        struct Wrapper {
            #[serde(default, deserialize_with = "deserialize_validated")]
            azure: Option<AzureConfig>,
        }
        let gateway = "[azure]\ngateway = \"https://x.azurehdinsight.net\"\n";
        let default: Wrapper = toml::from_str(gateway).unwrap();
        assert_eq!(default.azure.unwrap().jobs_per_cluster.get(), 1);
        let four: Wrapper = toml::from_str(&format!("{gateway}jobs_per_cluster = 4\n")).unwrap();
        assert_eq!(four.azure.unwrap().jobs_per_cluster.get(), 4);
        let shown = toml::from_str::<Wrapper>(&format!("{gateway}jobs_per_cluster = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(shown.contains("nonzero"), "{shown}");
        assert!(shown.contains("line 3, column 20"), "{shown}");
    }
}
