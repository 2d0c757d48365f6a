//! The `Filesystem` trait every cluster brings, and the key rules every
//! backend applies.
//!
//! Paths are `/`-separated keys. `mkdir` creates parents; `rmdir` removes a
//! prefix recursively; `cp`/`mv` take an object or a prefix;
//! `copy_to_local`/`copy_from_local` stream. Errors name the operation, the
//! bucket (where there is one) and the key.
//!
//! **Keys are confined to their root.** Every backend passes every key it is
//! given through [`normalize_key`] before using it: `.`, `..` and repeated
//! slashes are resolved lexically, and a key that would leave its root (the
//! local cluster's root directory, a bucket or a bucket prefix) or that names
//! the root itself is refused with [`FsError::InvalidKey`]. So an empty
//! setting in `rmdir "{settings.dir}x/.."` cannot remove a whole root.

use async_trait::async_trait;
use std::fmt;
use std::path::Path;

/// A filesystem failure with its operation and location.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    #[error("{op} {location}: not found")]
    /// The object, file or prefix is not there.
    NotFound {
        /// The operation, e.g. `rm` or `copy_to_local`.
        op: &'static str,
        /// The key (with its bucket where there is one) or local path.
        location: String,
    },
    /// A local or backend I/O error.
    #[error("{op} {location}: {source}")]
    Io {
        /// The operation, e.g. `rm` or `copy_to_local`.
        op: &'static str,
        /// The key (with its bucket where there is one) or local path.
        location: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The backend refused or failed the call.
    #[error("{op} {location}: {message}")]
    Backend {
        /// The operation, e.g. `rm` or `copy_to_local`.
        op: &'static str,
        /// The key (with its bucket where there is one) or local path.
        location: String,
        /// The backend's reason.
        message: String,
    },
    /// A key refused before anything was touched.
    #[error("{op} {key:?}: refused: {problem}")]
    InvalidKey {
        /// The operation, e.g. `rm` or `copy_to_local`.
        op: &'static str,
        /// The key as given.
        key: String,
        /// Why it was refused.
        problem: KeyProblem,
    },
}

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    /// `..` climbs above the root (`../x`, `a/../..`, `/..`).
    LeavesRoot,
    /// The key resolves to the root itself (empty, `.`, `/`, `x/..`): no
    /// operation may act on a whole root.
    IsRoot,
    /// An absolute local path outside the local filesystem's root.
    OutsideRoot {
        /// The root, as configured.
        root: String,
    },
    /// A NUL byte: no filesystem or object store takes it.
    Nul,
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProblem::LeavesRoot => f.write_str("the key leaves its root (`..` above the top)"),
            KeyProblem::IsRoot => f.write_str(
                "the key names the root itself (empty, `.`, `/` or `x/..`); \
                 an empty setting in a template is the usual cause",
            ),
            KeyProblem::OutsideRoot { root } => {
                write!(f, "an absolute path outside the root {root}")
            }
            KeyProblem::Nul => f.write_str("the key contains a NUL byte"),
        }
    }
}

impl FsError {
    /// Wraps an I/O error, turning `NotFound` into [`FsError::NotFound`].
    pub fn io(op: &'static str, location: impl Into<String>, source: std::io::Error) -> Self {
        let location = location.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            FsError::NotFound { op, location }
        } else {
            FsError::Io {
                op,
                location,
                source,
            }
        }
    }

    /// A refused key.
    pub fn invalid_key(op: &'static str, key: &str, problem: KeyProblem) -> Self {
        FsError::InvalidKey {
            op,
            key: key.to_string(),
            problem,
        }
    }
}

/// Resolves `key` lexically against its root and returns it relative to
/// that root: no leading or trailing `/`, no empty, `.` or `..` segment.
///
/// A leading `/` means the root (object-store keys are relative to their
/// bucket whatever they start with). Refused, with `op` and the key named:
/// a key that climbs above the root ([`KeyProblem::LeavesRoot`]), one that
/// is the root itself ([`KeyProblem::IsRoot`]), one with a NUL byte.
///
/// ```
/// use flow_core::filesystem::{normalize_key, FsError, KeyProblem};
/// assert_eq!(normalize_key("rm", "a//b/./c/../d/").unwrap(), "a/b/d");
/// assert_eq!(normalize_key("rm", "/a/b").unwrap(), "a/b");
/// assert!(matches!(
///     normalize_key("rmdir", "x/.."),
///     Err(FsError::InvalidKey { problem: KeyProblem::IsRoot, .. })
/// ));
/// assert!(matches!(
///     normalize_key("cp", "../root"),
///     Err(FsError::InvalidKey { problem: KeyProblem::LeavesRoot, .. })
/// ));
/// ```
pub fn normalize_key(op: &'static str, key: &str) -> Result<String, FsError> {
    let relative = normalize_lexically(op, key)?;
    if relative.is_empty() {
        return Err(FsError::invalid_key(op, key, KeyProblem::IsRoot));
    }
    Ok(relative)
}

