//! The poller against a scripted in-memory backend, on tokio's paused clock
//! (and one test on the manual clock): every figure is a count of requests
//! at known instants, never a measured time.

use async_trait::async_trait;
use flow_cloud::{
    Clock, JobSource, ManualClock, Outcome, Phase, PollConfig, PollError, Poller, StateTable,
    TokioClock,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const STATES: StateTable = StateTable {
    running: &["PENDING", "RUNNING"],
    succeeded: &["COMPLETED"],
    failed: &["FAILED"],
    cancelled: &["CANCELLED"],
};

/// A backend whose jobs end at scripted instants.
#[derive(Debug)]
struct Script {
    clock: Arc<dyn Clock>,
    /// Job id -> (when it ends, its final state).
    ends: Mutex<HashMap<String, (Duration, &'static str)>>,
    /// Every request: when, and which ids it asked about.
    asked: Mutex<Vec<(Duration, Vec<String>)>>,
    /// Requests that fail before the backend answers again.
    failures_left: Mutex<u32>,
}

impl Script {
    fn new(clock: Arc<dyn Clock>) -> Self {
        Script {
            clock,
            ends: Mutex::new(HashMap::new()),
            asked: Mutex::new(Vec::new()),
            failures_left: Mutex::new(0),
        }
    }

    fn job(&self, id: &str, ends_at: u64, state: &'static str) {
        self.ends
            .lock()
            .unwrap()
            .insert(id.to_string(), (secs(ends_at), state));
    }

    fn asked(&self) -> Vec<(Duration, Vec<String>)> {
        self.asked.lock().unwrap().clone()
    }
}

#[async_trait]
impl JobSource for Script {
    type Id = String;
    type Status = String;
    type Error = String;

    async fn statuses(&self, ids: &[String]) -> Result<Vec<(String, String)>, String> {
        let now = self.clock.now();
        let mut sorted = ids.to_vec();
        sorted.sort();
        self.asked.lock().unwrap().push((now, sorted));
        {
            let mut left = self.failures_left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err("HTTP 500 from the scripted backend".into());
            }
        }
        let ends = self.ends.lock().unwrap();
        Ok(ids
            .iter()
            .filter_map(|id| {
                let (at, state) = ends.get(id)?;
                let state = if now >= *at { *state } else { "RUNNING" };
                Some((id.clone(), state.to_string()))
            })
            .collect())
    }

    fn phase(&self, status: &String) -> Phase {
        STATES.phase(status).unwrap_or(Phase::Running)
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config() -> PollConfig {
    PollConfig {
        floor: secs(1),
        backoff_after: secs(10),
        factor: 2.0,
        cap: secs(8),
        timeout: Some(secs(3600)),
        max_failed_requests: 3,
    }
}

fn poller(config: PollConfig) -> (Poller<Script>, Arc<dyn Clock>) {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let poller = Poller::new(Script::new(clock.clone()), config, clock.clone());
    (poller, clock)
}

#[tokio::test(start_paused = true)]
async fn one_request_per_tick_covers_every_running_job() {
    let (poller, clock) = poller(config());
    poller.source().job("a", 3, "COMPLETED");
    poller.source().job("b", 5, "FAILED");
    poller.source().job("c", 7, "CANCELLED");
    let wait = |id: &str| {
        let poller = poller.clone();
        let clock = clock.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let finished = poller.wait(id).await.unwrap();
            (finished.outcome, finished.status, clock.now())
        })
    };
    let (a, b, c) = (wait("a"), wait("b"), wait("c"));
    assert_eq!(
        a.await.unwrap(),
        (Outcome::Succeeded, "COMPLETED".to_string(), secs(3))
    );
    assert_eq!(
        b.await.unwrap(),
        (Outcome::Failed, "FAILED".to_string(), secs(5))
    );
    assert_eq!(
        c.await.unwrap(),
        (Outcome::Cancelled, "CANCELLED".to_string(), secs(7))
    );

    // Seven ticks a second apart, each ONE request naming every job still
    // running: 7 requests, not 3 + 5 + 7 = 15.
    assert_eq!(poller.requests(), 7);
    let asked = poller.source().asked();
    let times: Vec<u64> = asked.iter().map(|(t, _)| t.as_secs()).collect();
    assert_eq!(times, [1, 2, 3, 4, 5, 6, 7]);
    let sizes: Vec<usize> = asked.iter().map(|(_, ids)| ids.len()).collect();
    assert_eq!(sizes, [3, 3, 3, 2, 2, 1, 1]);
    assert_eq!(poller.watched(), 0);
}

#[tokio::test(start_paused = true)]
async fn long_jobs_back_off_up_to_the_cap_and_a_new_job_brings_the_floor_back() {
    let (poller, clock) = poller(config());
    poller.source().job("long", 100, "COMPLETED");
    poller.source().job("short", 42, "COMPLETED");
    let long = {
        let poller = poller.clone();
        tokio::spawn(async move { poller.wait("long".into()).await })
    };
    // Let the long job back off, then add a short one at t = 40.
    tokio::time::sleep(secs(40)).await;
    assert_eq!(clock.now(), secs(40));
    let short = poller.wait("short".into()).await.unwrap();
    assert_eq!(short.outcome, Outcome::Succeeded);
    let finished = long.await.unwrap().unwrap();
    assert_eq!(finished.outcome, Outcome::Succeeded);

    let times: Vec<u64> = poller
        .source()
        .asked()
        .iter()
        .map(|(t, _)| t.as_secs())
        .collect();
    // 1 s apart for the first 10 s; then 2, 4, 8 (the cap), 8; at 40 the
    // short job arrives: the next tick is a floor after the last one (32 + 1
    // is past, so at once), then 1 s ticks until the short job ends at 42;
    // then the long job's 8 s interval again, until it ends at 100.
    let expected: Vec<u64> = (1..=10)
        .chain([12, 16, 24, 32, 40, 41, 42, 50, 58, 66, 74, 82, 90, 98, 106])
        .collect();
    assert_eq!(times, expected);
    assert_eq!(poller.requests(), expected.len() as u64);
    // The long job ended at 100 and was noticed within the cap.
    assert!(106 - 100 <= config().cap.as_secs());
}

#[tokio::test(start_paused = true)]
async fn a_wait_times_out() {
    let (poller, clock) = poller(PollConfig {
        timeout: Some(secs(30)),
        ..config()
    });
    poller.source().job("stuck", 10_000, "COMPLETED");
    let err = poller.wait("stuck".into()).await.unwrap_err();
    assert_eq!(
        err,
        PollError::Timeout {
            job: "stuck".into(),
            waited: secs(30)
        }
    );
    assert_eq!(clock.now(), secs(30));
    // Ticks at 1..=10, then backing off: 12, 16, 24; the deadline at 30
    // comes before the tick at 32.
    assert_eq!(poller.requests(), 13);
    assert_eq!(poller.watched(), 0);
    // An explicit timeout overrides the configured one.
    let err = poller
        .wait_for("stuck".into(), Some(secs(3)))
        .await
        .unwrap_err();
    assert!(matches!(err, PollError::Timeout { waited, .. } if waited == secs(3)));
}

#[tokio::test(start_paused = true)]
async fn failed_requests_are_tolerated_up_to_the_limit() {
    let (poller, _clock) = poller(config());
    poller.source().job("a", 1, "COMPLETED");
    *poller.source().failures_left.lock().unwrap() = 2;
    let finished = poller.wait("a".into()).await.unwrap();
    assert_eq!(finished.outcome, Outcome::Succeeded);
    assert_eq!(poller.requests(), 3, "two failures, then the answer");

    *poller.source().failures_left.lock().unwrap() = 100;
    let err = poller.wait("a".into()).await.unwrap_err();
    assert!(
        matches!(&err, PollError::Backend { failures: 3, message, .. } if message.contains("HTTP 500")),
        "{err:?}"
    );
    assert_eq!(poller.requests(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_job_the_backend_never_mentions_fails_after_the_limit() {
    let (poller, _clock) = poller(config());
    let err = poller.wait("ghost".into()).await.unwrap_err();
    assert_eq!(
        err,
        PollError::Missing {
            job: "ghost".into(),
            answers: 3
        }
    );
    assert_eq!(poller.requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_wait_stops_polling_its_job() {
    let (poller, clock) = poller(config());
    poller.source().job("a", 1000, "COMPLETED");
    let waited = tokio::time::timeout(Duration::from_millis(4500), poller.wait("a".into())).await;
    assert!(waited.is_err(), "still running at 4.5 s");
    assert_eq!(poller.requests(), 4, "ticks at 1, 2, 3, 4");
    tokio::time::sleep(secs(60)).await;
    assert_eq!(clock.now(), Duration::from_millis(64_500));
    assert_eq!(poller.requests(), 4, "nobody waits: no more requests");
    assert_eq!(poller.watched(), 0);
}

/// The manual clock: a test moves time and, before counting, waits until the
/// poller has gone back to sleep (its request is done).
#[tokio::test]
async fn a_manual_clock_drives_the_ticks() {
    let manual = ManualClock::new();
    let clock: Arc<dyn Clock> = Arc::new(manual.clone());
    let poller = Poller::new(Script::new(clock.clone()), config(), clock);
    poller.source().job("a", 2, "COMPLETED");
    poller.source().job("b", 3, "FAILED");
    let a = tokio::spawn({
        let poller = poller.clone();
        async move { poller.wait("a".into()).await }
    });
    let b = tokio::spawn({
        let poller = poller.clone();
        async move { poller.wait("b".into()).await }
    });
    while poller.watched() < 2 {
        tokio::task::yield_now().await;
    }
    manual.wait_for_sleepers(1).await;
    assert_eq!(poller.requests(), 0);
    for expected in 1..=3 {
        manual.advance(secs(1));
        if expected < 3 {
            // The request is done once the poller sleeps again.
            while poller.requests() < expected || manual.sleeping() == 0 {
                tokio::task::yield_now().await;
            }
        }
    }
    assert_eq!(a.await.unwrap().unwrap().outcome, Outcome::Succeeded);
    assert_eq!(b.await.unwrap().unwrap().outcome, Outcome::Failed);
    assert_eq!(poller.requests(), 3);
}

/// A backend whose cluster ends at a scripted instant while its jobs run on.
struct DyingCluster {
    jobs: Script,
    ends_at: Duration,
    cluster_asks: Mutex<Vec<Duration>>,
}

#[async_trait]
impl JobSource for DyingCluster {
    type Id = String;
    type Status = String;
    type Error = String;

    async fn statuses(&self, ids: &[String]) -> Result<Vec<(String, String)>, String> {
        self.jobs.statuses(ids).await
    }

    fn phase(&self, status: &String) -> Phase {
        self.jobs.phase(status)
    }

    fn checks_cluster(&self) -> bool {
        true
    }

    async fn cluster_ended(&self) -> Result<Option<String>, String> {
        let now = self.jobs.clock.now();
        self.cluster_asks.lock().unwrap().push(now);
        Ok((now >= self.ends_at)
            .then(|| "TERMINATED_WITH_ERRORS: BOOTSTRAP_FAILURE on the master".to_string()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_whose_cluster_ends_fails_within_ten_ticks_at_one_request_per_tick() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let source = DyingCluster {
        jobs: Script::new(clock.clone()),
        ends_at: secs(12),
        cluster_asks: Mutex::new(Vec::new()),
    };
    source.jobs.job("a", 10_000, "COMPLETED");
    let steady = PollConfig {
        backoff_after: secs(3600),
        ..config()
    };
    let poller = Poller::new(source, steady, clock.clone());
    let started = clock.now();
    let outcome = poller.wait("a".to_string()).await;
    match outcome {
        Err(PollError::ClusterEnded { job, reason }) => {
            assert_eq!(job, "a");
            assert!(reason.contains("BOOTSTRAP_FAILURE"), "{reason}");
        }
        other => panic!("expected ClusterEnded, got {other:?}"),
    }
    // Ticks 1 s apart; the 10th and 20th ask about the cluster (the 20th,
    // at 20 s, sees it ended at 12 s); every tick is one request.
    assert_eq!(
        *poller.source().cluster_asks.lock().unwrap(),
        [secs(10), secs(20)]
    );
    assert_eq!(clock.now() - started, secs(20));
    assert_eq!(poller.requests(), 20);
    assert_eq!(poller.source().jobs.asked().len(), 18);
}

/// The cluster check never makes a job's end noticed later than the cap,
/// nor the requests more than one per floor on average: with the default
/// settings (1 s floor, 3 s cap after a minute), jobs of many lengths, each
/// ending at another phase of the ticks and of the checks.
#[tokio::test(start_paused = true)]
async fn the_cluster_check_keeps_every_notice_within_the_cap_at_one_request_per_floor() {
    let config = PollConfig::default();
    let mut delays = Vec::new();
    for length in (3..=240).step_by(7) {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
        let source = DyingCluster {
            jobs: Script::new(clock.clone()),
            ends_at: secs(1_000_000),
            cluster_asks: Mutex::new(Vec::new()),
        };
        let started = clock.now();
        source
            .jobs
            .job("a", (started + secs(length)).as_secs(), "COMPLETED");
        let poller = Poller::new(source, config, clock.clone());
        let finished = poller.wait("a".to_string()).await.unwrap();
        assert_eq!(finished.outcome, Outcome::Succeeded);
        let waited = clock.now() - started;
        let delay = waited - secs(length);
        assert!(
            delay <= config.cap,
            "a {length} s job noticed {delay:?} late"
        );
        let asks = poller.source().cluster_asks.lock().unwrap().len() as u64;
        let jobs = poller.source().jobs.asked().len() as u64;
        assert_eq!(poller.requests(), asks + jobs);
        assert!(
            poller.requests() <= waited.as_secs(),
            "{} requests in {waited:?}",
            poller.requests()
        );
        // The cluster is asked about at least every twenty ticks.
        assert!(
            asks >= jobs / 20,
            "{asks} cluster checks for {jobs} job requests"
        );
        delays.push(delay);
    }
    delays.sort();
    assert!(delays[delays.len() / 2] <= secs(2), "{delays:?}");
}
