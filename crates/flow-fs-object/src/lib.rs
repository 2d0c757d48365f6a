//! flow's [`Filesystem`](flow_core::Filesystem) semantics on object stores,
//! written once: [`ObjectFilesystem`] over a small trait of object
//! primitives, [`ObjectBackend`], that each store implements (object_store's
//! split between primitives and the operations built on them).
//!
//! What is written here, for every store (the design notes' "Filesystem
//! semantics"):
//!
//! - Locations: a key in the default bucket under an optional prefix, or an
//!   address naming another bucket (`s3://bucket/key`, `gs://bucket/key`:
//!   the backend says which schemes). Keys are normalized and confined
//!   ([`flow_core::normalize_key`]): `..` never leaves the bucket or prefix.
//! - `mkdir` writes Hadoop's `NAME_$folder$` markers along the path (kept
//!   from Synergy Flow); `exists` is true for an object, a marker or a
//!   non-empty prefix.
//! - `rmdir` deletes a prefix page by page; `cp`/`mv` copy one object or a
//!   prefix server-side, [`ObjectSettings::concurrency`] objects at a time.
//! - `copy_to_local` streams into a temporary sibling file renamed at the
//!   end (nothing half-written is left); `copy_from_local` hands the file to
//!   the backend's streaming upload.
//! - Errors name the operation, the bucket and the key.
//! - The log tails of `flow_cloud::tail` ([`RemoteObjects`](flow_cloud::RemoteObjects)).
//!
//! What is not: wire code. Multipart uploads and `UploadPartCopy` (S3),
//! resumable uploads and `rewriteToken` (GCS), block lists (Azure) stay in
//! the backend crates, behind [`ObjectBackend`]'s primitives.
#![warn(missing_docs)]

mod backend;
pub mod config;
mod filesystem;
mod parts;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use backend::{
    backend_error, delete_each, store_error, ListPage, ObjectBackend, ObjectInfo, ObjectLocation,
    FOLDER_MARKER,
};
pub use config::Invalid;
pub use filesystem::{ObjectFilesystem, ObjectSettings};
pub use parts::{fit_part_size, part_ranges};

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
