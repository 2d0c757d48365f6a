//! The scheduler's Jobs: idempotent creation, reading back every field,
//! writes fenced by the claim's lease, one Job per qualifier, and the
//! listing's filters and order.

use super::*;
use crate::job::{JobKey, JobQuery, JobTally, TimetableJob};
use crate::state::JobState;
use crate::timeperiod::TimeQualifier;

fn job_key(name: &str, q: TimeQualifier, timeperiod: &str) -> JobKey {
    JobKey::new(format!("conformance-{name}"), q, tp(timeperiod))
}

/// A Job with every optional field filled.
fn full_job(key: &JobKey, t: i64) -> TimetableJob {
    let mut job = TimetableJob::embryo(key, at(t));
    job.state = JobState::InProgress;
    job.related_unit_of_work = Some(RecordId::new("5f1d7a2b9c3e4d5a6b7c8d9e"));
    job.number_of_failures = 2;
    job.run_mode = Some(RunMode::Recovery);
    job.not_before = Some(at(t + 10));
    job.depends_on_flows = vec!["conformance-upstream".into(), "another-upstream".into()];
    job.due_at = Some(at(t - 2));
    job.started_at = Some(at(t + 1));
    for i in 0..140 {
        job.log_event(at(t + i), &format!("event {i}: \"quoted\" and ünïcode"));
    }
    job
}

fn same_job(what: &str, got: &TimetableJob, want: &TimetableJob) {
    let mut want = want.clone();
    want.id = got.id.clone();
    assert_eq!(got, &want, "{what}: the Job does not read back as written");
    assert!(got.id.is_some(), "{what}: the stored Job has no id");
}

