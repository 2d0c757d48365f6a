//! A realistic-size transfer keeps memory bounded: 256 MiB up (blocks of
//! 4 MiB, 4 in flight) and down (ranged reads, streamed) through Azurite,
//! while this process's peak RSS grows by far less than the file. Alone in
//! its own test binary.

mod common;

use common::azurite;
use flow_core::testkit::round_trip_of_256_mib_in_bounded_memory;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Azurite: run through `cargo xtask test`"]
async fn a_256_mib_file_streams_up_and_down_in_bounded_memory_on_azurite() {
    let fs = azurite("memory", |b| b).await;
    let dir = tempfile::tempdir().unwrap();
    round_trip_of_256_mib_in_bounded_memory(&fs, dir.path()).await;
}
