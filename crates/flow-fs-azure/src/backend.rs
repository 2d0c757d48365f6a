//! [`AzureBackend`]: the object primitives of `flow_fs_object` on Blob
//! storage (through the adapter in `blob.rs`), with block uploads, the
//! service's copy, paged listings, `flow_cloud`'s retries and the request
//! timeout.

use crate::blob::{BlobStore, CallError};
use crate::config::{AzureBlobConfig, MAX_BLOCKS};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use flow_cloud::tail::ObjectStream;
use flow_cloud::{Clock, RetryConfig};
use flow_core::FsError;
use flow_fs_object::{
    fit_part_size, part_ranges, store_error, ListPage, ObjectBackend, ObjectInfo, ObjectLocation,
};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The Blob primitives: the account's client and the settings.
pub struct AzureBackend {
    store: BlobStore,
    config: AzureBlobConfig,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for AzureBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The settings hold where secrets come from, never one; the
        // client (which holds the credential) is left out.
        f.debug_struct("AzureBlobFilesystem")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The block size for a file of `size` bytes: the setting, or larger when
/// the file would need more blocks than a blob may have.
fn block_size(setting: u64, size: u64) -> u64 {
    fit_part_size(setting, size, MAX_BLOCKS)
}

/// `(block id, start, end)` of each block; ids of one length, as the
/// service requires.
fn blocks(size: u64, block: u64) -> Vec<(String, u64, u64)> {
    part_ranges(size, block)
        .map(|(n, start, end)| (format!("block-{n:06}"), start, end))
        .collect()
}

fn io_error(op: &'static str, local: &Path, e: std::io::Error) -> FsError {
    FsError::io(op, local.display().to_string(), e)
}

impl AzureBackend {
    pub(crate) fn new(store: BlobStore, config: AzureBlobConfig, clock: Arc<dyn Clock>) -> Self {
        AzureBackend {
            store,
            config,
            clock,
        }
    }

    /// The settings it was built with.
    pub fn config(&self) -> &AzureBlobConfig {
        &self.config
    }

    /// The storage account's name.
    pub fn account(&self) -> &str {
        self.store.account()
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests_made(&self) -> u64 {
        self.store.requests()
    }

    /// Creates a container of the account (one that exists is fine): for
    /// setting up a cluster's storage and for tests.
    pub async fn create_container(&self, container: &str) -> Result<(), FsError> {
        self.call("create_container", || {
            self.store.create_container(container)
        })
        .await
        .map_err(|e| store_error("create_container", &format!("az://{container}"), false, e))
    }

    /// One API call, each attempt bounded by `request_timeout`, retried
    /// while its failure is transient.
    async fn call<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, CallError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        self.retried(&self.config.retry, what, attempt).await
    }

    async fn retried<T, F, Fut>(
        &self,
        retry: &RetryConfig,
        what: &str,
        attempt: F,
    ) -> Result<T, CallError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let limit = self.config.request_timeout;
        let attempt = &attempt;
        flow_cloud::retry(retry, &self.clock, what, || async move {
            match tokio::time::timeout(limit, attempt()).await {
                Ok(result) => result,
                Err(_) => Err(CallError::timed_out(
                    "request_timeout: no complete answer",
                    limit,
                )),
            }
        })
        .await
    }

    /// A block upload: each block read from its range of the file as it is
    /// sent, at most `upload_concurrency` in flight, then the block list.
    async fn upload_blocks(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        local: &Path,
        size: u64,
    ) -> Result<(), FsError> {
        let parts = blocks(size, block_size(self.config.block_size, size));
        let ids: Vec<String> = parts.iter().map(|(id, _, _)| id.clone()).collect();
        stream::iter(parts)
            .map(|(id, start, end)| async move {
                let body = read_range(local, start, end)
                    .await
                    .map_err(|e| io_error(op, local, e))?;
                self.call("Put Block", || {
                    self.store.put_block(&at.bucket, &at.key, &id, body.clone())
                })
                .await
                .map_err(|e| e.into_fs(op, at))
            })
            .buffer_unordered(self.config.upload_concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        self.call("Put Block List", || {
            self.store.commit_blocks(&at.bucket, &at.key, &ids)
        })
        .await
        .map_err(|e| e.into_fs(op, at))
    }
}

/// Bytes `start..end` of the file.
async fn read_range(local: &Path, start: u64, end: u64) -> std::io::Result<Bytes> {
    let mut file = tokio::fs::File::open(local).await?;
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut buffer = BytesMut::zeroed((end - start) as usize);
    file.read_exact(&mut buffer).await?;
    Ok(buffer.freeze())
}

impl CallError {
    /// The filesystem error of `op` on `location`; a missing blob is
    /// `NotFound`.
    pub(crate) fn into_fs(self, op: &'static str, location: &impl fmt::Display) -> FsError {
        let missing = self.is_missing_blob();
        store_error(op, location, missing, self)
    }
}

#[async_trait]
impl ObjectBackend for AzureBackend {
    fn schemes(&self) -> &'static [&'static str] {
        &["az", "wasbs", "wasb", "abfss", "abfs"]
    }

