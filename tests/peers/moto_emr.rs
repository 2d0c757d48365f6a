//! The test side of `tests/peers/moto_emr.py`: its control endpoints (set a
//! step's or a cluster's state, inject throttling or lost answers, count
//! requests) over plain HTTP/1.1. Shared by the EMR crate's tests and the
//! end-to-end tests (`#[path]`-included).

#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;

/// moto with the EMR layer, as `cargo xtask test` started it.
#[derive(Debug, Clone)]
pub struct MotoEmr {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    host: String,
}

impl MotoEmr {
    /// From `FLOW_TEST_EMR_ENDPOINT`. These tests are `#[ignore]`d and
    /// included by xtask only when the launcher is up, so a missing
    /// variable is a harness error.
    pub fn from_env() -> MotoEmr {
        let endpoint = std::env::var("FLOW_TEST_EMR_ENDPOINT").unwrap_or_else(|_| {
            panic!("FLOW_TEST_EMR_ENDPOINT is not set: run the moto tests through `cargo xtask test`, which starts moto with the EMR layer (tests/peers/moto_emr.py)")
        });
        let host = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        MotoEmr { endpoint, host }
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A control request; `Err` with the head and body of an answer that is
    /// not 200 (the layer refuses what EMR would).
    fn try_request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(&self.host).expect("connect to moto");
        write!(
            stream,
            "{method} /_flow_test/{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.host,
            body.len()
        )
        .expect("send to moto");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read from moto");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        if !(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")) {
            return Err(format!("{head}\n{body}"));
        }
        Ok(serde_json::from_str(body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}")))
    }

    /// Requests per EMR action that named `cluster_id` (throttled and lost
    /// ones included).
    pub fn requests(&self, cluster_id: &str) -> BTreeMap<String, u64> {
        let answer = self.request("GET", &format!("requests?cluster={cluster_id}"), None);
        answer["counts"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect()
    }

    pub fn count(&self, cluster_id: &str, action: &str) -> u64 {
        self.requests(cluster_id).get(action).copied().unwrap_or(0)
    }

    /// Every cluster: `{id, name, state, master_dns}`.
    pub fn clusters(&self) -> Vec<Value> {
        self.request("GET", "clusters", None)
            .as_array()
            .unwrap()
            .clone()
    }

    /// The clusters whose name starts with `prefix`.
    pub fn clusters_named(&self, prefix: &str) -> Vec<Value> {
        self.clusters()
            .into_iter()
            .filter(|c| c["name"].as_str().unwrap_or("").starts_with(prefix))
            .collect()
    }

    /// The cluster's steps, oldest first: `{id, name, state, jar, main_class, args, action_on_failure}`.
    pub fn steps(&self, cluster_id: &str) -> Vec<Value> {
        self.request("GET", &format!("steps?cluster={cluster_id}"), None)
            .as_array()
            .unwrap()
            .clone()
    }

    /// Sets a step's state, as [`MotoEmr::set_step`], or says why the layer
    /// refused (a state EMR does not have).
    pub fn try_set_step(&self, cluster_id: &str, step_id: &str, state: &str) -> Result<(), String> {
        self.try_request(
            "POST",
            "step",
            Some(&json!({"cluster_id": cluster_id, "step_id": step_id, "state": state})),
        )
        .map(|_| ())
    }

    /// The step's process ignores SIGTERM: `CancelSteps` with
    /// `SEND_INTERRUPT` leaves it running, `TERMINATE_PROCESS` ends it.
    pub fn ignore_interrupt(&self, cluster_id: &str, step_id: &str) {
        self.request(
            "POST",
            "step",
            Some(&json!({"cluster_id": cluster_id, "step_id": step_id, "ignores_interrupt": true})),
        );
    }

    pub fn set_step(&self, cluster_id: &str, step_id: &str, state: &str) {
        self.request(
            "POST",
            "step",
            Some(&json!({"cluster_id": cluster_id, "step_id": step_id, "state": state})),
        );
    }

    /// Fails the step with EMR's failure details and uploads its logs
    /// (`{"stderr": "..."}`) under the cluster's log URI, as EMR would.
    pub fn fail_step(&self, cluster_id: &str, step_id: &str, failure: Value, logs: Value) {
        self.request(
            "POST",
            "step",
            Some(&json!({
                "cluster_id": cluster_id, "step_id": step_id, "state": "FAILED",
                "failure": failure, "logs": logs,
            })),
        );
    }

    pub fn set_cluster(&self, cluster_id: &str, state: &str, code: &str, message: &str) {
        self.request(
            "POST",
            "cluster",
            Some(&json!({"cluster_id": cluster_id, "state": state, "code": code, "message": message})),
        );
    }

    /// What `DescribeCluster` reports as the cluster's
    /// `NormalizedInstanceHours` from now on.
    pub fn set_normalized_instance_hours(&self, cluster_id: &str, hours: u32) {
        self.request(
            "POST",
            "usage",
            Some(&json!({"cluster_id": cluster_id, "normalized_instance_hours": hours})),
        );
    }

    /// The next `count` requests of `action` (for `cluster_id`, if given:
    /// a cluster id, or a name, which is known before the cluster is) are
    /// answered with ThrottlingException.
    pub fn throttle(&self, action: &str, count: u32, cluster_id: Option<&str>) {
        self.request(
            "POST",
            "throttle",
            Some(&json!({"action": action, "count": count, "cluster_id": cluster_id})),
        );
    }

    /// The next `count` requests of `action` take effect but are answered
    /// with a 500.
    pub fn lose_answer(&self, action: &str, count: u32, cluster_id: Option<&str>) {
        self.request(
            "POST",
            "lose_answer",
            Some(&json!({"action": action, "count": count, "cluster_id": cluster_id})),
        );
    }

    /// The next `count` requests of `action` (for `cluster_id`, if given)
    /// are refused, without effect, with HTTP 400 and EMR error `code`.
    pub fn fail(
        &self,
        action: &str,
        count: u32,
        cluster_id: Option<&str>,
        code: &str,
        message: &str,
    ) {
        self.request(
            "POST",
            "fail",
            Some(&json!({
                "action": action, "count": count, "cluster_id": cluster_id,
                "code": code, "message": message,
            })),
        );
    }

    /// Drops the throttles, lost answers and refusals not used up yet (for
    /// `cluster_id`, if given): the endpoint works again.
    pub fn heal(&self, cluster_id: Option<&str>) {
        self.request("POST", "heal", Some(&json!({"cluster_id": cluster_id})));
    }

    /// The next `RunJobFlow` of a cluster named `name` makes a cluster that
    /// ends `TERMINATED_WITH_ERRORS` with reason `code` (e.g.
    /// `BOOTSTRAP_FAILURE`) and `message`, as a failed bootstrap action
    /// ends one on EMR.
    pub fn launch_failure(&self, name: &str, code: &str, message: &str) {
        self.request(
            "POST",
            "launch_failure",
            Some(&json!({"name": name, "code": code, "message": message})),
        );
    }

    /// Creates an S3 bucket in moto.
    pub fn create_bucket(&self, name: &str) {
        self.request("POST", "bucket", Some(&json!({"name": name})));
    }

    /// The keys of a bucket.
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        self.request("GET", &format!("objects?bucket={bucket}"), None)
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    }
}
