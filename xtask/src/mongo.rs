//! A MongoDB wire-protocol server for the MongoDB store's tests.
//!
//! MongoDB itself cannot be installed here, so `cargo xtask test` installs
//! the pinned PyPI package `nx-27017` into `<target>/tools/nx27017-venv`
//! (once, reused afterwards) and starts `nx-27017 --db memory` on a free
//! loopback port through [`services`] (stopped when the tests end), and
//! hands its URI to the tests as `FLOW_MONGO_URI`. With `FLOW_MONGO_URI`
//! already set, that server (e.g. a real MongoDB 6+) is used instead and
//! nothing is installed or started. Without either, the tests matching
//! [`TESTS`] are skipped, and xtask says so.

use crate::emulators::Peer;
use crate::services::{self, Ready, Service, ServiceSpec};
use std::env;
use std::path::Path;
use std::time::{Duration, Instant};

/// The nx-27017 release the tests run against.
pub const NX27017_REQUIREMENT: &str = "nx-27017==0.8.1";
const MARKER_FILE: &str = ".flow-nx27017-installed";

/// The name filter of the tests that need a MongoDB server.
pub const TESTS: &str = "_on_nx27017";

/// The MongoDB peer: its started server (stopped when dropped), if xtask
/// started one.
pub struct Mongo {
    pub peer: Peer,
    _service: Option<Service>,
}

/// `FLOW_MONGO_URI`, else nx-27017 installed and started now.
pub fn start(tools: &Path, logs: &Path) -> Mongo {
    let peer = |available: Result<(), String>, uri: Option<String>| Peer {
        name: "nx-27017",
        tests: TESTS,
        available,
        env: uri
            .map(|uri| vec![("FLOW_MONGO_URI".to_string(), uri)])
            .unwrap_or_default(),
    };
    if let Some(uri) = env::var("FLOW_MONGO_URI").ok().filter(|u| !u.is_empty()) {
        eprintln!("xtask: MongoDB tests use the server in FLOW_MONGO_URI");
        return Mongo {
            peer: peer(Ok(()), Some(uri)),
            _service: None,
        };
    }
    if env::var_os("FLOW_SKIP_EMULATORS").is_some_and(|v| !v.is_empty() && v != "0") {
        return Mongo {
            peer: peer(Err("FLOW_SKIP_EMULATORS is set".into()), None),
            _service: None,
        };
    }
    let venv = tools.join("nx27017-venv");
    let program = venv.join("bin").join("nx-27017");
    let started = Instant::now();
    let installed = crate::ensure_venv(&venv, NX27017_REQUIREMENT, MARKER_FILE, |v| {
        v.join("bin").join("nx-27017").is_file()
    });
    match installed {
        Ok(true) => eprintln!("xtask: reusing {NX27017_REQUIREMENT} in {}", venv.display()),
        Ok(false) => eprintln!(
            "xtask: installed {NX27017_REQUIREMENT} into {} in {:.0?}",
            venv.display(),
            started.elapsed()
        ),
        Err(why) => {
            eprintln!("xtask: warning: nx-27017 is not available: {why}");
            return Mongo {
                peer: peer(Err(why), None),
                _service: None,
            };
        }
    }
    let log_dir = logs.display().to_string();
    let spec = ServiceSpec {
        name: "nx-27017",
        program,
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
    match services::start(&spec, logs) {
        Ok(service) => {
            let uri = format!("mongodb://127.0.0.1:{}/", service.port);
            Mongo {
                peer: peer(Ok(()), Some(uri)),
                _service: Some(service),
            }
        }
        Err(why) => {
            eprintln!("xtask: warning: nx-27017 is not available: {why}");
            Mongo {
                peer: peer(Err(why), None),
                _service: None,
            }
        }
    }
}
