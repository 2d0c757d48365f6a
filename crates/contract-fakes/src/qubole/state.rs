//! The fake's world: the account's clusters and commands, whose states are
//! computed from the clock on every request.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A cluster: its states from their start times on, in order.
pub(super) struct FakeCluster {
    pub id: u64,
    pub phases: Vec<(Duration, String)>,
    /// Why it went down last (`terminate_reason`), when it did not go
    /// down by the API.
    pub terminate_reason: Option<String>,
}

impl FakeCluster {
    pub fn state(&self, now: Duration) -> &str {
        self.phases
            .iter()
            .rev()
            .find(|(at, _)| *at <= now)
            .map_or("DOWN", |(_, s)| s.as_str())
    }

    /// When it is (or will be) `UP`, if it is on its way there.
    pub fn up_at(&self, now: Duration) -> Option<Duration> {
        match self.state(now) {
            "UP" => Some(now),
            "PENDING" => self
                .phases
                .iter()
                .find(|(at, s)| *at > now && s == "UP")
                .map(|(at, _)| *at),
            _ => None,
        }
    }

    fn go(&mut self, now: Duration, through: &str, takes: Duration, to: &str) {
        self.phases.retain(|(at, _)| *at <= now);
        self.phases.push((now, through.to_string()));
        self.phases.push((now + takes, to.to_string()));
    }

    /// `DOWN` → `PENDING` → `UP`; no effect on a cluster that is not down.
    pub fn start(&mut self, now: Duration, takes: Duration) -> bool {
        if self.state(now) != "DOWN" {
            return false;
        }
        self.terminate_reason = None;
        self.go(now, "PENDING", takes, "UP");
        true
    }

    /// `UP`/`PENDING` → `TERMINATING` → `DOWN`; no effect otherwise.
    pub fn terminate(&mut self, now: Duration, takes: Duration) -> bool {
        if !matches!(self.state(now), "UP" | "PENDING") {
            return false;
        }
        self.terminate_reason = Some("Terminated by user".into());
        self.go(now, "TERMINATING", takes, "DOWN");
        true
    }
}

/// A command QDS accepted.
pub(super) struct FakeCommand {
    pub id: u64,
    /// The body as sent.
    pub body: Value,
    pub label: String,
    /// Its text (script, command line, arguments), read for `fake.*`.
    pub text: String,
    pub created: Duration,
    /// When it leaves `waiting` (its cluster up, and the waiting time gone).
    pub running_at: Duration,
    /// How long it runs; `None`: until finished by hand or killed.
    pub run: Option<Duration>,
    /// `done` or `error`.
    pub outcome: String,
    pub killed: Option<(Duration, Duration)>,
    pub forced: Option<(Duration, String)>,
    /// Ended by its cluster's termination, not by itself.
    pub cluster_terminated: bool,
}

impl FakeCommand {
    /// Its terminal status and when it was reached, if it is known.
    fn end(&self) -> Option<(Duration, &str)> {
        let natural = self
            .run
            .map(|run| (self.running_at + run, self.outcome.as_str()));
        let forced = self.forced.as_ref().map(|(at, s)| (*at, s.as_str()));
        let cancelled = self.killed.map(|(at, takes)| (at + takes, "cancelled"));
        [natural, forced, cancelled]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// Its status now, and when it began.
    pub fn status(&self, now: Duration) -> (&str, Duration) {
        if let Some((at, status)) = self.end().filter(|(at, _)| *at <= now) {
            return (status, at);
        }
        if let Some((at, _)) = self.killed.filter(|(at, _)| *at <= now) {
            return ("cancelling", at);
        }
        if now < self.running_at {
            ("waiting", self.created)
        } else {
            ("running", self.running_at)
        }
    }

    pub fn is_finished(&self, now: Duration) -> bool {
        matches!(self.status(now).0, "done" | "error" | "cancelled")
    }

    /// When it ended (or will end, if that is known).
    pub fn ended_at(&self) -> Option<Duration> {
        self.end().map(|(at, _)| at)
    }
}

pub(super) struct ServiceState {
    pub clusters: HashMap<String, FakeCluster>,
    pub commands: Vec<FakeCommand>,
    /// Wall time of clock zero, for timestamps.
    pub epoch: DateTime<Utc>,
    next_id: u64,
}

impl ServiceState {
    pub fn new(clusters: &BTreeMap<String, String>) -> Self {
        let clusters = clusters
            .iter()
            .enumerate()
            .map(|(i, (label, state))| {
                let cluster = FakeCluster {
                    id: 1700 + i as u64,
                    phases: vec![(Duration::ZERO, state.clone())],
                    terminate_reason: None,
                };
                (label.clone(), cluster)
            })
            .collect();
        ServiceState {
            clusters,
            commands: Vec::new(),
            epoch: Utc::now(),
            next_id: 59361366,
        }
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// `2026-12-07 08:00:00 UTC`, QDS's timestamps.
    pub fn time(&self, at: Duration) -> String {
        let at = self.epoch + chrono::Duration::from_std(at).unwrap_or_default();
        at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    }

    pub fn cluster_state(&self, label: &str, now: Duration) -> Option<String> {
        self.clusters.get(label).map(|c| c.state(now).to_string())
    }

    /// Puts a cluster in `state` now, as if it changed outside the API
    /// (lost, or started or stopped by someone else), with `reason` as its
    /// `terminate_reason`. Its commands are left as they were: QDS notices
    /// a lost cluster's commands late.
    pub fn force_cluster(&mut self, label: &str, state: &str, reason: Option<&str>, now: Duration) {
        let cluster = self
            .clusters
            .entry(label.to_string())
            .or_insert(FakeCluster {
                id: 1800,
                phases: Vec::new(),
                terminate_reason: None,
            });
        cluster.phases.retain(|(at, _)| *at <= now);
        cluster.phases.push((now, state.to_string()));
        cluster.terminate_reason = reason.map(str::to_string);
    }

    /// Ends the commands on `label` that have not ended, with `error`: a
    /// cluster terminated through the API takes its running commands down.
    pub fn fail_commands_on(&mut self, label: &str, now: Duration) {
        for command in &mut self.commands {
            if command.label == label && !command.is_finished(now) {
                command.forced = Some((now, "error".to_string()));
                command.cluster_terminated = true;
            }
        }
    }

    /// The most commands that were in QDS's hands (`waiting`, `running` or
    /// `cancelling`) at one time, up to `now`.
    pub fn peak_unfinished(&self, now: Duration) -> usize {
        let mut events: Vec<(Duration, i32)> = Vec::new();
        for command in &self.commands {
            events.push((command.created, 1));
            if let Some(end) = command.ended_at().filter(|at| *at <= now) {
                events.push((end, -1));
            }
        }
        // An end before a start at the same instant.
        events.sort();
        let (mut now_open, mut peak) = (0i32, 0i32);
        for (_, change) in events {
            now_open += change;
            peak = peak.max(now_open);
        }
        peak.max(0) as usize
    }

    pub fn finish(&mut self, id: u64, status: &str, now: Duration) -> bool {
        match self.commands.iter_mut().find(|c| c.id == id) {
            Some(command) if !command.is_finished(now) => {
                command.forced = Some((now, status.to_string()));
                true
            }
            _ => false,
        }
    }
}
