//! The schema, the statements and the mapping between rows and records.
//!
//! Values are stored as text a person can read with the `sqlite3` shell:
//! states as their `as_str()` strings, timeperiods as their 10 digits and
//! timestamps as RFC 3339 UTC with microseconds
//! (`2026-11-28T07:00:00.123456Z`). That timestamp form has a fixed width, so
//! text order is time order, which the lease's staleness test relies on.
//! Nested values (a step's job handle and rollbacks, a run's steps, a
//! cluster's details) are JSON text.
//!
//! Fencing: every write that takes a [`Lease`] first checks, inside the same
//! transaction, that the flow's lease row still has that owner and token
//! ([`check_fence`]). The writer runs every write in `BEGIN IMMEDIATE`, so
//! nobody can take the lease between the check and the write.

use crate::writer::DbError;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use flow_core::{
    ActionSetState, ClusterClaim, ClusterHandle, ClusterRecord, ClusterRelease, ClusterState,
    ClusterUsage, ClusterUser, FlowKey, FlowQuery, FlowRecord, FlowState, JobKey, JobQuery,
    JobRecord, JobState, JobTally, Lease, LeaseInfo, LeaseOutcome, LogLevel, LogLine, LogQuery,
    RecordId, RollbackRecord, RunMode, RunQuery, RunRecord, RunStep, SharedCluster,
    SharedClusterKey, StepRecord, StepState, StoredLogLine, TimeQualifier, Timeperiod,
    TimetableJob,
};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::BTreeMap;
use std::time::Duration;

/// The `user_version` this build writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = 10;

/// Schema version 2, created from scratch.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS flow (
    id               INTEGER PRIMARY KEY,
    flow_name        TEXT NOT NULL,
    timeperiod       TEXT NOT NULL,
    start_timeperiod TEXT NOT NULL,
    end_timeperiod   TEXT NOT NULL,
    state            TEXT NOT NULL,
    run_mode         TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    graph_hash       TEXT,
    UNIQUE (flow_name, timeperiod)
);
CREATE TABLE IF NOT EXISTS step (
    id           INTEGER PRIMARY KEY,
    flow_name    TEXT    NOT NULL,
    step_name    TEXT    NOT NULL,
    timeperiod   TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    related_flow INTEGER,
    pre_state    TEXT    NOT NULL,
    main_state   TEXT    NOT NULL,
    post_state   TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    error        TEXT,
    actions_done INTEGER NOT NULL DEFAULT 0,
    job          TEXT,
    rollbacks    TEXT    NOT NULL DEFAULT '[]',
    UNIQUE (flow_name, timeperiod, step_name)
);
CREATE TABLE IF NOT EXISTS lease (
    flow_name    TEXT NOT NULL,
    timeperiod   TEXT NOT NULL,
    owner        TEXT NOT NULL,
    acquired_at  TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    token        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (flow_name, timeperiod)
);
";

