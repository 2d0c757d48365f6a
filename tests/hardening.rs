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

const SECRET: &str = "TOPSECRET123";

/// The test settings plus one secret.
fn with_secret(home: &Home) {
    let settings = home.read("flow.toml") + &format!("\n[secrets]\ntok = \"{SECRET}\"\n");
    home.write("flow.toml", &settings);
}

/// Waits (up to a minute) until `name` exists in `home`.
fn wait_for(home: &Home, name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !home.path(name).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Once the run's held job has touched `started`: the command lines on
/// the machine holding the secret; then releases the job (`release`) and
/// returns them with the run's output.
fn secret_lines_while_held(
    home: &Home,
    run: std::process::Child,
) -> (Vec<String>, std::process::Output) {
    wait_for(home, "started");
    let leaks: Vec<String> = every_command_line()
        .into_iter()
        .filter(|l| l.contains(SECRET))
        .collect();
    home.write("release", "");
    (leaks, run.wait_with_output().unwrap())
}

/// The command line of every process on the machine, as `ps` shows them.
fn every_command_line() -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            lines.push(String::from_utf8_lossy(&bytes).replace('\0', " "));
        }
    }
    assert!(lines.len() > 1, "cannot read /proc");
    lines
}

/// Every file under `dir` with its content, for "is the secret anywhere?".
fn every_file(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(every_file(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A secret used in a filesystem path, a shell command and a failing
/// action's error reaches the job (the directory is made, the shell prints
/// it) but never a log file, stdout, stderr, `status` (table or JSON), the
/// store's files, or any process's argument vector while the job runs.
#[test]
fn a_secret_reaches_the_job_and_nothing_else() {
    let home = Home::new();
    with_secret(&home);
    home.write(
        "secretive.toml",
        r#"
name = "secretive"
time_qualifier = "daily"
[[steps]]
name = "dirs"
main = { action = "mkdir", path = "made/{settings.tok}" }
[[steps]]
name = "shell"
depends_on = ["dirs"]
main = { action = "shell", command = "printf %s x-{settings.tok}-y > out.txt; echo 'said {settings.tok}'; tr '\\0' ' ' < /proc/$$/cmdline > cmdline.txt; touch started; while [ ! -e release ]; do sleep 0.02; done" }
[[steps]]
name = "failing"
depends_on = ["shell"]
main = { action = "rm", path = "missing/{settings.tok}/file" }
"#,
    );
    let child = home
        .command(&["run", "secretive.toml", "--timeperiod", TP])
        .env("FLOW_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (leaks, out) = secret_lines_while_held(&home, child);
    assert!(leaks.is_empty(), "visible in ps: {leaks:?}");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // The job got the real value.
    assert_eq!(home.read("out.txt"), format!("x-{SECRET}-y"));
    assert!(home.path(&format!("made/{SECRET}")).is_dir());
    assert!(!home.read("cmdline.txt").contains(SECRET));
    assert!(home
        .read("cmdline.txt")
        .contains("x-\"${FLOW_SECRET_TOK}\"-y"));

    // Nowhere else.
    let (out_text, err_text) = (stdout(&out), stderr(&out));
    assert!(!out_text.contains(SECRET), "stdout: {out_text}");
    assert!(!err_text.contains(SECRET), "stderr: {err_text}");
    assert!(out_text.contains("missing/***/file"), "summary: {out_text}");
    assert!(err_text.contains("said ***"), "stderr: {err_text}");
    assert!(err_text.contains("made/***"), "stderr: {err_text}");
    let logs = every_file(&home.path("logs"));
    assert!(!logs.is_empty());
    for (path, bytes) in &logs {
        assert!(
            !contains(bytes, SECRET),
            "{} shows the secret",
            path.display()
        );
    }
    let step_log = home.read("logs/secretive/shell.log");
    assert!(step_log.contains("shell.shell INFO said ***"), "{step_log}");
    let json = home.status_json("secretive.toml", TP).to_string();
    assert!(!json.contains(SECRET), "{json}");
    assert!(json.contains("missing/***/file"), "{json}");
    let table = stdout(&home.expect(0, &["status", "secretive.toml", "--timeperiod", TP]));
    assert!(!table.contains(SECRET) && table.contains("***"), "{table}");
    let store_files: Vec<_> = every_file(&home.path("data"))
        .into_iter()
        .filter(|(path, _)| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("flow.db"))
        })
        .collect();
    assert!(!store_files.is_empty());
    for (path, bytes) in store_files {
        assert!(
            !contains(&bytes, SECRET),
            "{} holds the secret",
            path.display()
        );
    }
    // What the job itself printed is kept as it printed it, in its job
    // directory, which only the owner can enter.
    let mut kept = 0;
    for (path, bytes) in every_file(&home.path("data")) {
        if contains(&bytes, SECRET) {
            kept += 1;
            let mut dir = path.parent().unwrap();
            assert!(
                dir.starts_with(home.path("data/local")),
                "{}",
                path.display()
            );
            while dir != home.path("data") {
                assert_eq!(mode(dir), 0o700, "{} is not private", dir.display());
                dir = dir.parent().unwrap();
            }
        }
    }
    assert!(
        kept > 0,
        "no job output holds the secret: nothing was checked"
    );

    // A `fail` message quoting the secret, through run-one on another flow.
    home.write(
        "loud.toml",
        "name = \"loud\"\n[[steps]]\nname = \"a\"\nmain = { action = \"fail\", message = \"token {settings.tok} rejected\" }\n",
    );
    let out = home.flow(&["run", "loud.toml", "--timeperiod", "2026112807"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("token *** rejected"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains(SECRET), "{}", text(&out));
    let json = home.status_json("loud.toml", "2026112807").to_string();
    assert!(
        !json.contains(SECRET) && json.contains("token *** rejected"),
        "{json}"
    );
}

/// Secrets whose printed forms differ from their values: one that `{:?}`
/// and JSON escape (`"` and `\`), two that a filesystem key resolves
/// (`//`, `/./`, a trailing `/`). Each reaches an error of a filesystem
/// action (mkdir of a refused key, rm and cp of missing ones); none of the
/// forms reaches stdout, stderr, a log file, `status` (JSON or table) or
/// the store. The probes are fragments every form of a secret contains.
#[test]
fn a_secret_is_masked_in_every_form_errors_print_it() {
    const QUOTED: &str = r#"ab"cd\efgh12"#;
    const SLASHED: &str = "Abcd//Efgh1234";
    const DOTTED: &str = "Ijkl/./Mnop5678/";
    let probes = ["efgh12", "Efgh1234", "Mnop5678"];
    let home = Home::new();
    let settings = home.read("flow.toml")
        + &format!(
            "\n[secrets]\nquoted = '{QUOTED}'\nslashed = '{SLASHED}'\ndotted = '{DOTTED}'\n"
        );
    home.write("flow.toml", &settings);
    // One flow per operation: a run stops at its first failed step.
    let cases = [
        (
            "mkdir",
            r#"path = "/etc/{settings.quoted}""#,
            "mkdir \"/etc/***\": refused",
        ),
        (
            "rm",
            r#"path = "missing/{settings.slashed}/file""#,
            "missing/***/file",
        ),
        (
            "cp",
            r#"from = "gone/{settings.dotted}", to = "kept/{settings.quoted}""#,
            "gone/***",
        ),
    ];
    let mut outputs = Vec::new();
    for (op, args, expected) in cases {
        home.write(
            &format!("{op}.toml"),
            &format!("name = \"forms_{op}\"\n[[steps]]\nname = \"{op}\"\nmain = {{ action = \"{op}\", {args} }}\n"),
        );
        let out = home
            .command(&["run", &format!("{op}.toml"), "--timeperiod", TP])
            .env("FLOW_LOG", "debug")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            stdout(&out).contains(expected),
            "summary lacks {expected}: {}",
            text(&out)
        );
        let json = home.status_json(&format!("{op}.toml"), TP);
        let error = json["steps"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(expected), "{json}");
        assert!(
            home.read(&format!("logs/forms_{op}/{op}.log"))
                .contains(expected),
            "{op}.log"
        );
        let table = home.expect(0, &["status", &format!("{op}.toml"), "--timeperiod", TP]);
        outputs.push((format!("{op}: stdout"), out.stdout));
        outputs.push((format!("{op}: stderr"), out.stderr));
        outputs.push((
            format!("{op}: status --json"),
            json.to_string().into_bytes(),
        ));
        outputs.push((format!("{op}: status"), table.stdout));
    }
    assert!(!home.path("kept").exists());

    let leaks = |what: &str, bytes: &[u8]| {
        for probe in probes {
            assert!(
                !contains(bytes, probe),
                "{what} shows {probe}: {}",
                String::from_utf8_lossy(bytes)
            );
        }
    };
    for (what, bytes) in &outputs {
        leaks(what, bytes);
    }
    let logs = every_file(&home.path("logs"));
    assert!(logs.len() >= 3, "{logs:?}");
    for (path, bytes) in &logs {
        leaks(&path.display().to_string(), bytes);
    }
    let store_files: Vec<_> = every_file(&home.path("data"))
        .into_iter()
        .filter(|(path, _)| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("flow.db"))
        })
        .collect();
    assert!(!store_files.is_empty());
    for (path, bytes) in &store_files {
        leaks(&path.display().to_string(), bytes);
    }
}

/// A job that prints secrets the way Python (`repr`, a list, `shlex.quote`)
/// and bash (`printf %q`, `${S@Q}`, `$'...'`) quote them: each printed form
/// is masked whole in the log files, `flow logs`, stdout, stderr and the
/// store. The probes are fragments of the secrets that every form holds.
#[test]
fn a_secret_a_job_prints_quoted_by_python_or_the_shell_is_masked() {
    const DOUBLE: &str = r#"Py$ecret"q\z1"#;
    const SINGLE: &str = r"it's-Pr1vate\w";
    let probes = ["ecret", "Pr1vate"];
    let home = Home::new();
    let settings = home.read("flow.toml")
        + &format!(
            "\n[secrets]\ndouble = '{DOUBLE}'\nsingle = \"{}\"\n",
            SINGLE.replace('\\', "\\\\")
        );
    home.write("flow.toml", &settings);
    home.write(
        "show.sh",
        r#"printf '%q %q\n' "$S" "$T"
printf '%q\n' "$(printf 'line\n%s' "$S")"
echo "${S@Q} ${T@Q}"
python3 -c 'import os, shlex; s, t = os.environ["S"], os.environ["T"]; print(repr(s), repr(t), [s, t], shlex.quote(t))'
"#,
    );
    home.write(
        "quoting.toml",
        "name = \"quoting\"\n[[steps]]\nname = \"show\"\nmain = { action = \"shell\", command = \"S={settings.double} T={settings.single} bash show.sh\" }\n",
    );
    let out = home.flow(&["run", "quoting.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = home.read("logs/quoting/show.log");
    for masked in [
        "*** ***",
        "$'line\\n***'",
        "'***' '***'",
        "'***' \"***\" ['***', \"***\"] '***'",
    ] {
        assert!(log.contains(masked), "show.log lacks {masked}: {log}");
    }
    let logs = stdout(&home.expect(0, &["logs", "quoting.toml", "--timeperiod", TP]));
    let mut outputs = vec![
        ("stdout".to_string(), out.stdout.clone()),
        ("stderr".to_string(), out.stderr.clone()),
        ("flow logs".to_string(), logs.into_bytes()),
    ];
    for (path, bytes) in every_file(&home.path("logs")) {
        outputs.push((path.display().to_string(), bytes));
    }
    for (path, bytes) in every_file(&home.path("data")) {
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("flow.db"))
        {
            outputs.push((path.display().to_string(), bytes));
        }
    }
    for (what, bytes) in &outputs {
        for probe in probes {
            assert!(
                !contains(bytes, probe),
                "{what} shows {probe}: {}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

/// A fake spark-submit that records its arguments and, when given
/// `--properties-file F`, F's content and mode.
const FAKE_SPARK: &str = r#"#!/bin/sh
for a in "$@"; do printf '[%s]\n' "$a"; done > argv.txt
if [ "$1" = "--properties-file" ]; then
  stat -c %a "$2" > properties.mode
  cat "$2" > properties.txt
fi
"#;

/// A secret in Spark `conf` reaches spark-submit in an owner-only
/// properties file, never in its arguments.
#[test]
fn a_secret_in_spark_conf_goes_through_a_private_properties_file() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    home.write("fake-spark-submit", FAKE_SPARK);
    std::fs::set_permissions(
        home.path("fake-spark-submit"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let settings = home.read("flow.toml").replace(
        "[cluster]\n",
        "[cluster]\nspark_submit = \"fake-spark-submit\"\n",
    ) + &format!("\n[secrets]\ntok = \"{SECRET}\"\n");
    home.write("flow.toml", &settings);
    home.write(
        "sparky.toml",
        r#"
name = "sparky"
time_qualifier = "daily"
[[steps]]
name = "job"
main = { action = "spark", application = "app.py", args = ["--day", "{timeperiod}"], conf = { "spark.flow.auth" = "Bearer {settings.tok}", "spark.ui.enabled" = "false" } }
"#,
    );
    home.expect(0, &["run", "sparky.toml", "--timeperiod", TP]);
    let argv = home.read("argv.txt");
    assert!(!argv.contains(SECRET), "{argv}");
    let lines: Vec<&str> = argv.lines().collect();
    assert_eq!(lines[0], "[--properties-file]");
    assert_eq!(
        lines[2..],
        [
            "[--conf]",
            "[spark.ui.enabled=false]",
            "[app.py]",
            "[--day]",
            "[2026112800]"
        ]
    );
    assert_eq!(
        home.read("properties.txt"),
        format!("spark.flow.auth=Bearer {SECRET}\n")
    );
    assert_eq!(home.read("properties.mode").trim(), "600");
    let file = lines[1].trim_matches(['[', ']']);
    assert!(
        !std::path::Path::new(file).exists(),
        "{file} outlived the job"
    );
    for (path, bytes) in every_file(&home.path("logs")) {
        assert!(
            !contains(&bytes, SECRET),
            "{} shows the secret",
            path.display()
        );
    }
}

/// `flow` with `umask 000` in effect.
fn under_umask_000(home: &Home, args: &[&str]) -> std::process::Command {
    let flow = home.command(args);
    let mut sh = std::process::Command::new("/bin/sh");
    sh.arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(flow.get_program())
        .args(flow.get_args());
    for (key, value) in flow.get_envs() {
        match value {
            Some(value) => sh.env(key, value),
            None => sh.env_remove(key),
        };
    }
    if let Some(dir) = flow.get_current_dir() {
        sh.current_dir(dir);
    }
    sh
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Whatever the umask (here 000, which would make files 0666 and
/// directories 0777), the data and log directories are 0700 and the store,
/// its WAL and shared memory, and the log files are 0600.
#[test]
fn store_and_logs_are_private_whatever_the_umask() {
    let home = Home::new();
    home.write(
        "private.toml",
        r#"
name = "private"
time_qualifier = "daily"
[[steps]]
name = "wait"
main = { action = "shell", command = "echo waiting; touch started; while [ ! -e release ]; do sleep 0.02; done" }
"#,
    );
    let child = under_umask_000(&home, &["run", "private.toml", "--timeperiod", TP])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&home, "started");
    // While the run is live: the store's three files exist.
    let db = home.db();
    let during = [
        ("data", mode(&home.path("data"))),
        ("flow.db", mode(&db)),
        ("flow.db-wal", mode(&home.path("data/flow.db-wal"))),
        ("flow.db-shm", mode(&home.path("data/flow.db-shm"))),
    ];
    home.write("release", "");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        during,
        [
            ("data", 0o700),
            ("flow.db", 0o600),
            ("flow.db-wal", 0o600),
            ("flow.db-shm", 0o600)
        ]
    );
    // The job itself ran with the umask it was given: only flow's own files
    // are made private.
    assert_eq!(mode(&home.path("started")), 0o666);
    assert_eq!(mode(&home.path("logs")), 0o700);
    assert_eq!(mode(&home.path("logs/private")), 0o700);
    assert_eq!(mode(&home.path("logs/private/private.log")), 0o600);
    assert_eq!(mode(&home.path("logs/private/wait.log")), 0o600);
    assert!(home.read("logs/private/wait.log").contains("waiting"));
    // The job's directory (its output, its pid, its status) and every
    // directory above it up to the data directory.
    let entries = |dir: std::path::PathBuf| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect()
    };
    let clusters = entries(home.path("data/local/clusters"));
    assert_eq!(clusters.len(), 1, "one cluster: {clusters:?}");
    let jobs = entries(clusters[0].join("jobs"));
    assert_eq!(jobs.len(), 1, "one job ran: {jobs:?}");
    let mut dir = jobs[0].as_path();
    let mut checked = Vec::new();
    while dir != home.path("data") {
        assert_eq!(mode(dir), 0o700, "{} is not private", dir.display());
        checked.push(dir.to_path_buf());
        dir = dir.parent().unwrap();
    }
    assert_eq!(
        checked.len(),
        5,
        "JOB, jobs, CLUSTER, clusters, local: {checked:?}"
    );
}

/// The same through a real `spark-submit` (pyspark): the application reads
/// the secret from its Spark configuration, and while it runs no process on
/// the machine (spark-submit's JVM, the Python driver) has it in its
/// arguments. Ignored (reported as such) by a plain `cargo test`; `cargo
/// xtask test` installs pyspark, sets FLOW_SPARK_SUBMIT and includes it.
#[test]
#[ignore = "needs spark-submit: run through `cargo xtask test`"]
fn a_secret_reaches_a_real_spark_application_through_its_conf_on_spark() {
    let spark_submit = std::env::var_os("FLOW_SPARK_SUBMIT")
        .expect("FLOW_SPARK_SUBMIT must name spark-submit when this test is included");
    let home = Home::new();
    let settings = home.read("flow.toml").replace(
        "[cluster]\n",
        &format!(
            "[cluster]\nspark_submit = {:?}\n",
            std::path::PathBuf::from(spark_submit).display().to_string()
        ),
    ) + &format!("\n[secrets]\ntok = \"{SECRET}\"\n");
    home.write("flow.toml", &settings);
    home.write(
        "app.py",
        r#"
import os, sys, time
from pyspark.sql import SparkSession

here = sys.argv[1]
spark = SparkSession.builder.appName("secret").getOrCreate()
with open(os.path.join(here, "token.txt"), "w") as f:
    f.write(spark.sparkContext.getConf().get("spark.flow.token"))
open(os.path.join(here, "started"), "w").close()
while not os.path.exists(os.path.join(here, "release")):
    time.sleep(0.05)
spark.stop()
"#,
    );
    let here = home.path("").display().to_string();
    home.write(
        "secret_spark.toml",
        &format!(
            r#"
name = "secret_spark"
time_qualifier = "daily"
[[steps]]
name = "job"
timeout = "10m"
main = {{ action = "spark", application = "{here}/app.py", args = ["{here}"], conf = {{ "spark.master" = "local[1]", "spark.ui.enabled" = "false", "spark.flow.token" = "{{settings.tok}}" }} }}
"#
        ),
    );
    let child = home
        .command(&["run", "secret_spark.toml", "--timeperiod", TP])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (leaks, out) = secret_lines_while_held(&home, child);
    assert!(leaks.is_empty(), "visible in ps: {leaks:?}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out),
        home.read("logs/secret_spark/job.log")
    );
    assert_eq!(home.read("token.txt"), SECRET);
    for (path, bytes) in every_file(&home.path("logs")) {
        assert!(
            !contains(&bytes, SECRET),
            "{} shows the secret",
            path.display()
        );
    }
}

/// A run-one or run-from that did its job does not tell the user to
/// recover; a failed run does.
#[test]
fn only_a_failure_suggests_recover() {
    let home = Home::new();
    home.write(
        "pair.toml",
        r#"
name = "pair"
time_qualifier = "daily"
[[steps]]
name = "a"
main = { action = "identity" }
[[steps]]
name = "b"
depends_on = ["a"]
main = { action = "shell", command = "test ! -e broken" }
[[steps]]
name = "c"
depends_on = ["a"]
main = { action = "identity" }
"#,
    );
    home.write("broken", "");
    let out = home.flow(&["run", "pair.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out)
            .contains("after fixing the cause: flow recover pair.toml --timeperiod 2026112800"),
        "{}",
        text(&out)
    );
    std::fs::remove_file(home.path("broken")).unwrap();
    for mode in ["run-one", "run-from"] {
        let out = home.expect(0, &[mode, "pair.toml", "--timeperiod", TP, "--step", "b"]);
        assert!(
            !stdout(&out).contains("flow recover"),
            "{mode}: {}",
            text(&out)
        );
    }
    home.write("broken", "");
    let out = home.flow(&["run-one", "pair.toml", "--timeperiod", TP, "--step", "b"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stdout(&out).contains("flow recover"), "{}", text(&out));
}

/// After `kill -9` of an engine its lease is still live: recover is
/// refused, and the refusal says the holder may be dead and when the lease
/// turns stale.
#[test]
fn the_lease_refusal_after_a_crash_says_when_it_turns_stale() {
    let home = Home::new();
    home.write(
        "crashy.toml",
        r#"
name = "crashy"
time_qualifier = "daily"
[[steps]]
name = "long"
main = { action = "shell", command = "read -r l < /proc/$$/stat; set -- $l; echo $5 > job.pgid; touch started; sleep 60" }
"#,
    );
    let mut engine = home
        .command(&["run", "crashy.toml", "--timeperiod", TP])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&home, "started");
    engine.kill().unwrap(); // SIGKILL
    engine.wait().unwrap();
    let out = home.flow(&["recover", "crashy.toml", "--timeperiod", TP]);
    // The job's process group outlived the engine; stop it.
    let pgid: i32 = home.read("job.pgid").trim().parse().unwrap();
    // SAFETY: killpg(2) on the process group of the job this test started.
    let killed = unsafe { libc::killpg(pgid, libc::SIGKILL) };
    assert_eq!(killed, 0, "the job's process group {pgid} was not there");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    for expected in [
        "flow [crashy, 2026112800] is already being run by ",
        "If that engine is dead (killed, crashed, its machine down), its lease turns stale at ",
        "1m after its last heartbeat",
        "run `flow recover` again then",
    ] {
        assert!(err.contains(expected), "{expected:?} in {err}");
    }
}

/// A missing spark-submit is explained in terms of flow.toml.
#[test]
fn the_spark_hint_names_the_setting_in_flow_toml() {
    let home = Home::new();
    let settings = home.read("flow.toml").replace(
        "[cluster]\n",
        "[cluster]\nspark_submit = \"no-such-spark-submit\"\n",
    );
    home.write("flow.toml", &settings);
    home.write(
        "sparky.toml",
        "name = \"sparky\"\n[[steps]]\nname = \"job\"\nmain = { action = \"spark\", application = \"app.py\" }\n",
    );
    let out = home.flow(&["run", "sparky.toml", "--timeperiod", "2026112807"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains(
            "no-such-spark-submit (from `[cluster] spark_submit` in flow.toml) is not an executable file; install Spark or fix `[cluster] spark_submit`"
        ),
        "{}",
        text(&out)
    );
}

/// A flow file edited between a run and its recovery: the stored graph hash
/// tells, recover says what it does with added and removed steps, runs the
/// added ones and leaves the removed ones' records alone; a completed flow
/// with an added step can be recovered too.
#[test]
fn recover_says_what_it_does_with_added_and_removed_steps() {
    let home = Home::new();
    let before = r#"
name = "edited"
time_qualifier = "daily"
[[steps]]
name = "a"
main = { action = "shell", command = "echo a >> ran.txt" }
[[steps]]
name = "b"
depends_on = ["a"]
main = { action = "shell", command = "echo b >> ran.txt; test ! -e broken" }
[[steps]]
name = "old"
depends_on = ["a"]
main = { action = "shell", command = "echo old >> ran.txt" }
"#;
    home.write("edited.toml", before);
    home.write("broken", "");
    home.expect(1, &["run", "edited.toml", "--timeperiod", TP]);
    let stored = home.status_json("edited.toml", TP);
    let first_hash = stored["flow"]["graph_hash"].as_str().unwrap().to_string();
    assert_eq!(first_hash.len(), 16, "{stored}");

    // Edit: "old" removed, "new" added after b.
    let after = before.replace(
        "[[steps]]\nname = \"old\"\ndepends_on = [\"a\"]\nmain = { action = \"shell\", command = \"echo old >> ran.txt\" }\n",
        "[[steps]]\nname = \"new\"\ndepends_on = [\"b\"]\nmain = { action = \"shell\", command = \"echo new >> ran.txt\" }\n",
    );
    assert_ne!(after, before);
    home.write("edited.toml", &after);
    std::fs::remove_file(home.path("broken")).unwrap();
    std::fs::write(home.path("ran.txt"), "").unwrap();
    let out = home.expect(0, &["recover", "edited.toml", "--timeperiod", TP]);
    let err = stderr(&out);
    assert!(
        err.contains("note: edited [2026112800]: the flow definition changed since its stored run; added step(s) new: they count as never run, so recover, run-from and run-one run them like unfinished steps; removed step(s) old: never run again; their records are kept (an unfinished one is closed as state_canceled, 'removed from the flow definition')"),
        "{}",
        text(&out)
    );
    assert_eq!(home.read("ran.txt"), "b\nnew\n");
    let flow_log = home.read("logs/edited/edited.log");
    assert!(
        flow_log.contains("WARN the flow definition changed"),
        "{flow_log}"
    );
    let status = home.status_json("edited.toml", TP);
    assert_eq!(status["flow"]["state"], "state_processed");
    assert_ne!(status["flow"]["graph_hash"].as_str().unwrap(), first_hash);
    let states = support::step_states(&status);
    assert!(
        states.contains(&("new".into(), "state_processed".into())),
        "{states:?}"
    );
    // "old" never ran (b failed first); it is closed, not left pending.
    assert!(
        states.contains(&("old".into(), "state_canceled".into())),
        "{states:?}"
    );

    // Processed, then a step added: recover runs just that step.
    let more = after.clone()
        + "[[steps]]\nname = \"extra\"\ndepends_on = [\"new\"]\nmain = { action = \"shell\", command = \"echo extra >> ran.txt\" }\n";
    home.write("edited.toml", &more);
    std::fs::write(home.path("ran.txt"), "").unwrap();
    let out = home.expect(0, &["recover", "edited.toml", "--timeperiod", TP]);
    assert!(
        stderr(&out).contains("added step(s) extra"),
        "{}",
        text(&out)
    );
    assert_eq!(home.read("ran.txt"), "extra\n");
    // Unchanged and complete: nothing to recover, and no note.
    let out = home.expect(2, &["recover", "edited.toml", "--timeperiod", TP]);
    assert!(!stderr(&out).contains("note:"), "{}", text(&out));
    assert!(
        stderr(&out).contains("nothing to recover: the flow is state_processed"),
        "{}",
        text(&out)
    );
}

/// Jobs get a scrubbed environment: the variables secrets are read from
/// (`env:` in `[secrets]`, `[serve] token`) are not inherited, nor is an
/// engine's own `FLOW_SECRET_*`; a job gets only the `FLOW_SECRET_*` its
/// command refers to.
#[test]
fn jobs_see_no_secret_source_and_only_the_secrets_they_refer_to() {
    let home = Home::new();
    let settings = home.read("flow.toml")
        + "\n[secrets]\napi = \"env:XSEC\"\nother = \"env:XOTHER\"\n[serve]\ntoken = \"env:FT\"\n";
    home.write("flow.toml", &settings);
    home.write(
        "envs.toml",
        r#"
name = "envs"
[[steps]]
name = "plain"
main = { action = "shell", command = "env > plain.env" }
[[steps]]
name = "user"
main = { action = "shell", command = "echo {settings.api} > /dev/null; env > user.env" }
"#,
    );
    let out = home
        .command(&["run", "envs.toml", "--timeperiod", TP])
        .env("XSEC", "api-secret-value-1")
        .env("XOTHER", "other-secret-value-2")
        .env("FT", "serve-token-value-3")
        .env("FLOW_SECRET_INHERITED", "inherited-secret-4")
        .env("UNRELATED_VARIABLE", "kept")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plain = home.read("plain.env");
    let user = home.read("user.env");
    for env in [&plain, &user] {
        assert!(env.contains("UNRELATED_VARIABLE=kept"), "{env}");
        for leaked in [
            "XSEC=",
            "XOTHER=",
            "FT=",
            "FLOW_SECRET_INHERITED=",
            "FLOW_SECRET_OTHER=",
        ] {
            assert!(
                !env.lines().any(|l| l.starts_with(leaked)),
                "{leaked} reached a job:\n{env}"
            );
        }
    }
    assert!(!plain.contains("FLOW_SECRET_API="), "{plain}");
    assert!(
        user.lines()
            .any(|l| l == "FLOW_SECRET_API=api-secret-value-1"),
        "{user}"
    );
}

/// An action's name is half of its logger name: a flow file gets the
/// step-name rule for it, refused at load with file:line:col, so no name
/// can put a forged line into the logs.
#[test]
fn an_action_name_that_could_forge_log_lines_is_refused_at_load() {
    let home = Home::new();
    home.write(
        "forge.toml",
        "name = \"forge\"\n[[steps]]\nname = \"a\"\nmain = { action = \"shell\", name = \"sh INFO ok\\n2026-01-01T00:00:00.000Z b.shell INFO FORGED LINE\\nb\", command = \"echo hi\" }\n",
    );
    for args in [
        &["validate", "forge.toml"][..],
        &["run", "forge.toml", "--timeperiod", TP],
    ] {
        let out = home.expect(2, args);
        let said = stderr(&out);
        assert!(said.contains("forge.toml:4:8:"), "{said}");
        assert!(said.contains("not a valid action name"), "{said}");
        assert!(!said.contains("\nb\""), "the name is shown escaped: {said}");
    }
    assert!(!home.path("logs").exists(), "nothing was written");
}
