//! The contract fakes as processes of their own (`contract-fakes API ...`,
//! so a fake outlives a killed engine), and the std-only HTTP request the
//! end-to-end tests read and steer them (and the emulators) with.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The fakes binary xtask built from this tree. No fallback on a binary
/// found in `target/`: it could be left there by an older tree.
pub fn fake_binary() -> PathBuf {
    let path = std::env::var_os("FLOW_TEST_CONTRACT_FAKES").map(PathBuf::from).unwrap_or_else(|| {
        panic!("FLOW_TEST_CONTRACT_FAKES is not set: run through `cargo xtask test`, which builds the contract fakes from this tree")
    });
    assert!(
        path.is_file(),
        "FLOW_TEST_CONTRACT_FAKES names no file: {}",
        path.display()
    );
    path
}

/// One HTTP/1.1 request (JSON body) with std only, the tests having no
/// HTTP client: the status and the body.
pub fn http(method: &str, url: &str, body: &str) -> (u16, String) {
    http_with(method, url, "", body)
}

/// [`http`] with more header lines (each ending in `\r\n`), e.g. a
/// gateway's `Authorization`.
pub fn http_with(method: &str, url: &str, headers: &str, body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A contract fake running as its own process, stopped (stdin closed, then
/// killed) when dropped.
pub struct FakeProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`, as the fake said it listens.
    pub url: String,
}

impl FakeProcess {
    /// `contract-fakes API`, to add the API's flags to.
    pub fn command(api: &str) -> Command {
        let mut command = Command::new(fake_binary());
        command.arg(api);
        command
    }

    /// Starts `command` and waits for its `listening on URL` line.
    pub fn start(mut command: Command) -> FakeProcess {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let line = super::first_stdout_line(&mut child);
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the fake said {line:?}"))
            .to_string();
        FakeProcess { child, url }
    }

    /// `GET /fake/WHAT`, parsed.
    pub fn get(&self, what: &str) -> serde_json::Value {
        let (status, body) = http("GET", &format!("{}/fake/{what}", self.url), "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `POST /fake/WHAT`, which must succeed.
    pub fn post(&self, what: &str) {
        let (status, body) = http("POST", &format!("{}/fake/{what}", self.url), "");
        assert_eq!(status, 200, "{body}");
    }

    /// Requests of one API method so far.
    pub fn count(&self, method: &str) -> u64 {
        self.get("requests")["methods"][method]
            .as_u64()
            .unwrap_or(0)
    }
}

impl Drop for FakeProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
