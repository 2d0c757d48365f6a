//! A process-wide sink for measurements taken deep inside backends (a
//! cloud request sent, a job's end noticed), where no run observer
//! reaches. The `flow-signals` crate installs one when an exporter is
//! configured; until then [`cloud_request`] and [`job_noticed`] are one
//! atomic load and return: nothing is measured and nothing is paid.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// Receives measurements. Called on the backend's task: keep it quick (an
/// exporter queues and returns).
pub trait Meter: Send + Sync {
    /// One request to a cloud API: `backend` (`emr`, `dataproc`, `gcs`, `qubole`, `livy`, ...) and
    /// its call (`DescribeCluster`, `jobs.get`).
    fn cloud_request(&self, backend: &str, call: &str);
    /// A cloud job's end was noticed `delay` after the backend says it
    /// ended (how late polling learns of it).
    fn job_noticed(&self, backend: &str, delay: Duration);
}

static INSTALLED: AtomicBool = AtomicBool::new(false);
static METER: RwLock<Option<Arc<dyn Meter>>> = RwLock::new(None);

/// Makes `meter` the process's sink (replacing any earlier one); `None`
/// removes it.
pub fn install(meter: Option<Arc<dyn Meter>>) {
    let mut slot = METER.write().unwrap_or_else(PoisonError::into_inner);
    INSTALLED.store(meter.is_some(), Ordering::Release);
    *slot = meter;
}

fn with(f: impl FnOnce(&dyn Meter)) {
    if !INSTALLED.load(Ordering::Acquire) {
        return;
    }
    if let Some(meter) = METER
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_deref()
    {
        f(meter);
    }
}

/// Counts one request of `backend`'s API `call` (see [`Meter::cloud_request`]).
pub fn cloud_request(backend: &str, call: &str) {
    with(|m| m.cloud_request(backend, call));
}

/// Records how late a job's end was noticed (see [`Meter::job_noticed`]).
pub fn job_noticed(backend: &str, delay: Duration) {
    with(|m| m.job_noticed(backend, delay));
}
