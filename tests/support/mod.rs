//! What the end-to-end tests share: a private directory per test with its own
//! settings file, and a way to run the built `flow` binary in it.
//!
//! Every command runs with `--settings DIR/flow.toml`, its current directory
//! in DIR, `HOME` pointing inside DIR and the XDG variables removed, so no
//! test ever touches the user's own store or logs.

#![allow(dead_code)]

pub mod cost;
pub mod fakes;
mod runs;
// Not every test file uses them.
#[allow(unused_imports)]
pub use runs::{days, exit_codes, wait_until};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The settings every test starts from: logs, store and cluster files all
/// inside the test's directory. The lease ttl is long, so a test never
/// passes because a lease went stale instead of being released.
pub const SETTINGS: &str = r#"
log_directory = "logs"
data_directory = "data"

[cluster]
kind = "local"
root = "."
work_dir = "."

[lease]
ttl = "60s"
heartbeat = "1s"

[engine]
cancel_grace = "10s"
"#;

/// The settings file of a cloud cluster's end-to-end test: logs and store
/// in the test's directory, `[cluster] kind = KIND` with `tables` (the
/// test's own `[cluster.KIND]` tables), a short lease (ttl 2 s, heartbeat
/// 500 ms: a killed engine's lease goes stale soon, so `recover` is
/// accepted within seconds) and the engine's `cancel_grace`.
pub fn cloud_settings(kind: &str, tables: &str, cancel_grace: &str) -> String {
    format!(
        r#"
log_directory = "logs"
data_directory = "data"

[cluster]
kind = "{kind}"
{tables}
[lease]
ttl = "2s"
heartbeat = "500ms"

[engine]
cancel_grace = "{cancel_grace}"
"#
    )
}

/// A two-step flow named `name` whose step `b` (after `a`) fails until
/// the file `fixed` exists in `home`.
pub fn fails_until_fixed(home: &Home, name: &str) -> String {
    format!(
        r#"
name = "{name}"
time_qualifier = "daily"
[[steps]]
name = "a"
main = {{ action = "shell", command = "echo a" }}
[[steps]]
name = "b"
depends_on = ["a"]
main = {{ action = "shell", command = "test -f {} || (echo broken >&2; exit 3)" }}
"#,
        home.path("fixed").display()
    )
}

