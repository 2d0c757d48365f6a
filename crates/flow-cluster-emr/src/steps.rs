//! EMR steps as flow jobs: the `HadoopJarStep` of each job kind, the
//! client-chosen step name, and what EMR's step states mean. Pure data, so
//! it is tested without a backend.

use flow_cloud::{Outcome, Phase, StateTable};
use flow_core::{Job, JobContext};

/// EMR's step states by meaning.
pub const EMR_STEP_STATES: StateTable = StateTable {
    running: &["PENDING", "CANCEL_PENDING", "RUNNING"],
    succeeded: &["COMPLETED"],
    failed: &["FAILED", "INTERRUPTED"],
    cancelled: &["CANCELLED"],
};

/// Cluster states in which a cluster takes (or will take) steps: reused by
/// name, adopted after a crash.
pub const LIVE_CLUSTER_STATES: [&str; 4] = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"];
/// Cluster states of a cluster that is ending or gone.
pub const ENDED_CLUSTER_STATES: [&str; 3] = ["TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"];

/// The jar that runs a command on the master node.
pub const COMMAND_RUNNER: &str = "command-runner.jar";

/// What `AddJobFlowSteps` gets for a job: `HadoopJarStep`'s jar, main
/// class and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JarStep {
    /// The jar: `command-runner.jar` for spark-submit, pig and shell lines, or the job's own.
    pub jar: String,
    /// The main class, for a job's own jar.
    pub main_class: Option<String>,
    /// The arguments.
    pub args: Vec<String>,
}

/// The `HadoopJarStep` for `job`:
/// - spark: `command-runner.jar spark-submit --deploy-mode cluster [--class C] [--conf k=v]... APP ARGS...`
/// - pig: `command-runner.jar pig-script --run-pig-script --args -f SCRIPT [-p K=V]...`
/// - hadoop: the job's jar with its main class and arguments
/// - shell: `command-runner.jar bash -c LINE` (the line's substituted
///   values were checked shell-safe when it was rendered, as for the local
///   cluster)
pub fn jar_step(job: &Job) -> JarStep {
    let runner = |args: Vec<String>| JarStep {
        jar: COMMAND_RUNNER.to_string(),
        main_class: None,
        args,
    };
    match job {
        Job::Shell { command, .. } => runner(vec!["bash".into(), "-c".into(), command.clone()]),
        Job::Spark {
            application,
            main_class,
            conf,
            args,
            ..
        } => {
            let mut argv: Vec<String> = vec![
                "spark-submit".into(),
                "--deploy-mode".into(),
                "cluster".into(),
            ];
            if let Some(class) = main_class {
                argv.push("--class".into());
                argv.push(class.clone());
            }
            for (key, value) in conf {
                argv.push("--conf".into());
                argv.push(format!("{key}={value}"));
            }
            argv.push(application.clone());
            argv.extend(args.iter().cloned());
            runner(argv)
        }
        Job::Pig { script, params, .. } => {
            let mut argv: Vec<String> = vec![
                "pig-script".into(),
                "--run-pig-script".into(),
                "--args".into(),
                "-f".into(),
                script.clone(),
            ];
            for (key, value) in params {
                argv.push("-p".into());
                argv.push(format!("{key}={value}"));
            }
            runner(argv)
        }
        Job::HadoopJar {
            jar,
            main_class,
            args,
        } => JarStep {
            jar: jar.clone(),
            main_class: main_class.clone(),
            args: args.clone(),
        },
    }
}

/// EMR allows step names up to 256 characters.
const MAX_STEP_NAME: usize = 256;

/// The client-chosen, unique name of a job's step:
/// `FLOW/TIMEPERIOD/STEP/ACTION/aATTEMPT/RANDOM`. Stored in the handle
/// before the step is added, so a later engine finds the step by name when
/// the answer to `AddJobFlowSteps` was lost.
pub fn emr_step_name(cx: &JobContext<'_>, random: u64) -> String {
    let tail = format!("/a{}/{random:016x}", cx.attempt);
    let head = format!(
        "{}/{}/{}/{}",
        clean(&cx.execution.flow_name),
        cx.execution.timeperiod,
        clean(cx.step),
        clean(cx.action)
    );
    // Cut the readable part, never the unique suffix.
    let room = MAX_STEP_NAME - tail.len();
    let head: String = head.chars().take(room).collect();
    format!("{head}{tail}")
}

