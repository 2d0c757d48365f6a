//! [`AzureBlobConfig`] (the `[cluster.azure.blob]` settings) and the
//! builder that turns it into an [`AzureBlobFilesystem`].

use crate::backend::AzureBackend;
use crate::blob::{Account, BlobStore, Credential, Timeouts};
use crate::AzureBlobFilesystem;
use flow_cloud::{Clock, RetryConfig, TokioClock};
use flow_core::Secret;
use flow_fs_object::config::{check_bucket, check_concurrency, check_not_zero, check_range};
use flow_fs_object::{Invalid, ObjectFilesystem, ObjectSettings};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;
/// The service's largest block (4,000 MiB).
pub(crate) const MAX_BLOCK: u64 = 4000 * MIB;
/// The service's most blocks per blob.
pub(crate) const MAX_BLOCKS: u64 = 50_000;

/// A secret setting, written `"env:VAR"`: the variable is read when the
/// filesystem is built. A value in plain text is dropped as it is read and
/// refused by `validate` naming only its key: a refusal while parsing
/// would make TOML's error quote the line, and so the secret. Shows as
/// written (the variable's name), never a value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRef(Option<String>);

/// Why a secret written in plain text is refused (the value is not shown).
pub const PLAIN_TEXT_SECRET: &str = "write \"env:VAR\" (the environment variable holding the secret); a secret written in the settings file is refused (its value is not shown)";

impl SecretRef {
    /// `"env:VAR"`, or why not.
    pub fn new(written: &str) -> Result<Self, String> {
        match Self::parse(written) {
            SecretRef(None) => Err(PLAIN_TEXT_SECRET.to_string()),
            ok => Ok(ok),
        }
    }

    /// As written, a plain-text value kept as refused (and dropped).
    fn parse(written: &str) -> Self {
        match written.strip_prefix("env:") {
            Some(var) if !var.is_empty() => SecretRef(Some(written.to_string())),
            _ => SecretRef(None),
        }
    }

    /// Refuses a secret written in plain text, naming `field` only.
    pub fn check(&self, field: &'static str) -> Result<(), AzureBlobError> {
        match self.0 {
            Some(_) => Ok(()),
            None => Err(AzureBlobError::Invalid {
                field,
                message: PLAIN_TEXT_SECRET.into(),
            }),
        }
    }

    /// The variable's value, registered for masking; `field` names the
    /// setting in the error when the variable is not set.
    pub fn read(&self, field: &'static str) -> Result<Secret, AzureBlobError> {
        self.check(field)?;
        let var = self.variable().unwrap_or_default();
        match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
            _ => Err(AzureBlobError::Invalid {
                field,
                message: format!("reads the environment variable {var}, which is not set or empty"),
            }),
        }
    }

    /// The environment variable the secret is read from (none when it was
    /// written in plain text).
    pub fn variable(&self) -> Option<&str> {
        self.0.as_deref().map(|w| &w["env:".len()..])
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(written) => write!(f, "{written:?}"),
            None => f.write_str("<plain text, refused>"),
        }
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(written) => s.serialize_str(written),
            None => Err(serde::ser::Error::custom(PLAIN_TEXT_SECRET)),
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SecretRef::parse(&String::deserialize(d)?))
    }
}

