//! [`DeferredFilesystem`]: a filesystem built on first use. A cluster's
//! `filesystem()` is synchronous while a cloud client is made
//! asynchronously (credentials, region, endpoints); such a cluster hands out
//! a source of its filesystem, and every [`Filesystem`] call goes through
//! it. One forwarding for every cloud (EMR's S3, Qubole's S3, ...).

use crate::filesystem::{Filesystem, FsError};
use async_trait::async_trait;
use std::path::Path;

/// Where a deferred filesystem comes from. `built` makes it on the first
/// call and returns the same one afterwards; a failed build is tried again
/// by the next call. Its error message becomes an [`FsError::Backend`]
/// naming the operation and the key.
#[async_trait]
pub trait DeferredFilesystem: Send + Sync {
    /// The filesystem this source builds.
    type Fs: Filesystem;
    /// The filesystem, built now if it is not yet.
    async fn built(&self) -> Result<&Self::Fs, String>;
}

async fn built<'a, D: DeferredFilesystem + ?Sized>(
    source: &'a D,
    op: &'static str,
    location: &str,
) -> Result<&'a D::Fs, FsError> {
    source.built().await.map_err(|message| FsError::Backend {
        op,
        location: location.to_string(),
        message,
    })
}

#[async_trait]
impl<D: DeferredFilesystem> Filesystem for D {
    async fn mkdir(&self, path: &str) -> Result<(), FsError> {
        built(self, "mkdir", path).await?.mkdir(path).await
    }
    async fn rmdir(&self, path: &str) -> Result<(), FsError> {
        built(self, "rmdir", path).await?.rmdir(path).await
    }
    async fn rm(&self, path: &str) -> Result<(), FsError> {
        built(self, "rm", path).await?.rm(path).await
    }
    async fn cp(&self, from: &str, to: &str) -> Result<(), FsError> {
        built(self, "cp", from).await?.cp(from, to).await
    }
    async fn mv(&self, from: &str, to: &str) -> Result<(), FsError> {
        built(self, "mv", from).await?.mv(from, to).await
    }
    async fn copy_to_local(&self, remote: &str, local: &Path) -> Result<(), FsError> {
        built(self, "copy_to_local", remote)
            .await?
            .copy_to_local(remote, local)
            .await
    }
    async fn copy_from_local(&self, local: &Path, remote: &str) -> Result<(), FsError> {
        built(self, "copy_from_local", remote)
            .await?
            .copy_from_local(local, remote)
            .await
    }
    async fn exists(&self, path: &str) -> Result<bool, FsError> {
        built(self, "exists", path).await?.exists(path).await
    }
}
