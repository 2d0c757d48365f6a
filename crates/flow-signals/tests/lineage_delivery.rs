//! How lineage events leave: from the exporters' own thread (not the
//! caller's runtime), several at once when steps run side by side, and in
//! the order consumers rely on (a step's end after its `START`, a `START`
//! after the ends that came before it). The receiver is a small HTTP/1.1
//! server on loopback that notes, for each event, which events were still
//! unanswered when it arrived.

use chrono::Utc;
use flow_core::lineage::LineageSpec;
use flow_core::{FlowKey, RunMode, StepState};
use flow_signals::{Exporters, LineageConfig, RunEnd, Signal, Signals};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One event as the receiver saw it arrive.
#[derive(Debug, Clone)]
struct Arrival {
    /// `EVENTTYPE JOB`, e.g. `START etl.a`.
    event: String,
    /// The events received and not yet answered when it arrived.
    unanswered: Vec<String>,
}

#[derive(Default)]
struct Seen {
    arrivals: Vec<Arrival>,
    unanswered: Vec<String>,
}

/// Answers 200 to every post; with `hold`, keeps each request unanswered
/// until another arrives or `hold` passed (so posts in flight together
/// show as such).
struct Receiver {
    url: String,
    seen: Arc<(Mutex<Seen>, Condvar)>,
}

impl Receiver {
    fn start(hold: Option<Duration>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<(Mutex<Seen>, Condvar)> = Arc::default();
        let shared = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = shared.clone();
                std::thread::spawn(move || serve(stream, &seen, hold));
            }
        });
        Receiver { url, seen }
    }

    /// Waits (up to 20 s) until `n` events arrived; returns them.
    fn wait_for(&self, n: usize) -> Vec<Arrival> {
        let (lock, arrived) = &*self.seen;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = lock.lock().unwrap();
        while seen.arrivals.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} of {n} events arrived",
                seen.arrivals.len()
            );
            seen = arrived.wait_timeout(seen, left).unwrap().0;
        }
        seen.arrivals.clone()
    }
}

/// Serves one keep-alive connection.
fn serve(stream: std::net::TcpStream, seen: &(Mutex<Seen>, Condvar), hold: Option<Duration>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let name = format!(
            "{} {}",
            event["eventType"].as_str().unwrap(),
            event["job"]["name"].as_str().unwrap()
        );
        let (lock, changed) = seen;
        let mut state = lock.lock().unwrap();
        let unanswered = state.unanswered.clone();
        state.arrivals.push(Arrival {
            event: name.clone(),
            unanswered,
        });
        state.unanswered.push(name.clone());
        let mine = state.arrivals.len();
        changed.notify_all();
        if let Some(hold) = hold {
            let until = Instant::now() + hold;
            while state.arrivals.len() == mine && Instant::now() < until {
                let left = until.saturating_duration_since(Instant::now());
                state = changed.wait_timeout(state, left).unwrap().0;
            }
        }
        state.unanswered.retain(|n| *n != name);
        drop(state);
        writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
    }
}

/// The exporters with `[lineage]` pointed at `receiver`, on a new store.
fn signals(receiver: &Receiver, dir: &tempfile::TempDir) -> Signals {
    let spec: LineageSpec =
        serde_json::from_value(serde_json::json!({ "url": receiver.url, "retry_delay": "50ms" }))
            .unwrap();
    let store = flow_store_sqlite::SqliteStore::open(
        &dir.path().join("flow.db"),
        flow_store_sqlite::SqliteOptions::default(),
    )
    .unwrap();
    Signals::start(Exporters {
        lineage: Some(LineageConfig {
            spec,
            flows: Default::default(),
            store: Arc::new(store),
            log_directory: None,
        }),
        ..Exporters::default()
    })
}

/// A runtime with threads of its own that the test enters (so exporters
/// that wrongly need the caller's runtime would still run).
fn driven_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn key() -> FlowKey {
    FlowKey::new("etl", "2026112800".parse().unwrap())
}

fn started(step: &str) -> Signal {
    Signal::StepStarted {
        flow: key(),
        step: step.to_string(),
        since: Utc::now(),
    }
}

fn finished(step: &str) -> Signal {
    Signal::StepFinished {
        flow: key(),
        step: step.to_string(),
        state: StepState::Processed,
        elapsed: Duration::ZERO,
    }
}

fn run_started() -> Signal {
    Signal::RunStarted {
        flow: key(),
        mode: RunMode::Nominal,
    }
}

fn run_finished() -> Signal {
    Signal::RunFinished(Box::new(RunEnd {
        flow: key(),
        mode: RunMode::Nominal,
        started: true,
        lease_lost: false,
        report: None,
        error: None,
    }))
}

