//! [`LocalFilesystem`]: the `Filesystem` trait on local paths.

use async_trait::async_trait;
use flow_core::{Filesystem, FsError};
use std::io;
use std::path::{Component, Path, PathBuf};
use tokio::io::{AsyncWriteExt, BufReader};

/// Copies move this much per read/write, each a trip to tokio's blocking
/// pool; bigger than `tokio::io::copy`'s 8 KiB to make fewer trips.
const COPY_BUFFER: usize = 256 * 1024;

/// Files on this machine. A key starting with `/` is an absolute path;
/// any other key is relative to `root`. Like an object store, writes create
/// the parent directories they need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFilesystem {
    pub root: PathBuf,
}

impl LocalFilesystem {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalFilesystem { root: root.into() }
    }

    /// The local path of `key`.
    pub fn resolve(&self, key: &str) -> PathBuf {
        if key.starts_with('/') {
            PathBuf::from(key)
        } else {
            self.root.join(key)
        }
    }

    /// Refuses a removal or move of `/` or of the root itself: an empty
    /// setting in a template (`{settings.dir}/`) must not wipe a disk.
    fn refuse_root(&self, op: &'static str, key: &str) -> Result<(), FsError> {
        let only_root = Path::new(key)
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::CurDir));
        if only_root {
            let what = if key.starts_with('/') {
                "/".to_string()
            } else {
                self.root.display().to_string()
            };
            return Err(FsError::Backend {
                op,
                location: what,
                message: format!("refusing to {op} the root (key {key:?})"),
            });
        }
        Ok(())
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
        let dir = self.resolve(path);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| FsError::io("mkdir", shown(&dir), e))
    }

    async fn rmdir(&self, path: &str) -> Result<(), FsError> {
        self.refuse_root("rmdir", path)?;
        let dir = self.resolve(path);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(FsError::io("rmdir", shown(&dir), e))
            }
            _ => Ok(()),
        }
    }

    async fn rm(&self, path: &str) -> Result<(), FsError> {
        let file = self.resolve(path);
        tokio::fs::remove_file(&file)
            .await
            .map_err(|e| FsError::io("rm", shown(&file), e))
    }

    async fn cp(&self, from: &str, to: &str) -> Result<(), FsError> {
        let (from, to) = (self.resolve(from), self.resolve(to));
        blocking("cp", pair(&from, &to), move || copy_any("cp", &from, &to)).await
    }

    async fn mv(&self, from: &str, to: &str) -> Result<(), FsError> {
        self.refuse_root("mv", from)?;
        let (from, to) = (self.resolve(from), self.resolve(to));
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
        stream_copy("copy_to_local", &self.resolve(remote), local).await
    }

    async fn copy_from_local(&self, local: &Path, remote: &str) -> Result<(), FsError> {
        stream_copy("copy_from_local", local, &self.resolve(remote)).await
    }

    async fn exists(&self, path: &str) -> Result<bool, FsError> {
        let path = self.resolve(path);
        tokio::fs::try_exists(&path)
            .await
            .map_err(|e| FsError::io("exists", shown(&path), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_against_the_root_unless_absolute() {
        let fs = LocalFilesystem::new("/data");
        assert_eq!(fs.resolve("a/b.txt"), PathBuf::from("/data/a/b.txt"));
        assert_eq!(fs.resolve("/tmp/x"), PathBuf::from("/tmp/x"));
    }

    #[test]
    fn the_root_is_never_removed() {
        let fs = LocalFilesystem::new("/data");
        for key in ["", "/", ".", "./", "//"] {
            assert!(
                matches!(fs.refuse_root("rmdir", key), Err(FsError::Backend { .. })),
                "{key:?}"
            );
        }
        assert!(fs.refuse_root("rmdir", "a").is_ok());
        assert!(fs.refuse_root("rmdir", "/tmp/a").is_ok());
    }
}
