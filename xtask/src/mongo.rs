//! The MongoDB wire-protocol servers of the MongoDB store's tests: two, so
//! both of the store's paths run.
//!
//! MongoDB itself cannot be installed here, so `cargo xtask test` installs
//! two pinned PyPI servers into venvs under `<target>/tools` (once, reused
//! afterwards), starts each on a free loopback port through [`services`]
//! (stopped when the tests end), and hands their URIs to the tests:
//!
//! | peer | what it proves | tests | URI in |
//! |---|---|---|---|
//! | nx-27017 (`--db memory`, standalone) | the non-transactional path: `begin_run`'s ordered fallback | `..._on_nx27017` | `FLOW_MONGO_URI` |
//! | SecantusDB (WiredTiger storage, a single-node replica set, `--auth` with a SCRAM user, `--enable-test-commands`) | `begin_run` in a transaction, real unique-index semantics (nulls collide), partial filters, a refused login of a user the server has | `..._on_secantusdb` | `FLOW_TEST_SECANTUSDB_URI` (with the user and password) |
//!
//! SecantusDB is GPL: a test peer installed at test time, never linked
//! into or shipped with flow. Its user is made by `tests/peers/secantusdb.py`
//! (users can only be created on a server without `--auth`).
//!
//! A URI already in the environment is used instead of starting that
//! server (e.g. `FLOW_MONGO_URI` naming a real MongoDB 6+).

use crate::emulators::Peer;
use crate::services::{self, Ready, Service, ServiceSpec};
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The nx-27017 release the tests run against.
pub const NX27017_REQUIREMENT: &str = "nx-27017==0.8.1";
const NX_MARKER: &str = ".flow-nx27017-installed";
/// The SecantusDB release the tests run against.
pub const SECANTUS_REQUIREMENT: &str = "secantusdb==0.7.0b3";
const SECANTUS_MARKER: &str = ".flow-secantusdb-installed";
/// The test user SecantusDB is given (a loopback test server's).
const SECANTUS_USER: &str = "flow";
const SECANTUS_PASSWORD: &str = "flow-test-secantus";

/// The name filter of the tests that need nx-27017.
pub const NX_TESTS: &str = "_on_nx27017";
/// The name filter of the tests that need SecantusDB.
pub const SECANTUS_TESTS: &str = "_on_secantusdb";

/// The MongoDB peers: their started servers (stopped when dropped).
pub struct Mongo {
    pub peers: Vec<Peer>,
    services: Vec<Service>,
    /// SecantusDB's storage directory, removed once it stopped.
    scratch: Option<PathBuf>,
}

impl Drop for Mongo {
    fn drop(&mut self) {
        self.services.clear();
        if let Some(dir) = &self.scratch {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Both servers, each from its URI variable or installed and started now.
pub fn start(tools: &Path, logs: &Path) -> Mongo {
    let mut mongo = Mongo {
        peers: Vec::new(),
        services: Vec::new(),
        scratch: None,
    };
    let skip = env::var_os("FLOW_SKIP_EMULATORS").is_some_and(|v| !v.is_empty() && v != "0");
    let servers: [(&'static str, &'static str, &str, Starter); 2] = [
        ("nx-27017", NX_TESTS, "FLOW_MONGO_URI", start_nx),
        (
            "secantusdb",
            SECANTUS_TESTS,
            "FLOW_TEST_SECANTUSDB_URI",
            start_secantus,
        ),
    ];
    for (name, tests, variable, starter) in servers {
        let started = if let Some(uri) = env::var(variable).ok().filter(|u| !u.is_empty()) {
            eprintln!("xtask: {name} tests use the server in {variable}");
            Ok(uri)
        } else if skip {
            Err("FLOW_SKIP_EMULATORS is set".to_string())
        } else {
            starter(tools, logs).map(|(service, uri, scratch)| {
                mongo.services.push(service);
                if scratch.is_some() {
                    mongo.scratch = scratch;
                }
                uri
            })
        };
        let (available, env) = match started {
            Ok(uri) => (Ok(()), vec![(variable.to_string(), uri)]),
            Err(why) => {
                eprintln!("xtask: warning: {name} is not available: {why}");
                (Err(why), Vec::new())
            }
        };
        mongo.peers.push(Peer {
            name,
            tests,
            available,
            env,
        });
    }
    mongo
}

/// A started server: the service, the URI for the tests, a directory to
/// remove after it stopped.
type Starter = fn(&Path, &Path) -> Result<(Service, String, Option<PathBuf>), String>;

fn install(venv: &Path, requirement: &str, marker: &str, program: &str) -> Result<(), String> {
    let started = Instant::now();
    match crate::ensure_venv(venv, requirement, marker, |v| {
        v.join("bin").join(program).is_file()
    })? {
        true => eprintln!("xtask: reusing {requirement} in {}", venv.display()),
        false => eprintln!(
            "xtask: installed {requirement} into {} in {:.0?}",
            venv.display(),
            started.elapsed()
        ),
    }
    Ok(())
}

fn start_nx(tools: &Path, logs: &Path) -> Result<(Service, String, Option<PathBuf>), String> {
    let venv = tools.join("nx27017-venv");
    install(&venv, NX27017_REQUIREMENT, NX_MARKER, "nx-27017")?;
    let log_dir = logs.display().to_string();
    let spec = ServiceSpec {
        name: "nx-27017",
        program: venv.join("bin").join("nx-27017"),
        // Its own log and pid files: the defaults are shared /tmp paths.
        args: [
            "--db",
            "memory",
            "--host",
            "127.0.0.1",
            "-p",
            "{port}",
            "--log-file",
            &format!("{log_dir}/nx-27017-server.log"),
            "--pid-file",
            &format!("{log_dir}/nx-27017-{{port}}.pid"),
        ]
        .map(String::from)
        .to_vec(),
        env: Vec::new(),
        ready: Ready::Tcp,
        startup_timeout: Duration::from_secs(30),
    };
    let service = services::start(&spec, logs)?;
    let uri = format!("mongodb://127.0.0.1:{}/", service.port);
    Ok((service, uri, None))
}

fn start_secantus(tools: &Path, logs: &Path) -> Result<(Service, String, Option<PathBuf>), String> {
    let venv = tools.join("secantusdb-venv");
    install(&venv, SECANTUS_REQUIREMENT, SECANTUS_MARKER, "secantusd-py")?;
    let launcher = crate::workspace_root().join("tests/peers/secantusdb.py");
    // One directory per run (the port is in its name), removed afterwards.
    let storage = tools.join("secantusdb-data");
    let spec = ServiceSpec {
        name: "secantusdb",
        program: venv.join("bin").join("python"),
        args: vec![
            launcher.display().to_string(),
            "--port".into(),
            "{port}".into(),
            "--storage".into(),
            format!("{}/{{port}}", storage.display()),
        ],
        env: vec![
            ("FLOW_TEST_SECANTUS_USER".into(), SECANTUS_USER.into()),
            (
                "FLOW_TEST_SECANTUS_PASSWORD".into(),
                SECANTUS_PASSWORD.into(),
            ),
        ],
        ready: Ready::Tcp,
        // Two starts (provisioning the user, then with --auth).
        startup_timeout: Duration::from_secs(90),
    };
    let service = services::start(&spec, logs)?;
    let uri = format!(
        "mongodb://{SECANTUS_USER}:{SECANTUS_PASSWORD}@127.0.0.1:{}/?authSource=admin",
        service.port
    );
    let scratch = storage.join(service.port.to_string());
    Ok((service, uri, Some(scratch)))
}
