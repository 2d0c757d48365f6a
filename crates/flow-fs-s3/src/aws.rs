//! The AWS configuration every AWS client of flow loads (the S3
//! filesystem, the EMR cluster, Qubole's S3 next), written once: the
//! standard chain of `aws-config` (environment, profile, SSO, instance role;
//! `AWS_ENDPOINT_URL*` honoured), the settings' region, profile and
//! endpoint on top, the SDK's standard retry mode (its attempts and delays
//! from the settings' [`flow_cloud::RetryConfig`]), the workspace's one
//! TLS stack (rustls on ring), and a failed call as one readable line
//! ([`sdk_error_text`]). It lives in this crate because every AWS
//! cluster already depends on it, and clusters never depend on each other.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use flow_cloud::RetryConfig;

/// What a flow setting may change in the AWS chain. Holds no credential.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AwsSettings<'a> {
    /// Default: the chain's (`AWS_REGION`, the profile's region, ...).
    pub region: Option<&'a str>,
    /// A named profile of the shared AWS config files.
    pub profile: Option<&'a str>,
    /// An endpoint for every service (an emulator, an S3-compatible store).
    pub endpoint: Option<&'a str>,
    /// The settings' `retry` table, which the SDK's standard retry mode
    /// follows ([`sdk_retry`]).
    pub retry: RetryConfig,
}

/// Writes the setters of the settings [`AwsSettings`] reads (`region`,
/// `profile`, `endpoint`: `Option<String>` fields of `config`) into the
/// `impl` block of a builder with a field `config: $config`: the S3
/// filesystem's and the EMR cluster's builders name them alike. A macro
/// for the reason `flow_cloud::cluster_builder_setters!` is one: inherent
/// methods of another crate's type.
#[macro_export]
macro_rules! aws_builder_setters {
    ($config:ident) => {
        #[doc = concat!("Sets [`", stringify!($config), "::region`].")]
        pub fn with_region(mut self, region: impl Into<String>) -> Self {
            self.config.region = Some(region.into());
            self
        }
        #[doc = concat!("Sets [`", stringify!($config), "::profile`].")]
        pub fn with_profile(mut self, profile: impl Into<String>) -> Self {
            self.config.profile = Some(profile.into());
            self
        }
        #[doc = concat!("Sets [`", stringify!($config), "::endpoint`].")]
        pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
            self.config.endpoint = Some(url.into());
            self
        }
    };
}

/// The SDK's standard retry mode as close to `retry` as it goes: the same
/// number of retries, first delay and longest delay. The SDK always
/// doubles with jitter and keeps its own throttling budget, so `factor`,
/// `jitter` and `max_retry_after` apply to the calls flow retries itself.
pub fn sdk_retry(retry: &RetryConfig) -> aws_config::retry::RetryConfig {
    let attempts = u32::try_from(retry.max_retries.saturating_add(1)).unwrap_or(u32::MAX);
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(retry.initial_delay)
        .with_max_backoff(retry.max_delay)
}

/// Neither the settings, the environment nor the profile name a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no AWS region")]
pub struct NoRegion;

/// The shared SDK configuration for `settings`. Makes no request
/// (credentials are resolved on the first call).
pub async fn load(settings: &AwsSettings<'_>) -> Result<SdkConfig, NoRegion> {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .retry_config(sdk_retry(&settings.retry));
    if let Some(region) = settings.region {
        loader = loader.region(Region::new(region.to_string()));
    }
    if let Some(profile) = settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = settings.endpoint {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    match sdk.region() {
        Some(_) => Ok(sdk),
        None => Err(NoRegion),
    }
}

/// Counts every request attempt of an AWS client (retries included) in
/// [`flow_core::meter`] as backend `.0`'s (`s3`, `emr`) call named by the
/// SDK's operation name (`HeadObject`, `DescribeCluster`): an interceptor
/// sees every call a client makes.
#[derive(Debug, Clone, Copy)]
pub struct MeteredCalls(pub &'static str);

impl Intercept for MeteredCalls {
    fn name(&self) -> &'static str {
        "flow-meter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let call = cfg.load::<Metadata>().map_or("unknown", Metadata::name);
        flow_core::meter::cloud_request(self.0, call);
        Ok(())
    }
}

/// A failed call of any AWS SDK client as one line: the service's error
/// code and message (`ThrottlingException: Rate exceeded`), the HTTP status
/// of an answer that named no code, or for a call that got no answer the
/// error and its causes (`dispatch failure: io error: ... Connection
/// refused`). Never the SDK's `Debug` text of the raw response, which
/// `DisplayErrorContext` appends (headers, `SdkBody`, `Extensions`).
pub fn sdk_error_text<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    match e {
        SdkError::ServiceError(service) => flow_cloud::errors::service_error(e.code(), e.message())
            .unwrap_or_else(|| {
                format!(
                    "HTTP {} without an error code",
                    service.raw().status().as_u16()
                )
            }),
        _ => flow_cloud::errors::error_chain(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::head_object::HeadObjectError;
    use aws_sdk_s3::primitives::SdkBody;

    fn answer(status: u16, body: &'static str) -> HttpResponse {
        HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body))
    }

    #[tokio::test]
    async fn each_attempt_is_counted_by_its_operation_name() {
        let meter = flow_core::testkit::meter::RecordingMeter::installed();
        let before = meter.requests("s3", "HeadBucket");
        // A loopback port nobody listens on: the attempt is made (and
        // counted) and refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::for_tests())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .interceptor(MeteredCalls("s3"))
            .build();
        let s3 = aws_sdk_s3::Client::from_conf(config);
        assert!(s3.head_bucket().bucket("data").send().await.is_err());
        assert_eq!(
            meter.requests("s3", "HeadBucket"),
            before + 1,
            "{:?}",
            meter.calls()
        );
    }

    #[test]
    fn a_refusal_is_its_code_and_message_without_the_raw_answer() {
        let meta = ErrorMetadata::builder()
            .code("ThrottlingException")
            .message("Rate exceeded")
            .build();
        let e = SdkError::service_error(
            HeadObjectError::generic(meta),
            answer(400, "{\"__type\": \"ThrottlingException\"}"),
        );
        assert_eq!(sdk_error_text(&e), "ThrottlingException: Rate exceeded");
        let e = SdkError::service_error(
            HeadObjectError::generic(ErrorMetadata::builder().build()),
            answer(404, ""),
        );
        assert_eq!(sdk_error_text(&e), "HTTP 404 without an error code");
    }

    #[test]
    fn no_answer_is_the_error_and_its_causes() {
        let e: SdkError<HeadObjectError, HttpResponse> = SdkError::timeout_error(
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 5s"),
        );
        let text = sdk_error_text(&e);
        assert!(text.contains("no answer within 5s"), "{text}");
        assert!(!text.contains("Custom"), "no Debug text: {text}");
    }
}
