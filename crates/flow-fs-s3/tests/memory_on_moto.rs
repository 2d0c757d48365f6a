//! A realistic-size transfer keeps memory bounded: 256 MiB up and down
//! through moto, while this process's peak RSS grows by far less than the
//! file. Alone in its own test binary so no other test moves the peak.

mod common;

use common::{moto, MIB};
use flow_core::testkit::{peak_rss, write_large_file};
use flow_core::Filesystem;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: run through `cargo xtask test`"]
async fn a_256_mib_file_streams_up_and_down_in_bounded_memory_on_moto() {
    let size = 256 * MIB;
    let fs = moto("memory", |b| {
        b.with_multipart_threshold(8 * MIB)
            .with_part_size(8 * MIB)
            .with_concurrency(4)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    write_large_file(&path, size / MIB);
    let before = peak_rss();
    fs.copy_from_local(&path, "big/file.bin").await.unwrap();
    fs.copy_to_local("big/file.bin", &dir.path().join("back.bin"))
        .await
        .unwrap();
    let grown = peak_rss().saturating_sub(before);
    assert_eq!(
        std::fs::metadata(dir.path().join("back.bin"))
            .unwrap()
            .len(),
        size
    );
    // Four 8 MiB parts in flight would be 32 MiB if they were buffered
    // whole; the file is 256 MiB.
    assert!(
        grown < 64 * MIB,
        "peak RSS grew by {} MiB for a {} MiB file",
        grown / MIB,
        size / MIB
    );
    fs.rmdir("big").await.unwrap();
}
