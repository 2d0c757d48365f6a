//! The Azure Blob storage filesystem: flow's
//! [`Filesystem`](flow_core::Filesystem) on Blob storage, for the HDInsight
//! cluster (`flow-cluster-azure`).
//!
//! The filesystem semantics (keys under a default container and prefix,
//! addresses naming another container, `NAME_$folder$` markers, prefix
//! operations paging by [`AzureBlobConfig::list_page_size`], downloads
//! through a temporary file) are `flow_fs_object`'s, written once for every
//! object store; this crate is their Blob backend ([`AzureBackend`]) and
//! its settings:
//!
//! - Addresses: `az://container/key`, and the ones a Spark or Hadoop job
//!   writes, `wasbs://container/key` and `abfss://container/key` (also
//!   `wasb`, `abfs`): the part after `@` of a Hadoop authority is not read,
//!   the account is the filesystem's.
//! - `cp`/`mv` copy inside the service (Copy Blob, whatever the size,
//!   polled while the service copies asynchronously).
//! - `copy_from_local` of a file above
//!   [`AzureBlobConfig::single_put_threshold`] stages blocks of
//!   [`AzureBlobConfig::block_size`] read from their range of the file as
//!   they are sent (at most [`AzureBlobConfig::upload_concurrency`] in memory),
//!   then commits the block list; `copy_to_local` streams ranged reads.
//! - Requests failing with 408/429/5xx, a connection error or a timeout
//!   are retried with `flow_cloud`'s policy, waiting as long as a refusal
//!   asks (`x-ms-retry-after-ms`, `retry-after-ms`, `Retry-After`; the SDK
//!   keeps no headers in its errors, so the adapter's transport reads
//!   them); the connect, request and idle read timeouts are GCS's.
//! - Credentials: the account key, a SAS token or a connection string, each
//!   a secret written `"env:VAR"` in the settings (refused in plain text),
//!   masked once read. An emulator (Azurite) is an `endpoint` with its
//!   well-known account and key.
//!
//! The SDK is the legacy, unofficial `azure_storage_blobs` 0.21 (the last
//! release; Microsoft's official `azure_storage_blob` has no shared-key
//! authentication). It is kept behind this crate's own small adapter
//! (`blob.rs`, the only module that names an Azure crate), so the move to
//! the official SDK is a change to that file. Entra ID credentials are not
//! wired yet.
//!
//! What it is not: a general Blob client (no leases, tiers, snapshots or
//! metadata), or a cluster.
#![warn(missing_docs)]

mod backend;
mod blob;
mod config;

pub use backend::AzureBackend;
pub use blob::EMULATOR_ACCOUNT;
pub use config::{
    AzureBlobConfig, AzureBlobError, AzureBlobFilesystemBuilder, AzureCredential, SecretRef,
    PLAIN_TEXT_SECRET,
};

/// The Blob filesystem: the shared object filesystem on [`AzureBackend`].
/// Cheap to clone; [`AzureBackend`]'s accessors (`config`,
/// `requests_made`, `create_container`) are called on it directly.
pub type AzureBlobFilesystem = flow_fs_object::ObjectFilesystem<AzureBackend>;

/// A container and a blob name, shown as `az://container/name`.
pub type AzureBlobLocation = flow_fs_object::ObjectLocation;

/// The shared object filesystem this crate is a backend of, re-exported so
/// callers use the same version.
pub use flow_fs_object;

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