/// Settings of the Blob filesystem. Holds where secrets are read from,
/// never a secret, so it is safe to `Debug`.
///
/// ```toml
/// account = "mydata"
/// key = "env:AZURE_STORAGE_KEY"     # or sas = "env:..." or connection_string = "env:..."
/// container = "flows"
/// prefix = "etl"
/// endpoint = "http://127.0.0.1:10000/devstoreaccount1"   # an emulator (Azurite)
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureBlobConfig {
    /// The storage account (not needed with a connection string).
    pub account: Option<String>,
    /// The account key (a secret, `"env:VAR"`).
    pub key: Option<SecretRef>,
    /// A SAS token (a secret, `"env:VAR"`).
    pub sas: Option<SecretRef>,
    /// A connection string (a secret, `"env:VAR"`): the account, its key
    /// or SAS, and its Blob endpoint.
    pub connection_string: Option<SecretRef>,
    /// The container of keys without an address.
    pub container: Option<String>,
    /// A prefix in the default container that keys resolve under and may
    /// not leave.
    pub prefix: Option<String>,
    /// The Blob endpoint with the account (an emulator's:
    /// `http://127.0.0.1:10000/devstoreaccount1`); default: the public
    /// `https://ACCOUNT.blob.core.windows.net`.
    pub endpoint: Option<String>,
    /// Files larger than this are uploaded in blocks. Default 8 MiB.
    pub single_put_threshold: u64,
    /// Bytes per block of an upload. Default 4 MiB; larger when a file
    /// would need more than 50,000 blocks.
    pub block_size: u64,
    /// Blocks of one upload in flight; times
    /// [`block_size`](Self::block_size), the memory an upload holds.
    /// Default 4.
    pub upload_concurrency: usize,
    /// Blobs per listing page, 1 to 5,000. Default 5,000.
    pub list_page_size: u32,
    /// Blobs copied or deleted at the same time. Default 8.
    pub concurrency: usize,
    /// How often a copy the service runs asynchronously is looked at.
    /// Default 1 s.
    #[serde(with = "humantime_serde")]
    pub copy_poll: Duration,
    /// Retries of transient failures (429, 5xx, connection errors,
    /// timeouts).
    pub retry: RetryConfig,
    /// The longest wait for a TCP (and TLS) connection. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The longest whole request of the API calls (properties, listing,
    /// delete, copy, a block), so a hung connection fails (and is retried).
    /// Not applied to downloads, whose length depends on their size.
    /// Default 60 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The longest wait for the next bytes of any answer: an idle timeout,
    /// so a long download is never cut while data flows. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
}

