//! [`ObjectFilesystem`]: the `Filesystem` operations (and the log tails)
//! built from an [`ObjectBackend`]'s primitives.

use crate::backend::{backend_error, ObjectBackend, ObjectInfo, ObjectLocation, FOLDER_MARKER};
use async_trait::async_trait;
use bytes::Bytes;
use flow_cloud::tail::{ObjectStream, RemoteObjects, TailError};
use flow_core::filesystem::{normalize_key, normalize_lexically};
use flow_core::{Filesystem, FsError};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// The bytes buffered between a download and its local file.
const DOWNLOAD_BUFFER: usize = 256 * 1024;

/// Where keys resolve and how wide prefix operations go: the part of a
/// store's settings that the shared operations read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSettings {
    /// The bucket of keys without an address; `None`: every key names one.
    pub bucket: Option<String>,
    /// The normalized prefix under the default bucket (`""` for none).
    pub prefix: String,
    /// Keys per listing request.
    pub list_page_size: u32,
    /// Objects copied or deleted at the same time.
    pub concurrency: usize,
}

impl ObjectSettings {
    /// Settings with `prefix` normalized (`team/./etl/` is `team/etl`); an
    /// error names the prefix when it climbs out of the bucket.
    pub fn new(
        bucket: Option<String>,
        prefix: Option<&str>,
        list_page_size: u32,
        concurrency: usize,
    ) -> Result<Self, FsError> {
        let prefix = match prefix {
            Some(prefix) => normalize_lexically("prefix", prefix)?,
            None => String::new(),
        };
        Ok(ObjectSettings {
            bucket,
            prefix,
            list_page_size,
            concurrency,
        })
    }
}

/// An object store as a flow [`Filesystem`]. Cheap to clone. Derefs to its
/// backend, so a store's own accessors (its settings, its client, its
/// request counter) are called on the filesystem directly.
pub struct ObjectFilesystem<B> {
    backend: Arc<B>,
    settings: Arc<ObjectSettings>,
}

impl<B> Clone for ObjectFilesystem<B> {
    fn clone(&self) -> Self {
        ObjectFilesystem {
            backend: self.backend.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<B> Deref for ObjectFilesystem<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.backend
    }
}

/// The backend's `Debug` (which says what it holds and leaves out every
/// credential).
impl<B: fmt::Debug> fmt::Debug for ObjectFilesystem<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.backend.fmt(f)
    }
}

/// `Ok` for an object that was already absent.
fn absent_is_fine(result: Result<(), FsError>) -> Result<(), FsError> {
    match result {
        Err(FsError::NotFound { .. }) => Ok(()),
        other => other,
    }
}

/// A sibling of `local` to download into, renamed into place at the end.
fn partial_path(local: &Path) -> PathBuf {
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    local.with_file_name(format!(".{name}.flow-partial-{}", std::process::id()))
}

impl<B: ObjectBackend> ObjectFilesystem<B> {
    /// The filesystem of `backend`, its keys resolving as `settings` say.
    pub fn new(backend: B, settings: ObjectSettings) -> Self {
        ObjectFilesystem {
            backend: Arc::new(backend),
            settings: Arc::new(settings),
        }
    }

    /// The backend (also reached through `Deref`).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Where keys resolve and how wide prefix operations go.
    pub fn settings(&self) -> &ObjectSettings {
        &self.settings
    }

