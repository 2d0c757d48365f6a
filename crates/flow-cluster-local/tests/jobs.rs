//! Jobs on the local cluster, as real processes: output routing, exit
//! codes, argv building, secrets, cancellation and clean-up of process
//! groups.
//!
//! Tests run on the current-thread runtime so the thread-local capture
//! subscriber sees the job's events.

mod common;

use common::*;
use flow_cluster_local::{LocalClusterFactory, LocalOptions};
use flow_core::{Cluster, ClusterError, ClusterFactory, Job, Settings};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Level;

const SECRET: &str = "s3cr3t-value";

/// A stand-in for spark-submit, pig or hadoop that records its argv, one
/// `[argument]` per line, in `$FAKE_ARGV_OUT`. It tests our argv building,
/// not the tools.
const FAKE_TOOL: &str = r#"#!/bin/sh
for a in "$@"; do printf '[%s]\n' "$a"; done > "$FAKE_ARGV_OUT"
echo "fake tool ran with $# arguments"
"#;

fn recorded_argv(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            l.strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .unwrap_or_else(|| panic!("malformed argv line {l:?}"))
                .to_string()
        })
        .collect()
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn expect_job_failed(result: Result<(), ClusterError>) -> (String, &'static str, String) {
    match result {
        Err(ClusterError::JobFailed {
            cluster,
            job,
            message,
        }) => (cluster, job, message),
        other => panic!("expected JobFailed, got {other:?}"),
    }
}

fn expect_cancelled(result: Result<(), ClusterError>) {
    match result {
        Err(ClusterError::Cancelled { cluster, job }) => {
            assert_eq!(cluster, "local-test");
            assert_eq!(job, "shell");
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
}

/// A job that starts a background child, reports `$$ $!` (leader, child)
/// in `pids` and then waits in the foreground. `prelude` runs first.
fn group_job(prelude: &str) -> Job {
    shell(&format!(
        "{prelude} sleep 100 & echo $$ $! > pids.tmp && mv pids.tmp pids; sleep 100; wait"
    ))
}

#[tokio::test]
async fn shell_output_goes_to_the_callers_span_stdout_info_stderr_warn() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), |_| {}).await;
    let (capture, _guard) = Capture::install();

    submit_in_span(
        &cluster,
        &shell("echo hello; echo oops >&2; echo world; printf 'no newline'"),
        &context(Settings::new()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    let info = capture.messages(Level::INFO);
    assert_eq!(
        info.iter()
            .filter(|m| !m.starts_with("running: "))
            .cloned()
            .collect::<Vec<_>>(),
        strings(&["hello", "world", "no newline", "exit code 0"]),
        "all INFO events: {info:?}"
    );
    assert_eq!(capture.messages(Level::WARN), strings(&["oops"]));
    let running = capture.find("running: ").unwrap();
    assert_eq!(running.level, Level::INFO);
    assert!(
        running.message.starts_with("running: /bin/sh -c "),
        "{}",
        running.message
    );
    for event in capture.events() {
        assert_eq!(
            event.spans,
            vec![STEP_SPAN.to_string()],
            "event {:?} left the caller's span",
            event.message
        );
    }
}

#[tokio::test]
async fn a_non_zero_exit_fails_the_job_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), |_| {}).await;
    let (capture, _guard) = Capture::install();

    let result = submit_in_span(
        &cluster,
        &shell("echo about to fail; exit 3"),
        &context(Settings::new()),
        &CancellationToken::new(),
    )
    .await;

    let (cluster_name, job, message) = expect_job_failed(result);
    assert_eq!(cluster_name, "local-test");
    assert_eq!(job, "shell");
    assert_eq!(message, "exit code 3");
    assert_eq!(capture.find("exit code").unwrap().message, "exit code 3");
    assert_eq!(capture.find("exit code").unwrap().level, Level::INFO);
}

