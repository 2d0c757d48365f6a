//! Clusters created through Azure Resource Manager (`[cluster.azure.arm]`)
//! against the ARM contract fake (in process, on a manual clock shared
//! with the cluster), its Entra ID token endpoint serving the client
//! secret credential of `azure_identity`, and the Livy contract fake as
//! the created cluster's gateway: the exact create body, the create
//! followed to `Succeeded` honouring ARM's `Retry-After`, a failed create
//! failing the launch with ARM's code and message and deleted, throttled
//! calls retried, adoption, the delete at the end, a cluster deleted
//! under a running batch failing its wait at the next cluster check, and
//! the fake refusing what ARM refuses.

mod common;

use common::{context, drive, PASSWORD};
use contract_fakes::arm::{ArmOptions, FakeArm};
use contract_fakes::livy::FakeLivy;
use flow_cloud::poll::CLUSTER_CHECK_EVERY;
use flow_cloud::{Clock, ManualClock};
use flow_cluster_azure::{AzureCluster, AzureClusterFactory, AzureConfig};
use flow_core::{Cluster, ClusterError, ClusterHandle, Job};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const CLIENT_SECRET: &str = "arm-client-secret-for-tests";

struct Setup {
    clock: ManualClock,
    arm: FakeArm,
    _livy: FakeLivy,
    factory: AzureClusterFactory,
}

/// The settings a user writes, pointed at the fakes.
fn settings(arm: &str, livy: &str) -> String {
    format!(
        r#"
livy_url = "{livy}"
username = "admin"
password = "env:FLOW_TEST_AZURE_GATEWAY_PASSWORD"
[retry]
jitter = false
[blob]
account = "etldata"
key = "env:FLOW_TEST_AZURE_STORAGE_KEY"
container = "code"
endpoint = "http://127.0.0.1:9/etldata"
[arm]
subscription = "sub-1"
resource_group = "flows"
location = "westeurope"
endpoint = "{arm}"
launch_poll = "30s"
tags = {{ team = "data" }}
credential = {{ kind = "client_secret", tenant = "tenant-1", client_id = "flow-app", secret = "env:FLOW_TEST_ARM_CLIENT_SECRET", authority = "{arm}" }}
[arm.definition]
clusterVersion = "5.1"
osType = "Linux"
tier = "Standard"
clusterDefinition = {{ kind = "spark", componentVersion = {{ Spark = "3.3" }} }}
[[arm.definition.computeProfile.roles]]
name = "headnode"
targetInstanceCount = 2
hardwareProfile = {{ vmSize = "Standard_E8_V3" }}
osProfile = {{ linuxOperatingSystemProfile = {{ username = "sshuser", sshProfile = {{ publicKeys = [{{ certificateData = "ssh-rsa AAAA" }}] }} }} }}
[[arm.definition.computeProfile.roles]]
name = "workernode"
targetInstanceCount = 4
hardwareProfile = {{ vmSize = "Standard_E8_V3" }}
[[arm.definition.storageProfile.storageaccounts]]
name = "etldata.blob.core.windows.net"
isDefault = true
container = "clusters"
key = "env:FLOW_TEST_AZURE_STORAGE_KEY"
"#
    )
}

async fn setup(options: impl FnOnce(&mut ArmOptions)) -> Setup {
    common::set_secrets();
    std::env::set_var("FLOW_TEST_ARM_CLIENT_SECRET", CLIENT_SECRET);
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let mut arm_options = ArmOptions::new(shared.clone());
    arm_options.client_secret = CLIENT_SECRET.into();
    options(&mut arm_options);
    let arm = FakeArm::start(arm_options, 0).await.unwrap();
    let livy = FakeLivy::start(Some(("admin", PASSWORD)), 0).await.unwrap();
    let config: AzureConfig = toml::from_str(&settings(arm.url(), livy.url())).unwrap();
    config.validate().unwrap();
    let factory = config.builder().with_clock(shared).build().unwrap();
    Setup {
        clock,
        arm,
        _livy: livy,
        factory,
    }
}