    /// Where `key` is: an address `SCHEME://bucket/key` in one of the
    /// backend's schemes, or a key in the default bucket under the prefix.
    /// Refuses keys that leave their bucket or prefix, or name it, with the
    /// key as the caller wrote it.
    pub fn locate(&self, op: &'static str, key: &str) -> Result<ObjectLocation, FsError> {
        let schemes = self.backend.schemes();
        let address = schemes.iter().find_map(|scheme| {
            key.strip_prefix(scheme)
                .and_then(|rest| rest.strip_prefix("://"))
        });
        let scheme = schemes.first().copied().unwrap_or("object");
        if let Some(rest) = address {
            let (bucket, object) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(backend_error(op, &key, "the address names no bucket"));
            }
            let bucket = self
                .backend
                .bucket_of(bucket)
                .map_err(|why| backend_error(op, &key, why))?;
            let object = normalize_key(op, object).map_err(|e| match e {
                FsError::InvalidKey { problem, .. } => FsError::invalid_key(op, key, problem),
                other => other,
            })?;
            return Ok(ObjectLocation {
                scheme,
                bucket,
                key: object,
            });
        }
        let Some(bucket) = &self.settings.bucket else {
            return Err(backend_error(
                op,
                &key,
                format!(
                    "no default bucket: set `bucket` in the settings or write {scheme}://BUCKET/KEY"
                ),
            ));
        };
        let relative = normalize_key(op, key)?;
        let key = if self.settings.prefix.is_empty() {
            relative
        } else {
            format!("{}/{relative}", self.settings.prefix)
        };
        Ok(ObjectLocation {
            scheme,
            bucket: bucket.clone(),
            key,
        })
    }

    /// The object's size, or `None` when there is no such object.
    async fn size_of(&self, op: &'static str, at: &ObjectLocation) -> Result<Option<u64>, FsError> {
        match self.backend.head(op, at).await {
            Ok(size) => Ok(Some(size)),
            Err(FsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object whose key starts with `location`'s key (a plain
    /// prefix, not only a folder), as `SCHEME://bucket/key`, in key order,
    /// paging through the listing. For logs written in numbered parts,
    /// such as Dataproc's `driveroutput.000000000`, `.000000001`, ...
    pub async fn list_prefix(&self, location: &str) -> Result<Vec<String>, FsError> {
        let op = "list";
        let at = self.locate(op, location)?;
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .backend
                .list_page(op, &at, &at.key, token, self.settings.list_page_size)
                .await?;
            keys.extend(
                page.objects
                    .into_iter()
                    .map(|o| at.child(o.key).to_string()),
            );
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Copies `objects` (under `from`'s folder) to the same places under
    /// `to`, some at a time.
    async fn copy_objects(
        &self,
        op: &'static str,
        from: &ObjectLocation,
        to: &ObjectLocation,
        objects: &[ObjectInfo],
    ) -> Result<(), FsError> {
        let skip = from.dir_prefix().len();
        let pairs: Vec<(ObjectLocation, ObjectLocation, u64)> = objects
            .iter()
            .map(|object| {
                let target = to.child(format!("{}/{}", to.key, &object.key[skip..]));
                (from.child(object.key.clone()), target, object.size)
            })
            .collect();
        stream::iter(pairs)
            .map(|(source, target, size)| async move {
                self.backend.copy(op, &source, &target, size).await
            })
            .buffer_unordered(self.settings.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Copies (and with `remove`, moves) an object or a prefix with its
    /// marker.
    async fn transfer(
        &self,
        op: &'static str,
        from: &str,
        to: &str,
        remove: bool,
    ) -> Result<(), FsError> {
        let (from, to) = (self.locate(op, from)?, self.locate(op, to)?);
        if from == to {
            return Err(backend_error(
                op,
                &from,
                "source and destination are the same object",
            ));
        }
        if let Some(size) = self.size_of(op, &from).await? {
            self.backend.copy(op, &from, &to, size).await?;
            if remove {
                self.backend.delete(op, &from).await?;
            }
            return Ok(());
        }
        if to.bucket == from.bucket && to.key.starts_with(&from.dir_prefix()) {
            return Err(backend_error(
                op,
                &format!("{from} -> {to}"),
                "cannot copy a prefix into itself",
            ));
        }
        let prefix = from.dir_prefix();
        let mut token = None;
        let mut found = false;
        loop {
            let page = self
                .backend
                .list_page(op, &from, &prefix, token, self.settings.list_page_size)
                .await?;
            found |= !page.objects.is_empty();
            self.copy_objects(op, &from, &to, &page.objects).await?;
            if remove {
                let keys = page.objects.into_iter().map(|o| o.key).collect();
                self.backend
                    .delete_many(op, &from, keys, self.settings.concurrency)
                    .await?;
            }
            match page.next {
                // After deletions the listing restarts; without, it goes on.
                Some(next) if !remove => token = Some(next),
                Some(_) => token = None,
                None => break,
            }
        }
        let marker = from.marker();
        if let Some(size) = self.size_of(op, &marker).await? {
            found = true;
            self.backend.copy(op, &marker, &to.marker(), size).await?;
            if remove {
                absent_is_fine(self.backend.delete(op, &marker).await)?;
            }
        }
        if !found {
            return Err(FsError::NotFound {
                op,
                location: from.to_string(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl<B: ObjectBackend> Filesystem for ObjectFilesystem<B> {
    async fn mkdir(&self, path: &str) -> Result<(), FsError> {
        let at = self.locate("mkdir", path)?;
        let mut folder = String::new();
        for segment in at.key.split('/') {
            if !folder.is_empty() {
                folder.push('/');
            }
            folder.push_str(segment);
            let marker = at.child(format!("{folder}{FOLDER_MARKER}"));
            self.backend.put("mkdir", &marker, Bytes::new()).await?;
        }
        Ok(())
    }

    async fn rmdir(&self, path: &str) -> Result<(), FsError> {
        let op = "rmdir";
        let at = self.locate(op, path)?;
        let prefix = at.dir_prefix();
        loop {
            // Always the first page: what was deleted is gone from it.
            let page = self
                .backend
                .list_page(op, &at, &prefix, None, self.settings.list_page_size)
                .await?;
            if page.objects.is_empty() {
                break;
            }
            let keys = page.objects.into_iter().map(|o| o.key).collect();
            self.backend
                .delete_many(op, &at, keys, self.settings.concurrency)
                .await?;
            if page.next.is_none() {
                break;
            }
        }
        absent_is_fine(self.backend.delete(op, &at.marker()).await)
    }

    async fn rm(&self, path: &str) -> Result<(), FsError> {
        let at = self.locate("rm", path)?;
        // Asked first: not every store says when a deleted key was absent.
        if self.size_of("rm", &at).await?.is_none() {
            return Err(FsError::NotFound {
                op: "rm",
                location: at.to_string(),
            });
        }
        self.backend.delete("rm", &at).await
    }

    async fn cp(&self, from: &str, to: &str) -> Result<(), FsError> {
        self.transfer("cp", from, to, false).await
    }

    async fn mv(&self, from: &str, to: &str) -> Result<(), FsError> {
        self.transfer("mv", from, to, true).await
    }

    async fn copy_to_local(&self, remote: &str, local: &Path) -> Result<(), FsError> {
        let op = "copy_to_local";
        let at = self.locate(op, remote)?;
        // Asked before anything local is made: a missing object leaves no
        // directory and no file.
        let body = self.backend.get(op, &at, 0).await?;
        if let Some(parent) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| FsError::io(op, parent.display().to_string(), e))?;
        }
        let partial = partial_path(local);
        let written = async {
            let mut file = tokio::fs::File::create(&partial)
                .await
                .map_err(|e| FsError::io(op, partial.display().to_string(), e))?;
            let mut body = tokio::io::BufReader::with_capacity(DOWNLOAD_BUFFER, body);
            tokio::io::copy_buf(&mut body, &mut file)
                .await
                .map_err(|e| FsError::io(op, format!("{at} -> {}", local.display()), e))?;
            file.flush()
                .await
                .map_err(|e| FsError::io(op, partial.display().to_string(), e))?;
            tokio::fs::rename(&partial, local)
                .await
                .map_err(|e| FsError::io(op, local.display().to_string(), e))
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        written
    }

    async fn copy_from_local(&self, local: &Path, remote: &str) -> Result<(), FsError> {
        let op = "copy_from_local";
        let at = self.locate(op, remote)?;
        let shown = local.display().to_string();
        let meta = tokio::fs::metadata(local)
            .await
            .map_err(|e| FsError::io(op, shown.clone(), e))?;
        if meta.is_dir() {
            return Err(backend_error(op, &shown, "is a directory, not a file"));
        }
        self.backend.upload_file(op, &at, local, meta.len()).await
    }

    async fn exists(&self, path: &str) -> Result<bool, FsError> {
        let op = "exists";
        let at = self.locate(op, path)?;
        if self.size_of(op, &at).await?.is_some() || self.size_of(op, &at.marker()).await?.is_some()
        {
            return Ok(true);
        }
        let page = self
            .backend
            .list_page(op, &at, &at.dir_prefix(), None, 1)
            .await?;
        Ok(!page.objects.is_empty())
    }
}

/// Log tails for failure messages (`flow_cloud::tail`): `location` is a key
/// or an address, as for the filesystem operations.
#[async_trait]
impl<B: ObjectBackend> RemoteObjects for ObjectFilesystem<B> {
    async fn size(&self, location: &str) -> Result<Option<u64>, TailError> {
        let at = self
            .locate("tail", location)
            .map_err(|e| tail_error(location, e))?;
        self.size_of("tail", &at)
            .await
            .map_err(|e| tail_error(location, e))
    }

    async fn read_from(&self, location: &str, offset: u64) -> Result<ObjectStream, TailError> {
        let at = self
            .locate("tail", location)
            .map_err(|e| tail_error(location, e))?;
        self.backend
            .get("tail", &at, offset)
            .await
            .map_err(|e| tail_error(location, e))
    }
}

fn tail_error(location: &str, e: FsError) -> TailError {
    TailError {
        location: location.to_string(),
        message: e.to_string(),
    }
}
