//! A loopback **contract fake** of the Qubole Data Service (QDS) REST API
//! calls flow makes, for tests only: QDS has no emulator.
//!
//! Served: the Command API v1.2 (`POST /api/v1.2/commands`, `GET
//! /commands/ID`, the command history `GET /commands` with `page`,
//! `per_page`, `cluster_label`, `name` and `include_query_properties`,
//! `PUT /commands/ID {"status": "kill"}`, `GET /commands/ID/logs`) and the
//! Cluster API v1.3's state (`GET`/`PUT /api/v1.3/clusters/LABEL/state`),
//! with bodies shaped like the published Command Object (`id`, `status`,
//! `command_type`, `progress`, `created_at`, `updated_at`, `label`, `name`,
//! `tags`, `meta_data`, `command`) and errors as `{"error": {"error_code",
//! "error_message"}}`. Nothing else.
//!
//! Strict like QDS: a request without the account's `X-AUTH-TOKEN` is 401;
//! a command on a label no cluster has, a body without its command type's
//! required field (Spark: exactly one of `script_location`, `cmdline`,
//! `program` with `language`, `sql`; Pig and shell: a script or its
//! location; Hadoop: `sub_command` and its arguments), a field its type
//! does not take, or a `name` with `&`, `<`, `>` or quotes is 422;
//! `per_page` above 100 is 422.
//!
//! Time comes from a [`FakeClock`]: a command is `waiting` for
//! [`FakeOptions::command_waiting`] (and while its cluster starts), then
//! `running` for [`FakeOptions::command_run`], then `done`; a killed one
//! `cancelling` for [`FakeOptions::command_cancel`], then `cancelled`. A
//! cluster started (by the API, or by a command sent to it while `DOWN`,
//! as QDS does) is `PENDING` for [`FakeOptions::cluster_start`], then
//! `UP`; a terminated one `TERMINATING` for [`FakeOptions::cluster_stop`],
//! then `DOWN`, and its unfinished commands end in `error` (a cluster
//! changed by hand, [`FakeQubole::set_cluster_state`], leaves them as they
//! are, as QDS notices a lost cluster's commands late). What a command does is read from its text (inline script,
//! command line, arguments, parameters): `fake.outcome=error` makes it end
//! in `error`, `fake.run_for=D` (or `forever`) sets its run time. Its log
//! names what it ran, then says how it ended.
//!
//! Tests read and steer it in process ([`FakeQubole`]'s methods) or over
//! HTTP (`/fake/...`, for the binary `contract-fakes qubole`, flags in
//! `args.rs`): request counts per method (`commands.submit`,
//! `commands.get`, `commands.list`, `commands.kill`, `commands.logs`,
//! `clusters.state`, `clusters.start`, `clusters.terminate`), faults (429
//! with `Retry-After`, 503 before or after acting), every command as QDS
//! holds it with the body it was sent, the most commands unfinished at one
//! time, finishing a command by hand, and each cluster's state (read, or
//! set by hand with a `terminate_reason`).
//!
//! Files: `routes.rs` (which API method a request is, the `/fake/` control
//! paths), `commands.rs` (the Command API and its validation), `state.rs`
//! (the world and its clock-driven states).

mod commands;
mod routes;
mod state;

pub mod args;

use crate::clock::FakeClock;
use crate::faults::Faults;
use crate::server::{json, Fake, FakeState};
use axum::http::StatusCode;
use axum::response::Response;
use flow_cloud::Clock;
use serde_json::{json as value, Value};
use state::ServiceState;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    pub clock: Arc<dyn Clock>,
    /// The account's API token: every request must carry it as
    /// `X-AUTH-TOKEN`.
    pub token: String,
    /// The account's clusters by label, with their state at start (`UP` or
    /// `DOWN`).
    pub clusters: BTreeMap<String, String>,
    pub command_waiting: Duration,
    /// `None`: commands run until finished by hand (or killed).
    pub command_run: Option<Duration>,
    pub command_cancel: Duration,
    pub cluster_start: Duration,
    pub cluster_stop: Duration,
}

impl FakeOptions {
    /// An account with the token `token` and one cluster, `label`, `UP`.
    pub fn new(clock: Arc<dyn Clock>, token: &str, label: &str) -> Self {
        FakeOptions {
            clock,
            token: token.to_string(),
            clusters: BTreeMap::from([(label.to_string(), "UP".to_string())]),
            command_waiting: Duration::from_secs(2),
            command_run: Some(Duration::from_secs(30)),
            command_cancel: Duration::from_secs(2),
            cluster_start: Duration::from_secs(120),
            cluster_stop: Duration::from_secs(60),
        }
    }
}

/// QDS's error body: `{"error": {"error_code": 422, "error_message": M}}`.
pub fn error(status: StatusCode, _code: &str, message: String) -> Response {
    json(
        status,
        value!({"error": {"error_code": status.as_u16(), "error_message": message}}),
    )
}

/// The fake's state, shared by its handler and its handle.
pub struct Service {
    options: FakeOptions,
    clock: FakeClock,
    world: Mutex<ServiceState>,
    faults: Faults,
}

impl Service {
    fn world(&self) -> MutexGuard<'_, ServiceState> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn now(&self) -> Duration {
        self.clock.now()
    }
}

/// A running fake, stopped when dropped.
pub type FakeQubole = Fake<Service>;

impl FakeState for Service {
    fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl FakeQubole {
    /// Starts on a free loopback port (`port` 0) or the given one.
    pub async fn start(options: FakeOptions, port: u16) -> std::io::Result<FakeQubole> {
        let clock = FakeClock::new(options.clock.clone());
        let world = ServiceState::new(&options.clusters);
        let shared = Arc::new(Service {
            options,
            clock,
            world: Mutex::new(world),
            faults: Faults::new(error),
        });
        Fake::serve(routes::handle, shared, port).await
    }

    /// Every command as `GET /commands/ID` would answer now (with tags),
    /// oldest first.
    pub fn commands(&self) -> Vec<Value> {
        let now = self.shared.now();
        let world = self.shared.world();
        world
            .commands
            .iter()
            .map(|c| commands::command_json(&world, c, now, true))
            .collect()
    }

    /// The bodies of the commands QDS accepted, as sent, oldest first.
    pub fn bodies(&self) -> Vec<Value> {
        self.shared
            .world()
            .commands
            .iter()
            .map(|c| c.body.clone())
            .collect()
    }

    /// Ends command `id` now with `status` (`done`, `error`).
    pub fn finish_command(&self, id: u64, status: &str) -> bool {
        let now = self.shared.now();
        self.shared.world().finish(id, status, now)
    }

    /// A cluster's state now (`None`: no such label).
    pub fn cluster_state(&self, label: &str) -> Option<String> {
        let now = self.shared.now();
        self.shared.world().cluster_state(label, now)
    }

    /// Puts a cluster in `state` (`UP` or `DOWN`) now, as if someone else
    /// started or stopped it (or it was lost), with `reason` as its
    /// `terminate_reason`; its commands are left as they are.
    pub fn set_cluster_state(&self, label: &str, state: &str, reason: Option<&str>) {
        let now = self.shared.now();
        self.shared.world().force_cluster(label, state, reason, now);
    }

    /// The most commands unfinished at one time so far.
    pub fn peak_unfinished(&self) -> usize {
        let now = self.shared.now();
        self.shared.world().peak_unfinished(now)
    }

    /// Drops the pending 429s of [`throttle`](Self::throttle): QDS answers
    /// again.
    pub fn heal(&self) {
        self.shared.faults.unthrottle();
    }
}
