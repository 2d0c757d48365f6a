//! The `Filesystem` trait every cluster brings.
//!
//! Paths are `/`-separated keys. `mkdir` creates parents; `rmdir` removes a
//! prefix recursively; `cp`/`mv` take an object or a prefix;
//! `copy_to_local`/`copy_from_local` stream. Errors name the operation, the
//! bucket (where there is one) and the key.

use async_trait::async_trait;
use std::path::Path;

/// A filesystem failure with its operation and location.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{op} {location}: not found")]
    NotFound { op: &'static str, location: String },
    #[error("{op} {location}: {source}")]
    Io {
        op: &'static str,
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {location}: {message}")]
    Backend {
        op: &'static str,
        location: String,
        message: String,
    },
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
}

/// File operations on a cluster's storage.
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
