//! The promises of the book's "Failure and recovery"
//! (docs/src/guide/failure-and-recovery.md) that need the engine's
//! inside view: leases kept alive and lost, a failure halting independent
//! branches, cleanups after every ending with the job's processes really
//! gone, launch and step retries with their backoff, and the cancellation
//! grace. Real SQLite store, real local cluster, real processes.
//!
//! Each test is written so that removing the behaviour fails it: where time
//! matters, the test waits for evidence (a pid file, a stored state) and
//! only asserts lower bounds that a sleep guarantees, or lets a broken
//! engine run into a sentinel (an action that would finish after 20 s).

mod support;

use async_trait::async_trait;
use chrono::Utc;
use flow_core::actions::{Fail, Identity, Shell, Sleep};
use flow_core::{
    Action, ActionContext, ActionError, ActionInstance, ActionOutcome, Cluster, ClusterError,
    ClusterFactory, ClusterHandle, ExecutionContext, Filesystem, FlowDefinition, FlowKey,
    FlowState, FlowStore, Job, JobContext, JobHandle, JobStatus, LeaseOutcome, RetryPolicy,
    StepDefinition, StepState, Template,
};
use flow_engine::{EngineError, EngineOptions, RunReport};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

fn act(a: impl Action + 'static) -> ActionInstance {
    ActionInstance::new(Arc::new(a))
}

fn shell(command: &str) -> ActionInstance {
    act(Shell {
        command: Template::parse(command).unwrap(),
    })
}

/// A shell job that writes its process group id to `pid_file` (field 5
/// of its `/proc/$$/stat`: the local cluster's job wrapper leads the group,
/// so `$$` is not it), starts a background child in the same group and
/// sleeps: several processes to kill.
fn long_job(pid_file: &Path) -> String {
    format!(
        "sleep 60 & sleep 60 & read -r l < /proc/$$/stat && set -- $l && echo $5 > {}; wait",
        pid_file.display()
    )
}

/// Keeps tokio's paused clock still until `file` holds a pid (the job is
/// running, its children started): a task that is always ready keeps the
/// runtime from ever idling, and a paused clock moves only when it idles.
/// So a timeout cannot fire before the job is under way, however slowly
/// the machine starts it.
async fn hold_the_clock_until_pid(file: &Path) {
    while std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .is_none()
    {
        tokio::task::yield_now().await;
    }
}

/// Waits until `file` holds a number (a job wrote its pid), and returns it.
async fn wait_for_pid(file: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The processes of process group `pgid` that still run (zombies, which
/// only wait for their parent to read their status, do not count).
fn live_group_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and ')'.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            members.push(pid);
        }
    }
    members
}

