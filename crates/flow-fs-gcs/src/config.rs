//! [`GcsConfig`] and the builder that turns it into a [`GcsFilesystem`].

use crate::google::GoogleClient;
use crate::objects::GcsBackend;
use crate::transport::{Timeouts, Transport, SCOPE};
use crate::GcsFilesystem;
use flow_cloud::{RetryConfig, TokioClock};
use flow_fs_object::config::{check_bucket, check_concurrency, check_not_zero, check_range};
use flow_fs_object::{Invalid, ObjectFilesystem, ObjectSettings};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Resumable upload chunks must be multiples of this (except the last).
const CHUNK_QUANTUM: u64 = 256 * KIB;
const PUBLIC_ENDPOINT: &str = "https://storage.googleapis.com";

/// Settings of the GCS filesystem. Holds a path to a key file, never a key
/// or a token, so it is safe to `Debug`.
///
/// ```toml
/// bucket = "my-data"
/// prefix = "flows"
/// credentials_file = "~/keys/etl.json"    # default: Application Default Credentials
/// endpoint = "http://127.0.0.1:4443"      # an emulator: no auth for it
/// upload_chunk_size = 16777216
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcsConfig {
    /// The bucket of keys without `gs://`.
    pub bucket: Option<String>,
    /// A prefix in the default bucket that keys resolve under and may not
    /// leave.
    pub prefix: Option<String>,
    /// An emulator's base URL (`http://127.0.0.1:4443`); requests to it
    /// carry no credentials. Default: `STORAGE_EMULATOR_HOST`, else the
    /// public endpoint with auth.
    pub endpoint: Option<String>,
    /// A service-account key file. Default: Application Default
    /// Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud, metadata
    /// server).
    pub credentials_file: Option<PathBuf>,
    /// Files larger than this are uploaded with a resumable upload.
    /// Default 8 MiB.
    pub resumable_threshold: u64,
    /// Bytes per resumable-upload request, a multiple of 256 KiB; the
    /// memory an upload holds. Default 16 MiB.
    pub upload_chunk_size: u64,
    /// Objects per listing page, 1 to 1,000. Default 1,000.
    pub list_page_size: u32,
    /// `maxBytesRewrittenPerCall` for copies (a multiple of 1 MiB); default
    /// none: the service decides.
    pub rewrite_max_bytes_per_call: Option<u64>,
    /// Objects copied or deleted at the same time. Default 8.
    pub concurrency: usize,
    /// Retries of transient failures.
    pub retry: RetryConfig,
    /// The longest wait for a TCP (and TLS) connection. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The longest whole request of the API calls (metadata, listing,
    /// delete, rewrite, starting a resumable upload), so a connection that
    /// hangs fails (and is retried) instead of blocking. Not applied to
    /// transfers, whose length depends on their size. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The longest wait for the next bytes of any answer, transfers
    /// included: an idle timeout, reset by every read, so a multi-GB
    /// download is never cut while data flows. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
}

