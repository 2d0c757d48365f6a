//! A [`FlowStore`](flow_core::FlowStore) on MongoDB, for teams that run flows from several hosts
//! and for Synergy Flow deployments that keep their state there.
//!
//! [`MongoStore`] reads and writes Synergy Flow's `flow` and `step`
//! collections with Synergy's field names, state strings, ObjectIds and BSON
//! dates (see `model.rs`), so a record written by either engine reads back
//! in the other; this engine's fields are additive. Its own collections are
//! `flow_lease` (run leases), `flow_run` (run history), `flow_cluster`
//! (clusters a run launched), `flow_shared_cluster` (which live runs use each
//! shared cluster, see `shared_cluster.rs`), `log_recording` (log lines, shared with
//! Synergy's scheduler) and `flow_log_counter` (log positions). Unique
//! indexes are created at start-up; creating one that exists is a no-op.
//! Those on `log_recording` are partial (documents with a `position`), so
//! Synergy's recordings, which have none of the key fields, are outside
//! them.
//!
//! Several engines on several hosts share one database; the lease is the
//! only coordination:
//!
//! - **Lease**: one conditional `findOneAndUpdate` with `upsert` on
//!   `flow_lease` (free, stale, or ours → take it and `$inc` the token). Two
//!   engines upserting a missing lease at once both try an insert; the
//!   unique index lets one through and the other gets a duplicate-key error
//!   (or, from some wire-protocol servers, no document), answered as "held
//!   by" the winner after reading it. Exactly one wins, and the token only
//!   grows (a release keeps it). Lease times are int64 milliseconds.
//! - **Fencing**, the same with or without transactions: every flow, step,
//!   run and cluster document carries `fence_token`, the largest lease token
//!   that wrote it. `acquire_lease` raises the stamp of every document of
//!   the flow to the new token (`$max`, Synergy's documents included)
//!   before it returns, so once the new holder can read anything, no write
//!   of the old holder lands. A write with token `T` is one conditional
//!   `findOneAndReplace` (key and `fence_token <= T`; the replacement
//!   stamps `T`); when it matches nothing, a read tells a newer stamp
//!   ([`StoreError::Fenced`](flow_core::StoreError::Fenced), nothing written) from a missing document,
//!   which is then inserted (the unique key index settles a race). A write
//!   that *creates* a document re-reads the lease afterwards and, if the
//!   token moved on, deletes what it created and fails with `Fenced`. A
//!   write that landed before the raise is one the new holder then reads.
//! - **`begin_run`** (purge steps, save steps, save the flow, insert the
//!   run) runs in one transaction where the server supports them (a replica
//!   set or a sharded cluster: `hello` reports `setName` or `isdbgrid`).
//!   Elsewhere (a standalone server) the writes go in this order: purge,
//!   steps (pointing at the flow's id, chosen before the flow is written;
//!   after a purge one `insertMany` of them all), flow, run. Interrupted anywhere, the flow record shows the new run only
//!   after its steps are in place, so it is never next to step records of
//!   the purged run; repeating `begin_run` (the next engine does, after the
//!   lease turns stale) completes it.
//! - **Fenced writes go by `_id`**: the store remembers the id of each
//!   document it wrote or found by key, so a step's update is one
//!   `replaceOne` on `_id` + fence (`odm.rs` says why); a filter on
//!   the key fields was a scan of the flow's history on both test servers. The conformance suite interrupts it
//!   after each write ([`MongoStore::interrupt_next_begin_run_after`]).
//! - **Log lines**: a batch bumps the flow's counter once (`$inc` by the
//!   batch's length) and inserts its lines with those positions in one
//!   `insertMany`. Positions grow in the order batches reserve them; a
//!   reader paging by position while two engines append to the *same* flow
//!   at the same instant could see the later reservation's insert first
//!   (one engine writes a flow's lines in order, so this needs a lease
//!   takeover in progress).
//!
//! Written so that it also runs on `nx-27017`, the wire-protocol server the
//! tests use where MongoDB cannot be installed: no `$not`, `$and` spelled
//! out next to `$or` in `findAndModify`, replacements rather than `$set`
//! for documents with dates (it stores `$set` dates as text), and run ids
//! in log lines as hex text (it matches ObjectIds only in `_id`). It
//! accepts `partialFilterExpression` and drops it; its unique indexes (in
//! SQLite) never collide on missing fields, so the partial indexes on
//! `log_recording` matter on MongoDB only.
//!
//! What it is not: a migration tool (it reads older Synergy documents as
//! they are and writes the current shape), nor a client of `mongodb+srv://`
//! URIs (no DNS SRV resolution in this build: list the hosts).
#![warn(missing_docs)]

mod begin_run;
mod connect;
mod error;
mod fence;
mod jobs;
mod lease;
mod logs;
mod model;
mod odm;
mod records;
mod settings;
mod shared_cluster;
mod store;
mod transaction;
mod with_runtime;

pub use error::MongoError;
pub use store::MongoStore;
pub use with_runtime::MongoStoreWithRuntime;

pub use jobs::{collection_name as job_collection_name, JobDoc};
pub use model::{ClusterDoc, FlowDoc, LogDoc, RunDoc, StepDoc, UsageDoc};

/// The `bson` crate the document types ([`FlowDoc`], ...) are made of,
/// re-exported so callers use the same version.
pub use bson;
/// The driver [`MongoStore::database`] hands out, re-exported so callers
/// use the same version.
pub use mongodb;
pub use settings::{
    redact_uri, validate_database, validate_uri, InvalidSetting, MongoOptions, Transactions,
    DEFAULT_SERVER_SELECTION_TIMEOUT,
};

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
