//! [`S3Filesystem`]: the `Filesystem` operations on S3.

use crate::config::{S3Config, MAX_PART, MIN_PART};
use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use flow_cloud::tail::{ObjectStream, RemoteObjects, TailError};
use flow_core::filesystem::normalize_key;
use flow_core::{Filesystem, FsError};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::fmt;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Hadoop's folder marker suffix, kept from Synergy Flow.
const FOLDER_MARKER: &str = "_$folder$";
/// S3 allows at most this many parts per upload.
const MAX_PARTS: u64 = 10_000;

/// Characters of a key kept as they are in `x-amz-copy-source`.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A bucket and a key, shown as `s3://bucket/key` in every error.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key (or prefix) within it.
    pub key: String,
}

impl S3Location {
    fn child(&self, key: String) -> S3Location {
        S3Location {
            bucket: self.bucket.clone(),
            key,
        }
    }
    fn marker(&self) -> S3Location {
        self.child(format!("{}{FOLDER_MARKER}", self.key))
    }
    /// `key/`: what a prefix operation lists.
    fn dir_prefix(&self) -> String {
        format!("{}/", self.key)
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// The S3 filesystem. Cheap to clone (the SDK client is shared).
#[derive(Clone)]
pub struct S3Filesystem {
    client: Client,
    config: S3Config,
    /// The normalized prefix under the default bucket ("" for none).
    prefix: String,
}

impl fmt::Debug for S3Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client's configuration is left out on purpose: S3Config holds
        // no secret, the SDK's credentials cache is none of Debug's business.
        f.debug_struct("S3Filesystem")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// An SDK failure as a filesystem error naming the operation and location.
fn sdk_error<E>(
    op: &'static str,
    location: &impl fmt::Display,
    e: SdkError<E, HttpResponse>,
) -> FsError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let not_found = matches!(e.code(), Some("NoSuchKey" | "NotFound" | "NoSuchBucket"))
        || e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
    if not_found && e.code() != Some("NoSuchBucket") {
        return FsError::NotFound {
            op,
            location: location.to_string(),
        };
    }
    FsError::Backend {
        op,
        location: location.to_string(),
        message: DisplayErrorContext(&e).to_string(),
    }
}

fn backend(op: &'static str, location: &impl fmt::Display, message: impl Into<String>) -> FsError {
    FsError::Backend {
        op,
        location: location.to_string(),
        message: message.into(),
    }
}

impl S3Filesystem {
    pub(crate) fn new(client: Client, config: S3Config, prefix: String) -> Self {
        S3Filesystem {
            client,
            config,
            prefix,
        }
    }

    /// The settings it was built with.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The SDK client, for callers that need S3 beyond the filesystem
    /// (e.g. a cluster crate checking a log URI).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Where `key` is: `s3://bucket/key` (also `s3a://`, `s3n://`), or a key
    /// in the default bucket under the prefix. Refuses keys that leave their
    /// bucket or prefix, or name it.
    pub fn locate(&self, op: &'static str, key: &str) -> Result<S3Location, FsError> {
        let address = ["s3://", "s3a://", "s3n://"]
            .iter()
            .find_map(|scheme| key.strip_prefix(scheme));
        if let Some(rest) = address {
            let (bucket, object) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(backend(op, &key, "the address names no bucket"));
            }
            // Report refusals with the key as the caller wrote it.
            let object = normalize_key(op, object).map_err(|e| match e {
                FsError::InvalidKey { problem, .. } => FsError::invalid_key(op, key, problem),
                other => other,
            })?;
            return Ok(S3Location {
                bucket: bucket.to_string(),
                key: object,
            });
        }
        let Some(bucket) = &self.config.bucket else {
            return Err(backend(
                op,
                &key,
                "no default bucket: set `bucket` in the settings or write s3://BUCKET/KEY",
            ));
        };
        let relative = normalize_key(op, key)?;
        let key = if self.prefix.is_empty() {
            relative
        } else {
            format!("{}/{relative}", self.prefix)
        };
        Ok(S3Location {
            bucket: bucket.clone(),
            key,
        })
    }

