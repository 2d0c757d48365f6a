//! Commands on QDS: the durable handle, the `POST /commands` body built
//! from a flow [`Job`], and the poller's [`JobSource`] (one request per tick
//! for all the watched commands of a cluster label).

use crate::api::{Api, Command, PAGE_SIZE};
use crate::config::QuboleConfig;
use crate::error::ApiError;
use async_trait::async_trait;
use flow_cloud::cluster::{Read, Unlisted};
use flow_cloud::job::{job_file, unique_name};
use flow_cloud::{HandleIds, JobSource, Phase, StateTable};
use flow_core::{ClusterError, Job, JobContext, JobHandle};
use serde_json::{json, Map, Value};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// The backend kind in handles and records.
pub const KIND: &str = "qubole";

/// QDS's command statuses by meaning (the Command Object's).
pub const COMMAND_STATES: StateTable = StateTable {
    running: &["waiting", "running", "cancelling"],
    succeeded: &["done"],
    failed: &["error"],
    cancelled: &["cancelled"],
};

/// The ids a Qubole job handle holds.
pub(crate) mod ids {
    /// The QDS cluster label the command was sent to.
    pub const LABEL: &str = "cluster_label";
    /// Flow's id of the job: the command's `name` and one of its `tags`.
    pub const NAME: &str = "name";
    /// QDS's command id, once QDS answered the submission.
    pub const COMMAND_ID: &str = "command_id";
    /// `spark`, `pig`, `shell` or `hadoop`, for messages.
    pub const TYPE: &str = "type";
}

/// A job on QDS as its handle knows it: the command id may be missing when
/// the engine that sent it died before recording QDS's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobRef {
    pub label: String,
    pub name: String,
    pub command_id: Option<u64>,
}

impl JobRef {
    /// Reads a handle; `cluster` names the run's cluster in errors.
    pub fn from_handle(handle: &JobHandle, cluster: &str) -> Result<JobRef, ClusterError> {
        let ids = HandleIds::read(handle, KIND, cluster)?;
        let command_id = match ids.optional(ids::COMMAND_ID) {
            None => None,
            Some(text) => Some(
                text.parse::<u64>()
                    .map_err(|_| ids.bad(format!("command_id {text:?} is not a number")))?,
            ),
        };
        Ok(JobRef {
            label: ids.required(ids::LABEL)?,
            name: ids.required(ids::NAME)?,
            command_id,
        })
    }
}

/// A submitted command, as the poller watches it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CommandRef {
    pub label: String,
    pub id: u64,
}

impl fmt::Display for CommandRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command {}", self.id)
    }
}

/// The job's type as recorded in its handle.
pub(crate) fn job_type(handle: &JobHandle) -> &'static str {
    flow_cloud::job::job_type(handle, ids::TYPE, &["spark", "pig", "hadoop", "shell"])
}

/// A client-chosen name, unique per attempt:
/// `flow-FLOW-STEP-ACTION-ATTEMPT-RANDOM`, at most 255 characters (QDS's
/// limit for names and tags), of letters, digits, `_` and `-` only: a
/// command name may hold none of the characters QDS refuses (`&`, `<`,
/// `>`, quotes) and a tag none of the separators.
pub(crate) fn new_job_name(cx: &JobContext<'_>) -> String {
    let text = format!(
        "flow-{}-{}-{}-{}",
        cx.execution.flow_name, cx.step, cx.action, cx.attempt
    );
    unique_name(&text, &format!("{:016x}", fastrand::u64(..)), 255)
}

/// Where a job file is: as written when it has a scheme (`s3://`, ...),
/// else `s3://CODE_BUCKET/PATH`.
pub(crate) fn resolve_uri(path: &str, code_bucket: Option<&str>) -> Result<String, String> {
    let root = code_bucket.map(|bucket| format!("s3://{bucket}"));
    job_file(path, root.as_deref(), || {
        format!(
        "{path:?} has no scheme and no code_bucket is configured: write s3://BUCKET/{path} or set code_bucket in [cluster.qubole]"
    )
    })
}

/// A word for a command line QDS hands to a shell: as it is when it holds
/// only safe characters, else single-quoted.
pub(crate) fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn quote_all<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words.into_iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// QDS keeps every command's body in the command history, readable by the
/// account's users: a secret there is refused, naming only the keys.
fn refuse_secrets(field: &str, keys: &[&str]) -> Result<(), String> {
    if keys.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{field} {keys:?} hold secrets, and QDS shows a command's body to every user of the account in its command history: have the job read them from a secret store (AWS Secrets Manager, SSM Parameter Store) instead"
    ))
}

