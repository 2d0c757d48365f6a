//! [`LocalFilesystem`]: the `Filesystem` trait on local paths.

use async_trait::async_trait;
use flow_core::filesystem::normalize_lexically;
use flow_core::{Filesystem, FsError, KeyProblem};
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncWriteExt, BufReader};

/// Copies move this much per read/write, each a trip to tokio's blocking
/// pool; bigger than `tokio::io::copy`'s 8 KiB to make fewer trips.
const COPY_BUFFER: usize = 256 * 1024;

/// Files on this machine, confined to `root`.
///
/// A relative key is under `root`. An absolute key (`/data/out`) is accepted
/// when it lies inside `root` after `.`/`..` are resolved, and refused
/// otherwise: set the root to `/` to allow any path on the machine. Keys that
/// climb above the root (`../x`, `a/../..`) or name the root itself (empty,
/// `.`, `x/..`) are refused for every operation ([`flow_core::normalize_key`]).
/// The check is lexical: a symbolic link inside the root is followed.
///
/// Like an object store, writes create the parent directories they need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFilesystem {
    root: PathBuf,
    /// `root` as a normalized key from `/` (empty for `/` itself).
    root_key: String,
}

impl LocalFilesystem {
    /// A filesystem confined to `root`, made absolute against the current
    /// directory (lexically, without following links).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let absolute = std::path::absolute(&root).unwrap_or(root);
        let text = absolute.to_string_lossy();
        // A root that climbs above `/` (`/..`) is `/` itself.
        let root_key = normalize_lexically("root", &text).unwrap_or_default();
        LocalFilesystem {
            root: PathBuf::from(format!("/{root_key}")),
            root_key,
        }
    }

    /// The root every key is confined to, absolute and normalized.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local path of `key`, or why it is refused.
    pub fn resolve(&self, op: &'static str, key: &str) -> Result<PathBuf, FsError> {
        let relative = if key.starts_with('/') {
            let absolute = normalize_lexically(op, key)?;
            if self.root_key.is_empty() {
                absolute
            } else if absolute == self.root_key {
                String::new()
            } else if let Some(rest) = absolute
                .strip_prefix(self.root_key.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
            {
                rest.to_string()
            } else {
                return Err(FsError::invalid_key(
                    op,
                    key,
                    KeyProblem::OutsideRoot {
                        root: self.root.display().to_string(),
                    },
                ));
            }
        } else {
            normalize_lexically(op, key)?
        };
        if relative.is_empty() {
            return Err(FsError::invalid_key(op, key, KeyProblem::IsRoot));
        }
        Ok(self.root.join(relative))
    }
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn pair(from: &Path, to: &Path) -> String {
    format!("{} -> {}", from.display(), to.display())
}

async fn create_parent(op: &'static str, path: &Path) -> Result<(), FsError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| FsError::io(op, shown(parent), e)),
        _ => Ok(()),
    }
}

/// Writing a file onto itself would truncate it before reading it.
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

fn refuse_same_file(
    op: &'static str,
    from: &Path,
    from_meta: &std::fs::Metadata,
    to: &Path,
    to_meta: Option<&std::fs::Metadata>,
) -> Result<(), FsError> {
    if to_meta.is_some_and(|t| same_file(from_meta, t)) {
        return Err(FsError::Backend {
            op,
            location: pair(from, to),
            message: "source and destination are the same file".into(),
        });
    }
    Ok(())
}

/// Streams the local file `from` into `to`, creating `to`'s parents.
async fn stream_copy(op: &'static str, from: &Path, to: &Path) -> Result<(), FsError> {
    let source = tokio::fs::File::open(from)
        .await
        .map_err(|e| FsError::io(op, shown(from), e))?;
    let from_meta = source
        .metadata()
        .await
        .map_err(|e| FsError::io(op, shown(from), e))?;
    if from_meta.is_dir() {
        return Err(FsError::Backend {
            op,
            location: shown(from),
            message: "is a directory, not a file".into(),
        });
    }
    let to_meta = tokio::fs::metadata(to).await.ok();
    refuse_same_file(op, from, &from_meta, to, to_meta.as_ref())?;
    create_parent(op, to).await?;
    let mut target = tokio::fs::File::create(to)
        .await
        .map_err(|e| FsError::io(op, shown(to), e))?;
    let mut source = BufReader::with_capacity(COPY_BUFFER, source);
    tokio::io::copy_buf(&mut source, &mut target)
        .await
        .map_err(|e| FsError::io(op, pair(from, to), e))?;
    // tokio writes in the background; flush waits for the last write.
    target
        .flush()
        .await
        .map_err(|e| FsError::io(op, shown(to), e))
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    location: String,
    work: impl FnOnce() -> Result<T, FsError> + Send + 'static,
) -> Result<T, FsError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(FsError::Backend {
            op,
            location,
            message: format!("the copy task failed: {e}"),
        })
    })
}

