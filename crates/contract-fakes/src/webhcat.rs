//! A loopback **contract fake** of WebHCat (Templeton) v1's job API, the
//! Pig and MapReduce gateway of HDInsight at `/templeton/v1`, for tests
//! only: no Hadoop runs here.
//!
//! Served, as Hive's `Server.java` and its delegators answer:
//! - `POST /templeton/v1/pig` (form-encoded: `execute` or `file`, `arg`...,
//!   `files`, `statusdir`, `enablelog`, `callback`, `usehcatalog`) and
//!   `POST /templeton/v1/mapreduce/jar` (`jar` and `class` required,
//!   `libjars`, `files`, `arg`..., `define`..., `statusdir`, `enablelog`,
//!   `callback`, `usehcatalog`): `{"id": "job_1700000000000_0001"}`.
//!   Missing required parameters are 400 `BadParam` with WebHCat's
//!   messages (`Missing jar parameter`, `Either execute or file parameter
//!   required`, `enablelog is only applicable when statusdir is set`);
//!   parameters WebHCat does not read are ignored, as JAX-RS does.
//! - `GET /templeton/v1/jobs/ID`: the `QueueStatusBean` (`status` with
//!   `state` `PREP`/`RUNNING`/`SUCCEEDED`/`FAILED`/`KILLED`, `runState`,
//!   `failureInfo`, `jobComplete`; `profile`; `id`, `percentComplete`,
//!   `exitValue`, `user`, `callback`, `completed`, `userargs`).
//! - `GET /templeton/v1/jobs?user.name=&showall=&fields=*&jobid=&numrecords=`:
//!   `[{"id", "detail"}]` in id order, the user's jobs (everyone's with
//!   `showall=true`), `detail` only with `fields=*`.
//! - `DELETE /templeton/v1/jobs/ID`: kills the job, answers its bean.
//!
//! Refused as WebHCat refuses: every call without `user.name` is 401
//! `{"error": "No user found.  Missing user.name parameter."}`; an id that
//! is not a job id is 400 (`JobId string : X is not properly formed`), an
//! unknown one 400 `Could not find job ID` (`StatusDelegator.makeStatus`
//! throws `BadParam`: WebHCat has no 404 for jobs). In front of it, the
//! HDInsight gateway's HTTP basic login: without it (when one is set),
//! 401. Errors are `{"error": MESSAGE}` (`SimpleWebException`).
//!
//! Time comes from a [`FakeClock`]: a job is `RUNNING` from its
//! submission; with [`WebHcatOptions::run_for`] it ends `SUCCEEDED` with
//! exit value 0 that long after (the binary's mode), else it runs until a
//! test ends it ([`FakeWebHcat::finish`]). A Pig job whose script's
//! address contains [`WebHcatOptions::fail_scripts`] fails as a broken
//! script does on HDInsight: its controller ends `SUCCEEDED` with Pig's
//! exit value 6. The status directory's `stderr` is the cluster's to write,
//! on its storage: with [`WebHcatOptions::storage`] (Azurite in the tests)
//! the fake writes Pig's log there, as the controller does, before it
//! answers the submission (a failing script's log ends with Pig's `ERROR`
//! line); without it tests put it there. Faults, request counts and answers are
//! [`Faults`]'s (methods `pig.create`, `jar.create`, `jobs.get`,
//! `jobs.list`, `jobs.delete`).

