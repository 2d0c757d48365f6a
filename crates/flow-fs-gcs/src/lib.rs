//! The Google Cloud Storage filesystem: flow's
//! [`Filesystem`](flow_core::Filesystem) on GCS through its JSON API (reqwest,
//! rustls on ring), for the Dataproc cluster.
//!
//! The filesystem semantics (keys under a default bucket and prefix,
//! `gs://bucket/key` addresses, `NAME_$folder$` markers, prefix operations
//! paging by [`GcsConfig::list_page_size`], downloads through a temporary
//! file) are `flow_fs_object`'s, written once for every object store; this
//! crate is their GCS backend ([`GcsBackend`], over its HTTP transport) and
//! the authorised Google call every Google client of flow makes
//! ([`google`]):
//!
//! - `cp`/`mv` copy server-side with `rewriteTo`, following `rewriteToken`
//!   until the copy is done (large objects, other locations or classes).
//! - `copy_from_local` of a file above [`GcsConfig::resumable_threshold`]
//!   is a resumable upload in chunks of [`GcsConfig::upload_chunk_size`]
//!   (one chunk in memory); `copy_to_local` streams the download into a
//!   temporary file renamed at the end.
//! - Requests that fail with 408/429/5xx or a connection error are retried
//!   with `flow_cloud`'s policy (exponential backoff, `Retry-After`
//!   honoured), through [`google::GoogleClient`].
//! - Auth: a service-account key file from the settings, else Application
//!   Default Credentials, through `gcp_auth` (tokens cached and refreshed by
//!   it). An emulator endpoint in the settings, or `STORAGE_EMULATOR_HOST`,
//!   disables auth for that endpoint. Tokens and keys never reach a log, an
//!   error or `Debug`.
//!
//! What it is not: a general GCS client (no ACLs, versions or metadata), or
//! a cluster. Deletions of a prefix are one request per object, run
//! concurrently (the JSON API's batch endpoint is not used).
#![warn(missing_docs)]

pub mod auth;
mod config;
pub mod google;
mod objects;
mod transport;

pub use config::{GcsConfig, GcsError, GcsFilesystemBuilder};
pub use objects::GcsBackend;

/// The GCS filesystem: the shared object filesystem on [`GcsBackend`].
/// Cheap to clone; [`GcsBackend`]'s accessors (`config`, `endpoint`,
/// `requests_made`) are called on it directly.
pub type GcsFilesystem = flow_fs_object::ObjectFilesystem<GcsBackend>;

/// A bucket and an object name, shown as `gs://bucket/name`.
pub type GcsLocation = flow_fs_object::ObjectLocation;

/// The shared object filesystem this crate is a backend of, re-exported so
/// callers use the same version.
pub use flow_fs_object;

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