    /// The object's size, or `None` when there is no such object.
    async fn head(&self, op: &'static str, at: &S3Location) -> Result<Option<u64>, FsError> {
        match self
            .client
            .head_object()
            .bucket(&at.bucket)
            .key(&at.key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => match sdk_error(op, at, e) {
                FsError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// One page of keys (with sizes) under `prefix`.
    async fn list_page(
        &self,
        op: &'static str,
        at: &S3Location,
        prefix: &str,
        token: Option<String>,
        max_keys: u32,
    ) -> Result<(Vec<(String, u64)>, Option<String>), FsError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&at.bucket)
            .prefix(prefix)
            .max_keys(max_keys as i32)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| sdk_error(op, at, e))?;
        let keys = page
            .contents()
            .iter()
            .filter_map(|o| Some((o.key()?.to_string(), o.size().unwrap_or(0).max(0) as u64)))
            .collect();
        let next = if page.is_truncated().unwrap_or(false) {
            page.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok((keys, next))
    }

    async fn put_empty(&self, op: &'static str, at: &S3Location) -> Result<(), FsError> {
        self.client
            .put_object()
            .bucket(&at.bucket)
            .key(&at.key)
            .body(ByteStream::from_static(b""))
            .send()
            .await
            .map_err(|e| sdk_error(op, at, e))?;
        Ok(())
    }

    async fn delete_one(&self, op: &'static str, at: &S3Location) -> Result<(), FsError> {
        self.client
            .delete_object()
            .bucket(&at.bucket)
            .key(&at.key)
            .send()
            .await
            .map_err(|e| sdk_error(op, at, e))?;
        Ok(())
    }

    /// Deletes `keys` of `at.bucket` with `DeleteObjects`, in batches.
    async fn delete_keys(
        &self,
        op: &'static str,
        at: &S3Location,
        keys: Vec<String>,
    ) -> Result<(), FsError> {
        for batch in keys.chunks(self.config.delete_batch) {
            let objects = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| backend(op, at, e.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| backend(op, at, e.to_string()))?;
            let answer = self
                .client
                .delete_objects()
                .bucket(&at.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| sdk_error(op, at, e))?;
            if let Some(failed) = answer.errors().first() {
                let key = failed.key().unwrap_or("?");
                return Err(backend(
                    op,
                    &at.child(key.to_string()),
                    format!(
                        "{} of {} keys not deleted: {} {}",
                        answer.errors().len(),
                        batch.len(),
                        failed.code().unwrap_or(""),
                        failed.message().unwrap_or("")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Server-side copy of one object of `size` bytes.
    async fn copy_object(
        &self,
        op: &'static str,
        from: &S3Location,
        to: &S3Location,
        size: u64,
    ) -> Result<(), FsError> {
        let source = format!(
            "{}/{}",
            from.bucket,
            utf8_percent_encode(&from.key, COPY_SOURCE)
        );
        let shown = format!("{from} -> {to}");
        if size <= self.config.copy_threshold {
            self.client
                .copy_object()
                .bucket(&to.bucket)
                .key(&to.key)
                .copy_source(source)
                .send()
                .await
                .map_err(|e| sdk_error(op, &shown, e))?;
            return Ok(());
        }
        let part_size = part_size(self.config.copy_part_size, size);
        let upload = self.start_upload(op, to).await?;
        let copied = async {
            let ranges: Vec<(i32, u64, u64)> = part_ranges(size, part_size);
            let parts: Vec<CompletedPart> = stream::iter(ranges)
                .map(|(number, start, end)| {
                    let source = source.clone();
                    let shown = &shown;
                    let upload = &upload;
                    async move {
                        let part = self
                            .client
                            .upload_part_copy()
                            .bucket(&to.bucket)
                            .key(&to.key)
                            .upload_id(upload)
                            .part_number(number)
                            .copy_source(source)
                            .copy_source_range(format!("bytes={start}-{}", end - 1))
                            .send()
                            .await
                            .map_err(|e| sdk_error(op, shown, e))?;
                        let etag = part
                            .copy_part_result()
                            .and_then(|r| r.e_tag())
                            .ok_or_else(|| backend(op, shown, "UploadPartCopy returned no ETag"))?;
                        Ok::<_, FsError>(
                            CompletedPart::builder()
                                .part_number(number)
                                .e_tag(etag)
                                .build(),
                        )
                    }
                })
                .buffered(self.config.concurrency)
                .try_collect()
                .await?;
            self.complete_upload(op, to, &upload, parts).await
        }
        .await;
        self.finish_upload(op, to, &upload, copied).await
    }

    async fn start_upload(&self, op: &'static str, to: &S3Location) -> Result<String, FsError> {
        let started = self
            .client
            .create_multipart_upload()
            .bucket(&to.bucket)
            .key(&to.key)
            .send()
            .await
            .map_err(|e| sdk_error(op, to, e))?;
        started
            .upload_id()
            .map(str::to_string)
            .ok_or_else(|| backend(op, to, "CreateMultipartUpload returned no upload id"))
    }

    async fn complete_upload(
        &self,
        op: &'static str,
        to: &S3Location,
        upload: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<(), FsError> {
        self.client
            .complete_multipart_upload()
            .bucket(&to.bucket)
            .key(&to.key)
            .upload_id(upload)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error(op, to, e))?;
        Ok(())
    }

    /// Aborts the upload when `result` failed, so no parts are left billed.
    async fn finish_upload(
        &self,
        op: &'static str,
        to: &S3Location,
        upload: &str,
        result: Result<(), FsError>,
    ) -> Result<(), FsError> {
        if result.is_err() {
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&to.bucket)
                .key(&to.key)
                .upload_id(upload)
                .send()
                .await
            {
                tracing::warn!(op, location = %to, "cannot abort the multipart upload: {}", DisplayErrorContext(&e));
            }
        }
        result
    }

    /// Copies (and with `remove`, moves) an object or a prefix.
    async fn transfer(
        &self,
        op: &'static str,
        from: &str,
        to: &str,
        remove: bool,
    ) -> Result<(), FsError> {
        let (from, to) = (self.locate(op, from)?, self.locate(op, to)?);
        if from == to {
            return Err(backend(
                op,
                &from,
                "source and destination are the same object",
            ));
        }
        if let Some(size) = self.head(op, &from).await? {
            self.copy_object(op, &from, &to, size).await?;
            if remove {
                self.delete_one(op, &from).await?;
            }
            return Ok(());
        }
        if to.bucket == from.bucket && to.key.starts_with(&from.dir_prefix()) {
            return Err(backend(
                op,
                &format!("{from} -> {to}"),
                "cannot copy a prefix into itself",
            ));
        }
        let source_prefix = from.dir_prefix();
        let mut token = None;
        let mut found = false;
        loop {
            let (keys, next) = self
                .list_page(op, &from, &source_prefix, token, self.config.list_page_size)
                .await?;
            found |= !keys.is_empty();
            stream::iter(keys.iter().cloned())
                .map(|(key, size)| {
                    let target = to.child(format!("{}/{}", to.key, &key[source_prefix.len()..]));
                    let source = from.child(key);
                    async move { self.copy_object(op, &source, &target, size).await }
                })
                .buffer_unordered(self.config.concurrency)
                .try_collect::<Vec<()>>()
                .await?;
            if remove {
                self.delete_keys(op, &from, keys.into_iter().map(|(k, _)| k).collect())
                    .await?;
            }
            match next {
                // After deletions the listing restarts; without, it goes on.
                Some(next) if !remove => token = Some(next),
                Some(_) => token = None,
                None => break,
            }
        }
        let marker = from.marker();
        if let Some(size) = self.head(op, &marker).await? {
            found = true;
            self.copy_object(op, &marker, &to.marker(), size).await?;
            if remove {
                self.delete_one(op, &marker).await?;
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

/// A part size that fits `size` into S3's 10,000 parts.
fn part_size(configured: u64, size: u64) -> u64 {
    configured
        .max(size.div_ceil(MAX_PARTS))
        .clamp(MIN_PART, MAX_PART)
}

/// `(part number, start, end)` of each part, end exclusive.
fn part_ranges(size: u64, part_size: u64) -> Vec<(i32, u64, u64)> {
    (0..size.div_ceil(part_size))
        .map(|i| {
            let start = i * part_size;
            ((i + 1) as i32, start, (start + part_size).min(size))
        })
        .collect()
}

/// A sibling of `local` to download into, renamed into place at the end.
fn partial_path(local: &Path) -> PathBuf {
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    local.with_file_name(format!(".{name}.flow-partial-{}", std::process::id()))
}

#[async_trait]
impl Filesystem for S3Filesystem {
    async fn mkdir(&self, path: &str) -> Result<(), FsError> {
        let at = self.locate("mkdir", path)?;
        let mut folder = String::new();
        for segment in at.key.split('/') {
            if !folder.is_empty() {
                folder.push('/');
            }
            folder.push_str(segment);
            let marker = at.child(format!("{folder}{FOLDER_MARKER}"));
            self.put_empty("mkdir", &marker).await?;
        }
        Ok(())
    }

    async fn rmdir(&self, path: &str) -> Result<(), FsError> {
        let at = self.locate("rmdir", path)?;
        let prefix = at.dir_prefix();
        loop {
            let (keys, next) = self
                .list_page("rmdir", &at, &prefix, None, self.config.list_page_size)
                .await?;
            if keys.is_empty() {
                break;
            }
            self.delete_keys("rmdir", &at, keys.into_iter().map(|(k, _)| k).collect())
                .await?;
            if next.is_none() {
                break;
            }
        }
        self.delete_one("rmdir", &at.marker()).await
    }

    async fn rm(&self, path: &str) -> Result<(), FsError> {
        let at = self.locate("rm", path)?;
        if self.head("rm", &at).await?.is_none() {
            return Err(FsError::NotFound {
                op: "rm",
                location: at.to_string(),
            });
        }
        self.delete_one("rm", &at).await
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
        let object = self
            .client
            .get_object()
            .bucket(&at.bucket)
            .key(&at.key)
            .send()
            .await
            .map_err(|e| sdk_error(op, &at, e))?;
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
            let mut body = object.body.into_async_read();
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
            return Err(backend(op, &shown, "is a directory, not a file"));
        }
        let size = meta.len();
        if size <= self.config.multipart_threshold {
            let body = ByteStream::from_path(local)
                .await
                .map_err(|e| backend(op, &shown, e.to_string()))?;
            self.client
                .put_object()
                .bucket(&at.bucket)
                .key(&at.key)
                .body(body)
                .send()
                .await
                .map_err(|e| sdk_error(op, &at, e))?;
            return Ok(());
        }
        let part_size = part_size(self.config.part_size, size);
        let upload = self.start_upload(op, &at).await?;
        let uploaded = async {
            // Each part streams from its range of the file: at most
            // `concurrency` parts in flight, none held in memory whole.
            let parts: Vec<CompletedPart> = stream::iter(part_ranges(size, part_size))
                .map(|(number, start, end)| {
                    let (at, shown) = (&at, &shown);
                    let upload = &upload;
                    async move {
                        let body = ByteStream::read_from()
                            .path(local)
                            .offset(start)
                            .length(Length::Exact(end - start))
                            .build()
                            .await
                            .map_err(|e| backend(op, shown, e.to_string()))?;
                        let part = self
                            .client
                            .upload_part()
                            .bucket(&at.bucket)
                            .key(&at.key)
                            .upload_id(upload)
                            .part_number(number)
                            .body(body)
                            .send()
                            .await
                            .map_err(|e| sdk_error(op, at, e))?;
                        let etag = part
                            .e_tag()
                            .ok_or_else(|| backend(op, at, "UploadPart returned no ETag"))?;
                        Ok::<_, FsError>(
                            CompletedPart::builder()
                                .part_number(number)
                                .e_tag(etag)
                                .build(),
                        )
                    }
                })
                .buffered(self.config.concurrency)
                .try_collect()
                .await?;
            self.complete_upload(op, &at, &upload, parts).await
        }
        .await;
        self.finish_upload(op, &at, &upload, uploaded).await
    }

    async fn exists(&self, path: &str) -> Result<bool, FsError> {
        let at = self.locate("exists", path)?;
        if self.head("exists", &at).await?.is_some()
            || self.head("exists", &at.marker()).await?.is_some()
        {
            return Ok(true);
        }
        let (keys, _) = self
            .list_page("exists", &at, &at.dir_prefix(), None, 1)
            .await?;
        Ok(!keys.is_empty())
    }
}

/// Log tails for failure messages (`flow_cloud::tail`): `location` is a key
/// or an `s3://` address, as for the filesystem operations.
#[async_trait]
impl RemoteObjects for S3Filesystem {
    async fn size(&self, location: &str) -> Result<Option<u64>, TailError> {
        let at = self
            .locate("tail", location)
            .map_err(|e| tail_error(location, e))?;
        self.head("tail", &at)
            .await
            .map_err(|e| tail_error(location, e))
    }

    async fn read_from(&self, location: &str, offset: u64) -> Result<ObjectStream, TailError> {
        let at = self
            .locate("tail", location)
            .map_err(|e| tail_error(location, e))?;
        let object = self
            .client
            .get_object()
            .bucket(&at.bucket)
            .key(&at.key)
            .range(format!("bytes={offset}-"))
            .send()
            .await
            .map_err(|e| tail_error(location, sdk_error("tail", &at, e)))?;
        Ok(Box::new(object.body.into_async_read()))
    }
}

fn tail_error(location: &str, e: FsError) -> TailError {
    TailError {
        location: location.to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::KeyProblem;

    #[test]
    fn parts_cover_the_object_and_fit_in_10000() {
        let mib = 1024 * 1024;
        assert_eq!(
            part_ranges(11 * mib, 5 * mib),
            [
                (1, 0, 5 * mib),
                (2, 5 * mib, 10 * mib),
                (3, 10 * mib, 11 * mib)
            ]
        );
        assert_eq!(part_size(5 * mib, 100 * 1024 * mib), 10_737_419);
        assert_eq!(part_size(mib, 10 * mib), 5 * mib);
    }

    #[test]
    fn copy_sources_are_percent_encoded_except_slashes() {
        assert_eq!(
            utf8_percent_encode("a b/c_$folder$", COPY_SOURCE).to_string(),
            "a%20b/c_%24folder%24"
        );
    }

    #[test]
    fn refusals_of_addresses_name_the_address() {
        let e = FsError::invalid_key("rm", "s3://b/..", KeyProblem::LeavesRoot);
        assert!(e.to_string().contains("s3://b/.."));
    }
}
