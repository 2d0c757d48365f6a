//! The GCS filesystem against fake-gcs-server (started by `cargo xtask
//! test`). Each test is `#[ignore]`d so a plain `cargo test` reports it
//! ignored, never passed.

use flow_core::{Filesystem, FsError};
use flow_fs_gcs::{GcsFilesystem, GcsFilesystemBuilder};
use flow_fs_object::testkit;

const KIB: u64 = 1024;

fn endpoint() -> String {
    std::env::var("FLOW_TEST_GCS_ENDPOINT").unwrap_or_else(|_| {
        panic!("FLOW_TEST_GCS_ENDPOINT is not set: run the fake-gcs-server tests through `cargo xtask test`, which starts it")
    })
}

fn bucket_name(test: &str) -> String {
    format!("flow-{test}-{}", std::process::id())
}

/// A filesystem on fake-gcs-server with a bucket of its own.
async fn fake_gcs(
    test: &str,
    configure: impl FnOnce(GcsFilesystemBuilder) -> GcsFilesystemBuilder,
) -> GcsFilesystem {
    let bucket = bucket_name(test);
    let response = reqwest::Client::new()
        .post(format!("{}/storage/v1/b", endpoint()))
        .json(&serde_json::json!({ "name": bucket }))
        .send()
        .await
        .expect("fake-gcs-server answers");
    assert!(
        response.status().is_success(),
        "create bucket {bucket}: {}",
        response.status()
    );
    configure(
        GcsFilesystemBuilder::new()
            .with_endpoint(endpoint())
            .with_bucket(&bucket),
    )
    .build()
    .await
    .expect("the GCS filesystem builds")
}

/// Every object name in the bucket under `prefix`.
async fn names(fs: &GcsFilesystem, prefix: &str) -> Vec<String> {
    let bucket = fs.config().bucket.clone().unwrap();
    let page: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/storage/v1/b/{bucket}/o", endpoint()))
        .query(&[("prefix", prefix)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<String> = page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Small chunks and pages, so the suite's 5 MiB file is a resumable upload
/// of many chunks and every listing pages.
fn small(b: GcsFilesystemBuilder) -> GcsFilesystemBuilder {
    b.with_resumable_threshold(256 * KIB)
        .with_upload_chunk_size(256 * KIB)
        .with_list_page_size(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs fake-gcs-server: run through `cargo xtask test`"]
async fn conformance_on_fake_gcs() {
    let fs = fake_gcs("conformance", small).await;
    testkit::conformance_cleans_up(&fs, "conformance", async |p: &str| names(&fs, p).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs fake-gcs-server: run through `cargo xtask test`"]
async fn conformance_under_a_prefix_with_default_sizes_on_fake_gcs() {
    let fs = fake_gcs("prefixed", |b| b.with_prefix("team/etl")).await;
    testkit::markers_under_the_prefix_team_etl(&fs, async |p: &str| names(&fs, p).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs fake-gcs-server: run through `cargo xtask test`"]
async fn prefix_operations_page_past_one_page_on_fake_gcs() {
    let fs = fake_gcs("paging", |b| b.with_list_page_size(10)).await;
    testkit::prefix_operations_page_past_one_page(
        &fs,
        async |p: &str| names(&fs, p).await,
        || fs.requests_made(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs fake-gcs-server: run through `cargo xtask test`"]
async fn a_file_above_the_chunk_size_goes_up_in_resumable_chunks_on_fake_gcs() {
    let fs = fake_gcs("resumable", |b| {
        b.with_resumable_threshold(256 * KIB)
            .with_upload_chunk_size(256 * KIB)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..(3 * 256 * KIB + 1000))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(dir.path().join("big"), &data).unwrap();
    let before = fs.requests_made();
    fs.copy_from_local(&dir.path().join("big"), "up/big.bin")
        .await
        .unwrap();
    assert_eq!(
        fs.requests_made() - before,
        1 + 4,
        "one request to start the session, then 4 chunks of at most 256 KiB"
    );
    fs.copy_to_local("up/big.bin", &dir.path().join("back"))
        .await
        .unwrap();
    assert!(std::fs::read(dir.path().join("back")).unwrap() == data);

    // At the threshold: one simple upload.
    std::fs::write(dir.path().join("small"), vec![1u8; (256 * KIB) as usize]).unwrap();
    let before = fs.requests_made();
    fs.copy_from_local(&dir.path().join("small"), "up/small.bin")
        .await
        .unwrap();
    assert_eq!(fs.requests_made() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs fake-gcs-server: run through `cargo xtask test`"]
async fn addresses_and_errors_name_bucket_and_key_on_fake_gcs() {
    let fs = fake_gcs("addresses", |b| b).await;
    let other = fake_gcs("addresses-other", |b| b).await;
    let other_bucket = other.config().bucket.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"elsewhere").unwrap();
    let address = format!("gs://{other_bucket}/in/f.txt");
    fs.copy_from_local(&dir.path().join("f"), &address)
        .await
        .unwrap();
    assert!(other.exists("in/f.txt").await.unwrap());
    assert!(!fs.exists("in/f.txt").await.unwrap());
    fs.mv(&address, "here.txt").await.unwrap();
    assert!(fs.exists("here.txt").await.unwrap());
    assert!(!other.exists("in/f.txt").await.unwrap());

    let err = fs.rm("no/such.txt").await.unwrap_err();
    assert!(matches!(err, FsError::NotFound { op: "rm", .. }), "{err:?}");
    let bucket = fs.config().bucket.clone().unwrap();
    assert!(
        err.to_string()
            .contains(&format!("gs://{bucket}/no/such.txt")),
        "{err}"
    );
    let err = fs
        .copy_to_local("no/such.txt", &dir.path().join("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, FsError::NotFound { .. }), "{err:?}");
    assert!(!dir.path().join("x").exists());
    for key in [
        format!("gs://{other_bucket}/.."),
        format!("gs://{other_bucket}"),
    ] {
        assert!(
            matches!(fs.rmdir(&key).await, Err(FsError::InvalidKey { .. })),
            "{key}"
        );
    }
    // No credential is sent to an emulator, and Debug says so.
    assert!(format!("{fs:?}").contains("none (emulator)"));
}