impl Default for AzureBlobConfig {
    fn default() -> Self {
        AzureBlobConfig {
            account: None,
            key: None,
            sas: None,
            connection_string: None,
            container: None,
            prefix: None,
            endpoint: None,
            single_put_threshold: 8 * MIB,
            block_size: 4 * MIB,
            upload_concurrency: 4,
            list_page_size: 5000,
            concurrency: 8,
            copy_poll: Duration::from_secs(1),
            retry: RetryConfig::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Why an [`AzureBlobFilesystem`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureBlobError {
    /// A setting is missing, out of range or malformed.
    #[error("Azure Blob filesystem setting `{field}`: {message}")]
    Invalid {
        /// The setting's name.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The HTTP client could not be made.
    #[error("Azure Blob filesystem: cannot make the HTTP client: {message}")]
    Client {
        /// Why.
        message: String,
    },
}

impl From<Invalid> for AzureBlobError {
    fn from(Invalid { field, message }: Invalid) -> Self {
        AzureBlobError::Invalid { field, message }
    }
}

impl AzureBlobConfig {
    /// A builder starting from these settings.
    pub fn builder(self) -> AzureBlobFilesystemBuilder {
        AzureBlobFilesystemBuilder {
            config: self,
            credential: None,
            clock: None,
        }
    }

    /// Checks the values (not the credentials' presence: see
    /// [`AzureBlobFilesystemBuilder::build`]).
    pub fn validate(&self) -> Result<(), AzureBlobError> {
        let invalid = |field, message: String| Err(AzureBlobError::Invalid { field, message });
        let secrets = [&self.key, &self.sas, &self.connection_string]
            .iter()
            .filter(|s| s.is_some())
            .count();
        for (field, secret) in [
            ("key", &self.key),
            ("sas", &self.sas),
            ("connection_string", &self.connection_string),
        ] {
            if let Some(secret) = secret {
                secret.check(field)?;
            }
        }
        if secrets > 1 {
            return invalid(
                "key",
                "set one of `key`, `sas` and `connection_string`, not several".into(),
            );
        }
        check_bucket(
            "container",
            self.container.as_deref(),
            Some(63),
            "a container name (3 to 63 characters, no `/`)",
        )?;
        if self.block_size == 0 || self.block_size > MAX_BLOCK {
            return invalid(
                "block_size",
                format!("{} bytes: must be 1 byte to 4000 MiB", self.block_size),
            );
        }
        if self.single_put_threshold > 5000 * MIB {
            return invalid(
                "single_put_threshold",
                format!("{} bytes: at most 5000 MiB", self.single_put_threshold),
            );
        }
        check_range("list_page_size", self.list_page_size, 1..=5000)?;
        check_concurrency("concurrency", self.concurrency)?;
        check_concurrency("upload_concurrency", self.upload_concurrency)?;
        check_not_zero([
            ("copy_poll", self.copy_poll),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("read_timeout", self.read_timeout),
        ])?;
        Ok(())
    }
}

/// A credential given in code rather than through the settings' `"env:VAR"`.
pub enum AzureCredential {
    /// An account key.
    Key(Secret),
    /// A SAS token.
    Sas(Secret),
}

/// Builds an [`AzureBlobFilesystem`]; every `with_*` sets one
/// [`AzureBlobConfig`] field.
pub struct AzureBlobFilesystemBuilder {
    config: AzureBlobConfig,
    credential: Option<AzureCredential>,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for AzureBlobFilesystemBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureBlobFilesystemBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for AzureBlobFilesystemBuilder {
    fn default() -> Self {
        AzureBlobConfig::default().builder()
    }
}

impl AzureBlobFilesystemBuilder {
    /// A builder with the default settings.
    pub fn new() -> Self {
        Self::default()
    }
    /// The clock the retries wait on (a manual one in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
    /// Sets [`AzureBlobConfig::account`].
    pub fn with_account(mut self, account: impl Into<String>) -> Self {
        self.config.account = Some(account.into());
        self
    }
    /// The account key or SAS, given in code (overrides the settings').
    pub fn with_credential(mut self, credential: AzureCredential) -> Self {
        self.credential = Some(credential);
        self
    }
    /// Sets [`AzureBlobConfig::container`].
    pub fn with_container(mut self, container: impl Into<String>) -> Self {
        self.config.container = Some(container.into());
        self
    }
    /// Sets [`AzureBlobConfig::prefix`].
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = Some(prefix.into());
        self
    }
    /// Sets [`AzureBlobConfig::endpoint`].
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.config.endpoint = Some(url.into());
        self
    }
    /// Sets [`AzureBlobConfig::single_put_threshold`].
    pub fn with_single_put_threshold(mut self, bytes: u64) -> Self {
        self.config.single_put_threshold = bytes;
        self
    }
    /// Sets [`AzureBlobConfig::block_size`].
    pub fn with_block_size(mut self, bytes: u64) -> Self {
        self.config.block_size = bytes;
        self
    }
    /// Sets [`AzureBlobConfig::list_page_size`].
    pub fn with_list_page_size(mut self, n: u32) -> Self {
        self.config.list_page_size = n;
        self
    }
    /// Sets [`AzureBlobConfig::concurrency`].
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }
    /// Sets [`AzureBlobConfig::retry`].
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.config.retry = retry;
        self
    }
    /// Sets the three timeouts.
    pub fn with_timeouts(mut self, connect: Duration, request: Duration, read: Duration) -> Self {
        self.config.connect_timeout = connect;
        self.config.request_timeout = request;
        self.config.read_timeout = read;
        self
    }

    /// The settings so far.
    pub fn config(&self) -> &AzureBlobConfig {
        &self.config
    }

    /// Reads the credential (from the code, else the settings' variable)
    /// and makes the client. Sends no request.
    pub fn build(self) -> Result<AzureBlobFilesystem, AzureBlobError> {
        let config = self.config;
        config.validate()?;
        let settings = ObjectSettings::from_config(
            config.container.clone(),
            config.prefix.as_deref(),
            config.list_page_size,
            config.concurrency,
        )?;
        let account = account(&config, self.credential)?;
        // No total timeout on the client: downloads may take hours. API
        // calls get `request_timeout` per attempt (backend.rs).
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .build()
            .map_err(|e| AzureBlobError::Client {
                message: e.to_string(),
            })?;
        let timeouts = Timeouts {
            connect: config.connect_timeout,
            read: config.read_timeout,
        };
        let store =
            BlobStore::new(account, http, timeouts).map_err(|message| AzureBlobError::Invalid {
                field: "sas",
                message,
            })?;
        Ok(ObjectFilesystem::new(
            AzureBackend::new(
                store,
                config,
                self.clock
                    .unwrap_or_else(|| Arc::new(TokioClock::new()) as Arc<dyn Clock>),
            ),
            settings,
        ))
    }
}

/// The account, its endpoint and its credential, from the settings (and a
/// credential given in code).
fn account(
    config: &AzureBlobConfig,
    given: Option<AzureCredential>,
) -> Result<Account, AzureBlobError> {
    let endpoint = config
        .endpoint
        .as_deref()
        .map(|e| e.trim_end_matches('/').to_string());
    if let Some(written) = &config.connection_string {
        let text = written.read("connection_string")?;
        let mut account = Account::from_connection_string(text.expose()).map_err(|message| {
            AzureBlobError::Invalid {
                field: "connection_string",
                message,
            }
        })?;
        if endpoint.is_some() {
            account.endpoint = endpoint;
        }
        if let Some(name) = &config.account {
            account.name = name.clone();
        }
        return Ok(account);
    }
    let Some(name) = config.account.clone() else {
        return Err(AzureBlobError::Invalid {
            field: "account",
            message: "no storage account: set `account` (or `connection_string`)".into(),
        });
    };
    let credential =
        match (given, &config.key, &config.sas) {
            (Some(AzureCredential::Key(key)), _, _) => Credential::Key(key.expose().to_string()),
            (Some(AzureCredential::Sas(sas)), _, _) => Credential::Sas(sas.expose().to_string()),
            (None, Some(key), _) => Credential::Key(key.read("key")?.expose().to_string()),
            (None, None, Some(sas)) => Credential::Sas(sas.read("sas")?.expose().to_string()),
            (None, None, None) => return Err(AzureBlobError::Invalid {
                field: "key",
                message:
                    "no credential: set one of `key`, `sas` or `connection_string` (\"env:VAR\")"
                        .into(),
            }),
        };
    Ok(Account {
        name,
        endpoint,
        credential,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_bad_values_name_their_field() {
        let c: AzureBlobConfig = toml::from_str(
            "account = \"data\"\nkey = \"env:FLOW_TEST_KEY\"\ncontainer = \"flows\"\nblock_size = 1048576\n[retry]\nmax_retries = 2\n",
        )
        .unwrap();
        assert_eq!(c.block_size, MIB);
        assert_eq!(c.retry.max_retries, 2);
        assert!(c.validate().is_ok());
        for (config, field) in [
            (
                AzureBlobConfig {
                    block_size: 0,
                    ..AzureBlobConfig::default()
                },
                "block_size",
            ),
            (
                AzureBlobConfig {
                    list_page_size: 5001,
                    ..AzureBlobConfig::default()
                },
                "list_page_size",
            ),
            (
                AzureBlobConfig {
                    container: Some("x".into()),
                    ..AzureBlobConfig::default()
                },
                "container",
            ),
        ] {
            match config.validate() {
                Err(AzureBlobError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(toml::from_str::<AzureBlobConfig>("token = \"x\"\n").is_err());
    }

    #[test]
    fn a_secret_in_plain_text_is_refused_and_debug_shows_only_the_variable() {
        let c = toml::from_str::<AzureBlobConfig>("account = \"a\"\nkey = \"c2VjcmV0LWtleQ==\"\n")
            .unwrap();
        assert!(!format!("{c:?}").contains("c2VjcmV0"), "{c:?}");
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`key`") && e.contains("env:VAR"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "{e}");
        let c: AzureBlobConfig = toml::from_str("sas = \"env:FLOW_TEST_SAS\"\n").unwrap();
        assert_eq!(format!("{:?}", c.sas), "Some(\"env:FLOW_TEST_SAS\")");
    }

    #[test]
    fn credentials_must_be_one_and_present() {
        let none = AzureBlobConfig {
            account: Some("data".into()),
            ..AzureBlobConfig::default()
        };
        let e = none.builder().build().unwrap_err().to_string();
        assert!(e.contains("no credential"), "{e}");
        let unset = AzureBlobConfig {
            account: Some("data".into()),
            key: Some(SecretRef::new("env:FLOW_TEST_AZURE_UNSET_VAR").unwrap()),
            ..AzureBlobConfig::default()
        };
        let e = unset.builder().build().unwrap_err().to_string();
        assert!(e.contains("FLOW_TEST_AZURE_UNSET_VAR"), "{e}");
        let two = AzureBlobConfig {
            key: Some(SecretRef::new("env:A").unwrap()),
            sas: Some(SecretRef::new("env:B").unwrap()),
            ..AzureBlobConfig::default()
        };
        assert!(two.validate().is_err());
    }
}
