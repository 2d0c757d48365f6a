//! Servers that tests talk to (emulators, wire-compatible servers): start
//! one on a free loopback port, wait until it answers, stop it at the end.
//!
//! [`start`] takes a [`ServiceSpec`] (program, arguments with `{port}`, how
//! to tell it is ready) and returns a [`Service`] whose `Drop` kills the
//! process and waits for it, so a service never outlives `cargo xtask test`,
//! whether the tests pass, fail or xtask returns early. Output goes to
//! `<log_dir>/<name>.log`; its last lines are shown when a start fails.
//! Used for moto and fake-gcs-server; the MongoDB-compatible server and
//! Azurite fit the same spec.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How to tell that a started service is ready.
#[derive(Debug, Clone)]
pub enum Ready {
    /// An HTTP GET of this path gets any HTTP answer.
    Http(&'static str),
    /// A TCP connection is accepted (for non-HTTP protocols such as the
    /// MongoDB wire protocol: nx-27017).
    Tcp,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// A short name for messages and the log file (`moto`).
    pub name: &'static str,
    pub program: PathBuf,
    /// Arguments; `{port}` is replaced by the chosen port.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub ready: Ready,
    /// How long it may take to answer after it was started.
    pub startup_timeout: Duration,
}

/// A running service; killed when dropped.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    child: Child,
}

impl Service {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        eprintln!("xtask: stopped {} (port {})", self.name, self.port);
    }
}

/// A free port on 127.0.0.1, chosen by the kernel.
pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot bind a loopback port: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot read the bound port: {e}"))
}

/// Starts `spec` on a free port and waits until it answers. A port taken
/// between choosing and binding makes the service exit; that is retried on
/// another port (three tries).
pub fn start(spec: &ServiceSpec, log_dir: &Path) -> Result<Service, String> {
    fs::create_dir_all(log_dir).map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
    let log_path = log_dir.join(format!("{}.log", spec.name));
    let mut last_error = String::new();
    for _ in 0..3 {
        let port = free_port()?;
        match start_on(spec, port, &log_path) {
            Ok(service) => {
                eprintln!(
                    "xtask: started {} on {} (log {})",
                    spec.name,
                    service.url(),
                    log_path.display()
                );
                return Ok(service);
            }
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

fn start_on(spec: &ServiceSpec, port: u16, log_path: &Path) -> Result<Service, String> {
    let log =
        File::create(log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let err_log = log
        .try_clone()
        .map_err(|e| format!("cannot share {}: {e}", log_path.display()))?;
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| a.replace("{port}", &port.to_string()))
        .collect();
    let child = Command::new(&spec.program)
        .args(&args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {} ({}): {e}",
                spec.name,
                spec.program.display()
            )
        })?;
    // From here on, Drop stops it whatever happens.
    let mut service = Service {
        name: spec.name,
        port,
        child,
    };
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = service.child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before answering on port {port}; its log ends with:\n{}",
                spec.name,
                last_lines(log_path, 15)
            ));
        }
        if answers(port, &spec.ready) {
            return Ok(service);
        }
        if started.elapsed() > spec.startup_timeout {
            return Err(format!(
                "{} did not answer on port {port} within {:?}; its log ends with:\n{}",
                spec.name,
                spec.startup_timeout,
                last_lines(log_path, 15)
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the service on `port` answers as `ready` says.
fn answers(port: u16, ready: &Ready) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    match ready {
        Ready::Tcp => true,
        Ready::Http(path) => {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
            if stream.write_all(request.as_bytes()).is_err() {
                return false;
            }
            let mut head = [0u8; 5];
            stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
        }
    }
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real server (python's http.server) started, probed and stopped.
    #[test]
    fn a_service_starts_on_a_free_port_answers_and_stops() {
        let dir = std::env::temp_dir().join(format!("xtask-services-{}", std::process::id()));
        let spec = ServiceSpec {
            name: "http-server",
            program: "python3".into(),
            args: ["-m", "http.server", "--bind", "127.0.0.1", "{port}"]
                .map(String::from)
                .to_vec(),
            env: Vec::new(),
            ready: Ready::Http("/"),
            startup_timeout: Duration::from_secs(20),
        };
        let service = start(&spec, &dir).expect("python3 -m http.server starts");
        let port = service.port;
        assert!(answers(port, &Ready::Http("/")));
        drop(service);
        assert!(!answers(port, &Ready::Tcp), "stopped with its Service");

        let failing = ServiceSpec {
            name: "exits-at-once",
            program: "python3".into(),
            args: ["-c", "import sys; print('bad flag'); sys.exit(3)"]
                .map(String::from)
                .to_vec(),
            ..spec
        };
        let err = start(&failing, &dir).unwrap_err();
        assert!(err.contains("exited") && err.contains("bad flag"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
