//! [`S3Backend`]: the object primitives of `flow_fs_object` on S3 through
//! `aws-sdk-s3`, with S3's multipart uploads and `UploadPartCopy`.

use crate::config::{S3Config, MAX_PART, MIN_PART};
use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use bytes::Bytes;
use flow_cloud::tail::ObjectStream;
use flow_core::FsError;
use flow_fs_object::{
    backend_error, fit_part_size, store_error, ListPage, ObjectBackend, ObjectInfo, ObjectLocation,
};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::fmt;
use std::future::Future;
use std::path::Path;

/// S3 allows at most this many parts per upload.
const MAX_PARTS: u64 = 10_000;

/// Characters of a key kept as they are in `x-amz-copy-source`.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The S3 primitives: the SDK client and the settings. Cheap to clone (the
/// SDK client is shared).
#[derive(Clone)]
pub struct S3Backend {
    client: Client,
    config: S3Config,
}

impl fmt::Debug for S3Backend {
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
    let missing = not_found && e.code() != Some("NoSuchBucket");
    store_error(op, location, missing, crate::aws::sdk_error_text(&e))
}

impl S3Backend {
    pub(crate) fn new(client: Client, config: S3Config) -> Self {
        S3Backend { client, config }
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

    async fn start_upload(&self, op: &'static str, to: &ObjectLocation) -> Result<String, FsError> {
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
            .ok_or_else(|| backend_error(op, to, "CreateMultipartUpload returned no upload id"))
    }

    /// A multipart upload of `size` bytes to `to` in parts of about
    /// `part_size`: `part(upload id, part number, start, end)` sends one part
    /// (bytes `start..end`) and answers its ETag; at most `concurrency`
    /// parts are in flight. On failure the upload is aborted, so no parts
    /// are left billed.
    async fn multipart<F, Fut>(
        &self,
        op: &'static str,
        to: &ObjectLocation,
        size: u64,
        part_size: u64,
        part: F,
    ) -> Result<(), FsError>
    where
        F: Fn(String, i32, u64, u64) -> Fut,
        Fut: Future<Output = Result<String, FsError>>,
    {
        let upload = self.start_upload(op, to).await?;
        let sent = async {
            let parts: Vec<CompletedPart> = stream::iter(part_ranges(size, part_size))
                .map(|(number, start, end)| {
                    let etag = part(upload.clone(), number, start, end);
                    async move {
                        Ok::<_, FsError>(
                            CompletedPart::builder()
                                .part_number(number)
                                .e_tag(etag.await?)
                                .build(),
                        )
                    }
                })
                .buffered(self.config.concurrency)
                .try_collect()
                .await?;
            self.client
                .complete_multipart_upload()
                .bucket(&to.bucket)
                .key(&to.key)
                .upload_id(&upload)
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
        .await;
        if sent.is_err() {
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&to.bucket)
                .key(&to.key)
                .upload_id(&upload)
                .send()
                .await
            {
                tracing::warn!(op, location = %to, "cannot abort the multipart upload: {}", crate::aws::sdk_error_text(&e));
            }
        }
        sent
    }

    /// A single `PutObject` of a small file, or a multipart upload whose
    /// parts stream from their ranges of the file.
    async fn upload(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        local: &Path,
        size: u64,
    ) -> Result<(), FsError> {
        let shown = local.display().to_string();
        if size <= self.config.multipart_threshold {
            let body = ByteStream::from_path(local)
                .await
                .map_err(|e| backend_error(op, &shown, e))?;
            self.client
                .put_object()
                .bucket(&at.bucket)
                .key(&at.key)
                .body(body)
                .send()
                .await
                .map_err(|e| sdk_error(op, at, e))?;
            return Ok(());
        }
        let part_size = part_size(self.config.part_size, size);
        // Each part streams from its range of the file: none is held in
        // memory whole.
        self.multipart(op, at, size, part_size, |upload, number, start, end| {
            let shown = &shown;
            async move {
                let body = ByteStream::read_from()
                    .path(local)
                    .offset(start)
                    .length(Length::Exact(end - start))
                    .build()
                    .await
                    .map_err(|e| backend_error(op, shown, e))?;
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
                part.e_tag()
                    .map(str::to_string)
                    .ok_or_else(|| backend_error(op, at, "UploadPart returned no ETag"))
            }
        })
        .await
    }
}

#[async_trait]
impl ObjectBackend for S3Backend {
    fn schemes(&self) -> &'static [&'static str] {
        &["s3", "s3a", "s3n"]
    }

