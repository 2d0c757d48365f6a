//! Several processes race for one lease on one file: exactly one wins.
//!
//! The children are this test binary itself, running the ignored `racer`
//! with `RACER_DB` set. `racer` is a helper, not a test: ignored, so a normal
//! run reports it ignored instead of passing it, and registered as a helper
//! in `xtask/src/ignored.rs`, so `cargo xtask test` never includes it.

use chrono::Utc;
use flow_core::{FlowKey, FlowStore, LeaseOutcome};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROCESSES: usize = 8;
const ROUNDS: usize = 3;

fn key() -> FlowKey {
    FlowKey::new("process-race", "2026112800".parse().unwrap())
}

fn wait_for(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The child's side, run only by `lease_race_between_processes_has_one_winner`.
#[test]
#[ignore = "helper: the child process of lease_race_between_processes_has_one_winner"]
fn racer() {
    let (Some(db), Some(owner), Some(dir)) = (
        std::env::var_os("RACER_DB"),
        std::env::var("RACER_OWNER").ok(),
        std::env::var_os("RACER_DIR"),
    ) else {
        panic!("racer is the child side of lease_race_between_processes_has_one_winner; it needs RACER_DB, RACER_OWNER and RACER_DIR");
    };
    let dir = PathBuf::from(dir);
    let store = SqliteStore::open(Path::new(&db), SqliteOptions::default()).unwrap();
    std::fs::write(dir.join(format!("ready-{owner}")), b"").unwrap();
    wait_for(&dir.join("go"), "the start signal");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let outcome = runtime
        .block_on(store.acquire_lease(&key(), &owner, Utc::now(), Duration::from_secs(600)))
        .unwrap();
    let text = match outcome {
        LeaseOutcome::Acquired(_) => "acquired".to_string(),
        LeaseOutcome::HeldBy { owner, .. } => format!("held-by {owner}"),
    };
    // Write then rename, so the parent never reads a half-written file.
    let tmp = dir.join(format!("result-{owner}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(format!("result-{owner}"))).unwrap();
}

#[test]
fn lease_race_between_processes_has_one_winner() {
    if std::env::var_os("RACER_DB").is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("flow.db");
        // A fresh file every round: the children also race to create it.
        let owners: Vec<String> = (0..PROCESSES)
            .map(|i| format!("process-{round}-{i}"))
            .collect();
        let mut children = Vec::new();
        for owner in &owners {
            children.push(
                Command::new(&exe)
                    .args([
                        "racer",
                        "--exact",
                        "--ignored",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env("RACER_DB", &db)
                    .env("RACER_OWNER", owner)
                    .env("RACER_DIR", dir.path())
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
        }
        for owner in &owners {
            wait_for(&dir.path().join(format!("ready-{owner}")), "the racers");
        }
        std::fs::write(dir.path().join("go"), b"").unwrap();
        for mut child in children {
            assert!(child.wait().unwrap().success(), "a racer failed");
        }
        let results: Vec<(String, String)> = owners
            .iter()
            .map(|o| {
                let text = std::fs::read_to_string(dir.path().join(format!("result-{o}"))).unwrap();
                (o.clone(), text)
            })
            .collect();
        let winners: Vec<_> = results.iter().filter(|(_, r)| r == "acquired").collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let expected = format!("held-by {}", winners[0].0);
        assert!(
            results
                .iter()
                .all(|(_, r)| r == "acquired" || *r == expected),
            "{results:?}"
        );
    }
}