impl Default for GcsConfig {
    fn default() -> Self {
        GcsConfig {
            bucket: None,
            prefix: None,
            endpoint: None,
            credentials_file: None,
            resumable_threshold: 8 * MIB,
            upload_chunk_size: 16 * MIB,
            list_page_size: 1000,
            rewrite_max_bytes_per_call: None,
            concurrency: 8,
            retry: RetryConfig::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a [`GcsFilesystem`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcsError {
    /// A setting is out of range or malformed.
    #[error("GCS filesystem setting `{field}`: {message}")]
    Invalid {
        /// The setting's name.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    #[error("GCS filesystem: no credentials: {message}")]
    /// No credentials could be found or read.
    Auth {
        /// Why.
        message: String,
    },
    #[error("GCS filesystem: cannot make the HTTP client: {message}")]
    /// The HTTP client could not be made.
    Client {
        /// Why.
        message: String,
    },
}

impl From<Invalid> for GcsError {
    fn from(Invalid { field, message }: Invalid) -> Self {
        GcsError::Invalid { field, message }
    }
}

impl GcsConfig {
    /// A builder starting from these settings.
    pub fn builder(self) -> GcsFilesystemBuilder {
        GcsFilesystemBuilder { config: self }
    }

    /// Checks the values; called by [`GcsFilesystemBuilder::build`].
    pub fn validate(&self) -> Result<(), GcsError> {
        let invalid = |field, message: String| Err(GcsError::Invalid { field, message });
        check_bucket("bucket", self.bucket.as_deref(), None, "a bucket name")?;
        if self.upload_chunk_size == 0 || !self.upload_chunk_size.is_multiple_of(CHUNK_QUANTUM) {
            return invalid(
                "upload_chunk_size",
                format!(
                    "{} bytes: must be a positive multiple of 256 KiB",
                    self.upload_chunk_size
                ),
            );
        }
        check_range("list_page_size", self.list_page_size, 1..=1000)?;
        if let Some(n) = self.rewrite_max_bytes_per_call {
            if n == 0 || !n.is_multiple_of(MIB) {
                return invalid(
                    "rewrite_max_bytes_per_call",
                    format!("{n} bytes: must be a positive multiple of 1 MiB"),
                );
            }
        }
        check_concurrency("concurrency", self.concurrency)?;
        check_not_zero([
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("read_timeout", self.read_timeout),
        ])?;
        Ok(())
    }
}

/// The endpoint and whether it is an emulator (no auth): the setting, else
/// `STORAGE_EMULATOR_HOST` (`host:port` or a URL), else the public one.
pub(crate) fn resolve_endpoint(
    setting: Option<&str>,
    emulator_host: Option<&str>,
) -> (String, bool) {
    let emulator = setting
        .or(emulator_host)
        .map(str::trim)
        .filter(|s| !s.is_empty());
    match emulator {
        Some(url) if url.contains("://") => (url.trim_end_matches('/').to_string(), true),
        Some(host) => (format!("http://{}", host.trim_end_matches('/')), true),
        None => (PUBLIC_ENDPOINT.to_string(), false),
    }
}

/// Builds a [`GcsFilesystem`]; every `with_*` sets one [`GcsConfig`] field.
#[derive(Debug, Clone, Default)]
pub struct GcsFilesystemBuilder {
    config: GcsConfig,
}

impl GcsFilesystemBuilder {
    /// A builder with the default settings.
    pub fn new() -> Self {
        GcsFilesystemBuilder::default()
    }
    /// Sets [`GcsConfig::bucket`].
    pub fn with_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.config.bucket = Some(bucket.into());
        self
    }
    /// Sets [`GcsConfig::prefix`].
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = Some(prefix.into());
        self
    }
    /// Sets [`GcsConfig::endpoint`].
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.config.endpoint = Some(url.into());
        self
    }
    /// Sets [`GcsConfig::credentials_file`].
    pub fn with_credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.credentials_file = Some(path.into());
        self
    }
    /// Sets [`GcsConfig::resumable_threshold`].
    pub fn with_resumable_threshold(mut self, bytes: u64) -> Self {
        self.config.resumable_threshold = bytes;
        self
    }
    /// Sets [`GcsConfig::upload_chunk_size`].
    pub fn with_upload_chunk_size(mut self, bytes: u64) -> Self {
        self.config.upload_chunk_size = bytes;
        self
    }
    /// Sets [`GcsConfig::list_page_size`].
    pub fn with_list_page_size(mut self, n: u32) -> Self {
        self.config.list_page_size = n;
        self
    }
    /// Sets [`GcsConfig::rewrite_max_bytes_per_call`].
    pub fn with_rewrite_max_bytes_per_call(mut self, bytes: u64) -> Self {
        self.config.rewrite_max_bytes_per_call = Some(bytes);
        self
    }
    /// Sets [`GcsConfig::concurrency`].
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }
    /// Sets [`GcsConfig::retry`].
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.config.retry = retry;
        self
    }
    /// Sets [`GcsConfig::connect_timeout`], [`GcsConfig::request_timeout`]
    /// and [`GcsConfig::read_timeout`].
    pub fn with_timeouts(mut self, connect: Duration, request: Duration, read: Duration) -> Self {
        self.config.connect_timeout = connect;
        self.config.request_timeout = request;
        self.config.read_timeout = read;
        self
    }

    /// The settings so far.
    pub fn config(&self) -> &GcsConfig {
        &self.config
    }

    /// Makes the client and, unless the endpoint is an emulator, the token
    /// provider (which reads the key file or finds ADC; no token is fetched
    /// until the first request).
    pub async fn build(self) -> Result<GcsFilesystem, GcsError> {
        let provider = match (&self.config.credentials_file, self.emulator().is_some()) {
            (None, false) => Some(gcp_auth::provider().await.map_err(|e| GcsError::Auth {
                message: format!(
                    "{e} (set credentials_file, GOOGLE_APPLICATION_CREDENTIALS, or log in with gcloud)"
                ),
            })?),
            _ => None,
        };
        self.build_with_credentials(provider)
    }

    /// Like [`build`](Self::build), without a runtime: `credentials` (shared
    /// with another Google client, e.g. the Dataproc cluster's) or else
    /// [`auth::token_provider`](crate::auth::token_provider) of the
    /// configured key file, ADC being looked up on the first request. An
    /// emulator endpoint gets no credentials whatever is passed.
    pub fn build_with_credentials(
        self,
        credentials: Option<Arc<dyn gcp_auth::TokenProvider>>,
    ) -> Result<GcsFilesystem, GcsError> {
        let emulator = self.emulator();
        let config = self.config;
        config.validate()?;
        let settings = ObjectSettings::from_config(
            config.bucket.clone(),
            config.prefix.as_deref(),
            config.list_page_size,
            config.concurrency,
        )?;
        let (endpoint, credentials) = match emulator {
            Some(endpoint) => (endpoint, None),
            None => {
                let provider = match credentials {
                    Some(provider) => provider,
                    None => crate::auth::token_provider(config.credentials_file.as_deref())?,
                };
                (PUBLIC_ENDPOINT.to_string(), Some(provider))
            }
        };
        // No total timeout on the client: transfers may take hours. API
        // calls get `request_timeout` per request (`Transport::send`).
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .build()
            .map_err(|e| GcsError::Client {
                message: e.to_string(),
            })?;
        let google = GoogleClient::new(
            http,
            credentials,
            SCOPE,
            config.retry,
            Arc::new(TokioClock::new()),
        );
        let transport = Transport::new(google, endpoint, Timeouts::of(&config));
        Ok(ObjectFilesystem::new(
            GcsBackend::new(transport, config),
            settings,
        ))
    }

    /// The emulator's URL when the settings or `STORAGE_EMULATOR_HOST`
    /// name one.
    fn emulator(&self) -> Option<String> {
        let emulator_host = std::env::var("STORAGE_EMULATOR_HOST").ok();
        match resolve_endpoint(self.config.endpoint.as_deref(), emulator_host.as_deref()) {
            (endpoint, true) => Some(endpoint),
            (_, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emulator_endpoint_comes_from_the_setting_or_the_environment() {
        assert_eq!(
            resolve_endpoint(Some("http://127.0.0.1:4443/"), Some("other:1")),
            ("http://127.0.0.1:4443".to_string(), true)
        );
        assert_eq!(
            resolve_endpoint(None, Some("localhost:9023")),
            ("http://localhost:9023".to_string(), true)
        );
        assert_eq!(
            resolve_endpoint(None, Some("")),
            (PUBLIC_ENDPOINT.to_string(), false)
        );
        assert_eq!(
            resolve_endpoint(None, None),
            (PUBLIC_ENDPOINT.to_string(), false)
        );
    }

    #[test]
    fn settings_parse_and_bad_values_name_their_field() {
        let c: GcsConfig = toml::from_str(
            "bucket = \"data\"\nupload_chunk_size = 524288\n[retry]\nmax_retries = 2\n",
        )
        .unwrap();
        assert_eq!(c.upload_chunk_size, 512 * KIB);
        assert_eq!(c.retry.max_retries, 2);
        assert!(c.validate().is_ok());
        for (config, field) in [
            (
                GcsConfig {
                    upload_chunk_size: 1000,
                    ..GcsConfig::default()
                },
                "upload_chunk_size",
            ),
            (
                GcsConfig {
                    list_page_size: 0,
                    ..GcsConfig::default()
                },
                "list_page_size",
            ),
            (
                GcsConfig {
                    rewrite_max_bytes_per_call: Some(5),
                    ..GcsConfig::default()
                },
                "rewrite_max_bytes_per_call",
            ),
            (
                GcsConfig {
                    bucket: Some("x".into()),
                    ..GcsConfig::default()
                },
                "bucket",
            ),
        ] {
            match config.validate() {
                Err(GcsError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(toml::from_str::<GcsConfig>("token = \"x\"\n").is_err());
    }
}
