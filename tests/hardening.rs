//! The hardening issue through the built binary: failures that used to exit
//! 0, drawings that hostile names broke, `fail` messages, `cancel` of a
//! failed step, and the newcomer's messages. Real processes and a real
//! SQLite store, each test in its own directory. (Bad input that must exit
//! 2 and write nothing is in `tests/fixtures/bad/cases.toml`.)

mod support;

use support::{stderr, stdout, text, Home};

const TP: &str = "2026112800";

/// A step whose log file cannot be created during the run (the first step
/// puts a directory in its place): the run fails (exit 1) and says which
/// file, instead of exiting 0 with its logs lost.
#[test]
fn a_log_file_lost_mid_run_fails_the_run_with_exit_1() {
    let home = Home::new();
    home.write(
        "lossy.toml",
        r#"
name = "lossy"
time_qualifier = "daily"
[[steps]]
name = "a"
main = { action = "shell", command = "mkdir -p logs/lossy/b.log" }
[[steps]]
name = "b"
depends_on = ["a"]
main = { action = "shell", command = "echo b ran" }
"#,
    );
    let out = home.flow(&["run", "lossy.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let summary = stdout(&out);
    assert!(summary.contains("state_invalid"), "{}", text(&out));
    assert!(
        summary.contains("error: the run's logs are incomplete: cannot open log file")
            && summary.contains("lossy/b.log"),
        "{}",
        text(&out)
    );
    assert_eq!(
        home.status_json("lossy.toml", TP)["flow"]["state"],
        "state_invalid"
    );
}

/// `fail`'s message is a template like every other argument.
#[test]
fn the_fail_message_is_a_template() {
    let home = Home::new();
    home.write(
        "failing.toml",
        r#"
name = "failing"
time_qualifier = "daily"
[[steps]]
name = "a"
main = { action = "fail", message = "{flow_name}/{step_name} failed for {timeperiod} in {settings.where}" }
"#,
    );
    let settings = home.read("flow.toml") + "\n[settings]\nwhere = \"staging\"\n";
    home.write("flow.toml", &settings);
    let out = home.flow(&["run", "failing.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let expected = "failing/a failed for 2026112800 in staging";
    assert!(stdout(&out).contains(expected), "{}", text(&out));
    let status = home.status_json("failing.toml", TP);
    assert!(
        status["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains(expected),
        "{status}"
    );
}

/// `cancel` marks a failed step canceled but keeps the time it ended; a
/// step that never ran ends now.
#[test]
fn cancel_keeps_when_a_failed_step_ended() {
    let home = Home::new();
    home.write(
        "chain.toml",
        r#"
name = "chain"
time_qualifier = "daily"
[[steps]]
name = "a"
main = { action = "fail" }
[[steps]]
name = "b"
depends_on = ["a"]
main = { action = "identity" }
"#,
    );
    home.expect(1, &["run", "chain.toml", "--timeperiod", TP]);
    let before = home.status_json("chain.toml", TP);
    let failed_at = before["steps"][0]["finished_at"].clone();
    assert_eq!(before["steps"][0]["state"], "state_invalid");
    assert!(failed_at.is_string(), "{before}");
    std::thread::sleep(std::time::Duration::from_millis(20));
    home.expect(0, &["cancel", "chain.toml", "--timeperiod", TP]);
    let after = home.status_json("chain.toml", TP);
    let step = |name: &str| {
        after["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step_name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(step("a")["state"], "state_canceled");
    assert_eq!(step("a")["finished_at"], failed_at, "{after}");
    assert_eq!(step("b")["state"], "state_canceled");
    assert!(step("b")["finished_at"].is_string(), "{after}");
}

/// Step names that are Mermaid keywords (`end`, `graph`, `subgraph`) are
/// labels, never node ids; DOT quotes every name.
#[test]
fn graphs_of_steps_named_like_keywords_stay_well_formed() {
    let home = Home::new();
    home.write(
        "keywords.toml",
        r#"
name = "keywords"
[[steps]]
name = "end"
main = { action = "identity" }
[[steps]]
name = "subgraph"
depends_on = ["end"]
main = { action = "identity" }
[[steps]]
name = "graph"
depends_on = ["subgraph"]
main = { action = "identity" }
"#,
    );
    let mermaid = stdout(&home.expect(0, &["graph", "keywords.toml", "--format", "mermaid"]));
    assert_eq!(
        mermaid,
        "flowchart LR\n  s0[\"end\"]\n  s1[\"subgraph\"]\n  s2[\"graph\"]\n  s0 --> s1\n  s1 --> s2\n"
    );
    let dot = stdout(&home.expect(0, &["graph", "keywords.toml"]));
    assert!(dot.starts_with("digraph \"keywords\" {"), "{dot}");
    assert!(dot.contains("  \"end\" -> \"subgraph\";"), "{dot}");
    assert!(!stderr(&home.flow(&["graph", "keywords.toml"])).contains("error"));
}
