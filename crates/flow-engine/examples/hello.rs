//! The shortest complete program: the README's "Using flow as a library".
//! `tests/readme.rs` checks that the README shows this file's code.
//!
//! ```sh
//! cargo run -p flow-engine --example hello
//! ```

use flow_cluster_local::{LocalClusterFactory, LocalOptions};
use flow_core::{ActionRegistry, ExecutionContext, Settings, Timeperiod};
use flow_engine::{EngineOptions, ExecutionEngine};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let flow = r#"
        name = "hello"
        [[steps]]
        name = "greet"
        main = { action = "shell", command = "echo hello {timeperiod}" }
    "#;
    let graph = ActionRegistry::builtin().parse(flow, "hello.toml".as_ref())?;
    let timeperiod: Timeperiod = "2026112807".parse()?;
    let context = ExecutionContext {
        flow_name: graph.name().to_string(),
        timeperiod,
        start_timeperiod: timeperiod,
        end_timeperiod: timeperiod.next(graph.time_qualifier()),
        settings: Arc::new(Settings::new()),
        number_of_clusters: 1,
    };
    let store = SqliteStore::open(
        &std::env::temp_dir().join("hello-flow.db"),
        SqliteOptions::default(),
    )?;
    let clusters = LocalClusterFactory::new(LocalOptions::default());
    let engine = ExecutionEngine::new(
        Arc::new(graph),
        context,
        Arc::new(store),
        Arc::new(clusters),
        EngineOptions::default(),
    );
    let report = engine.run().await?;
    println!("{}: {}", report.flow, report.state); // [hello, 2026112807]: state_processed
    assert!(report.state.is_complete());
    Ok(())
}

// `cargo test` runs the example too (see `test = true` in Cargo.toml).
#[test]
fn example_runs() {
    main().expect("the example runs");
}
