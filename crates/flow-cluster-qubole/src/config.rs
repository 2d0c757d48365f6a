//! [`QuboleConfig`] (the `[cluster.qubole]` section of `flow.toml`) and its
//! builder.

use crate::cluster::QuboleClusterFactory;
use crate::error::QuboleError;
use flow_cloud::{Clock, JobLogs, PollConfig, RetryConfig, TokioClock};
use flow_core::Secret;
use flow_fs_s3::S3Config;
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// QDS's default endpoint (`api.qubole.com`, AWS US); other regions and
/// clouds have their own (`us.qubole.com`, `eu-central-1.qubole.com`, ...).
pub const DEFAULT_ENDPOINT: &str = "https://api.qubole.com";

/// Settings of the Qubole cluster. Holds where the API token is read from
/// (`env:VAR`), never the token, so it is safe to `Debug` and to log.
///
/// ```toml
/// [cluster.qubole]
/// cluster_label = "spark-etl"          # the QDS cluster that runs the commands
/// token = "env:QDS_API_TOKEN"          # sent as X-AUTH-TOKEN; never written here
/// endpoint = "https://us.qubole.com"   # default https://api.qubole.com
/// code_bucket = "my-code"              # application = "jobs/x.py" → s3://my-code/jobs/x.py
/// start_cluster = true                 # start it if it is not UP ...
/// terminate = true                     # ... and terminate it at the end if this run started it
/// jobs_per_cluster = 4                 # commands the label runs at once
/// [cluster.qubole.s3]
/// bucket = "my-data"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuboleConfig {
    /// The label of the QDS cluster every command runs on (required). All
    /// the clusters of a run (`number_of_clusters`) send to this one.
    pub cluster_label: String,
    /// Where the API token comes from: `"env:VAR"` (required). A token
    /// written in the file itself is refused.
    pub token: String,
    /// The QDS API's base URL, or a fake's (`http://127.0.0.1:PORT`).
    /// Default [`DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
    /// Job files (applications, scripts, jars) written without a scheme
    /// are `s3://CODE_BUCKET/PATH`.
    pub code_bucket: Option<String>,
    /// Start the labelled cluster (Cluster API) when it is not `UP`, and
    /// wait for it before the first command. Default: commands are sent
    /// as they are (QDS starts a cluster that is down when a command
    /// arrives).
    pub start_cluster: bool,
    /// Terminate the cluster at the end when this run started it (needs
    /// `start_cluster`). A cluster found `UP` is left up.
    pub terminate: bool,
    /// Terminate a cluster found `UP` at the end too (needs `terminate`).
    pub terminate_reused: bool,
    /// Commands a cluster runs at once: the engine gives each cluster this
    /// many steps at a time, all watched by one history listing per tick.
    /// Default 1.
    pub jobs_per_cluster: std::num::NonZeroUsize,
    /// How often a starting or terminating cluster is asked about.
    #[serde(with = "humantime_serde")]
    pub launch_poll: Duration,
    /// The longest wait for a started cluster to be `UP`.
    #[serde(with = "humantime_serde")]
    pub launch_timeout: Duration,
    /// The longest wait for a terminated cluster to be `DOWN`.
    #[serde(with = "humantime_serde")]
    pub terminate_timeout: Duration,
    /// The longest wait for a killed command to be `cancelled`.
    #[serde(with = "humantime_serde")]
    pub cancel_timeout: Duration,
    /// How commands are polled: floor, backoff, cap, timeout of one wait.
    pub poll: PollConfig,
    /// Retries of 429, 503 (any 5xx for reads) and connection failures,
    /// `Retry-After` honoured. Default: QDS's HTTP retry policy (7 retries
    /// from 10 s, doubling).
    pub retry: RetryConfig,
    /// The longest wait for a TCP (and TLS) connection to the API.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The longest whole API request but a log's (QDS answers are small).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How much of a command's log goes to the step log and into a failed
    /// command's error.
    pub job_logs: JobLogs,
    /// The cluster's filesystem (`mkdir`, `cp`, ... actions).
    pub s3: S3Config,
}

