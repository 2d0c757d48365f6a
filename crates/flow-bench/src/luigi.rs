//! Running `bench/luigi_bench.py` for the comparison, with a time limit.

use crate::report::LuigiRun;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `python script MODE STEPS` and reads its JSON line. A run past
/// `timeout` is killed and reported as timed out; a failure is reported, not
/// raised, so the rest of the table still prints.
pub fn run(python: &Path, script: &Path, mode: &str, steps: usize, timeout: Duration) -> LuigiRun {
    let shape = format!("{mode}-{steps}");
    let failed = |status: String| LuigiRun {
        shape: shape.clone(),
        steps,
        status,
        ..LuigiRun::default()
    };
    let mut child = match Command::new(python)
        .arg(script)
        .arg(mode)
        .arg(steps.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return failed(format!("failed: cannot start {}: {e}", python.display())),
    };
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return failed(format!("failed: {e}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        return failed(format!("timed out after {} s", timeout.as_secs()));
    };
    if !status.success() {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return failed(format!("failed: {status}: {last}"));
    }
    let Some(line) = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
    else {
        return failed("failed: no JSON line on stdout".into());
    };
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) => LuigiRun {
            shape: shape.clone(),
            steps,
            wall_ms: v["wall_ms"].as_f64(),
            import_ms: v["import_ms"].as_f64(),
            workers: v["workers"].as_u64(),
            target: v["target"].as_str().map(String::from),
            luigi_version: v["luigi_version"].as_str().map(String::from),
            status: "ok".into(),
        },
        Err(e) => failed(format!("failed: unreadable output '{line}': {e}")),
    }
}