#[tokio::test]
async fn death_by_signal_fails_the_job_naming_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), |_| {}).await;

    let result = submit_in_span(
        &cluster,
        &shell("kill -9 $$"),
        &context(Settings::new()),
        &CancellationToken::new(),
    )
    .await;

    assert_eq!(expect_job_failed(result).2, "killed by signal 9");
}

#[tokio::test]
async fn jobs_run_in_the_work_dir_with_the_extra_env_and_no_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let cluster = cluster_in(dir.path(), |o| {
        o.work_dir = work.clone();
        o.env = vec![("FLOW_TEST_VAR".into(), "from the options".into())];
    })
    .await;
    let (capture, _guard) = Capture::install();

    // `cat` would wait forever on an inherited terminal.
    submit_in_span(
        &cluster,
        &shell("pwd -P; echo \"$FLOW_TEST_VAR\"; cat; echo after cat"),
        &context(Settings::new()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    let info = capture.messages(Level::INFO);
    assert_eq!(
        info[1..],
        [
            work.canonicalize().unwrap().display().to_string(),
            "from the options".to_string(),
            "after cat".to_string(),
            "exit code 0".to_string()
        ],
        "{info:?}"
    );
}

#[tokio::test]
async fn long_lines_are_logged_in_pieces_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), |_| {}).await;
    let (capture, _guard) = Capture::install();

    // A megabyte on one line, then 20000 short lines on stderr while stdout
    // is still busy: both pipes must be drained at once.
    submit_in_span(
        &cluster,
        &shell("(i=0; while [ $i -lt 20000 ]; do echo e$i; i=$((i+1)); done) >&2 & head -c 1000000 /dev/zero | tr '\\0' x; echo; wait; echo done"),
        &context(Settings::new()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    let info = capture.messages(Level::INFO);
    let pieces: Vec<&String> = info.iter().filter(|m| m.starts_with('x')).collect();
    assert!(pieces.len() > 1, "a 1 MB line should be cut into pieces");
    assert!(pieces.iter().all(|p| p.bytes().all(|b| b == b'x')));
    assert_eq!(pieces.iter().map(|p| p.len()).sum::<usize>(), 1_000_000);
    assert_eq!(info[info.len() - 2..], ["done", "exit code 0"]);
    let warn = capture.messages(Level::WARN);
    assert_eq!(warn.len(), 20000);
    assert_eq!(warn[0], "e0");
    assert_eq!(warn[19999], "e19999");
}

#[tokio::test]
async fn processes_a_job_leaves_behind_are_killed_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), |_| {}).await;
    let (capture, _guard) = Capture::install();

    // The background sleep also keeps the job's stdout open.
    submit_in_span(
        &cluster,
        &shell("sleep 100 & echo $$ $! > pids"),
        &context(Settings::new()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    let pids = parse_pids(&std::fs::read_to_string(dir.path().join("pids")).unwrap());
    assert_all_gone(pids[0], &pids).await;
    let warning = capture.find("left running").unwrap();
    assert_eq!(warning.level, Level::WARN);
}

#[tokio::test]
async fn cancellation_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), |_| {}).await;
    let (capture, _guard) = Capture::install();
    let cancel = CancellationToken::new();
    let execution = context(Settings::new());

    let pids_file = dir.path().join("pids");
    let job = group_job("");

    let (result, (pgid, pids)) =
        tokio::join!(submit_in_span(&cluster, &job, &execution, &cancel), async {
            let pids = parse_pids(&wait_for_file(&pids_file).await);
            // The job runs in a group of its own (led by its wrapper), and the
            // background child is in it.
            let pgid = pgid_of(pids[0]);
            assert_eq!(
                pgid_of(pids[1]),
                pgid,
                "the child is not in the job's group"
            );
            assert_ne!(pgid, pgid_of(std::process::id() as i32));
            cancel.cancel();
            (pgid, pids)
        });

    expect_cancelled(result);
    assert_all_gone(pgid, &pids).await;
    assert!(capture.find("SIGTERM").is_some());
    assert!(capture.find("SIGKILL").is_none());
}