fn clean(part: &str) -> String {
    part.chars()
        .map(|c| if c.is_control() || c == '/' { '_' } else { c })
        .collect()
}

/// What one `ListSteps` entry says about a step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmrStepInfo {
    /// The step's id (`s-...`).
    pub id: String,
    /// The step's name: the client-chosen job name.
    pub name: String,
    /// EMR's state, e.g. `RUNNING`.
    pub state: String,
    /// `StateChangeReason.Message`.
    pub reason: Option<String>,
    /// `FailureDetails`.
    pub failure_reason: Option<String>,
    /// `FailureDetails.Message`.
    pub failure_message: Option<String>,
    /// `FailureDetails.LogFile`.
    pub failure_log_file: Option<String>,
}

impl EmrStepInfo {
    /// The step as a `ListSteps` summary describes it.
    pub fn from_summary(s: &aws_sdk_emr::types::StepSummary) -> EmrStepInfo {
        let status = s.status();
        let details = status.and_then(|st| st.failure_details());
        EmrStepInfo {
            id: s.id().unwrap_or_default().to_string(),
            name: s.name().unwrap_or_default().to_string(),
            state: status
                .and_then(|st| st.state())
                .map(|st| st.as_str().to_string())
                .unwrap_or_default(),
            reason: status
                .and_then(|st| st.state_change_reason())
                .and_then(|r| r.message())
                .filter(|m| !m.is_empty())
                .map(str::to_string),
            failure_reason: details.and_then(|d| d.reason()).map(str::to_string),
            failure_message: details.and_then(|d| d.message()).map(str::to_string),
            failure_log_file: details.and_then(|d| d.log_file()).map(str::to_string),
        }
    }

    /// Where the step stands; an unknown state counts as still running
    /// (clouds add states), and is logged by the caller.
    pub fn phase(&self) -> Phase {
        EMR_STEP_STATES.phase(&self.state).unwrap_or(Phase::Running)
    }

    /// `step s-123 FAILED: reason: message (log: s3://...)`, with what EMR
    /// gave.
    pub fn describe(&self) -> String {
        let mut text = format!("step {} {}", self.id, self.state);
        let mut parts = Vec::new();
        if let Some(r) = &self.failure_reason {
            parts.push(r.clone());
        }
        if let Some(m) = &self.failure_message {
            parts.push(m.clone());
        }
        if parts.is_empty() {
            if let Some(r) = &self.reason {
                parts.push(r.clone());
            }
        }
        if !parts.is_empty() {
            text.push_str(": ");
            text.push_str(&parts.join(": "));
        }
        if let Some(log) = &self.failure_log_file {
            text.push_str(&format!(" (log: {log})"));
        }
        text
    }

    /// How the step ended, or `None` while it runs (or for a state flow does not know).
    pub fn outcome(&self) -> Option<Outcome> {
        match self.phase() {
            Phase::Finished(o) => Some(o),
            Phase::Running => None,
        }
    }
}

/// `LOG_URI/CLUSTER_ID/steps/STEP_ID/`, where EMR uploads a step's logs.
pub fn step_log_prefix(log_uri: &str, cluster_id: &str, step_id: &str) -> String {
    format!(
        "{}/{cluster_id}/steps/{step_id}/",
        log_uri.trim_end_matches('/')
    )
}

