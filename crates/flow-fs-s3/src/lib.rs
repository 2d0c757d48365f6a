//! The S3 filesystem: flow's [`Filesystem`](flow_core::Filesystem) on Amazon
//! S3 (and S3-compatible stores) through `aws-sdk-s3`.
//!
//! Its own crate because two clusters use it (EMR and Qubole) and cluster
//! crates never depend on each other. The filesystem semantics of the design
//! notes are `flow_fs_object`'s, written once for every object store; this
//! crate is their S3 backend ([`S3Backend`]: the wire code) and the AWS
//! configuration every AWS client of flow loads ([`aws`]), with
//! [`LazyS3Filesystem`] for clusters that make it on first use. It follows
//! the filesystem semantics of the design notes, as Synergy Flow's S3
//! filesystem did:
//!
//! - Keys name objects in the default bucket (settings), optionally under a
//!   prefix; `s3://bucket/key` (also `s3a://`, `s3n://`) names another
//!   bucket. Keys are normalized and confined ([`flow_core::normalize_key`]):
//!   `..` never climbs out of the bucket or the prefix.
//! - `mkdir` writes Hadoop's `NAME_$folder$` markers along the path; `exists`
//!   is true for an object, a marker, or a non-empty prefix.
//! - `rmdir` deletes a prefix page by page (1,000 keys per listing and per
//!   `DeleteObjects`); `cp`/`mv` copy server-side, an object above
//!   [`S3Config::copy_threshold`] (5 GiB, S3's limit for one `CopyObject`)
//!   with multipart `UploadPartCopy`.
//! - `copy_from_local` uploads a file above
//!   [`S3Config::multipart_threshold`] in parts streamed from the file, up
//!   to [`S3Config::concurrency`] parts at once (8 by default), each read
//!   from its range of the file as it is sent and never held in memory
//!   whole, so memory stays bounded for files of any size;
//!   `copy_to_local` streams into a temporary file renamed at the end.
//! - Errors name the operation, the bucket and the key.
//!
//! Credentials and region come from the standard AWS chain (`aws-config`:
//! environment, profile, SSO, instance role); settings may name a profile, a
//! region and an endpoint URL, and `AWS_ENDPOINT_URL` /
//! `AWS_ENDPOINT_URL_S3` are honoured. Transient errors and throttling are
//! retried by the SDK's standard retry mode ([`S3Config::retry`]).
//! TLS is rustls on ring. No credential is ever held in [`S3Config`], so
//! neither its `Debug` nor any log line can show one.
//!
//! What it is not: a general S3 client (no versioning, ACLs, storage classes
//! or encryption settings) or a cluster.
#![warn(missing_docs)]

pub mod aws;
mod backend;
mod config;
mod lazy;

pub use backend::S3Backend;
pub use config::{S3Config, S3Error, S3FilesystemBuilder};
pub use lazy::LazyS3Filesystem;

/// The S3 filesystem: the shared object filesystem on [`S3Backend`]. Cheap
/// to clone; [`S3Backend`]'s accessors (`config`, `client`) are called on
/// it directly.
pub type S3Filesystem = flow_fs_object::ObjectFilesystem<S3Backend>;

/// A bucket and a key, shown as `s3://bucket/key` in every error.
pub type S3Location = flow_fs_object::ObjectLocation;

/// The SDK whose client [`S3Backend::client`] hands out, re-exported so
/// callers use the same version.
pub use aws_sdk_s3;

/// The shared object filesystem this crate is a backend of, re-exported so
/// callers use the same version.
pub use flow_fs_object;

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
