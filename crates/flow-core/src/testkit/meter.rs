//! A [`Meter`] for backends' tests: counts the cloud requests the code
//! under test reports, so a test can check a call is counted with the
//! right backend and call name.

use crate::meter::{self, Meter};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// Cloud requests counted by `(backend, call)`. One per test process
/// (the meter is process-wide): tests running in parallel add to the same
/// counts, so assert on what your own calls add.
#[derive(Debug, Default)]
pub struct RecordingMeter {
    requests: Mutex<HashMap<(String, String), u64>>,
}

impl RecordingMeter {
    /// The process's recording meter, installed on first use.
    pub fn installed() -> Arc<RecordingMeter> {
        static RECORDER: OnceLock<Arc<RecordingMeter>> = OnceLock::new();
        RECORDER
            .get_or_init(|| {
                let recorder = Arc::new(RecordingMeter::default());
                meter::install(Some(recorder.clone()));
                recorder
            })
            .clone()
    }

    /// Requests counted so far of `backend`'s `call`.
    pub fn requests(&self, backend: &str, call: &str) -> u64 {
        self.lock()
            .get(&(backend.to_string(), call.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Every `(backend, call)` counted so far, sorted (for a failure's message).
    pub fn calls(&self) -> Vec<(String, String)> {
        let mut calls: Vec<_> = self.lock().keys().cloned().collect();
        calls.sort();
        calls
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u64>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Meter for RecordingMeter {
    fn cloud_request(&self, backend: &str, call: &str) {
        *self
            .lock()
            .entry((backend.to_string(), call.to_string()))
            .or_default() += 1;
    }

    fn job_noticed(&self, _backend: &str, _delay: Duration) {}
}
