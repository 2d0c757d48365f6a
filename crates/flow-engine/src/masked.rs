//! The store as the engine writes to it: every free-text field of every
//! record (a step's or a run's error, a rollback's error, a cluster's
//! message, a log line) goes through [`flow_core::mask`] on its way in.
//!
//! One wrapper around the store the engine is given, so no call site has to
//! remember that a failure's text can quote a rendered argument, and with
//! it a secret value. Reads pass through untouched.

use async_trait::async_trait;
use flow_core::record::{ClusterRecord, LogLine, RecordId, RunRecord};
use flow_core::{FlowRecord, FlowStore, Lease, StepRecord, StoreError, StoreLayer};
use std::borrow::Cow;
use std::sync::Arc;

/// Masks what is written, delegates everything to the store it wraps.
pub(crate) struct MaskedStore(pub Arc<dyn FlowStore>);

/// `text` masked, if it holds a secret value.
fn masked(text: &mut Option<String>) -> bool {
    match text.as_deref().map(flow_core::mask) {
        Some(Cow::Owned(m)) => {
            *text = Some(m);
            true
        }
        _ => false,
    }
}

/// `step` with its error texts masked; borrowed when there was nothing to
/// mask (the usual case: no copy per write).
fn step(step: &StepRecord) -> Cow<'_, StepRecord> {
    let needs = |t: &Option<String>| t.as_deref().is_some_and(|t| flow_core::mask(t) != t);
    if !needs(&step.error) && !step.rollbacks.iter().any(|r| needs(&r.error)) {
        return Cow::Borrowed(step);
    }
    let mut copy = step.clone();
    masked(&mut copy.error);
    for r in &mut copy.rollbacks {
        masked(&mut r.error);
    }
    Cow::Owned(copy)
}

fn steps(steps: &[StepRecord]) -> Vec<StepRecord> {
    steps.iter().map(|s| step(s).into_owned()).collect()
}

fn run(run: &RunRecord) -> Cow<'_, RunRecord> {
    let mut copy = run.clone();
    if masked(&mut copy.error) {
        Cow::Owned(copy)
    } else {
        Cow::Borrowed(run)
    }
}

#[async_trait]
impl StoreLayer for MaskedStore {
    fn inner(&self) -> &dyn FlowStore {
        &*self.0
    }

    async fn begin_run(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        purge_steps: bool,
        steps_: &[StepRecord],
        run_: &RunRecord,
    ) -> Result<(FlowRecord, RunRecord), StoreError> {
        self.0
            .begin_run(lease, flow, purge_steps, &steps(steps_), &run(run_))
            .await
    }

    async fn save_step(&self, lease: &Lease, record: &StepRecord) -> Result<RecordId, StoreError> {
        self.0.save_step(lease, &step(record)).await
    }

    async fn save_flow_and_steps(
        &self,
        lease: &Lease,
        flow: &FlowRecord,
        steps_: &[StepRecord],
    ) -> Result<FlowRecord, StoreError> {
        self.0
            .save_flow_and_steps(lease, flow, &steps(steps_))
            .await
    }

    async fn finish_run(&self, lease: &Lease, run_: &RunRecord) -> Result<(), StoreError> {
        self.0.finish_run(lease, &run(run_)).await
    }

    async fn save_cluster(
        &self,
        lease: &Lease,
        cluster: &ClusterRecord,
    ) -> Result<RecordId, StoreError> {
        let mut copy = cluster.clone();
        if masked(&mut copy.message) {
            self.0.save_cluster(lease, &copy).await
        } else {
            self.0.save_cluster(lease, cluster).await
        }
    }

    async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        let lines: Vec<LogLine> = lines
            .iter()
            .map(|l| LogLine {
                message: flow_core::mask(&l.message).into_owned(),
                ..l.clone()
            })
            .collect();
        self.0.append_logs(&lines).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use flow_core::state::{FlowState, RunMode, StepState};
    use flow_core::{
        ClusterHandle, ClusterState, ClusterUsage, FlowKey, LogLevel, RollbackCause,
        RollbackRecord, Secret,
    };
    use flow_store_sqlite::{SqliteOptions, SqliteStore};
    use std::sync::Mutex;