fn default_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 7,
        initial_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(120),
        factor: 2.0,
        jitter: true,
        max_retry_after: Duration::from_secs(300),
    }
}

impl Default for QuboleConfig {
    fn default() -> Self {
        QuboleConfig {
            cluster_label: String::new(),
            token: String::new(),
            endpoint: None,
            code_bucket: None,
            start_cluster: false,
            terminate: false,
            terminate_reused: false,
            jobs_per_cluster: std::num::NonZeroUsize::MIN,
            launch_poll: Duration::from_secs(10),
            launch_timeout: Duration::from_secs(30 * 60),
            terminate_timeout: Duration::from_secs(30 * 60),
            cancel_timeout: Duration::from_secs(5 * 60),
            poll: PollConfig::default(),
            retry: default_retry(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            job_logs: JobLogs {
                // QDS serves a command's log as soon as it ends.
                wait: Duration::from_secs(30),
                interval: Duration::from_secs(5),
                ..JobLogs::default()
            },
            s3: S3Config::default(),
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> Result<(), QuboleError> {
    Err(QuboleError::Invalid {
        field,
        message: message.into(),
    })
}

/// The environment variable of an `env:VAR` token setting.
pub(crate) fn token_variable(written: &str) -> Option<&str> {
    written
        .strip_prefix("env:")
        .filter(|var| !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

impl QuboleConfig {
    /// A builder starting from these settings.
    pub fn builder(self) -> QuboleClusterFactoryBuilder {
        QuboleClusterFactoryBuilder {
            config: self,
            clock: None,
        }
    }

    /// Checks what types alone cannot; called when the settings are loaded
    /// ([`deserialize_validated`]) and by the builder.
    pub fn validate(&self) -> Result<(), QuboleError> {
        let label = self.cluster_label.trim();
        if label.is_empty() {
            return invalid(
                "cluster_label",
                "required: the label of the QDS cluster that runs the commands",
            );
        }
        if label != self.cluster_label
            || !self
                .cluster_label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return invalid(
                "cluster_label",
                format!(
                    "{:?}: a label is letters, digits, '-', '_' and '.'",
                    self.cluster_label
                ),
            );
        }
        if self.token.trim().is_empty() {
            return invalid(
                "token",
                "required: where the QDS API token is read from, e.g. \"env:QDS_API_TOKEN\"",
            );
        }
        if token_variable(&self.token).is_none() {
            // Never echo the value: it may be the token itself.
            return invalid(
                "token",
                "write \"env:VAR\" (the token is read from that environment variable); a token written in the settings file is refused",
            );
        }
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return invalid(
                    "endpoint",
                    format!("{endpoint:?} is not an http:// or https:// URL"),
                );
            }
        }
        if let Some(bucket) = &self.code_bucket {
            if bucket.len() < 3 || bucket.contains('/') || bucket.contains(':') {
                return invalid(
                    "code_bucket",
                    format!("{bucket:?} is a bucket name (without s3://)"),
                );
            }
        }
        if self.terminate && !self.start_cluster {
            return invalid(
                "terminate",
                "needs start_cluster = true: only a cluster this run started is terminated",
            );
        }
        if self.terminate_reused && !self.terminate {
            return invalid("terminate_reused", "needs terminate = true");
        }
        if self.poll.floor.is_zero() {
            return invalid("poll.floor", "must not be zero");
        }
        if self.poll.cap < self.poll.floor {
            return invalid("poll.cap", "must not be shorter than poll.floor");
        }
        for (field, value) in [
            ("launch_poll", self.launch_poll),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return invalid(field, "must not be zero");
            }
        }
        self.s3.validate().map_err(|e| QuboleError::Invalid {
            field: "s3",
            message: e.to_string(),
        })?;
        Ok(())
    }

    /// The API's base URL, without a trailing `/`.
    pub(crate) fn api_endpoint(&self) -> String {
        self.endpoint
            .as_deref()
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/')
            .to_string()
    }

    /// The environment variable the token is read from.
    pub fn token_variable(&self) -> Option<&str> {
        token_variable(&self.token)
    }

    /// Reads the token from its environment variable now.
    pub(crate) fn read_token(&self) -> Result<Secret, QuboleError> {
        let var = self.token_variable().ok_or_else(|| QuboleError::Invalid {
            field: "token",
            message: "write \"env:VAR\"".into(),
        })?;
        let value = std::env::var(var).map_err(|_| QuboleError::Token {
            message: format!("the environment variable {var} is not set (or not UTF-8)"),
        })?;
        if value.trim().is_empty() {
            return Err(QuboleError::Token {
                message: format!("the environment variable {var} is empty"),
            });
        }
        if value.chars().count() < flow_core::context::MIN_SECRET_LEN {
            return Err(QuboleError::Token {
                message: format!(
                    "the token in {var} is shorter than {} characters: masking it as *** would reveal it",
                    flow_core::context::MIN_SECRET_LEN
                ),
            });
        }
        if value
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || !c.is_ascii())
        {
            return Err(QuboleError::Token {
                message: format!(
                    "the token in {var} has a character no HTTP header carries (whitespace, a control or non-ASCII character)"
                ),
            });
        }
        Ok(Secret::new(value))
    }
}

/// For a settings file: deserializes a [`QuboleConfig`] and validates it,
/// so a bad value is reported where the section is (the TOML parser adds
/// the line and column).
///
/// ```text
/// #[serde(default, deserialize_with = "flow_cluster_qubole::deserialize_validated")]
/// qubole: Option<QuboleConfig>,
/// ```
pub fn deserialize_validated<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<QuboleConfig>, D::Error> {
    let config = QuboleConfig::deserialize(deserializer)?;
    config.validate().map_err(serde::de::Error::custom)?;
    Ok(Some(config))
}

/// Builds a [`QuboleClusterFactory`]; every `with_*` sets one
/// [`QuboleConfig`] field.
#[derive(Debug, Clone, Default)]
pub struct QuboleClusterFactoryBuilder {
    config: QuboleConfig,
    clock: Option<Arc<dyn Clock>>,
}

impl QuboleClusterFactoryBuilder {
    flow_cloud::cluster_builder_setters!(QuboleConfig);

