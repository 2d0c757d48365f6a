//! [`LazyS3Filesystem`]: the S3 filesystem made on first use, for a
//! cluster whose `Cluster::filesystem` is synchronous while the AWS chain
//! (credentials, region) is resolved asynchronously.

use crate::{S3Config, S3Filesystem};
use async_trait::async_trait;
use flow_core::DeferredFilesystem;
use std::fmt;
use tokio::sync::OnceCell;

/// An [`S3Filesystem`] built from its [`S3Config`] by the first call; a
/// failed build is tried again by the next call (flow-core's
/// [`DeferredFilesystem`] makes it a `Filesystem`).
pub struct LazyS3Filesystem {
    config: S3Config,
    fs: OnceCell<S3Filesystem>,
}

impl fmt::Debug for LazyS3Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyS3Filesystem")
            .field("config", &self.config)
            .field("built", &self.fs.initialized())
            .finish()
    }
}

impl LazyS3Filesystem {
    /// Builds nothing yet; `config` is validated by the first use.
    pub fn new(config: S3Config) -> Self {
        LazyS3Filesystem {
            config,
            fs: OnceCell::new(),
        }
    }

    /// The settings it builds from.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The filesystem, built now if it is not yet.
    pub async fn get(&self) -> Result<&S3Filesystem, crate::S3Error> {
        self.fs
            .get_or_try_init(|| self.config.clone().builder().build())
            .await
    }
}

#[async_trait]
impl DeferredFilesystem for LazyS3Filesystem {
    type Fs = S3Filesystem;
    async fn built(&self) -> Result<&S3Filesystem, String> {
        self.get().await.map_err(|e| e.to_string())
    }
}