impl Suite {
    pub(super) async fn jobs(&self) {
        let store = self.store();
        let key = job_key("job", TimeQualifier::Hourly, "2026112807");
        assert_eq!(
            ok("get_job", &key, store.get_job(&key).await),
            None,
            "get_job of {key} before any write"
        );

        // Creating is idempotent: the second create returns the first Job.
        let first = ok(
            "create_job",
            &key,
            store.create_job(&TimetableJob::embryo(&key, at(0))).await,
        );
        same_job("create_job", &first, &TimetableJob::embryo(&key, at(0)));
        let mut other = TimetableJob::embryo(&key, at(5));
        other.state = JobState::Processed;
        let again = ok("create_job", &key, store.create_job(&other).await);
        assert_eq!(again, first, "create_job of an existing {key} changed it");
        // Concurrent creates from every handle: one Job.
        let mut tasks = Vec::new();
        let racing = job_key("job-race", TimeQualifier::Hourly, "2026112807");
        for i in 0..8 {
            let handle = self.handle(i);
            let job = TimetableJob::embryo(&racing, at(i as i64));
            tasks.push(tokio::spawn(async move { handle.create_job(&job).await }));
        }
        let mut ids = Vec::new();
        for task in tasks {
            let job = ok(
                "create_job",
                &racing,
                task.await
                    .unwrap_or_else(|e| panic!("create_job task: {e}")),
            );
            ids.push(job.id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "concurrent create_job of {racing}: {ids:?}");

        // Saved under the claim's lease, every field reads back.
        let claim = key.claim_key();
        let a = self.lease(&claim, "scheduler-a", 0).await;
        let full = full_job(&key, 1);
        assert_eq!(full.event_log.len(), crate::job::EVENT_LOG_MAX_SIZE);
        let saved = ok("save_job", &key, store.save_job(&a, &full).await);
        same_job("save_job", &saved, &full);
        let read = ok("get_job", &key, store.get_job(&key).await)
            .unwrap_or_else(|| panic!("get_job of {key}: none after save_job"));
        same_job("get_job", &read, &full);
        assert_eq!(read.id, first.id, "save_job of {key} gave it a new id");

        // Another Job's claim does not let a scheduler write this one.
        let elsewhere = job_key("job-other", TimeQualifier::Hourly, "2026112807");
        let b_other = self.lease(&elsewhere.claim_key(), "scheduler-a", 0).await;
        assert!(
            store.save_job(&b_other, &full).await.is_err(),
            "save_job of {key} under the lease of {elsewhere} succeeded"
        );

        // A scheduler that took the stale claim over fences the first one.
        let ttl_ms = TTL.as_millis() as i64;
        let b = match ok(
            "acquire_lease",
            &claim,
            store
                .acquire_lease(&claim, "scheduler-b", at(2 * ttl_ms), TTL)
                .await,
        ) {
            LeaseOutcome::Acquired(b) => b,
            other => panic!("acquire_lease of {claim}: stale claim not taken over: {other:?}"),
        };
        let mut stale = read.clone();
        stale.state = JobState::Processed;
        expect_fenced("save_job", &key, store.save_job(&a, &stale).await);
        let unchanged = ok("get_job", &key, store.get_job(&key).await);
        assert_eq!(
            unchanged.as_ref(),
            Some(&read),
            "a fenced save_job of {key} changed it"
        );
        let mut by_b = read.clone();
        by_b.state = JobState::Noop;
        by_b.run_mode = None;
        by_b.not_before = None;
        by_b.related_unit_of_work = None;
        let saved = ok("save_job", &key, store.save_job(&b, &by_b).await);
        same_job("save_job by the new claimant", &saved, &by_b);

        // One Job per qualifier: the daily Job of the same name and digits
        // is another record.
        let daily = job_key("job", TimeQualifier::Daily, "2026112800");
        let hourly_midnight = job_key("job", TimeQualifier::Hourly, "2026112800");
        let d = ok(
            "create_job",
            &daily,
            store.create_job(&TimetableJob::embryo(&daily, at(0))).await,
        );
        let h = ok(
            "create_job",
            &hourly_midnight,
            store
                .create_job(&TimetableJob::embryo(&hourly_midnight, at(0)))
                .await,
        );
        assert_ne!(d.id, h.id, "{daily} and {hourly_midnight} share a record");
        assert_eq!(d.time_qualifier, TimeQualifier::Daily);
        assert_eq!(h.time_qualifier, TimeQualifier::Hourly);

        self.job_listing().await;
    }

    async fn job_listing(&self) {
        let store = self.store();
        let name = "conformance-listing";
        let hours = ["2026112803", "2026112801", "2026112802", "2026112800"];
        for (i, hour) in hours.iter().enumerate() {
            let key = JobKey::new(name, TimeQualifier::Hourly, tp(hour));
            let job = ok(
                "create_job",
                &key,
                store.create_job(&TimetableJob::embryo(&key, at(0))).await,
            );
            if i % 2 == 0 {
                let lease = self.lease(&key.claim_key(), "lister", 0).await;
                let mut done = job.clone();
                done.state = JobState::Processed;
                done.number_of_failures = i as u32 / 2;
                ok("save_job", &key, store.save_job(&lease, &done).await);
            }
        }
        let list = |query: JobQuery| async move {
            ok("list_jobs", &name, self.store().list_jobs(&query).await)
                .into_iter()
                .map(|j| (j.timeperiod.to_string(), j.state))
                .collect::<Vec<_>>()
        };
        let all = JobQuery {
            process_name: Some(name.into()),
            ..JobQuery::default()
        };
        use JobState::{Embryo, Processed};
        let want = |rows: &[(&str, JobState)]| {
            rows.iter()
                .map(|(t, s)| (t.to_string(), *s))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            list(all.clone()).await,
            want(&[
                ("2026112800", Embryo),
                ("2026112801", Embryo),
                ("2026112802", Processed),
                ("2026112803", Processed)
            ]),
            "list_jobs: every Job of {name}, oldest first"
        );
        assert_eq!(
            list(JobQuery {
                states: vec![Embryo, JobState::InProgress],
                ..all.clone()
            })
            .await,
            want(&[("2026112800", Embryo), ("2026112801", Embryo)]),
            "list_jobs by states"
        );
        assert_eq!(
            list(JobQuery {
                from: Some(tp("2026112801")),
                to: Some(tp("2026112803")),
                ..all.clone()
            })
            .await,
            want(&[("2026112801", Embryo), ("2026112802", Processed)]),
            "list_jobs from (inclusive) to (exclusive)"
        );
        assert_eq!(
            list(JobQuery {
                limit: Some(1),
                states: vec![Processed],
                ..all.clone()
            })
            .await,
            want(&[("2026112802", Processed)]),
            "list_jobs with a limit"
        );
        assert_eq!(
            list(JobQuery {
                limit: Some(2),
                newest_first: true,
                ..all.clone()
            })
            .await,
            want(&[("2026112803", Processed), ("2026112802", Processed)]),
            "list_jobs newest first"
        );
        assert!(
            list(JobQuery {
                time_qualifier: Some(TimeQualifier::Daily),
                ..all
            })
            .await
            .is_empty(),
            "list_jobs by qualifier"
        );

        // The tally counts per state and number of failures.
        let tally = |name: &'static str, q: TimeQualifier| async move {
            let mut rows = ok("tally_jobs", &name, self.store().tally_jobs(name, q).await);
            rows.sort_by_key(|t| (t.state.as_str(), t.number_of_failures));
            rows
        };
        let row = |state, number_of_failures, jobs| JobTally {
            state,
            number_of_failures,
            jobs,
        };
        assert_eq!(
            tally(name, TimeQualifier::Hourly).await,
            vec![
                row(Embryo, 0, 2),
                row(Processed, 0, 1),
                row(Processed, 1, 1)
            ],
            "tally_jobs of {name}"
        );
        assert!(
            tally(name, TimeQualifier::Daily).await.is_empty(),
            "tally_jobs by qualifier"
        );
        assert!(
            tally("conformance-no-such-flow", TimeQualifier::Hourly)
                .await
                .is_empty(),
            "tally_jobs of a flow without Jobs"
        );
    }
}