use crate::auth::BasicLogin;
use crate::clock::FakeClock;
use crate::faults::{self, Faults};
use crate::server::{json, ok, query, query_pairs, Fake, FakeState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use flow_cloud::Clock;
use flow_core::Filesystem;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The cluster's start time in the ids it gives (`job_CLUSTERSTART_NNNN`).
const CLUSTER_START: &str = "1700000000000";

/// WebHCat's error shape: `{"error": M}` (the code is not part of it).
pub fn webhcat_error(status: StatusCode, _code: &str, message: String) -> Response {
    json(status, json!({ "error": message }))
}

/// How the fake behaves.
#[derive(Clone)]
pub struct WebHcatOptions {
    /// The service's time.
    pub clock: Arc<dyn Clock>,
    /// `(user, password)` of the gateway's HTTP basic login; `None`: none
    /// asked.
    pub login: Option<(String, String)>,
    /// A job ends `SUCCEEDED` (exit value 0) this long after it was
    /// submitted; `None`: it runs until a test ends it.
    pub run_for: Option<Duration>,
    /// A Pig job whose `file` contains this ends with exit value 6 (Pig's
    /// for a failed script) instead, after `run_for`.
    pub fail_scripts: Option<String>,
    /// The cluster's storage, where each job's `statusdir/stderr` is
    /// written (status directories are `wasbs://` addresses on it).
    pub storage: Option<Arc<dyn Filesystem>>,
}

impl std::fmt::Debug for WebHcatOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebHcatOptions")
            .field("run_for", &self.run_for)
            .field("fail_scripts", &self.fail_scripts)
            .field("storage", &self.storage.is_some())
            .finish_non_exhaustive()
    }
}

impl WebHcatOptions {
    /// Jobs that run until a test ends them, no storage, no failures.
    pub fn new(clock: Arc<dyn Clock>, login: Option<(String, String)>) -> Self {
        WebHcatOptions {
            clock,
            login,
            run_for: None,
            fail_scripts: None,
            storage: None,
        }
    }
}

/// Pig's exit value for a script that failed.
const PIG_FAILED: i64 = 6;

/// A job the fake holds.
#[derive(Debug, Clone)]
pub struct FakeJob {
    /// Hadoop's id (`job_1700000000000_0001`).
    pub id: String,
    /// `user.name` it was submitted as.
    pub user: String,
    /// `pig` or `mapreduce/jar`.
    pub kind: String,
    /// `PREP`, `RUNNING`, `SUCCEEDED`, `FAILED` or `KILLED`.
    pub state: String,
    /// The controller's exit value, once it ended.
    pub exit_value: Option<i64>,
    /// Why it failed, if Hadoop says.
    pub failure_info: Option<String>,
    /// The submitted parameters as WebHCat echoes them.
    pub userargs: Map<String, Value>,
    /// Every form field it was submitted with, in order.
    pub form: Vec<(String, String)>,
    started: Duration,
    finished: Option<Duration>,
    /// The exit value it ends with after `run_for`.
    ends_with: i64,
}

impl FakeJob {
    fn seq(&self) -> u64 {
        self.id
            .rsplit('_')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    fn ended(&self) -> bool {
        matches!(self.state.as_str(), "SUCCEEDED" | "FAILED" | "KILLED")
    }

    /// The `QueueStatusBean` WebHCat answers.
    fn bean(&self) -> Value {
        let run_state = match self.state.as_str() {
            "RUNNING" => 1,
            "SUCCEEDED" => 2,
            "FAILED" => 3,
            "PREP" => 4,
            _ => 5,
        };
        let job_id = json!({"id": self.seq(), "jtIdentifier": CLUSTER_START});
        let millis = |d: Duration| d.as_millis() as u64;
        let done = self.ended();
        json!({
            "status": {
                "jobId": self.id,
                "jobID": job_id,
                "jobName": "TempletonControllerJob",
                "username": self.user,
                "state": self.state,
                "runState": run_state,
                "startTime": millis(self.started),
                "finishTime": self.finished.map_or(0, millis),
                "failureInfo": self.failure_info.as_deref().unwrap_or("NA"),
                "jobComplete": done,
                "mapProgress": if done { 1.0 } else { 0.0 },
                "reduceProgress": if done { 1.0 } else { 0.0 },
                "cleanupProgress": if done { 1.0 } else { 0.0 },
                "setupProgress": 1.0,
                "queue": "default",
                "priority": "NORMAL",
                "schedulingInfo": "NA",
                "retired": false,
                "uber": false,
                "jobACLs": {},
                "historyFile": "",
                "trackingUrl": format!("http://headnodehost:8088/proxy/application_{CLUSTER_START}_{:04}/", self.seq()),
            },
            "profile": {
                "user": self.user,
                "jobName": "TempletonControllerJob",
                "queueName": "default",
                "jobId": self.id,
                "jobID": job_id,
                "jobFile": format!("/mr-history/done/{}_conf.xml", self.id),
                "url": format!("http://headnodehost:8088/proxy/application_{CLUSTER_START}_{:04}/", self.seq()),
            },
            "id": self.id,
            "parentId": null,
            "percentComplete": if done && self.state != "KILLED" { Value::from("100% complete") } else { Value::Null },
            "exitValue": self.exit_value,
            "user": self.user,
            "callback": self.userargs.get("callback").cloned().unwrap_or(Value::Null),
            "completed": if self.exit_value.is_some() { Value::from("done") } else { Value::Null },
            "userargs": self.userargs,
            "msg": null,
        })
    }
}

#[derive(Default)]
struct World {
    jobs: Vec<FakeJob>,
    next: u64,
}

/// The fake's state, shared by its handler and its handle.
pub struct Service {
    faults: Faults,
    clock: FakeClock,
    /// The gateway's login, if it asks one.
    login: Option<BasicLogin>,
    run_for: Option<Duration>,
    fail_scripts: Option<String>,
    storage: Option<Arc<dyn Filesystem>>,
    world: Mutex<World>,
}

impl Service {
    /// The world, with jobs whose run time is over ended.
    fn world(&self) -> MutexGuard<'_, World> {
        let mut world = self.world.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(run_for) = self.run_for {
            let now = self.clock.now();
            for job in world.jobs.iter_mut().filter(|j| !j.ended()) {
                if now >= job.started + run_for {
                    job.state = "SUCCEEDED".into();
                    job.exit_value = Some(job.ends_with);
                    job.finished = Some(job.started + run_for);
                }
            }
        }
        world
    }
}

