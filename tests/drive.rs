//! `flow drive`, through the built binary: outcomes, exit codes, the mode it
//! chooses and why, units from flags and from stdin.

mod support;

use std::io::Write;
use std::process::{Output, Stdio};
use support::{text, Home};

const TP: &str = "2026112800";

/// Two steps; `work` fails while the file `fail` exists.
const FLOW: &str = r#"
name = "drv"
time_qualifier = "daily"
[[steps]]
name = "work"
main = { action = "shell", command = "test ! -e fail && echo {timeperiod} >> work.txt" }
[[steps]]
name = "after"
depends_on = ["work"]
main = { action = "shell", command = "echo after >> after.txt" }
"#;

/// A flow whose only step has nothing to process.
const NOOP: &str = r#"
name = "idle"
time_qualifier = "daily"
[[steps]]
name = "nothing"
main = { action = "noop" }
"#;

fn answer(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "one JSON object on stdout: {}",
        text(out)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn drive(home: &Home, code: i32, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["drive"];
    all.extend_from_slice(args);
    let out = home.expect(code, &all);
    let a = answer(&out);
    assert_eq!(a["exit"], code, "{a}");
    a
}

fn drive_stdin(home: &Home, code: i32, unit: &str) -> serde_json::Value {
    let mut child = home
        .command(&["drive"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(unit.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(code), "{unit}\n{}", text(&out));
    answer(&out)
}

/// What the viewer's run-mode button does (`POST /api/flows/NAME/run-mode`
/// saves the flow record with this mode), done on the SQLite file.
fn store_run_mode(home: &Home, flow: &str, mode: &str) {
    let conn = rusqlite::Connection::open(home.db()).unwrap();
    let changed = conn
        .execute(
            "UPDATE flow SET run_mode = ?1 WHERE flow_name = ?2 AND timeperiod = ?3",
            [mode, flow, TP],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

#[test]
fn managed_units_resolve_their_mode_and_answer_in_json() {
    let home = Home::new();
    home.write("drv.toml", FLOW);
    home.write("idle.toml", NOOP);

    // Nothing stored, nothing requested: the process default, nominal.
    home.write("fail", "");
    let a = drive(&home, 1, &["drv.toml", "--timeperiod", TP]);
    assert_eq!(a["outcome"], "invalid");
    assert_eq!(a["run_mode"], "run_mode_nominal");
    assert_eq!(a["mode_source"], "process_default");
    assert_eq!(a["managed"], true);
    assert_eq!(a["steps"]["work"], "state_invalid");
    let failed_run = a["run_id"].as_str().unwrap().to_string();

    // The viewer's button stores recovery on the flow record: the next
    // managed unit recovers (only the failed step and what follows run).
    std::fs::remove_file(home.path("fail")).unwrap();
    store_run_mode(&home, "drv", "run_mode_recovery");
    let a = drive(&home, 0, &["drv.toml", "--timeperiod", TP]);
    assert_eq!(a["outcome"], "processed");
    assert_eq!(a["run_mode"], "run_mode_recovery");
    assert_eq!(a["mode_source"], "flow_record");
    assert_ne!(a["run_id"].as_str().unwrap(), failed_run);
    assert_eq!(a["state"], "state_processed");
    assert_eq!(home.read("work.txt"), format!("{TP}\n"));

    // The run id is the one `flow history` lists.
    let out = home.expect(0, &["history", "drv.toml", "--json"]);
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        history.to_string().contains(a["run_id"].as_str().unwrap()),
        "{history}"
    );

    // An explicit request overrides the record: a fresh nominal run.
    let a = drive(
        &home,
        0,
        &["drv.toml", "--timeperiod", TP, "--run-mode", "nominal"],
    );
    assert_eq!(a["run_mode"], "run_mode_nominal");
    assert_eq!(a["mode_source"], "request");
    assert_eq!(home.read("work.txt"), format!("{TP}\n{TP}\n"));

    // A flow with nothing to process answers noop, exit 0.
    let a = drive(&home, 0, &["idle.toml", "--timeperiod", TP]);
    assert_eq!(a["outcome"], "noop");
}

#[test]
fn freerun_units_and_units_on_stdin() {
    let home = Home::new();
    home.write("drv.toml", FLOW);
    let unit = format!(r#"{{"flow": "drv.toml", "timeperiod": "{TP}"}}"#);
    let a = drive_stdin(&home, 0, &unit);
    assert_eq!(a["outcome"], "processed");
    assert_eq!(a["mode_source"], "process_default");

    // A freerun unit runs one step; its mode is the request's.
    let unit = format!(
        r#"{{"flow": "drv.toml", "timeperiod": "{TP}", "run_mode": "run_mode_run_one", "step": "after"}}"#
    );
    let a = drive_stdin(&home, 0, &unit);
    assert_eq!(a["outcome"], "processed");
    assert_eq!(a["managed"], false);
    assert_eq!(a["run_mode"], "run_mode_run_one");
    assert_eq!(a["steps"].as_object().unwrap().len(), 1);
    assert_eq!(home.read("after.txt"), "after\nafter\n");
    assert_eq!(
        home.read("work.txt"),
        format!("{TP}\n"),
        "run_one ran one step"
    );
}

#[test]
fn bad_units_exit_2_with_an_answer_and_write_nothing() {
    let home = Home::new();
    home.write("drv.toml", FLOW);
    let before = home.everything();
    let cases: &[(&[&str], &str)] = &[
        (
            &["drv.toml", "--timeperiod", TP, "--run-mode", "run_one"],
            "needs a step",
        ),
        (
            &[
                "drv.toml",
                "--timeperiod",
                TP,
                "--kind",
                "managed",
                "--run-mode",
                "run_from",
                "--step",
                "work",
            ],
            "a managed unit runs",
        ),
        (
            &["drv.toml", "--timeperiod", TP, "--run-mode", "sideways"],
            "is not one of",
        ),
        (
            &[
                "drv.toml",
                "--timeperiod",
                TP,
                "--run-mode",
                "run_one",
                "--step",
                "nope",
            ],
            "unknown step 'nope'",
        ),
        (&["drv.toml", "--timeperiod", "2026"], "--timeperiod"),
        (&["drv.toml"], "needs --timeperiod"),
        (&["missing.toml", "--timeperiod", TP], "missing.toml"),
        // Recovery on a flow that never ran is refused.
        (
            &["drv.toml", "--timeperiod", TP, "--run-mode", "recovery"],
            "nothing to recover",
        ),
    ];
    for (args, says) in cases {
        let a = drive(&home, 2, args);
        assert_eq!(a["outcome"], "invalid", "{args:?}: {a}");
        let error = a["error"].as_str().unwrap();
        assert!(error.contains(says), "{args:?}: {error}");
    }
    let a = drive_stdin(&home, 2, r#"{"flow": "drv.toml", "timeperiod": 5}"#);
    assert!(a["error"].as_str().unwrap().contains("line 1"), "{a}");
    let a = drive_stdin(
        &home,
        2,
        &format!(r#"{{"flow": "drv.toml", "timeperiod": "{TP}", "colour": "red"}}"#),
    );
    assert!(a["error"].as_str().unwrap().contains("colour"), "{a}");
    assert_eq!(home.everything(), before, "a bad unit writes nothing");
}

#[test]
fn sigterm_cancels_a_driven_unit_with_exit_3() {
    let home = Home::new();
    home.write(
        "slow.toml",
        r#"
name = "slow"
time_qualifier = "daily"
[[steps]]
name = "wait"
main = { action = "shell", command = "touch started; sleep 60" }
"#,
    );
    let child = home
        .command(&["drive", "slow.toml", "--timeperiod", TP])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    home.wait_for_file("started");
    // SAFETY: kill(2) on the child we started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let a = answer(&out);
    assert_eq!(a["outcome"], "invalid");
    assert_eq!(a["canceled"], true);
    assert_eq!(a["exit"], 3);
}