/// Like [`normalize_key`], but the root itself (an empty result) is
/// accepted. For backends that resolve a key against a sub-root first.
pub fn normalize_lexically(op: &'static str, key: &str) -> Result<String, FsError> {
    if key.contains('\0') {
        return Err(FsError::invalid_key(op, key, KeyProblem::Nul));
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in key.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(FsError::invalid_key(op, key, KeyProblem::LeavesRoot));
                }
            }
            other => segments.push(other),
        }
    }
    Ok(segments.join("/"))
}

/// File operations on a cluster's storage.
///
/// What an implementation must guarantee (the conformance suite
/// `flow_core::testkit::filesystem_conformance`, feature `testkit`, checks
/// each; every backend of flow runs it in its tests):
/// - Every key argument goes through [`normalize_key`] (or the backend's
///   equivalent for its own address forms) before anything is touched: a
///   key that leaves the root or names it is refused with
///   [`FsError::InvalidKey`] naming the operation and the key as given, on
///   both sides of `cp`/`mv`, and nothing changes.
/// - `mkdir` creates parents and succeeds when the directory exists;
///   `rmdir` removes everything under the key and succeeds when it is
///   absent; `rm` of a missing object and `copy_to_local` of one are
///   [`FsError::NotFound`] naming the key.
/// - `cp`/`mv` take one object or a whole prefix; a prefix `tree` never
///   includes its sibling `tree-2`.
/// - `copy_from_local` replaces the whole object; `copy_to_local` creates
///   the local file's parent directories. Both stream: a file is never held
///   in memory whole.
/// - `exists` is true for an object, a file or a directory (folder marker).
/// - Blocking I/O stays off the async runtime's threads.
///
/// The local paths of `copy_to_local`/`copy_from_local` are the caller's
/// and are used as given. `flow-core`'s example `memory_filesystem` is a
/// complete implementation run through the suite.
#[async_trait]
pub trait Filesystem: Send + Sync {
    /// Creates `path` and its parents. Succeeds if it exists.
    async fn mkdir(&self, path: &str) -> Result<(), FsError>;
    /// Removes `path` and everything under it. Succeeds if it is absent.
    async fn rmdir(&self, path: &str) -> Result<(), FsError>;
    /// Removes one object or file.
    async fn rm(&self, path: &str) -> Result<(), FsError>;
    /// Copies an object or a whole prefix.
    async fn cp(&self, from: &str, to: &str) -> Result<(), FsError>;
    /// Moves an object or a whole prefix.
    async fn mv(&self, from: &str, to: &str) -> Result<(), FsError>;
    /// Streams `remote` into the local file `local`.
    async fn copy_to_local(&self, remote: &str, local: &Path) -> Result<(), FsError>;
    /// Streams the local file `local` into `remote`.
    async fn copy_from_local(&self, local: &Path, remote: &str) -> Result<(), FsError>;
    /// True for an object, a file or a directory (folder marker).
    async fn exists(&self, path: &str) -> Result<bool, FsError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(key: &str) -> Option<KeyProblem> {
        match normalize_key("op", key) {
            Ok(_) => None,
            Err(FsError::InvalidKey { problem, .. }) => Some(problem),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_resolve_lexically() {
        for (key, expected) in [
            ("a", "a"),
            ("a/b", "a/b"),
            ("/a/b/", "a/b"),
            ("a//b", "a/b"),
            ("./a/./b", "a/b"),
            ("a/b/../c", "a/c"),
            ("a/b/c/../../d", "a/d"),
            ("a/..b", "a/..b"),
            ("a/...", "a/..."),
            ("a_$folder$", "a_$folder$"),
        ] {
            assert_eq!(normalize_key("op", key).unwrap(), expected, "{key:?}");
        }
    }

    #[test]
    fn keys_that_leave_or_name_the_root_are_refused() {
        for key in ["..", "../root", "/..", "a/../..", "a/b/../../../c", "./.."] {
            assert_eq!(problem(key), Some(KeyProblem::LeavesRoot), "{key:?}");
        }
        for key in ["", ".", "/", "//", "x/..", "./x/../", "a/b/../.."] {
            assert_eq!(problem(key), Some(KeyProblem::IsRoot), "{key:?}");
        }
        assert_eq!(problem("a\0b"), Some(KeyProblem::Nul));
    }

    #[test]
    fn the_error_names_the_operation_and_the_key() {
        let e = normalize_key("rmdir", "x/..").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("rmdir \"x/..\": refused: the key names the root"),
            "{text}"
        );
    }
}
