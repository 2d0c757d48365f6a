//! A loopback **contract fake** of the Dataproc REST v1 resources flow
//! uses, for tests only: Dataproc has no emulator.
//!
//! Served: `clusters.create/get/delete`, `operations.get`,
//! `jobs.submit/get/list/cancel` under `/v1/projects/P/regions/R/...`, with
//! bodies shaped like the published reference (long-running `Operation`s
//! with `ClusterOperationMetadata`, `Cluster.status`/`statusHistory`,
//! `Job.status`/`statusHistory`, `driverOutputResourceUri`, errors as
//! `{"error": {"code", "message", "status"}}`). Nothing else.
//!
//! Strict as the service (`validate.rs`, `defaults.rs`, from the REST v1
//! reference): unknown body fields and query parameters, a job without its
//! type's required fields (`mainPythonFileUri`; `mainJarFileUri` or
//! `mainClass`; `queryFileUri` or `queryList`; `placement.clusterName`),
//! malformed request ids (letters, digits, `_`, `-`, at most 40), job ids,
//! cluster names, labels and durations, and `jobs.list` filters other than
//! `status.state = ACTIVE|NON_ACTIVE` and `labels.KEY = VALUE|*` are 400
//! `INVALID_ARGUMENT`; output-only fields are ignored. A created cluster is
//! stored as Dataproc answers it (zone and machine-type URIs, instance
//! names, resolved image version, buckets, disk defaults, 1 or 3 masters,
//! 0 or 2+ workers). Every API request needs a bearer token its `POST
//! /token` issued and that has not expired on its clock (401
//! `UNAUTHENTICATED`), unless [`FakeOptions::require_token`] is off. A
//! running cluster can go `ERROR` or `STOPPED` on demand
//! ([`FakeDataproc::break_cluster`]); its running jobs then fail naming it
//! and its reason.
//!
//! Time comes from a [`Clock`]: states are computed from it on every
//! request (a cluster is `CREATING` for [`FakeOptions::cluster_create`],
//! then `RUNNING`; a job `PENDING` for [`FakeOptions::job_pending`], then
//! `RUNNING` for [`FakeOptions::job_run`], then `DONE`), so a test with a
//! [`ManualClock`](flow_cloud::ManualClock) moves every state by advancing
//! it, and the binary (`contract-fakes dataproc`, flags in `args.rs`) runs on
//! real time (moved on by `POST /fake/clock?advance=D`).
//!
//! What a job does is read from its properties (the flow's `conf`):
//! `fake.run_for` (a duration, or `forever`), `fake.outcome` (`DONE` or
//! `ERROR`), `fake.details`, `fake.driver_output` (its text),
//! `fake.fail_if_exists` (`gs://B/O`: the job ends in `ERROR` when that
//! object exists at submission), `fake.attempt_failure` (`true`: an
//! `ATTEMPT_FAILURE` half-way, then `RUNNING` again). With a GCS endpoint
//! (fake-gcs-server), a job whose main file is a `gs://` object that does
//! not exist fails like on Dataproc, and the driver output is written there
//! at submission, as `driverOutputResourceUri` + `.000000000`.
//!
//! Tests read and steer it in process ([`FakeDataproc`]'s methods) or over
//! HTTP (`/fake/...`, for the binary): request counts per method, a 429
//! with `Retry-After` for the next calls of a method, a 503 before a call
//! is carried out or after (a lost answer), a cluster whose creation fails,
//! finishing a job by hand, the `Authorization` headers, the create bodies,
//! the submitted `requestId`s and the answers' statuses received, the
//! tokens issued (`GET /fake/tokens`), a cluster breaking (`POST
//! /fake/break_cluster?cluster=C&state=ERROR&detail=D`). A second
//! `jobs.submit` or `clusters.create` with the same `requestId` in the same
//! project and region answers the first one's job or operation (200), as
//! the API does (the reference gives the ids no expiry); the same job id
//! under another or no `requestId` is 409 `ALREADY_EXISTS`. `POST /token`
//! is an OAuth token endpoint for a test service-account key whose
//! `token_uri` points at the fake.
//!
//! Files: `routes.rs` (which API method a request is, the `/fake/` control
//! paths), `clusters.rs` and `jobs.rs` (the methods), `state.rs` (the
//! world and its clock-driven states), `json.rs` (the resources as the API
//! answers them), `validate.rs` and `defaults.rs` (what the service refuses,
//! what it fills in), `gcs.rs` (job files and driver output on
//! fake-gcs-server), `args.rs` (the binary's flags).

