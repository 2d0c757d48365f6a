//! The exporters' threads run below the priority of the thread that
//! started them (nice +10): on a machine whose cores a run keeps busy,
//! their work yields to the engine's threads. Read from `/proc`, as `ps`
//! and `top` show it.
#![cfg(target_os = "linux")]

use flow_signals::{Exporters, MetricsRegistry, Signals};
use std::time::{Duration, Instant};

/// The nice value of each of this process's threads whose name starts
/// with `name` (names are cut to 15 bytes).
fn nice_of(name: &str) -> Vec<i64> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.trim_end().starts_with(name) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // After "PID (COMM) ": state is field 3, nice field 19.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        found.push(fields[19 - 3].parse().unwrap());
    }
    found
}

/// This thread's nice value.
fn own_nice() -> i64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[19 - 3].parse().unwrap()
}

/// Waits (up to 20 s) until a thread named `name` runs at `nice`.
fn wait_for_nice(name: &str, nice: i64) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = nice_of(name);
        if found.contains(&nice) || Instant::now() > deadline {
            return found;
        }
        std::thread::yield_now();
    }
}

#[test]
fn the_exporters_thread_runs_ten_below_its_starter() {
    let own = own_nice();
    let _signals = Signals::start(Exporters {
        metrics: Some(MetricsRegistry::default()),
        notify: None,
        lineage: None,
    });
    assert_eq!(wait_for_nice("flow-signals", own + 10), [own + 10]);
    assert_eq!(own_nice(), own, "the caller's priority changed");
}

#[cfg(feature = "otel")]
#[test]
fn the_trace_exports_threads_run_ten_below_their_starter() {
    let own = own_nice();
    let traces = flow_signals::otel::Traces::start(&flow_signals::otel::TraceConfig {
        endpoint: "http://127.0.0.1:9".into(),
        headers: Vec::new(),
        service_name: "priority".into(),
        timeout: Duration::from_secs(1),
    })
    .unwrap();
    assert_eq!(
        wait_for_nice("OpenTelemetry", own + 10),
        [own + 10],
        "the batch processor's thread"
    );
    assert_eq!(own_nice(), own, "the caller's priority changed");
    traces.shutdown(Duration::from_secs(1));
}
