//! The workflow viewer behind `flow serve`: a JSON API, server-sent events
//! and an embedded web page that draws each flow run's DAG live, shows each
//! step's actions, attempts and log, and starts the run modes.
//!
//! What it is for: watching and steering flow runs from a browser, on this
//! machine (loopback by default) or on a trusted network behind a token.
//! Runs started over HTTP execute in this process through the same engine,
//! lease and store as `flow run`.
//!
//! What it is not: a scheduler, a multi-user service or a place that knows
//! backends. It gets the store as an `Arc<dyn FlowStore>`, the flows it may
//! show as validated graphs, and a [`RunLauncher`] from its caller (the
//! `flow` CLI), which alone knows clusters and settings.
//!
//! Everything it shows comes from the store: flow and step records, run
//! history (`list_runs`) and the log lines the engine records there
//! (`read_logs`, paged and resumed by store position), so it shows runs of
//! any process or host that shares the store, not only its own.
//!
//! Map: [`api`] (routes and handlers), [`jobs`] (the timetable's page,
//! `GET /api/jobs`), [`metrics`] (`GET /metrics`, the timetable's series too), [`events`] (per-run event journals,
//! the SSE stream and its resumable ids), [`observed`] (the store wrapper
//! that publishes this server's writes), [`views`] (the JSON shapes),
//! [`layout`] (server-side DAG layout), [`runs`] (the launcher trait and
//! this server's runs going on), [`security`] (host, origin and token
//! checks, security headers), [`assets`] (the embedded page).

pub mod api;
pub mod assets;
pub mod catalog;
mod error;
pub mod events;
pub mod jobs;
pub mod layout;
pub mod metrics;
pub mod observed;
pub mod runs;
pub mod security;
pub mod views;

pub use catalog::FlowFile;
pub use error::{ApiError, ServerError};
pub use runs::{CancelBackends, CancelOutcome, EngineRequest, LaunchError, RunLauncher};

use crate::api::AppState;
use crate::catalog::Catalog;
use crate::events::Hub;
use crate::observed::ObservedStore;
use crate::runs::Registry;
use crate::security::Guard;
use flow_core::{FlowStore, Secret, Settings};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Everything a server needs.
pub struct ServerOptions {
    pub bind: SocketAddr,
    /// Needed by POST requests as `Authorization: Bearer TOKEN`; required
    /// for a non-loopback `bind`.
    pub token: Option<Secret>,
    pub flows: Vec<FlowFile>,
    pub store: Arc<dyn FlowStore>,
    /// `None`: a read-only viewer (POSTs answer 503).
    pub launcher: Option<Arc<dyn RunLauncher>>,
    /// Secret values to blank out of every answer (errors, log lines).
    pub secrets: Arc<Settings>,
    /// The lease TTL of the settings, for the leases the server takes
    /// itself (setting the run mode).
    pub lease_ttl: Duration,
    /// How often watched flow runs are polled for records and log lines.
    pub tick: Duration,
    /// The Prometheus series `GET /metrics` shows (`None`: no `/metrics`).
    pub metrics: Option<flow_signals::MetricsRegistry>,
    /// `[cost]`: prices for the runs' estimated cost (`None`: instance-hours
    /// only).
    pub prices: Option<flow_core::PriceTable>,
}

impl ServerOptions {
    /// Options with the defaults: loopback port 8080, no token, 60 s lease
    /// TTL, 250 ms tick.
    pub fn new(store: Arc<dyn FlowStore>, flows: Vec<FlowFile>) -> Self {
        ServerOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            flows,
            store,
            launcher: None,
            secrets: Arc::new(Settings::new()),
            lease_ttl: Duration::from_secs(60),
            tick: Duration::from_millis(250),
            metrics: None,
            prices: None,
        }
    }
}

/// A bound server, not yet serving.
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
    guard: Arc<Guard>,
}

impl Server {
    /// Checks the options and binds the address. A non-loopback address
    /// without a token is refused, and so is a token no request could
    /// carry ([`security::token_problem`]).
    pub async fn bind(options: ServerOptions) -> Result<Server, ServerError> {
        if !options.bind.ip().is_loopback() && options.token.is_none() {
            return Err(ServerError::TokenRequired { addr: options.bind });
        }
        if let Some(why) = options
            .token
            .as_ref()
            .and_then(|t| security::token_problem(t.expose()))
        {
            return Err(ServerError::UnusableToken { why });
        }
        let catalog = Catalog::new(options.flows)?;
        let listener = tokio::net::TcpListener::bind(options.bind)
            .await
            .map_err(|source| ServerError::Bind {
                addr: options.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: options.bind,
            source,
        })?;
        let shutdown = CancellationToken::new();
        let hub = Hub::new(
            options.store.clone(),
            options.secrets.clone(),
            options.tick,
            shutdown.clone(),
        );
        let registry = Arc::new(Registry::default());
        let observed: Arc<dyn FlowStore> =
            Arc::new(ObservedStore::new(options.store.clone(), hub.clone()));
        // Lay out every flow now, in the background: the first page of a
        // 10,000-step flow then costs no layout.
        for flow in catalog.entries() {
            let flow = flow.clone();
            tokio::task::spawn_blocking(move || flow.layout_now());
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let state = Arc::new(AppState {
            catalog,
            store: options.store,
            observed,
            hub,
            registry,
            launcher: options.launcher,
            redact: options.secrets,
            lease_ttl: options.lease_ttl,
            owner: format!("flow-serve:{host}:{}", std::process::id()),
            shutdown,
            timetable: options
                .metrics
                .as_ref()
                .map(metrics::TimetableSeries::register),
            sla: options.metrics.as_ref().map(metrics::SlaSeries::register),
            metrics: options.metrics,
            prices: options.prices,
        });
        let guard = Arc::new(Guard::new(options.token, addr));
        Ok(Server {
            listener,
            addr,
            state,
            guard,
        })
    }

    /// The address it listens on (the port is known here when `bind` asked
    /// for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes; then stops accepting, ends the
    /// event streams, cancels this server's runs and waits for them to wind
    /// down (their engines terminate their clusters and record the
    /// outcome).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let state = self.state.clone();
        let app = api::routes(self.state.clone()).layer(axum::middleware::from_fn_with_state(
            self.guard.clone(),
            security::guard,
        ));
        let stop = state.shutdown.clone();
        let registry = state.registry.clone();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                stop.cancel();
                for run in registry.all_active() {
                    run.cancel();
                }
            })
            .await;
        state.shutdown.cancel();
        let mut waited = 0;
        while state.registry.active_count() > 0 {
            if waited % 50 == 0 {
                info!(
                    "waiting for {} run(s) to wind down",
                    state.registry.active_count()
                );
            }
            waited += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Err(e) = &served {
            warn!("server error: {e}");
        }
        served.map_err(|source| ServerError::Serve { source })
    }
}

/// The README's examples, compiled (and run unless they say otherwise) as
/// doctests, so the crate page shows code that builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