mod clusters;
mod defaults;
mod gcs;
mod jobs;
mod json;
mod routes;
mod state;
mod validate;

pub mod args;

use crate::auth::{IssuedToken, Tokens};
use crate::clock::FakeClock;
use crate::errors;
use crate::faults::Faults;
use crate::server::{Fake, FakeState};
use axum::http::header;
use chrono::{DateTime, SecondsFormat, Utc};
use flow_cloud::Clock;
use serde_json::{json, Value};
use state::ServiceState;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    pub clock: Arc<dyn Clock>,
    /// fake-gcs-server's URL: job files are checked there and driver output
    /// is written there. `None`: neither.
    pub gcs_endpoint: Option<String>,
    /// The bucket of `driverOutputResourceUri` (created at start if GCS is
    /// configured).
    pub staging_bucket: String,
    pub cluster_create: Duration,
    pub cluster_delete: Duration,
    pub job_pending: Duration,
    /// `None`: jobs run until finished by hand (or cancelled).
    pub job_run: Option<Duration>,
    pub job_cancel: Duration,
    /// How long an access token from `POST /token` lives (Google's: an
    /// hour).
    pub token_lifetime: Duration,
    /// Every API request needs a bearer token from `POST /token`, live on
    /// the fake's clock (401 `UNAUTHENTICATED` otherwise), as on Dataproc.
    /// `false` only for tests of a client configured to send none.
    pub require_token: bool,
}

impl FakeOptions {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        FakeOptions {
            clock,
            gcs_endpoint: None,
            staging_bucket: "dataproc-staging-fake".into(),
            cluster_create: Duration::from_secs(90),
            cluster_delete: Duration::from_secs(30),
            job_pending: Duration::from_secs(5),
            job_run: Some(Duration::from_secs(60)),
            job_cancel: Duration::from_secs(2),
            token_lifetime: Duration::from_secs(3600),
            require_token: true,
        }
    }
}

/// The fake's state, shared by its handler and its handle.
pub struct Service {
    options: FakeOptions,
    clock: FakeClock,
    /// Wall time of clock zero, for timestamps.
    epoch: DateTime<Utc>,
    world: Mutex<ServiceState>,
    faults: Faults,
    tokens: Tokens,
    http: reqwest::Client,
}

