//! Conformance suites that every backend runs in its own tests (feature
//! `testkit`).
//!
//! The traits say what an operation means in a sentence; these suites pin
//! that down, so the local filesystem and the object stores agree on the
//! details users notice: parents are created, removals are idempotent where
//! the trait says so, a prefix `tree` never touches its sibling `tree-2`, an
//! upload replaces the whole object, and every operation refuses a key that
//! leaves the backend's root or names the root itself (`x/..`, `../root`,
//! `/..`, empty, `PREFIX/..`), on both sides of `cp`/`mv`, without touching
//! anything. Each check panics with a message naming the operation and the
//! key.
//!
//! This is test code: it writes its local files with `std::fs` and panics
//! rather than returning errors.

pub mod meter;
pub mod store;

use crate::filesystem::{Filesystem, FsError, KeyProblem};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The environment variable naming the in-test checks a run allows to skip
/// (comma-separated; `cargo xtask test --allow-skip CHECK` sets it).
pub const ALLOW_SKIP_ENV: &str = "FLOW_TEST_ALLOW_SKIP";

/// A check the backend under test cannot take. A skipped check must never
/// pass silently: this panics (the test fails, naming the check and why)
/// unless [`ALLOW_SKIP_ENV`] names `check`; then it prints a `SKIPPED` line
/// and the caller leaves the check out.
pub fn skip_check(check: &str, why: &str) {
    let allowed = std::env::var(ALLOW_SKIP_ENV).unwrap_or_default();
    if allowed.split(',').any(|name| name.trim() == check) {
        eprintln!("SKIPPED (allowed by {ALLOW_SKIP_ENV}): {check}: {why}");
    } else {
        panic!(
            "the check {check} cannot run: {why} (a partial run may allow it: \
             `cargo xtask test --allow-skip {check}`, or {ALLOW_SKIP_ENV}={check})"
        );
    }
}

/// Five MiB and an odd tail, so no buffer size divides it.
const BIG_FILE_LEN: usize = 5 * 1024 * 1024 + 4099;

/// Runs the filesystem conformance suite on `fs`, under the key `prefix`.
///
/// `prefix` is owned by the suite: whatever is under it is removed first and
/// at the end. `scratch_local_dir` is a local directory for the files it
/// uploads and downloads (created if missing).
pub async fn filesystem_conformance(fs: &dyn Filesystem, scratch_local_dir: &Path, prefix: &str) {
    let base = prefix.trim_end_matches('/');
    assert!(
        !base.trim_start_matches('/').is_empty(),
        "filesystem_conformance needs a non-empty prefix, got {prefix:?}: it deletes everything under it"
    );
    std::fs::create_dir_all(scratch_local_dir).unwrap_or_else(|e| {
        panic!(
            "cannot create the scratch directory {}: {e}",
            scratch_local_dir.display()
        )
    });
    let suite = Suite {
        fs,
        scratch: scratch_local_dir.to_path_buf(),
        base: base.to_string(),
        counter: AtomicUsize::new(0),
    };
    ok("rmdir (clean start)", base, suite.fs.rmdir(base).await);

    suite.mkdir_and_exists().await;
    suite.keys_are_normalized().await;
    suite.escaping_keys_are_refused().await;
    let big = suite.round_trip().await;
    suite.copy_to_local_of_missing_object().await;
    suite.single_object_cp_and_mv(&big).await;
    suite.tree_cp_and_mv().await;
    suite.rm().await;
    suite.rmdir().await;

    ok("rmdir (clean up)", base, suite.fs.rmdir(base).await);
    suite
        .expect_exists("", false, "after rmdir of the whole prefix")
        .await;
}

struct Suite<'a> {
    fs: &'a dyn Filesystem,
    scratch: PathBuf,
    base: String,
    counter: AtomicUsize,
}

