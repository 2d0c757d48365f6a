//! [`S3Config`]: the `[filesystem]`-style settings of the S3 filesystem, and
//! the builder that turns them into an [`S3Filesystem`].

use crate::aws::{self, AwsSettings};
use crate::backend::S3Backend;
use crate::S3Filesystem;
use flow_cloud::RetryConfig;
use flow_fs_object::config::{check_bucket, check_concurrency, check_range};
use flow_fs_object::{Invalid, ObjectFilesystem, ObjectSettings};
use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// S3's smallest part (except the last) and largest part.
pub(crate) const MIN_PART: u64 = 5 * MIB;
pub(crate) const MAX_PART: u64 = 5 * GIB;

/// Settings of the S3 filesystem. Every field is optional in a settings
/// file; sizes are in bytes. Holds no credential (they come from the AWS
/// chain), so it is safe to log and to `Debug`.
///
/// ```toml
/// bucket = "my-data"
/// prefix = "flows"                 # keys resolve under s3://my-data/flows/
/// region = "eu-west-1"
/// profile = "etl"                  # a profile of ~/.aws/config
/// endpoint = "http://127.0.0.1:5000"       # an S3-compatible store or an emulator
/// force_path_style = true          # needed by most emulators
/// multipart_threshold = 67108864   # upload files above 64 MiB in parts
/// part_size = 67108864
/// [retry]                          # flow_cloud::RetryConfig, followed by the SDK
/// max_retries = 4
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The bucket of keys without `s3://`. Without it, every key must name
    /// its bucket.
    pub bucket: Option<String>,
    /// A prefix inside the default bucket that keys resolve under and may
    /// not leave.
    pub prefix: Option<String>,
    /// Default: the AWS chain (`AWS_REGION`, the profile's region, ...).
    pub region: Option<String>,
    /// A named profile of the shared AWS config files.
    pub profile: Option<String>,
    /// Default: the AWS chain (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`,
    /// then the region's endpoint).
    pub endpoint: Option<String>,
    /// Address buckets as `ENDPOINT/bucket/key` (emulators, most
    /// S3-compatible stores) instead of `bucket.ENDPOINT/key`.
    pub force_path_style: bool,
    /// Files larger than this are uploaded in parts. Default 64 MiB.
    pub multipart_threshold: u64,
    /// The size of an upload part, 5 MiB to 5 GiB. Default 64 MiB. Raised
    /// automatically when a file would need more than 10,000 parts.
    pub part_size: u64,
    /// Objects larger than this are copied with multipart `UploadPartCopy`
    /// instead of one `CopyObject`. Default 5 GiB, S3's limit.
    pub copy_threshold: u64,
    /// The size of a copied part, 5 MiB to 5 GiB. Default 1 GiB.
    pub copy_part_size: u64,
    /// Keys per listing page, 1 to 1,000. Default 1,000.
    pub list_page_size: u32,
    /// Keys per `DeleteObjects` request, 1 to 1,000. Default 1,000.
    pub delete_batch: usize,
    /// Objects copied or parts uploaded at the same time. Default 8.
    pub concurrency: usize,
    /// Retries of throttled and transient failures, by the SDK's standard
    /// retry mode: `max_retries` after the first attempt, from
    /// `initial_delay` doubling with jitter up to `max_delay`
    /// ([`aws::sdk_retry`]).
    pub retry: RetryConfig,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: None,
            prefix: None,
            region: None,
            profile: None,
            endpoint: None,
            force_path_style: false,
            multipart_threshold: 64 * MIB,
            part_size: 64 * MIB,
            copy_threshold: 5 * GIB,
            copy_part_size: GIB,
            list_page_size: 1000,
            delete_batch: 1000,
            concurrency: 8,
            retry: RetryConfig::default(),
        }
    }
}

/// Why an [`S3Filesystem`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3Error {
    /// A setting is out of range or malformed.
    #[error("S3 filesystem setting `{field}`: {message}")]
    Invalid {
        /// The setting's name.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    #[error(
        "S3 filesystem: no AWS region; set `region` in the settings, AWS_REGION, or a profile's region"
    )]
    /// No region in the settings, the environment or the profile.
    NoRegion,
}

impl From<Invalid> for S3Error {
    fn from(Invalid { field, message }: Invalid) -> Self {
        S3Error::Invalid { field, message }
    }
}

impl S3Config {
    /// A builder starting from these settings.
    pub fn builder(self) -> S3FilesystemBuilder {
        S3FilesystemBuilder { config: self }
    }

    /// Checks the values; called by [`S3FilesystemBuilder::build`].
    pub fn validate(&self) -> Result<(), S3Error> {
        let invalid = |field, message: String| Err(S3Error::Invalid { field, message });
        check_bucket("bucket", self.bucket.as_deref(), None, "a bucket name")?;
        for (field, size) in [
            ("part_size", self.part_size),
            ("copy_part_size", self.copy_part_size),
        ] {
            if !(MIN_PART..=MAX_PART).contains(&size) {
                return invalid(
                    field,
                    format!("{size} bytes: must be between 5 MiB and 5 GiB"),
                );
            }
        }
        if self.copy_threshold > MAX_PART {
            return invalid(
                "copy_threshold",
                format!(
                    "{} bytes: one CopyObject copies at most 5 GiB",
                    self.copy_threshold
                ),
            );
        }
        check_range("list_page_size", self.list_page_size, 1..=1000)?;
        check_range("delete_batch", self.delete_batch, 1..=1000)?;
        check_concurrency("concurrency", self.concurrency)?;
        Ok(())
    }
}