/// Languages QDS reads from a Spark `script_location`, by extension.
const SPARK_SCRIPTS: &[&str] = &[".py", ".scala", ".R", ".sql"];

/// The job's type and its command body without the common fields:
/// - spark: a script (`.py`, `.scala`, `.R`, `.sql`) without a main class
///   is `script_location` with `arguments` (its `--conf`s) and
///   `user_program_arguments`; a JVM application is one `cmdline`
///   (`spark-submit --class C --conf k=v APP ARGS`);
/// - pig: `script_location` and `parameters`;
/// - shell: `inline` (the command line);
/// - hadoop: `sub_command = "jar"` and `sub_command_args` (`JAR [CLASS]
///   ARGS`, each word quoted).
pub(crate) fn command_payload(
    job: &Job,
    config: &QuboleConfig,
) -> Result<(&'static str, Map<String, Value>), String> {
    let code = config.code_bucket.as_deref();
    let mut body = Map::new();
    let kind = match job {
        Job::Shell { command, env } => {
            let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
            refuse_secrets("environment variables", &keys)?;
            body.insert("command_type".into(), json!("ShellCommand"));
            body.insert("inline".into(), json!(command));
            "shell"
        }
        Job::Spark {
            application,
            main_class,
            conf,
            secret_conf,
            args,
        } => {
            let keys: Vec<&str> = secret_conf.iter().map(|(k, _)| k.as_str()).collect();
            refuse_secrets("conf", &keys)?;
            let uri = resolve_uri(application, code)?;
            let confs: Vec<String> = conf.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let options: Vec<&str> = confs.iter().flat_map(|c| ["--conf", c.as_str()]).collect();
            body.insert("command_type".into(), json!("SparkCommand"));
            let script = SPARK_SCRIPTS.iter().any(|ext| application.ends_with(ext));
            match main_class {
                None if script => {
                    body.insert("script_location".into(), json!(uri));
                    if !options.is_empty() {
                        body.insert("arguments".into(), json!(quote_all(options)));
                    }
                    if !args.is_empty() {
                        body.insert(
                            "user_program_arguments".into(),
                            json!(quote_all(args.iter().map(String::as_str))),
                        );
                    }
                }
                _ => {
                    let mut line = vec!["spark-submit"];
                    if let Some(class) = main_class {
                        line.extend(["--class", class.as_str()]);
                    }
                    line.extend(options);
                    line.push(&uri);
                    line.extend(args.iter().map(String::as_str));
                    body.insert("cmdline".into(), json!(quote_all(line)));
                }
            }
            "spark"
        }
        Job::Pig {
            script,
            params,
            secret_params,
        } => {
            let keys: Vec<&str> = secret_params.iter().map(|(k, _)| k.as_str()).collect();
            refuse_secrets("params", &keys)?;
            body.insert("command_type".into(), json!("PigCommand"));
            body.insert("script_location".into(), json!(resolve_uri(script, code)?));
            if !params.is_empty() {
                let params: Map<String, Value> =
                    params.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                body.insert("parameters".into(), Value::Object(params));
            }
            "pig"
        }
        Job::HadoopJar {
            jar,
            main_class,
            args,
        } => {
            let uri = resolve_uri(jar, code)?;
            let mut words = vec![uri.as_str()];
            words.extend(main_class.as_deref());
            words.extend(args.iter().map(String::as_str));
            body.insert("command_type".into(), json!("HadoopCommand"));
            body.insert("sub_command".into(), json!("jar"));
            body.insert("sub_command_args".into(), json!(quote_all(words)));
            "hadoop"
        }
    };
    Ok((kind, body))
}

/// The whole `POST /commands` body: the payload with the cluster label,
/// flow's job id as `name` and tag, and the flow's tag.
pub(crate) fn command_body(payload: Map<String, Value>, job: &JobRef) -> Value {
    let mut body = payload;
    body.insert("label".into(), json!(job.label));
    body.insert("name".into(), json!(job.name));
    body.insert("tags".into(), json!([job.name, "flow"]));
    Value::Object(body)
}