impl Suite<'_> {
    /// The full key of `rel` under the suite's prefix.
    fn key(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{rel}", self.base)
        }
    }

    fn scratch_path(&self, name: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.scratch.join(format!("{n}-{name}"))
    }

    async fn exists(&self, rel: &str) -> bool {
        let key = self.key(rel);
        ok("exists", &key, self.fs.exists(&key).await)
    }

    async fn expect_exists(&self, rel: &str, expected: bool, when: &str) {
        let key = self.key(rel);
        let found = self.exists(rel).await;
        assert_eq!(
            found, expected,
            "exists({key:?}) {when}: expected {expected}, got {found}"
        );
    }

    /// Writes `bytes` to a local file and uploads it to `rel`.
    async fn upload(&self, rel: &str, bytes: &[u8]) {
        let local = self.scratch_path("upload");
        std::fs::write(&local, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", local.display()));
        let key = self.key(rel);
        ok(
            "copy_from_local",
            &format!("{} -> {key}", local.display()),
            self.fs.copy_from_local(&local, &key).await,
        );
    }

    /// Downloads `rel` into a local file under directories that do not exist
    /// yet (copy_to_local creates them) and returns its bytes.
    async fn download(&self, rel: &str) -> Vec<u8> {
        let local = self.scratch_path("download").join("nested/dirs/file");
        let key = self.key(rel);
        ok(
            "copy_to_local",
            &format!("{key} -> {}", local.display()),
            self.fs.copy_to_local(&key, &local).await,
        );
        std::fs::read(&local).unwrap_or_else(|e| {
            panic!(
                "copy_to_local({key:?}) succeeded but {} cannot be read: {e}",
                local.display()
            )
        })
    }

    async fn expect_content(&self, rel: &str, expected: &[u8], when: &str) {
        let actual = self.download(rel).await;
        assert_same_bytes(&format!("{} {when}", self.key(rel)), expected, &actual);
    }

    async fn mkdir_and_exists(&self) {
        self.expect_exists("dir", false, "before mkdir").await;
        let deep = self.key("dir/a/b/c");
        ok("mkdir", &deep, self.fs.mkdir(&deep).await);
        self.expect_exists("dir/a/b/c", true, "after mkdir").await;
        self.expect_exists("dir/a", true, "after mkdir of dir/a/b/c (parents)")
            .await;
        ok("mkdir (again)", &deep, self.fs.mkdir(&deep).await);
        let parent = self.key("dir/a");
        ok(
            "mkdir (existing parent)",
            &parent,
            self.fs.mkdir(&parent).await,
        );
        self.expect_exists("dir/a/b/c", true, "after a second mkdir")
            .await;

        self.expect_exists("missing.txt", false, "for an object never written")
            .await;
        self.expect_exists("nowhere/missing.txt", false, "under a missing prefix")
            .await;
        self.upload("dir/a/file.txt", b"a file").await;
        self.expect_exists("dir/a/file.txt", true, "for a file")
            .await;
    }

    /// `.`, `..` and repeated slashes inside the prefix resolve lexically.
    async fn keys_are_normalized(&self) {
        self.upload("norm/a/../b.txt", b"b").await;
        self.expect_exists("norm/b.txt", true, "after an upload to norm/a/../b.txt")
            .await;
        self.upload("norm//./c.txt", b"c").await;
        self.expect_content("norm/c.txt", b"c", "after an upload to norm//./c.txt")
            .await;
        let weird = self.key("norm/x/../d");
        ok("mkdir", &weird, self.fs.mkdir(&weird).await);
        self.expect_exists("norm/d", true, "after mkdir of norm/x/../d")
            .await;
        let whole = self.key("norm/./");
        ok("rmdir", &whole, self.fs.rmdir(&whole).await);
        self.expect_exists("norm/c.txt", false, "after rmdir of norm/./")
            .await;
    }

    /// Every operation refuses keys that leave the root or name it, on both
    /// sides of cp and mv, and changes nothing.
    async fn escaping_keys_are_refused(&self) {
        self.upload("canary/keep.txt", b"keep").await;
        let canary = self.key("canary/keep.txt");
        let target = self.key("canary/never-written.txt");
        let local_source = self.scratch_path("escape-source");
        std::fs::write(&local_source, b"must not be uploaded")
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", local_source.display()));
        let local_target = self.scratch_path("escape-target");

        let escapes = [
            "x/..".to_string(),
            "../root".to_string(),
            "/..".to_string(),
            String::new(),
            ".".to_string(),
            "/".to_string(),
            format!("{}/..", self.base),
            format!("{}/../..", self.base),
            format!("{}/x/../../../y", self.base),
        ];
        for key in &escapes {
            let k = key.as_str();
            expect_refused("mkdir", k, self.fs.mkdir(k).await);
            expect_refused("rmdir", k, self.fs.rmdir(k).await);
            expect_refused("rm", k, self.fs.rm(k).await);
            expect_refused("exists", k, self.fs.exists(k).await);
            expect_refused("cp", k, self.fs.cp(k, &target).await);
            expect_refused("cp", k, self.fs.cp(&canary, k).await);
            expect_refused("mv", k, self.fs.mv(k, &target).await);
            expect_refused("mv", k, self.fs.mv(&canary, k).await);
            expect_refused(
                "copy_to_local",
                k,
                self.fs.copy_to_local(k, &local_target).await,
            );
            expect_refused(
                "copy_from_local",
                k,
                self.fs.copy_from_local(&local_source, k).await,
            );
        }
        self.expect_content("canary/keep.txt", b"keep", "after the refused keys")
            .await;
        self.expect_exists(
            "canary/never-written.txt",
            false,
            "after cp/mv from refused keys",
        )
        .await;
        assert!(
            !local_target.exists(),
            "copy_to_local of a refused key created {}",
            local_target.display()
        );
    }

    /// A multi-megabyte upload and download, byte for byte, and an upload
    /// that replaces a longer object. Returns the big file's bytes.
    async fn round_trip(&self) -> Vec<u8> {
        let big = pattern(BIG_FILE_LEN);
        self.upload("data/big.bin", &big).await;
        self.expect_exists("data/big.bin", true, "after copy_from_local")
            .await;
        self.expect_content("data/big.bin", &big, "after a round trip")
            .await;

        self.upload("data/replaced.txt", b"the first version, which is longer")
            .await;
        self.upload("data/replaced.txt", b"second").await;
        self.expect_content("data/replaced.txt", b"second", "after being replaced")
            .await;
        big
    }

    async fn copy_to_local_of_missing_object(&self) {
        let key = self.key("data/missing.bin");
        let local = self.scratch_path("never-written");
        let result = self.fs.copy_to_local(&key, &local).await;
        expect_not_found("copy_to_local", &key, result);
    }

    async fn single_object_cp_and_mv(&self, big: &[u8]) {
        let (from, to) = (self.key("data/big.bin"), self.key("copies/big.bin"));
        ok(
            "cp",
            &format!("{from} -> {to}"),
            self.fs.cp(&from, &to).await,
        );
        self.expect_content("copies/big.bin", big, "after cp").await;
        self.expect_exists("data/big.bin", true, "(the source) after cp")
            .await;

        let (from, to) = (self.key("copies/big.bin"), self.key("moved/big.bin"));
        ok(
            "mv",
            &format!("{from} -> {to}"),
            self.fs.mv(&from, &to).await,
        );
        self.expect_exists("copies/big.bin", false, "(the source) after mv")
            .await;
        self.expect_content("moved/big.bin", big, "after mv").await;
    }

    async fn write_tree(&self) -> Vec<(&'static str, &'static [u8])> {
        let files: Vec<(&'static str, &'static [u8])> = vec![
            ("top.txt", b"top\n"),
            ("sub/mid.txt", b"mid\n"),
            ("sub/deeper/low.txt", b"low\n"),
        ];
        for (rel, content) in &files {
            self.upload(&format!("tree/{rel}"), content).await;
        }
        // `tree` is a string prefix of `tree-sibling`; a prefix operation on
        // `tree` must not touch it.
        self.upload("tree-sibling/other.txt", b"sibling\n").await;
        files
    }

    async fn tree_cp_and_mv(&self) {
        let files = self.write_tree().await;

        let (from, to) = (self.key("tree"), self.key("tree-copy"));
        ok(
            "cp (tree)",
            &format!("{from} -> {to}"),
            self.fs.cp(&from, &to).await,
        );
        for (rel, content) in &files {
            self.expect_content(&format!("tree-copy/{rel}"), content, "after cp of the tree")
                .await;
            self.expect_content(
                &format!("tree/{rel}"),
                content,
                "(the source) after cp of the tree",
            )
            .await;
        }
        self.expect_exists(
            "tree-copy-sibling/other.txt",
            false,
            "after cp of `tree`: its sibling `tree-sibling` is not part of it",
        )
        .await;

        let (from, to) = (self.key("tree-copy"), self.key("tree-moved"));
        ok(
            "mv (tree)",
            &format!("{from} -> {to}"),
            self.fs.mv(&from, &to).await,
        );
        for (rel, content) in &files {
            self.expect_content(
                &format!("tree-moved/{rel}"),
                content,
                "after mv of the tree",
            )
            .await;
            self.expect_exists(
                &format!("tree-copy/{rel}"),
                false,
                "(the source) after mv of the tree",
            )
            .await;
        }
        self.expect_exists("tree-copy", false, "(the source) after mv of the tree")
            .await;
        self.expect_content(
            "tree-sibling/other.txt",
            b"sibling\n",
            "after cp and mv of `tree`",
        )
        .await;
    }

    async fn rm(&self) {
        let key = self.key("tree/top.txt");
        ok("rm", &key, self.fs.rm(&key).await);
        self.expect_exists("tree/top.txt", false, "after rm").await;
        self.expect_exists("tree/sub/mid.txt", true, "(a neighbour) after rm")
            .await;
        expect_not_found("rm (again)", &key, self.fs.rm(&key).await);
        let never = self.key("tree/never-written.txt");
        expect_not_found("rm", &never, self.fs.rm(&never).await);
    }

    async fn rmdir(&self) {
        let key = self.key("tree");
        ok("rmdir", &key, self.fs.rmdir(&key).await);
        for rel in [
            "tree/sub/mid.txt",
            "tree/sub/deeper/low.txt",
            "tree/sub",
            "tree",
        ] {
            self.expect_exists(rel, false, "after rmdir of tree").await;
        }
        self.expect_exists(
            "tree-sibling/other.txt",
            true,
            "after rmdir of `tree`: its sibling `tree-sibling` is not part of it",
        )
        .await;
        self.expect_exists(
            "tree-moved/sub/deeper/low.txt",
            true,
            "after rmdir of `tree`",
        )
        .await;
        ok("rmdir (again)", &key, self.fs.rmdir(&key).await);
        let never = self.key("never-created");
        ok("rmdir (never created)", &never, self.fs.rmdir(&never).await);
    }
}

