//! The schema, the statements and the mapping between rows and records.
//!
//! Values are stored as text a person can read with the `sqlite3` shell:
//! states as their `as_str()` strings, timeperiods as their 10 digits and
//! timestamps as RFC 3339 UTC with microseconds
//! (`2026-11-28T07:00:00.123456Z`). That timestamp form has a fixed width, so
//! text order is time order, which the lease's staleness test relies on.

use crate::writer::DbError;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use flow_core::{
    ActionSetState, FlowKey, FlowRecord, FlowState, LeaseOutcome, RunMode, StepRecord, StepState,
    Timeperiod,
};
use rusqlite::{params, Connection, Row};
use std::time::Duration;

/// The `user_version` this build writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = 1;

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
    UNIQUE (flow_name, timeperiod, step_name)
);
CREATE TABLE IF NOT EXISTS lease (
    flow_name    TEXT NOT NULL,
    timeperiod   TEXT NOT NULL,
    owner        TEXT NOT NULL,
    acquired_at  TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    PRIMARY KEY (flow_name, timeperiod)
);
";

/// The columns `decode_flow` reads, in its order.
macro_rules! flow_columns {
    () => {
        "id, flow_name, timeperiod, start_timeperiod, end_timeperiod, state, run_mode, \
         created_at, started_at, finished_at"
    };
}

const GET_FLOW: &str = concat!(
    "SELECT ",
    flow_columns!(),
    " FROM flow WHERE flow_name = ?1 AND timeperiod = ?2"
);

const LIST_ALL: &str = concat!(
    "SELECT ",
    flow_columns!(),
    " FROM flow ORDER BY timeperiod DESC, flow_name, id"
);

const LIST_NAMED: &str = concat!(
    "SELECT ",
    flow_columns!(),
    " FROM flow WHERE flow_name = ?1 ORDER BY timeperiod DESC, id"
);

const UPSERT_FLOW: &str = "
INSERT INTO flow (flow_name, timeperiod, start_timeperiod, end_timeperiod, state, run_mode,
                  created_at, started_at, finished_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (flow_name, timeperiod) DO UPDATE SET
    start_timeperiod = excluded.start_timeperiod,
    end_timeperiod   = excluded.end_timeperiod,
    state            = excluded.state,
    run_mode         = excluded.run_mode,
    created_at       = excluded.created_at,
    started_at       = excluded.started_at,
    finished_at      = excluded.finished_at
RETURNING id";

const UPSERT_STEP: &str = "
INSERT INTO step (flow_name, step_name, timeperiod, state, created_at, started_at, finished_at,
                  related_flow, pre_state, main_state, post_state, attempts, error)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
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
    error        = excluded.error
RETURNING id";

const DELETE_STEPS: &str = "DELETE FROM step WHERE flow_name = ?1 AND timeperiod = ?2";

const GET_STEPS: &str = "
SELECT id, flow_name, step_name, timeperiod, state, created_at, started_at, finished_at,
       related_flow, pre_state, main_state, post_state, attempts, error
FROM step WHERE flow_name = ?1 AND timeperiod = ?2 ORDER BY id";

/// One conditional write: inserts, or takes over when the caller already
/// holds the lease or the holder's heartbeat is at or before the cutoff
/// (`?5`). Zero changed rows means someone else holds it.
const ACQUIRE_LEASE: &str = "
INSERT INTO lease (flow_name, timeperiod, owner, acquired_at, heartbeat_at)
VALUES (?1, ?2, ?3, ?4, ?4)
ON CONFLICT (flow_name, timeperiod) DO UPDATE SET
    owner        = excluded.owner,
    acquired_at  = CASE WHEN lease.owner = excluded.owner THEN lease.acquired_at
                        ELSE excluded.acquired_at END,
    heartbeat_at = excluded.heartbeat_at
WHERE lease.owner = excluded.owner OR lease.heartbeat_at <= ?5";

const LEASE_HOLDER: &str =
    "SELECT owner, heartbeat_at FROM lease WHERE flow_name = ?1 AND timeperiod = ?2";

const RENEW_LEASE: &str =
    "UPDATE lease SET heartbeat_at = ?4 WHERE flow_name = ?1 AND timeperiod = ?2 AND owner = ?3";

const RELEASE_LEASE: &str =
    "DELETE FROM lease WHERE flow_name = ?1 AND timeperiod = ?2 AND owner = ?3";

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
    LEASE_HOLDER,
    RENEW_LEASE,
    RELEASE_LEASE,
    GET_FLOW,
    LIST_ALL,
    LIST_NAMED,
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
        ],
        |row| row.get(0),
    )?;
    Ok(FlowRecord {
        id: Some(id),
        ..flow.clone()
    })
}

pub(crate) fn upsert_step(
    conn: &Connection,
    step: &StepRecord,
    related_flow: Option<i64>,
) -> Result<i64, DbError> {
    let id = conn.prepare_cached(UPSERT_STEP)?.query_row(
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
        ],
        |row| row.get(0),
    )?;
    Ok(id)
}

