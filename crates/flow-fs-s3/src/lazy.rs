//! [`LazyS3Filesystem`]: the S3 filesystem made on first use, for a
//! cluster whose `Cluster::filesystem` is synchronous while the AWS chain
//! (credentials, region) is resolved asynchronously.

use crate::{S3Config, S3Filesystem};
use async_trait::async_trait;
use flow_core::{Filesystem, FsError};
use std::fmt;
use std::path::Path;
use tokio::sync::OnceCell;

/// An [`S3Filesystem`] built from its [`S3Config`] by the first call; a
/// failed build is tried again by the next call and reported as
/// [`FsError::Backend`] naming the operation and the key.
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

    async fn fs(&self, op: &'static str, location: &str) -> Result<&S3Filesystem, FsError> {
        self.get().await.map_err(|e| FsError::Backend {
            op,
            location: location.to_string(),
            message: e.to_string(),
        })
    }
}

#[async_trait]
impl Filesystem for LazyS3Filesystem {
    async fn mkdir(&self, path: &str) -> Result<(), FsError> {
        self.fs("mkdir", path).await?.mkdir(path).await
    }
    async fn rmdir(&self, path: &str) -> Result<(), FsError> {
        self.fs("rmdir", path).await?.rmdir(path).await
    }
    async fn rm(&self, path: &str) -> Result<(), FsError> {
        self.fs("rm", path).await?.rm(path).await
    }
    async fn cp(&self, from: &str, to: &str) -> Result<(), FsError> {
        self.fs("cp", from).await?.cp(from, to).await
    }
    async fn mv(&self, from: &str, to: &str) -> Result<(), FsError> {
        self.fs("mv", from).await?.mv(from, to).await
    }
    async fn copy_to_local(&self, remote: &str, local: &Path) -> Result<(), FsError> {
        self.fs("copy_to_local", remote)
            .await?
            .copy_to_local(remote, local)
            .await
    }
    async fn copy_from_local(&self, local: &Path, remote: &str) -> Result<(), FsError> {
        self.fs("copy_from_local", remote)
            .await?
            .copy_from_local(local, remote)
            .await
    }
    async fn exists(&self, path: &str) -> Result<bool, FsError> {
        self.fs("exists", path).await?.exists(path).await
    }
}