/// Unwraps `result`, panicking with the operation and location.
fn ok<T>(op: &str, location: &str, result: Result<T, FsError>) -> T {
    result.unwrap_or_else(|e| panic!("{op} {location} failed: {e}"))
}

fn expect_not_found<T: Debug>(op: &str, key: &str, result: Result<T, FsError>) {
    match result {
        Err(e @ FsError::NotFound { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(key),
                "{op} {key}: the NotFound error should name the key, got {message:?}"
            );
        }
        Err(other) => panic!("{op} {key}: expected FsError::NotFound, got {other:?}"),
        Ok(value) => panic!("{op} {key}: expected FsError::NotFound, got Ok({value:?})"),
    }
}

/// `result` must be [`FsError::InvalidKey`] for `op`, naming `key`.
fn expect_refused<T: Debug>(op: &str, key: &str, result: Result<T, FsError>) {
    match result {
        Err(FsError::InvalidKey {
            op: actual_op,
            key: actual_key,
            problem,
        }) => {
            assert_eq!(
                actual_op, op,
                "{op} {key:?}: the refusal names another operation"
            );
            assert_eq!(
                actual_key, key,
                "{op} {key:?}: the refusal names another key"
            );
            assert_ne!(
                problem,
                KeyProblem::Nul,
                "{op} {key:?}: refused for a NUL byte?"
            );
        }
        Err(other) => panic!("{op} {key:?}: expected FsError::InvalidKey, got {other:?}"),
        Ok(value) => panic!("{op} {key:?}: expected FsError::InvalidKey, got Ok({value:?})"),
    }
}

