//! A scheduler's Job: one record per flow and timeperiod saying where the
//! timetable stands for it, in the shape of the Synergy Scheduler 2.3's Job
//! (`process_name` + `timeperiod`, `state`, `number_of_failures`,
//! `event_log`, `related_unit_of_work`), so `flow schedule` and Synergy can
//! share a MongoDB database. This engine's fields are additions.
//!
//! Jobs are written under a *claim*: the run lease of [`JobKey::claim_key`],
//! taken and fenced like a run's, so among several schedulers on one store
//! exactly one moves a Job at a time, and one that died has its claims taken
//! over after the lease's TTL.

use crate::record::{FlowKey, RecordId};
use crate::schedule::Schedule;
use crate::state::{JobState, RunMode};
use crate::timeperiod::{TimeQualifier, Timeperiod};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The most entries a Job's `event_log` keeps (Synergy's
/// `EVENT_LOG_MAX_SIZE`); older ones are dropped first.
pub const EVENT_LOG_MAX_SIZE: usize = 128;

/// What lease keys of Job claims start with. Flow names never contain
/// `:`, so a claim key never names a flow's run lease.
pub const CLAIM_PREFIX: &str = "job:";

/// A Job's identity: the flow (Synergy's `process_name`), its qualifier
/// (which of Synergy's four collections), and the timeperiod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobKey {
    /// The flow's name.
    pub process_name: String,
    /// The flow's time qualifier.
    pub time_qualifier: TimeQualifier,
    /// The period.
    pub timeperiod: Timeperiod,
}

impl JobKey {
    /// The key of `process_name`'s Job at `timeperiod`.
    pub fn new(
        process_name: impl Into<String>,
        time_qualifier: TimeQualifier,
        timeperiod: Timeperiod,
    ) -> Self {
        JobKey {
            process_name: process_name.into(),
            time_qualifier,
            timeperiod,
        }
    }

    /// The lease key a scheduler claims this Job under.
    pub fn claim_key(&self) -> FlowKey {
        FlowKey::new(
            format!("{CLAIM_PREFIX}{}", self.process_name),
            self.timeperiod,
        )
    }

    /// The flow run this Job's managed runs are.
    pub fn flow_key(&self) -> FlowKey {
        FlowKey::new(self.process_name.clone(), self.timeperiod)
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job [{}, {}] ({})",
            self.process_name,
            self.timeperiod,
            self.time_qualifier.as_str()
        )
    }
}

/// A scheduler's Job record (Synergy's `Job`; named apart from the
/// cluster [`Job`](crate::Job) an action submits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimetableJob {
    /// Assigned by the store; `None` until first saved.
    pub id: Option<RecordId>,
    /// The flow's name (Synergy: the process).
    pub process_name: String,
    /// The flow's time qualifier (which collection on MongoDB).
    pub time_qualifier: TimeQualifier,
    /// The period.
    pub timeperiod: Timeperiod,
    /// Where the timetable stands.
    pub state: JobState,
    /// The latest managed run of this Job (a run id of `flow history`).
    pub related_unit_of_work: Option<RecordId>,
    /// What happened to the Job, oldest first, at most
    /// [`EVENT_LOG_MAX_SIZE`] lines.
    pub event_log: Vec<String>,
    /// Failed managed runs since the Job was last (re)started.
    pub number_of_failures: u32,
    /// Ours: the managed mode the next run uses (`recovery` after a failure,
    /// `nominal` when reprocessed); `None` lets `flow drive`'s resolution
    /// decide.
    pub run_mode: Option<RunMode>,
    /// Ours: no run starts before this (the garbage collector's backoff).
    pub not_before: Option<DateTime<Utc>>,
    /// Ours: when the Job was last written.
    pub updated_at: Option<DateTime<Utc>>,
    /// Ours: the flows this Job's flow waits for (its `[schedule]
    /// depends_on_flows` when the timetable last wrote the Job), so
    /// `flow reprocess --cascade` finds a flow's dependants in the store.
    pub depends_on_flows: Vec<String>,
    /// Ours: when its period became due (closed, plus the flow's lag): the
    /// start of the due-to-start delay.
    pub due_at: Option<DateTime<Utc>>,
    /// Ours: when its first managed run started (the end of the
    /// due-to-start delay; retries leave it as it is).
    pub started_at: Option<DateTime<Utc>>,
}