    async fn head(&self, op: &'static str, at: &ObjectLocation) -> Result<u64, FsError> {
        let head = self
            .client
            .head_object()
            .bucket(&at.bucket)
            .key(&at.key)
            .send()
            .await
            .map_err(|e| sdk_error(op, at, e))?;
        Ok(head.content_length().unwrap_or(0).max(0) as u64)
    }

    async fn list_page(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        prefix: &str,
        token: Option<String>,
        max: u32,
    ) -> Result<ListPage, FsError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&at.bucket)
            .prefix(prefix)
            .max_keys(max as i32)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| sdk_error(op, at, e))?;
        let objects = page
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                })
            })
            .collect();
        let next = if page.is_truncated().unwrap_or(false) {
            page.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok(ListPage { objects, next })
    }

    async fn put(&self, op: &'static str, at: &ObjectLocation, body: Bytes) -> Result<(), FsError> {
        self.client
            .put_object()
            .bucket(&at.bucket)
            .key(&at.key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| sdk_error(op, at, e))?;
        Ok(())
    }

    async fn upload_file(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        local: &Path,
        size: u64,
    ) -> Result<(), FsError> {
        self.upload(op, at, local, size).await
    }

    async fn get(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        offset: u64,
    ) -> Result<ObjectStream, FsError> {
        let request = self.client.get_object().bucket(&at.bucket).key(&at.key);
        let request = if offset > 0 {
            request.range(format!("bytes={offset}-"))
        } else {
            request
        };
        let object = request.send().await.map_err(|e| sdk_error(op, at, e))?;
        Ok(Box::new(object.body.into_async_read()))
    }

    async fn delete(&self, op: &'static str, at: &ObjectLocation) -> Result<(), FsError> {
        self.client
            .delete_object()
            .bucket(&at.bucket)
            .key(&at.key)
            .send()
            .await
            .map_err(|e| sdk_error(op, at, e))?;
        Ok(())
    }

    /// Deletes `keys` of `at.bucket` with `DeleteObjects`, in batches of
    /// [`S3Config::delete_batch`] (one request each, one after the other).
    async fn delete_many(
        &self,
        op: &'static str,
        at: &ObjectLocation,
        keys: Vec<String>,
        _concurrency: usize,
    ) -> Result<(), FsError> {
        for batch in keys.chunks(self.config.delete_batch) {
            let objects = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| backend_error(op, at, e))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| backend_error(op, at, e))?;
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
                return Err(backend_error(
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
    async fn copy(
        &self,
        op: &'static str,
        from: &ObjectLocation,
        to: &ObjectLocation,
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
        self.multipart(op, to, size, part_size, |upload, number, start, end| {
            let (source, shown) = (&source, &shown);
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
                part.copy_part_result()
                    .and_then(|r| r.e_tag())
                    .map(str::to_string)
                    .ok_or_else(|| backend_error(op, shown, "UploadPartCopy returned no ETag"))
            }
        })
        .await
    }
}

/// A part size that fits `size` into S3's 10,000 parts.
fn part_size(configured: u64, size: u64) -> u64 {
    fit_part_size(configured, size, MAX_PARTS).clamp(MIN_PART, MAX_PART)
}

/// `(part number, start, end)` of each part, end exclusive; S3 numbers
/// parts from 1.
fn part_ranges(size: u64, part_size: u64) -> Vec<(i32, u64, u64)> {
    flow_fs_object::part_ranges(size, part_size)
        .map(|(n, start, end)| ((n + 1) as i32, start, end))
        .collect()
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