    const SECRET: &str = "masked-rs-s3cret-value";

    /// What reaches the store behind the masked one: each write's method
    /// and arguments (`Debug`), refused after being written down.
    struct Recorder {
        store: Arc<dyn FlowStore>,
        writes: Mutex<Vec<(&'static str, String)>>,
    }

    impl Recorder {
        fn write<T>(&self, method: &'static str, what: String) -> Result<T, StoreError> {
            self.writes.lock().unwrap().push((method, what));
            Err(StoreError::Operation {
                operation: method,
                key: "recorder".into(),
                message: "written down only".into(),
            })
        }
    }

    #[async_trait]
    impl StoreLayer for Recorder {
        fn inner(&self) -> &dyn FlowStore {
            &*self.store
        }
        async fn begin_run(
            &self,
            _: &Lease,
            flow: &FlowRecord,
            _: bool,
            steps: &[StepRecord],
            run: &RunRecord,
        ) -> Result<(FlowRecord, RunRecord), StoreError> {
            self.write("begin_run", format!("{flow:?} {steps:?} {run:?}"))
        }
        async fn save_step(&self, _: &Lease, step: &StepRecord) -> Result<RecordId, StoreError> {
            self.write("save_step", format!("{step:?}"))
        }
        async fn save_flow_and_steps(
            &self,
            _: &Lease,
            flow: &FlowRecord,
            steps: &[StepRecord],
        ) -> Result<FlowRecord, StoreError> {
            self.write("save_flow_and_steps", format!("{flow:?} {steps:?}"))
        }
        async fn finish_run(&self, _: &Lease, run: &RunRecord) -> Result<(), StoreError> {
            self.write("finish_run", format!("{run:?}"))
        }
        async fn save_cluster(
            &self,
            _: &Lease,
            cluster: &ClusterRecord,
        ) -> Result<RecordId, StoreError> {
            self.write("save_cluster", format!("{cluster:?}"))
        }
        async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
            self.write("append_logs", format!("{lines:?}"))
        }
    }

    /// The secret appears in no write, and each write reached the store
    /// once, with `***` where the secret was (and `expect` too).
    fn check(recorder: &Recorder, method: &str, expect: &[&str]) {
        let writes = std::mem::take(&mut *recorder.writes.lock().unwrap());
        assert_eq!(writes.len(), 1, "{method}: {writes:?}");
        let (called, text) = &writes[0];
        assert_eq!(called, &method);
        assert!(!text.contains(SECRET), "{method} wrote the secret: {text}");
        assert!(text.contains("***"), "{method}: {text}");
        for part in expect {
            assert!(text.contains(part), "{method}: {part} missing from {text}");
        }
    }