/// The poller's view of QDS: one request per tick for all the watched
/// commands of a label.
///
/// - One command watched: `GET /commands/ID`.
/// - Several: one history page of the label (100 commands, newest first)
///   per tick, the next page on the next tick while some watched command
///   was on none so far; a command on no page at all (an older one, or one
///   of another label) is read with `GET /commands/ID`, one per tick. Until
///   seen, a command counts as running.
pub(crate) struct QuboleCommands {
    api: Arc<Api>,
    queues: Mutex<Queues>,
}

#[derive(Default)]
struct Queues {
    /// The history page to read next (1 = the newest).
    page: u32,
    /// Commands no history page showed, to be read one per tick.
    to_get: Unlisted<CommandRef>,
    /// The label of the commands last asked about: the cluster
    /// [`JobSource::cluster_ended`] asks about.
    label: Option<String>,
}

impl QuboleCommands {
    pub fn new(api: Arc<Api>) -> Self {
        QuboleCommands {
            api,
            queues: Mutex::new(Queues::default()),
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A status that says nothing yet (counts as running).
fn not_yet_known(id: &CommandRef) -> Command {
    Command {
        id: id.id,
        ..Command::default()
    }
}

#[async_trait]
impl JobSource for QuboleCommands {
    type Id = CommandRef;
    type Status = Command;
    type Error = ApiError;

    async fn statuses(&self, ids: &[CommandRef]) -> Result<Vec<(CommandRef, Command)>, ApiError> {
        let get = |id: CommandRef| async move {
            let command = self.api.get_command(id.id).await?;
            Ok::<_, ApiError>(command.map(|c| (id, c)))
        };
        if let Some(first) = ids.first() {
            self.queues().label = Some(first.label.clone());
        }
        let (read, page) = {
            let mut queues = self.queues();
            let read = queues.to_get.read(ids);
            if let Read::Only(_) = read {
                queues.page = 0;
            }
            (read, queues.page.max(1))
        };
        if let Some(answer) = read.by_id(ids, get, not_yet_known).await? {
            return Ok(answer);
        }
        let label = ids[0].label.clone();
        let history = self.api.history(&label, None, page).await?;
        let mut queues = self.queues();
        let mut answer = Vec::with_capacity(ids.len());
        let mut unseen = false;
        for id in ids {
            let listed = (id.label == label)
                .then(|| history.commands.iter().find(|c| c.id == id.id))
                .flatten();
            match listed {
                Some(command) => answer.push((id.clone(), command.clone())),
                None => {
                    // Older than this page, or on another label.
                    let elsewhere = id.label != label;
                    let last_page = history.paging_info.next_page.is_none()
                        || history.commands.len() < PAGE_SIZE as usize;
                    if elsewhere || last_page {
                        queues.to_get.push(id.clone());
                    } else {
                        unseen = true;
                    }
                    answer.push((id.clone(), not_yet_known(id)));
                }
            }
        }
        queues.page = match (unseen, history.paging_info.next_page) {
            (true, Some(next)) if next > page => next,
            _ => 1,
        };
        Ok(answer)
    }

    fn phase(&self, status: &Command) -> Phase {
        let state = status.status.as_str();
        if state.is_empty() {
            return Phase::Running;
        }
        COMMAND_STATES.phase(state).unwrap_or_else(|| {
            tracing::warn!(
                command = status.id,
                "unknown QDS command status {state}; still waiting"
            );
            Phase::Running
        })
    }

    fn checks_cluster(&self) -> bool {
        true
    }

    /// One `GET /clusters/LABEL/state` of the label the last request's
    /// commands run on: ended when `DOWN` or `TERMINATING` (a command sent
    /// to a cluster that is down starts it, so a watched command's cluster
    /// is `PENDING` or `UP` while it can still run), or when QDS has no
    /// cluster of that label any more.
    async fn cluster_ended(&self) -> Result<Option<String>, ApiError> {
        let Some(label) = self.queues().label.clone() else {
            return Ok(None);
        };
        match self.api.cluster_state(&label).await {
            Ok(state) => Ok(matches!(state.state.as_str(), "DOWN" | "TERMINATING")
                .then(|| format!("QDS cluster {label} is {}", state.describe()))),
            Err(e) if e.is_not_found() => Ok(Some(format!(
                "QDS has no cluster labelled {label} any more ({e})"
            ))),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::Secret;

    fn config() -> QuboleConfig {
        QuboleConfig {
            cluster_label: "etl".into(),
            token: "env:T".into(),
            code_bucket: Some("code".into()),
            ..QuboleConfig::default()
        }
    }

    fn spark(application: &str, main_class: Option<&str>) -> Job {
        Job::Spark {
            application: application.into(),
            main_class: main_class.map(str::to_string),
            conf: vec![("spark.executor.memory".into(), "4g".into())],
            secret_conf: vec![],
            args: vec!["--day".into(), "2026 11 28".into()],
        }
    }

    #[test]
    fn a_python_application_is_a_script_location_with_its_options_and_arguments() {
        let (kind, body) = command_payload(&spark("jobs/report.py", None), &config()).unwrap();
        assert_eq!(kind, "spark");
        assert_eq!(
            Value::Object(body),
            json!({
                "command_type": "SparkCommand",
                "script_location": "s3://code/jobs/report.py",
                "arguments": "--conf spark.executor.memory=4g",
                "user_program_arguments": "--day '2026 11 28'",
            })
        );
    }

    #[test]
    fn a_jvm_application_is_one_spark_submit_command_line() {
        let (_, body) =
            command_payload(&spark("s3://jars/etl.jar", Some("com.x.Etl")), &config()).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({
                "command_type": "SparkCommand",
                "cmdline": "spark-submit --class com.x.Etl --conf spark.executor.memory=4g s3://jars/etl.jar --day '2026 11 28'",
            })
        );
    }

    #[test]
    fn pig_shell_and_hadoop_bodies() {
        let pig = Job::Pig {
            script: "pig/count.pig".into(),
            params: vec![("day".into(), "2026-11-28".into())],
            secret_params: vec![],
        };
        let (_, body) = command_payload(&pig, &config()).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"command_type": "PigCommand", "script_location": "s3://code/pig/count.pig", "parameters": {"day": "2026-11-28"}})
        );
        let shell = Job::Shell {
            command: "echo it's 'done'".into(),
            env: vec![],
        };
        let (kind, body) = command_payload(&shell, &config()).unwrap();
        assert_eq!(kind, "shell");
        assert_eq!(
            Value::Object(body),
            json!({"command_type": "ShellCommand", "inline": "echo it's 'done'"})
        );
        let hadoop = Job::HadoopJar {
            jar: "s3://jars/wc.jar".into(),
            main_class: Some("org.x.WordCount".into()),
            args: vec!["s3://in/".into(), "s3://out/it's".into()],
        };
        let (_, body) = command_payload(&hadoop, &config()).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"command_type": "HadoopCommand", "sub_command": "jar", "sub_command_args": "s3://jars/wc.jar org.x.WordCount s3://in/ 's3://out/it'\\''s'"})
        );
    }

    #[test]
    fn secrets_and_unresolvable_paths_are_refused_naming_keys_only() {
        let job = Job::Spark {
            application: "s3://b/a.py".into(),
            main_class: None,
            conf: vec![],
            secret_conf: vec![("spark.db.password".into(), Secret::new("pw-0123456789"))],
            args: vec![],
        };
        let e = command_payload(&job, &config()).unwrap_err();
        assert!(
            e.contains("spark.db.password") && !e.contains("pw-0123456789"),
            "{e}"
        );
        let shell = Job::Shell {
            command: "echo \"${FLOW_SECRET_KEY}\"".into(),
            env: vec![("FLOW_SECRET_KEY".into(), Secret::new("k-0123456789"))],
        };
        assert!(command_payload(&shell, &config())
            .unwrap_err()
            .contains("FLOW_SECRET_KEY"));
        let no_bucket = QuboleConfig {
            code_bucket: None,
            ..config()
        };
        let e = command_payload(&spark("jobs/x.py", None), &no_bucket).unwrap_err();
        assert!(e.contains("code_bucket"), "{e}");
    }

    #[test]
    fn statuses_map_onto_outcomes() {
        use flow_cloud::Outcome;
        assert_eq!(COMMAND_STATES.phase("waiting"), Some(Phase::Running));
        assert_eq!(COMMAND_STATES.phase("cancelling"), Some(Phase::Running));
        assert_eq!(
            COMMAND_STATES.phase("done"),
            Some(Phase::Finished(Outcome::Succeeded))
        );
        assert_eq!(
            COMMAND_STATES.phase("error"),
            Some(Phase::Finished(Outcome::Failed))
        );
        assert_eq!(
            COMMAND_STATES.phase("cancelled"),
            Some(Phase::Finished(Outcome::Cancelled))
        );
    }
}