fn assert_same_bytes(what: &str, expected: &[u8], actual: &[u8]) {
    if expected == actual {
        return;
    }
    let first_difference = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    panic!(
        "{what}: content differs: expected {} bytes, got {}; first difference at byte {first_difference}",
        expected.len(),
        actual.len()
    );
}

/// Deterministic bytes that do not repeat with any small period.
fn pattern(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// This process's peak resident set size in bytes (`VmHWM` of
/// `/proc/self/status`, Linux): what the filesystems' bounded-memory tests
/// compare before and after a large transfer.
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kb * 1024
}

/// Writes `mib` MiB of a repeating byte pattern to `path` (a large local
/// file for transfer tests, written 1 MiB at a time).
pub fn write_large_file(path: &Path, mib: u64) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create the file"));
    let block: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    for _ in 0..mib {
        file.write_all(&block).expect("write the file");
    }
    file.flush().expect("flush the file");
}

/// The bounded-memory check of a filesystem that streams: a 256 MiB file
/// up through `fs` and back down (under the key `big`, removed at the end)
/// while this process's peak RSS grows by less than 64 MiB. Each backend
/// runs it alone in its own test binary, so no other test moves the peak;
/// `scratch_local_dir` holds the local file and its copy.
pub async fn round_trip_of_256_mib_in_bounded_memory(
    fs: &dyn Filesystem,
    scratch_local_dir: &Path,
) {
    const MIB: u64 = 1024 * 1024;
    let size = 256 * MIB;
    let path = scratch_local_dir.join("big.bin");
    let back = scratch_local_dir.join("back.bin");
    write_large_file(&path, size / MIB);
    let before = peak_rss();
    fs.copy_from_local(&path, "big/file.bin").await.unwrap();
    fs.copy_to_local("big/file.bin", &back).await.unwrap();
    let grown = peak_rss().saturating_sub(before);
    eprintln!("peak RSS grew by {} MiB", grown / MIB);
    assert_eq!(std::fs::metadata(&back).unwrap().len(), size);
    assert!(
        grown < 64 * MIB,
        "peak RSS grew by {} MiB for a {} MiB file",
        grown / MIB,
        size / MIB
    );
    fs.rmdir("big").await.unwrap();
}