    /// Every free-text field the engine writes (a step's error, a
    /// rollback's error, a run's error, a cluster's message, a log line)
    /// reaches the store with the secret masked, whichever of them holds
    /// it; the rest of each record, and records without a secret, are
    /// written as given.
    #[tokio::test]
    async fn a_secret_in_any_written_text_reaches_the_store_masked() {
        let _secret = Secret::new(SECRET);
        let dir = tempfile::tempdir().unwrap();
        let sqlite =
            SqliteStore::open(&dir.path().join("flow.db"), SqliteOptions::default()).unwrap();
        let recorder = Arc::new(Recorder {
            store: Arc::new(sqlite),
            writes: Mutex::default(),
        });
        // As the engine holds it.
        let masked: Arc<dyn FlowStore> = Arc::new(MaskedStore(recorder.clone()));
        let now = Utc::now();
        let tp = "2026112800".parse().unwrap();
        let key = FlowKey::new("masking", tp);
        let lease = Lease {
            key: key.clone(),
            owner: "me".into(),
            token: 1,
        };
        let flow = FlowRecord {
            id: None,
            flow_name: "masking".into(),
            timeperiod: tp,
            start_timeperiod: tp,
            end_timeperiod: tp,
            state: FlowState::InProgress,
            run_mode: RunMode::Nominal,
            created_at: now,
            started_at: Some(now),
            finished_at: None,
            graph_hash: None,
            sla_missed_at: None,
            trace_parent: None,
        };
        let mut failed = StepRecord::embryo("masking", "failed", tp, None, now);
        failed.state = StepState::Invalid;
        failed.error = Some(format!("exit 1: echo {SECRET}"));
        // Only its rollback's error holds the secret.
        let mut rolled_back = StepRecord::embryo("masking", "rolled-back", tp, None, now);
        rolled_back.error = Some("exit 2".into());
        rolled_back.rollbacks = vec![RollbackRecord {
            action: "cleanup".into(),
            cause: RollbackCause::StepFailed,
            at: now,
            error: Some(format!("rm /data/{SECRET}: refused")),
        }];
        let plain = StepRecord::embryo("masking", "plain-step", tp, None, now);
        let mut run = RunRecord {
            id: None,
            flow_name: "masking".into(),
            timeperiod: tp,
            mode: RunMode::Nominal,
            target: None,
            owner: "me".into(),
            token: 1,
            host: "host".into(),
            user: "user".into(),
            started_at: now,
            finished_at: None,
            outcome: None,
            steps: Vec::new(),
            error: Some(format!("the run failed: {SECRET}")),
        };

        let _ = masked.save_step(&lease, &failed).await;
        check(&recorder, "save_step", &["exit 1: echo ***"]);
        let _ = masked.save_step(&lease, &rolled_back).await;
        check(&recorder, "save_step", &["rm /data/***: refused", "exit 2"]);
        let _ = masked
            .save_flow_and_steps(
                &lease,
                &flow,
                &[failed.clone(), rolled_back.clone(), plain.clone()],
            )
            .await;
        check(
            &recorder,
            "save_flow_and_steps",
            &[
                "\"failed\"",
                "\"rolled-back\"",
                "\"plain-step\"",
                "/data/***",
            ],
        );
        let _ = masked
            .begin_run(&lease, &flow, true, &[failed.clone(), plain.clone()], &run)
            .await;
        check(
            &recorder,
            "begin_run",
            &["the run failed: ***", "\"plain-step\"", "exit 1: echo ***"],
        );
        run.finished_at = Some(now);
        let _ = masked.finish_run(&lease, &run).await;
        check(&recorder, "finish_run", &["the run failed: ***"]);
        let cluster = ClusterRecord {
            id: None,
            flow_name: "masking".into(),
            timeperiod: tp,
            run: RecordId::new("1"),
            handle: ClusterHandle {
                kind: "local".into(),
                name: "local-0".into(),
                backend_id: "local-0".into(),
                reused: false,
                details: Default::default(),
            },
            state: ClusterState::LaunchFailed,
            launched_at: now,
            updated_at: now,
            message: Some(format!("login {SECRET} refused")),
            usage: ClusterUsage::default(),
        };
        let _ = masked.save_cluster(&lease, &cluster).await;
        check(&recorder, "save_cluster", &["login *** refused"]);
        let line = LogLine {
            flow_name: "masking".into(),
            timeperiod: tp,
            run: RecordId::new("1"),
            step: Some("failed".into()),
            logger: "failed.shell".into(),
            level: LogLevel::Info,
            at: now,
            message: format!("said {SECRET}"),
        };
        let _ = masked.append_logs(&[line]).await;
        check(&recorder, "append_logs", &["said ***", "failed.shell"]);

        // Without a secret, records are written as they are.
        let _ = masked.save_step(&lease, &plain).await;
        let writes = std::mem::take(&mut *recorder.writes.lock().unwrap());
        assert_eq!(writes, [("save_step", format!("{plain:?}"))]);
    }
}
