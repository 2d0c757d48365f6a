//! A stalled engine is fenced (through the built binary, real processes,
//! SIGSTOP and SIGCONT): while it is stopped its lease turns stale, another
//! engine recovers the flow, and when the first one wakes up it writes
//! nothing more and exits saying it lost the lease.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::text;

const TP: &str = "2026121300";

fn home() -> support::Home {
    let home = support::Home::empty();
    home.write(
        "flow.toml",
        r#"
log_directory = "logs"
data_directory = "data"
number_of_clusters = 2

[cluster]
kind = "local"
root = "."
work_dir = "."

[lease]
ttl = "2s"
heartbeat = "500ms"
"#,
    );
    home
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a process this test started.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Stops `child` at a moment it holds no SQLite write lock. A process
/// stalled inside a write transaction blocks every writer of the file until
/// it resumes (SQLite has one writer at a time; that hazard is SQLite's, not
/// the lease's): this test is about the lease, so it stops the engine
/// between two of its transactions, as a GC pause mostly would.
fn stop_outside_a_transaction(child: &Child, db: &std::path::Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        signal(child, libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(20));
        if conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the engine never stopped outside a transaction"
        );
        signal(child, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_for(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `flow` on `file`, stops it once `started` says so, lets its lease
/// turn stale, recovers with a second engine, then wakes the first one.
/// Returns the first engine's output and the store's state afterwards.
fn stall_and_recover(
    home: &support::Home,
    file: &str,
    started: impl Fn() -> bool,
) -> (std::process::Output, serde_json::Value) {
    let first = home
        .command(&["run", file, "--timeperiod", TP])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the first engine to get going", started);
    stop_outside_a_transaction(&first, &home.db());
    std::thread::sleep(Duration::from_millis(3000));
    let recovered = home.flow(&["recover", file, "--timeperiod", TP]);
    assert_eq!(recovered.status.code(), Some(0), "{}", text(&recovered));
    let after_recover = home.status_json(file, TP);
    let store_after_recover = support::dump_store(&home.db());
    let woken_at = chrono::Utc::now();
    signal(&first, libc::SIGCONT);
    let first = first.wait_with_output().unwrap();
    let after_wake = home.status_json(file, TP);
    assert_eq!(
        after_wake, after_recover,
        "the woken engine wrote over the recovery"
    );
    // Log lines: what it logged once awake (its "lost the run lease" line
    // among them) stays in its log file, out of the store. Lines it had
    // queued before the stall may still land (the limit the fencing page
    // states).
    let store_after_wake = support::dump_store(&home.db());
    let late: Vec<&String> = store_after_wake
        .iter()
        .filter(|row| row.starts_with("log: ") && !store_after_recover.contains(row))
        .filter(|row| {
            row.split("Text(\"")
                .filter_map(|field| field.split('"').next())
                .filter_map(|field| chrono::DateTime::parse_from_rfc3339(field).ok())
                .any(|at| at >= woken_at)
        })
        .collect();
    assert!(late.is_empty(), "the woken engine recorded {late:#?}");
    (first, after_wake)
}

fn assert_lost_the_lease(out: &std::process::Output) {
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lost the run lease"), "{}", text(out));
}

#[test]
fn a_stalled_engine_on_one_step_writes_nothing_after_its_lease_is_taken_over() {
    let home = home();
    home.write(
        "z.toml",
        r#"
name = "z"
time_qualifier = "daily"
[[steps]]
name = "only"
main = { action = "shell", command = "touch started; sleep 1; echo z >> ran.txt" }
"#,
    );
    let (first, state) = stall_and_recover(&home, "z.toml", || home.path("started").exists());
    assert_lost_the_lease(&first);
    assert_eq!(state["flow"]["state"], "state_processed", "{state}");
    assert_eq!(state["steps"][0]["state"], "state_processed", "{state}");
    // The job ran once: recover adopted it rather than starting another.
    assert_eq!(home.read("ran.txt").lines().count(), 1);
    // The next recover finds nothing to do: the record stayed processed.
    let out = home.flow(&["recover", "z.toml", "--timeperiod", TP]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("state_processed, not failed"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_stalled_engine_on_a_30_step_flow_writes_nothing_after_its_lease_is_taken_over() {
    let home = home();
    let mut flow = String::from("name = \"thirty\"\ntime_qualifier = \"daily\"\n");
    for i in 0..30 {
        let deps = if i < 2 {
            String::new()
        } else {
            format!("depends_on = [\"s{}\"]\n", i - 2)
        };
        flow.push_str(&format!(
            "[[steps]]\nname = \"s{i}\"\n{deps}main = {{ action = \"shell\", command = \"sleep 0.1; echo s{i} >> ran.txt\" }}\n"
        ));
    }
    home.write("thirty.toml", &flow);
    let (first, state) = stall_and_recover(&home, "thirty.toml", || {
        home.read("ran.txt").lines().count() >= 6
    });
    assert_lost_the_lease(&first);
    assert_eq!(state["flow"]["state"], "state_processed", "{state}");
    for step in state["steps"].as_array().unwrap() {
        assert_eq!(step["state"], "state_processed", "{state}");
    }
    let mut ran: Vec<String> = home.read("ran.txt").lines().map(String::from).collect();
    ran.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("s{i}")).collect();
    expected.sort();
    assert_eq!(ran, expected, "every step exactly once");
    // The run history says who did what: the first run never recorded its
    // end; the recover closed it as abandoned.
    let history: Vec<serde_json::Value> = {
        let conn = rusqlite::Connection::open(home.db()).unwrap();
        let mut stmt = conn
            .prepare("SELECT mode, outcome, token, error FROM run ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| {
            Ok(serde_json::json!({
                "mode": r.get::<_, String>(0)?,
                "outcome": r.get::<_, Option<String>>(1)?,
                "token": r.get::<_, i64>(2)?,
                "error": r.get::<_, Option<String>>(3)?,
            }))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0]["outcome"], "state_invalid", "{history:?}");
    let closed = history[0]["error"].as_str().unwrap_or_default();
    assert!(
        closed.starts_with("abandoned") && closed.ends_with("closed by run 2"),
        "{history:?}"
    );
    assert_eq!(history[1]["outcome"], "state_processed", "{history:?}");
    assert!(history[1]["token"].as_i64() > history[0]["token"].as_i64());
}