/// `begin_run`'s work, inside the group transaction. Steps without a
/// `related_flow` get the flow's id: at the first run the caller cannot
/// know it yet.
pub(crate) fn begin_run(
    conn: &Connection,
    flow: &FlowRecord,
    purge_steps: bool,
    steps: &[StepRecord],
) -> Result<FlowRecord, DbError> {
    let saved = upsert_flow(conn, flow)?;
    if purge_steps {
        conn.prepare_cached(DELETE_STEPS)?
            .execute(params![flow.flow_name, flow.timeperiod.to_string()])?;
    }
    for step in steps {
        upsert_step(conn, step, step.related_flow.or(saved.id))?;
    }
    Ok(saved)
}

pub(crate) fn get_flow(conn: &Connection, key: &FlowKey) -> Result<Option<FlowRecord>, DbError> {
    let mut stmt = conn.prepare_cached(GET_FLOW)?;
    let mut rows = stmt.query(params![key.flow_name, key.timeperiod.to_string()])?;
    match rows.next()? {
        Some(row) => Ok(Some(decode_flow(row)?)),
        None => Ok(None),
    }
}

pub(crate) fn list_flows(
    conn: &Connection,
    flow_name: Option<&str>,
) -> Result<Vec<FlowRecord>, DbError> {
    let mut stmt = conn.prepare_cached(if flow_name.is_some() {
        LIST_NAMED
    } else {
        LIST_ALL
    })?;
    let mut rows = match flow_name {
        Some(name) => stmt.query([name])?,
        None => stmt.query([])?,
    };
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
/// calendar: then no heartbeat is stale.
const BEFORE_EVERYTHING: &str = "0000-01-01T00:00:00.000000Z";

pub(crate) fn acquire_lease(
    conn: &Connection,
    key: &FlowKey,
    owner: &str,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<LeaseOutcome, DbError> {
    let cutoff = TimeDelta::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_sub_signed(ttl))
        .map(|t| timestamp(&t))
        .filter(|t| t.len() == BEFORE_EVERYTHING.len())
        .unwrap_or_else(|| BEFORE_EVERYTHING.to_string());
    let timeperiod = key.timeperiod.to_string();
    let changed = conn.prepare_cached(ACQUIRE_LEASE)?.execute(params![
        key.flow_name,
        timeperiod,
        owner,
        timestamp(&now),
        cutoff
    ])?;
    if changed > 0 {
        return Ok(LeaseOutcome::Acquired);
    }
    // Same transaction as the write above: the holder cannot change between.
    let mut stmt = conn.prepare_cached(LEASE_HOLDER)?;
    let mut rows = stmt.query(params![key.flow_name, timeperiod])?;
    let Some(row) = rows.next()? else {
        return Err(DbError::Internal(
            "the lease was neither acquired nor held by anyone".to_string(),
        ));
    };
    let fields = Fields {
        row,
        what: "lease",
        key: key.to_string(),
    };
    Ok(LeaseOutcome::HeldBy {
        owner: fields.text(0, "owner")?,
        heartbeat_at: fields.timestamp(1, "heartbeat_at")?,
    })
}

pub(crate) fn renew_lease(
    conn: &Connection,
    key: &FlowKey,
    owner: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let changed = conn.prepare_cached(RENEW_LEASE)?.execute(params![
        key.flow_name,
        key.timeperiod.to_string(),
        owner,
        timestamp(&now)
    ])?;
    Ok(changed > 0)
}

pub(crate) fn release_lease(conn: &Connection, key: &FlowKey, owner: &str) -> Result<(), DbError> {
    conn.prepare_cached(RELEASE_LEASE)?.execute(params![
        key.flow_name,
        key.timeperiod.to_string(),
        owner
    ])?;
    Ok(())
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
        id: Some(f.int(0, "id")?),
        flow_name: f.text(1, "flow_name")?,
        timeperiod: f.timeperiod(2, "timeperiod")?,
        start_timeperiod: f.timeperiod(3, "start_timeperiod")?,
        end_timeperiod: f.timeperiod(4, "end_timeperiod")?,
        state: f.state(5, "state", FlowState::parse)?,
        run_mode: f.state(6, "run_mode", RunMode::parse)?,
        created_at: f.timestamp(7, "created_at")?,
        started_at: f.opt_timestamp(8, "started_at")?,
        finished_at: f.opt_timestamp(9, "finished_at")?,
    })
}

fn decode_step(row: &Row<'_>) -> Result<StepRecord, DbError> {
    let f = Fields {
        row,
        what: "step record",
        key: row_key(row, 1, 3, Some(2)),
    };
    let attempts = f.int(12, "attempts")?;
    Ok(StepRecord {
        id: Some(f.int(0, "id")?),
        flow_name: f.text(1, "flow_name")?,
        step_name: f.text(2, "step_name")?,
        timeperiod: f.timeperiod(3, "timeperiod")?,
        state: f.state(4, "state", StepState::parse)?,
        created_at: f.timestamp(5, "created_at")?,
        started_at: f.opt_timestamp(6, "started_at")?,
        finished_at: f.opt_timestamp(7, "finished_at")?,
        related_flow: f.opt_int(8, "related_flow")?,
        pre_state: f.state(9, "pre_state", ActionSetState::parse)?,
        main_state: f.state(10, "main_state", ActionSetState::parse)?,
        post_state: f.state(11, "post_state", ActionSetState::parse)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| f.corrupt("attempts", format!("{attempts} is not a count")))?,
        error: f.opt_text(13, "error")?,
    })
}
