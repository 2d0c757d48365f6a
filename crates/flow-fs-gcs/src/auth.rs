//! Google credentials shared by every client of a Google API in flow (the
//! GCS filesystem, the Dataproc cluster): a service-account key file, else
//! Application Default Credentials, through `gcp_auth`, which caches tokens
//! per scope set and fetches a new one before the old one expires.
//!
//! [`token_provider`] is synchronous so that factories can be made outside
//! an async runtime: a key file is read at once (a bad path or key fails
//! early), ADC discovery (environment, gcloud, the metadata server) is
//! deferred to the first token.

use crate::config::GcsError;
use async_trait::async_trait;
use gcp_auth::{Token, TokenProvider};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The credentials for `credentials_file`, or Application Default
/// Credentials found on first use when it is `None`.
pub fn token_provider(credentials_file: Option<&Path>) -> Result<Arc<dyn TokenProvider>, GcsError> {
    match credentials_file {
        Some(path) => {
            let account =
                gcp_auth::CustomServiceAccount::from_file(path).map_err(|e| GcsError::Auth {
                    message: format!("{}: {e}", path.display()),
                })?;
            Ok(Arc::new(account))
        }
        None => Ok(Arc::new(DefaultCredentials::default())),
    }
}

/// Application Default Credentials, discovered on the first request (and
/// again on the next one if discovery failed).
#[derive(Default)]
pub struct DefaultCredentials {
    provider: OnceCell<Arc<dyn TokenProvider>>,
}

impl fmt::Debug for DefaultCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.provider.initialized() {
            "DefaultCredentials(found)"
        } else {
            "DefaultCredentials(not looked up yet)"
        })
    }
}

impl DefaultCredentials {
    async fn provider(&self) -> Result<&Arc<dyn TokenProvider>, gcp_auth::Error> {
        self.provider.get_or_try_init(gcp_auth::provider).await
    }
}

#[async_trait]
impl TokenProvider for DefaultCredentials {
    async fn token(&self, scopes: &[&str]) -> Result<Arc<Token>, gcp_auth::Error> {
        self.provider().await?.token(scopes).await
    }

    async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
        self.provider().await?.project_id().await
    }
}