impl TimetableJob {
    /// A new `embryo` Job.
    pub fn embryo(key: &JobKey, now: DateTime<Utc>) -> TimetableJob {
        let mut job = TimetableJob {
            id: None,
            process_name: key.process_name.clone(),
            time_qualifier: key.time_qualifier,
            timeperiod: key.timeperiod,
            state: JobState::Embryo,
            related_unit_of_work: None,
            event_log: Vec::new(),
            number_of_failures: 0,
            run_mode: None,
            not_before: None,
            updated_at: Some(now),
            depends_on_flows: Vec::new(),
            due_at: None,
            started_at: None,
        };
        job.log_event(now, "created");
        job
    }

    /// The Job's key.
    pub fn key(&self) -> JobKey {
        JobKey::new(
            self.process_name.clone(),
            self.time_qualifier,
            self.timeperiod,
        )
    }

    /// How long after its period became due its first managed run
    /// started, once both are known.
    pub fn start_delay(&self) -> Option<chrono::TimeDelta> {
        Some(self.started_at? - self.due_at?)
    }

    /// True for a Job the garbage collector gave up on: `state_skipped`
    /// after more failed runs than `schedule`'s retry limit (Synergy's way
    /// of leaving it for a person; `flow jobs` and the viewer show it
    /// failed).
    pub fn given_up(&self, schedule: &Schedule) -> bool {
        self.state == JobState::Skipped && self.number_of_failures > schedule.retry_limit
    }

    /// How `flow jobs` and the viewer show the Job's state: a Job given up
    /// (see [`given_up`](Self::given_up)) as failed, one waiting for a
    /// retry with its count.
    pub fn shown_state(&self, schedule: &Schedule) -> String {
        match self.state {
            JobState::Skipped if self.given_up(schedule) => format!(
                "failed (state_skipped after {} failed runs)",
                self.number_of_failures
            ),
            JobState::InProgress if self.number_of_failures > 0 => format!(
                "state_in_progress (retry {} of {})",
                self.number_of_failures, schedule.retry_limit
            ),
            state => state.to_string(),
        }
    }

    /// Appends `text` (stamped with `now`) to the event log, dropping the
    /// oldest entries beyond [`EVENT_LOG_MAX_SIZE`], and stamps the Job.
    pub fn log_event(&mut self, now: DateTime<Utc>, text: &str) {
        self.event_log
            .push(format!("{} {text}", now.format("%Y-%m-%d %H:%M:%SZ")));
        let extra = self.event_log.len().saturating_sub(EVENT_LOG_MAX_SIZE);
        self.event_log.drain(..extra);
        self.updated_at = Some(now);
    }
}

/// Which Jobs to list, oldest timeperiod first (newest first with
/// `newest_first`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    /// Only this flow's Jobs.
    pub process_name: Option<String>,
    /// Only Jobs of this qualifier.
    pub time_qualifier: Option<TimeQualifier>,
    /// Only Jobs in one of these states (every state when empty).
    pub states: Vec<JobState>,
    /// Timeperiods at or after this one.
    pub from: Option<Timeperiod>,
    /// Timeperiods before this one.
    pub to: Option<Timeperiod>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Newest timeperiod first (where a timetable's cursor stands).
    pub newest_first: bool,
}

/// How many of a flow's Jobs are in one state with one
/// `number_of_failures` ([`FlowStore::tally_jobs`](crate::FlowStore::tally_jobs)):
/// enough for Jobs per state, given-up Jobs and retries, counted by the
/// store without reading the Jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobTally {
    /// The Jobs' state.
    pub state: JobState,
    /// Their `number_of_failures`.
    pub number_of_failures: u32,
    /// How many Jobs.
    pub jobs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_log_keeps_the_newest_128() {
        let key = JobKey::new("f", TimeQualifier::Hourly, "2026112807".parse().unwrap());
        let mut job = TimetableJob::embryo(&key, Utc::now());
        for i in 0..200 {
            job.log_event(Utc::now(), &format!("event {i}"));
        }
        assert_eq!(job.event_log.len(), EVENT_LOG_MAX_SIZE);
        assert!(job.event_log.last().unwrap().ends_with("event 199"));
        assert!(job.event_log[0].ends_with("event 72"));
        assert_eq!(key.claim_key().flow_name, "job:f");
    }
}