/// The fake, served until dropped.
pub type FakeWebHcat = Fake<Service>;

impl FakeState for Service {
    fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl FakeWebHcat {
    /// Serves the fake on `port` (`0`: a free one).
    pub async fn start(options: WebHcatOptions, port: u16) -> std::io::Result<FakeWebHcat> {
        let shared = Arc::new(Service {
            faults: Faults::new(webhcat_error),
            clock: FakeClock::new(options.clock),
            login: options
                .login
                .map(|(user, password)| BasicLogin::new(&user, &password, "HDInsight gateway")),
            run_for: options.run_for,
            fail_scripts: options.fail_scripts,
            storage: options.storage,
            world: Mutex::new(World::default()),
        });
        Fake::serve(handle, shared, port).await
    }

    /// The jobs held, in submission order.
    pub fn jobs(&self) -> Vec<FakeJob> {
        self.shared.world().jobs.clone()
    }

    /// Ends job `id` in `state` (`SUCCEEDED`, `FAILED`, `KILLED`) with the
    /// controller's `exit_value` and Hadoop's `failure_info`.
    pub fn finish(
        &self,
        id: &str,
        state: &str,
        exit_value: Option<i64>,
        failure_info: Option<&str>,
    ) {
        let now = self.shared.clock.now();
        if let Some(job) = self.shared.world().jobs.iter_mut().find(|j| j.id == id) {
            job.state = state.to_string();
            job.exit_value = exit_value;
            job.failure_info = failure_info.map(String::from);
            job.finished = Some(now);
        }
    }
}

fn bad_param(message: impl Into<String>) -> Response {
    webhcat_error(StatusCode::BAD_REQUEST, "", message.into())
}

async fn handle(
    State(shared): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/').to_string();
    let q = query(&uri);
    if let Some(control) = path.strip_prefix("/fake/") {
        return faults::control(&shared.faults, &method, control, &q)
            .or_else(|| crate::clock::control(&shared.clock, &method, control, &q, webhcat_error))
            .unwrap_or_else(|| {
                webhcat_error(
                    StatusCode::NOT_FOUND,
                    "",
                    format!("no control path {control}"),
                )
            });
    }
    let Some(rest) = path.strip_prefix("/templeton/v1/") else {
        return not_served(&method, &path);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let name = match (method.as_str(), segments.as_slice()) {
        ("POST", ["pig"]) => "pig.create",
        ("POST", ["mapreduce", "jar"]) => "jar.create",
        ("GET", ["jobs"]) => "jobs.list",
        ("GET", ["jobs", _]) => "jobs.get",
        ("DELETE", ["jobs", _]) => "jobs.delete",
        _ => return not_served(&method, &path),
    };
    if let Some(refused) = shared
        .login
        .as_ref()
        .and_then(|l| l.check(&headers, webhcat_error))
    {
        return refused;
    }
    if let Some(throttled) = shared.faults.arrive(name) {
        return throttled;
    }
    if let Some(refused) = shared.faults.refuse(name) {
        return shared.faults.depart(name, true, refused);
    }
    // The query string, then (for a POST) the form body: JAX-RS reads
    // `user.name` from either.
    let mut params = query_pairs(uri.query().unwrap_or(""));
    if method == Method::POST {
        params.extend(query_pairs(&String::from_utf8_lossy(&body)));
    }
    let answer = act(&shared, name, &segments, &params);
    if answer.status().is_success() && name.ends_with(".create") {
        if let Some(refused) = write_stderr(&shared).await {
            return shared.faults.depart(name, false, refused);
        }
    }
    shared.faults.depart(name, false, answer)
}

/// Writes the newest job's `stderr` into its status directory on the
/// cluster's storage, as the controller does; a 500 when the storage
/// refuses (the test's setup is wrong).
async fn write_stderr(shared: &Service) -> Option<Response> {
    let storage = shared.storage.as_ref()?;
    let (statusdir, text, seq) = {
        let world = shared.world.lock().unwrap_or_else(PoisonError::into_inner);
        let job = world.jobs.last()?;
        let statusdir = job.userargs.get("statusdir")?.as_str()?.to_string();
        (statusdir, pig_log(job), job.seq())
    };
    let local = std::env::temp_dir().join(format!(
        "contract-fakes-webhcat-{}-{seq}-stderr",
        std::process::id()
    ));
    let written = match std::fs::write(&local, text) {
        Ok(()) => storage
            .copy_from_local(&local, &format!("{statusdir}/stderr"))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let _ = std::fs::remove_file(&local);
    written.err().map(|e| {
        webhcat_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "",
            format!("the fake cannot write {statusdir}/stderr: {e}"),
        )
    })
}

/// What Pig writes on stderr for `job`: its progress, and for a failing
/// script Pig's error last.
fn pig_log(job: &FakeJob) -> String {
    let file = job
        .userargs
        .get("file")
        .and_then(Value::as_str)
        .unwrap_or("-");
    let mut log = format!("INFO  org.apache.pig.Main - Apache Pig version 0.16.0 running {file}\n");
    for n in 0..300 {
        log.push_str(&format!(
            "INFO  org.apache.pig.backend.hadoop.executionengine.mapReduceLayer.MapReduceLauncher - {}% complete (line {n})\n",
            n / 3
        ));
    }
    if job.ends_with == PIG_FAILED {
        log.push_str(
            "ERROR org.apache.pig.tools.grunt.Grunt - ERROR 1066: Unable to open iterator for alias rows\n",
        );
        log.push_str("Details at logfile: /tmp/pig_1700000000000.log\n");
    } else {
        log.push_str("INFO  org.apache.pig.Main - Pig script completed\n");
    }
    log
}

fn not_served(method: &Method, path: &str) -> Response {
    webhcat_error(
        StatusCode::NOT_FOUND,
        "",
        format!("the contract fake does not serve {method} {path}"),
    )
}

/// The last value of `key`, if given (and not empty, as JAX-RS sees it).
fn one<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Every value of `key`, in order.
fn all(params: &[(String, String)], key: &str) -> Vec<Value> {
    params
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| Value::from(v.as_str()))
        .collect()
}

fn flag(params: &[(String, String)], key: &str) -> bool {
    one(params, key) == Some("true")
}

/// `job_DIGITS_DIGITS`, as Hadoop's `JobID.forName` accepts.
fn well_formed(id: &str) -> bool {
    let parts: Vec<&str> = id.split('_').collect();
    parts.len() == 3
        && parts[0] == "job"
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

fn act(shared: &Service, name: &str, segments: &[&str], params: &[(String, String)]) -> Response {
    let Some(user) = one(params, "user.name").map(String::from) else {
        return webhcat_error(
            StatusCode::UNAUTHORIZED,
            "",
            "No user found.  Missing user.name parameter.".into(),
        );
    };
    let mut world = shared.world();
    match name {
        "pig.create" | "jar.create" => {
            let value = |key: &str| one(params, key).map_or(Value::Null, Value::from);
            let statusdir = one(params, "statusdir");
            let mut userargs = Map::new();
            userargs.insert("user.name".into(), Value::from(user.as_str()));
            if name == "pig.create" {
                if one(params, "execute").is_none() && one(params, "file").is_none() {
                    return bad_param("Either execute or file parameter required");
                }
                for key in ["execute", "file", "files"] {
                    userargs.insert(key.into(), value(key));
                }
            } else {
                for key in ["jar", "class"] {
                    if one(params, key).is_none() {
                        return bad_param(format!("Missing {key} parameter"));
                    }
                }
                for key in ["jar", "class", "libjars", "files"] {
                    userargs.insert(key.into(), value(key));
                }
                userargs.insert("define".into(), Value::Array(all(params, "define")));
            }
            if flag(params, "enablelog") && statusdir.is_none() {
                return bad_param("enablelog is only applicable when statusdir is set");
            }
            userargs.insert("arg".into(), Value::Array(all(params, "arg")));
            userargs.insert("statusdir".into(), value("statusdir"));
            userargs.insert("callback".into(), value("callback"));
            userargs.insert(
                "usehcatalog".into(),
                Value::from(flag(params, "usehcatalog")),
            );
            userargs.insert("enablelog".into(), Value::from(flag(params, "enablelog")));
            world.next += 1;
            let fails = name == "pig.create"
                && shared.fail_scripts.as_deref().is_some_and(|part| {
                    one(params, "file").is_some_and(|file| file.contains(part))
                });
            let job = FakeJob {
                id: format!("job_{CLUSTER_START}_{:04}", world.next),
                user,
                kind: if name == "pig.create" {
                    "pig"
                } else {
                    "mapreduce/jar"
                }
                .into(),
                state: "RUNNING".into(),
                exit_value: None,
                failure_info: None,
                userargs,
                form: params.to_vec(),
                started: shared.clock.now(),
                finished: None,
                ends_with: if fails { PIG_FAILED } else { 0 },
            };
            let id = job.id.clone();
            world.jobs.push(job);
            ok(json!({ "id": id }))
        }
        "jobs.list" => {
            let showall = flag(params, "showall");
            let details = one(params, "fields") == Some("*");
            let after = one(params, "jobid");
            let limit: usize = one(params, "numrecords")
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX);
            let items: Vec<Value> = world
                .jobs
                .iter()
                .filter(|j| showall || j.user == user)
                .filter(|j| after.is_none_or(|a| j.id.as_str() > a))
                .take(limit)
                .map(
                    |j| json!({"id": j.id, "detail": if details { j.bean() } else { Value::Null }}),
                )
                .collect();
            ok(Value::Array(items))
        }
        _ => {
            let id = segments[1];
            if !well_formed(id) {
                return bad_param(format!("JobId string : {id} is not properly formed"));
            }
            let Some(job) = world.jobs.iter_mut().find(|j| j.id == id) else {
                return bad_param(format!("Could not find job {id}"));
            };
            if name == "jobs.delete" && !job.ended() {
                job.state = "KILLED".into();
                job.finished = Some(shared.clock.now());
            }
            ok(job.bean())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_checked_as_hadoop_parses_them() {
        assert!(well_formed("job_1700000000000_0001"));
        assert!(!well_formed("job_1700000000000"));
        assert!(!well_formed("application_1_2"));
        assert!(!well_formed("job_x_1"));
    }

    #[test]
    fn the_last_non_empty_value_counts() {
        let p = query_pairs("user.name=a&arg=1&arg=2&statusdir=");
        assert_eq!(one(&p, "user.name"), Some("a"));
        assert_eq!(one(&p, "statusdir"), None);
        assert_eq!(all(&p, "arg"), vec![Value::from("1"), Value::from("2")]);
    }
}
