//! `mongo-chain-N` and `mongo-crowded-chain-N`: the chain on the MongoDB
//! store, once per server.
//!
//! The servers come from the environment, never the argument vector (a URI
//! may carry a password): `FLOW_BENCH_MONGO="NAME=URI NAME=URI"`, which
//! `cargo xtask bench` sets for the nx-27017 and SecantusDB it starts. The
//! parent runs each MongoDB shape once per server, each in a child given
//! `--mongo-server NAME`; the row is named `SHAPE on NAME`. Each run works
//! in a fresh database, dropped at the end.

use crate::measure::{engine_run, flow_runtime, BenchResult, Setup};
use crate::shape::{step_name, Shape, CROWD};
use flow_core::{FlowKey, FlowStore, StepRecord, StepState, Timeperiod};
use flow_store_mongo::bson::{self, Document};
use flow_store_mongo::{MongoOptions, MongoStore, StepDoc};
use std::sync::Arc;

/// The environment variable naming the servers.
pub const SERVERS_ENV: &str = "FLOW_BENCH_MONGO";

/// The servers in [`SERVERS_ENV`]: (name, URI).
pub fn servers() -> Result<Vec<(String, String)>, String> {
    let text = std::env::var(SERVERS_ENV).unwrap_or_default();
    text.split_whitespace()
        .map(|entry| {
            entry
                .split_once('=')
                .map(|(name, uri)| (name.to_string(), uri.to_string()))
                .ok_or_else(|| format!("{SERVERS_ENV}: '{entry}' is not NAME=URI"))
        })
        .collect()
}

/// Measures a MongoDB shape on the server `name` of [`servers`].
pub fn measure(shape: Shape, setup: &Setup, name: &str) -> BenchResult<crate::Row> {
    let Shape::MongoChain { crowded, .. } = shape else {
        return Err(format!("{shape} is not a MongoDB shape").into());
    };
    let uri = servers()?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, uri)| uri)
        .ok_or_else(|| format!("{SERVERS_ENV} names no server {name}"))?;
    flow_engine::logging::init(Some("warn"));
    let dir = setup.workdir()?;
    let runtime = flow_runtime()?;
    let database = format!(
        "flow_bench_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let store = runtime.block_on(MongoStore::connect(&MongoOptions::new(&uri, &database)))?;
    let timeperiod: Timeperiod = crate::measure::TIMEPERIOD.parse()?;
    let crowd = if crowded {
        runtime.block_on(crowd(&store, shape))?
    } else {
        0
    };
    let transactions = store.uses_transactions();
    let run = engine_run(
        shape,
        setup,
        dir.path(),
        runtime,
        Arc::new(store.clone()),
        crate::measure::Hooks::default(),
    )?;
    // Every step's final state is in the store.
    let key = FlowKey::new(run.graph.name(), timeperiod);
    let processed = run
        .runtime
        .block_on(store.get_steps(&key))?
        .iter()
        .filter(|s| s.state == StepState::Processed)
        .count();
    if processed != run.graph.len() {
        return Err(format!(
            "{shape} on {name}: the store holds {processed} of {} steps as processed",
            run.graph.len()
        )
        .into());
    }
    let mut row = run.row(&format!("{shape} on {name}"));
    row.detail("server", name);
    row.detail("crowd_step_documents", crowd);
    row.detail("begin_run_in_transactions", transactions);
    row.detail("stored_steps_processed", processed);
    run.runtime
        .block_on(async { store.database().drop().await })?;
    Ok(row)
}

/// Fills the database with [`CROWD`] step documents of the same flow's
/// earlier timeperiods (its history from 2026-01-01 on: one chain a day),
/// as the store writes them. Returns how many.
async fn crowd(store: &MongoStore, shape: Shape) -> BenchResult<usize> {
    let steps = shape.len().max(1);
    let days = CROWD.div_ceil(steps);
    let flow = shape.flow_name();
    let collection = store.database().collection::<Document>("step");
    let at = chrono::Utc::now();
    let mut batch = Vec::new();
    let mut written = 0;
    let mut day: Timeperiod = "2026010100".parse()?;
    for _ in 0..days {
        for i in 0..steps {
            if written + batch.len() == CROWD {
                break;
            }
            let mut record = StepRecord::embryo(&flow, &step_name(i), day, None, at);
            record.state = StepState::Processed;
            let mut document = bson::serialize_to_document(&StepDoc::from_record(&record)?)?;
            document.insert("fence_token", 1_i64);
            batch.push(document);
            if batch.len() == 5_000 {
                written += batch.len();
                collection.insert_many(std::mem::take(&mut batch)).await?;
            }
        }
        day = day.next(flow_core::TimeQualifier::Daily);
    }
    if !batch.is_empty() {
        written += batch.len();
        collection.insert_many(batch).await?;
    }
    Ok(written)
}