/// Builds an [`S3Filesystem`] (object_store's habit: settings in, a client
/// out). Every `with_*` sets one [`S3Config`] field.
#[derive(Debug, Clone, Default)]
pub struct S3FilesystemBuilder {
    config: S3Config,
}

impl S3FilesystemBuilder {
    crate::aws_builder_setters!(S3Config);

    /// A builder with the default settings.
    pub fn new() -> Self {
        S3FilesystemBuilder::default()
    }
    /// Sets [`S3Config::bucket`].
    pub fn with_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.config.bucket = Some(bucket.into());
        self
    }
    /// Sets [`S3Config::prefix`].
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = Some(prefix.into());
        self
    }
    /// Sets [`S3Config::force_path_style`].
    pub fn with_force_path_style(mut self, on: bool) -> Self {
        self.config.force_path_style = on;
        self
    }
    /// Sets [`S3Config::multipart_threshold`].
    pub fn with_multipart_threshold(mut self, bytes: u64) -> Self {
        self.config.multipart_threshold = bytes;
        self
    }
    /// Sets [`S3Config::part_size`].
    pub fn with_part_size(mut self, bytes: u64) -> Self {
        self.config.part_size = bytes;
        self
    }
    /// Sets [`S3Config::copy_threshold`].
    pub fn with_copy_threshold(mut self, bytes: u64) -> Self {
        self.config.copy_threshold = bytes;
        self
    }
    /// Sets [`S3Config::copy_part_size`].
    pub fn with_copy_part_size(mut self, bytes: u64) -> Self {
        self.config.copy_part_size = bytes;
        self
    }
    /// Sets [`S3Config::list_page_size`].
    pub fn with_list_page_size(mut self, keys: u32) -> Self {
        self.config.list_page_size = keys;
        self
    }
    /// Sets [`S3Config::delete_batch`].
    pub fn with_delete_batch(mut self, keys: usize) -> Self {
        self.config.delete_batch = keys;
        self
    }
    /// Sets [`S3Config::concurrency`].
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }
    /// Sets [`S3Config::retry`].
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.config.retry = retry;
        self
    }

    /// The settings so far.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// Resolves credentials and region through the AWS chain and makes the
    /// client. Makes no request.
    pub async fn build(self) -> Result<S3Filesystem, S3Error> {
        let config = self.config;
        config.validate()?;
        let settings = ObjectSettings::from_config(
            config.bucket.clone(),
            config.prefix.as_deref(),
            config.list_page_size,
            config.concurrency,
        )?;
        let shared = aws::load(&AwsSettings {
            region: config.region.as_deref(),
            profile: config.profile.as_deref(),
            endpoint: config.endpoint.as_deref(),
            retry: config.retry,
        })
        .await
        .map_err(|aws::NoRegion| S3Error::NoRegion)?;
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .interceptor(aws::MeteredCalls("s3"))
            .build();
        let backend = S3Backend::new(aws_sdk_s3::Client::from_conf(s3), config);
        Ok(ObjectFilesystem::new(backend, settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_with_defaults_and_refuse_unknown_fields() {
        let c: S3Config = toml::from_str(
            "bucket = \"data\"\nendpoint = \"http://127.0.0.1:5000\"\nforce_path_style = true\npart_size = 8388608\n",
        )
        .unwrap();
        assert_eq!(c.bucket.as_deref(), Some("data"));
        assert_eq!(c.part_size, 8 * MIB);
        assert_eq!(c.copy_threshold, 5 * GIB);
        assert!(c.validate().is_ok());
        let e = toml::from_str::<S3Config>("bukket = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `bukket`"), "{e}");
    }

    #[test]
    fn bad_sizes_are_refused_with_the_field_named() {
        for (config, field) in [
            (
                S3Config {
                    part_size: MIB,
                    ..S3Config::default()
                },
                "part_size",
            ),
            (
                S3Config {
                    copy_part_size: 6 * GIB,
                    ..S3Config::default()
                },
                "copy_part_size",
            ),
            (
                S3Config {
                    copy_threshold: 6 * GIB,
                    ..S3Config::default()
                },
                "copy_threshold",
            ),
            (
                S3Config {
                    list_page_size: 1001,
                    ..S3Config::default()
                },
                "list_page_size",
            ),
            (
                S3Config {
                    delete_batch: 0,
                    ..S3Config::default()
                },
                "delete_batch",
            ),
            (
                S3Config {
                    bucket: Some("a/b".into()),
                    ..S3Config::default()
                },
                "bucket",
            ),
        ] {
            match config.validate() {
                Err(S3Error::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
