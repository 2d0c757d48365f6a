//! The Blob filesystem against Azurite (started by `cargo xtask test`, strict,
//! with its well-known development account). Each test is `#[ignore]`d so a
//! plain `cargo test` reports it ignored, never passed.

mod common;

use common::{azurite, names, KIB, MIB};
use flow_core::{Filesystem, FsError};
use flow_fs_azure::AzureBlobFilesystemBuilder;
use flow_fs_object::testkit;

/// Small blocks and pages, so the suite's 5 MiB file is a block upload of
/// many blocks and every listing pages.
fn small(b: AzureBlobFilesystemBuilder) -> AzureBlobFilesystemBuilder {
    b.with_single_put_threshold(256 * KIB)
        .with_block_size(256 * KIB)
        .with_list_page_size(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite: run through `cargo xtask test`"]
async fn conformance_on_azurite() {
    let fs = azurite("conformance", small).await;
    testkit::conformance_cleans_up(&fs, "conformance", async |p: &str| names(&fs, p).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite: run through `cargo xtask test`"]
async fn conformance_under_a_prefix_with_default_sizes_on_azurite() {
    let fs = azurite("prefixed", |b| b.with_prefix("team/etl")).await;
    testkit::markers_under_the_prefix_team_etl(&fs, async |p: &str| names(&fs, p).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite: run through `cargo xtask test`"]
async fn prefix_operations_page_past_one_page_on_azurite() {
    let fs = azurite("paging", |b| b.with_list_page_size(10)).await;
    testkit::prefix_operations_page_past_one_page(
        &fs,
        async |p: &str| names(&fs, p).await,
        || fs.requests_made(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite: run through `cargo xtask test`"]
async fn a_file_above_the_threshold_goes_up_in_blocks_then_its_list_on_azurite() {
    let fs = azurite("blocks", |b| {
        b.with_single_put_threshold(256 * KIB)
            .with_block_size(256 * KIB)
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
        4 + 1,
        "4 blocks of at most 256 KiB, then the block list"
    );
    fs.copy_to_local("up/big.bin", &dir.path().join("back"))
        .await
        .unwrap();
    assert!(std::fs::read(dir.path().join("back")).unwrap() == data);

    // At the threshold: one Put Blob.
    std::fs::write(dir.path().join("small"), vec![1u8; (256 * KIB) as usize]).unwrap();
    let before = fs.requests_made();
    fs.copy_from_local(&dir.path().join("small"), "up/small.bin")
        .await
        .unwrap();
    assert_eq!(fs.requests_made() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite: run through `cargo xtask test`"]
async fn a_large_blob_is_copied_by_the_service_not_through_the_client_on_azurite() {
    let fs = azurite("large-copy", |b| b.with_block_size(8 * MIB)).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("big"), &data).unwrap();
    fs.copy_from_local(&dir.path().join("big"), "big/one.bin")
        .await
        .unwrap();
    let before = fs.requests_made();
    fs.cp("big/one.bin", "big/two.bin").await.unwrap();
    let copy_requests = fs.requests_made() - before;
    // One Get Blob Properties and one Copy Blob (and a few polls at most if
    // the service copies asynchronously); 64 MiB through the client would
    // be at least 4 ranged reads and 8 blocks.
    assert!(copy_requests <= 4, "{copy_requests} requests for a copy");
    fs.mv("big/two.bin", "big/three.bin").await.unwrap();
    assert!(!fs.exists("big/two.bin").await.unwrap());
    fs.copy_to_local("big/three.bin", &dir.path().join("back"))
        .await
        .unwrap();
    assert!(std::fs::read(dir.path().join("back")).unwrap() == data);
    fs.rmdir("big").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite: run through `cargo xtask test`"]
async fn addresses_and_errors_name_container_and_key_on_azurite() {
    let fs = azurite("addresses", |b| b).await;
    let other = azurite("addresses-other", |b| b).await;
    let other_container = other.config().container.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"elsewhere").unwrap();
    // The address a Spark job on HDInsight would write.
    let address =
        format!("wasbs://{other_container}@devstoreaccount1.blob.core.windows.net/in/f.txt");
    fs.copy_from_local(&dir.path().join("f"), &address)
        .await
        .unwrap();
    assert!(other.exists("in/f.txt").await.unwrap());
    assert!(!fs.exists("in/f.txt").await.unwrap());
    fs.mv(&format!("az://{other_container}/in/f.txt"), "here.txt")
        .await
        .unwrap();
    assert!(fs.exists("here.txt").await.unwrap());
    assert!(!other.exists("in/f.txt").await.unwrap());
    let elsewhere = fs
        .exists(&format!(
            "abfss://{other_container}@another.dfs.core.windows.net/in/f.txt"
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        elsewhere.contains("storage account `another`"),
        "{elsewhere}"
    );

    let err = fs.rm("no/such.txt").await.unwrap_err();
    assert!(matches!(err, FsError::NotFound { op: "rm", .. }), "{err:?}");
    let container = fs.config().container.clone().unwrap();
    assert!(
        err.to_string()
            .contains(&format!("az://{container}/no/such.txt")),
        "{err}"
    );
    let err = fs
        .copy_to_local("no/such.txt", &dir.path().join("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, FsError::NotFound { .. }), "{err:?}");
    assert!(!dir.path().join("x").exists());
    // A container that does not exist is an error, not "no such blob".
    let err = fs.rm("az://no-such-container/k").await.unwrap_err();
    assert!(matches!(err, FsError::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("ContainerNotFound"), "{err}");
    for key in [
        format!("az://{other_container}/.."),
        format!("az://{other_container}"),
    ] {
        assert!(
            matches!(fs.rmdir(&key).await, Err(FsError::InvalidKey { .. })),
            "{key}"
        );
    }
    // The key never shows.
    assert!(!format!("{fs:?}").contains(common::EMULATOR_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite: run through `cargo xtask test`"]
async fn a_wrong_key_is_refused_with_the_services_code_and_not_retried_on_azurite() {
    let fs = azurite("wrong-key", |b| b).await;
    let wrong = common::builder_with_key("d3Jvbmcta2V5LXdyb25nLWtleQ==")
        .with_container(fs.config().container.clone().unwrap())
        .build()
        .unwrap();
    let err = wrong.exists("anything").await.unwrap_err().to_string();
    assert!(err.contains("HTTP 403"), "{err}");
    assert_eq!(wrong.requests_made(), 1, "a refusal is not retried");
}
