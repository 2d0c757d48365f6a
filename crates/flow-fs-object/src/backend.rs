//! [`ObjectBackend`]: the object primitives a store implements, and the
//! location type they take.

use async_trait::async_trait;
use bytes::Bytes;
use flow_cloud::tail::ObjectStream;
use flow_core::FsError;
use std::fmt;
use std::path::Path;

/// Hadoop's folder marker suffix, kept from Synergy Flow.
pub const FOLDER_MARKER: &str = "_$folder$";

/// A bucket (or container) and a key, shown as `SCHEME://bucket/key` in
/// every error.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectLocation {
    /// How the store's addresses start, without `://` (`s3`, `gs`).
    pub scheme: &'static str,
    /// The bucket or container.
    pub bucket: String,
    /// The key (or prefix) within it.
    pub key: String,
}

impl ObjectLocation {
    /// Another key in the same bucket.
    pub fn child(&self, key: String) -> ObjectLocation {
        ObjectLocation {
            scheme: self.scheme,
            bucket: self.bucket.clone(),
            key,
        }
    }

    /// This key's folder marker, `key_$folder$`.
    pub fn marker(&self) -> ObjectLocation {
        self.child(format!("{}{FOLDER_MARKER}", self.key))
    }

    /// `key/`: what a prefix operation lists (never the sibling `key-2`).
    pub fn dir_prefix(&self) -> String {
        format!("{}/", self.key)
    }
}

impl fmt::Display for ObjectLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}/{}", self.scheme, self.bucket, self.key)
    }
}

/// A failed primitive as the filesystem error of `op` on `location`:
/// [`FsError::NotFound`] when the store said the object is `missing`, else
/// [`FsError::Backend`] with the store's `message`.
pub fn store_error(
    op: &'static str,
    location: &impl fmt::Display,
    missing: bool,
    message: impl fmt::Display,
) -> FsError {
    let location = location.to_string();
    if missing {
        FsError::NotFound { op, location }
    } else {
        FsError::Backend {
            op,
            location,
            message: message.to_string(),
        }
    }
}

/// A failure of `op` on `location` that is not the store's answer about an
/// object (an SDK builder refusing, an answer without a field it must have):
/// [`FsError::Backend`] with `message`.
pub fn backend_error(
    op: &'static str,
    location: &impl fmt::Display,
    message: impl fmt::Display,
) -> FsError {
    store_error(op, location, false, message)
}

/// An object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its full key in the bucket.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// The objects of the page, in key order.
    pub objects: Vec<ObjectInfo>,
    /// The token of the next page; `None` on the last.
    pub next: Option<String>,
}

/// The primitives of an object store, each one request or one transfer.
/// [`ObjectFilesystem`](crate::ObjectFilesystem) builds every filesystem
/// operation from them; a backend holds its client, its settings and its
/// wire code (part sizes, resumable sessions, continuation tokens).
///
/// Every primitive takes the filesystem operation it serves (`op`, e.g.
/// `rmdir`) and returns errors naming it and the location. A missing object
/// is [`FsError::NotFound`] wherever the store says so.
#[async_trait]
pub trait ObjectBackend: Send + Sync {
    /// The address schemes that name a bucket (`["s3", "s3a", "s3n"]`); the
    /// first is how locations are shown.
    fn schemes(&self) -> &'static [&'static str];

    /// The bucket an address's authority (what follows `SCHEME://`, up to
    /// the first `/`) names, or why it names none this store reaches.
    /// Default: the authority itself. Azure's Hadoop addresses write
    /// `container@account.blob.core.windows.net`.
    fn bucket_of(&self, authority: &str) -> Result<String, String> {
        Ok(authority.to_string())
    }

    /// The object's size; [`FsError::NotFound`] when there is no such
    /// object.
    async fn head(&self, op: &'static str, at: &ObjectLocation) -> Result<u64, FsError>;

    /// Up to `max` objects of `at.bucket` whose keys start with `prefix` (a
    /// plain string prefix), from the page `token` names.
    async fn list_page(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        prefix: &str,
        token: Option<String>,
        max: u32,
    ) -> Result<ListPage, FsError>;

    /// Writes `body` as the whole object in one request (folder markers).
    async fn put(&self, op: &'static str, at: &ObjectLocation, body: Bytes) -> Result<(), FsError>;

    /// Writes the `size` bytes of the local file `local` as the whole object,
    /// streamed from the file: memory stays bounded whatever the size.
    async fn upload_file(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        local: &Path,
        size: u64,
    ) -> Result<(), FsError>;

    /// The object's bytes from `offset` to its end, streamed. A failure
    /// while reading surfaces as the stream's I/O error.
    async fn get(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        offset: u64,
    ) -> Result<ObjectStream, FsError>;

    /// Deletes one object. A missing one is `Ok` or
    /// [`FsError::NotFound`], as the store answers.
    async fn delete(&self, op: &'static str, at: &ObjectLocation) -> Result<(), FsError>;

    /// Deletes the objects `keys` of `at.bucket`, in as few requests as the
    /// store allows; missing ones are fine. Default: one request per object,
    /// `concurrency` (the settings' [`concurrency`](crate::ObjectSettings::concurrency))
    /// at a time ([`delete_each`]), for stores without a batch delete (GCS's
    /// JSON API batch endpoint and Azure's Blob Batch are not used).
    async fn delete_many(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        keys: Vec<String>,
        concurrency: usize,
    ) -> Result<(), FsError> {
        delete_each(self, op, at, keys, concurrency).await
    }

    /// Copies the object `from` (of `size` bytes) to `to` inside the store,
    /// whatever its size.
    async fn copy(
        &self,
        op: &'static str,
        from: &ObjectLocation,
        to: &ObjectLocation,
        size: u64,
    ) -> Result<(), FsError>;
}

/// Deletes `keys` of `at`'s bucket one request each, `concurrency` at a
/// time, a missing one being fine: [`ObjectBackend::delete_many`]'s default.
pub async fn delete_each<B: ObjectBackend + ?Sized>(
    backend: &B,
    op: &'static str,
    at: &ObjectLocation,
    keys: Vec<String>,
    concurrency: usize,
) -> Result<(), FsError> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    stream::iter(keys)
        .map(|key| {
            let target = at.child(key);
            async move {
                match backend.delete(op, &target).await {
                    Err(FsError::NotFound { .. }) => Ok(()),
                    other => other,
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}
