//! `flow schedule`, `flow jobs`, `flow skip` and `flow reprocess` through
//! the built binary, on the SQLite store and the local cluster: three
//! schedulers on one store with one killed (`kill -9`) mid-run run every Job
//! exactly once; freerun runs need a finished Job and never change it;
//! skip and reprocess move Jobs as a person asks; the concurrency comes
//! from the settings unless the flag says otherwise; `reprocess --cascade`
//! finds dependants by their Jobs in the store.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::{stderr, stdout, text, Home};

/// Short leases, so a killed scheduler's claims turn stale quickly.
const SETTINGS: &str = r#"
log_directory = "logs"
data_directory = "data"

[cluster]
kind = "local"
root = "."
work_dir = "."

[lease]
ttl = "3s"
heartbeat = "500ms"

[engine]
cancel_grace = "10s"
"#;

/// The timeperiod `hours_ago` hours before now.
fn hour(hours_ago: i64) -> String {
    (chrono::Utc::now() - chrono::TimeDelta::hours(hours_ago))
        .format("%Y%m%d%H")
        .to_string()
}

/// An hourly flow from `earliest` on: step `a` appends the period to
/// `a.txt` and takes a moment, `b` appends it to `b.txt`.
fn flow(earliest: &str) -> String {
    format!(
        r#"
name = "tick"
time_qualifier = "hourly"
[schedule]
earliest_timeperiod = "{earliest}"
retry_delay = "1s"
[[steps]]
name = "a"
main = {{ action = "shell", command = "echo {{timeperiod}} >> a.txt; touch started-{{timeperiod}}; sleep 1.5" }}
[[steps]]
name = "b"
depends_on = ["a"]
main = {{ action = "shell", command = "echo {{timeperiod}} >> b.txt" }}
"#
    )
}

fn home(earliest: &str) -> Home {
    let home = Home::empty();
    home.write("flow.toml", SETTINGS);
    home.write("tick.toml", &flow(earliest));
    home
}

fn scheduler(home: &Home) -> Child {
    spawn_scheduler(home, &["tick.toml", "--concurrency", "2"])
}