/// The last `max` bytes of `text`, starting at a line when cut.
pub fn last_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    match cut.find('\n') {
        Some(i) if i + 1 < cut.len() => &cut[i + 1..],
        _ => cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::{ExecutionContext, Settings, Timeperiod};
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    fn s(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn hadoop_jar_steps_of_each_kind() {
        let spark = jar_step(&Job::Spark {
            application: "s3://b/app.py".into(),
            main_class: Some("org.Main".into()),
            conf: vec![
                ("spark.a".into(), "1".into()),
                ("spark.b".into(), "x y".into()),
            ],
            secret_conf: vec![],
            args: s(&["--day", "2026112800"]),
        });
        assert_eq!(spark.jar, "command-runner.jar");
        assert_eq!(spark.main_class, None);
        assert_eq!(
            spark.args,
            s(&[
                "spark-submit",
                "--deploy-mode",
                "cluster",
                "--class",
                "org.Main",
                "--conf",
                "spark.a=1",
                "--conf",
                "spark.b=x y",
                "s3://b/app.py",
                "--day",
                "2026112800"
            ])
        );
        let plain_spark = jar_step(&Job::Spark {
            application: "app.py".into(),
            main_class: None,
            conf: vec![],
            secret_conf: vec![],
            args: vec![],
        });
        assert_eq!(
            plain_spark.args,
            s(&["spark-submit", "--deploy-mode", "cluster", "app.py"])
        );
        let pig = jar_step(&Job::Pig {
            script: "s3://b/s.pig".into(),
            params: vec![("IN".into(), "s3://b/in".into()), ("N".into(), "3".into())],
            secret_params: vec![],
        });
        assert_eq!(
            pig.args,
            s(&[
                "pig-script",
                "--run-pig-script",
                "--args",
                "-f",
                "s3://b/s.pig",
                "-p",
                "IN=s3://b/in",
                "-p",
                "N=3"
            ])
        );
        let hadoop = jar_step(&Job::HadoopJar {
            jar: "s3://b/wc.jar".into(),
            main_class: Some("WordCount".into()),
            args: s(&["in", "out"]),
        });
        assert_eq!(
            hadoop,
            JarStep {
                jar: "s3://b/wc.jar".into(),
                main_class: Some("WordCount".into()),
                args: s(&["in", "out"]),
            }
        );
        let shell = jar_step(&Job::Shell {
            command: "echo hi > /tmp/x".into(),
            env: vec![],
        });
        assert_eq!(shell.jar, "command-runner.jar");
        assert_eq!(shell.args, s(&["bash", "-c", "echo hi > /tmp/x"]));
    }

    #[test]
    fn step_names_are_unique_readable_and_bounded() {
        let timeperiod: Timeperiod = "2026112800".parse().unwrap();
        let execution = ExecutionContext {
            flow_name: "daily/report".into(),
            timeperiod,
            start_timeperiod: timeperiod,
            end_timeperiod: timeperiod,
            settings: Arc::new(Settings::new()),
            number_of_clusters: 1,
        };
        let cancel = CancellationToken::new();
        let cx = JobContext {
            cancel: &cancel,
            execution: &execution,
            step: "extract",
            action: "spark",
            attempt: 2,
        };
        let name = emr_step_name(&cx, 0xabc);
        assert_eq!(
            name,
            "daily_report/2026112800/extract/spark/a2/0000000000000abc"
        );
        let long = "x".repeat(400);
        let cx = JobContext { step: &long, ..cx };
        let name = emr_step_name(&cx, 7);
        assert_eq!(name.len(), 256);
        assert!(name.ends_with("/a2/0000000000000007"));
    }

    #[test]
    fn states_and_failure_messages() {
        let failed = EmrStepInfo {
            id: "s-1".into(),
            state: "FAILED".into(),
            failure_reason: Some("Unknown Error".into()),
            failure_message: Some("Exception in thread main".into()),
            failure_log_file: Some("s3://logs/j-1/steps/s-1/stderr.gz".into()),
            ..EmrStepInfo::default()
        };
        assert_eq!(failed.outcome(), Some(Outcome::Failed));
        assert_eq!(
            failed.describe(),
            "step s-1 FAILED: Unknown Error: Exception in thread main (log: s3://logs/j-1/steps/s-1/stderr.gz)"
        );
        let interrupted = EmrStepInfo {
            id: "s-2".into(),
            state: "INTERRUPTED".into(),
            reason: Some("cluster terminated".into()),
            ..EmrStepInfo::default()
        };
        assert_eq!(interrupted.outcome(), Some(Outcome::Failed));
        assert_eq!(
            interrupted.describe(),
            "step s-2 INTERRUPTED: cluster terminated"
        );
        for (state, outcome) in [
            ("PENDING", None),
            ("CANCEL_PENDING", None),
            ("RUNNING", None),
            ("SOMETHING_NEW", None),
            ("COMPLETED", Some(Outcome::Succeeded)),
            ("CANCELLED", Some(Outcome::Cancelled)),
        ] {
            let info = EmrStepInfo {
                state: state.into(),
                ..EmrStepInfo::default()
            };
            assert_eq!(info.outcome(), outcome, "{state}");
        }
        assert_eq!(
            step_log_prefix("s3://logs/emr/", "j-1", "s-2"),
            "s3://logs/emr/j-1/steps/s-2/"
        );
        assert_eq!(last_bytes("a\nbb\nccc\n", 6), "ccc\n");
        assert_eq!(last_bytes("short", 10), "short");
    }
}
