//! A loopback **contract fake** of Azure Resource Manager for HDInsight
//! clusters (`Microsoft.HDInsight/clusters`, REST api-version
//! `2021-06-01`), and of the Microsoft Entra ID token endpoint ARM's
//! clients get their bearer tokens from, for tests only: no cluster is
//! made here.
//!
//! Served, as the published reference describes them:
//! - `POST /TENANT/oauth2/v2.0/token`: the client-credentials grant
//!   ([`Tokens::issue_client_credentials`]); tokens last an hour on the
//!   fake's clock.
//! - `PUT /subscriptions/S/resourceGroups/G/providers/Microsoft.HDInsight/clusters/N?api-version=V`
//!   (Clusters - Create): the body is `ClusterCreateParametersExtended`;
//!   `location`, `properties.clusterVersion`, `properties.osType`,
//!   `properties.clusterDefinition.kind`, the gateway login in
//!   `clusterDefinition.configurations.gateway`,
//!   `properties.computeProfile.roles` (each with `name`,
//!   `targetInstanceCount` and `hardwareProfile.vmSize`) and
//!   `properties.storageProfile.storageaccounts` are required; a missing
//!   one or an unknown top-level member is 400 in ARM's error shape
//!   `{"error": {"code", "message"}}`; a name taken is 409 `Conflict`.
//!   Answers 200 with the cluster and an `Azure-AsyncOperation` header.
//! - `GET` the same path (Clusters - Get): `properties.provisioningState`
//!   (`InProgress`, `Succeeded`, `Failed`, `Deleting`) and `clusterState`,
//!   `errors`, `connectivityEndpoints`; never the create body's secrets.
//!   An unknown cluster is 404 `ResourceNotFound`.
//! - `DELETE` it (Clusters - Delete): 202 with `Azure-AsyncOperation` and
//!   `Location`; 204 when there is no such cluster.
//! - `GET .../clusters/N/azureasyncoperations/ID` (Clusters - Get Azure
//!   Async Operation Status): `{"status": "InProgress" | "Succeeded" |
//!   "Failed", "error"?}`, with `Retry-After` while in progress.
//!
//! Every ARM request needs `api-version` (400 `MissingApiVersionParameter`)
//! and a bearer token the token endpoint issued and that has not expired
//! (401 `AuthenticationFailed`, `InvalidAuthenticationToken`,
//! `ExpiredAuthenticationToken`). A create takes
//! [`ArmOptions::create_for`] on the fake's clock, a delete
//! [`ArmOptions::delete_for`]; [`FakeArm::fail_next_create`] makes the next
//! create's operation end `Failed` with a code and message;
//! [`FakeArm::delete_cluster`] deletes a cluster as someone outside flow
//! would. Faults and
//! counts are [`Faults`]'s (methods `token`, `clusters.create`,
//! `clusters.get`, `clusters.delete`, `operations.get`).

pub mod args;

use crate::auth::{ClientSecret, Refusal, Tokens};
use crate::clock::{self, FakeClock};
use crate::errors::generic;
use crate::faults::{self, Faults};
use crate::server::{json, ok, query, Fake, FakeState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use flow_cloud::Clock;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The api-versions of `Microsoft.HDInsight` the fake accepts.
pub const API_VERSIONS: &[&str] = &[
    "2021-06-01",
    "2023-04-15-preview",
    "2023-08-15-preview",
    "2024-08-01-preview",
    "2025-01-15-preview",
];

/// The scope of an ARM token.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// The top-level members of `ClusterCreateParametersExtended`.
const MEMBERS: &[&str] = &["location", "tags", "zones", "properties", "identity"];

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct ArmOptions {
    /// The service's clock (a `ManualClock` in-process, real time in the
    /// binary).
    pub clock: Arc<dyn Clock>,
    /// The Entra ID tenant of the token endpoint.
    pub tenant: String,
    /// The application allowed to get tokens.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: String,
    /// How long a create runs before its operation ends.
    pub create_for: Duration,
    /// How long a delete runs.
    pub delete_for: Duration,
    /// The `Retry-After` (seconds) of an operation still in progress.
    pub retry_after: u64,
}

impl ArmOptions {
    /// Defaults for in-process tests on `clock`: tenant `tenant-1`,
    /// application `flow-app` with secret `app-secret`, creates of 10
    /// minutes, deletes of 2, `Retry-After: 10`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        ArmOptions {
            clock,
            tenant: "tenant-1".into(),
            client_id: "flow-app".into(),
            client_secret: "app-secret".into(),
            create_for: Duration::from_secs(600),
            delete_for: Duration::from_secs(120),
            retry_after: 10,
        }
    }
}