/// `flow schedule ARGS --until-caught-up --poll 200ms`, started.
fn spawn_scheduler(home: &Home, args: &[&str]) -> Child {
    let mut all = vec!["schedule"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--until-caught-up", "--poll", "200ms"]);
    home.command(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `flow schedule ARGS` until it is caught up; it must exit 0.
fn caught_up(home: &Home, args: &[&str]) -> std::process::Output {
    let out = wait(spawn_scheduler(home, args), "the scheduler");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    out
}

fn jobs(home: &Home) -> serde_json::Value {
    let out = home.expect(0, &["jobs", "tick.toml", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn states(jobs: &serde_json::Value) -> Vec<(String, String)> {
    jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["timeperiod"].as_str().unwrap().to_string(),
                j["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The periods the scheduler must have run: `first` up to the last closed
/// hour, as `flow jobs` lists them.
fn periods(jobs: &serde_json::Value) -> Vec<String> {
    states(jobs).into_iter().map(|(t, _)| t).collect()
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn wait(mut child: Child, what: &str) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} did not finish:\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_schedulers_with_one_killed_run_every_job_exactly_once() {
    let home = home(&hour(8));
    let mut schedulers: Vec<Child> = (0..3).map(|_| scheduler(&home)).collect();
    // Once a step is at work, kill -9 the scheduler whose run it is (the
    // holder of that Job's claim).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (period, owner) = loop {
        let started = home
            .listing()
            .into_iter()
            .find_map(|name| name.strip_prefix("started-").map(str::to_string));
        if let Some(period) = started {
            let conn = rusqlite::Connection::open(home.db()).unwrap();
            let owner: String = conn
                .query_row(
                    "SELECT owner FROM lease WHERE flow_name = 'job:tick' AND timeperiod = ?1",
                    [&period],
                    |r| r.get(0),
                )
                .unwrap();
            break (period, owner);
        }
        assert!(Instant::now() < deadline, "no step started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid: u32 = owner.split(':').nth(2).unwrap().parse().unwrap();
    let victim = schedulers
        .iter()
        .position(|c| c.id() == pid)
        .unwrap_or_else(|| panic!("the claim of {period} is held by {owner}, not a scheduler"));
    let mut killed = schedulers.remove(victim);
    // SAFETY: kill(2) on a child we started.
    unsafe {
        libc::kill(killed.id() as i32, libc::SIGKILL);
    }
    let _ = killed.wait();
    let others = schedulers;
    for (i, other) in others.into_iter().enumerate() {
        let out = wait(other, &format!("scheduler {}", i + 2));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(stdout(&out).contains("caught up"), "{}", text(&out));
    }

    let jobs = jobs(&home);
    let want = periods(&jobs);
    // 8 closed hours (9 when the clock passed an hour meanwhile).
    assert!(want.len() >= 8, "{jobs}");
    assert!(
        states(&jobs).iter().all(|(_, s)| s == "state_processed"),
        "{jobs}"
    );
    // Every period's steps ran exactly once, whoever ran them.
    assert_eq!(sorted_lines(&home.read("a.txt")), want);
    assert_eq!(sorted_lines(&home.read("b.txt")), want);
    // The killed scheduler's Job was taken over and recovered.
    let job = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["timeperiod"] == period.as_str())
        .unwrap();
    let log = job["event_log"].to_string();
    assert!(log.contains("run_mode_recovery"), "{log}");
}

#[test]
fn freerun_needs_a_finished_job_and_never_changes_it() {
    let earliest = hour(2);
    let home = home(&earliest);
    // No Job yet: refused, nothing run.
    let out = home.expect(
        2,
        &[
            "run-one",
            "tick.toml",
            "--timeperiod",
            &earliest,
            "--step",
            "a",
        ],
    );
    assert!(
        stderr(&out).contains("needs a finished Job"),
        "{}",
        text(&out)
    );
    assert_eq!(home.read("b.txt"), "");
    let out = home.expect(
        2,
        &[
            "drive",
            "tick.toml",
            "--timeperiod",
            &earliest,
            "--run-mode",
            "run_from",
            "--step",
            "a",
        ],
    );
    assert!(
        stdout(&out).contains("needs a finished Job"),
        "{}",
        text(&out)
    );

    let out = wait(scheduler(&home), "the scheduler");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let before = jobs(&home);
    assert!(periods(&before).len() >= 2, "{before}");

    // Finished: allowed, recorded as freerun, and the Job is untouched.
    home.expect(
        0,
        &[
            "run-one",
            "tick.toml",
            "--timeperiod",
            &earliest,
            "--step",
            "b",
        ],
    );
    assert_eq!(jobs(&home), before);
    let out = home.expect(
        0,
        &["history", "tick.toml", "--timeperiod", &earliest, "--json"],
    );
    assert!(stdout(&out).contains("run_mode_run_one"), "{}", text(&out));
}

#[test]
fn skip_and_reprocess_move_jobs_as_asked() {
    let earliest = hour(3);
    let home = home(&earliest);
    let out = wait(scheduler(&home), "the scheduler");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first = periods(&jobs(&home));
    assert!(first.len() >= 3, "{first:?}");

    // Reprocess a processed Job: a nominal run again.
    let out = home.expect(0, &["reprocess", "tick.toml", "--timeperiod", &first[1]]);
    assert!(
        stdout(&out).contains("back to state_embryo"),
        "{}",
        text(&out)
    );
    let table = stdout(&home.expect(0, &["jobs", "tick.toml"]));
    assert!(
        table.contains(&format!("{}  state_embryo", first[1])),
        "{table}"
    );
    let out = wait(scheduler(&home), "the scheduler");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let a = sorted_lines(&home.read("a.txt"));
    assert_eq!(a.iter().filter(|l| **l == first[1]).count(), 2, "{a:?}");
    // Every period once, the reprocessed one twice (a period that closed
    // meanwhile is among them).
    let now = periods(&jobs(&home));
    assert_eq!(a.len(), now.len() + 1, "{a:?}");

    // Only a finished Job is reprocessed; skip marks one skipped.
    let out = home.expect(0, &["skip", "tick.toml", "--timeperiod", &first[2]]);
    assert!(stdout(&out).contains("state_skipped"), "{}", text(&out));
    let after = jobs(&home);
    assert_eq!(states(&after)[2].1, "state_skipped");
    let out = home.expect(2, &["reprocess", "tick.toml", "--timeperiod", "2001010100"]);
    assert!(stderr(&out).contains("there is no"), "{}", text(&out));
}

/// An hourly flow whose one step notes in `overlap.txt` when another
/// period's step is at work at the same time.
fn overlap_flow(earliest: &str) -> String {
    format!(
        r#"
name = "overlap"
time_qualifier = "hourly"
[schedule]
earliest_timeperiod = "{earliest}"
[[steps]]
name = "a"
main = {{ action = "shell", command = "ls running-* >> overlap.txt 2>/dev/null; touch running-{{timeperiod}}; sleep 1; rm running-{{timeperiod}}; echo {{timeperiod}} >> done.txt" }}
"#
    )
}

#[test]
fn concurrency_comes_from_the_settings_unless_the_flag_says_otherwise() {
    let home = Home::empty();
    home.write(
        "flow.toml",
        &format!("{SETTINGS}\n[schedule]\nconcurrency = 1\n"),
    );
    home.write("overlap.toml", &overlap_flow(&hour(3)));
    let schedule = |extra: &[&str]| caught_up(&home, &[&["overlap.toml"], extra].concat());
    // [schedule] concurrency = 1: the three closed hours one after another.
    let out = schedule(&[]);
    assert!(stderr(&out).contains("(concurrency 1)"), "{}", text(&out));
    assert!(sorted_lines(&home.read("done.txt")).len() >= 3);
    assert_eq!(
        home.read("overlap.txt"),
        "",
        "runs overlapped with concurrency 1"
    );
    // The flag wins over the key.
    let out = schedule(&["--concurrency", "3"]);
    assert!(stderr(&out).contains("(concurrency 3)"), "{}", text(&out));
    // A key the section does not have is refused at its place.
    let settings = format!("{SETTINGS}\n[schedule]\nconcurrency = 1\nlag = \"1h\"\n");
    home.write("flow.toml", &settings);
    let out = home.expect(2, &["schedule", "overlap.toml", "--until-caught-up"]);
    let line = 1 + settings.lines().position(|l| l.starts_with("lag")).unwrap();
    assert!(
        stderr(&out).contains(&format!("flow.toml:{line}:1: unknown field `lag`")),
        "{}",
        text(&out)
    );
}

/// An hourly flow from `earliest` on that waits for `upstream` (if any)
/// and appends the period to `NAME.txt`.
fn chained(name: &str, upstream: Option<&str>, earliest: &str) -> String {
    let depends = upstream.map_or(String::new(), |u| format!("depends_on_flows = [\"{u}\"]"));
    format!(
        r#"
name = "{name}"
time_qualifier = "hourly"
[schedule]
earliest_timeperiod = "{earliest}"
{depends}
[[steps]]
name = "a"
main = {{ action = "shell", command = "echo {{timeperiod}} >> {name}.txt" }}
"#
    )
}

#[test]
fn reprocess_cascade_finds_dependants_by_their_jobs_in_the_store() {
    let earliest = hour(2);
    let home = Home::empty();
    // No flows_directory: the dependants' files are only where the
    // scheduler was given them.
    home.write("flow.toml", SETTINGS);
    home.write("elsewhere/up.toml", &chained("up", None, &earliest));
    home.write(
        "elsewhere/down.toml",
        &chained("down", Some("up"), &earliest),
    );
    home.write(
        "elsewhere/last.toml",
        &chained("last", Some("down"), &earliest),
    );
    home.write("other.toml", &chained("other", None, &earliest));
    let flows = [
        "elsewhere/up.toml",
        "elsewhere/down.toml",
        "elsewhere/last.toml",
        "other.toml",
    ];
    let schedule = || caught_up(&home, &flows);
    schedule();
    let first = sorted_lines(&home.read("last.txt"));
    assert!(first.len() >= 2, "{first:?}");
    let period = &first[0];

    let out = home.expect(
        0,
        &[
            "reprocess",
            "elsewhere/up.toml",
            "--timeperiod",
            period,
            "--cascade",
        ],
    );
    let said = stdout(&out);
    for flow in ["down", "last"] {
        assert!(
            said.contains(&format!(
                "job [{flow}, {period}] (hourly): back to state_embryo (--cascade)"
            )),
            "{}",
            text(&out)
        );
    }
    // Only the covering period, only dependants.
    assert_eq!(said.lines().count(), 3, "{}", text(&out));
    schedule();
    for flow in ["up", "down", "last"] {
        let lines = sorted_lines(&home.read(&format!("{flow}.txt")));
        let runs = |p: &String| lines.iter().filter(|l| *l == p).count();
        assert_eq!(runs(period), 2, "{flow}: {lines:?}");
        assert_eq!(runs(&first[1]), 1, "{flow}: {lines:?}");
    }
    let other = sorted_lines(&home.read("other.txt"));
    assert_eq!(
        other.iter().filter(|l| *l == period).count(),
        1,
        "{other:?}"
    );
}