    /// A builder for the QDS cluster `label`, with the token read from
    /// `token` (`"env:VAR"`), and the default settings.
    pub fn new(label: impl Into<String>, token: impl Into<String>) -> Self {
        QuboleConfig {
            cluster_label: label.into(),
            token: token.into(),
            ..QuboleConfig::default()
        }
        .builder()
    }
    /// Sets [`QuboleConfig::endpoint`].
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.config.endpoint = Some(url.into());
        self
    }
    /// Sets [`QuboleConfig::code_bucket`].
    pub fn with_code_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.config.code_bucket = Some(bucket.into());
        self
    }
    /// Sets [`QuboleConfig::start_cluster`] and [`QuboleConfig::terminate`].
    pub fn with_start_and_terminate(mut self, start: bool, terminate: bool) -> Self {
        self.config.start_cluster = start;
        self.config.terminate = terminate;
        self
    }
    /// Sets [`QuboleConfig::jobs_per_cluster`].
    pub fn with_jobs_per_cluster(mut self, jobs: std::num::NonZeroUsize) -> Self {
        self.config.jobs_per_cluster = jobs;
        self
    }
    /// Sets [`QuboleConfig::s3`].
    pub fn with_s3(mut self, s3: S3Config) -> Self {
        self.config.s3 = s3;
        self
    }

    /// Validates the settings, reads the token from its environment
    /// variable and makes the HTTP client. Needs no runtime and sends no
    /// request (the S3 filesystem is made on first use).
    pub fn build(self) -> Result<QuboleClusterFactory, QuboleError> {
        self.config.validate()?;
        let token = self.config.read_token()?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(TokioClock::new()));
        QuboleClusterFactory::new(self.config, token, clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<QuboleConfig, String> {
        #[derive(Deserialize)]
        struct Wrapper {
            #[serde(default, deserialize_with = "deserialize_validated")]
            qubole: Option<QuboleConfig>,
        }
        toml::from_str::<Wrapper>(text)
            .map(|w| w.qubole.unwrap())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn settings_parse_with_defaults() {
        let c = parse(
            "[qubole]\ncluster_label = \"etl\"\ntoken = \"env:QDS_API_TOKEN\"\nstart_cluster = true\nterminate = true\n[qubole.poll]\nfloor = \"2s\"\ncap = \"10s\"\n[qubole.job_logs]\nerror_bytes = 100\n[qubole.s3]\nbucket = \"data\"\n",
        )
        .unwrap();
        assert_eq!(c.cluster_label, "etl");
        assert_eq!(c.token_variable(), Some("QDS_API_TOKEN"));
        assert_eq!(c.poll.floor, Duration::from_secs(2));
        assert_eq!(c.job_logs.error_bytes, 100);
        assert!(c.job_logs.enabled);
        assert_eq!(c.s3.bucket.as_deref(), Some("data"));
        assert_eq!(c.api_endpoint(), "https://api.qubole.com");
        assert_eq!(c.retry.max_retries, 7);
        assert_eq!(c.jobs_per_cluster.get(), 1);
    }

    #[test]
    fn bad_values_are_named_with_their_place() {
        let e = parse("[qubole]\ntoken = \"env:T\"\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("cluster_label"), "{e}");
        let e = parse("[qubole]\ncluster_label = \"etl\"\ntoken = \"abcd-secret-token\"\n")
            .unwrap_err();
        assert!(e.contains("token") && e.contains("env:VAR"), "{e}");
        assert!(!e.contains("abcd-secret-token"), "{e}");
        let e = parse("[qubole]\ncluster_label = \"etl\"\ntoken = \"env:T\"\nterminate = true\n")
            .unwrap_err();
        assert!(e.contains("start_cluster"), "{e}");
        let e = parse("[qubole]\ncluster_label = \"etl\"\ntoken = \"env:T\"\napi_url = \"x\"\n")
            .unwrap_err();
        assert!(e.contains("line 4") && e.contains("api_url"), "{e}");
        let e = parse(
            "[qubole]\ncluster_label = \"etl\"\ntoken = \"env:T\"\nendpoint = \"127.0.0.1:1\"\n",
        )
        .unwrap_err();
        assert!(e.contains("endpoint"), "{e}");
        let e = parse("[qubole]\ncluster_label = \"etl\"\ntoken = \"env:T\"\n[qubole.s3]\nlist_page_size = 0\n")
            .unwrap_err();
        assert!(e.contains("list_page_size"), "{e}");
        let e =
            parse("[qubole]\ncluster_label = \"etl\"\ntoken = \"env:T\"\njobs_per_cluster = 0\n")
                .unwrap_err();
        assert!(e.contains("line 4") && e.contains("nonzero"), "{e}");
    }

    #[test]
    fn the_token_is_read_from_the_environment_and_checked() {
        let mut c = QuboleConfig {
            cluster_label: "etl".into(),
            token: "env:FLOW_QUBOLE_TEST_UNSET".into(),
            ..QuboleConfig::default()
        };
        let e = c.read_token().unwrap_err().to_string();
        assert!(e.contains("FLOW_QUBOLE_TEST_UNSET"), "{e}");
        std::env::set_var("FLOW_QUBOLE_TEST_SHORT", "abc");
        c.token = "env:FLOW_QUBOLE_TEST_SHORT".into();
        let e = c.read_token().unwrap_err().to_string();
        assert!(e.contains("shorter than") && !e.contains("abc\""), "{e}");
        std::env::set_var("FLOW_QUBOLE_TEST_TOKEN", "qds-token-0123456789");
        c.token = "env:FLOW_QUBOLE_TEST_TOKEN".into();
        assert_eq!(c.read_token().unwrap().expose(), "qds-token-0123456789");
        assert!(!format!("{c:?}").contains("qds-token"));
    }
}