/// A cluster the fake holds (deleted ones stay, `deleted` set).
#[derive(Debug, Clone)]
pub struct FakeArmCluster {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    /// The PUT body it was created from.
    pub body: Value,
    /// `InProgress`, `Succeeded`, `Failed`, `Deleting`.
    pub provisioning_state: String,
    /// `Accepted`, `Running`, `Error`, `Deleting`.
    pub cluster_state: String,
    /// Its failure, `(code, message)`.
    pub error: Option<(String, String)>,
    /// Gone (its delete ended).
    pub deleted: bool,
}

impl FakeArmCluster {
    fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.HDInsight/clusters/{}",
            self.subscription, self.resource_group, self.name
        )
    }

    /// Clusters - Get's answer: what was asked, without the secrets of
    /// the create body (its configurations and storage keys).
    fn view(&self) -> Value {
        let p = &self.body["properties"];
        let storage: Vec<Value> = p["storageProfile"]["storageaccounts"]
            .as_array()
            .map(|accounts| {
                accounts
                    .iter()
                    .map(|a| json!({"name": a["name"], "isDefault": a["isDefault"], "container": a["container"]}))
                    .collect()
            })
            .unwrap_or_default();
        let errors: Vec<Value> = self
            .error
            .iter()
            .map(|(code, message)| json!({"code": code, "message": message}))
            .collect();
        json!({
            "id": self.id(),
            "name": self.name,
            "type": "Microsoft.HDInsight/clusters",
            "location": self.body["location"],
            "tags": self.body.get("tags").cloned().unwrap_or(json!({})),
            "properties": {
                "clusterVersion": p["clusterVersion"],
                "osType": p["osType"],
                "tier": p.get("tier").cloned().unwrap_or(json!("Standard")),
                "clusterDefinition": {"kind": p["clusterDefinition"]["kind"]},
                "computeProfile": p["computeProfile"],
                "storageProfile": {"storageaccounts": storage},
                "provisioningState": self.provisioning_state,
                "clusterState": self.cluster_state,
                "errors": errors,
                "connectivityEndpoints": [
                    {"name": "HTTPS", "protocol": "TCP", "location": format!("{}.azurehdinsight.net", self.name), "port": 443}
                ],
            },
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Delete,
}

#[derive(Debug, Clone)]
struct Operation {
    id: String,
    cluster: usize,
    kind: Kind,
    ends_at: Duration,
    /// How it ends: `None` succeeds.
    failure: Option<(String, String)>,
    done: bool,
}

#[derive(Default)]
struct World {
    clusters: Vec<FakeArmCluster>,
    operations: Vec<Operation>,
    /// Every PUT body received, refused ones too.
    puts: Vec<Value>,
    /// Failures of the next creates.
    failures: VecDeque<(String, String)>,
}

impl World {
    /// Clusters - Delete of the cluster at `at`: its running delete, else
    /// a new one ending at `ends_at`, the cluster `Deleting` meanwhile.
    fn start_delete(&mut self, at: usize, ends_at: Duration) -> String {
        if let Some(running) = self
            .operations
            .iter()
            .find(|o| o.cluster == at && o.kind == Kind::Delete && !o.done)
        {
            return running.id.clone();
        }
        let op = format!("delete-{}", self.operations.len() + 1);
        self.operations.push(Operation {
            id: op.clone(),
            cluster: at,
            kind: Kind::Delete,
            ends_at,
            failure: None,
            done: false,
        });
        let cluster = &mut self.clusters[at];
        cluster.provisioning_state = "Deleting".into();
        cluster.cluster_state = "Deleting".into();
        op
    }
}

/// The fake's state, shared by its handler and its handle.
pub struct Service {
    options: ArmOptions,
    clock: FakeClock,
    tokens: Tokens,
    faults: Faults,
    world: Mutex<World>,
}

impl Service {
    /// The world, with the operations whose time is over ended.
    fn world(&self) -> MutexGuard<'_, World> {
        let mut world = self.world.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now();
        let World {
            clusters,
            operations,
            ..
        } = &mut *world;
        for op in operations
            .iter_mut()
            .filter(|o| !o.done && now >= o.ends_at)
        {
            op.done = true;
            let cluster = &mut clusters[op.cluster];
            match (op.kind, &op.failure) {
                (Kind::Create, None) => {
                    cluster.provisioning_state = "Succeeded".into();
                    cluster.cluster_state = "Running".into();
                }
                (Kind::Create, Some(failure)) => {
                    cluster.provisioning_state = "Failed".into();
                    cluster.cluster_state = "Error".into();
                    cluster.error = Some(failure.clone());
                }
                (Kind::Delete, _) => cluster.deleted = true,
            }
        }
        world
    }
}

/// The fake, served until dropped.
pub type FakeArm = Fake<Service>;

impl FakeState for Service {
    fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl FakeArm {
    /// Serves the fake on `port` (`0`: a free one).
    pub async fn start(options: ArmOptions, port: u16) -> std::io::Result<FakeArm> {
        let clock = FakeClock::new(options.clock.clone());
        let shared = Arc::new(Service {
            tokens: Tokens::new(clock.clone(), Duration::from_secs(3599)),
            faults: Faults::new(generic),
            clock,
            options,
            world: Mutex::default(),
        });
        Fake::serve(handle, shared, port).await
    }

    /// The tokens issued and the `Authorization` headers seen.
    pub fn tokens(&self) -> &Tokens {
        &self.shared.tokens
    }

    /// The service's clock.
    pub fn clock(&self) -> &FakeClock {
        &self.shared.clock
    }

    /// Every cluster created, deleted ones too.
    pub fn clusters(&self) -> Vec<FakeArmCluster> {
        self.shared.world().clusters.clone()
    }

    /// Every PUT body received, in order.
    pub fn puts(&self) -> Vec<Value> {
        self.shared.world().puts.clone()
    }

    /// The next create's operation ends `Failed` with ARM's `code` and
    /// `message`.
    pub fn fail_next_create(&self, code: &str, message: &str) {
        self.shared
            .world()
            .failures
            .push_back((code.to_string(), message.to_string()));
    }

    /// Deletes the cluster `name` as someone outside flow would (the
    /// portal, another tool): `Deleting` at once, gone after
    /// [`ArmOptions::delete_for`]. `false` when there is no such cluster.
    pub fn delete_cluster(&self, name: &str) -> bool {
        self.shared.delete_outside(name)
    }
}

impl Service {
    fn delete_outside(&self, name: &str) -> bool {
        let ends_at = self.clock.now() + self.options.delete_for;
        let mut world = self.world();
        let Some(at) = world
            .clusters
            .iter()
            .position(|c| !c.deleted && c.name.eq_ignore_ascii_case(name))
        else {
            return false;
        };
        world.start_delete(at, ends_at);
        true
    }
}

fn arm_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    generic(status, code, message.into())
}

fn unauthorized(refusal: Refusal) -> Response {
    let (code, message) = match refusal {
        Refusal::Missing => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        ),
        Refusal::Unknown => ("InvalidAuthenticationToken", "The access token is invalid."),
        Refusal::Expired => (
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
        ),
    };
    let mut refused = arm_error(StatusCode::UNAUTHORIZED, code, message);
    refused.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\"",
        ),
    );
    refused
}