/// Asserts that nothing of the job whose group is `pgid` still runs, giving
/// the kernel a moment to finish delivering SIGKILL.
async fn assert_group_gone(pgid: i32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = live_group_members(pgid);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: processes {left:?} of job group {pgid} still run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The store's file, for writes "by another process".
fn other_connection(bench: &Bench) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(bench.path("flow.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

fn flow_log(bench: &Bench, flow: &str) -> String {
    std::fs::read_to_string(bench.logs().join(flow).join(format!("{flow}.log"))).unwrap_or_default()
}

fn step_log(bench: &Bench, flow: &str, step: &str) -> String {
    std::fs::read_to_string(bench.logs().join(flow).join(format!("{step}.log"))).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Leases: kept alive by the heartbeat, and lost.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_living_several_ttls_keeps_its_lease() {
    let bench = Bench::new();
    // The heartbeat comes every 100 ms; the ttl leaves 1.4 s for a late one.
    let ttl = Duration::from_millis(1500);
    let graph = Arc::new(
        FlowDefinition::new("long_lived")
            .step(StepDefinition::new(
                "wait",
                act(Sleep { duration: 3 * ttl }),
            ))
            .build()
            .unwrap(),
    );
    let options = EngineOptions {
        lease_ttl: ttl,
        heartbeat_interval: Duration::from_millis(100),
        ..bench.options()
    };
    let engine = bench.engine_with(&graph, TP, 1, bench.local(), options);
    let owner = engine.owner().to_string();
    let key = FlowKey::new("long_lived", tp(TP));
    let running = tokio::spawn(async move { engine.run().await });
    // The run holds the lease once its step is in progress.
    loop {
        let steps = bench.store.get_steps(&key).await.unwrap();
        if steps.iter().any(|s| s.state == StepState::InProgress) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();

    // Another engine asks for the lease every 100 ms for the whole run, as
    // `flow run` would, with the same ttl. Without renewals the lease turns
    // stale one ttl after the start and the challenger takes it.
    let mut challenges_after_ttl = 0;
    let mut heartbeats = std::collections::BTreeSet::new();
    while !running.is_finished() {
        match bench
            .store
            .acquire_lease(&key, "challenger:1:0", Utc::now(), ttl)
            .await
            .unwrap()
        {
            LeaseOutcome::HeldBy {
                owner: holder,
                heartbeat_at,
            } => {
                assert_eq!(holder, owner);
                heartbeats.insert(heartbeat_at);
            }
            LeaseOutcome::Acquired(lease) => {
                // Released at the very end of the run: only then is this fine.
                if !running.is_finished() {
                    let stored = bench.store.get_flow(&key).await.unwrap();
                    assert!(
                        stored.is_some_and(|f| f.state == FlowState::Processed),
                        "the lease was taken over {:?} into a live run",
                        started.elapsed()
                    );
                }
                bench.store.release_lease(&lease).await.unwrap();
                break;
            }
        }
        if started.elapsed() > ttl + Duration::from_millis(200) {
            challenges_after_ttl += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert!(!report.canceled);
    assert!(
        challenges_after_ttl >= 5,
        "the run must be challenged well past its ttl ({challenges_after_ttl} challenges)"
    );
    assert!(
        heartbeats.len() >= 5,
        "the heartbeat moved only {} times in 3 ttls",
        heartbeats.len()
    );
}

/// Every row of the tables whose writes are fenced by the lease (flow,
/// step, run, cluster), sorted, as text.
fn fenced_rows(bench: &Bench) -> Vec<String> {
    let conn = other_connection(bench);
    let mut out = Vec::new();
    for table in ["flow", "step", "run", "cluster"] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let columns = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |row| {
                (0..columns)
                    .map(|i| {
                        row.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|cells| format!("{table}: {}", cells.join(" | ")))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        out.extend(rows);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_is_stolen_stops_itself() {
    let bench = Bench::new();
    let pid_file = bench.path("job.pid");
    let ran = bench.path("ran.txt");
    let graph = Arc::new(
        FlowDefinition::new("stolen")
            .step(StepDefinition::new("long", shell(&long_job(&pid_file))))
            .step(StepDefinition::new("next", append(&ran)).depends_on(["long"]))
            .build()
            .unwrap(),
    );
    // A long ttl: the lease never turns stale by itself here.
    let options = EngineOptions {
        lease_ttl: Duration::from_secs(600),
        heartbeat_interval: Duration::from_millis(100),
        ..bench.options()
    };
    let counting = Arc::new(Counting::new(bench.local()));
    let engine = bench.engine_with(&graph, TP, 1, counting.clone(), options);
    let running = tokio::spawn(async move { engine.run().await });
    let pgid = wait_for_pid(&pid_file).await;
    assert!(!live_group_members(pgid).is_empty(), "the job runs");

    // Another engine takes the lease over, written straight into the
    // store's file: a new owner and a newer token, as a takeover writes.
    let thief = "thief-host:4242:0badc0de";
    let changed = other_connection(&bench)
        .execute(
            "UPDATE lease SET owner = ?1, token = token + 1, heartbeat_at = ?2 \
             WHERE flow_name = 'stolen'",
            rusqlite::params![
                thief,
                Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ],
        )
        .unwrap();
    assert_eq!(changed, 1, "the run holds a lease row");
    let records = fenced_rows(&bench);

    // The job sleeps a minute; the run must stop long before, saying why.
    let result = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the run went on after losing its lease")
        .unwrap();
    match &result {
        Err(EngineError::LeaseLost { holder, .. }) => {
            assert_eq!(holder.as_deref(), Some(thief))
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    // It wrote nothing more, started nothing more, and left the running job
    // and its cluster to the new holder.
    assert_eq!(fenced_rows(&bench), records, "the loser wrote records");
    assert!(lines(&ran).is_empty(), "no step starts after the loss");
    assert_eq!(counting.terminated.load(Ordering::SeqCst), 0);
    assert!(
        !live_group_members(pgid).is_empty(),
        "the job was left running for the new holder"
    );
    // The loser does not release or overwrite the new holder's lease.
    let key = FlowKey::new("stolen", tp(TP));
    let stored = bench.store.get_lease(&key).await.unwrap().unwrap();
    assert_eq!(stored.owner.as_deref(), Some(thief));
    // The test stands in for the new holder: end the job.
    // SAFETY: killpg on the job group this test started.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
    assert_group_gone(pgid, "after the test killed it").await;
}

// ---------------------------------------------------------------------------
// A failure: no new step starts, running steps finish.

/// Appends "STEP started" to `log`, then waits for `until` to hold before
/// it ends (appending "STEP finished") or fails.
struct Gated {
    log: PathBuf,
    until: Gate,
    fail: bool,
}

enum Gate {
    /// `log` has a line equal to this.
    Line(String),
    /// This step's record is stored `invalid`, and then a moment has passed.
    StoredInvalid(Arc<dyn FlowStore>, FlowKey, String),
}

impl std::fmt::Debug for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gated").field("fail", &self.fail).finish()
    }
}

fn append_line(file: &Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

#[async_trait]
impl Action for Gated {
    fn kind(&self) -> &str {
        "gated"
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        append_line(&self.log, &format!("{} started", cx.step));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let open = match &self.until {
                Gate::Line(line) => lines(&self.log).iter().any(|l| l == line),
                Gate::StoredInvalid(store, key, step) => store
                    .get_steps(key)
                    .await
                    .unwrap()
                    .iter()
                    .any(|s| &s.step_name == step && s.state == StepState::Invalid),
            };
            if open {
                break;
            }
            if Instant::now() > deadline {
                return Err(ActionError::failed("the gate never opened"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if matches!(self.until, Gate::StoredInvalid(..)) {
            // The failed step's worker halts the run right after its store
            // write; give it ample time so "b ends after a failed" holds.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if self.fail {
            append_line(&self.log, &format!("{} failing", cx.step));
            return Err(ActionError::failed("failed while b runs"));
        }
        append_line(&self.log, &format!("{} finished", cx.step));
        Ok(ActionOutcome::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_starts_nothing_new_and_lets_running_steps_finish() {
    let bench = Bench::new();
    let log = bench.path("events.txt");
    let key = FlowKey::new("halting", tp(TP));
    // Four independent steps on two clusters: a and b start; c and d wait
    // in the ready queue. a fails while b runs; b ends after a's failure is
    // stored; e depends on b only.
    let graph = Arc::new(
        FlowDefinition::new("halting")
            .step(StepDefinition::new(
                "a",
                act(Gated {
                    log: log.clone(),
                    until: Gate::Line("b started".into()),
                    fail: true,
                }),
            ))
            .step(StepDefinition::new(
                "b",
                act(Gated {
                    log: log.clone(),
                    until: Gate::StoredInvalid(bench.store.clone(), key.clone(), "a".into()),
                    fail: false,
                }),
            ))
            .step(StepDefinition::new("c", append(&log)))
            .step(StepDefinition::new("d", append(&log)))
            .step(StepDefinition::new("e", append(&log)).depends_on(["b"]))
            .build()
            .unwrap(),
    );
    let report = bench.engine(&graph, TP, 2).run().await.unwrap();
    assert_eq!(report.state, FlowState::Invalid);
    assert!(!report.canceled);
    let events = lines(&log);
    assert_eq!(
        sorted(events.clone()),
        ["a failing", "a started", "b finished", "b started"],
        "c, d (ready, independent) and e (b's dependant) never start: {events:?}"
    );
    let failing = events.iter().position(|l| l == "a failing").unwrap();
    let finished = events.iter().position(|l| l == "b finished").unwrap();
    assert!(
        failing < finished,
        "b was running when a failed: {events:?}"
    );
    assert_eq!(
        bench.step_states("halting", TP).await,
        [
            ("a", "state_invalid"),
            ("b", "state_processed"),
            ("c", "state_embryo"),
            ("d", "state_embryo"),
            ("e", "state_embryo"),
        ]
        .map(|(s, t)| (s.to_string(), t.to_string()))
    );
    let flow = bench.store.get_flow(&key).await.unwrap().unwrap();
    assert_eq!(flow.state, FlowState::Invalid);
}

// ---------------------------------------------------------------------------
// Cleanups after every ending, and the job really gone.

/// Runs `inner` and records, in `log`, `run STEP.ACTION` before and
/// `cleanup STEP.ACTION` when the engine calls its cleanup.
#[derive(Debug)]
struct Recorded {
    inner: Arc<dyn Action>,
    log: PathBuf,
}

#[async_trait]
impl Action for Recorded {
    fn kind(&self) -> &str {
        self.inner.kind()
    }
    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        append_line(&self.log, &format!("run {}.{}", cx.step, cx.action));
        self.inner.run(cx).await
    }
    async fn cleanup(&self, cx: &ActionContext<'_>) -> Result<(), ActionError> {
        append_line(&self.log, &format!("cleanup {}.{}", cx.step, cx.action));
        self.inner.cleanup(cx).await
    }
}

fn recorded(log: &Path, inner: ActionInstance, name: &str) -> ActionInstance {
    let timeout = inner.timeout;
    let mut instance = act(Recorded {
        inner: inner.action,
        log: log.to_path_buf(),
    })
    .named(name);
    instance.timeout = timeout;
    instance
}

/// One step `s` with a recorded `pre`, `main` and `post` action.
fn three_phase(log: &Path, main: ActionInstance) -> StepDefinition {
    StepDefinition::new("s", recorded(log, main, "main"))
        .pre(recorded(log, act(Identity), "pre"))
        .post(recorded(log, act(Identity), "post"))
}

async fn run_one_step(
    bench: &Bench,
    flow: &str,
    step: StepDefinition,
    cancel_on_pid: Option<PathBuf>,
) -> RunReport {
    let graph = Arc::new(FlowDefinition::new(flow).step(step).build().unwrap());
    let counting = Arc::new(Counting::new(bench.local()));
    let engine = bench.engine_with(&graph, TP, 1, counting.clone(), bench.options());
    if let Some(pid_file) = cancel_on_pid {
        // What `flow` does on Ctrl-C or SIGTERM: fire the engine's token.
        let cancel = engine.cancel_token();
        tokio::spawn(async move {
            let pgid = wait_for_pid(&pid_file).await;
            // Only a running job makes "gone afterwards" mean something.
            if !live_group_members(pgid).is_empty() {
                cancel.cancel();
            }
        });
    }
    let report = engine.run().await.unwrap();
    assert_eq!(counting.terminated.load(Ordering::SeqCst), 1, "{flow}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanups_run_after_success_failure_and_cancellation() {
    let bench = Bench::new();
    // Success: every action ran, each followed by its cleanup, in order.
    let log = bench.path("success.txt");
    let report = run_one_step(&bench, "success", three_phase(&log, shell("true")), None).await;
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(
        lines(&log),
        [
            "run s.pre",
            "cleanup s.pre",
            "run s.main",
            "cleanup s.main",
            "run s.post",
            "cleanup s.post"
        ]
    );

    // Failure of the main job: its cleanup runs; post never starts.
    let log = bench.path("failure.txt");
    let report = run_one_step(&bench, "failure", three_phase(&log, shell("exit 3")), None).await;
    assert_eq!(report.state, FlowState::Invalid);
    assert_eq!(
        lines(&log),
        ["run s.pre", "cleanup s.pre", "run s.main", "cleanup s.main"]
    );

    // Cancellation (Ctrl-C and SIGTERM fire this token in `flow`).
    let log = bench.path("cancel.txt");
    let pid_file = bench.path("cancel.pid");
    let report = run_one_step(
        &bench,
        "cancel",
        three_phase(&log, shell(&long_job(&pid_file))),
        Some(pid_file.clone()),
    )
    .await;
    assert!(report.canceled);
    assert_eq!(report.state, FlowState::Invalid);
    assert_eq!(
        lines(&log),
        ["run s.pre", "cleanup s.pre", "run s.main", "cleanup s.main"]
    );
    assert_group_gone(wait_for_pid(&pid_file).await, "after cancellation").await;
    assert_eq!(
        bench.step_states("cancel", TP).await,
        [("s".to_string(), "state_canceled".to_string())]
    );
}

/// On tokio's paused clock, held still until the job wrote its pid: the
/// timeouts (the engine's timers are tokio's) fire while the job runs,
/// never before it started, however slow the machine.
#[tokio::test(start_paused = true)]
async fn timeouts_stop_the_whole_job_and_run_its_cleanup() {
    let bench = Bench::new();
    // Timeout of the main action: the job is stopped, its whole process
    // group is gone, the cleanup ran.
    let log = bench.path("timeout.txt");
    let pid_file = bench.path("timeout.pid");
    let main = shell(&long_job(&pid_file)).with_timeout(Duration::from_millis(500));
    let (report, ()) = tokio::join!(
        run_one_step(&bench, "timeout", three_phase(&log, main), None),
        hold_the_clock_until_pid(&pid_file)
    );
    assert_eq!(report.state, FlowState::Invalid);
    assert_eq!(
        lines(&log),
        ["run s.pre", "cleanup s.pre", "run s.main", "cleanup s.main"]
    );
    let pgid = wait_for_pid(&pid_file).await;
    assert_group_gone(pgid, "after the action's timeout").await;
    let steps = bench.snapshot("timeout", TP).await.1;
    assert!(
        steps[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("timed out"),
        "{:?}",
        steps[0].error
    );

    // A whole step's timeout, the same way.
    let log = bench.path("step_timeout.txt");
    let pid_file = bench.path("step_timeout.pid");
    let step =
        three_phase(&log, shell(&long_job(&pid_file))).with_timeout(Duration::from_millis(500));
    let (report, ()) = tokio::join!(
        run_one_step(&bench, "step_timeout", step, None),
        hold_the_clock_until_pid(&pid_file)
    );
    assert_eq!(report.state, FlowState::Invalid);
    assert_eq!(
        lines(&log),
        ["run s.pre", "cleanup s.pre", "run s.main", "cleanup s.main"]
    );
    assert_group_gone(wait_for_pid(&pid_file).await, "after the step's timeout").await;
}

// ---------------------------------------------------------------------------
// Cancellation grace: an action that ignores its token is dropped.

/// Ignores its token: sleeps `hold`, then sets `completed`. Sets `dropped`
/// when its future is dropped before that.
#[derive(Debug)]
struct Stubborn {
    hold: Duration,
    started: Arc<AtomicBool>,
    completed: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Action for Stubborn {
    fn kind(&self) -> &str {
        "stubborn"
    }
    async fn run(&self, _cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        self.started.store(true, Ordering::SeqCst);
        let guard = SetOnDrop(self.dropped.clone());
        tokio::time::sleep(self.hold).await;
        std::mem::forget(guard);
        self.completed.store(true, Ordering::SeqCst);
        Ok(ActionOutcome::Done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_grace_drops_an_action_that_ignores_its_token() {
    let bench = Bench::new();
    for case in ["timeout", "cancel"] {
        let flags: [Arc<AtomicBool>; 3] = Default::default();
        let [started, completed, dropped] = flags;
        let mut stubborn = act(Stubborn {
            // A broken grace would wait this long and see it complete.
            hold: Duration::from_secs(20),
            started: started.clone(),
            completed: completed.clone(),
            dropped: dropped.clone(),
        });
        if case == "timeout" {
            stubborn = stubborn.with_timeout(Duration::from_millis(200));
        }
        let flow = format!("grace_{case}");
        let graph = Arc::new(
            FlowDefinition::new(flow.clone())
                .step(StepDefinition::new("s", stubborn))
                .build()
                .unwrap(),
        );
        let options = EngineOptions {
            cancel_grace: Duration::from_millis(300),
            ..bench.options()
        };
        let engine = bench.engine_with(&graph, TP, 1, bench.local(), options);
        if case == "cancel" {
            let cancel = engine.cancel_token();
            let started = started.clone();
            tokio::spawn(async move {
                while !started.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                cancel.cancel();
            });
        }
        let report = engine.run().await.unwrap();
        assert!(started.load(Ordering::SeqCst), "{case}");
        assert!(
            !completed.load(Ordering::SeqCst),
            "{case}: the engine waited for the action instead of dropping it"
        );
        assert!(
            dropped.load(Ordering::SeqCst),
            "{case}: the action was dropped"
        );
        assert_eq!(report.state, FlowState::Invalid, "{case}");
        let step = bench.snapshot(&flow, TP).await.1.remove(0);
        if case == "timeout" {
            assert_eq!(step.state, StepState::Invalid);
            assert!(
                step.error
                    .as_deref()
                    .unwrap_or_default()
                    .contains("action 'stubborn' timed out after 200ms"),
                "{:?}",
                step.error
            );
        } else {
            assert!(report.canceled);
            assert_eq!(step.state, StepState::Canceled);
        }
    }
}

// ---------------------------------------------------------------------------
// Retries: step retries back off exponentially up to the cap; transient
// cluster launch failures are retried with backoff.

/// Fails the first `failures` calls; records when each call came.
#[derive(Debug)]
struct FailsFirst {
    failures: usize,
    calls: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

#[async_trait]
impl Action for FailsFirst {
    fn kind(&self) -> &str {
        "fails_first"
    }
    async fn run(&self, _cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let mut calls = self.calls.lock().unwrap();
        calls.push(tokio::time::Instant::now());
        if calls.len() <= self.failures {
            return Err(ActionError::failed(format!("call {} fails", calls.len())));
        }
        Ok(ActionOutcome::Done)
    }
}

/// The gaps between consecutive instants (tokio's: on a paused clock, the
/// time the engine's sleeps took, exactly).
fn gaps(instants: &[tokio::time::Instant]) -> Vec<Duration> {
    instants.windows(2).map(|w| w[1] - w[0]).collect()
}

/// On tokio's paused clock: time moves only when every task waits, to the
/// next timer due, so each gap between attempts is exactly the sleep the
/// engine took: the cap is checked as an upper bound too.
#[tokio::test(start_paused = true)]
async fn step_retry_delays_double_up_to_the_cap() {
    let bench = Bench::new();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let policy = RetryPolicy {
        retries: 4,
        delay: Duration::from_millis(60),
        backoff: 2,
        max_delay: Duration::from_millis(150),
    };
    let graph = Arc::new(
        FlowDefinition::new("backoff")
            .step(
                StepDefinition::new(
                    "flaky",
                    act(FailsFirst {
                        failures: 4,
                        calls: calls.clone(),
                    }),
                )
                .with_retry(policy),
            )
            .build()
            .unwrap(),
    );
    let report = bench.engine(&graph, TP, 1).run().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    let step = bench.snapshot("backoff", TP).await.1.remove(0);
    assert_eq!(step.attempts, 5);
    let expected = [60, 120, 150, 150].map(Duration::from_millis);
    let log = step_log(&bench, "backoff", "flaky");
    for (i, delay) in expected.iter().enumerate() {
        let line = format!(
            "attempt {} of 5 failed: action 'fails_first' failed: call {} fails; retrying in {}ms",
            i + 1,
            i + 1,
            delay.as_millis()
        );
        assert!(log.contains(&line), "missing {line:?} in:\n{log}");
    }
    // Each attempt is logged.
    for attempt in 1..=5 {
        let line = format!(" flaky INFO attempt {attempt} of 5\n");
        assert!(log.contains(&line), "missing {line:?} in:\n{log}");
    }
    // Each wait was the delay logged: never shorter, never longer.
    assert_eq!(gaps(&calls.lock().unwrap()), expected);
}

/// A factory whose clusters fail to launch, transiently, `failures` times
/// each (`usize::MAX`: always) before launching the real local cluster.
struct FlakyLaunch {
    inner: Arc<dyn ClusterFactory>,
    failures: Vec<usize>,
    created: AtomicUsize,
    attempts: Arc<Mutex<Vec<Vec<tokio::time::Instant>>>>,
    terminated: Arc<AtomicUsize>,
}

struct FlakyCluster {
    inner: Arc<dyn Cluster>,
    number: usize,
    failures: usize,
    attempts: Arc<Mutex<Vec<Vec<tokio::time::Instant>>>>,
    terminated: Arc<AtomicUsize>,
}

impl ClusterFactory for FlakyLaunch {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn create(
        &self,
        name: &str,
        context: &ExecutionContext,
    ) -> Result<Arc<dyn Cluster>, ClusterError> {
        let number = self.created.fetch_add(1, Ordering::SeqCst);
        self.attempts.lock().unwrap().push(Vec::new());
        Ok(Arc::new(FlakyCluster {
            inner: self.inner.create(name, context)?,
            number,
            failures: self.failures[number],
            attempts: self.attempts.clone(),
            terminated: self.terminated.clone(),
        }))
    }
}

#[async_trait]
impl Cluster for FlakyCluster {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn provision(&self) -> Result<ClusterHandle, ClusterError> {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            attempts[self.number].push(tokio::time::Instant::now());
            attempts[self.number].len()
        };
        if attempt <= self.failures {
            return Err(ClusterError::Launch {
                cluster: self.name().to_string(),
                message: format!("capacity exceeded (attempt {attempt})"),
                transient: true,
            });
        }
        self.inner.provision().await
    }
    async fn wait_ready(&self) -> Result<(), ClusterError> {
        self.inner.wait_ready().await
    }
    async fn adopt(&self, handle: &ClusterHandle) -> Result<bool, ClusterError> {
        self.inner.adopt(handle).await
    }
    fn prepare(&self, job: &Job, cx: &JobContext<'_>) -> Result<JobHandle, ClusterError> {
        self.inner.prepare(job, cx)
    }
    async fn submit(
        &self,
        handle: &JobHandle,
        job: &Job,
        cx: &JobContext<'_>,
    ) -> Result<JobHandle, ClusterError> {
        self.inner.submit(handle, job, cx).await
    }
    async fn wait(&self, handle: &JobHandle, cx: &JobContext<'_>) -> Result<(), ClusterError> {
        self.inner.wait(handle, cx).await
    }
    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, ClusterError> {
        self.inner.status(handle).await
    }
    async fn cancel(&self, handle: &JobHandle) -> Result<(), ClusterError> {
        self.inner.cancel(handle).await
    }
    async fn terminate(&self) -> Result<(), ClusterError> {
        self.terminated.fetch_add(1, Ordering::SeqCst);
        self.inner.terminate().await
    }
    fn filesystem(&self) -> &dyn Filesystem {
        self.inner.filesystem()
    }
}

/// On tokio's paused clock, like the step retries above.
#[tokio::test(start_paused = true)]
async fn transient_launch_failures_are_retried_with_backoff() {
    let bench = Bench::new();
    let ran = bench.path("ran.txt");
    let graph = Arc::new(
        FlowDefinition::new("launching")
            .step(StepDefinition::new("a", append(&ran)))
            .step(StepDefinition::new("b", append(&ran)))
            .build()
            .unwrap(),
    );
    let policy = RetryPolicy {
        retries: 3,
        delay: Duration::from_millis(50),
        backoff: 2,
        max_delay: Duration::from_millis(120),
    };
    // Cluster 0 launches at its fourth attempt; cluster 1 never does and is
    // given up after its retries; the run goes on on cluster 0.
    let factory = Arc::new(FlakyLaunch {
        inner: bench.local(),
        failures: vec![3, usize::MAX],
        created: AtomicUsize::new(0),
        attempts: Arc::default(),
        terminated: Arc::default(),
    });
    let options = EngineOptions {
        launch_retry: policy,
        ..bench.options()
    };
    let report = bench
        .engine_with(&graph, TP, 2, factory.clone(), options)
        .run()
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(report.clusters_launched, 1);
    assert_eq!(sorted(lines(&ran)), ["a", "b"]);
    assert_eq!(
        factory.terminated.load(Ordering::SeqCst),
        2,
        "both terminated"
    );
    let attempts = factory.attempts.lock().unwrap().clone();
    assert_eq!(attempts[0].len(), 4, "three retries, then launched");
    assert_eq!(attempts[1].len(), 4, "three retries, then given up");
    let expected = [50, 100, 120].map(Duration::from_millis);
    for (cluster, times) in attempts.iter().enumerate() {
        assert_eq!(gaps(times), expected, "cluster {cluster}");
    }
    let log = flow_log(&bench, "launching");
    for (retry, delay) in expected.iter().enumerate() {
        let line = format!(
            "launch failed (capacity exceeded (attempt {})); retry {} of 3 in {delay:?}",
            retry + 1,
            retry + 1
        );
        assert_eq!(
            log.matches(&line).count(),
            2,
            "{line:?} once per cluster in:\n{log}"
        );
    }
    assert!(log.contains("capacity exceeded (attempt 4)"), "{log}");

    // Without transient failures nothing is retried; a permanent failure
    // of every cluster fails the flow.
    let factory = Arc::new(FlakyLaunch {
        inner: bench.local(),
        failures: vec![usize::MAX],
        created: AtomicUsize::new(0),
        attempts: Arc::default(),
        terminated: Arc::default(),
    });
    let options = EngineOptions {
        launch_retry: RetryPolicy {
            retries: 0,
            ..policy
        },
        ..bench.options()
    };
    let report = bench
        .engine_with(&graph, "2026112900", 1, factory.clone(), options)
        .run()
        .await
        .unwrap();
    assert_eq!(report.state, FlowState::Invalid);
    assert_eq!(factory.attempts.lock().unwrap()[0].len(), 1);
    assert_eq!(factory.terminated.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_steps_leave_the_error_and_the_attempt_count() {
    let bench = Bench::new();
    let graph = Arc::new(
        FlowDefinition::new("counted")
            .step(
                StepDefinition::new(
                    "f",
                    act(Fail {
                        message: Some(Template::parse("broken on purpose").unwrap()),
                    }),
                )
                .with_retry(RetryPolicy {
                    retries: 2,
                    delay: Duration::from_millis(1),
                    backoff: 2,
                    max_delay: Duration::from_millis(2),
                }),
            )
            .step(StepDefinition::new("once", act(Identity)))
            .build()
            .unwrap(),
    );
    // Two clusters: `once` runs next to `f`, not after its failure.
    let report = bench.engine(&graph, TP, 2).run().await.unwrap();
    assert_eq!(report.state, FlowState::Invalid);
    let step = bench.snapshot("counted", TP).await.1.remove(0);
    assert_eq!(step.state, StepState::Invalid);
    assert_eq!(step.attempts, 3);
    assert_eq!(
        step.error.as_deref(),
        Some("action 'fail' failed: broken on purpose")
    );
    let log = step_log(&bench, "counted", "f");
    for attempt in 1..=2 {
        assert!(
            log.contains(&format!("attempt {attempt} of 3 failed")),
            "{log}"
        );
    }
    assert!(log.contains(" f INFO attempt 3 of 3\n"), "{log}");
    // A step without retries has a single attempt, not worth a line.
    let log = step_log(&bench, "counted", "once");
    assert!(log.contains("state_processed"), "{log}");
    assert!(!log.contains("attempt"), "{log}");
}

// ---------------------------------------------------------------------------
// Every state change is stored before the engine moves on.

/// Records the stored state of step `of` as this action's step starts.
struct SawStored {
    store: Arc<dyn FlowStore>,
    key: FlowKey,
    of: String,
    out: PathBuf,
}

impl std::fmt::Debug for SawStored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SawStored").field("of", &self.of).finish()
    }
}

#[async_trait]
impl Action for SawStored {
    fn kind(&self) -> &str {
        "saw_stored"
    }
    async fn run(&self, _cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let steps = self.store.get_steps(&self.key).await.unwrap();
        let seen = steps
            .iter()
            .find(|s| s.step_name == self.of)
            .map_or("missing".to_string(), |s| s.state.as_str().to_string());
        append_line(&self.out, &seen);
        Ok(ActionOutcome::Done)
    }
}

/// A shell job that announces `phase` in `dir/phase` and waits for
/// `dir/go-<phase>`.
fn phase_job(dir: &Path, phase: &str) -> ActionInstance {
    shell(&format!(
        "echo {phase} > {dir}/phase.tmp && mv {dir}/phase.tmp {dir}/phase; \
         while [ ! -e {dir}/go-{phase} ]; do sleep 0.01; done",
        dir = dir.display()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phase_change_is_stored_before_the_engine_moves_on() {
    use flow_core::ActionSetState::{Complete, Failed, Pending, Running};
    let bench = Bench::new();
    let dir = bench.dir.path();
    let key = FlowKey::new("phases", tp(TP));
    let seen = bench.path("seen.txt");
    let graph = Arc::new(
        FlowDefinition::new("phases")
            .step(
                StepDefinition::new("s", phase_job(dir, "main"))
                    .pre(phase_job(dir, "pre"))
                    .post(phase_job(dir, "post")),
            )
            .step(
                StepDefinition::new(
                    "t",
                    act(SawStored {
                        store: bench.store.clone(),
                        key: key.clone(),
                        of: "s".into(),
                        out: seen.clone(),
                    }),
                )
                .depends_on(["s"]),
            )
            .build()
            .unwrap(),
    );
    let engine = bench.engine(&graph, TP, 1);
    let running = tokio::spawn(async move { engine.run().await });
    for (phase, groups) in [
        ("pre", [Running, Pending, Pending]),
        ("main", [Complete, Running, Pending]),
        ("post", [Complete, Complete, Running]),
    ] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_to_string(bench.path("phase"))
            .unwrap_or_default()
            .trim()
            != phase
        {
            assert!(Instant::now() < deadline, "phase {phase} never began");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // While the phase's job runs, the store already says so.
        let s = bench.snapshot("phases", TP).await.1.remove(0);
        assert_eq!(s.state, StepState::InProgress, "{phase}");
        assert_eq!(s.attempts, 1, "{phase}");
        assert!(s.started_at.is_some() && s.finished_at.is_none(), "{phase}");
        assert_eq!(
            [s.pre_state, s.main_state, s.post_state],
            groups,
            "during {phase}"
        );
        std::fs::write(bench.path(&format!("go-{phase}")), "").unwrap();
    }
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.state, FlowState::Processed);
    let s = bench.snapshot("phases", TP).await.1.remove(0);
    assert_eq!(s.state, StepState::Processed);
    assert_eq!([s.pre_state, s.main_state, s.post_state], [Complete; 3]);
    assert!(s.finished_at.is_some());
    // The dependant started only after s's final state was stored.
    assert_eq!(lines(&seen), ["state_processed"]);

    // A failed main: its group failed, post never entered, the error and
    // the end stored.
    let graph = Arc::new(
        FlowDefinition::new("phases_failing")
            .step(
                StepDefinition::new(
                    "s",
                    act(Fail {
                        message: Some(Template::parse("no").unwrap()),
                    }),
                )
                .pre(act(Identity))
                .post(act(Identity)),
            )
            .build()
            .unwrap(),
    );
    bench.engine(&graph, TP, 1).run().await.unwrap();
    let s = bench.snapshot("phases_failing", TP).await.1.remove(0);
    assert_eq!(s.state, StepState::Invalid);
    assert_eq!(
        [s.pre_state, s.main_state, s.post_state],
        [Complete, Failed, Pending]
    );
    assert_eq!(s.error.as_deref(), Some("action 'fail' failed: no"));
    assert!(s.finished_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_a_mode_resets_but_never_starts_are_stored_as_embryo() {
    let bench = Bench::new();
    let ran = bench.path("ran.txt");
    let (p_fails, q_fails) = (bench.path("p-fails"), bench.path("q-fails"));
    let graph = Arc::new(
        FlowDefinition::new("resets")
            .step(StepDefinition::new(
                "p",
                append_failing_while(&ran, &p_fails),
            ))
            .step(StepDefinition::new("q", append_failing_while(&ran, &q_fails)).depends_on(["p"]))
            .build()
            .unwrap(),
    );
    let engine = bench.engine(&graph, TP, 1);
    std::fs::write(&q_fails, "").unwrap();
    engine.run().await.unwrap();
    let q = bench.snapshot("resets", TP).await.1.remove(1);
    assert_eq!((q.state, q.attempts), (StepState::Invalid, 1));
    assert!(q.error.is_some());

    // run-from p reruns p and q; p fails now, so q never starts: its record
    // is the reset one, not the old failure.
    std::fs::remove_file(&q_fails).unwrap();
    std::fs::write(&p_fails, "").unwrap();
    let report = engine.run_from("p").await.unwrap();
    assert_eq!(report.state, FlowState::Invalid);
    let steps = bench.snapshot("resets", TP).await.1;
    let (p, q) = (&steps[0], &steps[1]);
    assert_eq!(p.state, StepState::Invalid);
    assert_eq!(q.state, StepState::Embryo);
    assert_eq!(q.attempts, 0);
    assert_eq!(q.error, None);
    assert_eq!(q.started_at, None);
    assert_eq!(q.finished_at, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_engine_runs_several_modes_one_after_another() {
    let bench = Bench::new();
    let ran = bench.path("ran.txt");
    let graph = Arc::new(
        FlowDefinition::new("reused")
            .step(StepDefinition::new("a", append(&ran)))
            .step(StepDefinition::new("b", append(&ran)).depends_on(["a"]))
            .step(StepDefinition::new("c", append(&ran)).depends_on(["b"]))
            .build()
            .unwrap(),
    );
    let options = EngineOptions {
        heartbeat_interval: Duration::from_millis(20),
        ..bench.options()
    };
    let engine = bench.engine_with(&graph, TP, 1, bench.local(), options);
    let report = engine.run().await.unwrap();
    assert_eq!(report.state, FlowState::Processed);
    // b and c were started by their finished dependency.
    assert_eq!(report.metrics.dependant_latencies.len(), 2);
    // The run's heartbeat stops with it: many intervals later, the next
    // mode on the same engine is not cancelled by a leftover one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = engine.run_from("b").await.unwrap();
    assert!(!report.canceled, "{report:?}");
    assert_eq!(report.state, FlowState::Processed);
    assert_eq!(lines(&ran), ["a", "b", "c", "b", "c"]);
    let log = flow_log(&bench, "reused");
    assert!(
        log.contains("run_mode_nominal of [reused, 2026112800] finished: flow is state_processed"),
        "{log}"
    );
    assert!(!log.contains("cancelled"), "{log}");
}

#[test]
fn refusal_answers_with_the_engine_rules_without_a_store() {
    use flow_core::RunMode;
    use flow_engine::Refusal;
    let graph = FlowDefinition::new("asked")
        .step(StepDefinition::new("a", act(Identity)))
        .step(StepDefinition::new("b", act(Identity)).depends_on(["a"]))
        .build()
        .unwrap();
    let ask = |mode, step| flow_engine::refusal(mode, step, &graph, tp(TP), None, Vec::new());
    assert_eq!(ask(RunMode::Nominal, None), None);
    assert_eq!(ask(RunMode::RunOne, Some("a")), None);
    assert_eq!(ask(RunMode::Recovery, None), Some(Refusal::NeverRan));
    assert_eq!(
        ask(RunMode::RunFrom, Some("b")),
        Some(Refusal::Blocked {
            step: "b".into(),
            missing: vec!["a".into()]
        })
    );
    assert!(matches!(
        ask(RunMode::RunOne, Some("ghost")),
        Some(Refusal::UnknownStep { step, .. }) if step == "ghost"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_mode_leaves_the_lease_alone() {
    let bench = Bench::new();
    let graph = Arc::new(
        FlowDefinition::new("refused")
            .step(StepDefinition::new("a", act(Identity)))
            .step(StepDefinition::new("b", act(Identity)).depends_on(["a"]))
            .build()
            .unwrap(),
    );
    let engine = bench.engine(&graph, TP, 1);
    engine.run().await.unwrap();
    let key = FlowKey::new("refused", tp(TP));
    let lease = bench.store.get_lease(&key).await.unwrap();
    let records = fenced_rows(&bench);
    // Processed: nothing to recover. Another timeperiod: never ran.
    for (timeperiod, expected) in [(TP, "not failed"), ("2026112900", "never run")] {
        let engine = bench.engine(&graph, timeperiod, 1);
        let err = engine.recover().await.unwrap_err();
        assert!(
            matches!(err, EngineError::Refused { .. }) && err.to_string().contains(expected),
            "{err}"
        );
    }
    assert_eq!(bench.store.get_lease(&key).await.unwrap(), lease);
    let other = FlowKey::new("refused", tp("2026112900"));
    assert_eq!(bench.store.get_lease(&other).await.unwrap(), None);
    assert_eq!(fenced_rows(&bench), records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_starts_no_new_step_even_when_the_running_one_completes() {
    let bench = Bench::new();
    let ran = bench.path("ran.txt");
    // One cluster: `first` runs, `second` (independent) waits in the queue.
    // `first` ignores the cancellation and ends well, after it; `second`
    // must still never start, and the run counts as cancelled.
    let hold = Hold::default();
    let graph = Arc::new(
        FlowDefinition::new("stopping")
            .step(StepDefinition::new("first", hold.action()))
            .step(StepDefinition::new("second", append(&ran)))
            .build()
            .unwrap(),
    );
    let engine = bench.engine(&graph, TP, 1);
    let cancel = engine.cancel_token();
    tokio::spawn(async move {
        hold.started.cancelled().await;
        cancel.cancel();
        hold.release.cancel();
    });
    let report = engine.run().await.unwrap();
    assert!(report.canceled, "{report:?}");
    assert_eq!(report.state, FlowState::Invalid);
    assert!(lines(&ran).is_empty(), "second started after the cancel");
    assert_eq!(
        bench.step_states("stopping", TP).await,
        [
            ("first".to_string(), "state_processed".to_string()),
            ("second".to_string(), "state_embryo".to_string())
        ]
    );
}