#[tokio::test]
async fn a_group_that_ignores_sigterm_gets_sigkill_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), |o| o.kill_grace = Duration::from_millis(200)).await;
    let (capture, _guard) = Capture::install();
    let cancel = CancellationToken::new();
    let execution = context(Settings::new());

    let pids_file = dir.path().join("pids");
    let job = group_job("trap '' TERM;");

    let (result, (pgid, pids)) =
        tokio::join!(submit_in_span(&cluster, &job, &execution, &cancel), async {
            let pids = parse_pids(&wait_for_file(&pids_file).await);
            let pgid = pgid_of(pids[0]);
            cancel.cancel();
            (pgid, pids)
        });

    expect_cancelled(result);
    assert_all_gone(pgid, &pids).await;
    assert_eq!(capture.find("SIGKILL").unwrap().level, Level::WARN);
}

#[tokio::test]
async fn a_cancelled_token_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), |_| {}).await;
    let (capture, _guard) = Capture::install();
    let cancel = CancellationToken::new();
    cancel.cancel();

    let result = submit_in_span(
        &cluster,
        &shell("touch started"),
        &context(Settings::new()),
        &cancel,
    )
    .await;

    expect_cancelled(result);
    assert!(!dir.path().join("started").exists());
    assert!(capture.find("running: ").is_none());
}

#[tokio::test]
async fn dropping_the_wait_leaves_the_job_running_until_terminate() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), |_| {}).await;
    let cancel = CancellationToken::new();
    let execution = context(Settings::new());

    let pids_file = dir.path().join("pids");
    let job = group_job("");

    let pids = tokio::select! {
        result = submit_in_span(&cluster, &job, &execution, &cancel) => {
            panic!("the job ended on its own: {result:?}")
        }
        text = wait_for_file(&pids_file) => parse_pids(&text),
    };
    // Nobody waits for the job any more: it goes on, as it would if the
    // engine had died...
    let pgid = pgid_of(pids[0]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        pids.iter().all(|&p| alive(p)),
        "the job was killed: {pids:?}"
    );
    // ...until its cluster is terminated.
    cluster.terminate().await.unwrap();
    assert_all_gone(pgid, &pids).await;
}

#[tokio::test]
async fn terminate_kills_jobs_still_running() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), |_| {}).await;
    let cancel = CancellationToken::new();
    let execution = context(Settings::new());

    let pids_file = dir.path().join("pids");
    let job = group_job("");

    let (result, (pgid, pids)) =
        tokio::join!(submit_in_span(&cluster, &job, &execution, &cancel), async {
            let pids = parse_pids(&wait_for_file(&pids_file).await);
            let pgid = pgid_of(pids[0]);
            cluster.terminate().await.unwrap();
            (pgid, pids)
        });

    assert_eq!(expect_job_failed(result).2, "killed by signal 9");
    assert_all_gone(pgid, &pids).await;
    cluster.terminate().await.unwrap();
}

#[tokio::test]
async fn secrets_in_a_shell_command_and_its_output_are_logged_as_stars() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), |_| {}).await;
    let (capture, _guard) = Capture::install();
    let execution = context(Settings::new().with_secret("token", SECRET));

    submit_in_span(
        &cluster,
        &shell(&format!(
            "echo {SECRET} > seen; echo {SECRET}; echo {SECRET} >&2"
        )),
        &execution,
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    // The job itself got the real value.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("seen"))
            .unwrap()
            .trim(),
        SECRET
    );
    let events = capture.events();
    assert!(
        events.iter().all(|e| !e.message.contains(SECRET)),
        "a secret reached the logs: {events:?}"
    );
    let running = capture.find("running: ").unwrap().message;
    assert!(running.contains("echo *** > seen"), "{running}");
    assert_eq!(capture.messages(Level::WARN), ["***"]);
}

