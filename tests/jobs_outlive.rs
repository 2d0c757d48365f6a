//! Jobs outlive the engine (through the built binary, real processes, the
//! SQLite file): a run killed with SIGKILL at any point is recovered with
//! every job run exactly once, jobs that ended while no engine was alive
//! are not rerun (or are retried per policy when they failed), a pid now
//! used by another process is never adopted, clusters of a crashed run are
//! terminated, and steps are rolled back.

mod support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::{kill9, text};

const TP: &str = "2026112800";

/// A test directory with a short lease, so a killed run's lease turns stale
/// within a second.
struct Home(support::Home);

impl std::ops::Deref for Home {
    type Target = support::Home;
    fn deref(&self) -> &support::Home {
        &self.0
    }
}

impl Home {
    fn new(clusters: usize) -> Home {
        let home = Home(support::Home::empty());
        home.write(
            "flow.toml",
            &format!(
                r#"
log_directory = "logs"
data_directory = "data"
number_of_clusters = {clusters}

[cluster]
kind = "local"
root = "."
work_dir = "."
kill_grace = "1s"

[lease]
ttl = "1s"
heartbeat = "200ms"

[engine]
cancel_grace = "5s"
"#
            ),
        );
        home
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Lines of `ran.txt`, where steps write what they did.
    fn ran(&self) -> Vec<String> {
        self.read("ran.txt").lines().map(str::to_string).collect()
    }

    /// Starts `run FLOW` and kills the engine with SIGKILL once `ready`
    /// (waited for as `what`).
    fn crash_run(&self, flow: &str, what: &str, ready: impl FnMut() -> bool) {
        let mut engine = self.spawn(&["run", flow, "--timeperiod", TP]);
        self.wait_for(what, ready);
        kill9(&mut engine);
    }

    /// Makes the dead run's lease of `flow` stale, as the passing of its
    /// ttl would: its heartbeat moves a day back.
    fn age_lease(&self, flow: &str) {
        let conn = rusqlite::Connection::open(self.db()).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let aged = conn
            .execute(
                "UPDATE lease SET heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day') \
                 WHERE flow_name = ?1",
                [flow],
            )
            .unwrap();
        assert_eq!(aged, 1, "the killed run left its lease");
    }

    fn wait_for(&self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            assert!(Instant::now() < deadline, "waited too long for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The step's stored state; empty while the flow has no record yet.
    fn step_state(&self, flow: &str, step: &str) -> String {
        let out = self.flow(&["status", flow, "--timeperiod", TP, "--json"]);
        if !out.status.success() {
            return String::new();
        }
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step_name"] == step)
            .map(|s| s["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    }

    /// Processes whose command line mentions this test's directory (job
    /// wrappers and their children), alive and not zombies.
    fn live_processes(&self) -> Vec<(i32, String)> {
        let me = self.path("");
        let needle = me.to_string_lossy().trim_end_matches('/').to_string();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rfind(')')
                .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'));
            if cmdline.contains(&needle) && !zombie {
                found.push((pid, cmdline));
            }
        }
        found
    }

    fn assert_no_process_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.live_processes();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "processes left behind: {left:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `s1 -> s2 -> s3`; s2 has a `pre` job, a `main` job, a pause (an action
/// without a job) and a `post` job, each writing one line when it ends.
const PHASES: &str = r#"
name = "phases"
time_qualifier = "daily"

[[steps]]
name = "s1"
main = { action = "shell", command = "echo s1 >> ran.txt" }

[[steps]]
name = "s2"
depends_on = ["s1"]
pre = [{ action = "shell", name = "pre", command = "echo $$ >> pre.started; sleep 1; echo s2-pre >> ran.txt" }]
main = { action = "shell", command = "echo $$ >> main.started; sleep 1.5; echo s2-main >> ran.txt" }
post = [
  { action = "sleep", name = "gap", duration = "1s" },
  { action = "shell", name = "post", command = "echo $$ >> post.started; sleep 0.5; echo s2-post >> ran.txt" },
]

[[steps]]
name = "s3"
depends_on = ["s2"]
main = { action = "shell", command = "sleep 0.5; echo s3 >> ran.txt" }
"#;

const PHASE_LINES: [&str; 5] = ["s1", "s2-pre", "s2-main", "s2-post", "s3"];

fn crash_at(point: &str, ready: impl Fn(&Home) -> bool) {
    let home = Home::new(1);
    home.write("phases.toml", PHASES);
    home.crash_run("phases.toml", point, || ready(&home));
    assert_eq!(home.recover_until_accepted("phases.toml", TP), 0, "{point}");
    let mut ran = home.ran();
    ran.sort();
    let mut expected = PHASE_LINES.map(String::from).to_vec();
    expected.sort();
    assert_eq!(ran, expected, "killed {point}: every job exactly once");
    // A job the kill interrupted was adopted, not killed and started again:
    // each job that began says so once.
    for phase in ["pre", "main", "post"] {
        let started = home.read(&format!("{phase}.started"));
        assert_eq!(
            started.lines().count(),
            1,
            "killed {point}: {phase} began {started:?}"
        );
    }
    assert_eq!(
        home.status_json("phases.toml", TP)["flow"]["state"],
        "state_processed"
    );
    home.assert_no_process_left();
}

#[test]
fn a_kill_during_pre_adopts_the_pre_job() {
    crash_at("during pre", |h| h.path("pre.started").exists());
}

#[test]
fn a_kill_during_main_adopts_the_main_job() {
    crash_at("during main", |h| {
        h.path("main.started").exists() && !h.ran().contains(&"s2-main".to_string())
    });
}

#[test]
fn a_kill_between_main_and_post_goes_on_with_post() {
    crash_at("between main and post", |h| {
        h.ran().contains(&"s2-main".to_string()) && !h.path("post.started").exists()
    });
}

#[test]
fn a_kill_after_the_steps_final_write_does_not_run_it_again() {
    crash_at("after s2's final write", |h| {
        h.step_state("phases.toml", "s2") == "state_processed"
    });
}

#[test]
fn a_job_that_finishes_while_no_engine_is_alive_is_not_run_again() {
    let home = Home::new(1);
    home.write(
        "once.toml",
        r#"
name = "once"
[[steps]]
name = "only"
main = { action = "shell", command = "touch started; sleep 0.5; echo done >> ran.txt" }
"#,
    );
    home.crash_run("once.toml", "the job to start", || {
        home.path("started").exists()
    });
    home.wait_for("the job to end", || !home.ran().is_empty());
    assert_eq!(home.recover_until_accepted("once.toml", TP), 0);
    assert_eq!(home.ran(), ["done"]);
    let log = home.read("logs/once/only.log");
    assert!(log.contains("succeeded while no engine watched"), "{log}");
    let status = home.status_json("once.toml", TP);
    assert_eq!(status["steps"][0]["job"]["adopted"], true, "{status}");
}

#[test]
fn a_job_that_fails_while_no_engine_is_alive_is_retried_per_policy() {
    let home = Home::new(1);
    // The first attempt fails, the second succeeds (a counter on disk).
    home.write(
        "flaky.toml",
        r#"
name = "flaky"
[[steps]]
name = "only"
retries = 1
retry_delay = "1s"
main = { action = "shell", command = "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; touch started; sleep 0.5; touch ended$n; [ $n -ge 2 ]" }
"#,
    );
    home.crash_run("flaky.toml", "the first attempt", || {
        home.path("started").exists()
    });
    home.wait_for("the first attempt to end", || home.path("ended1").exists());
    assert_eq!(home.recover_until_accepted("flaky.toml", TP), 0);
    assert_eq!(home.read("n").trim(), "2", "one failed attempt, one retry");
    let status = home.status_json("flaky.toml", TP);
    assert_eq!(status["steps"][0]["attempts"], 2, "{status}");
    assert_eq!(status["steps"][0]["state"], "state_processed");
    let log = home.read("logs/flaky/only.log");
    assert!(log.contains("exit code 1 while no engine watched"), "{log}");
}

/// The step record's stored job handle, changed by `edit` directly in the
/// store file.
fn edit_stored_handle(db: &Path, step: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let job: String = conn
        .query_row("SELECT job FROM step WHERE step_name = ?1", [step], |r| {
            r.get(0)
        })
        .unwrap();
    let mut job: serde_json::Value = serde_json::from_str(&job).unwrap();
    edit(&mut job);
    conn.execute(
        "UPDATE step SET job = ?1 WHERE step_name = ?2",
        rusqlite::params![job.to_string(), step],
    )
    .unwrap();
}

#[test]
fn a_pid_reused_by_another_process_is_not_adopted() {
    let home = Home::new(1);
    home.write(
        "reused.toml",
        r#"
name = "reused"
[[steps]]
name = "only"
main = { action = "shell", command = "echo $$ > job.pid; sleep 30" }
"#,
    );
    home.crash_run("reused.toml", "the job", || {
        !home.read("job.pid").trim().is_empty()
    });
    // The pid in the handle is alive, but the process holding it now is not
    // the one that started the job: same pid, another start time.
    edit_stored_handle(&home.db(), "only", |job| {
        let start: u64 = job["handle"]["ids"]["start_time"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        job["handle"]["ids"]["start_time"] = serde_json::json!((start + 7).to_string());
    });
    assert_eq!(home.recover_until_accepted("reused.toml", TP), 1);
    let status = home.status_json("reused.toml", TP);
    let step = &status["steps"][0];
    assert_eq!(step["state"], "state_invalid", "{status}");
    assert_eq!(step["job"]["adopted"], false, "{status}");
    let error = step["error"].as_str().unwrap();
    assert!(error.contains("lost"), "{error}");
    // Clean up the real job, which nothing adopted.
    let out = home.flow(&["clusters", "--terminate-orphans"]);
    assert!(out.status.success(), "{}", text(&out));
    home.assert_no_process_left();
}

fn cluster_states(home: &Home) -> Vec<(String, String)> {
    let out = home.expect(0, &["clusters", "--json"]);
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["run"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const LONG: &str = r#"
name = "long"
[[steps]]
name = "only"
main = { action = "shell", command = "echo $$ > job.pid; sleep 2; echo done >> ran.txt" }
"#;

#[test]
fn recover_terminates_the_clusters_of_the_run_it_recovers() {
    let home = Home::new(1);
    home.write("long.toml", LONG);
    home.crash_run("long.toml", "the job", || {
        !home.read("job.pid").trim().is_empty()
    });
    let before = cluster_states(&home);
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].1, "up", "recorded as it launched");
    assert_eq!(home.recover_until_accepted("long.toml", TP), 0);
    assert_eq!(home.ran(), ["done"]);
    let after = cluster_states(&home);
    // The crashed run's cluster was adopted (its job ran on it) and
    // terminated at the end of the recovery: nothing may be up.
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|(_, state)| state == "terminated"),
        "{after:?}"
    );
    home.assert_no_process_left();
}

#[test]
fn terminate_orphans_ends_a_crashed_runs_cluster_but_not_a_live_ones() {
    let home = Home::new(1);
    home.write("long.toml", &LONG.replace("sleep 2", "sleep 30"));
    let mut engine = home.spawn(&["run", "long.toml", "--timeperiod", TP]);
    home.wait_for("the job", || !home.read("job.pid").trim().is_empty());
    let job: i32 = home.read("job.pid").trim().parse().unwrap();

    // The run is alive: its lease is fresh, its cluster is left alone.
    let out = home.expect(0, &["clusters", "--terminate-orphans"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("left alone: its flow is being run by"),
        "{said}"
    );
    assert_eq!(cluster_states(&home)[0].1, "up");
    assert!(Path::new(&format!("/proc/{job}")).exists());

    // Crash; once the lease is stale (aged in the store, as the passing
    // of its ttl would), the cluster and its job are ended.
    kill9(&mut engine);
    home.age_lease("long");
    let out = home.expect(0, &["clusters", "--terminate-orphans"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(": terminated"), "{said}");
    assert_eq!(cluster_states(&home)[0].1, "terminated");
    home.assert_no_process_left();
    assert!(
        home.ran().is_empty(),
        "the orphaned job was killed, not finished"
    );
}

#[test]
fn a_step_that_fails_for_good_rolls_back_its_completed_actions() {
    let home = Home::new(1);
    home.write(
        "undo.toml",
        r#"
name = "undo"
[[steps]]
name = "s"
pre = [{ action = "mkdir", path = "out/made", rollback = { action = "rmdir", path = "out/made" } }]
main = { action = "fail", message = "boom" }
post = [{ action = "identity" }]
"#,
    );
    home.expect(1, &["run", "undo.toml", "--timeperiod", TP]);
    assert!(
        !home.path("out/made").exists(),
        "the directory was rolled back"
    );
    let log = home.read("logs/undo/s.log");
    assert!(log.contains(" s.mkdir.rollback INFO rolled back"), "{log}");
    let status = home.status_json("undo.toml", TP);
    let rollbacks = &status["steps"][0]["rollbacks"];
    assert_eq!(rollbacks[0]["action"], "mkdir", "{status}");
    assert_eq!(rollbacks[0]["cause"], "step_failed", "{status}");
    assert_eq!(rollbacks[0]["error"], serde_json::Value::Null);
}

#[test]
fn a_failing_rollback_leaves_the_step_invalid_naming_both_errors() {
    let home = Home::new(1);
    home.write(
        "undo.toml",
        r#"
name = "undo"
[[steps]]
name = "s"
pre = [{ action = "mkdir", path = "out/made", rollback = { action = "fail", message = "cannot undo" } }]
main = { action = "fail", message = "boom" }
"#,
    );
    home.expect(1, &["run", "undo.toml", "--timeperiod", TP]);
    let status = home.status_json("undo.toml", TP);
    let error = status["steps"][0]["error"].as_str().unwrap();
    assert!(error.contains("boom"), "{error}");
    assert!(
        error.contains("rollback of action 'mkdir' failed: cannot undo"),
        "{error}"
    );
    assert_eq!(status["steps"][0]["state"], "state_invalid");
}

/// A step record written before actions were counted (a store from before
/// the `actions_done` column: its rows read 0) was processed with every
/// action done, so `flow rollback` undoes all of them, newest first.
#[test]
fn rollback_of_a_step_recorded_before_actions_were_counted_undoes_every_action() {
    let home = Home::new(1);
    home.write(
        "old.toml",
        r#"
name = "old"
[[steps]]
name = "s"
pre = [{ action = "mkdir", path = "pre.dir", rollback = { action = "rmdir", path = "pre.dir" } }]
main = { action = "shell", command = "touch main.out", rollback = { action = "rm", path = "main.out" } }
post = [{ action = "mkdir", path = "post.dir", rollback = { action = "rmdir", path = "post.dir" } }]
"#,
    );
    home.expect(0, &["run", "old.toml", "--timeperiod", TP]);
    let conn = rusqlite::Connection::open(home.db()).unwrap();
    let counted: i64 = conn
        .query_row(
            "SELECT actions_done FROM step WHERE step_name = 's'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(counted, 3, "pre, main and post were counted");
    conn.execute("UPDATE step SET actions_done = 0 WHERE step_name = 's'", [])
        .unwrap();
    drop(conn);
    home.expect(
        0,
        &["rollback", "old.toml", "--timeperiod", TP, "--step", "s"],
    );
    for made in ["pre.dir", "main.out", "post.dir"] {
        assert!(!home.path(made).exists(), "{made} was not rolled back");
    }
    let status = home.status_json("old.toml", TP);
    let rollbacks: Vec<&str> = status["steps"][0]["rollbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(rollbacks, ["mkdir", "shell", "mkdir"], "{status}");
    assert_eq!(status["steps"][0]["state"], "state_embryo", "{status}");
}

const DIAMOND: &str = r#"
name = "diamond"
[[steps]]
name = "a"
main = { action = "shell", command = "touch a.out", rollback = { action = "rm", path = "a.out" } }
[[steps]]
name = "b"
depends_on = ["a"]
main = { action = "shell", command = "touch b.out", rollback = { action = "rm", path = "b.out" } }
[[steps]]
name = "c"
depends_on = ["a"]
main = { action = "shell", command = "touch c.out", rollback = { action = "rm", path = "c.out" } }
[[steps]]
name = "d"
depends_on = ["b", "c"]
main = { action = "shell", command = "touch d.out", rollback = { action = "rm", path = "d.out" } }
"#;

#[test]
fn flow_rollback_refuses_a_step_with_processed_dependants_and_cascades_on_request() {
    let home = Home::new(1);
    home.write("diamond.toml", DIAMOND);
    home.expect(0, &["run", "diamond.toml", "--timeperiod", TP]);

    // d depends on b and is processed: refused, nothing changes.
    let before = home.status_json("diamond.toml", TP);
    let out = home.expect(
        2,
        &[
            "rollback",
            "diamond.toml",
            "--timeperiod",
            TP,
            "--step",
            "b",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("processed dependants (d)"),
        "{}",
        text(&out)
    );
    assert_eq!(home.status_json("diamond.toml", TP), before);
    assert!(home.path("b.out").exists() && home.path("d.out").exists());

    // A leaf rolls back alone.
    home.expect(
        0,
        &[
            "rollback",
            "diamond.toml",
            "--timeperiod",
            TP,
            "--step",
            "d",
        ],
    );
    assert!(!home.path("d.out").exists());
    assert_eq!(home.step_state("diamond.toml", "d"), "state_embryo");

    // With --cascade, the processed dependants go first, in reverse
    // dependency order, and the step itself last.
    home.expect(0, &["run", "diamond.toml", "--timeperiod", TP]);
    let out = home.expect(
        0,
        &[
            "rollback",
            "diamond.toml",
            "--timeperiod",
            TP,
            "--step",
            "a",
            "--cascade",
        ],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let order: Vec<&str> = said
        .lines()
        .filter(|l| l.ends_with("rolled back"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(order.len(), 4, "{said}");
    assert_eq!(order[0], "d", "dependants first: {said}");
    assert_eq!(order[3], "a", "the step last: {said}");
    for f in ["a.out", "b.out", "c.out", "d.out"] {
        assert!(!home.path(f).exists(), "{f} was not rolled back");
    }
    let status = home.status_json("diamond.toml", TP);
    assert_eq!(status["flow"]["state"], "state_invalid");
    for step in status["steps"].as_array().unwrap() {
        assert_eq!(step["state"], "state_embryo", "{status}");
        // d was rolled back twice: alone, then in the cascade.
        let times = if step["step_name"] == "d" { 2 } else { 1 };
        assert_eq!(
            step["rollbacks"].as_array().unwrap().len(),
            times,
            "{status}"
        );
    }
    // And recover runs them all again.
    home.expect(0, &["recover", "diamond.toml", "--timeperiod", TP]);
    for f in ["a.out", "b.out", "c.out", "d.out"] {
        assert!(home.path(f).exists(), "{f} was not made again");
    }
}

/// A 30-step flow (a chain of fan-outs) on three clusters, killed with
/// SIGKILL twenty times, each time mid-step (right after a pseudo-random
/// number of further steps recorded their start: each step's job writes
/// its name to `started.txt` first), and recovered until processed: every
/// step's side effect happens exactly once. A round is a fresh `run` then
/// kills and `recover`s until the flow is processed; rounds repeat until
/// twenty kills were made, and each round is checked on its own.
#[test]
fn twenty_kills_at_random_moments_leave_every_step_run_exactly_once() {
    let home = Home::new(3);
    let mut flow = String::from("name = \"many\"\n");
    for i in 0..30 {
        let deps = if i < 3 {
            String::new()
        } else {
            format!("depends_on = [\"s{}\", \"s{}\"]\n", i - 3, i - 1 - (i % 3))
        };
        let nap = 0.2 + f64::from(i % 4) * 0.1;
        flow.push_str(&format!(
            "[[steps]]\nname = \"s{i}\"\n{deps}main = {{ action = \"shell\", command = \"echo s{i} >> started.txt; sleep {nap:.1}; echo s{i} >> ran.txt\" }}\n"
        ));
    }
    home.write("many.toml", &flow);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // The stored flow state; None while the flow has no record (a run
    // killed before it wrote one leaves only the store file).
    let flow_state = |home: &Home| -> Option<String> {
        if !home.db().exists() {
            return None;
        }
        let out = home.flow(&["status", "many.toml", "--timeperiod", TP, "--json"]);
        if !out.status.success() {
            return None;
        }
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        status["flow"]["state"].as_str().map(str::to_string)
    };
    let mut kills = 0;
    let mut rounds = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while kills < 20 {
        rounds += 1;
        let _ = std::fs::remove_file(home.path("ran.txt"));
        let _ = std::fs::remove_file(home.path("started.txt"));
        let mut args: &[&str] = &["run", "many.toml", "--timeperiod", TP];
        loop {
            assert!(
                Instant::now() < deadline,
                "round {rounds} never got processed ({kills} kills): {}",
                home.read("ran.txt")
            );
            // Kill once 1 to 3 more steps have started (a step started
            // twice would show in ran.txt), unless the engine ends first.
            let target = home.read("started.txt").lines().count() + 1 + (next() % 3) as usize;
            let mut engine = home.spawn(args);
            home.wait_for("a step to start or the engine to end", || {
                home.read("started.txt").lines().count() >= target
                    || engine.try_wait().unwrap().is_some()
            });
            if engine.try_wait().unwrap().is_none() {
                kill9(&mut engine);
                kills += 1;
                // Recover what the killed run recorded; a run killed before
                // it wrote its flow record left nothing to recover.
                args = if flow_state(&home).is_some() {
                    &["recover", "many.toml", "--timeperiod", TP]
                } else {
                    &["run", "many.toml", "--timeperiod", TP]
                };
            } else if flow_state(&home).as_deref() == Some("state_processed") {
                break;
            } else {
                // Refused while the killed run's lease was live.
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let mut ran = home.ran();
        ran.sort();
        let mut expected: Vec<String> = (0..30).map(|i| format!("s{i}")).collect();
        expected.sort();
        assert_eq!(
            ran, expected,
            "round {rounds} ({kills} kills so far): each step exactly once"
        );
        let mut started: Vec<String> = home.read("started.txt").lines().map(String::from).collect();
        started.sort();
        assert_eq!(
            started, expected,
            "round {rounds} ({kills} kills so far): each job started once (adopted, not rerun)"
        );
    }
    home.assert_no_process_left();
}

/// A job whose first run leaves a child that ignores SIGTERM and writes
/// `old` to `lines` forever; a later run writes `start N`, waits for the
/// test's `go`, and ends with `end N` a second later (time in which a
/// surviving old child would write).
const STUBBORN: &str = r#"
name = "stubborn"
[[steps]]
name = "only"
main = { action = "shell", command = "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; if [ $n = 1 ]; then echo $$ > old.pid; echo 'start 1' >> lines; (trap '' TERM; while :; do echo old >> lines; sleep 0.1; done) & wait $!; else echo \"start $n\" >> lines; touch new.started; while [ ! -e go ]; do sleep 0.02; done; sleep 1; echo \"end $n\" >> lines; fi" }
"#;

/// Starts `stubborn.toml`, kills the engine with SIGKILL once the job (and
/// its SIGTERM-proof child) runs, and returns the job's process group.
fn crash_with_a_stubborn_job(home: &Home) -> i32 {
    home.write("stubborn.toml", STUBBORN);
    let mut engine = home.spawn(&["run", "stubborn.toml", "--timeperiod", TP]);
    home.wait_for("the old job's child", || home.read("lines").contains("old"));
    let pid: i32 = home.read("old.pid").trim().parse().unwrap();
    let pgid = support::pgid_of(pid);
    kill9(&mut engine);
    assert!(
        !support::live_group_members(pgid).is_empty(),
        "the job outlives its engine"
    );
    pgid
}

impl Home {
    /// Runs `flow ARGS` until the dead run's lease is stale and it is
    /// accepted (a run mode is refused, `clusters --terminate-orphans`
    /// leaves the cluster alone while it is live); returns what it said.
    fn once_accepted(&self, args: &[&str]) -> std::process::Output {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self.flow(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let held = (out.status.code() == Some(2)
                && (stderr.contains("already being run by") || stderr.contains("is being run by")))
                || String::from_utf8_lossy(&out.stdout).contains("its flow is being run by");
            if !held {
                return out;
            }
            assert!(Instant::now() < deadline, "never accepted: {}", text(&out));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn run_after_a_crash_ends_the_old_jobs_whole_process_group_before_starting_its_replacement() {
    let home = Home::new(1);
    let old = crash_with_a_stubborn_job(&home);
    let mut run = std::thread::scope(|scope| {
        let run = scope.spawn(|| home.once_accepted(&["run", "stubborn.toml", "--timeperiod", TP]));
        home.wait_for("the new job", || home.path("new.started").exists());
        // The new job has started: nothing of the old one may run.
        let left = support::live_group_members(old);
        home.write("go", "");
        (run.join().unwrap(), left)
    });
    assert_eq!(run.0.status.code(), Some(0), "{}", text(&run.0));
    assert!(
        run.1.is_empty(),
        "processes {:?} of the old job ran beside the new one",
        std::mem::take(&mut run.1)
    );
    let lines = home.read("lines");
    let start = lines.find("start 2").expect("the new job started");
    assert!(
        !lines[start..].contains("old"),
        "the old job wrote after the new one started:\n{lines}"
    );
    assert!(lines.ends_with("end 2\n"), "{lines}");
    home.assert_no_process_left();
}

#[test]
fn flow_cancel_returns_once_the_dead_runs_job_group_is_gone() {
    let home = Home::new(1);
    let old = crash_with_a_stubborn_job(&home);
    let out = home.once_accepted(&["cancel", "stubborn.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // No waiting here: the command returned, so the group is gone.
    assert_eq!(support::live_group_members(old), Vec::<i32>::new());
}

#[test]
fn terminate_orphans_returns_once_the_dead_runs_job_group_is_gone() {
    let home = Home::new(1);
    let old = crash_with_a_stubborn_job(&home);
    let out = home.once_accepted(&["clusters", "--terminate-orphans"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(": terminated"), "{said}");
    assert_eq!(support::live_group_members(old), Vec::<i32>::new());
}

#[test]
fn recover_that_finds_a_job_lost_ends_what_it_left_before_retrying() {
    let home = Home::new(1);
    home.write(
        "lost.toml",
        &STUBBORN
            .replace("name = \"stubborn\"", "name = \"lost\"")
            .replace("name = \"only\"", "name = \"only\"\nretries = 1"),
    );
    let mut engine = home.spawn(&["run", "lost.toml", "--timeperiod", TP]);
    home.wait_for("the old job's child", || home.read("lines").contains("old"));
    let pid: i32 = home.read("old.pid").trim().parse().unwrap();
    let old = support::pgid_of(pid);
    kill9(&mut engine);
    // The wrapper dies without recording a status: the job is lost, but
    // its child runs on.
    unsafe { libc::kill(old, libc::SIGKILL) };
    home.wait_for("the wrapper to go", || {
        !support::live_group_members(old).contains(&old)
    });
    assert!(!support::live_group_members(old).is_empty());
    let left = std::thread::scope(|scope| {
        let run = scope.spawn(|| home.once_accepted(&["recover", "lost.toml", "--timeperiod", TP]));
        home.wait_for("the retry", || home.path("new.started").exists());
        let left = support::live_group_members(old);
        home.write("go", "");
        let out = run.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        left
    });
    let log = home.read("logs/lost/only.log");
    assert!(
        left.is_empty(),
        "the lost job's processes {left:?} ran beside the retry:\n{log}"
    );
    assert!(
        log.contains("ended without recording an exit status"),
        "{log}"
    );
    home.assert_no_process_left();
}

#[test]
fn run_refuses_to_start_anything_while_a_dead_runs_job_cannot_be_stopped() {
    let home = Home::new(1);
    let old = crash_with_a_stubborn_job(&home);
    // A new job, were one started, would not wait for the test.
    home.write("go", "");
    // The recorded job is one this configuration cannot reach (as after a
    // switch of cluster kind): it cannot be stopped from here.
    edit_stored_handle(&home.db(), "only", |job| {
        job["handle"]["kind"] = serde_json::json!("emr");
    });
    let steps_before: Vec<String> = support::dump_store(&home.db())
        .into_iter()
        .filter(|row| row.starts_with("step:") || row.starts_with("cluster:"))
        .collect();
    let out = home.once_accepted(&["run", "stubborn.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = support::stderr(&out);
    assert!(
        said.contains("nothing was started") && said.contains("step only"),
        "{said}"
    );
    assert!(!home.path("new.started").exists(), "a new job started");
    assert_eq!(home.read("n").trim(), "1");
    let steps_after: Vec<String> = support::dump_store(&home.db())
        .into_iter()
        .filter(|row| row.starts_with("step:") || row.starts_with("cluster:"))
        .collect();
    assert_eq!(steps_after, steps_before, "the records still name the job");
    // Clean up the job nothing could reach.
    unsafe { libc::killpg(old, libc::SIGKILL) };
    support::assert_group_gone(old, "cleanup");
}

#[test]
fn terminate_orphans_with_a_timeperiod_touches_only_that_timeperiods_clusters() {
    const OTHER: &str = "2026112900";
    let home = Home::new(1);
    home.write(
        "two.toml",
        r#"
name = "two"
[[steps]]
name = "only"
main = { action = "shell", command = "echo $$ > job-{timeperiod}.pid; sleep 30" }
"#,
    );
    let mut pgids = Vec::new();
    for tp in [TP, OTHER] {
        let mut engine = home.spawn(&["run", "two.toml", "--timeperiod", tp]);
        let pid_file = format!("job-{tp}.pid");
        home.wait_for("the job", || !home.read(&pid_file).trim().is_empty());
        pgids.push(support::pgid_of(
            home.read(&pid_file).trim().parse().unwrap(),
        ));
        kill9(&mut engine);
    }
    let out = home.once_accepted(&[
        "clusters",
        "two.toml",
        "--timeperiod",
        TP,
        "--terminate-orphans",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("two [{TP}]")), "{said}");
    assert!(
        !said.contains(OTHER),
        "the other timeperiod was touched: {said}"
    );
    assert_eq!(support::live_group_members(pgids[0]), Vec::<i32>::new());
    assert!(
        !support::live_group_members(pgids[1]).is_empty(),
        "the other timeperiod's job was killed"
    );
    let out = home.expect(0, &["clusters", "--json"]);
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for record in records.as_array().unwrap() {
        let expected = if record["timeperiod"] == TP {
            "terminated"
        } else {
            "up"
        };
        assert_eq!(record["state"], expected, "{records}");
    }
    // The step whose job ended with the cluster is closed (failed, saying
    // why), so one `recover` runs it again; the other timeperiod's is not.
    let closed = home.status_json("two.toml", TP);
    assert_eq!(closed["steps"][0]["state"], "state_invalid", "{closed}");
    assert!(
        closed["steps"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("terminated by `flow clusters --terminate-orphans`")),
        "{closed}"
    );
    let other = home.status_json("two.toml", OTHER);
    assert_eq!(other["steps"][0]["state"], "state_in_progress", "{other}");
    // Clean up the other one, once its dead engine's lease has run out (it
    // was killed just now: until then its cluster is held, not an orphan).
    let out = home.once_accepted(&["clusters", "--terminate-orphans"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    home.assert_no_process_left();
}

#[test]
fn run_from_an_upstream_step_reruns_a_downstream_job_a_dead_run_left_in_flight() {
    let home = Home::new(1);
    home.write(
        "chain.toml",
        r#"
name = "chain"
[[steps]]
name = "first"
main = { action = "shell", command = "echo first >> order" }
[[steps]]
name = "big"
depends_on = ["first"]
main = { action = "shell", command = "n=$(cat bn 2>/dev/null || echo 0); n=$((n+1)); echo $n > bn; echo $$ > big.pid; echo \"big-start $n\" >> order; if [ $n = 1 ]; then sleep 30; fi; echo \"big-end $n\" >> order" }
"#,
    );
    let mut engine = home.spawn(&["run", "chain.toml", "--timeperiod", TP]);
    home.wait_for("big's job", || home.read("order").contains("big-start 1"));
    let old = support::pgid_of(home.read("big.pid").trim().parse().unwrap());
    kill9(&mut engine);
    let out = home.once_accepted(&[
        "run-from",
        "chain.toml",
        "--timeperiod",
        TP,
        "--step",
        "first",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // big's old job worked on first's old output: cancelled, not adopted;
    // big ran again after first was redone.
    assert_eq!(
        home.read("order"),
        "first\nbig-start 1\nfirst\nbig-start 2\nbig-end 2\n"
    );
    assert_eq!(support::live_group_members(old), Vec::<i32>::new());
    let status = home.status_json("chain.toml", TP);
    let big = &status["steps"][1];
    assert_eq!(big["step_name"], "big");
    assert_eq!(big["state"], "state_processed", "{status}");
    assert_eq!(big["job"]["adopted"], false, "{status}");
    home.assert_no_process_left();
}

#[test]
fn a_dead_runs_history_says_abandoned_and_the_next_run_closes_it() {
    let home = Home::new(1);
    home.write(
        "held.toml",
        r#"
name = "held"
[[steps]]
name = "only"
main = { action = "shell", command = "touch started; while [ ! -e release ]; do sleep 0.05; done" }
"#,
    );
    home.crash_run("held.toml", "the job", || home.path("started").exists());
    let out = home.once_accepted(&["cancel", "held.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The engine died and its flow was cancelled: the run is abandoned, in
    // the same word the viewer's API uses.
    let table = support::stdout(&home.expect(0, &["history", "held.toml"]));
    assert!(table.contains("abandoned"), "{table}");
    assert!(!table.contains("running"), "{table}");
    let history = |home: &Home| -> serde_json::Value {
        serde_json::from_slice(&home.expect(0, &["history", "held.toml", "--json"]).stdout).unwrap()
    };
    assert_eq!(history(&home)[0]["status"], "abandoned");

    // The next run of the flow closes the dead run's record.
    home.write("release", "");
    home.expect(0, &["recover", "held.toml", "--timeperiod", TP]);
    let runs = history(&home);
    assert_eq!(runs[0]["mode"], "run_mode_recovery", "{runs}");
    assert_eq!(runs[0]["status"], "finished", "{runs}");
    let dead = &runs[1];
    assert_eq!(dead["status"], "finished", "{runs}");
    assert_eq!(dead["outcome"], "state_invalid", "{runs}");
    assert!(
        dead["error"].as_str().unwrap().starts_with("abandoned"),
        "{runs}"
    );
    assert_eq!(dead["steps"][0]["state"], "state_canceled", "{runs}");
    let table = support::stdout(&home.expect(0, &["history", "held.toml"]));
    assert!(
        !table.contains("in_progress") && !table.contains("running"),
        "{table}"
    );
}
