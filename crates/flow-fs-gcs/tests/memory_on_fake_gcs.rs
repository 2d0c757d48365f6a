//! A realistic-size transfer keeps memory bounded: 256 MiB up (resumable,
//! 8 MiB chunks) and down through fake-gcs-server, while this process's peak
//! RSS grows by far less than the file. Alone in its own test binary.

use flow_core::testkit::round_trip_of_256_mib_in_bounded_memory;
use flow_fs_gcs::GcsFilesystemBuilder;

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs fake-gcs-server: run through `cargo xtask test`"]
async fn a_256_mib_file_streams_up_and_down_in_bounded_memory_on_fake_gcs() {
    let endpoint = std::env::var("FLOW_TEST_GCS_ENDPOINT").unwrap_or_else(|_| {
        panic!("FLOW_TEST_GCS_ENDPOINT is not set: run through `cargo xtask test`")
    });
    let bucket = format!("flow-memory-{}", std::process::id());
    let created = reqwest::Client::new()
        .post(format!("{endpoint}/storage/v1/b"))
        .json(&serde_json::json!({ "name": bucket }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let fs = GcsFilesystemBuilder::new()
        .with_endpoint(&endpoint)
        .with_bucket(&bucket)
        .with_upload_chunk_size(8 * MIB)
        .build()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    round_trip_of_256_mib_in_bounded_memory(&fs, dir.path()).await;
}