#[tokio::test]
async fn spark_jobs_get_their_argv_in_spark_submit_order() {
    let dir = tempfile::tempdir().unwrap();
    let fake = write_script(dir.path(), "fake-spark-submit", FAKE_TOOL);
    let argv_out = dir.path().join("argv");
    let cluster = cluster_in(dir.path(), |o| {
        o.spark_submit = Some(fake.clone());
        o.env = vec![("FAKE_ARGV_OUT".into(), argv_out.display().to_string())];
    })
    .await;
    let (capture, _guard) = Capture::install();

    let job = Job::Spark {
        application: "jobs/report.py".into(),
        main_class: Some("com.example.Main".into()),
        conf: vec![
            ("spark.executor.memory".into(), "2g".into()),
            (
                "spark.app.name".into(),
                "two words; $(touch injected)".into(),
            ),
        ],
        secret_conf: vec![],
        args: strings(&["--day", "2026112800", "a b", "", "*"]),
    };
    submit_in_span(
        &cluster,
        &job,
        &context(Settings::new()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    assert_eq!(
        recorded_argv(&argv_out),
        strings(&[
            "--class",
            "com.example.Main",
            "--conf",
            "spark.executor.memory=2g",
            "--conf",
            "spark.app.name=two words; $(touch injected)",
            "jobs/report.py",
            "--day",
            "2026112800",
            "a b",
            "",
            "*",
        ])
    );
    assert!(
        !dir.path().join("injected").exists(),
        "an argument went through a shell"
    );
    let running = capture.find("running: ").unwrap().message;
    assert!(
        running.starts_with(&format!(
            "running: {} --class com.example.Main --conf",
            fake.display()
        )),
        "{running}"
    );
    assert!(capture.find("fake tool ran with 12 arguments").is_some());
}

#[tokio::test]
async fn spark_jobs_without_a_main_class_start_with_their_conf() {
    let dir = tempfile::tempdir().unwrap();
    let fake = write_script(dir.path(), "fake-spark-submit", FAKE_TOOL);
    let argv_out = dir.path().join("argv");
    let cluster = cluster_in(dir.path(), |o| {
        o.spark_submit = Some(fake.clone());
        o.env = vec![("FAKE_ARGV_OUT".into(), argv_out.display().to_string())];
    })
    .await;

    let job = Job::Spark {
        application: "app.jar".into(),
        main_class: None,
        conf: vec![("k".into(), "v".into())],
        secret_conf: vec![],
        args: vec![],
    };
    submit_in_span(
        &cluster,
        &job,
        &context(Settings::new()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    assert_eq!(
        recorded_argv(&argv_out),
        strings(&["--conf", "k=v", "app.jar"])
    );
}

/// Like `FAKE_TOOL`, and when its first argument is `--properties-file` or
/// `-param_file`, also copies that file and its mode next to the argv.
const FAKE_TOOL_WITH_FILE: &str = r#"#!/bin/sh
for a in "$@"; do printf '[%s]\n' "$a"; done > "$FAKE_ARGV_OUT"
if [ "$1" = "--properties-file" ] || [ "$1" = "-param_file" ]; then
  stat -c %a "$2" > "$FAKE_ARGV_OUT.mode"
  cat "$2" > "$FAKE_ARGV_OUT.file"
fi
"#;

/// Secret conf entries reach spark-submit in an owner-only properties file
/// that is gone after the job; neither the argv nor the logs hold them.
#[tokio::test]
async fn secret_spark_conf_goes_to_an_owner_only_properties_file() {
    let dir = tempfile::tempdir().unwrap();
    let fake = write_script(dir.path(), "fake-spark-submit", FAKE_TOOL_WITH_FILE);
    let argv_out = dir.path().join("argv");
    let cluster = cluster_in(dir.path(), |o| {
        o.spark_submit = Some(fake.clone());
        o.env = vec![("FAKE_ARGV_OUT".into(), argv_out.display().to_string())];
    })
    .await;
    let (capture, _guard) = Capture::install();

    let job = Job::Spark {
        application: "app.py".into(),
        main_class: None,
        conf: vec![("spark.executor.memory".into(), "2g".into())],
        secret_conf: vec![(
            "spark.hadoop.fs.s3a.secret.key".into(),
            flow_core::Secret::new(SECRET),
        )],
        args: strings(&["--day", "2026112800"]),
    };
    submit_in_span(
        &cluster,
        &job,
        &context(Settings::new().with_secret("aws_secret", SECRET)),
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    let argv = recorded_argv(&argv_out);
    assert_eq!(argv[0], "--properties-file");
    assert_eq!(
        argv[2..],
        strings(&[
            "--conf",
            "spark.executor.memory=2g",
            "app.py",
            "--day",
            "2026112800"
        ])
    );
    assert!(argv.iter().all(|a| !a.contains(SECRET)), "{argv:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("argv.file")).unwrap(),
        format!("spark.hadoop.fs.s3a.secret.key={SECRET}\n")
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("argv.mode"))
            .unwrap()
            .trim(),
        "600"
    );
    assert!(
        !Path::new(&argv[1]).exists(),
        "the properties file outlived the job"
    );
    let events = capture.events();
    assert!(
        events.iter().all(|e| !e.message.contains(SECRET)),
        "a secret reached the logs: {events:?}"
    );
}

/// Secret pig params reach pig in an owner-only `-param_file`.
#[tokio::test]
async fn secret_pig_params_go_to_an_owner_only_param_file() {
    let dir = tempfile::tempdir().unwrap();
    let fake = write_script(dir.path(), "fake-pig", FAKE_TOOL_WITH_FILE);
    let argv_out = dir.path().join("argv");
    let cluster = cluster_in(dir.path(), |o| {
        o.pig = Some(fake.clone());
        o.env = vec![("FAKE_ARGV_OUT".into(), argv_out.display().to_string())];
    })
    .await;
    let job = Job::Pig {
        script: "s.pig".into(),
        params: vec![("day".into(), "2026112800".into())],
        secret_params: vec![("token".into(), flow_core::Secret::new(SECRET))],
    };
    submit_in_span(
        &cluster,
        &job,
        &context(Settings::new()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let argv = recorded_argv(&argv_out);
    assert_eq!(argv[0], "-param_file");
    assert_eq!(
        argv[2..],
        strings(&["-param", "day=2026112800", "-f", "s.pig"])
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("argv.file")).unwrap(),
        format!("token={SECRET}\n")
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("argv.mode"))
            .unwrap()
            .trim(),
        "600"
    );
}

/// A shell job gets its secrets as environment variables: `sh`'s own
/// argument vector (what `ps` shows) does not hold them.
#[tokio::test]
async fn shell_secrets_are_environment_variables_not_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), |_| {}).await;
    let job = Job::Shell {
        command:
            "tr '\\0' ' ' < /proc/$$/cmdline > cmdline; printf %s \"${FLOW_SECRET_TOKEN}\" > seen"
                .into(),
        env: vec![("FLOW_SECRET_TOKEN".into(), flow_core::Secret::new(SECRET))],
    };
    submit_in_span(
        &cluster,
        &job,
        &context(Settings::new()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("seen")).unwrap(),
        SECRET
    );
    let cmdline = std::fs::read_to_string(dir.path().join("cmdline")).unwrap();
    assert!(cmdline.starts_with("/bin/sh -c "), "{cmdline}");
    assert!(!cmdline.contains(SECRET), "{cmdline}");
}

#[tokio::test]
async fn pig_and_hadoop_jobs_get_their_argv() {
    let dir = tempfile::tempdir().unwrap();
    let fake_pig = write_script(dir.path(), "fake-pig", FAKE_TOOL);
    let fake_hadoop = write_script(dir.path(), "fake-hadoop", FAKE_TOOL);
    let argv_out = dir.path().join("argv");
    let cluster = cluster_in(dir.path(), |o| {
        o.pig = Some(fake_pig.clone());
        o.hadoop = Some(fake_hadoop.clone());
        o.env = vec![("FAKE_ARGV_OUT".into(), argv_out.display().to_string())];
    })
    .await;
    let execution = context(Settings::new());
    let cancel = CancellationToken::new();

    let pig = Job::Pig {
        script: "etl/clean.pig".into(),
        params: vec![
            ("day".into(), "2026112800".into()),
            ("out".into(), "a b".into()),
        ],
        secret_params: vec![],
    };
    submit_in_span(&cluster, &pig, &execution, &cancel)
        .await
        .unwrap();
    assert_eq!(
        recorded_argv(&argv_out),
        strings(&[
            "-param",
            "day=2026112800",
            "-param",
            "out=a b",
            "-f",
            "etl/clean.pig"
        ])
    );

    let hadoop = Job::HadoopJar {
        jar: "lib/job.jar".into(),
        main_class: Some("com.example.Count".into()),
        args: strings(&["in dir", "out"]),
    };
    submit_in_span(&cluster, &hadoop, &execution, &cancel)
        .await
        .unwrap();
    assert_eq!(
        recorded_argv(&argv_out),
        strings(&["jar", "lib/job.jar", "com.example.Count", "in dir", "out"])
    );
}

#[tokio::test]
async fn tools_are_looked_up_on_the_path_from_the_options() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = write_script(dir.path(), "fake-spark-submit", FAKE_TOOL);
    std::os::unix::fs::symlink(&fake, bin.join("spark-submit")).unwrap();
    let argv_out = dir.path().join("argv");
    let cluster = cluster_in(dir.path(), |o| {
        o.env = vec![
            ("PATH".into(), format!("{}:/usr/bin:/bin", bin.display())),
            ("FAKE_ARGV_OUT".into(), argv_out.display().to_string()),
        ];
    })
    .await;

    let job = Job::Spark {
        application: "app.py".into(),
        main_class: None,
        conf: vec![],
        secret_conf: vec![],
        args: vec![],
    };
    submit_in_span(
        &cluster,
        &job,
        &context(Settings::new()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(recorded_argv(&argv_out), strings(&["app.py"]));
}

#[tokio::test]
async fn a_missing_tool_gives_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let empty_bin = dir.path().join("empty-bin");
    std::fs::create_dir(&empty_bin).unwrap();
    let cluster = cluster_in(dir.path(), |o| {
        o.env = vec![("PATH".into(), empty_bin.display().to_string())];
    })
    .await;
    let execution = context(Settings::new());
    let cancel = CancellationToken::new();

    let spark = Job::Spark {
        application: "app.py".into(),
        main_class: None,
        conf: vec![],
        secret_conf: vec![],
        args: vec![],
    };
    let (_, job, message) =
        expect_job_failed(submit_in_span(&cluster, &spark, &execution, &cancel).await);
    assert_eq!(job, "spark");
    assert!(
        message.starts_with(
            "spark-submit not found: install Spark, or set `[cluster] spark_submit` in flow.toml"
        ),
        "{message}"
    );

    let pig = Job::Pig {
        script: "s.pig".into(),
        params: vec![],
        secret_params: vec![],
    };
    let message = expect_job_failed(submit_in_span(&cluster, &pig, &execution, &cancel).await).2;
    assert!(
        message.starts_with("pig not found: install Pig, or set `[cluster] pig` in flow.toml"),
        "{message}"
    );

    let hadoop = Job::HadoopJar {
        jar: "j.jar".into(),
        main_class: None,
        args: vec![],
    };
    let message = expect_job_failed(submit_in_span(&cluster, &hadoop, &execution, &cancel).await).2;
    assert!(
        message.starts_with(
            "hadoop not found: install Hadoop, or set `[cluster] hadoop` in flow.toml"
        ),
        "{message}"
    );

    // A configured path that does not exist is named.
    let missing = dir.path().join("no/such/spark-submit");
    let cluster = cluster_in(dir.path(), |o| o.spark_submit = Some(missing.clone())).await;
    let message = expect_job_failed(submit_in_span(&cluster, &spark, &execution, &cancel).await).2;
    assert!(message.starts_with("spark-submit not found: "), "{message}");
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn launch_checks_the_work_dir_and_launch_and_terminate_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let cluster = flow_cluster_local::LocalCluster::new(
        "local-0",
        LocalOptions {
            work_dir: missing.clone(),
            state_dir: dir.path().join(".state"),
            ..LocalOptions::default()
        },
    );
    match launch(&cluster).await {
        Err(ClusterError::Launch {
            cluster,
            message,
            transient,
        }) => {
            assert_eq!(cluster, "local-0");
            assert!(!transient);
            assert!(
                message.contains(&missing.display().to_string()),
                "{message}"
            );
        }
        other => panic!("expected a launch error, got {other:?}"),
    }
    // Terminate after a failed launch is fine, twice.
    cluster.terminate().await.unwrap();
    cluster.terminate().await.unwrap();

    let cluster = cluster_in(dir.path(), |_| {}).await;
    launch(&cluster).await.unwrap();
    cluster.terminate().await.unwrap();
    cluster.terminate().await.unwrap();
}

#[tokio::test]
async fn the_factory_makes_named_local_clusters_on_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let factory = LocalClusterFactory::new(LocalOptions {
        root: dir.path().to_path_buf(),
        work_dir: dir.path().to_path_buf(),
        state_dir: dir.path().join(".state"),
        ..LocalOptions::default()
    });
    assert_eq!(factory.kind(), "local");
    let cluster = factory
        .create("local-3", &context(Settings::new()))
        .unwrap();
    assert_eq!(cluster.name(), "local-3");
    assert_eq!(cluster.kind(), "local");
    launch(cluster.as_ref()).await.unwrap();

    let cancel = CancellationToken::new();
    let execution = context(Settings::new());
    run_job(
        cluster.as_ref(),
        &shell("mkdir -p out && echo hi > out/file"),
        &execution,
        &cancel,
    )
    .await
    .unwrap();
    // The job's relative path and the filesystem's relative key meet.
    assert!(cluster.filesystem().exists("out/file").await.unwrap());
    cluster.terminate().await.unwrap();
}

