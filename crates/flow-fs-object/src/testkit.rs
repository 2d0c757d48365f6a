//! The object stores' own contracts (feature `testkit`), which each
//! backend's tests run on its emulator beside
//! [`flow_core::testkit::filesystem_conformance`]: what the shared
//! operations leave in the store (markers, nothing after a clean-up) and
//! that prefix operations page. `names` reads the store's keys under a
//! plain prefix, sorted, beside the filesystem under test (the emulator's
//! own API where the test has one).
//!
//! This is test code: it panics rather than returning errors.

use crate::{ObjectBackend, ObjectFilesystem};
use flow_core::testkit::filesystem_conformance;
use flow_core::Filesystem;

/// The conformance suite under `prefix`, then no key of the store left
/// under it (folder markers included).
pub async fn conformance_cleans_up<B: ObjectBackend>(
    fs: &ObjectFilesystem<B>,
    prefix: &str,
    names: impl AsyncFn(&str) -> Vec<String>,
) {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    filesystem_conformance(fs, scratch.path(), prefix).await;
    assert_eq!(
        names(prefix).await,
        Vec::<String>::new(),
        "the suite cleaned up"
    );
}

/// On a filesystem under the prefix `team/etl`: the conformance suite,
/// then `mkdir x/y` writes the marker of every folder along the path,
/// the prefix's own included, and nothing else is left in the store.
pub async fn markers_under_the_prefix_team_etl<B: ObjectBackend>(
    fs: &ObjectFilesystem<B>,
    names: impl AsyncFn(&str) -> Vec<String>,
) {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    filesystem_conformance(fs, scratch.path(), "suite").await;
    fs.mkdir("x/y").await.unwrap();
    assert_eq!(
        names("").await,
        [
            "team/etl/x/y_$folder$",
            "team/etl/x_$folder$",
            "team/etl_$folder$",
            "team_$folder$"
        ]
    );
}

/// On a filesystem listing 10 keys a page: `exists`, `cp`, `list_prefix`,
/// `mv` and `rmdir` of a prefix of 35 objects go past the first page, at
/// least one request a page and one a copied object (`requests` reads the
/// store's request counter); the store is empty at the end.
pub async fn prefix_operations_page_past_one_page<B: ObjectBackend>(
    fs: &ObjectFilesystem<B>,
    names: impl AsyncFn(&str) -> Vec<String>,
    requests: impl Fn() -> u64,
) {
    let dir = tempfile::tempdir().expect("a scratch directory");
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let count = 35;
    for i in 0..count {
        fs.copy_from_local(&dir.path().join("f"), &format!("many/part-{i:03}"))
            .await
            .unwrap();
    }
    let before = requests();
    assert!(fs.exists("many").await.unwrap());
    fs.cp("many", "copied").await.unwrap();
    let copied = names("copied/").await;
    assert_eq!(copied.len(), count, "cp went past the first page of 10");
    // The existence checks, then at least 4 listings of 10 and a copy per
    // object; never one listing for everything.
    assert!(requests() - before >= 4 + count as u64);
    let listed = fs.list_prefix("copied/").await.unwrap();
    assert_eq!(listed.len(), count);
    fs.mv("copied", "moved").await.unwrap();
    assert_eq!(names("moved/").await.len(), count);
    assert_eq!(names("copied/").await.len(), 0);
    fs.rmdir("many").await.unwrap();
    fs.rmdir("moved").await.unwrap();
    assert_eq!(names("").await, Vec::<String>::new());
}
