//! `LocalFilesystem` against the shared conformance suite, plus what is
//! particular to local paths.

use flow_cluster_local::LocalFilesystem;
use flow_core::testkit::filesystem_conformance;
use flow_core::{Filesystem, FsError, KeyProblem};
use std::os::unix::fs::MetadataExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_relative_keys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let fs = LocalFilesystem::new(&root);
    filesystem_conformance(&fs, &dir.path().join("scratch"), "conformance").await;
    // The suite cleaned up after itself.
    assert!(!root.join("conformance").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_absolute_keys() {
    let dir = tempfile::tempdir().unwrap();
    // Absolute keys are accepted inside the root.
    let fs = LocalFilesystem::new(dir.path());
    let prefix = format!("{}/absolute/", dir.path().display());
    filesystem_conformance(&fs, &dir.path().join("scratch"), &prefix).await;
    assert!(!dir.path().join("absolute").exists());
}

#[tokio::test]
async fn absolute_keys_outside_the_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(dir.path().join("outside.txt"), "x").unwrap();
    let fs = LocalFilesystem::new(&root);
    let outside = dir.path().join("outside.txt").display().to_string();
    for result in [
        fs.rm(&outside).await,
        fs.rmdir(&outside).await,
        fs.cp(&outside, "copy.txt").await,
        fs.mv(&outside, "moved.txt").await,
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                FsError::InvalidKey {
                    problem: KeyProblem::OutsideRoot { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(&outside), "{err}");
    }
    assert!(dir.path().join("outside.txt").exists());
}

/// The case of the hardening issue: `[cluster] root = "../root"`, an empty
/// `{settings.sub}` and `rmdir "{settings.sub}x/.."` deleted the whole root.
#[tokio::test]
async fn an_empty_setting_cannot_remove_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(dir.path().join("root/data")).unwrap();
    std::fs::write(dir.path().join("root/data/keep.txt"), "keep").unwrap();
    let fs = LocalFilesystem::new(work.join("../root"));
    for key in ["x/..", "/..", "", "data/../.."] {
        let err = fs.rmdir(key).await.unwrap_err();
        assert!(
            matches!(err, FsError::InvalidKey { op: "rmdir", .. }),
            "{key:?}: {err:?}"
        );
    }
    assert!(dir.path().join("root/data/keep.txt").exists());
}

#[tokio::test]
async fn errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let fs = LocalFilesystem::new(dir.path());
    let err = fs.rm("missing/file.txt").await.unwrap_err();
    assert!(matches!(err, FsError::NotFound { op: "rm", .. }), "{err:?}");
    let expected = dir.path().join("missing/file.txt").display().to_string();
    assert!(err.to_string().contains(&expected), "{err}");

    let err = fs.mv("nothing-here", "elsewhere").await.unwrap_err();
    assert!(matches!(err, FsError::NotFound { op: "mv", .. }), "{err:?}");
    assert!(err.to_string().contains("nothing-here"), "{err}");

    let err = fs.cp("nothing-here", "elsewhere").await.unwrap_err();
    assert!(matches!(err, FsError::NotFound { op: "cp", .. }), "{err:?}");

    let err = fs
        .copy_from_local(&dir.path().join("no-local-file"), "x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-local-file"), "{err}");
}

#[tokio::test]
async fn the_root_and_slash_are_never_removed_or_moved() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep"), "x").unwrap();
    let fs = LocalFilesystem::new(dir.path());
    let root = dir.path().display().to_string();
    for key in ["", "/", ".", "./", root.as_str()] {
        assert!(
            matches!(fs.rmdir(key).await, Err(FsError::InvalidKey { .. })),
            "rmdir {key:?}"
        );
        assert!(
            matches!(
                fs.mv(key, "elsewhere").await,
                Err(FsError::InvalidKey { .. })
            ),
            "mv {key:?}"
        );
    }
    assert!(dir.path().join("keep").exists());
}

#[tokio::test]
async fn copying_a_file_onto_itself_is_refused_without_losing_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.txt"), "precious").unwrap();
    let fs = LocalFilesystem::new(dir.path());

    assert!(fs.cp("data.txt", "data.txt").await.is_err());
    assert!(fs
        .copy_to_local("data.txt", &dir.path().join("data.txt"))
        .await
        .is_err());
    assert!(fs
        .copy_from_local(&dir.path().join("data.txt"), "data.txt")
        .await
        .is_err());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data.txt")).unwrap(),
        "precious"
    );
}

#[tokio::test]
async fn trees_keep_symlinks_and_merge_into_existing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src/sub")).unwrap();
    std::fs::write(root.join("src/sub/a.txt"), "a").unwrap();
    std::os::unix::fs::symlink("sub/a.txt", root.join("src/link")).unwrap();
    std::fs::create_dir_all(root.join("dst/sub")).unwrap();
    std::fs::write(root.join("dst/sub/old.txt"), "old").unwrap();
    let fs = LocalFilesystem::new(root);

    fs.cp("src", "dst").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("dst/sub/a.txt")).unwrap(),
        "a"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("dst/sub/old.txt")).unwrap(),
        "old"
    );
    assert_eq!(
        std::fs::read_link(root.join("dst/link")).unwrap(),
        std::path::PathBuf::from("sub/a.txt")
    );

    // mv onto a non-empty directory merges too, and removes the source.
    std::fs::create_dir_all(root.join("more")).unwrap();
    std::fs::write(root.join("more/b.txt"), "b").unwrap();
    fs.mv("more", "dst").await.unwrap();
    assert!(!root.join("more").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("dst/b.txt")).unwrap(),
        "b"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("dst/sub/a.txt")).unwrap(),
        "a"
    );

    // Copying a tree into a directory inside itself terminates.
    fs.cp("dst", "dst/nested/copy").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("dst/nested/copy/sub/a.txt")).unwrap(),
        "a"
    );
}

/// mv across filesystems falls back to copy and remove. Needs /dev/shm on
/// another filesystem than the temp dir, and fails (never passes silently)
/// where that is missing.
#[tokio::test]
async fn mv_across_filesystems() {
    let dir = tempfile::tempdir().unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").expect("this test needs a writable /dev/shm");
    let here = std::fs::metadata(dir.path()).unwrap().dev();
    let there = std::fs::metadata(shm.path()).unwrap().dev();
    assert_ne!(
        here, there,
        "this test needs /dev/shm on another filesystem than the temp dir"
    );
    std::fs::create_dir_all(dir.path().join("tree/sub")).unwrap();
    std::fs::write(dir.path().join("tree/sub/f.txt"), "f").unwrap();
    std::fs::write(dir.path().join("single.txt"), "s").unwrap();
    // Both sides are absolute paths: a root of `/` allows them.
    let fs = LocalFilesystem::new("/");
    let tree = dir.path().join("tree").display().to_string();
    let single = dir.path().join("single.txt").display().to_string();

    let target = shm.path().join("moved-tree");
    fs.mv(&tree, &target.display().to_string()).await.unwrap();
    assert!(!dir.path().join("tree").exists());
    assert_eq!(
        std::fs::read_to_string(target.join("sub/f.txt")).unwrap(),
        "f"
    );

    let target = shm.path().join("deeper/single.txt");
    fs.mv(&single, &target.display().to_string()).await.unwrap();
    assert!(!dir.path().join("single.txt").exists());
    assert_eq!(std::fs::read_to_string(target).unwrap(), "s");
}