/// Where a request goes: the API method and the cluster (subscription,
/// group, name) and operation it names.
struct Route {
    method: &'static str,
    subscription: String,
    resource_group: String,
    name: String,
    operation: Option<String>,
}

fn route(method: &Method, segments: &[&str]) -> Option<Route> {
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match segments {
        ["subscriptions", sub, rg_key, rg, providers, provider, clusters, name, rest @ ..]
            if eq(rg_key, "resourceGroups")
                && eq(providers, "providers")
                && eq(provider, "Microsoft.HDInsight")
                && eq(clusters, "clusters") =>
        {
            let (api, operation) = match (method.as_str(), rest) {
                ("PUT", []) => ("clusters.create", None),
                ("GET", []) => ("clusters.get", None),
                ("DELETE", []) => ("clusters.delete", None),
                ("GET", [ops, id]) if eq(ops, "azureasyncoperations") => {
                    ("operations.get", Some(id.to_string()))
                }
                _ => return None,
            };
            Some(Route {
                method: api,
                subscription: sub.to_string(),
                resource_group: rg.to_string(),
                name: name.to_string(),
                operation,
            })
        }
        _ => None,
    }
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
            .or_else(|| clock::control(&shared.clock, &method, control, &q, generic))
            .or_else(|| fake_control(&shared, &method, control, &q))
            .unwrap_or_else(|| {
                arm_error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("no control path {control}"),
                )
            });
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let token_path = format!("{}/oauth2/v2.0/token", shared.options.tenant);
    if method == Method::POST && path.trim_start_matches('/') == token_path {
        if let Some(throttled) = shared.faults.arrive("token") {
            return throttled;
        }
        let client = ClientSecret {
            client_id: shared.options.client_id.clone(),
            secret: shared.options.client_secret.clone(),
            scope: ARM_SCOPE.into(),
        };
        let answer = shared.tokens.issue_client_credentials(&body, &client);
        return shared.faults.depart("token", false, answer);
    }
    let Some(route) = route(&method, &segments) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the contract fake does not serve {method} {path}"),
        );
    };
    if let Err(refusal) = shared.tokens.check(&headers) {
        return unauthorized(refusal);
    }
    match q.get("api-version") {
        None => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        }
        Some(v) if !API_VERSIONS.contains(&v.as_str()) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                format!(
                    "The api-version '{v}' is invalid. The supported versions are '{}'.",
                    API_VERSIONS.join(",")
                ),
            )
        }
        Some(_) => {}
    }
    if let Some(throttled) = shared.faults.arrive(route.method) {
        return throttled;
    }
    if let Some(refused) = shared.faults.refuse(route.method) {
        return shared.faults.depart(route.method, true, refused);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let version = q.get("api-version").cloned().unwrap_or_default();
    let answer = act(&shared, &route, &body, &format!("http://{host}"), &version);
    shared.faults.depart(route.method, false, answer)
}