/// The repository root (where `examples/` and `tests/` are).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A test's private directory.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    /// A directory with the default test settings in `flow.toml`.
    pub fn new() -> Home {
        let home = Home::empty();
        home.write("flow.toml", SETTINGS);
        home
    }

    /// A directory with no settings file yet.
    pub fn empty() -> Home {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Home { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, text).unwrap();
    }

    /// Waits (up to a minute) until the file `name` exists: a step's sign
    /// that it started.
    pub fn wait_for_file(&self, name: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !self.path(name).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} never appeared"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// The store file the default settings use.
    pub fn db(&self) -> PathBuf {
        self.path("data/flow.db")
    }

    /// `flow` with this directory's settings, in this directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = self.bare_command(args);
        c.arg("--settings").arg(self.path("flow.toml"));
        c
    }

    /// `flow` in this directory with no `--settings` flag.
    pub fn bare_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flow"));
        c.current_dir(self.dir.path())
            .args(args)
            .env_remove("FLOW_SETTINGS")
            .env_remove("FLOW_LOG")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_STATE_HOME")
            .env("HOME", self.path("home"))
            .stdin(Stdio::null());
        c
    }

    pub fn flow(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `flow` and checks its exit code.
    pub fn expect(&self, code: i32, args: &[&str]) -> Output {
        let out = self.flow(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "flow {args:?}\n{}",
            text(&out)
        );
        out
    }

    /// Runs `recover FLOW --timeperiod T` until it is accepted and finishes
    /// (a killed run's lease must turn stale first); returns its exit code,
    /// after printing what it said (shown when the test fails).
    pub fn recover_until_accepted(&self, flow: &str, timeperiod: &str) -> i32 {
        let out = recover_once_accepted(flow, timeperiod, |args| self.flow(args));
        println!("recover: {}", text(&out));
        out.status.code().unwrap_or(-1)
    }

    /// `flow status FLOW --timeperiod T --json`, parsed.
    pub fn status_json(&self, flow: &str, timeperiod: &str) -> serde_json::Value {
        let out = self.expect(0, &["status", flow, "--timeperiod", timeperiod, "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Everything a command could have written: every file and directory
    /// (relative, sorted), the content of every file that is not the store,
    /// and every row of every table of the store (see [`dump_store`]).
    /// Taken before and after a command that must write nothing.
    pub fn everything(&self) -> Vec<String> {
        // The listing first: reading the store creates its -wal/-shm files
        // for as long as the connection is open.
        let listing = self.listing();
        let mut out = Vec::new();
        for name in &listing {
            let path = self.path(name);
            if name.ends_with(".db") || name.ends_with(".db-wal") || name.ends_with(".db-shm") {
                out.push(format!("{name}: store file"));
            } else if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                out.push(format!("{name}: {}", String::from_utf8_lossy(&bytes)));
            } else {
                out.push(format!("{name}/"));
            }
        }
        for name in listing.iter().filter(|n| n.ends_with(".db")) {
            out.extend(
                dump_store(&self.path(name))
                    .into_iter()
                    .map(|row| format!("{name}: {row}")),
            );
        }
        out
    }

    /// Every file and directory under this directory, relative, sorted.
    pub fn listing(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                out.push(path.strip_prefix(base).unwrap().display().to_string());
                if path.is_dir() {
                    walk(&path, base, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out.sort();
        out
    }
}

/// Every row of every table of the SQLite file at `db`, in a stable order,
/// with the schema and `user_version`, as text.
pub fn dump_store(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let mut out = Vec::new();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    out.push(format!("user_version {version}"));
    let schema: Vec<(String, String, Option<String>)> = conn
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (kind, name, sql) in &schema {
        out.push(format!("{kind} {name}: {}", sql.as_deref().unwrap_or("")));
    }
    for (_, table, _) in schema.iter().filter(|(kind, ..)| kind == "table") {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |row| {
                let mut cells = Vec::with_capacity(columns);
                for i in 0..columns {
                    let cell: rusqlite::types::Value = row.get(i)?;
                    cells.push(format!("{cell:?}"));
                }
                Ok(cells.join(" | "))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        out.push(format!("table {table}: {} row(s)", rows.len()));
        out.extend(rows.into_iter().map(|r| format!("{table}: {r}")));
    }
    out
}

/// The processes of process group `pgid` that still run (zombies, which
/// only wait for their parent to collect them, do not count).
pub fn live_group_members(pgid: i32) -> Vec<i32> {
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

/// `recover FLOW --timeperiod T` through `flow` (the binary run as a test
/// needs it, e.g. with its secrets), asked again every 200 ms while it is
/// refused because the killed run's lease is still live (for up to two
/// minutes); the accepted run's output.
pub fn recover_once_accepted(
    flow: &str,
    timeperiod: &str,
    run: impl Fn(&[&str]) -> Output,
) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let out = run(&["recover", flow, "--timeperiod", timeperiod]);
        let refused_for_lease = out.status.code() == Some(2)
            && String::from_utf8_lossy(&out.stderr).contains("already being run by");
        if !refused_for_lease {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "recover never accepted: {}",
            text(&out)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Kills `child` with SIGKILL (an engine dying mid-run) and reaps it.
pub fn kill9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The process group of the running process `pid`. A local job's own `$$`
/// is not its group: the cluster's job wrapper leads the group.
pub fn pgid_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("process {pid} is gone already: {e}"));
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    let pgid = after.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(
        live_group_members(pgid).contains(&pid),
        "{pid} runs in its group {pgid}"
    );
    pgid
}

/// Asserts that no process of the job whose process group is `pgid` still
/// runs, allowing a moment for a SIGKILL sent just before to land.
pub fn assert_group_gone(pgid: i32, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = live_group_members(pgid);
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: processes {left:?} of the job's process group {pgid} still run"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The state of every step in a `status --json` document, by name.
pub fn step_states(status: &serde_json::Value) -> Vec<(String, String)> {
    let mut states: Vec<(String, String)> = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step_name"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    states.sort();
    states
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first line a started process writes on its piped stdout (where a
/// server says its address); the rest of its stdout is dropped.
pub fn first_stdout_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .unwrap();
    line
}

/// Everything about a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

/// A timetable made by `flow schedule` in a test's directory: three daily
/// flows over the four days before today, and one Job skipped by hand.
pub mod timetable {
    use super::Home;

    /// The flow files (`load` fails on the two middle days; `after` waits
    /// for `load`'s day).
    pub const FILES: [&str; 3] = ["load.toml", "quiet.toml", "after.toml"];

    /// The four days the timetable covers, oldest first (`YYYYMMDD00`).
    pub fn days() -> Vec<String> {
        (1..=4)
            .rev()
            .map(|n| {
                (chrono::Utc::now() - chrono::TimeDelta::days(n))
                    .format("%Y%m%d00")
                    .to_string()
            })
            .collect()
    }

    /// Writes the flows and runs `flow schedule` until it is caught up, then
    /// `flow skip`s `after`'s third day. The Jobs then are: `load` processed
    /// on days 0 and 3, failed (given up after one retry) on 1 and 2;
    /// `quiet` noop on all four; `after` processed on 0 and 3, skipped on 1,
    /// embryo (blocked by `load`) on 2.
    pub fn make(home: &Home, days: &[String]) {
        let schedule = |extra: &str| {
            format!(
                "[schedule]\nearliest_timeperiod = \"{}\"\nretry_limit = 1\nretry_delay = \"1s\"\n{extra}",
                days[0]
            )
        };
        home.write(
            "load.toml",
            &format!(
                "name = \"load\"\ntime_qualifier = \"daily\"\n{}\n[[steps]]\nname = \"load\"\n\
                 main = {{ action = \"shell\", command = \"test {{timeperiod}} != {} && test {{timeperiod}} != {}\" }}\n",
                schedule(""),
                days[1],
                days[2]
            ),
        );
        home.write(
            "quiet.toml",
            &format!(
                "name = \"quiet\"\ntime_qualifier = \"daily\"\n{}\n[[steps]]\nname = \"idle\"\nmain = {{ action = \"noop\" }}\n",
                schedule("")
            ),
        );
        home.write(
            "after.toml",
            &format!(
                "name = \"after\"\ntime_qualifier = \"daily\"\n{}\n[[steps]]\nname = \"report\"\n\
                 main = {{ action = \"shell\", command = \"echo {{timeperiod}}\" }}\n",
                schedule("depends_on_flows = [\"load\"]\n")
            ),
        );
        let mut args = vec!["schedule"];
        args.extend(FILES);
        args.extend(["--until-caught-up", "--poll", "100ms"]);
        home.expect(0, &args);
        home.expect(0, &["skip", "after.toml", "--timeperiod", &days[1]]);
    }
}
