//! A custom [`Filesystem`]: objects kept in memory, proven by the same
//! conformance suite every backend of flow runs
//! ([`flow_core::testkit::filesystem_conformance`]).
//!
//! ```sh
//! cargo run -p flow-core --features testkit --example memory_filesystem
//! ```
//!
//! The points an implementation must get right, and the suite checks:
//! every key goes through [`normalize_key`] before anything is touched (so
//! `x/..`, `../root` or an empty key is refused with the operation and the
//! key named, on both sides of `cp`/`mv`); `mkdir` creates parents; a prefix
//! operation on `tree` never touches `tree-sibling`; `rm` and
//! `copy_to_local` of a missing object are [`FsError::NotFound`] naming the
//! key. In your crate, the suite goes in a test (enable `flow-core`'s
//! `testkit` feature in your dev-dependencies) and runs against your real
//! backend or its emulator.

use async_trait::async_trait;
use flow_core::{normalize_key, Filesystem, FsError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Objects by key and directory markers, behind one lock.
#[derive(Default)]
struct MemoryFilesystem {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
}

impl State {
    /// Keys of objects and directories at `key` or under `key/`.
    fn under(&self, key: &str) -> (Vec<String>, Vec<String>) {
        let prefix = format!("{key}/");
        let within = |k: &&String| *k == key || k.starts_with(&prefix);
        (
            self.objects.keys().filter(within).cloned().collect(),
            self.dirs.iter().filter(within).cloned().collect(),
        )
    }
}

impl MemoryFilesystem {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Copies the object `from`, or every object and directory under it, to
    /// `to`; both keys already normalized.
    fn copy(
        &self,
        op: &'static str,
        from: &str,
        to: &str,
        remove_source: bool,
    ) -> Result<(), FsError> {
        let mut state = self.lock();
        let (objects, dirs) = state.under(from);
        if objects.is_empty() && dirs.is_empty() {
            return Err(FsError::NotFound {
                op,
                location: from.to_string(),
            });
        }
        let moved = |key: &str| format!("{to}{}", &key[from.len()..]);
        for key in &objects {
            let bytes = state.objects[key].clone();
            state.objects.insert(moved(key), bytes);
        }
        for key in &dirs {
            state.dirs.insert(moved(key));
        }
        if remove_source {
            for key in objects {
                state.objects.remove(&key);
            }
            for key in dirs {
                state.dirs.remove(&key);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Filesystem for MemoryFilesystem {
    async fn mkdir(&self, path: &str) -> Result<(), FsError> {
        let key = normalize_key("mkdir", path)?;
        let mut state = self.lock();
        let mut parent = String::new();
        for segment in key.split('/') {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(segment);
            state.dirs.insert(parent.clone());
        }
        Ok(())
    }

    async fn rmdir(&self, path: &str) -> Result<(), FsError> {
        let key = normalize_key("rmdir", path)?;
        let mut state = self.lock();
        let (objects, dirs) = state.under(&key);
        for key in objects {
            state.objects.remove(&key);
        }
        for key in dirs {
            state.dirs.remove(&key);
        }
        Ok(())
    }

    async fn rm(&self, path: &str) -> Result<(), FsError> {
        let key = normalize_key("rm", path)?;
        match self.lock().objects.remove(&key) {
            Some(_) => Ok(()),
            None => Err(FsError::NotFound {
                op: "rm",
                location: key,
            }),
        }
    }

    async fn cp(&self, from: &str, to: &str) -> Result<(), FsError> {
        let (from, to) = (normalize_key("cp", from)?, normalize_key("cp", to)?);
        self.copy("cp", &from, &to, false)
    }

    async fn mv(&self, from: &str, to: &str) -> Result<(), FsError> {
        let (from, to) = (normalize_key("mv", from)?, normalize_key("mv", to)?);
        self.copy("mv", &from, &to, true)
    }

    async fn copy_to_local(&self, remote: &str, local: &Path) -> Result<(), FsError> {
        let key = normalize_key("copy_to_local", remote)?;
        let bytes = self.lock().objects.get(&key).cloned();
        let bytes = bytes.ok_or_else(|| FsError::NotFound {
            op: "copy_to_local",
            location: key.clone(),
        })?;
        // File I/O blocks: keep it off the runtime's threads.
        let local: PathBuf = local.to_path_buf();
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = local.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&local, bytes)
        })
        .await
        .map_err(|e| FsError::Backend {
            op: "copy_to_local",
            location: key.clone(),
            message: e.to_string(),
        })?
        .map_err(|e| FsError::io("copy_to_local", key, e))
    }

    async fn copy_from_local(&self, local: &Path, remote: &str) -> Result<(), FsError> {
        let key = normalize_key("copy_from_local", remote)?;
        let path = local.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|e| FsError::Backend {
                op: "copy_from_local",
                location: local.display().to_string(),
                message: e.to_string(),
            })?
            .map_err(|e| FsError::io("copy_from_local", local.display().to_string(), e))?;
        self.lock().objects.insert(key, bytes);
        Ok(())
    }

    async fn exists(&self, path: &str) -> Result<bool, FsError> {
        let key = normalize_key("exists", path)?;
        let (objects, dirs) = self.lock().under(&key);
        Ok(!objects.is_empty() || !dirs.is_empty())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let scratch = std::env::temp_dir().join(format!("flow-memory-fs-{}", std::process::id()));
    let fs = MemoryFilesystem::default();
    // Panics, naming the operation and the key, at the first difference.
    flow_core::testkit::filesystem_conformance(&fs, &scratch, "conformance").await;
    let _ = std::fs::remove_dir_all(&scratch);
    println!("MemoryFilesystem passes the filesystem conformance suite");
}

// `cargo test` runs the example too (see `test = true` in Cargo.toml).
#[test]
fn example_runs() {
    main();
}