/// What version 2 added, created on a new file and on a version-1 file alike.
pub(crate) const SCHEMA_V2_TABLES: &str = "
CREATE TABLE IF NOT EXISTS run (
    id          INTEGER PRIMARY KEY,
    flow_name   TEXT    NOT NULL,
    timeperiod  TEXT    NOT NULL,
    mode        TEXT    NOT NULL,
    target      TEXT,
    owner       TEXT    NOT NULL,
    token       INTEGER NOT NULL,
    host        TEXT    NOT NULL,
    user        TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    outcome     TEXT,
    steps       TEXT    NOT NULL,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS run_by_flow ON run (flow_name, timeperiod, id);
CREATE TABLE IF NOT EXISTS cluster (
    id          INTEGER PRIMARY KEY,
    flow_name   TEXT    NOT NULL,
    timeperiod  TEXT    NOT NULL,
    run         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    backend_id  TEXT    NOT NULL,
    reused      INTEGER NOT NULL,
    details     TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    launched_at TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    message     TEXT
);
CREATE INDEX IF NOT EXISTS cluster_by_flow ON cluster (flow_name, timeperiod, id);
CREATE TABLE IF NOT EXISTS log (
    position   INTEGER PRIMARY KEY AUTOINCREMENT,
    flow_name  TEXT    NOT NULL,
    timeperiod TEXT    NOT NULL,
    run        INTEGER NOT NULL,
    step       TEXT,
    logger     TEXT    NOT NULL,
    level      TEXT    NOT NULL,
    at         TEXT    NOT NULL,
    message    TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_flow ON log (flow_name, timeperiod, position);
CREATE INDEX IF NOT EXISTS log_by_time ON log (at);
";

/// What version 3 added: the scheduler's Jobs (Synergy Scheduler's Job
/// shape; `event_log` is a JSON array of strings).
pub(crate) const SCHEMA_V3_TABLES: &str = "
CREATE TABLE IF NOT EXISTS job (
    id                   INTEGER PRIMARY KEY,
    process_name         TEXT    NOT NULL,
    time_qualifier       TEXT    NOT NULL,
    timeperiod           TEXT    NOT NULL,
    state                TEXT    NOT NULL,
    related_unit_of_work TEXT,
    event_log            TEXT    NOT NULL,
    number_of_failures   INTEGER NOT NULL,
    run_mode             TEXT,
    not_before           TEXT,
    updated_at           TEXT,
    UNIQUE (process_name, time_qualifier, timeperiod)
);
CREATE INDEX IF NOT EXISTS job_by_state ON job (state, timeperiod);
CREATE INDEX IF NOT EXISTS job_by_timeperiod ON job (timeperiod, process_name);
";

/// What version 4 added: which runs use each shared cluster (the record
/// is [`SharedCluster`] as JSON; the rule is flow-core's).
pub(crate) const SCHEMA_V4_TABLES: &str = "
CREATE TABLE IF NOT EXISTS shared_cluster (
    kind   TEXT NOT NULL,
    name   TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
";

/// What version 5 added: the flows a Job's flow waits for (a JSON array
/// of names), which `flow reprocess --cascade` looks dependants up by.
pub(crate) const SCHEMA_V5_TABLES: &str = "
ALTER TABLE job ADD COLUMN depends_on_flows TEXT NOT NULL DEFAULT '[]';
";

/// What version 6 added: when a flow's SLA was missed (a column of its
/// own, so Synergy-shaped rows without it read as never missed).
pub(crate) const SCHEMA_V6_COLUMNS: &str = "
ALTER TABLE flow ADD COLUMN sla_missed_at TEXT;
";

/// What version 7 added: when a Job's period became due and its first
/// managed run started (the due-to-start delay), and the index
/// `tally_jobs` counts through without reading the rows.
pub(crate) const SCHEMA_V7_CHANGES: &str = "
ALTER TABLE job ADD COLUMN due_at     TEXT;
ALTER TABLE job ADD COLUMN started_at TEXT;
CREATE INDEX IF NOT EXISTS job_tally ON job (process_name, time_qualifier, state, number_of_failures);
";

/// What version 8 added: the W3C `traceparent` of a traced run's root
/// span, which a recover continues.
pub(crate) const SCHEMA_V8_COLUMNS: &str = "
ALTER TABLE flow ADD COLUMN trace_parent TEXT;
";

/// What version 9 added: a cluster's instances and billed time
/// (`flow_core::ClusterUsage` as JSON; `{}` reads as unknown).
pub(crate) const SCHEMA_V9_COLUMNS: &str = "
ALTER TABLE cluster ADD COLUMN usage TEXT NOT NULL DEFAULT '{}';
";

/// What version 10 added: the index `count_sla_missed` counts a flow's
/// SLA misses on (partial: only the marked rows, so a count reads the
/// flow's misses in the index, never its history).
pub(crate) const SCHEMA_V10_INDEX: &str = "
CREATE INDEX IF NOT EXISTS flow_sla_missed ON flow (flow_name, sla_missed_at) WHERE sla_missed_at IS NOT NULL;
";

/// Upgrades a version-1 file in place (inside the caller's transaction).
pub(crate) const MIGRATE_V1_TO_V2: &str = "
ALTER TABLE flow  ADD COLUMN graph_hash   TEXT;
ALTER TABLE step  ADD COLUMN actions_done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE step  ADD COLUMN job          TEXT;
ALTER TABLE step  ADD COLUMN rollbacks    TEXT NOT NULL DEFAULT '[]';
ALTER TABLE lease ADD COLUMN token        INTEGER NOT NULL DEFAULT 0;
";

/// The columns `decode_flow` reads, in its order.
macro_rules! flow_columns {
    () => {
        "id, flow_name, timeperiod, start_timeperiod, end_timeperiod, state, run_mode, \
         created_at, started_at, finished_at, graph_hash, sla_missed_at, trace_parent"
    };
}

const GET_FLOW: &str = concat!(
    "SELECT ",
    flow_columns!(),
    " FROM flow WHERE flow_name = ?1 AND timeperiod = ?2"
);

/// `NULL` parameters match everything; a negative limit is no limit.
const LIST_FLOWS: &str = concat!(
    "SELECT ",
    flow_columns!(),
    " FROM flow WHERE (?1 IS NULL OR flow_name = ?1) AND (?2 IS NULL OR state = ?2) \
     AND (?3 IS NULL OR timeperiod >= ?3) AND (?4 IS NULL OR timeperiod < ?4) \
     ORDER BY timeperiod DESC, flow_name, id LIMIT ?5 OFFSET ?6"
);

const UPSERT_FLOW: &str = "
INSERT INTO flow (flow_name, timeperiod, start_timeperiod, end_timeperiod, state, run_mode,
                  created_at, started_at, finished_at, graph_hash, sla_missed_at, trace_parent)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
ON CONFLICT (flow_name, timeperiod) DO UPDATE SET
    start_timeperiod = excluded.start_timeperiod,
    end_timeperiod   = excluded.end_timeperiod,
    state            = excluded.state,
    run_mode         = excluded.run_mode,
    created_at       = excluded.created_at,
    started_at       = excluded.started_at,
    finished_at      = excluded.finished_at,
    graph_hash       = excluded.graph_hash,
    sla_missed_at    = excluded.sla_missed_at,
    trace_parent     = excluded.trace_parent
RETURNING id";

const UPSERT_STEP: &str = "
INSERT INTO step (flow_name, step_name, timeperiod, state, created_at, started_at, finished_at,
                  related_flow, pre_state, main_state, post_state, attempts, error,
                  actions_done, job, rollbacks)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
ON CONFLICT (flow_name, timeperiod, step_name) DO UPDATE SET
    state        = excluded.state,
    created_at   = excluded.created_at,
    started_at   = excluded.started_at,
    finished_at  = excluded.finished_at,
    related_flow = excluded.related_flow,
    pre_state    = excluded.pre_state,
    main_state   = excluded.main_state,
    post_state   = excluded.post_state,
    attempts     = excluded.attempts,
    error        = excluded.error,
    actions_done = excluded.actions_done,
    job          = excluded.job,
    rollbacks    = excluded.rollbacks
RETURNING id";

const DELETE_STEPS: &str = "DELETE FROM step WHERE flow_name = ?1 AND timeperiod = ?2";

const GET_STEPS: &str = "
SELECT id, flow_name, step_name, timeperiod, state, created_at, started_at, finished_at,
       related_flow, pre_state, main_state, post_state, attempts, error,
       actions_done, job, rollbacks
FROM step WHERE flow_name = ?1 AND timeperiod = ?2 ORDER BY id";

/// One conditional write: inserts, or takes over when the caller already
/// holds the lease, nobody does (released), or the holder's heartbeat is at
/// or before the cutoff (`?5`). Every acquisition raises the token; no row
/// back means someone else holds it.
const ACQUIRE_LEASE: &str = "
INSERT INTO lease (flow_name, timeperiod, owner, acquired_at, heartbeat_at, token)
VALUES (?1, ?2, ?3, ?4, ?4, 1)
ON CONFLICT (flow_name, timeperiod) DO UPDATE SET
    owner        = excluded.owner,
    acquired_at  = excluded.acquired_at,
    heartbeat_at = excluded.heartbeat_at,
    token        = lease.token + 1
WHERE lease.owner = excluded.owner OR lease.owner = '' OR lease.heartbeat_at <= ?5
RETURNING token";

const GET_LEASE: &str = "SELECT owner, token, acquired_at, heartbeat_at FROM lease \
     WHERE flow_name = ?1 AND timeperiod = ?2";

const RENEW_LEASE: &str = "UPDATE lease SET heartbeat_at = ?5 \
     WHERE flow_name = ?1 AND timeperiod = ?2 AND owner = ?3 AND token = ?4";

/// Keeps the row, so the token keeps growing across releases.
const RELEASE_LEASE: &str = "UPDATE lease SET owner = '', heartbeat_at = ?5 \
     WHERE flow_name = ?1 AND timeperiod = ?2 AND owner = ?3 AND token = ?4";

const INSERT_RUN: &str = "
INSERT INTO run (flow_name, timeperiod, mode, target, owner, token, host, user, started_at,
                 finished_at, outcome, steps, error)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
RETURNING id";

const FINISH_RUN: &str = "UPDATE run SET finished_at = ?2, outcome = ?3, steps = ?4, error = ?5 \
     WHERE id = ?1";

const LIST_RUNS: &str = "SELECT id, flow_name, timeperiod, mode, target, owner, token, host, \
     user, started_at, finished_at, outcome, steps, error FROM run \
     WHERE (?1 IS NULL OR flow_name = ?1) AND (?2 IS NULL OR timeperiod = ?2) \
     ORDER BY id DESC LIMIT ?3";

const INSERT_CLUSTER: &str = "
INSERT INTO cluster (flow_name, timeperiod, run, kind, name, backend_id, reused, details, state,
                     launched_at, updated_at, message, usage)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
RETURNING id";

const UPDATE_CLUSTER: &str = "
UPDATE cluster SET run = ?2, kind = ?3, name = ?4, backend_id = ?5, reused = ?6, details = ?7,
                   state = ?8, launched_at = ?9, updated_at = ?10, message = ?11, usage = ?14
WHERE id = ?1 AND flow_name = ?12 AND timeperiod = ?13";

const LIST_CLUSTERS: &str = "SELECT id, flow_name, timeperiod, run, kind, name, backend_id, \
     reused, details, state, launched_at, updated_at, message, usage FROM cluster \
     WHERE (?1 IS NULL OR (flow_name = ?1 AND timeperiod = ?2)) ORDER BY id";

const INSERT_LOG: &str = "INSERT INTO log (flow_name, timeperiod, run, step, logger, level, at, \
     message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

const READ_LOGS: &str = "SELECT position, flow_name, timeperiod, run, step, logger, level, at, \
     message FROM log WHERE flow_name = ?1 AND timeperiod = ?2 AND (?3 IS NULL OR step = ?3) \
     AND (?4 IS NULL OR run = ?4) AND position > ?5 ORDER BY position LIMIT ?6";

/// One row through `log_by_flow`, read backwards.
const LAST_LOG_POSITION: &str =
    "SELECT position FROM log WHERE flow_name = ?1 AND timeperiod = ?2 \
     ORDER BY position DESC LIMIT 1";

const PURGE_LOGS: &str = "DELETE FROM log WHERE at < ?1";

/// Every statement the store runs, so `open` can prepare them all once: that
/// fills the statement cache and rejects a file whose tables do not match.
pub(crate) const ALL_STATEMENTS: &[&str] = &[
    "BEGIN IMMEDIATE",
    "COMMIT",
    UPSERT_FLOW,
    UPSERT_STEP,
    DELETE_STEPS,
    GET_STEPS,
    ACQUIRE_LEASE,
    GET_LEASE,
    RENEW_LEASE,
    RELEASE_LEASE,
    GET_FLOW,
    LIST_FLOWS,
    INSERT_RUN,
    FINISH_RUN,
    LIST_RUNS,
    INSERT_CLUSTER,
    UPDATE_CLUSTER,
    LIST_CLUSTERS,
    INSERT_LOG,
    READ_LOGS,
    LAST_LOG_POSITION,
    PURGE_LOGS,
];

/// The stored form of a timestamp: RFC 3339, UTC, microseconds.
pub(crate) fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn opt_timestamp(t: &Option<DateTime<Utc>>) -> Option<String> {
    t.as_ref().map(timestamp)
}

fn step_key(flow_name: &str, timeperiod: &str, step_name: &str) -> String {
    format!("[{flow_name}, {timeperiod}] step '{step_name}'")
}

/// The step's key as errors name it.
pub(crate) fn step_record_key(step: &StepRecord) -> String {
    step_key(
        &step.flow_name,
        &step.timeperiod.to_string(),
        &step.step_name,
    )
}

/// This store's ids are integers; anything else was not made here.
fn row_id(id: &RecordId, what: &'static str) -> Result<i64, DbError> {
    id.as_str().parse().map_err(|_| DbError::InvalidId {
        what,
        id: id.to_string(),
        message: "ids of a SQLite store are integers".into(),
    })
}

fn opt_row_id(id: &Option<RecordId>, what: &'static str) -> Result<Option<i64>, DbError> {
    id.as_ref().map(|id| row_id(id, what)).transpose()
}

fn json<T: serde::Serialize>(value: &T, what: &str) -> Result<String, DbError> {
    serde_json::to_string(value)
        .map_err(|e| DbError::Internal(format!("cannot encode {what} as JSON: {e}")))
}

/// Fails with [`DbError::Fenced`] unless `lease` is the flow's current
/// lease. Must run inside the write's transaction.
pub(crate) fn check_fence(conn: &Connection, lease: &Lease) -> Result<(), DbError> {
    let row: Option<(String, i64)> = conn
        .prepare_cached(GET_LEASE)?
        .query_row(
            params![lease.key.flow_name, lease.key.timeperiod.to_string()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    match row {
        Some((owner, token)) if owner == lease.owner && u64::try_from(token) == Ok(lease.token) => {
            Ok(())
        }
        other => Err(DbError::Fenced {
            key: lease.key.to_string(),
            token: lease.token,
            holder: other
                .map(|(owner, _)| owner)
                .filter(|owner| !owner.is_empty() && *owner != lease.owner),
        }),
    }
}

pub(crate) fn upsert_flow(conn: &Connection, flow: &FlowRecord) -> Result<FlowRecord, DbError> {
    let id: i64 = conn.prepare_cached(UPSERT_FLOW)?.query_row(
        params![
            flow.flow_name,
            flow.timeperiod.to_string(),
            flow.start_timeperiod.to_string(),
            flow.end_timeperiod.to_string(),
            flow.state.as_str(),
            flow.run_mode.as_str(),
            timestamp(&flow.created_at),
            opt_timestamp(&flow.started_at),
            opt_timestamp(&flow.finished_at),
            flow.graph_hash,
            opt_timestamp(&flow.sla_missed_at),
            flow.trace_parent,
        ],
        |row| row.get(0),
    )?;
    Ok(FlowRecord {
        id: Some(RecordId::from(id)),
        ..flow.clone()
    })
}

pub(crate) fn upsert_step(
    conn: &Connection,
    step: &StepRecord,
    related_flow: Option<&RecordId>,
) -> Result<RecordId, DbError> {
    let related_flow = related_flow.map(|id| row_id(id, "flow")).transpose()?;
    let job = step
        .job
        .as_ref()
        .map(|job| json(job, "the job record"))
        .transpose()?;
    let rollbacks = json(&step.rollbacks, "the rollbacks")?;
    let id: i64 = conn.prepare_cached(UPSERT_STEP)?.query_row(
        params![
            step.flow_name,
            step.step_name,
            step.timeperiod.to_string(),
            step.state.as_str(),
            timestamp(&step.created_at),
            opt_timestamp(&step.started_at),
            opt_timestamp(&step.finished_at),
            related_flow,
            step.pre_state.as_str(),
            step.main_state.as_str(),
            step.post_state.as_str(),
            i64::from(step.attempts),
            step.error,
            i64::from(step.actions_done),
            job,
            rollbacks,
        ],
        |row| row.get(0),
    )?;
    Ok(RecordId::from(id))
}

/// `begin_run`'s work, inside the write transaction. Steps without a
/// `related_flow` get the flow's id: at the first run the caller cannot
/// know it yet.
/// `count_write` runs before each write (the test fault hook).
pub(crate) fn begin_run(
    conn: &Connection,
    lease: &Lease,
    flow: &FlowRecord,
    purge_steps: bool,
    steps: &[StepRecord],
    run: &RunRecord,
    count_write: &mut dyn FnMut() -> Result<(), DbError>,
) -> Result<(FlowRecord, RunRecord), DbError> {
    check_fence(conn, lease)?;
    count_write()?;
    let saved = upsert_flow(conn, flow)?;
    if purge_steps {
        count_write()?;
        conn.prepare_cached(DELETE_STEPS)?
            .execute(params![flow.flow_name, flow.timeperiod.to_string()])?;
    }
    for step in steps {
        count_write()?;
        upsert_step(conn, step, step.related_flow.as_ref().or(saved.id.as_ref()))?;
    }
    count_write()?;
    let run = insert_run(conn, run)?;
    Ok((saved, run))
}

pub(crate) fn save_flow_and_steps(
    conn: &Connection,
    lease: &Lease,
    flow: &FlowRecord,
    steps: &[StepRecord],
) -> Result<FlowRecord, DbError> {
    check_fence(conn, lease)?;
    let saved = upsert_flow(conn, flow)?;
    for step in steps {
        upsert_step(conn, step, step.related_flow.as_ref().or(saved.id.as_ref()))?;
    }
    Ok(saved)
}

fn insert_run(conn: &Connection, run: &RunRecord) -> Result<RunRecord, DbError> {
    let id: i64 = conn.prepare_cached(INSERT_RUN)?.query_row(
        params![
            run.flow_name,
            run.timeperiod.to_string(),
            run.mode.as_str(),
            run.target,
            run.owner,
            i64::try_from(run.token).unwrap_or(i64::MAX),
            run.host,
            run.user,
            timestamp(&run.started_at),
            opt_timestamp(&run.finished_at),
            run.outcome.map(FlowState::as_str),
            json(&run.steps, "the run's steps")?,
            run.error,
        ],
        |row| row.get(0),
    )?;
    Ok(RunRecord {
        id: Some(RecordId::from(id)),
        ..run.clone()
    })
}

pub(crate) fn finish_run(conn: &Connection, lease: &Lease, run: &RunRecord) -> Result<(), DbError> {
    check_fence(conn, lease)?;
    let Some(id) = &run.id else {
        return Err(DbError::Internal(
            "finish_run needs the run's id from begin_run".to_string(),
        ));
    };
    let changed = conn.prepare_cached(FINISH_RUN)?.execute(params![
        row_id(id, "run")?,
        opt_timestamp(&run.finished_at),
        run.outcome.map(FlowState::as_str),
        json(&run.steps, "the run's steps")?,
        run.error,
    ])?;
    if changed == 0 {
        return Err(DbError::Internal(format!("there is no run {id}")));
    }
    Ok(())
}

pub(crate) fn list_runs(conn: &Connection, query: &RunQuery) -> Result<Vec<RunRecord>, DbError> {
    let mut stmt = conn.prepare_cached(LIST_RUNS)?;
    let mut rows = stmt.query(params![
        query.flow_name,
        query.timeperiod.map(|t| t.to_string()),
        limit(query.limit),
    ])?;
    let mut runs = Vec::new();
    while let Some(row) = rows.next()? {
        runs.push(decode_run(row)?);
    }
    Ok(runs)
}

pub(crate) fn save_cluster(
    conn: &Connection,
    lease: &Lease,
    cluster: &ClusterRecord,
) -> Result<RecordId, DbError> {
    check_fence(conn, lease)?;
    if cluster.key() != lease.key {
        return Err(DbError::Internal(format!(
            "cluster {} belongs to {}, not to the lease's flow {}",
            cluster.handle.name,
            cluster.key(),
            lease.key
        )));
    }
    let h = &cluster.handle;
    let details = json(&h.details, "the cluster's details")?;
    let usage = json(&cluster.usage, "the cluster's usage")?;
    let run = row_id(&cluster.run, "run")?;
    match &cluster.id {
        None => {
            let id: i64 = conn.prepare_cached(INSERT_CLUSTER)?.query_row(
                params![
                    cluster.flow_name,
                    cluster.timeperiod.to_string(),
                    run,
                    h.kind,
                    h.name,
                    h.backend_id,
                    h.reused,
                    details,
                    cluster.state.as_str(),
                    timestamp(&cluster.launched_at),
                    timestamp(&cluster.updated_at),
                    cluster.message,
                    usage,
                ],
                |row| row.get(0),
            )?;
            Ok(RecordId::from(id))
        }
        Some(id) => {
            let changed = conn.prepare_cached(UPDATE_CLUSTER)?.execute(params![
                row_id(id, "cluster")?,
                run,
                h.kind,
                h.name,
                h.backend_id,
                h.reused,
                details,
                cluster.state.as_str(),
                timestamp(&cluster.launched_at),
                timestamp(&cluster.updated_at),
                cluster.message,
                cluster.flow_name,
                cluster.timeperiod.to_string(),
                usage,
            ])?;
            if changed == 0 {
                return Err(DbError::Internal(format!(
                    "there is no cluster record {id} of {}",
                    cluster.key()
                )));
            }
            Ok(id.clone())
        }
    }
}

pub(crate) fn list_clusters(
    conn: &Connection,
    key: Option<&FlowKey>,
) -> Result<Vec<ClusterRecord>, DbError> {
    let mut stmt = conn.prepare_cached(LIST_CLUSTERS)?;
    let mut rows = stmt.query(params![
        key.map(|k| k.flow_name.clone()),
        key.map(|k| k.timeperiod.to_string()),
    ])?;
    let mut clusters = Vec::new();
    while let Some(row) = rows.next()? {
        clusters.push(decode_cluster(row)?);
    }
    Ok(clusters)
}

pub(crate) fn append_logs(conn: &Connection, lines: &[LogLine]) -> Result<(), DbError> {
    let mut stmt = conn.prepare_cached(INSERT_LOG)?;
    for line in lines {
        stmt.execute(params![
            line.flow_name,
            line.timeperiod.to_string(),
            row_id(&line.run, "run")?,
            line.step,
            line.logger,
            line.level.as_str(),
            timestamp(&line.at),
            line.message,
        ])?;
    }
    Ok(())
}

pub(crate) fn read_logs(
    conn: &Connection,
    query: &LogQuery,
) -> Result<Vec<StoredLogLine>, DbError> {
    let run = opt_row_id(&query.run, "run")?;
    let mut stmt = conn.prepare_cached(READ_LOGS)?;
    let mut rows = stmt.query(params![
        query.key.flow_name,
        query.key.timeperiod.to_string(),
        query.step,
        run,
        query
            .after
            .map_or(0, |after| i64::try_from(after).unwrap_or(i64::MAX)),
        i64::try_from(query.limit).unwrap_or(i64::MAX),
    ])?;
    let mut lines = Vec::new();
    while let Some(row) = rows.next()? {
        lines.push(decode_log(row)?);
    }
    Ok(lines)
}

pub(crate) fn last_log_position(conn: &Connection, key: &FlowKey) -> Result<u64, DbError> {
    let position: Option<i64> = conn
        .prepare_cached(LAST_LOG_POSITION)?
        .query_row(params![key.flow_name, key.timeperiod.to_string()], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(position.map_or(0, |p| u64::try_from(p).unwrap_or(0)))
}

pub(crate) fn purge_logs(conn: &Connection, before: DateTime<Utc>) -> Result<u64, DbError> {
    let deleted = conn
        .prepare_cached(PURGE_LOGS)?
        .execute(params![timestamp(&before)])?;
    Ok(deleted as u64)
}

/// SQLite's "no limit".
fn limit(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

pub(crate) fn get_flow(conn: &Connection, key: &FlowKey) -> Result<Option<FlowRecord>, DbError> {
    let mut stmt = conn.prepare_cached(GET_FLOW)?;
    let mut rows = stmt.query(params![key.flow_name, key.timeperiod.to_string()])?;
    match rows.next()? {
        Some(row) => Ok(Some(decode_flow(row)?)),
        None => Ok(None),
    }
}

pub(crate) fn list_flows(conn: &Connection, query: &FlowQuery) -> Result<Vec<FlowRecord>, DbError> {
    let mut stmt = conn.prepare_cached(LIST_FLOWS)?;
    let mut rows = stmt.query(params![
        query.flow_name,
        query.state.map(FlowState::as_str),
        query.from.map(|t| t.to_string()),
        query.to.map(|t| t.to_string()),
        limit(query.limit),
        i64::try_from(query.offset).unwrap_or(i64::MAX),
    ])?;
    let mut flows = Vec::new();
    while let Some(row) = rows.next()? {
        flows.push(decode_flow(row)?);
    }
    Ok(flows)
}

pub(crate) fn get_steps(conn: &Connection, key: &FlowKey) -> Result<Vec<StepRecord>, DbError> {
    let mut stmt = conn.prepare_cached(GET_STEPS)?;
    let mut rows = stmt.query(params![key.flow_name, key.timeperiod.to_string()])?;
    let mut steps = Vec::new();
    while let Some(row) = rows.next()? {
        steps.push(decode_step(row)?);
    }
    Ok(steps)
}

/// The earliest stored timestamp, used when `now - ttl` falls off the
/// calendar (then no heartbeat is stale) and as a released lease's
/// heartbeat.
const BEFORE_EVERYTHING: &str = "0000-01-01T00:00:00.000000Z";

pub(crate) fn acquire_lease(
    conn: &Connection,
    key: &FlowKey,
    owner: &str,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<LeaseOutcome, DbError> {
    if owner.is_empty() {
        return Err(DbError::Internal(
            "a lease owner must not be empty (it marks a released lease)".to_string(),
        ));
    }
    let cutoff = TimeDelta::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_sub_signed(ttl))
        .map(|t| timestamp(&t))
        .filter(|t| t.len() == BEFORE_EVERYTHING.len())
        .unwrap_or_else(|| BEFORE_EVERYTHING.to_string());
    let timeperiod = key.timeperiod.to_string();
    let token: Option<i64> = conn
        .prepare_cached(ACQUIRE_LEASE)?
        .query_row(
            params![key.flow_name, timeperiod, owner, timestamp(&now), cutoff],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(token) = token {
        return Ok(LeaseOutcome::Acquired(Lease {
            key: key.clone(),
            owner: owner.to_string(),
            token: u64::try_from(token).unwrap_or(0),
        }));
    }
    // Same transaction as the write above: the holder cannot change between.
    match get_lease(conn, key)? {
        Some(LeaseInfo {
            owner: Some(owner),
            heartbeat_at,
            ..
        }) => Ok(LeaseOutcome::HeldBy {
            owner,
            heartbeat_at,
        }),
        _ => Err(DbError::Internal(
            "the lease was neither acquired nor held by anyone".to_string(),
        )),
    }
}

pub(crate) fn get_lease(conn: &Connection, key: &FlowKey) -> Result<Option<LeaseInfo>, DbError> {
    let mut stmt = conn.prepare_cached(GET_LEASE)?;
    let mut rows = stmt.query(params![key.flow_name, key.timeperiod.to_string()])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let f = Fields {
        row,
        what: "lease",
        key: key.to_string(),
    };
    let owner = f.text(0, "owner")?;
    let token = f.int(1, "token")?;
    Ok(Some(LeaseInfo {
        owner: Some(owner).filter(|o| !o.is_empty()),
        token: u64::try_from(token).map_err(|_| f.corrupt("token", "negative"))?,
        acquired_at: f.timestamp(2, "acquired_at")?,
        heartbeat_at: f.timestamp(3, "heartbeat_at")?,
    }))
}

pub(crate) fn renew_lease(
    conn: &Connection,
    lease: &Lease,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let changed = conn.prepare_cached(RENEW_LEASE)?.execute(params![
        lease.key.flow_name,
        lease.key.timeperiod.to_string(),
        lease.owner,
        i64::try_from(lease.token).unwrap_or(-1),
        timestamp(&now)
    ])?;
    Ok(changed > 0)
}

pub(crate) fn release_lease(conn: &Connection, lease: &Lease) -> Result<(), DbError> {
    conn.prepare_cached(RELEASE_LEASE)?.execute(params![
        lease.key.flow_name,
        lease.key.timeperiod.to_string(),
        lease.owner,
        i64::try_from(lease.token).unwrap_or(-1),
        BEFORE_EVERYTHING,
    ])?;
    Ok(())
}

macro_rules! job_columns {
    () => {
        "id, process_name, time_qualifier, timeperiod, state, related_unit_of_work, event_log, \
         number_of_failures, run_mode, not_before, updated_at, depends_on_flows, due_at, started_at"
    };
}

const GET_JOB: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM job WHERE process_name = ?1 AND time_qualifier = ?2 AND timeperiod = ?3"
);

const INSERT_JOB: &str = "
INSERT INTO job (process_name, time_qualifier, timeperiod, state, related_unit_of_work, event_log,
                 number_of_failures, run_mode, not_before, updated_at, depends_on_flows, due_at,
                 started_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
ON CONFLICT (process_name, time_qualifier, timeperiod) DO NOTHING";

const UPSERT_JOB: &str = "
INSERT INTO job (process_name, time_qualifier, timeperiod, state, related_unit_of_work, event_log,
                 number_of_failures, run_mode, not_before, updated_at, depends_on_flows, due_at,
                 started_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
ON CONFLICT (process_name, time_qualifier, timeperiod) DO UPDATE SET
    state                = excluded.state,
    related_unit_of_work = excluded.related_unit_of_work,
    event_log            = excluded.event_log,
    number_of_failures   = excluded.number_of_failures,
    run_mode             = excluded.run_mode,
    not_before           = excluded.not_before,
    updated_at           = excluded.updated_at,
    depends_on_flows     = excluded.depends_on_flows,
    due_at               = excluded.due_at,
    started_at           = excluded.started_at";

/// Counted on the `job_tally` index alone.
const TALLY_JOBS: &str = "
SELECT state, number_of_failures, COUNT(*) FROM job
WHERE process_name = ?1 AND time_qualifier = ?2
GROUP BY state, number_of_failures";

/// Answered from `flow_sla_missed` alone (its `WHERE` implies the index's).
pub(crate) const COUNT_SLA_MISSED: &str =
    "SELECT COUNT(*) FROM flow WHERE flow_name = ?1 AND sla_missed_at IS NOT NULL";

fn write_job(conn: &Connection, statement: &str, job: &TimetableJob) -> Result<(), DbError> {
    conn.prepare_cached(statement)?.execute(params![
        job.process_name,
        job.time_qualifier.as_str(),
        job.timeperiod.to_string(),
        job.state.as_str(),
        job.related_unit_of_work.as_ref().map(RecordId::as_str),
        json(&job.event_log, "the job's event log")?,
        job.number_of_failures,
        job.run_mode.map(RunMode::as_str),
        opt_timestamp(&job.not_before),
        opt_timestamp(&job.updated_at),
        json(&job.depends_on_flows, "the job's depends_on_flows")?,
        opt_timestamp(&job.due_at),
        opt_timestamp(&job.started_at),
    ])?;
    Ok(())
}

pub(crate) fn get_job(conn: &Connection, key: &JobKey) -> Result<Option<TimetableJob>, DbError> {
    let mut stmt = conn.prepare_cached(GET_JOB)?;
    let mut rows = stmt.query(params![
        key.process_name,
        key.time_qualifier.as_str(),
        key.timeperiod.to_string()
    ])?;
    match rows.next()? {
        Some(row) => decode_job(row).map(Some),
        None => Ok(None),
    }
}

pub(crate) fn create_job(conn: &Connection, job: &TimetableJob) -> Result<TimetableJob, DbError> {
    write_job(conn, INSERT_JOB, job)?;
    get_job(conn, &job.key())?
        .ok_or_else(|| DbError::Internal(format!("{} vanished after its insert", job.key())))
}

pub(crate) fn save_job(
    conn: &Connection,
    lease: &Lease,
    job: &TimetableJob,
) -> Result<TimetableJob, DbError> {
    check_fence(conn, lease)?;
    if job.key().claim_key() != lease.key {
        return Err(DbError::Internal(format!(
            "{} is not claimed by the lease of {}",
            job.key(),
            lease.key
        )));
    }
    write_job(conn, UPSERT_JOB, job)?;
    get_job(conn, &job.key())?
        .ok_or_else(|| DbError::Internal(format!("{} vanished after its write", job.key())))
}

/// The statement holds only the filters asked for, so SQLite picks an
/// index for them (a timetable's tick asks for the active states, and
/// must cost what the active Jobs cost, not what every finished one
/// does): `(?1 IS NULL OR ...)` for every filter scanned the whole table.
pub(crate) fn list_jobs(conn: &Connection, query: &JobQuery) -> Result<Vec<TimetableJob>, DbError> {
    use rusqlite::types::Value;
    let mut sql = String::from(concat!("SELECT ", job_columns!(), " FROM job WHERE 1"));
    let mut values: Vec<Value> = Vec::new();
    let mut filter = |clause: &str, value: Value| {
        sql.push_str(clause);
        values.push(value);
    };
    if let Some(name) = &query.process_name {
        filter(" AND process_name = ?", Value::Text(name.clone()));
    }
    if let Some(q) = query.time_qualifier {
        filter(" AND time_qualifier = ?", Value::Text(q.as_str().into()));
    }
    if let Some(from) = query.from {
        filter(" AND timeperiod >= ?", Value::Text(from.to_string()));
    }
    if let Some(to) = query.to {
        filter(" AND timeperiod < ?", Value::Text(to.to_string()));
    }
    if !query.states.is_empty() {
        let marks = vec!["?"; query.states.len()].join(", ");
        sql.push_str(&format!(" AND state IN ({marks})"));
        values.extend(query.states.iter().map(|s| Value::Text(s.as_str().into())));
    }
    sql.push_str(if query.newest_first {
        " ORDER BY timeperiod DESC, process_name"
    } else {
        " ORDER BY timeperiod, process_name"
    });
    if let Some(limit) = query.limit {
        sql.push_str(" LIMIT ?");
        values.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
    let mut jobs = Vec::new();
    while let Some(row) = rows.next()? {
        jobs.push(decode_job(row)?);
    }
    Ok(jobs)
}

fn decode_job(row: &Row<'_>) -> Result<TimetableJob, DbError> {
    let f = Fields {
        row,
        what: "job record",
        key: row_key(row, 1, 3, None),
    };
    let failures = f.int(7, "number_of_failures")?;
    Ok(TimetableJob {
        id: Some(RecordId::from(f.int(0, "id")?)),
        process_name: f.text(1, "process_name")?,
        time_qualifier: f.state(2, "time_qualifier", parse_qualifier)?,
        timeperiod: f.timeperiod(3, "timeperiod")?,
        state: f.state(4, "state", JobState::parse)?,
        related_unit_of_work: f.opt_text(5, "related_unit_of_work")?.map(RecordId::new),
        event_log: f.json::<Vec<String>>(6, "event_log")?,
        number_of_failures: u32::try_from(failures)
            .map_err(|_| f.corrupt("number_of_failures", format!("{failures} is not a count")))?,
        run_mode: match f.opt_text(8, "run_mode")? {
            Some(text) => Some(
                RunMode::parse(&text)
                    .ok_or_else(|| f.corrupt("run_mode", format!("unknown value '{text}'")))?,
            ),
            None => None,
        },
        not_before: f.opt_timestamp(9, "not_before")?,
        updated_at: f.opt_timestamp(10, "updated_at")?,
        depends_on_flows: f.json::<Vec<String>>(11, "depends_on_flows")?,
        due_at: f.opt_timestamp(12, "due_at")?,
        started_at: f.opt_timestamp(13, "started_at")?,
    })
}

pub(crate) fn tally_jobs(
    conn: &Connection,
    process_name: &str,
    q: TimeQualifier,
) -> Result<Vec<JobTally>, DbError> {
    let mut stmt = conn.prepare_cached(TALLY_JOBS)?;
    let mut rows = stmt.query(params![process_name, q.as_str()])?;
    let mut tally = Vec::new();
    while let Some(row) = rows.next()? {
        let f = Fields {
            row,
            what: "job tally",
            key: process_name.to_string(),
        };
        let failures = f.int(1, "number_of_failures")?;
        let jobs = f.int(2, "count")?;
        tally.push(JobTally {
            state: f.state(0, "state", JobState::parse)?,
            number_of_failures: u32::try_from(failures).map_err(|_| {
                f.corrupt("number_of_failures", format!("{failures} is not a count"))
            })?,
            jobs: u64::try_from(jobs).unwrap_or(0),
        });
    }
    Ok(tally)
}

pub(crate) fn count_sla_missed(conn: &Connection, flow_name: &str) -> Result<u64, DbError> {
    let count: i64 = conn
        .prepare_cached(COUNT_SLA_MISSED)?
        .query_row(params![flow_name], |row| row.get(0))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

fn parse_qualifier(text: &str) -> Option<TimeQualifier> {
    [
        TimeQualifier::Hourly,
        TimeQualifier::Daily,
        TimeQualifier::Monthly,
        TimeQualifier::Yearly,
    ]
    .into_iter()
    .find(|q| q.as_str() == text)
}

/// Reads the columns of one row, reporting anything unreadable as
/// [`DbError::Corrupt`] for `key`.
struct Fields<'r> {
    row: &'r Row<'r>,
    what: &'static str,
    key: String,
}

impl Fields<'_> {
    fn corrupt(&self, column: &str, message: impl std::fmt::Display) -> DbError {
        DbError::Corrupt {
            what: self.what,
            key: self.key.clone(),
            message: format!("column {column}: {message}"),
        }
    }

    fn opt_text(&self, index: usize, column: &str) -> Result<Option<String>, DbError> {
        self.row
            .get::<_, Option<String>>(index)
            .map_err(|e| self.corrupt(column, e))
    }

    fn text(&self, index: usize, column: &str) -> Result<String, DbError> {
        self.opt_text(index, column)?
            .ok_or_else(|| self.corrupt(column, "NULL where a value is required"))
    }

    fn opt_int(&self, index: usize, column: &str) -> Result<Option<i64>, DbError> {
        self.row
            .get::<_, Option<i64>>(index)
            .map_err(|e| self.corrupt(column, e))
    }

    fn int(&self, index: usize, column: &str) -> Result<i64, DbError> {
        self.opt_int(index, column)?
            .ok_or_else(|| self.corrupt(column, "NULL where a value is required"))
    }

    fn timeperiod(&self, index: usize, column: &str) -> Result<Timeperiod, DbError> {
        self.text(index, column)?
            .parse()
            .map_err(|e| self.corrupt(column, e))
    }

    fn parse_timestamp(&self, text: &str, column: &str) -> Result<DateTime<Utc>, DbError> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| self.corrupt(column, format!("'{text}' is not an RFC 3339 time: {e}")))
    }

    fn timestamp(&self, index: usize, column: &str) -> Result<DateTime<Utc>, DbError> {
        let text = self.text(index, column)?;
        self.parse_timestamp(&text, column)
    }

    fn opt_timestamp(&self, index: usize, column: &str) -> Result<Option<DateTime<Utc>>, DbError> {
        match self.opt_text(index, column)? {
            Some(text) => self.parse_timestamp(&text, column).map(Some),
            None => Ok(None),
        }
    }

    fn opt_json<T: serde::de::DeserializeOwned>(
        &self,
        index: usize,
        column: &str,
    ) -> Result<Option<T>, DbError> {
        match self.opt_text(index, column)? {
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| self.corrupt(column, format!("not the expected JSON: {e}"))),
            None => Ok(None),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        index: usize,
        column: &str,
    ) -> Result<T, DbError> {
        self.opt_json(index, column)?
            .ok_or_else(|| self.corrupt(column, "NULL where a value is required"))
    }

    fn state<T>(
        &self,
        index: usize,
        column: &str,
        parse: fn(&str) -> Option<T>,
    ) -> Result<T, DbError> {
        let text = self.text(index, column)?;
        parse(&text).ok_or_else(|| self.corrupt(column, format!("unknown value '{text}'")))
    }
}

/// The key of a row for error messages, readable even when the row is not.
fn row_key(row: &Row<'_>, name: usize, timeperiod: usize, step: Option<usize>) -> String {
    let text = |i: usize| {
        row.get::<_, String>(i)
            .unwrap_or_else(|_| "<unreadable>".to_string())
    };
    match step {
        Some(step) => step_key(&text(name), &text(timeperiod), &text(step)),
        None => format!("[{}, {}]", text(name), text(timeperiod)),
    }
}

fn decode_flow(row: &Row<'_>) -> Result<FlowRecord, DbError> {
    let f = Fields {
        row,
        what: "flow record",
        key: row_key(row, 1, 2, None),
    };
    Ok(FlowRecord {
        id: Some(RecordId::from(f.int(0, "id")?)),
        flow_name: f.text(1, "flow_name")?,
        timeperiod: f.timeperiod(2, "timeperiod")?,
        start_timeperiod: f.timeperiod(3, "start_timeperiod")?,
        end_timeperiod: f.timeperiod(4, "end_timeperiod")?,
        state: f.state(5, "state", FlowState::parse)?,
        run_mode: f.state(6, "run_mode", RunMode::parse)?,
        created_at: f.timestamp(7, "created_at")?,
        started_at: f.opt_timestamp(8, "started_at")?,
        finished_at: f.opt_timestamp(9, "finished_at")?,
        graph_hash: f.opt_text(10, "graph_hash")?,
        sla_missed_at: f.opt_timestamp(11, "sla_missed_at")?,
        trace_parent: f.opt_text(12, "trace_parent")?,
    })
}

fn decode_step(row: &Row<'_>) -> Result<StepRecord, DbError> {
    let f = Fields {
        row,
        what: "step record",
        key: row_key(row, 1, 3, Some(2)),
    };
    let attempts = f.int(12, "attempts")?;
    let actions_done = f.int(14, "actions_done")?;
    Ok(StepRecord {
        id: Some(RecordId::from(f.int(0, "id")?)),
        flow_name: f.text(1, "flow_name")?,
        step_name: f.text(2, "step_name")?,
        timeperiod: f.timeperiod(3, "timeperiod")?,
        state: f.state(4, "state", StepState::parse)?,
        created_at: f.timestamp(5, "created_at")?,
        started_at: f.opt_timestamp(6, "started_at")?,
        finished_at: f.opt_timestamp(7, "finished_at")?,
        related_flow: f.opt_int(8, "related_flow")?.map(RecordId::from),
        pre_state: f.state(9, "pre_state", ActionSetState::parse)?,
        main_state: f.state(10, "main_state", ActionSetState::parse)?,
        post_state: f.state(11, "post_state", ActionSetState::parse)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| f.corrupt("attempts", format!("{attempts} is not a count")))?,
        error: f.opt_text(13, "error")?,
        actions_done: u32::try_from(actions_done)
            .map_err(|_| f.corrupt("actions_done", format!("{actions_done} is not a count")))?,
        job: f.opt_json::<JobRecord>(15, "job")?,
        rollbacks: f.json::<Vec<RollbackRecord>>(16, "rollbacks")?,
    })
}

fn decode_run(row: &Row<'_>) -> Result<RunRecord, DbError> {
    let f = Fields {
        row,
        what: "run record",
        key: row_key(row, 1, 2, None),
    };
    let token = f.int(6, "token")?;
    Ok(RunRecord {
        id: Some(RecordId::from(f.int(0, "id")?)),
        flow_name: f.text(1, "flow_name")?,
        timeperiod: f.timeperiod(2, "timeperiod")?,
        mode: f.state(3, "mode", RunMode::parse)?,
        target: f.opt_text(4, "target")?,
        owner: f.text(5, "owner")?,
        token: u64::try_from(token).map_err(|_| f.corrupt("token", "negative"))?,
        host: f.text(7, "host")?,
        user: f.text(8, "user")?,
        started_at: f.timestamp(9, "started_at")?,
        finished_at: f.opt_timestamp(10, "finished_at")?,
        outcome: match f.opt_text(11, "outcome")? {
            Some(text) => Some(
                FlowState::parse(&text)
                    .ok_or_else(|| f.corrupt("outcome", format!("unknown value '{text}'")))?,
            ),
            None => None,
        },
        steps: f.json::<Vec<RunStep>>(12, "steps")?,
        error: f.opt_text(13, "error")?,
    })
}

fn decode_cluster(row: &Row<'_>) -> Result<ClusterRecord, DbError> {
    let f = Fields {
        row,
        what: "cluster record",
        key: row_key(row, 1, 2, None),
    };
    Ok(ClusterRecord {
        id: Some(RecordId::from(f.int(0, "id")?)),
        flow_name: f.text(1, "flow_name")?,
        timeperiod: f.timeperiod(2, "timeperiod")?,
        run: RecordId::from(f.int(3, "run")?),
        handle: ClusterHandle {
            kind: f.text(4, "kind")?,
            name: f.text(5, "name")?,
            backend_id: f.text(6, "backend_id")?,
            reused: f.int(7, "reused")? != 0,
            details: f.json::<BTreeMap<String, String>>(8, "details")?,
        },
        state: f.state(9, "state", ClusterState::parse)?,
        launched_at: f.timestamp(10, "launched_at")?,
        updated_at: f.timestamp(11, "updated_at")?,
        message: f.opt_text(12, "message")?,
        usage: f.json::<ClusterUsage>(13, "usage")?,
    })
}

fn decode_log(row: &Row<'_>) -> Result<StoredLogLine, DbError> {
    let f = Fields {
        row,
        what: "log line",
        key: row_key(row, 1, 2, None),
    };
    let position = f.int(0, "position")?;
    Ok(StoredLogLine {
        position: u64::try_from(position).map_err(|_| f.corrupt("position", "negative"))?,
        line: LogLine {
            flow_name: f.text(1, "flow_name")?,
            timeperiod: f.timeperiod(2, "timeperiod")?,
            run: RecordId::from(f.int(3, "run")?),
            step: f.opt_text(4, "step")?,
            logger: f.text(5, "logger")?,
            level: f.state(6, "level", LogLevel::parse)?,
            at: f.timestamp(7, "at")?,
            message: f.text(8, "message")?,
        },
    })
}

const GET_SHARED_CLUSTER: &str = "SELECT record FROM shared_cluster WHERE kind = ?1 AND name = ?2";
const PUT_SHARED_CLUSTER: &str =
    "INSERT INTO shared_cluster (kind, name, record) VALUES (?1, ?2, ?3) \
     ON CONFLICT (kind, name) DO UPDATE SET record = excluded.record";
const DELETE_SHARED_CLUSTER: &str = "DELETE FROM shared_cluster WHERE kind = ?1 AND name = ?2";

fn get_shared_cluster(
    conn: &Connection,
    key: &SharedClusterKey,
) -> Result<Option<SharedCluster>, DbError> {
    let text: Option<String> = conn
        .prepare_cached(GET_SHARED_CLUSTER)?
        .query_row(params![key.kind, key.name], |row| row.get(0))
        .optional()?;
    text.map(|text| {
        serde_json::from_str(&text).map_err(|e| DbError::Corrupt {
            what: "shared cluster record",
            key: key.to_string(),
            message: e.to_string(),
        })
    })
    .transpose()
}

fn put_shared_cluster(
    conn: &Connection,
    key: &SharedClusterKey,
    record: Option<&SharedCluster>,
) -> Result<(), DbError> {
    match record {
        Some(record) => {
            let text = json(record, "the shared cluster record")?;
            conn.prepare_cached(PUT_SHARED_CLUSTER)?
                .execute(params![key.kind, key.name, text])?;
        }
        None => {
            conn.prepare_cached(DELETE_SHARED_CLUSTER)?
                .execute(params![key.kind, key.name])?;
        }
    }
    Ok(())
}

/// True while `user`'s lease is live, read in the caller's transaction.
fn user_live(
    conn: &Connection,
    user: &ClusterUser,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<bool, DbError> {
    Ok(user.is_live(get_lease(conn, &user.key())?.as_ref(), now, ttl))
}

/// The liveness of every user `record` names, so the pure rule can ask.
fn live_users(
    conn: &Connection,
    record: Option<&SharedCluster>,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<Vec<ClusterUser>, DbError> {
    let mut live = Vec::new();
    for user in record.map(SharedCluster::named_users).unwrap_or_default() {
        if user_live(conn, user, now, ttl)? {
            live.push(user.clone());
        }
    }
    Ok(live)
}

pub(crate) fn claim_cluster(
    conn: &Connection,
    lease: &Lease,
    run: &RecordId,
    key: &SharedClusterKey,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<ClusterClaim, DbError> {
    check_fence(conn, lease)?;
    let existing = get_shared_cluster(conn, key)?;
    let live = live_users(conn, existing.as_ref(), now, ttl)?;
    let me = ClusterUser::new(&lease.key, run.clone(), lease.token);
    let (claim, record) = SharedCluster::claim(existing, key, &me, |u| live.contains(u));
    if let Some(record) = record {
        put_shared_cluster(conn, key, Some(&record))?;
    }
    Ok(claim)
}

pub(crate) fn set_cluster_handle(
    conn: &Connection,
    lease: &Lease,
    key: &SharedClusterKey,
    handle: &ClusterHandle,
) -> Result<(), DbError> {
    check_fence(conn, lease)?;
    match get_shared_cluster(conn, key)? {
        Some(mut record)
            if record.launcher.key() == lease.key && record.launcher.token == lease.token =>
        {
            record.handle = Some(handle.clone());
            put_shared_cluster(conn, key, Some(&record))
        }
        _ => Err(DbError::Internal(format!(
            "{key}: this run is not the one launching it"
        ))),
    }
}

pub(crate) fn release_cluster(
    conn: &Connection,
    lease: &Lease,
    key: &SharedClusterKey,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<ClusterRelease, DbError> {
    check_fence(conn, lease)?;
    let Some(existing) = get_shared_cluster(conn, key)? else {
        return Ok(ClusterRelease::Last);
    };
    let live = live_users(conn, Some(&existing), now, ttl)?;
    let me = ClusterUser::new(&lease.key, RecordId::new(""), lease.token);
    let (answer, record) = existing.release(&me, |u| live.contains(u));
    put_shared_cluster(conn, key, record.as_ref())?;
    Ok(answer)
}

pub(crate) fn forget_cluster(
    conn: &Connection,
    lease: &Lease,
    key: &SharedClusterKey,
    backend_id: &str,
) -> Result<(), DbError> {
    check_fence(conn, lease)?;
    let names_it = get_shared_cluster(conn, key)?
        .is_some_and(|r| r.handle.is_some_and(|h| h.backend_id == backend_id));
    if names_it {
        put_shared_cluster(conn, key, None)?;
    }
    Ok(())
}