/// Copies a file or a directory tree. A tree is merged into an existing
/// destination directory, as a prefix copy in an object store would be.
fn copy_any(op: &'static str, from: &Path, to: &Path) -> Result<(), FsError> {
    let from_meta = std::fs::metadata(from).map_err(|e| FsError::io(op, shown(from), e))?;
    if from_meta.is_dir() {
        return copy_tree(op, from, to);
    }
    let to_meta = std::fs::metadata(to).ok();
    refuse_same_file(op, from, &from_meta, to, to_meta.as_ref())?;
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| FsError::io(op, shown(parent), e))?;
    }
    // std::fs::copy uses the kernel's copy (copy_file_range) and never holds
    // the file in memory.
    std::fs::copy(from, to).map_err(|e| FsError::io(op, pair(from, to), e))?;
    Ok(())
}

/// Lists the whole source tree before writing anything, so copying a tree
/// into a directory inside itself terminates.
fn copy_tree(op: &'static str, from: &Path, to: &Path) -> Result<(), FsError> {
    let mut dirs = vec![PathBuf::new()];
    let mut files = Vec::new();
    let mut links = Vec::new();
    let mut next = 0;
    while let Some(rel) = dirs.get(next).cloned() {
        next += 1;
        let dir = from.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(|e| FsError::io(op, shown(&dir), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| FsError::io(op, shown(&dir), e))?;
            let kind = entry
                .file_type()
                .map_err(|e| FsError::io(op, shown(&entry.path()), e))?;
            let child = rel.join(entry.file_name());
            if kind.is_dir() {
                dirs.push(child);
            } else if kind.is_symlink() {
                links.push(child);
            } else {
                files.push(child);
            }
        }
    }
    for rel in &dirs {
        let dir = to.join(rel);
        std::fs::create_dir_all(&dir).map_err(|e| FsError::io(op, shown(&dir), e))?;
    }
    for rel in &files {
        let (source, target) = (from.join(rel), to.join(rel));
        std::fs::copy(&source, &target).map_err(|e| FsError::io(op, pair(&source, &target), e))?;
    }
    // Links are copied as links: following them could leave the tree or loop.
    for rel in &links {
        let (source, target) = (from.join(rel), to.join(rel));
        let points_to =
            std::fs::read_link(&source).map_err(|e| FsError::io(op, shown(&source), e))?;
        match std::fs::remove_file(&target) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(FsError::io(op, shown(&target), e))
            }
            _ => {}
        }
        std::os::unix::fs::symlink(&points_to, &target)
            .map_err(|e| FsError::io(op, pair(&source, &target), e))?;
    }
    Ok(())
}

fn remove_any(op: &'static str, path: &Path) -> Result<(), FsError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| FsError::io(op, shown(path), e))?;
    let removed = if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    removed.map_err(|e| FsError::io(op, shown(path), e))
}

/// A rename that must become copy-and-remove: across filesystems, or a
/// directory onto a non-empty one (merged, as in an object store).
fn needs_copy(e: &io::Error, source_is_dir: bool) -> bool {
    match e.raw_os_error() {
        Some(libc::EXDEV) => true,
        Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => source_is_dir,
        _ => false,
    }
}