/// `GET /fake/clusters`: every cluster's name, states and whether it is
/// deleted, for tests through the binary; `POST
/// /fake/fail_create?code=C&message=M`: [`FakeArm::fail_next_create`];
/// `POST /fake/delete?name=N`: [`FakeArm::delete_cluster`] (404 when there
/// is no such cluster).
fn fake_control(
    shared: &Service,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
) -> Option<Response> {
    match (method.as_str(), path) {
        ("GET", "clusters") => {
            let clusters: Vec<Value> = shared
                .world()
                .clusters
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "resourceGroup": c.resource_group,
                        "provisioningState": c.provisioning_state,
                        "clusterState": c.cluster_state,
                        "deleted": c.deleted,
                    })
                })
                .collect();
            Some(ok(json!({ "clusters": clusters })))
        }
        ("POST", "fail_create") => {
            shared.world().failures.push_back((
                q.get("code")
                    .cloned()
                    .unwrap_or_else(|| "InternalServerError".into()),
                q.get("message").cloned().unwrap_or_default(),
            ));
            Some(ok(json!({})))
        }
        ("POST", "delete") => {
            let name = q.get("name").map(String::as_str).unwrap_or_default();
            Some(match shared.delete_outside(name) {
                true => ok(json!({})),
                false => json(StatusCode::NOT_FOUND, json!({"error": "no such cluster"})),
            })
        }
        _ => None,
    }
}

/// The first required member `body` lacks, as a path.
fn missing_member(body: &Value) -> Option<String> {
    let p = &body["properties"];
    let text = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
    if !text(&body["location"]) {
        return Some("location".into());
    }
    if !p.is_object() {
        return Some("properties".into());
    }
    for (path, value) in [
        ("properties.clusterVersion", &p["clusterVersion"]),
        ("properties.osType", &p["osType"]),
        (
            "properties.clusterDefinition.kind",
            &p["clusterDefinition"]["kind"],
        ),
    ] {
        if !text(value) {
            return Some(path.into());
        }
    }
    let gateway = &p["clusterDefinition"]["configurations"]["gateway"];
    for key in ["restAuthCredential.username", "restAuthCredential.password"] {
        if !text(&gateway[key]) {
            return Some(format!(
                "properties.clusterDefinition.configurations.gateway.{key}"
            ));
        }
    }
    match p["computeProfile"]["roles"].as_array() {
        Some(roles) if !roles.is_empty() => {
            for (i, role) in roles.iter().enumerate() {
                if !text(&role["name"]) {
                    return Some(format!("properties.computeProfile.roles[{i}].name"));
                }
                if role["targetInstanceCount"].as_u64().unwrap_or(0) == 0 {
                    return Some(format!(
                        "properties.computeProfile.roles[{i}].targetInstanceCount"
                    ));
                }
                if !text(&role["hardwareProfile"]["vmSize"]) {
                    return Some(format!(
                        "properties.computeProfile.roles[{i}].hardwareProfile.vmSize"
                    ));
                }
            }
        }
        _ => return Some("properties.computeProfile.roles".into()),
    }
    match p["storageProfile"]["storageaccounts"].as_array() {
        Some(accounts) if !accounts.is_empty() => None,
        _ => Some("properties.storageProfile.storageaccounts".into()),
    }
}

