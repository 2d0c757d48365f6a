//! The Dataproc fake refuses what Dataproc's REST v1 reference refuses,
//! in Google's error shape, and keeps what it accepts as the service
//! would (request ids per project and region, tokens it issued).

use contract_fakes::dataproc::{FakeDataproc, FakeOptions};
use flow_cloud::ManualClock;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

struct Fake {
    fake: FakeDataproc,
    clock: ManualClock,
    http: reqwest::Client,
    token: String,
}

impl Fake {
    async fn start() -> Fake {
        let clock = ManualClock::new();
        let mut options = FakeOptions::new(Arc::new(clock.clone()));
        options.cluster_create = Duration::from_secs(10);
        options.job_run = None;
        let fake = FakeDataproc::start(options, 0).await.unwrap();
        let http = reqwest::Client::new();
        let token = http
            .post(format!("{}/token", fake.url()))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c",
            )
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        Fake {
            fake,
            clock,
            http,
            token,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/v1/projects/{path}", self.fake.url());
        let mut request = self
            .http
            .request(method.parse().unwrap(), url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A running cluster `c1` in p/r.
    async fn cluster(&self, project: &str, region: &str) {
        let body = json!({ "projectId": project, "clusterName": "c1" });
        let (status, answer) = self
            .call(
                "POST",
                &format!("{project}/regions/{region}/clusters"),
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        self.clock.advance(Duration::from_secs(10));
    }

    async fn submit(&self, at: &str, job: Value, request_id: &str) -> (u16, Value) {
        self.call(
            "POST",
            &format!("{at}/jobs:submit"),
            Some(json!({ "job": job, "requestId": request_id })),
        )
        .await
    }
}

fn pyspark() -> Value {
    json!({
        "placement": { "clusterName": "c1" },
        "pysparkJob": { "mainPythonFileUri": "gs://code/job.py" },
    })
}

fn invalid(answer: &(u16, Value), says: &str) {
    assert_eq!(answer.0, 400, "{}", answer.1);
    assert_eq!(
        answer.1["error"]["status"], "INVALID_ARGUMENT",
        "{}",
        answer.1
    );
    assert_eq!(answer.1["error"]["code"], 400, "{}", answer.1);
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(message.contains(says), "{message}");
}

#[tokio::test]
async fn jobs_missing_required_fields_or_carrying_unknown_ones_are_refused() {
    let f = Fake::start().await;
    f.cluster("p", "r").await;
    let at = "p/regions/r";
    invalid(
        &f.submit(
            at,
            json!({"placement": {"clusterName": "c1"}, "pigJob": {}}),
            "",
        )
        .await,
        "queryFileUri or queryList",
    );
    invalid(
        &f.submit(
            at,
            json!({"placement": {"clusterName": "c1"}, "sparkJob": {"args": []}}),
            "",
        )
        .await,
        "mainJarFileUri or mainClass",
    );
    invalid(&f.submit(at, json!({"placement": {"clusterName": "c1"}, "hadoopJob": {"mainClass": "A", "mainJarFileUri": "gs://b/a.jar"}}), "").await, "only one of");
    invalid(
        &f.submit(
            at,
            json!({"placement": {"clusterName": "c1"}, "pysparkJob": {}}),
            "",
        )
        .await,
        "mainPythonFileUri",
    );
    invalid(
        &f.submit(
            at,
            json!({"pysparkJob": {"mainPythonFileUri": "gs://b/j.py"}}),
            "",
        )
        .await,
        "placement.clusterName",
    );
    let mut typo = pyspark();
    typo["pysparkJob"]["mainPythonFile"] = json!("gs://b/j.py");
    invalid(
        &f.submit(at, typo, "").await,
        "Unknown name \"mainPythonFile\" at 'job.pysparkJob'",
    );
    let mut labelled = pyspark();
    labelled["labels"] = json!({ "Team": "data" });
    invalid(
        &f.submit(at, labelled, "").await,
        "Invalid label key 'Team'",
    );
    invalid(
        &f.submit(at, pyspark(), "not/a valid id").await,
        "request_id",
    );
    invalid(
        &f.submit(at, pyspark(), &"x".repeat(41)).await,
        "at most 40",
    );
    assert!(f.fake.jobs().is_empty(), "nothing refused was stored");
    // Output-only fields are ignored, as the API does.
    let mut echoed = pyspark();
    echoed["status"] = json!({ "state": "DONE" });
    let (status, answer) = f.submit(at, echoed, "ok_id-1").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"]["state"], "PENDING");
}

#[tokio::test]
async fn list_filters_and_query_parameters_the_api_does_not_know_are_refused() {
    let f = Fake::start().await;
    invalid(
        &f.call(
            "GET",
            "p/regions/r/jobs?filter=status.state%20%3D%20DONE",
            None,
        )
        .await,
        "ACTIVE or NON_ACTIVE",
    );
    invalid(
        &f.call(
            "GET",
            "p/regions/r/jobs?filter=placement.clusterName%20%3D%20c1",
            None,
        )
        .await,
        "unknown field placement.clusterName",
    );
    invalid(
        &f.call("GET", "p/regions/r/jobs?state=ACTIVE", None).await,
        "Cannot bind query parameter",
    );
    invalid(
        &f.call("GET", "p/regions/r/jobs?jobStateMatcher=RUNNING", None)
            .await,
        "job_state_matcher",
    );
    let (status, answer) = f
        .call("GET", "p/regions/r/jobs?filter=status.state%20%3D%20ACTIVE%20AND%20labels.env%20%3D%20*&pageSize=10", None)
        .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn request_ids_dedupe_within_a_project_and_region_only() {
    let f = Fake::start().await;
    f.cluster("p", "r").await;
    f.cluster("p", "s").await;
    f.cluster("q", "r").await;
    let first = f.submit("p/regions/r", pyspark(), "same-id").await;
    let again = f.submit("p/regions/r", pyspark(), "same-id").await;
    assert_eq!(first.1["reference"], again.1["reference"], "the same job");
    let other_region = f.submit("p/regions/s", pyspark(), "same-id").await;
    let other_project = f.submit("q/regions/r", pyspark(), "same-id").await;
    assert_eq!(other_region.0, 200);
    assert_eq!(other_project.0, 200);
    assert_eq!(f.fake.jobs().len(), 3, "one job per project and region");
}

#[tokio::test]
async fn a_created_cluster_is_checked_and_answered_with_dataproc_s_defaults() {
    let f = Fake::start().await;
    let create = |cluster: Value| f.call("POST", "p/regions/europe-west1/clusters", Some(cluster));
    invalid(
        &create(json!({"projectId": "p", "clusterName": "Bad_Name"})).await,
        "Invalid cluster name",
    );
    invalid(&create(json!({"projectId": "p", "clusterName": "c", "config": {"workerConfig": {"numInstances": 1}}})).await, "at least 2 worker");
    invalid(&create(json!({"projectId": "p", "clusterName": "c", "config": {"masterConfig": {"numInstances": 2}}})).await, "1 master");
    invalid(&create(json!({"projectId": "p", "clusterName": "c", "config": {"gceClusterConfig": {"zone": "x"}}})).await, "Unknown name \"zone\" at 'config.gceClusterConfig'");
    invalid(&create(json!({"projectId": "p", "clusterName": "c", "config": {"lifecycleConfig": {"idleDeleteTtl": "60s"}}})).await, "10 minutes");
    invalid(&create(json!({"projectId": "p", "clusterName": "c", "config": {"initializationActions": [{"executableFile": "init.sh"}]}})).await, "gs://");
    let (status, _) = create(json!({"projectId": "p", "clusterName": "c"})).await;
    assert_eq!(status, 200);
    let (_, cluster) = f
        .call("GET", "p/regions/europe-west1/clusters/c", None)
        .await;
    let config = &cluster["config"];
    assert_eq!(config["masterConfig"]["numInstances"], 1);
    assert_eq!(config["masterConfig"]["instanceNames"], json!(["c-m"]));
    assert_eq!(config["workerConfig"]["numInstances"], 2);
    assert!(config["gceClusterConfig"]["zoneUri"]
        .as_str()
        .unwrap()
        .ends_with("/zones/europe-west1-b"));
    assert!(cluster["clusterUuid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    assert_eq!(cluster["status"]["state"], "CREATING");
}

#[tokio::test]
async fn only_live_tokens_the_endpoint_issued_are_accepted() {
    let f = Fake::start().await;
    let (status, _) = f.call("GET", "p/regions/r/jobs", None).await;
    assert_eq!(status, 200);
    let unknown = f
        .http
        .get(format!("{}/v1/projects/p/regions/r/jobs", f.fake.url()))
        .bearer_auth("ya29.made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 401);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    // An hour later on the fake's clock, the token has expired.
    f.fake.clock().advance(Duration::from_secs(3600));
    let (status, body) = f.call("GET", "p/regions/r/jobs", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(f.fake.tokens().len(), 1);
    assert_eq!(f.fake.tokens()[0].expires_at, Duration::from_secs(3600));
    // The token endpoint takes only the JWT-bearer grant.
    let refused = f
        .http
        .post(format!("{}/token", f.fake.url()))
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
}

#[tokio::test]
async fn a_cluster_that_breaks_fails_its_running_jobs_with_its_reason() {
    let f = Fake::start().await;
    f.cluster("p", "r").await;
    let (_, job) = f.submit("p/regions/r", pyspark(), "").await;
    let id = job["reference"]["jobId"].as_str().unwrap().to_string();
    f.clock.advance(Duration::from_secs(30));
    assert!(f.fake.break_cluster("c1", "ERROR", "Master node lost"));
    let (_, cluster) = f.call("GET", "p/regions/r/clusters/c1", None).await;
    assert_eq!(cluster["status"]["state"], "ERROR");
    assert_eq!(cluster["status"]["detail"], "Master node lost");
    let (_, job) = f.call("GET", &format!("p/regions/r/jobs/{id}"), None).await;
    assert_eq!(job["status"]["state"], "ERROR");
    let details = job["status"]["details"].as_str().unwrap();
    assert!(
        details.contains("c1") && details.contains("Master node lost"),
        "{details}"
    );
    // A broken cluster takes no new jobs.
    let (status, _) = f.submit("p/regions/r", pyspark(), "").await;
    assert_eq!(status, 400);
}
