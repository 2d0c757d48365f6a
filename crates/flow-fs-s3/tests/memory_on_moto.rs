//! A realistic-size transfer keeps memory bounded: 256 MiB up and down
//! through moto, while this process's peak RSS grows by far less than the
//! file. Alone in its own test binary so no other test moves the peak.

mod common;

use common::{moto, MIB};
use flow_core::testkit::round_trip_of_256_mib_in_bounded_memory;

/// Four 8 MiB parts in flight would be 32 MiB if they were buffered whole;
/// the file is 256 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto: run through `cargo xtask test`"]
async fn a_256_mib_file_streams_up_and_down_in_bounded_memory_on_moto() {
    let fs = moto("memory", |b| {
        b.with_multipart_threshold(8 * MIB)
            .with_part_size(8 * MIB)
            .with_concurrency(4)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    round_trip_of_256_mib_in_bounded_memory(&fs, dir.path()).await;
}
