//! `flow history` and `flow logs` end to end: run records and recorded log
//! lines in the store, `--follow` on a running flow, log retention, and the
//! MongoDB store through the binary (with `--features mongo`).

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use support::{stderr, stdout, text, Home, SETTINGS};

const TP: &str = "2026112800";

const FLOW: &str = r#"
name = "recorded"
time_qualifier = "daily"

[[steps]]
name = "a"
main = { action = "shell", command = "echo alpha one; echo alpha two" }

[[steps]]
name = "b"
depends_on = ["a"]
main = { action = "shell", command = "echo beta" }
"#;

/// (logger, level, message) of each line of a log text.
fn triples(text: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = text
        .lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let ts = p.next().unwrap_or_default();
            assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{l:?}");
            (
                p.next().unwrap_or_default().to_string(),
                p.next().unwrap_or_default().to_string(),
                p.next().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn runs_json(home: &Home, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["history", "recorded.toml", "--json"];
    all.extend_from_slice(args);
    let out = home.expect(0, &all);
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

#[test]
fn history_lists_runs_and_logs_prints_what_the_files_have() {
    let home = Home::new();
    home.write("recorded.toml", FLOW);
    home.expect(0, &["run", "recorded.toml", "--timeperiod", TP]);
    home.expect(0, &["run", "recorded.toml", "--timeperiod", TP]);

    let runs = runs_json(&home, &[]);
    assert_eq!(runs.len(), 2, "{runs:?}");
    for r in &runs {
        assert_eq!(r["outcome"], "state_processed");
        assert_eq!(r["mode"], "run_mode_nominal");
        assert!(
            r["id"].is_string() && r["host"].is_string() && r["user"].is_string(),
            "{r}"
        );
        assert_eq!(r["steps"].as_array().unwrap().len(), 2);
    }
    assert_ne!(runs[0]["id"], runs[1]["id"]);
    assert!(
        runs[0]["started_at"].as_str() >= runs[1]["started_at"].as_str(),
        "newest first"
    );
    assert_eq!(runs_json(&home, &["--limit", "1"]).len(), 1);
    // `--limit 0` would list nothing while runs exist: refused, as the
    // API refuses `?limit=0`.
    for args in [
        &["history", "recorded", "--limit", "0"][..],
        &["history", "recorded", "--limit", "0", "--json"],
    ] {
        let out = home.expect(2, args);
        assert!(stdout(&out).is_empty(), "{}", text(&out));
        assert!(stderr(&out).contains("--limit"), "{}", text(&out));
    }
    let table = stdout(&home.expect(0, &["history", "recorded", "--timeperiod", TP]));
    assert!(table.starts_with("run "), "{table}");
    assert_eq!(
        table
            .lines()
            .filter(|l| l.contains("state_processed"))
            .count(),
        2,
        "{table}"
    );
    assert!(table.contains("2 processed"), "{table}");

    // Every line of the files (both runs appended to them) is in the store.
    let all = stdout(&home.expect(0, &["logs", "recorded.toml", "--timeperiod", TP]));
    let files = home.read("logs/recorded/recorded.log")
        + &home.read("logs/recorded/a.log")
        + &home.read("logs/recorded/b.log");
    assert_eq!(triples(&all), triples(&files));
    assert!(all.contains(" a.shell INFO alpha two\n"), "{all}");

    let b = stdout(&home.expect(
        0,
        &["logs", "recorded.toml", "--timeperiod", TP, "--step", "b"],
    ));
    assert_eq!(triples(&b), triples(&home.read("logs/recorded/b.log")));
    let first = runs[1]["id"].as_str().unwrap();
    let of_first = stdout(&home.expect(
        0,
        &["logs", "recorded.toml", "--timeperiod", TP, "--run", first],
    ));
    assert_eq!(
        of_first.lines().count() * 2,
        all.lines().count(),
        "{of_first}"
    );
    assert!(of_first.contains(&format!("(run {first})")), "{of_first}");

    // Bad input: exit 2, nothing printed on stdout.
    let out = home.expect(
        2,
        &[
            "logs",
            "recorded.toml",
            "--timeperiod",
            TP,
            "--step",
            "nope",
        ],
    );
    assert!(stderr(&out).contains("no step 'nope'"), "{}", text(&out));
    let out = home.expect(2, &["logs", "recorded.toml", "--timeperiod", "2026112900"]);
    assert!(
        stderr(&out).contains("no record of flow [recorded, 2026112900]"),
        "{}",
        text(&out)
    );
    home.expect(2, &["logs", "recorded.toml"]);
    let out = home.expect(0, &["history", "never-ran"]);
    assert!(
        stdout(&out).contains("no runs of flow 'never-ran'"),
        "{}",
        text(&out)
    );
}

#[test]
fn logs_follow_streams_a_running_flow_until_its_run_ends() {
    let home = Home::new();
    home.write(
        "waits.toml",
        r#"
name = "waits"
time_qualifier = "daily"

[[steps]]
name = "first"
main = { action = "shell", command = "echo first line; while [ ! -e go ]; do sleep 0.05; done" }

[[steps]]
name = "second"
depends_on = ["first"]
main = { action = "shell", command = "echo second line" }
"#,
    );
    let mut run = home
        .command(&["run", "waits.toml", "--timeperiod", TP])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until the run's record exists, `logs` refuses (exit 2): wait for it
    // with plain `logs` (a `--follow` child that is merely slow to refuse
    // must not be taken for one that follows).
    let mut found = false;
    for _ in 0..600 {
        let out = home
            .command(&["logs", "waits.toml", "--timeperiod", TP])
            .output()
            .unwrap();
        if out.status.code() == Some(0) {
            found = true;
            break;
        }
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(found, "flow logs never found the run");
    let mut follow = home
        .command(&["logs", "waits.toml", "--timeperiod", TP, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    // "first line" arrives while the flow is still blocked on `go`.
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.ends_with("first.shell INFO first line") {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.ends_with("first line")),
        "{seen:?}"
    );
    assert_eq!(
        run.try_wait().unwrap(),
        None,
        "the flow must still be running"
    );
    home.write("go", "");
    // Then the rest, and follow ends by itself once the run has ended.
    seen.extend(lines.map(|l| l.unwrap()));
    assert!(follow.wait().unwrap().success());
    assert!(run.wait().unwrap().success());
    let all = seen.join("\n");
    assert!(all.contains("second.shell INFO second line"), "{all}");
    assert!(
        all.contains("waits INFO run_mode_nominal of [waits, 2026112800] finished"),
        "{all}"
    );
}

#[test]
fn old_lines_go_at_the_next_run_and_recording_can_be_off() {
    let home = Home::new();
    home.write("recorded.toml", FLOW);
    home.expect(0, &["run", "recorded.toml", "--timeperiod", TP]);
    let first = runs_json(&home, &[])[0]["id"].as_str().unwrap().to_string();
    home.write(
        "flow.toml",
        &format!("{SETTINGS}\n[store]\nlog_retention = \"1ms\"\n"),
    );
    home.expect(0, &["run", "recorded.toml", "--timeperiod", TP]);
    let out = home.expect(
        0,
        &["logs", "recorded.toml", "--timeperiod", TP, "--run", &first],
    );
    assert_eq!(stdout(&out), "", "lines older than the retention remain");
    assert!(
        stderr(&out).contains("no recorded log lines"),
        "{}",
        text(&out)
    );

    let quiet = Home::new();
    quiet.write(
        "flow.toml",
        &format!("{SETTINGS}\n[store]\nrecord_logs = false\n"),
    );
    quiet.write("recorded.toml", FLOW);
    quiet.expect(0, &["run", "recorded.toml", "--timeperiod", TP]);
    let out = quiet.expect(0, &["logs", "recorded.toml", "--timeperiod", TP]);
    assert_eq!(stdout(&out), "");
    assert!(quiet.read("logs/recorded/a.log").contains("alpha one"));
}

/// A run id the store cannot hold is the caller's mistake: exit 2, naming
/// the id, nothing printed on stdout.
#[test]
fn a_malformed_run_id_is_bad_input_naming_it() {
    let home = Home::new();
    home.write("recorded.toml", FLOW);
    home.expect(0, &["run", "recorded.toml", "--timeperiod", TP]);
    let out = home.expect(
        2,
        &[
            "logs",
            "recorded.toml",
            "--timeperiod",
            TP,
            "--run",
            "r-17x",
        ],
    );
    assert!(
        stderr(&out).contains("--run: run id 'r-17x' is not an id of this store"),
        "{}",
        text(&out)
    );
    assert_eq!(stdout(&out), "");
}

/// Ctrl-C (exit 3) still leaves every line in the store, including the
/// ones written while the run was being cancelled.
#[test]
fn lines_reach_the_store_when_a_run_is_cancelled() {
    let home = Home::new();
    home.write(
        "slow.toml",
        r#"
name = "slow"
time_qualifier = "daily"

[[steps]]
name = "wait"
main = { action = "shell", command = "echo before the signal; touch started; sleep 60" }
"#,
    );
    let mut run = home
        .command(&["run", "slow.toml", "--timeperiod", TP])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    home.wait_for_file("started");
    // SAFETY: kill(2) on the child we started; no memory is involved.
    unsafe {
        libc::kill(run.id() as i32, libc::SIGINT);
    }
    assert_eq!(run.wait().unwrap().code(), Some(3), "a cancelled run");
    let all = stdout(&home.expect(0, &["logs", "slow.toml", "--timeperiod", TP]));
    assert!(all.contains("wait.shell INFO before the signal"), "{all}");
    let files = home.read("logs/slow/slow.log") + &home.read("logs/slow/wait.log");
    assert!(files.contains("terminated"), "{files}");
    assert_eq!(
        triples(&all),
        triples(&files),
        "the store has every line of the files"
    );
}

#[cfg(feature = "mongo")]
mod mongo {
    use super::*;

    fn mongo_home(uri_setting: &str, extra: &str) -> Home {
        let home = Home::new();
        let database = format!(
            "flow_cli_{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        );
        home.write(
            "flow.toml",
            &format!("{SETTINGS}\n[store]\nkind = \"mongo\"\nuri = \"{uri_setting}\"\ndatabase = \"{database}\"\n{extra}"),
        );
        home.write("recorded.toml", FLOW);
        home
    }

    /// nx-27017 (standalone: `begin_run`'s ordered fallback) and SecantusDB
    /// (a replica set with users: `begin_run` in a transaction), each
    /// started by `cargo xtask test`; the variable names its URI.
    const NX27017: &str = "FLOW_MONGO_URI";
    const SECANTUSDB: &str = "FLOW_TEST_SECANTUSDB_URI";

    fn server_uri(variable: &str) -> String {
        std::env::var(variable).unwrap_or_else(|_| {
            panic!("{variable} must name a server when this test is included (`cargo xtask test` sets it)")
        })
    }

    /// The binary on the MongoDB store: run, status, history, logs; the
    /// URI read from the environment.
    fn run_history_and_logs(variable: &str) {
        server_uri(variable);
        let home = mongo_home(&format!("env:{variable}"), "");
        home.expect(0, &["run", "recorded.toml", "--timeperiod", TP]);
        let status = home.status_json("recorded.toml", TP);
        assert_eq!(status["flow"]["state"], "state_processed");
        assert_eq!(
            status["flow"]["id"].as_str().map(str::len),
            Some(24),
            "an ObjectId: {status}"
        );
        let runs = runs_json(&home, &[]);
        assert_eq!(runs.len(), 1);
        let all = stdout(&home.expect(0, &["logs", "recorded.toml", "--timeperiod", TP]));
        let files = home.read("logs/recorded/recorded.log")
            + &home.read("logs/recorded/a.log")
            + &home.read("logs/recorded/b.log");
        assert_eq!(triples(&all), triples(&files));
        let out = home.expect(
            2,
            &[
                "logs",
                "recorded.toml",
                "--timeperiod",
                TP,
                "--run",
                "r-17x",
            ],
        );
        assert!(
            stderr(&out).contains("--run: run id 'r-17x' is not an id of this store"),
            "{}",
            text(&out)
        );
        // A second engine is refused while the first holds the lease; a
        // recover after success has nothing to do: exit 2 either way.
        home.expect(2, &["recover", "recorded.toml", "--timeperiod", TP]);
    }

    #[test]
    #[ignore = "needs nx-27017: `cargo xtask test` starts it, or set FLOW_MONGO_URI"]
    fn run_history_and_logs_on_nx27017() {
        run_history_and_logs(NX27017);
    }

    #[test]
    #[ignore = "needs SecantusDB: `cargo xtask test` starts it, or set FLOW_TEST_SECANTUSDB_URI"]
    fn run_history_and_logs_on_secantusdb() {
        run_history_and_logs(SECANTUSDB);
    }

    /// A server that refuses the login of `user`: exit 2, "authentication
    /// failed" naming the user and the host, never the password.
    fn a_refused_login_is_bad_input(uri: &str, user: &str, password: &str) {
        let rest = uri
            .strip_prefix("mongodb://")
            .expect("a mongodb:// URI")
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_string();
        let host = rest.split('/').next().unwrap_or_default().to_string();
        let home = mongo_home(&format!("mongodb://{user}:{password}@{rest}"), "");
        let out = home.expect(2, &["run", "recorded.toml", "--timeperiod", TP]);
        let all = text(&out);
        assert!(
            all.contains(&format!("authentication failed for user {user} on {host}")),
            "{all}"
        );
        assert!(!all.contains(password), "{all}");
        assert!(!home.path("logs/recorded").exists(), "nothing may run");
    }

    /// nx-27017 has no users: it refuses every login.
    #[test]
    #[ignore = "needs nx-27017: `cargo xtask test` starts it, or set FLOW_MONGO_URI"]
    fn a_refused_login_is_bad_input_naming_the_user_on_nx27017() {
        a_refused_login_is_bad_input(&server_uri(NX27017), "nobody", "hunter22");
    }

    /// SecantusDB has the URI's user (`--auth`): a wrong password is
    /// refused by its SCRAM check.
    #[test]
    #[ignore = "needs SecantusDB: `cargo xtask test` starts it, or set FLOW_TEST_SECANTUSDB_URI"]
    fn a_wrong_password_is_bad_input_naming_the_user_on_secantusdb() {
        let uri = server_uri(SECANTUSDB);
        let user = uri
            .strip_prefix("mongodb://")
            .and_then(|rest| rest.split_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(user, _)| user.to_string())
            .expect("FLOW_TEST_SECANTUSDB_URI names a user and password");
        a_refused_login_is_bad_input(&uri, &user, "hunter22-wrong");
    }

    /// A server that does not answer: exit 2 within the selection timeout,
    /// naming the host and why in one short line (the driver's error holds
    /// the whole topology description), never the password.
    #[test]
    fn an_unreachable_mongo_store_is_bad_input_naming_the_host() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let home = mongo_home(
            &format!("mongodb://flow:hunter22@127.0.0.1:{port}/"),
            "server_selection_timeout = \"300ms\"\n",
        );
        let out = home.expect(2, &["run", "recorded.toml", "--timeperiod", TP]);
        let all = text(&out);
        assert!(
            all.contains(&format!("cannot reach MongoDB at 127.0.0.1:{port}")),
            "{all}"
        );
        assert!(
            all.contains(&format!("(127.0.0.1:{port}: I/O error: Connection refused")),
            "the address and why: {all}"
        );
        for dump in [
            "Topology",
            "Servers: [",
            "labels",
            "server response",
            "source: None",
        ] {
            assert!(!all.contains(dump), "the driver's {dump}: {all}");
        }
        let error = stderr(&out);
        assert!(error.len() < 300, "{} bytes: {error}", error.len());
        assert!(!all.contains("hunter22"), "{all}");
        assert!(!home.path("logs/recorded").exists(), "nothing may run");
    }
}