/// The caller's runtime (a run's only thread) is never driven here, yet
/// every event is delivered: the exporters run on their own thread.
#[test]
fn events_are_delivered_while_the_callers_runtime_is_busy() {
    let receiver = Receiver::start(None);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _inside = runtime.enter();
    let signals = signals(&receiver, &dir);
    let emitter = signals.emitter();
    for signal in [run_started(), started("a"), finished("a"), run_finished()] {
        emitter.emit(signal);
    }
    // This thread blocks (as a step busy on the run's thread would).
    let got = receiver.wait_for(2);
    let events: Vec<&str> = got.iter().map(|a| a.event.as_str()).collect();
    assert_eq!(events, ["START etl.a", "COMPLETE etl.a"]);
}

/// A chain's events, emitted at once, still arrive one after the other:
/// each only once the one before it was answered.
#[test]
fn a_step_waits_for_the_events_before_it() {
    let receiver = Receiver::start(Some(Duration::from_millis(200)));
    let runtime = driven_runtime();
    let _inside = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let signals = signals(&receiver, &dir);
    let emitter = signals.emitter();
    for signal in [
        run_started(),
        started("a"),
        finished("a"),
        started("b"),
        finished("b"),
        run_finished(),
    ] {
        emitter.emit(signal);
    }
    let got = receiver.wait_for(4);
    let events: Vec<&str> = got.iter().map(|a| a.event.as_str()).collect();
    assert_eq!(
        events,
        [
            "START etl.a",
            "COMPLETE etl.a",
            "START etl.b",
            "COMPLETE etl.b"
        ]
    );
    for arrival in &got {
        assert!(arrival.unanswered.is_empty(), "{got:?}");
    }
}

/// Steps running side by side post side by side: the second `START`
/// arrives while the first is unanswered.
#[test]
fn steps_running_side_by_side_post_at_once() {
    let receiver = Receiver::start(Some(Duration::from_secs(5)));
    let runtime = driven_runtime();
    let _inside = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let signals = signals(&receiver, &dir);
    let emitter = signals.emitter();
    for signal in [run_started(), started("x"), started("y")] {
        emitter.emit(signal);
    }
    let got = receiver.wait_for(2);
    assert_eq!(got[1].unanswered, [got[0].event.clone()], "{got:?}");
    emitter.emit(run_finished());
}

/// A receiver that takes connections and never answers: the wait at exit
/// for a chain's events ends after one delivery's longest time (not one
/// per event), and the run's line counts what was given up.
#[test]
fn the_wait_at_exit_for_a_silent_receiver_is_bounded_and_counted() {
    silent_receiver_counts(None);
}

/// The same with `batch`: each event of the batches given up counts once.
#[test]
fn the_wait_at_exit_for_a_silent_batch_receiver_is_bounded_and_counted() {
    silent_receiver_counts(Some(3));
}

fn silent_receiver_counts(batch: Option<u32>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        // Held open, never read or answered.
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etl")).unwrap();
    let spec: LineageSpec = serde_json::from_value(serde_json::json!({
        "url": url, "timeout": "200ms", "retries": 3, "retry_delay": "50ms", "batch": batch
    }))
    .unwrap();
    let store = flow_store_sqlite::SqliteStore::open(
        &dir.path().join("flow.db"),
        flow_store_sqlite::SqliteOptions::default(),
    )
    .unwrap();
    let signals = Signals::start(Exporters {
        lineage: Some(LineageConfig {
            spec,
            flows: Default::default(),
            store: Arc::new(store),
            log_directory: Some(dir.path().to_path_buf()),
        }),
        ..Exporters::default()
    });
    let runtime = driven_runtime();
    let emitter = signals.emitter();
    let steps = ["a", "b", "c", "d", "e"];
    emitter.emit(run_started());
    for step in steps {
        emitter.emit(started(step));
        emitter.emit(finished(step));
    }
    emitter.emit(run_finished());
    runtime.block_on(signals.finish());
    let log = std::fs::read_to_string(dir.path().join("etl/etl.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("lineage: "))
        .unwrap_or_else(|| panic!("no lineage line in {log}"));
    let counts: Vec<u32> = line
        .split("lineage: ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(
        line.contains("abandoned unsent when the wait at exit ended") && counts.len() == 3,
        "{line}"
    );
    assert_eq!(counts[0], 0, "{line}");
    assert!(counts[2] > 0, "{line}");
    assert_eq!(counts.iter().sum::<u32>(), 2 * steps.len() as u32, "{line}");
}
