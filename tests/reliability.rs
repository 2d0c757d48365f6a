//! Crash recovery, a full disk, signals and `flow cancel`, through the built
//! binary.
//!
//! Each test has its own directory with a settings file pointing the store,
//! the logs and the local cluster there. The lease ttl is long (a minute), so
//! a lease never turns stale by itself during a test: where a test needs the
//! lease released, only a release makes it pass; where it needs a dead run's
//! lease stale, it ages that lease explicitly in the store.

mod support;

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use support::{step_states, text};

const TP: &str = "2026112800";

/// The shared test directory, with a three-step chain whose middle step
/// sleeps `{settings.nap}` seconds.
struct Home(support::Home);

impl std::ops::Deref for Home {
    type Target = support::Home;
    fn deref(&self) -> &support::Home {
        &self.0
    }
}

impl Home {
    fn new(nap: &str) -> Home {
        let home = Home(support::Home::empty());
        home.settings(nap);
        home.write(
            "chain.toml",
            r#"
name = "chain"
time_qualifier = "daily"

[[steps]]
name = "a"
main = { action = "shell", command = "echo a >> ran.txt" }

[[steps]]
name = "b"
depends_on = ["a"]
main = { action = "shell", command = "echo b >> ran.txt; echo $$ > b.pid; sleep {settings.nap} & sleep {settings.nap}; wait; echo $$ >> b.ended" }

[[steps]]
name = "c"
depends_on = ["b"]
main = { action = "shell", command = "echo c >> ran.txt" }
"#,
        );
        home
    }

    fn settings(&self, nap: &str) {
        self.write(
            "flow.toml",
            &format!(
                r#"
log_directory = "logs"
data_directory = "data"
[cluster]
kind = "local"
root = "."
work_dir = "."
[lease]
ttl = "60s"
heartbeat = "200ms"
[engine]
cancel_grace = "20s"
[settings]
nap = "{nap}"
"#
            ),
        );
    }