#[async_trait]
impl Filesystem for LocalFilesystem {
    async fn mkdir(&self, path: &str) -> Result<(), FsError> {
        let dir = self.resolve("mkdir", path)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| FsError::io("mkdir", shown(&dir), e))
    }

    async fn rmdir(&self, path: &str) -> Result<(), FsError> {
        let dir = self.resolve("rmdir", path)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(FsError::io("rmdir", shown(&dir), e))
            }
            _ => Ok(()),
        }
    }

    async fn rm(&self, path: &str) -> Result<(), FsError> {
        let file = self.resolve("rm", path)?;
        tokio::fs::remove_file(&file)
            .await
            .map_err(|e| FsError::io("rm", shown(&file), e))
    }

    async fn cp(&self, from: &str, to: &str) -> Result<(), FsError> {
        let (from, to) = (self.resolve("cp", from)?, self.resolve("cp", to)?);
        blocking("cp", pair(&from, &to), move || copy_any("cp", &from, &to)).await
    }

    async fn mv(&self, from: &str, to: &str) -> Result<(), FsError> {
        let (from, to) = (self.resolve("mv", from)?, self.resolve("mv", to)?);
        let meta = tokio::fs::symlink_metadata(&from)
            .await
            .map_err(|e| FsError::io("mv", shown(&from), e))?;
        create_parent("mv", &to).await?;
        match tokio::fs::rename(&from, &to).await {
            Ok(()) => Ok(()),
            Err(e) if needs_copy(&e, meta.is_dir()) => {
                blocking("mv", pair(&from, &to), move || {
                    copy_any("mv", &from, &to)?;
                    remove_any("mv", &from)
                })
                .await
            }
            Err(e) => Err(FsError::io("mv", pair(&from, &to), e)),
        }
    }

    async fn copy_to_local(&self, remote: &str, local: &Path) -> Result<(), FsError> {
        let remote = self.resolve("copy_to_local", remote)?;
        stream_copy("copy_to_local", &remote, local).await
    }

    async fn copy_from_local(&self, local: &Path, remote: &str) -> Result<(), FsError> {
        let remote = self.resolve("copy_from_local", remote)?;
        stream_copy("copy_from_local", local, &remote).await
    }

    async fn exists(&self, path: &str) -> Result<bool, FsError> {
        let path = self.resolve("exists", path)?;
        tokio::fs::try_exists(&path)
            .await
            .map_err(|e| FsError::io("exists", shown(&path), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(fs: &LocalFilesystem, key: &str) -> KeyProblem {
        match fs.resolve("rmdir", key) {
            Err(FsError::InvalidKey { problem, .. }) => problem,
            other => panic!("{key:?}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn keys_resolve_inside_the_root() {
        let fs = LocalFilesystem::new("/data/./x/..");
        assert_eq!(fs.root(), Path::new("/data"));
        for (key, path) in [
            ("a/b.txt", "/data/a/b.txt"),
            ("a/../b", "/data/b"),
            ("/data/a", "/data/a"),
            ("/data//a/./b/..", "/data/a"),
            ("/data/../data/c", "/data/c"),
        ] {
            assert_eq!(
                fs.resolve("op", key).unwrap(),
                PathBuf::from(path),
                "{key:?}"
            );
        }
    }

    #[test]
    fn keys_that_leave_or_name_the_root_are_refused() {
        let fs = LocalFilesystem::new("/data");
        for key in ["", ".", "./", "x/..", "/data", "/data/x/.."] {
            assert_eq!(refused(&fs, key), KeyProblem::IsRoot, "{key:?}");
        }
        for key in ["..", "../data2", "a/../..", "/..", "/data/../.."] {
            assert_eq!(refused(&fs, key), KeyProblem::LeavesRoot, "{key:?}");
        }
        for key in ["/", "//", "/tmp/x", "/data2/x", "/data/../etc"] {
            assert!(
                matches!(refused(&fs, key), KeyProblem::OutsideRoot { .. }),
                "{key:?}"
            );
        }
    }

    #[test]
    fn a_root_of_slash_allows_any_absolute_path_but_not_slash_itself() {
        let fs = LocalFilesystem::new("/");
        assert_eq!(fs.resolve("op", "/tmp/x").unwrap(), PathBuf::from("/tmp/x"));
        assert_eq!(fs.resolve("op", "tmp/x").unwrap(), PathBuf::from("/tmp/x"));
        assert_eq!(refused(&fs, "/"), KeyProblem::IsRoot);
        assert_eq!(refused(&fs, "/.."), KeyProblem::LeavesRoot);
    }

    #[test]
    fn a_relative_root_is_made_absolute() {
        let fs = LocalFilesystem::new("rel");
        assert!(fs.root().is_absolute());
        assert!(fs.root().ends_with("rel"));
    }
}