fn cluster(s: &Setup) -> Arc<AzureCluster> {
    Arc::new(s.factory.cluster("azure-0", &context()))
}

async fn provision(s: &Setup, c: &Arc<AzureCluster>) -> Result<ClusterHandle, ClusterError> {
    let c = c.clone();
    drive(&s.clock, tokio::spawn(async move { c.provision().await })).await
}

async fn wait_ready(s: &Setup, c: &Arc<AzureCluster>) -> Result<(), ClusterError> {
    let c = c.clone();
    drive(&s.clock, tokio::spawn(async move { c.wait_ready().await })).await
}

async fn terminate(s: &Setup, c: &Arc<AzureCluster>) -> Result<(), ClusterError> {
    let c = c.clone();
    drive(&s.clock, tokio::spawn(async move { c.terminate().await })).await
}

/// Waits for the created cluster and deletes it, as the engine's end does.
async fn comes_up_and_is_deleted(s: &Setup, c: &Arc<AzureCluster>) {
    wait_ready(s, c).await.unwrap();
    terminate(s, c).await.unwrap();
    assert!(s.arm.clusters()[0].deleted);
}

async fn adopt(s: &Setup, c: &Arc<AzureCluster>, handle: &ClusterHandle) -> bool {
    let (c, h) = (c.clone(), handle.clone());
    drive(&s.clock, tokio::spawn(async move { c.adopt(&h).await }))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_cluster_is_created_followed_and_deleted_at_the_end_on_contract_fake() {
    // ARM asks for 45 s between looks, longer than the 30 s launch_poll.
    let s = setup(|o| o.retry_after = 45).await;
    let c = cluster(&s);
    let handle = provision(&s, &c).await.unwrap();
    assert_eq!(handle.backend_id, "flow-daily-2026112800-0");
    assert!(!handle.reused);
    assert_eq!(handle.details["subscription"], "sub-1");
    assert_eq!(handle.details["resource_group"], "flows");
    assert_eq!(
        handle.details["gateway"],
        "https://flow-daily-2026112800-0.azurehdinsight.net"
    );
    assert!(handle.details["operation"].contains("/azureasyncoperations/"));
    // The exact Clusters - Create body: the definition as written, its
    // secret read, the gateway's login added, the run's tag.
    assert_eq!(
        s.arm.puts(),
        [json!({
            "location": "westeurope",
            "tags": {"team": "data", "flow-run-key": "daily-2026112800"},
            "properties": {
                "clusterVersion": "5.1",
                "osType": "Linux",
                "tier": "Standard",
                "clusterDefinition": {
                    "kind": "spark",
                    "componentVersion": {"Spark": "3.3"},
                    "configurations": {"gateway": {
                        "restAuthCredential.isEnabled": true,
                        "restAuthCredential.username": "admin",
                        "restAuthCredential.password": PASSWORD,
                    }},
                },
                "computeProfile": {"roles": [
                    {"name": "headnode", "targetInstanceCount": 2,
                     "hardwareProfile": {"vmSize": "Standard_E8_V3"},
                     "osProfile": {"linuxOperatingSystemProfile": {"username": "sshuser",
                        "sshProfile": {"publicKeys": [{"certificateData": "ssh-rsa AAAA"}]}}}},
                    {"name": "workernode", "targetInstanceCount": 4,
                     "hardwareProfile": {"vmSize": "Standard_E8_V3"}},
                ]},
                "storageProfile": {"storageaccounts": [
                    {"name": "etldata.blob.core.windows.net", "isDefault": true,
                     "container": "clusters", "key": "c3RvcmFnZS1rZXktZm9yLXRlc3Rz"},
                ]},
            },
        })]
    );
    // Returned as soon as ARM took it, before it is up: the engine records
    // it before waiting.
    assert_eq!(s.arm.clusters()[0].provisioning_state, "InProgress");
    assert_eq!(s.arm.faults().count("operations.get"), 0);
    wait_ready(&s, &c).await.unwrap();
    assert_eq!(s.arm.clusters()[0].provisioning_state, "Succeeded");
    // Looks at 0, 45, ..., 585, 630 s: ARM's Retry-After, not the 30 s poll.
    assert_eq!(s.arm.faults().count("operations.get"), 15);
    // The token came from the Entra ID endpoint and went to every call.
    assert!(!s.arm.tokens().issued().is_empty());
    assert!(s
        .arm
        .tokens()
        .authorizations()
        .iter()
        .all(|a| a.starts_with("Bearer eyJ0eXAiOiJKV1QifQ.fake-arm-access-token-")));
    terminate(&s, &c).await.unwrap();
    let clusters = s.arm.clusters();
    assert!(clusters[0].deleted, "deleted at the end");
    assert_eq!(s.arm.faults().count("clusters.delete"), 1);
    // terminate is safe to call again: nothing more is sent.
    terminate(&s, &c).await.unwrap();
    assert_eq!(s.arm.faults().count("clusters.delete"), 1);
}

#[tokio::test]
async fn a_failed_create_fails_the_launch_with_arms_code_and_message_and_is_deleted_on_contract_fake(
) {
    let s = setup(|_| {}).await;
    s.arm.fail_next_create(
        "InvalidNetworkConfiguration",
        "The subnet 'default' of virtual network 'vnet' was not found.",
    );
    let c = cluster(&s);
    provision(&s, &c).await.unwrap();
    let e = wait_ready(&s, &c).await.unwrap_err();
    let shown = e.to_string();
    assert!(
        matches!(
            e,
            ClusterError::Launch {
                transient: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        shown.contains("InvalidNetworkConfiguration: The subnet 'default' of virtual network 'vnet' was not found."),
        "{shown}"
    );
    // The engine ends every cluster that failed to launch: nothing leaks.
    terminate(&s, &c).await.unwrap();
    assert!(s.arm.clusters()[0].deleted);
}

#[tokio::test]
async fn throttled_calls_are_retried_after_their_retry_after_on_contract_fake() {
    let s = setup(|_| {}).await;
    s.arm.faults().throttle("clusters.create", 2, 7);
    s.arm.faults().throttle("operations.get", 1, 5);
    let c = cluster(&s);
    provision(&s, &c).await.unwrap();
    assert_eq!(s.arm.faults().count("clusters.create"), 3);
    assert_eq!(s.arm.clusters().len(), 1, "one cluster, created once");
    assert_eq!(
        s.clock.sleeps()[..2],
        [Duration::from_secs(7), Duration::from_secs(7)]
    );
    comes_up_and_is_deleted(&s, &c).await;
}

#[tokio::test]
async fn a_lost_create_answer_is_found_by_name_not_sent_twice_on_contract_fake() {
    let s = setup(|_| {}).await;
    s.arm.faults().lose_answers("clusters.create", 1);
    let c = cluster(&s);
    let handle = provision(&s, &c).await.unwrap();
    assert_eq!(s.arm.faults().count("clusters.create"), 1);
    assert!(!handle.details.contains_key("operation"));
    // Without the operation, the cluster's provisioningState is followed.
    comes_up_and_is_deleted(&s, &c).await;
}

#[tokio::test]
async fn a_recorded_cluster_is_adopted_and_deleted_by_the_adopter_on_contract_fake() {
    let s = setup(|_| {}).await;
    let first = cluster(&s);
    let handle = provision(&s, &first).await.unwrap();
    // The first engine dies; a second one adopts the recorded handle while
    // the create still runs, waits for it and deletes it at its end.
    let second = cluster(&s);
    assert!(adopt(&s, &second, &handle).await);
    assert_eq!(s.arm.clusters()[0].provisioning_state, "Succeeded");
    assert_eq!(
        second.shared_name().as_deref(),
        Some("sub-1/flows/flow-daily-2026112800-0")
    );
    terminate(&s, &second).await.unwrap();
    assert!(s.arm.clusters()[0].deleted);
    // A handle whose cluster is gone is not adopted.
    assert!(!adopt(&s, &cluster(&s), &handle).await);
}

#[tokio::test]
async fn a_wrong_client_secret_fails_the_launch_without_a_token_on_contract_fake() {
    let s = setup(|o| o.client_secret = "another-secret-entirely".into()).await;
    let c = cluster(&s);
    let e = provision(&s, &c).await.unwrap_err();
    let shown = e.to_string();
    // azure_identity 0.21 keeps Entra ID's AADSTS text in its error's
    // Debug only (oauth2's ServerResponse): the launch says what failed.
    assert!(shown.contains("cannot get a token for ARM"), "{shown}");
    assert_eq!(s.arm.faults().answers("token"), [401]);
    assert_eq!(
        s.arm.faults().count("clusters.get"),
        0,
        "no ARM call without a token"
    );
    assert!(!shown.contains(CLIENT_SECRET), "{shown}");
    assert!(s.arm.clusters().is_empty());
}

#[tokio::test]
async fn a_cluster_deleted_under_a_running_batch_fails_its_wait_with_the_state_on_contract_fake() {
    let s = setup(|_| {}).await;
    let c = cluster(&s);
    provision(&s, &c).await.unwrap();
    wait_ready(&s, &c).await.unwrap();
    let job = Job::Spark {
        application: "jobs/count.py".into(),
        main_class: None,
        conf: vec![],
        secret_conf: vec![],
        args: vec![],
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let (submitter, token) = (c.clone(), cancel.clone());
    let handle = drive(
        &s.clock,
        tokio::spawn(async move {
            let owned = common::Cx::new(token);
            let cx = owned.cx("spark");
            let prepared = submitter.prepare(&job, &cx).unwrap();
            submitter.submit(&prepared, &job, &cx).await.unwrap()
        }),
    )
    .await;
    let wait = common::spawn_wait(&c, &handle, &cancel);
    // A few ticks with the cluster up; then it is deleted outside flow
    // while Livy still says the batch runs.
    for _ in 0..3 {
        s.clock.wait_for_sleepers(1).await;
        let next = s.clock.next_deadline().unwrap();
        s.clock.advance(next.saturating_sub(s.clock.now()));
    }
    // The launch looked once (is the name taken?); no cluster check yet.
    let gets = s.arm.faults().count("clusters.get");
    assert_eq!(gets, 1, "no cluster check before the tenth tick");
    assert!(s.arm.delete_cluster("flow-daily-2026112800-0"));
    let deleted_at = s.clock.now();
    let e = drive(&s.clock, wait).await.unwrap_err();
    let ClusterError::JobFailed { message, .. } = &e else {
        panic!("a batch whose cluster was deleted failed: {e:?}")
    };
    assert!(
        message.contains("its cluster ended: flow-daily-2026112800-0 is Deleting"),
        "{message}"
    );
    // Noticed by the first cluster check (one Clusters - Get), within the
    // check interval, long before the wait's timeout.
    assert_eq!(s.arm.faults().count("clusters.get"), gets + 1);
    let poll = &s.factory.config().poll;
    let waited = s.clock.now() - deleted_at;
    assert!(
        waited <= poll.cap * CLUSTER_CHECK_EVERY as u32,
        "{waited:?}"
    );
    assert!(poll.timeout.is_none_or(|t| waited < t), "{waited:?}");
    assert!(c.end_reason().is_some_and(|r| r.contains("Deleting")));
}

/// A token from the fake's Entra ID endpoint.
async fn token(http: &reqwest::Client, url: &str) -> String {
    let answer: serde_json::Value = http
        .post(format!("{url}/tenant-1/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "flow-app"),
            ("client_secret", CLIENT_SECRET),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_fake_refuses_what_arm_refuses_on_contract_fake() {
    let s = setup(|_| {}).await;
    let http = reqwest::Client::new();
    let url = format!(
        "{}/subscriptions/sub-1/resourceGroups/flows/providers/Microsoft.HDInsight/clusters/etl",
        s.arm.url()
    );
    let versioned = format!("{url}?api-version=2021-06-01");
    let error = |answer: serde_json::Value| {
        (
            answer["error"]["code"].as_str().unwrap_or("").to_string(),
            answer["error"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    };
    // No bearer token.
    let r = http.get(&versioned).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(error(r.json().await.unwrap()).0, "AuthenticationFailed");
    // A token it never issued.
    let r = http
        .get(&versioned)
        .bearer_auth("forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        error(r.json().await.unwrap()).0,
        "InvalidAuthenticationToken"
    );
    let token = token(&http, s.arm.url()).await;
    // No api-version.
    let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        error(r.json().await.unwrap()).0,
        "MissingApiVersionParameter"
    );
    // An unknown cluster.
    let r = http
        .get(&versioned)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error(r.json().await.unwrap()).0, "ResourceNotFound");
    // A create body lacking each required part.
    let whole = json!({
        "location": "westeurope",
        "properties": {
            "clusterVersion": "5.1", "osType": "Linux",
            "clusterDefinition": {"kind": "spark", "configurations": {"gateway": {
                "restAuthCredential.isEnabled": true,
                "restAuthCredential.username": "admin",
                "restAuthCredential.password": "pw-pw-pw-pw"}}},
            "computeProfile": {"roles": [{"name": "headnode", "targetInstanceCount": 2,
                "hardwareProfile": {"vmSize": "Standard_E8_V3"}}]},
            "storageProfile": {"storageaccounts": [{"name": "a.blob.core.windows.net"}]},
        },
    });
    for (drop, code, place) in [
        ("/location", "LocationRequired", "location"),
        (
            "/properties/clusterVersion",
            "InvalidRequestContent",
            "properties.clusterVersion",
        ),
        (
            "/properties/osType",
            "InvalidRequestContent",
            "properties.osType",
        ),
        (
            "/properties/clusterDefinition/kind",
            "InvalidRequestContent",
            "properties.clusterDefinition.kind",
        ),
        (
            "/properties/computeProfile/roles",
            "InvalidRequestContent",
            "properties.computeProfile.roles",
        ),
        (
            "/properties/storageProfile",
            "InvalidRequestContent",
            "properties.storageProfile.storageaccounts",
        ),
    ] {
        let mut body = whole.clone();
        let (parent, member) = drop.rsplit_once('/').unwrap();
        let parent = if parent.is_empty() {
            &mut body
        } else {
            body.pointer_mut(parent).unwrap()
        };
        parent.as_object_mut().unwrap().remove(member);
        let r = http
            .put(&versioned)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{drop}");
        let (got, message) = error(r.json().await.unwrap());
        assert_eq!(got, code, "{drop}");
        assert!(message.contains(place), "{drop}: {message}");
    }
    let r = http
        .put(&versioned)
        .bearer_auth(&token)
        .json(&whole)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("azure-asyncoperation"));
    let view: serde_json::Value = r.json().await.unwrap();
    assert_eq!(view["properties"]["provisioningState"], "InProgress");
    assert!(
        !view.to_string().contains("pw-pw-pw-pw"),
        "Get never shows the secrets"
    );
    let r = http
        .put(&versioned)
        .bearer_auth(&token)
        .json(&whole)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn each_request_is_counted_on_the_meter_by_its_operation_on_contract_fake() {
    let meter = flow_core::testkit::meter::RecordingMeter::installed();
    let before = meter.requests("arm", "Clusters - Create");
    let s = setup(|_| {}).await;
    let c = cluster(&s);
    provision(&s, &c).await.unwrap();
    // Other tests of this binary add to the same process-wide counts.
    assert!(
        meter.requests("arm", "Clusters - Create") > before,
        "{:?}",
        meter.calls()
    );
}
