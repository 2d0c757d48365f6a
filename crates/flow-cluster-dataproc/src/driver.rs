//! The end of a job's driver output.
//!
//! `driverOutputResourceUri` names a prefix (`gs://.../jobs/ID/driveroutput`):
//! Dataproc writes the driver's stdout there in numbered parts
//! (`driveroutput.000000000`, `.000000001`, ...). The tail is read from the
//! last parts backwards, at most [`TailOptions::max_bytes`] in all, with
//! `flow_cloud::tail`; parts that are not there yet are waited for up to
//! [`TailOptions::wait`].

use flow_cloud::{Clock, Tail, TailError, TailOptions};
use flow_fs_gcs::GcsFilesystem;
use std::sync::Arc;

/// The last `options.max_bytes` of the driver output under `uri`, or `None`
/// if none appeared within `options.wait`.
pub(crate) async fn driver_output(
    fs: &GcsFilesystem,
    uri: &str,
    options: &TailOptions,
    clock: &Arc<dyn Clock>,
) -> Result<Option<Tail>, TailError> {
    let error = |e: flow_core::FsError| TailError {
        location: uri.to_string(),
        message: e.to_string(),
    };
    let started = clock.now();
    let parts = loop {
        let parts = fs.list_prefix(uri).await.map_err(error)?;
        if !parts.is_empty() {
            break parts;
        }
        let waited = clock.now().saturating_sub(started);
        if waited >= options.wait {
            return Ok(None);
        }
        clock
            .sleep(options.interval.min(options.wait - waited))
            .await;
    };
    let mut text = String::new();
    let mut truncated = false;
    let mut remaining = options.max_bytes;
    for (index, part) in parts.iter().enumerate().rev() {
        if remaining == 0 {
            truncated = true;
            break;
        }
        let part_options = TailOptions {
            max_bytes: remaining,
            wait: std::time::Duration::ZERO,
            ..*options
        };
        let Some(tail) = flow_cloud::tail(fs, part, &part_options, clock).await? else {
            continue;
        };
        remaining = remaining.saturating_sub(tail.text.len());
        text.insert_str(0, &tail.text);
        if tail.truncated {
            truncated = true;
            break;
        }
        if index > 0 && remaining == 0 {
            truncated = true;
            break;
        }
    }
    Ok(Some(Tail { text, truncated }))
}