/// An answer carrying an operation's `Azure-AsyncOperation` (and, for a
/// delete, `Location`) and `Retry-After`.
fn with_operation(
    mut response: Response,
    base: &str,
    cluster: &FakeArmCluster,
    op: &str,
    version: &str,
    retry_after: u64,
    location: bool,
) -> Response {
    let url = format!(
        "{base}{}/azureasyncoperations/{op}?api-version={version}",
        cluster.id()
    );
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&url) {
        headers.insert("azure-asyncoperation", v.clone());
        if location {
            headers.insert(header::LOCATION, v);
        }
    }
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

fn act(shared: &Service, route: &Route, body: &Bytes, base: &str, version: &str) -> Response {
    let mut world = shared.world();
    let now = shared.clock.now();
    let found = world.clusters.iter().position(|c| {
        !c.deleted
            && c.name.eq_ignore_ascii_case(&route.name)
            && c.resource_group.eq_ignore_ascii_case(&route.resource_group)
            && c.subscription.eq_ignore_ascii_case(&route.subscription)
    });
    let not_found = || {
        arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource 'Microsoft.HDInsight/clusters/{}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                route.name, route.resource_group
            ),
        )
    };
    match route.method {
        "clusters.create" => {
            let parsed: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return arm_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequestContent",
                        format!(
                            "The request content was invalid and could not be deserialized: '{e}'."
                        ),
                    )
                }
            };
            world.puts.push(parsed.clone());
            let Some(members) = parsed.as_object() else {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContent",
                    "The request content was invalid and could not be deserialized: the body is not an object.",
                );
            };
            if let Some(unknown) = members.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContent",
                    format!("The request content was invalid and could not be deserialized: 'Could not find member '{unknown}' on object of type 'ClusterCreateParametersExtended'.'."),
                );
            }
            if let Some(missing) = missing_member(&parsed) {
                let code = if missing == "location" {
                    "LocationRequired"
                } else {
                    "InvalidRequestContent"
                };
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    code,
                    format!("The request content was invalid: '{missing}' is required."),
                );
            }
            if found.is_some() {
                return arm_error(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!("Cluster '{}' already exists.", route.name),
                );
            }
            let failure = world.failures.pop_front();
            let cluster = FakeArmCluster {
                subscription: route.subscription.clone(),
                resource_group: route.resource_group.clone(),
                name: route.name.clone(),
                body: parsed,
                provisioning_state: "InProgress".into(),
                cluster_state: "Accepted".into(),
                error: None,
                deleted: false,
            };
            let view = cluster.view();
            world.clusters.push(cluster);
            let op = format!("create-{}", world.operations.len() + 1);
            let at = world.clusters.len() - 1;
            world.operations.push(Operation {
                id: op.clone(),
                cluster: at,
                kind: Kind::Create,
                ends_at: now + shared.options.create_for,
                failure,
                done: false,
            });
            let cluster = world.clusters.last().expect("just pushed");
            with_operation(
                ok(view),
                base,
                cluster,
                &op,
                version,
                shared.options.retry_after,
                false,
            )
        }
        "clusters.get" => match found {
            Some(at) => ok(world.clusters[at].view()),
            None => not_found(),
        },
        "clusters.delete" => {
            let Some(at) = found else {
                return StatusCode::NO_CONTENT.into_response();
            };
            let op = world.start_delete(at, now + shared.options.delete_for);
            with_operation(
                StatusCode::ACCEPTED.into_response(),
                base,
                &world.clusters[at],
                &op,
                version,
                shared.options.retry_after,
                true,
            )
        }
        "operations.get" => {
            let id = route.operation.as_deref().unwrap_or("");
            let op = world.operations.iter().find(|o| {
                o.id == id && {
                    let c = &world.clusters[o.cluster];
                    c.name.eq_ignore_ascii_case(&route.name)
                        && c.resource_group.eq_ignore_ascii_case(&route.resource_group)
                }
            });
            match op {
                None => arm_error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    format!("The async operation '{id}' was not found."),
                ),
                Some(op) if !op.done => {
                    let mut answer = ok(json!({"status": "InProgress"}));
                    answer.headers_mut().insert(
                        header::RETRY_AFTER,
                        HeaderValue::from(shared.options.retry_after),
                    );
                    answer
                }
                Some(Operation {
                    failure: Some((code, message)),
                    ..
                }) => ok(json!({"status": "Failed", "error": {"code": code, "message": message}})),
                Some(_) => ok(json!({"status": "Succeeded"})),
            }
        }
        _ => json(StatusCode::NOT_FOUND, json!({})),
    }
}