impl Service {
    fn world(&self) -> MutexGuard<'_, ServiceState> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn now(&self) -> Duration {
        self.clock.now()
    }
    fn time(&self, at: Duration) -> String {
        let at = self.epoch + chrono::Duration::from_std(at).unwrap_or_default();
        at.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

/// A running fake, stopped when dropped.
pub type FakeDataproc = Fake<Service>;

impl FakeState for Service {
    fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl FakeDataproc {
    /// Starts on a free loopback port (`port` 0) or the given one.
    pub async fn start(options: FakeOptions, port: u16) -> std::io::Result<FakeDataproc> {
        let clock = FakeClock::new(options.clock.clone());
        let shared = Arc::new(Service {
            epoch: Utc::now() - chrono::Duration::from_std(clock.now()).unwrap_or_default(),
            tokens: Tokens::new(clock.clone(), options.token_lifetime),
            clock,
            options,
            world: Mutex::new(ServiceState::default()),
            faults: Faults::new(errors::google),
            http: reqwest::Client::new(),
        });
        if let Some(gcs) = &shared.options.gcs_endpoint {
            // 409 (it exists) is fine.
            let _ = shared
                .http
                .post(format!("{gcs}/storage/v1/b?project=fake"))
                .body(json!({ "name": shared.options.staging_bucket }).to_string())
                .header(header::CONTENT_TYPE, "application/json")
                .send()
                .await;
        }
        Fake::serve(routes::handle, shared, port).await
    }

    /// The service's clock (advance it to move the fake alone).
    pub fn clock(&self) -> &FakeClock {
        &self.shared.clock
    }

    /// The `requestId` of each `jobs.submit` received, in order (`""` for
    /// none).
    pub fn submit_request_ids(&self) -> Vec<String> {
        self.shared.world().submit_request_ids.clone()
    }

    /// Cluster `name` as `clusters.get` answers it now: what
    /// `clusters.create` received, with the defaults Dataproc fills.
    pub fn create_body(&self, name: &str) -> Option<Value> {
        let now = self.shared.now();
        self.shared
            .world()
            .clusters
            .values()
            .find(|c| c.name == name)
            .map(|c| json::cluster_json(&self.shared, c, now))
    }

    /// The next creation of cluster `name` fails with `message` (its
    /// operation's error; the cluster goes to `ERROR`).
    pub fn fail_create(&self, name: &str, message: &str) {
        self.shared
            .world()
            .fail_creates
            .insert(name.to_string(), message.to_string());
    }

    /// Cluster `name` leaves `RUNNING` now: `state` `ERROR` or `STOPPED`,
    /// with Dataproc's `detail`; its running jobs fail naming it. False
    /// when there is no such cluster.
    pub fn break_cluster(&self, name: &str, state: &str, detail: &str) -> bool {
        let mut world = self.shared.world();
        state::break_cluster(&self.shared, &mut world, name, state, detail)
    }

    /// Writes a service-account key file whose `token_uri` is this fake's
    /// token endpoint (with a throwaway key made for tests), for a client
    /// to get its tokens here.
    pub fn write_key_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(
            path,
            crate::auth::service_account_key(&format!("{}/token", self.url())),
        )
    }

    /// Ends a job now with `state` (`DONE`, `ERROR`) and `details`.
    pub fn finish_job(&self, job_id: &str, state: &str, details: &str) -> bool {
        let now = self.shared.now();
        let mut world = self.shared.world();
        match world.jobs.iter_mut().find(|j| j.key.2 == job_id) {
            Some(job) => {
                job.forced = Some((now, state.to_string(), details.to_string()));
                true
            }
            None => false,
        }
    }

    /// Every job as `jobs.get` would answer now, oldest first.
    pub fn jobs(&self) -> Vec<Value> {
        let now = self.shared.now();
        let world = self.shared.world();
        world
            .jobs
            .iter()
            .map(|j| json::job_json(&self.shared, j, now))
            .collect()
    }

    /// A cluster's state now (`None`: no such cluster, or deleted).
    pub fn cluster_state(&self, name: &str) -> Option<String> {
        let now = self.shared.now();
        let world = self.shared.world();
        world
            .clusters
            .values()
            .find(|c| c.name == name)
            .and_then(|c| state::cluster_state(&self.shared, c, now))
            .map(|(state, _)| state)
    }

    /// Each API request's `Authorization` header so far, in order (`""`
    /// for none).
    pub fn authorizations(&self) -> Vec<String> {
        self.shared.tokens.authorizations()
    }

    /// Access tokens handed out by `POST /token` (an OAuth token endpoint
    /// for service-account key files whose `token_uri` points here).
    pub fn tokens_issued(&self) -> u64 {
        self.shared.tokens.issued().len() as u64
    }

    /// Every access token handed out, with its issue and expiry times.
    pub fn tokens(&self) -> Vec<IssuedToken> {
        self.shared.tokens.issued()
    }

    /// Names of the clusters whose deletion finished.
    pub fn deleted(&self) -> Vec<String> {
        let now = self.shared.now();
        let mut world = self.shared.world();
        state::sweep(&self.shared, &mut world, now);
        world.deleted.clone()
    }
}
