//! The Google Cloud Storage filesystem: flow's
//! [`Filesystem`](flow_core::Filesystem) on GCS through its JSON API (reqwest,
//! rustls on ring), for the Dataproc cluster.
//!
//! - Keys name objects in the default bucket (settings), optionally under a
//!   prefix; `gs://bucket/key` names another bucket. Keys are normalized and
//!   confined ([`flow_core::normalize_key`]).
//! - `mkdir` writes `NAME_$folder$` markers along the path (Hadoop's
//!   convention, kept from Synergy Flow); `exists` is true for an object, a
//!   marker or a non-empty prefix; prefix listings page
//!   ([`GcsConfig::list_page_size`]).
//! - `cp`/`mv` copy server-side with `rewriteTo`, following `rewriteToken`
//!   until the copy is done (large objects, other locations or classes).
//! - `copy_from_local` of a file above [`GcsConfig::resumable_threshold`]
//!   is a resumable upload in chunks of [`GcsConfig::upload_chunk_size`]
//!   (one chunk in memory); `copy_to_local` streams the download into a
//!   temporary file renamed at the end.
//! - Requests that fail with 408/429/5xx or a connection error are retried
//!   with `flow_cloud`'s policy (exponential backoff, `Retry-After`
//!   honoured).
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
mod filesystem;

pub use config::{GcsConfig, GcsError, GcsFilesystemBuilder};
pub use filesystem::{GcsFilesystem, GcsLocation};

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