#[tokio::test]
async fn output_held_open_by_an_escaped_process_does_not_hold_the_job() {
    // A failure, not a silent pass, where the precondition is missing.
    assert!(
        Path::new("/usr/bin/setsid").exists() || Path::new("/bin/setsid").exists(),
        "this test needs setsid (util-linux)"
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_in(dir.path(), |o| o.kill_grace = Duration::from_millis(200)).await;
    let (capture, _guard) = Capture::install();

    // setsid leaves the job's process group but inherits its stdout. The
    // job waits until the escapee is in its new session, so that it is
    // really outside the group when the job ends.
    let result = submit_in_span(
        &cluster,
        &shell(
            "setsid sh -c 'echo $$ > escaped.tmp; mv escaped.tmp escaped; exec sleep 100' & \
             while [ ! -f escaped ]; do sleep 0.01; done; echo before",
        ),
        &context(Settings::new()),
        &CancellationToken::new(),
    )
    .await;

    let escaped = parse_pids(&std::fs::read_to_string(dir.path().join("escaped")).unwrap());
    // The escaped process is outside what the cluster manages: clean up here.
    // SAFETY: only signals the pid this test's job reported.
    unsafe { libc::kill(escaped[0], libc::SIGKILL) };
    // Output goes to a file, not a pipe: the escapee holding it open
    // cannot keep the job from ending.
    result.unwrap();
    assert_eq!(capture.messages(Level::INFO)[1], "before");
}
