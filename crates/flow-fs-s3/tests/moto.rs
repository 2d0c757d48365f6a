//! The S3 filesystem against moto (started by `cargo xtask test`). Each test
//! is `#[ignore]`d so a plain `cargo test` reports it ignored, never passed.

mod common;

use common::{keys, moto, pattern, MIB};
use flow_cloud::{tail, Clock, TailOptions, TokioClock};
use flow_core::testkit::filesystem_conformance;
use flow_core::{Filesystem, FsError, KeyProblem};
use flow_fs_object::testkit;
use futures_util::{stream, StreamExt};
use std::sync::Arc;
use std::time::Duration;

/// Thresholds small enough that the suite's 5 MiB file is uploaded in parts
/// and copied with UploadPartCopy.
fn small_parts(b: flow_fs_s3::S3FilesystemBuilder) -> flow_fs_s3::S3FilesystemBuilder {
    b.with_multipart_threshold(5 * MIB)
        .with_part_size(5 * MIB)
        .with_copy_threshold(5 * MIB)
        .with_copy_part_size(5 * MIB)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: run through `cargo xtask test`"]
async fn conformance_on_moto() {
    let fs = moto("conformance", small_parts).await;
    let bucket = fs.config().bucket.clone().unwrap();
    testkit::conformance_cleans_up(&fs, "conformance", async |p: &str| {
        keys(&fs, &bucket, p).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: run through `cargo xtask test`"]
async fn conformance_under_a_prefix_on_moto() {
    let fs = moto("prefixed", |b| small_parts(b).with_prefix("team/./etl/")).await;
    let scratch = tempfile::tempdir().unwrap();
    filesystem_conformance(&fs, scratch.path(), "suite").await;
    // Everything happened under the prefix; `..` never left it.
    fs.mkdir("x/y").await.unwrap();
    let bucket = fs.config().bucket.clone().unwrap();
    let all = keys(&fs, &bucket, "").await;
    assert!(all.iter().all(|k| k.starts_with("team")), "{all:?}");
    assert!(
        all.contains(&"team/etl/x/y_$folder$".to_string()),
        "{all:?}"
    );
    let err = fs.rmdir("x/../..").await.unwrap_err();
    assert!(
        matches!(
            err,
            FsError::InvalidKey {
                problem: KeyProblem::LeavesRoot,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: run through `cargo xtask test`"]
async fn mkdir_writes_hadoop_folder_markers_on_moto() {
    let fs = moto("markers", |b| b).await;
    let bucket = fs.config().bucket.clone().unwrap();
    fs.mkdir("a/b/c").await.unwrap();
    assert_eq!(
        keys(&fs, &bucket, "").await,
        ["a/b/c_$folder$", "a/b_$folder$", "a_$folder$"]
    );
    assert!(fs.exists("a/b").await.unwrap(), "a marker counts");
    assert!(!fs.exists("a/b/c/d").await.unwrap());
    // A prefix without a marker counts too (written by another tool).
    fs.client()
        .put_object()
        .bucket(&bucket)
        .key("raw/2026/part-0000")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    assert!(fs.exists("raw").await.unwrap());
    assert!(fs.exists("raw/2026").await.unwrap());
    assert!(
        !fs.exists("ra").await.unwrap(),
        "a string prefix is not a folder"
    );
    fs.rmdir("a").await.unwrap();
    assert_eq!(keys(&fs, &bucket, "a").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: run through `cargo xtask test`"]
async fn prefixes_of_more_than_1000_keys_page_and_batch_on_moto() {
    let fs = moto("paging", |b| b).await;
    let bucket = fs.config().bucket.clone().unwrap();
    let count = 1_005;
    stream::iter(0..count)
        .map(|i| {
            let fs = fs.clone();
            let bucket = bucket.clone();
            async move {
                fs.client()
                    .put_object()
                    .bucket(&bucket)
                    .key(format!("many/part-{i:05}"))
                    .body(aws_sdk_s3::primitives::ByteStream::from(
                        format!("{i}").into_bytes(),
                    ))
                    .send()
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    assert_eq!(keys(&fs, &bucket, "many/").await.len(), count);

    fs.cp("many", "copied").await.unwrap();
    let copied = keys(&fs, &bucket, "copied/").await;
    assert_eq!(copied.len(), count, "cp pages past the first 1,000 keys");
    assert_eq!(copied.last().unwrap(), "copied/part-01004");

    fs.mv("copied", "moved").await.unwrap();
    assert_eq!(keys(&fs, &bucket, "moved/").await.len(), count);
    assert_eq!(
        keys(&fs, &bucket, "copied/").await.len(),
        0,
        "mv removes every source"
    );

    fs.rmdir("many").await.unwrap();
    fs.rmdir("moved").await.unwrap();
    assert_eq!(keys(&fs, &bucket, "").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: run through `cargo xtask test`"]
async fn large_objects_go_multipart_and_copy_with_upload_part_copy_on_moto() {
    let fs = moto("multipart", small_parts).await;
    let bucket = fs.config().bucket.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = pattern((11 * MIB) as usize + 17, 7);
    std::fs::write(dir.path().join("big"), &data).unwrap();
    fs.copy_from_local(&dir.path().join("big"), "big/source.bin")
        .await
        .unwrap();
    let etag = |key: &'static str| {
        let fs = fs.clone();
        let bucket = bucket.clone();
        async move {
            let head = fs
                .client()
                .head_object()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            head.e_tag()
                .unwrap_or_default()
                .trim_matches('"')
                .to_string()
        }
    };
    // A multipart object's ETag ends with its number of parts.
    assert!(
        etag("big/source.bin").await.ends_with("-3"),
        "uploaded in 3 parts"
    );

    fs.cp("big/source.bin", "big/copy.bin").await.unwrap();
    assert!(
        etag("big/copy.bin").await.ends_with("-3"),
        "copied server-side in 3 UploadPartCopy parts"
    );
    fs.copy_to_local("big/copy.bin", &dir.path().join("back"))
        .await
        .unwrap();
    assert!(
        std::fs::read(dir.path().join("back")).unwrap() == data,
        "same bytes"
    );

    // Below the threshold: one CopyObject, one PutObject.
    std::fs::write(dir.path().join("small"), b"small").unwrap();
    fs.copy_from_local(&dir.path().join("small"), "big/small.txt")
        .await
        .unwrap();
    fs.cp("big/small.txt", "big/small-copy.txt").await.unwrap();
    assert!(!etag("big/small-copy.txt").await.contains('-'));
    fs.rmdir("big").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: run through `cargo xtask test`"]
async fn addresses_name_other_buckets_and_errors_name_bucket_and_key_on_moto() {
    let fs = moto("addresses", |b| b).await;
    let other = common::bucket_name("addresses-other");
    common::create_bucket(&fs, &other).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"in another bucket").unwrap();
    let address = format!("s3://{other}/data/f.txt");
    fs.copy_from_local(&dir.path().join("f"), &address)
        .await
        .unwrap();
    assert!(fs.exists(&address).await.unwrap());
    assert!(
        !fs.exists("data/f.txt").await.unwrap(),
        "not in the default bucket"
    );
    fs.cp(&address, "local-copy.txt").await.unwrap();
    assert!(fs.exists("local-copy.txt").await.unwrap());
    fs.mv(&address, &format!("s3a://{other}/moved/f.txt"))
        .await
        .unwrap();
    assert!(!fs.exists(&address).await.unwrap());

    let err = fs
        .rm(&format!("s3://{other}/no/such.txt"))
        .await
        .unwrap_err();
    assert!(matches!(err, FsError::NotFound { op: "rm", .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("s3://{other}/no/such.txt")),
        "{err}"
    );
    let err = fs.cp("no/such/thing", "x").await.unwrap_err();
    assert!(err.to_string().contains("no/such/thing"), "{err}");

    for key in [
        format!("s3://{other}/.."),
        format!("s3://{other}/"),
        format!("s3://{other}/a/../.."),
    ] {
        let err = fs.rmdir(&key).await.unwrap_err();
        assert!(
            matches!(&err, FsError::InvalidKey { key: k, .. } if *k == key),
            "{err:?}"
        );
    }
    let err = fs.mv("local-copy.txt", "local-copy.txt").await.unwrap_err();
    assert!(err.to_string().contains("same object"), "{err}");
    let err = fs.cp("local-copy.txt", "local-copy.txt/inside").await;
    assert!(
        err.is_ok(),
        "an object copied under its own name as a prefix is fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: run through `cargo xtask test`"]
async fn the_tail_of_a_gzip_log_on_moto() {
    use async_compression::tokio::bufread::GzipEncoder;
    use tokio::io::AsyncReadExt;
    let fs = moto("tail", |b| b).await;
    let text: String = (0..5000).map(|i| format!("stderr line {i}\n")).collect();
    let mut gz = Vec::new();
    GzipEncoder::new(text.as_bytes())
        .read_to_end(&mut gz)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stderr.gz"), &gz).unwrap();
    std::fs::write(dir.path().join("stdout"), text.as_bytes()).unwrap();
    fs.copy_from_local(
        &dir.path().join("stderr.gz"),
        "logs/j-1/steps/s-1/stderr.gz",
    )
    .await
    .unwrap();
    fs.copy_from_local(&dir.path().join("stdout"), "logs/j-1/steps/s-1/stdout")
        .await
        .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let options = TailOptions {
        max_bytes: 200,
        wait: Duration::ZERO,
        interval: Duration::from_secs(1),
    };
    for log in ["logs/j-1/steps/s-1/stderr.gz", "logs/j-1/steps/s-1/stdout"] {
        let got = tail(&fs, log, &options, &clock).await.unwrap().unwrap();
        assert!(got.truncated, "{log}");
        assert!(
            got.text.ends_with("stderr line 4999\n"),
            "{log}: {:?}",
            got.text
        );
        assert!(got.text.starts_with("stderr line"), "{log}: {:?}", got.text);
    }
    assert_eq!(
        tail(&fs, "logs/j-1/steps/s-1/controller.gz", &options, &clock)
            .await
            .unwrap(),
        None
    );
}