    fn run(&self, args: &[&str]) -> Output {
        self.flow(args)
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn ran(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("ran.txt"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `flow status` as printed.
    fn status_text(&self) -> String {
        let out = self.run(&["status", "chain.toml", "--timeperiod", TP]);
        assert!(out.status.success(), "status failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The stored flow state and each step's state, by step name.
    fn states(&self) -> (String, Vec<(String, String)>) {
        let status = self.status_json("chain.toml", TP);
        let flow = status["flow"]["state"].as_str().unwrap().to_string();
        (flow, step_states(&status))
    }

    /// Makes the dead run's lease stale, as the passing of its ttl would:
    /// its heartbeat moves a day back. Returns whether there was one.
    fn age_lease(&self) -> bool {
        let conn = rusqlite::Connection::open(self.db()).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let aged = conn
            .execute(
                "UPDATE lease SET heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day') \
                 WHERE flow_name = 'chain'",
                [],
            )
            .unwrap();
        aged > 0
    }

    /// Waits until `path` holds a pid, and returns it.
    fn wait_for_pid(&self, name: &str) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(self.path(name)) {
                if let Ok(pid) = text.trim().parse() {
                    return pid;
                }
            }
            assert!(Instant::now() < deadline, "{name} never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid we started; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// True while `pid` runs (a zombie only waits to be collected).
fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Expected (flow state, step states) from literals.
fn expect_states(flow: &str, steps: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    (
        flow.to_string(),
        steps
            .iter()
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .collect(),
    )
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("flow did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn recover_after_sigkill_adopts_the_running_job_instead_of_running_it_again() {
    let home = Home::new("3");
    let mut child = home.spawn(&["run", "chain.toml", "--timeperiod", TP]);
    let job = home.wait_for_pid("b.pid");
    let group = support::pgid_of(job);
    // Kill the engine mid-step, as a crash would.
    child.kill().unwrap();
    child.wait().unwrap();
    // The job outlives the engine.
    assert!(alive(job), "the job {job} died with its engine");
    assert_eq!(home.ran(), ["a", "b"]);

    // The store is readable and truthful: the flow and b are in progress.
    assert_eq!(
        home.states(),
        expect_states(
            "state_in_progress",
            &[
                ("a", "state_processed"),
                ("b", "state_in_progress"),
                ("c", "state_embryo")
            ]
        )
    );

    // While the dead run's lease is live, recover is refused, saying the
    // holder may be dead and when its lease turns stale.
    let out = home.run(&["recover", "chain.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already being run by"), "{}", text(&out));
    assert!(stderr.contains("turns stale"), "{}", text(&out));

    // Once it is stale, recover adopts b's job, waits for it, and runs c:
    // a and b do not run again.
    assert!(home.age_lease(), "the killed run left its lease");
    let out = home.run(&["recover", "chain.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(home.ran(), ["a", "b", "c"], "b ran once, c once");
    assert_eq!(
        home.states(),
        expect_states(
            "state_processed",
            &[
                ("a", "state_processed"),
                ("b", "state_processed"),
                ("c", "state_processed")
            ]
        )
    );
    let status = home.status_text();
    assert!(status.contains("adopted"), "{status}");
    // The stored handle says so, and it is the orphan's: the process the
    // killed engine started ran to its end (it was neither killed nor
    // started again), and nothing else wrote b's pid.
    let json = home.status_json("chain.toml", TP);
    let b = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_name"] == "b")
        .unwrap();
    assert_eq!(b["job"]["adopted"], true, "{json}");
    assert_eq!(
        b["job"]["handle"]["ids"]["pgid"],
        group.to_string(),
        "{json}"
    );
    assert_eq!(home.read("b.pid").trim(), job.to_string());
    assert_eq!(
        home.read("b.ended").lines().collect::<Vec<_>>(),
        [job.to_string()],
        "the orphan itself finished b"
    );
    let log = std::fs::read_to_string(home.path("logs/chain/b.log")).unwrap();
    assert!(log.contains("adopted local job"), "{log}");
    support::assert_group_gone(group, "after the adopted job ended");
}

#[test]
fn sigint_cancels_the_run_and_exits_3() {
    let home = Home::new("60");
    let mut child = home.spawn(&["run", "chain.toml", "--timeperiod", TP]);
    let job = home.wait_for_pid("b.pid");
    let group = support::pgid_of(job);
    signal(child.id() as i32, libc::SIGINT);
    let code = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(code, Some(3));
    support::assert_group_gone(group, "after Ctrl-C");
    assert_eq!(
        home.states(),
        expect_states(
            "state_invalid",
            &[
                ("a", "state_processed"),
                ("b", "state_canceled"),
                ("c", "state_embryo")
            ]
        )
    );
    assert_eq!(home.ran(), ["a", "b"]);
    let flow_log = std::fs::read_to_string(home.path("logs/chain/chain.log")).unwrap();
    assert!(flow_log.contains("terminated"), "{flow_log}");

    // A cancelled flow recovers at once (the lease was released): b and c
    // run.
    home.settings("0");
    let out = home.run(&["recover", "chain.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(home.ran(), ["a", "b", "b", "c"]);
}

#[test]
fn a_second_sigint_exits_at_once_and_releases_the_lease() {
    let home = Home::new("60");
    // b ignores SIGTERM, so the first Ctrl-C leaves it running for the
    // local cluster's kill grace.
    let flow = std::fs::read_to_string(home.path("chain.toml"))
        .unwrap()
        .replace("echo b >> ran.txt;", "trap '' TERM; echo b >> ran.txt;");
    std::fs::write(home.path("chain.toml"), flow).unwrap();
    let mut child = home.spawn(&["run", "chain.toml", "--timeperiod", TP]);
    let job = home.wait_for_pid("b.pid");
    let group = support::pgid_of(job);
    signal(child.id() as i32, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    signal(child.id() as i32, libc::SIGINT);
    let code = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(130));
    support::assert_group_gone(group, "after the second Ctrl-C");
    // The lease was released (it would stay live for a minute otherwise):
    // recover is accepted at once. b's job was killed without recording how
    // it ended: the attempt it was counts as failed (no retries here), so
    // this recover fails b...
    home.settings("0");
    let out = home.run(&["recover", "chain.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("without recording an exit status"),
        "{}",
        text(&out)
    );
    // ...and the next one runs it again.
    let out = home.run(&["recover", "chain.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(home.ran(), ["a", "b", "b", "c"]);
}

#[test]
fn flow_cancel_marks_unfinished_steps_canceled() {
    let home = Home::new("0");
    let flow = std::fs::read_to_string(home.path("chain.toml"))
        .unwrap()
        .replace("echo b >> ran.txt;", "echo b >> ran.txt; exit 1;");
    std::fs::write(home.path("chain.toml"), flow).unwrap();
    let out = home.run(&["run", "chain.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = home.run(&["cancel", "chain.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        home.states(),
        expect_states(
            "state_invalid",
            &[
                ("a", "state_processed"),
                ("b", "state_canceled"),
                ("c", "state_canceled")
            ]
        )
    );
    // Cancelling a flow that has no record is refused.
    let out = home.run(&["cancel", "chain.toml", "--timeperiod", "2026112700"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// A real "disk full": the engine process runs with a file-size limit
/// (RLIMIT_FSIZE, SIGXFSZ ignored), so once the SQLite WAL reaches it every
/// write fails with EFBIG, as on a full disk. The run must stop starting
/// steps and report the store error; `flow recover` without the limit must
/// finish the flow without rerunning what was stored as processed.
#[test]
fn a_full_disk_mid_run_stops_the_flow_and_recover_finishes_it() {
    use std::os::unix::process::CommandExt;
    const STEPS: usize = 80;
    let home = Home::new("0");
    let mut flow = String::from("name = \"chain\"\ntime_qualifier = \"daily\"\n");
    for i in 0..STEPS {
        flow.push_str(&format!("\n[[steps]]\nname = \"s{i}\"\n"));
        if i > 0 {
            flow.push_str(&format!("depends_on = [\"s{}\"]\n", i - 1));
        }
        flow.push_str(&format!(
            "main = {{ action = \"shell\", command = \"echo s{i} >> ran.txt\" }}\n"
        ));
    }
    std::fs::write(home.path("chain.toml"), flow).unwrap();
    // The store exists before the fault, as in any installation: the limit
    // then leaves the run room for some steps whatever the size of the
    // schema (created in the WAL, which is what the limit catches).
    std::fs::write(
        home.path("setup.toml"),
        "name = \"setup\"\ntime_qualifier = \"daily\"\n\n[[steps]]\nname = \"noop\"\n\
         main = { action = \"shell\", command = \"true\" }\n",
    )
    .unwrap();
    let out = home.run(&["run", "setup.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mut command = home.command(&["run", "chain.toml", "--timeperiod", TP]);
    // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork
    // and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 200 * 1024,
                rlim_max: 200 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("store failed") && stderr.contains("disk full"),
        "the store error is reported with a hint: {}",
        text(&out)
    );

    let first = home.ran();
    assert!(
        !first.is_empty() && first.len() < STEPS,
        "the limit must stop the run part way: {} of {STEPS} steps ran\n{}",
        first.len(),
        text(&out)
    );
    let expected: Vec<String> = (0..first.len()).map(|i| format!("s{i}")).collect();
    assert_eq!(
        first, expected,
        "steps ran in order and none after the fault"
    );

    // The file is readable afterwards and says where the run stopped: the
    // steps that ran before the fault are processed, except possibly the
    // last one, whose final write may have failed.
    let (flow, steps) = home.states();
    assert!(
        flow == "state_in_progress" || flow == "state_invalid",
        "{flow}"
    );
    let processed = steps.iter().filter(|(_, s)| s == "state_processed").count();
    assert!(
        processed + 1 >= first.len() && processed <= first.len(),
        "{processed} processed after {} ran: {steps:?}",
        first.len()
    );
    // The full disk may have kept the lease from being released; once it
    // is stale, recover runs the rest.
    home.age_lease();
    let out = home.run(&["recover", "chain.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = home.ran();
    // Only the step whose final write failed may have run twice.
    let mut seen = std::collections::HashMap::new();
    for step in &all {
        *seen.entry(step.as_str()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), STEPS, "every step ran: {all:?}");
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        twice.len() <= 1,
        "at most the interrupted step reran: {twice:?}"
    );
    if let Some((step, n)) = twice.first() {
        assert_eq!(**n, 2);
        assert_eq!(
            **step,
            first.last().unwrap(),
            "only the last step of the first run"
        );
    }
    let (flow, steps) = home.states();
    assert_eq!(flow, "state_processed");
    assert!(
        steps.iter().all(|(_, s)| s == "state_processed"),
        "{steps:?}"
    );
}
