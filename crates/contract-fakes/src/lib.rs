//! Loopback **contract fakes** of the cloud APIs flow calls that have no
//! emulator, for tests only: one module per API ([`arm`], [`dataproc`], [`livy`], [`qubole`], [`webhcat`]), on
//! shared scaffolding. Each fake is shaped from the published API
//! reference and refuses what the service refuses; it is named a fake
//! everywhere it is used.
//!
//! Shared scaffolding (each API module uses it, none writes its own):
//! - [`server`]: the HTTP server on a loopback port (`0`: a free one), a
//!   JSON answer, query-string parsing, and the binary's "print the
//!   address, live until stdin closes" loop;
//! - [`clock`]: [`FakeClock`](clock::FakeClock), the service's time: a
//!   [`flow_cloud::Clock`] (a `ManualClock` in-process, real time in the
//!   binary) plus a shift a test adds (`POST /fake/clock?advance=30s` over
//!   HTTP), so the binary's states and token expiries move on demand too;
//! - [`faults`]: request counts per API method, and injected faults (429
//!   with `Retry-After`, a 503 before acting, a 503 after acting: a lost
//!   answer), with the status of every answer recorded;
//! - [`auth`]: OAuth token endpoints (`POST /token`, for a
//!   service-account key whose `token_uri` points at the fake; Entra ID's
//!   client-credentials grant for ARM) and the bearer-token record and
//!   check;
//! - [`errors`]: the error bodies: Google's
//!   `{"error": {"code": 400, "message", "status": "INVALID_ARGUMENT"}}`
//!   and the generic `{"error": {"code": "Name", "message"}}` (Azure ARM's
//!   shape);
//! - [`gateway_args`]: the binary's flags of the HDInsight gateway's
//!   fakes (`livy`, `webhcat`).
//!
//! **One API per process.** The binary is `contract-fakes API [--port N]
//! [API flags]`: it serves that one API on `127.0.0.1`, prints `listening
//! on http://127.0.0.1:PORT` and exits when its standard input closes. A
//! test starts exactly the fake it needs, with that API's own flags, and
//! points the client's endpoint at the printed URL unchanged (real
//! services put each API at its own host's root, so no path prefix to
//! rewrite), and no test sees another API's state or counts.
//!
//! # Adding an API module
//! 1. `src/NAME/mod.rs` (split by routes / state / JSON as `dataproc/`
//!    is): a `FakeNAME` with `start(options, port)` over
//!    [`server::serve`], holding a [`FakeClock`](clock::FakeClock), a
//!    [`Faults`](faults::Faults) and, if the API takes bearer tokens,
//!    [`Tokens`](auth::Tokens); its in-process methods for tests.
//! 2. Its router: one fallback handler that names each request's API
//!    method (`jobs.get`...), calls [`Faults::arrive`](faults::Faults::arrive)
//!    and [`Faults::refuse`](faults::Faults::refuse) before acting and
//!    [`Faults::depart`](faults::Faults::depart) after, and serves
//!    `/fake/...` by [`faults::control`] and [`clock::control`] first,
//!    then its own control paths.
//! 3. Errors in the API's own shape ([`errors`], or a function of the same
//!    [`ErrorShape`](errors::ErrorShape) type beside it).
//! 4. `src/NAME/args.rs`: its binary flags, and one arm in `main.rs`'s
//!    `match` on the API name.
//! 5. Tests of the module in its client crate (dev-dependency
//!    `contract-fakes`) and, for the `flow` binary's tests, a peer entry
//!    in `xtask/src/contract_fakes.rs` (`APIS`: its test-name suffix).
//! 6. A line in `docs/src/dev/testing.md` (contract fakes) and in this
//!    list of modules.

pub mod arm;
pub mod auth;
pub mod clock;
pub mod dataproc;
pub mod errors;
pub mod faults;
pub mod gateway_args;
pub mod livy;
pub mod qubole;
pub mod server;
pub mod webhcat;
