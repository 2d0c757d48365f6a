//! Several runs of the binary at once, as the shared-cluster tests start
//! them on every cloud: spawned quietly, waited for together, and the
//! waiting until a peer shows what a test waits for.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long [`wait_until`] waits: long enough for twelve engines starting
/// at once on a busy machine.
const PATIENCE: Duration = Duration::from_secs(120);

impl super::Home {
    /// `flow ARGS` started in the background, its output discarded.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// `flow run FLOW --timeperiod T` started for each of `timeperiods`.
    pub fn spawn_runs(&self, flow: &str, timeperiods: &[String]) -> Vec<Child> {
        timeperiods
            .iter()
            .map(|tp| self.spawn(&["run", flow, "--timeperiod", tp]))
            .collect()
    }

    /// Asserts that the run of `flow` at each of `timeperiods` is processed.
    pub fn assert_processed(&self, flow: &str, timeperiods: &[String]) {
        for tp in timeperiods {
            let status = self.status_json(flow, tp);
            assert_eq!(status["flow"]["state"], "state_processed", "{status}");
        }
    }
}

/// `n` (at most 28) consecutive daily timeperiods, from 2026-12-01.
pub fn days(n: usize) -> Vec<String> {
    assert!((1..=28).contains(&n), "{n} days");
    (1..=n).map(|day| format!("202612{day:02}00")).collect()
}

/// The exit codes of `runs`, in order, once every one has ended.
pub fn exit_codes(runs: Vec<Child>) -> Vec<Option<i32>> {
    runs.into_iter()
        .map(|mut run| run.wait().unwrap().code())
        .collect()
}

/// Asks `ready` every 50 ms until it returns something (returned), for up
/// to two minutes; then panics saying `what` never happened.
pub fn wait_until<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = ready() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
}