    /// `container`, or Hadoop's `container@ACCOUNT.blob.core.windows.net`
    /// (`.dfs.` for abfss) when ACCOUNT is this filesystem's.
    fn bucket_of(&self, authority: &str) -> Result<String, String> {
        let Some((container, host)) = authority.split_once('@') else {
            return Ok(authority.to_string());
        };
        let named = host.split('.').next().unwrap_or(host);
        let account = self.store.account();
        if named == account && !container.is_empty() {
            Ok(container.to_string())
        } else {
            Err(format!(
                "the address names the storage account `{named}`; this filesystem reaches `{account}`"
            ))
        }
    }

    async fn head(&self, op: &'static str, at: &ObjectLocation) -> Result<u64, FsError> {
        self.call("Get Blob Properties", || {
            self.store.size(&at.bucket, &at.key)
        })
        .await
        .map_err(|e| e.into_fs(op, at))
    }

    async fn list_page(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        prefix: &str,
        token: Option<String>,
        max: u32,
    ) -> Result<ListPage, FsError> {
        let max = NonZeroU32::new(max.clamp(1, 5000)).unwrap_or(NonZeroU32::MIN);
        let (blobs, next) = self
            .call("List Blobs", || {
                self.store.list(&at.bucket, prefix, token.clone(), max)
            })
            .await
            .map_err(|e| store_error(op, &at.child(prefix.to_string()), false, e))?;
        Ok(ListPage {
            objects: blobs
                .into_iter()
                .map(|b| ObjectInfo {
                    key: b.name,
                    size: b.size,
                })
                .collect(),
            next: next.filter(|n| !n.is_empty()),
        })
    }

    async fn put(&self, op: &'static str, at: &ObjectLocation, body: Bytes) -> Result<(), FsError> {
        self.call("Put Blob", || {
            self.store.put(&at.bucket, &at.key, body.clone())
        })
        .await
        .map_err(|e| e.into_fs(op, at))
    }

    async fn upload_file(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        local: &Path,
        size: u64,
    ) -> Result<(), FsError> {
        if size > self.config.single_put_threshold {
            return self.upload_blocks(op, at, local, size).await;
        }
        let body = read_range(local, 0, size)
            .await
            .map_err(|e| io_error(op, local, e))?;
        self.put(op, at, body).await
    }

    async fn get(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        offset: u64,
    ) -> Result<ObjectStream, FsError> {
        // Only the first request is bounded and retried here; the rest of
        // the stream is bounded by the idle read timeout.
        self.call("Get Blob", || self.store.read(&at.bucket, &at.key, offset))
            .await
            .map_err(|e| e.into_fs(op, at))
    }

    async fn delete(&self, op: &'static str, at: &ObjectLocation) -> Result<(), FsError> {
        self.call("Delete Blob", || self.store.delete(&at.bucket, &at.key))
            .await
            .map_err(|e| e.into_fs(op, at))
    }

    async fn copy(
        &self,
        op: &'static str,
        from: &ObjectLocation,
        to: &ObjectLocation,
        _size: u64,
    ) -> Result<(), FsError> {
        // Copy Blob: the service copies whatever the size (asynchronously
        // when it must; polled until done).
        self.call("Copy Blob", || {
            self.store.copy(
                (&from.bucket, &from.key),
                (&to.bucket, &to.key),
                self.config.copy_poll,
            )
        })
        .await
        .map_err(|e| e.into_fs(op, &format!("{from} -> {to}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_file_with_ids_of_one_length() {
        let parts = blocks(10, 4);
        assert_eq!(
            parts,
            [
                ("block-000000".to_string(), 0, 4),
                ("block-000001".to_string(), 4, 8),
                ("block-000002".to_string(), 8, 10)
            ]
        );
        assert!(blocks(0, 4).is_empty());
        assert_eq!(block_size(4, 10), 4);
        assert_eq!(block_size(4, 50_000 * 4 + 1), 5);
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        use flow_cloud::Transient;
        let status = |status: u16, code: &str| CallError::Status {
            status,
            code: Some(code.into()),
            message: String::new(),
            retry_after: None,
        };
        assert!(status(429, "TooManyRequests").is_transient());
        assert!(status(503, "ServerBusy").is_transient());
        assert!(!status(403, "AuthenticationFailed").is_transient());
        assert!(CallError::Transport("connection refused".into()).is_transient());
        let missing = status(404, "BlobNotFound").into_fs("rm", &"az://c/k");
        assert!(matches!(missing, FsError::NotFound { op: "rm", .. }));
        let no_container = status(404, "ContainerNotFound").into_fs("rm", &"az://c/k");
        assert!(matches!(no_container, FsError::Backend { .. }));
    }
}
