//! A diamond flow built with the builder API and run as a library:
//!
//! ```text
//!            ┌─▶ clean_a ─┐
//!  extract ──┤            ├─▶ report
//!            └─▶ clean_b ─┘
//! ```
//!
//! `clean_a` and `clean_b` are a custom action type, `check_rows`, that reads
//! a setting and reports "nothing to process" (the step becomes `noop`) when
//! it says `0`. The first run is given a setting `check_rows` cannot read, so
//! `clean_b` fails and the flow becomes `state_invalid`; the second engine,
//! given the corrected setting, `recover`s: it keeps the completed steps and
//! runs the rest. Everything runs on the local cluster with the SQLite store,
//! in a temporary directory.
//!
//! ```sh
//! cargo run -p flow-engine --example diamond
//! ```

use async_trait::async_trait;
use flow_cluster_local::{LocalClusterFactory, LocalOptions};
use flow_core::spec::{ActionArgs, ArgError};
use flow_core::{
    Action, ActionContext, ActionError, ActionInstance, ActionOutcome, ActionRegistry,
    ExecutionContext, FlowDefinition, FlowGraph, FlowKey, FlowState, FlowStore, Settings,
    StepDefinition, TimeQualifier, Timeperiod,
};
use flow_engine::{EngineOptions, ExecutionEngine};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::error::Error;
use std::sync::Arc;

/// Reads the setting it is given and checks it is a row count; `0` means
/// there is nothing to process.
#[derive(Debug)]
struct CheckRows {
    setting: String,
}

#[async_trait]
impl Action for CheckRows {
    fn kind(&self) -> &str {
        "check_rows"
    }

    async fn run(&self, cx: &ActionContext<'_>) -> Result<ActionOutcome, ActionError> {
        let value =
            cx.execution.settings.get(&self.setting).ok_or_else(|| {
                ActionError::failed(format!("setting '{}' is not set", self.setting))
            })?;
        let rows: u64 = value.expose().parse().map_err(|_| {
            ActionError::failed(format!(
                "setting '{}' is not a row count: {:?}",
                self.setting,
                value.expose()
            ))
        })?;
        // `tracing` events land in the step's log file.
        tracing::info!(rows, "checked {}", self.setting);
        Ok(if rows == 0 {
            ActionOutcome::NothingToProcess
        } else {
            ActionOutcome::Done
        })
    }
}

/// The registry flow files (and this program) build actions from: the
/// built-ins plus `check_rows`, which takes one argument, `setting`.
fn registry() -> ActionRegistry {
    let mut registry = ActionRegistry::builtin();
    registry.register("check_rows", |args: &mut ActionArgs| {
        let setting = args
            .opt_string("setting")?
            .ok_or_else(|| ArgError::Missing {
                arg: "setting".into(),
            })?;
        Ok(Arc::new(CheckRows { setting }) as Arc<dyn Action>)
    });
    registry
}

/// An action of a registered `kind` with `args` (as a flow file would give them).
fn action(
    registry: &ActionRegistry,
    kind: &str,
    args: &[(&str, &str)],
) -> Result<ActionInstance, Box<dyn Error>> {
    let mut table = flow_core::toml::Table::new();
    for (name, value) in args {
        table.insert((*name).into(), (*value).into());
    }
    Ok(ActionInstance::new(registry.build(kind, table)?))
}

fn diamond(registry: &ActionRegistry) -> Result<FlowGraph, Box<dyn Error>> {
    let check = |setting| action(registry, "check_rows", &[("setting", setting)]);
    Ok(FlowDefinition::new("diamond")
        .time_qualifier(TimeQualifier::Daily)
        .step(StepDefinition::new(
            "extract",
            action(
                registry,
                "shell",
                &[("command", "echo extracting {timeperiod}")],
            )?,
        ))
        .step(StepDefinition::new("clean_a", check("a_rows")?).depends_on(["extract"]))
        .step(StepDefinition::new("clean_b", check("b_rows")?).depends_on(["extract"]))
        .step(
            StepDefinition::new("report", action(registry, "identity", &[])?)
                .depends_on(["clean_a", "clean_b"]),
        )
        .build()?)
}

/// The run's context: `[flow, timeperiod]`, its window and the settings.
fn context(graph: &FlowGraph, timeperiod: Timeperiod, settings: Settings) -> ExecutionContext {
    ExecutionContext {
        flow_name: graph.name().to_string(),
        timeperiod,
        start_timeperiod: timeperiod,
        end_timeperiod: timeperiod.next(graph.time_qualifier()),
        settings: Arc::new(settings),
        number_of_clusters: 2,
    }
}

async fn print_steps(store: &dyn FlowStore, key: &FlowKey) -> Result<(), Box<dyn Error>> {
    let flow = store
        .get_flow(key)
        .await?
        .ok_or("the run left no flow record")?;
    println!("  flow {}: {}", key, flow.state);
    let mut steps = store.get_steps(key).await?;
    steps.sort_by(|a, b| a.step_name.cmp(&b.step_name));
    for step in steps {
        println!(
            "  {:<8} {:<18} attempts {}",
            step.step_name,
            step.state.to_string(),
            step.attempts
        );
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(
        &dir.path().join("flow.db"),
        SqliteOptions::default(),
    )?);
    let clusters = Arc::new(LocalClusterFactory::new(LocalOptions {
        root: dir.path().join("data"),
        work_dir: dir.path().to_path_buf(),
        state_dir: dir.path().join("state"),
        ..LocalOptions::default()
    }));
    let options = EngineOptions {
        log_directory: Some(dir.path().join("logs")),
        ..EngineOptions::default()
    };
    let registry = registry();
    let graph = Arc::new(diamond(&registry)?);
    let timeperiod: Timeperiod = "2026112800".parse()?;
    let key = FlowKey::new(graph.name(), timeperiod);

    // First run: `b_rows` is not a number, so clean_b fails.
    let settings = Settings::new()
        .with_plain("a_rows", "0")
        .with_plain("b_rows", "many");
    let engine = ExecutionEngine::new(
        graph.clone(),
        context(&graph, timeperiod, settings),
        store.clone(),
        clusters.clone(),
        options.clone(),
    );
    let report = engine.run().await?;
    println!("run: {}", report.state);
    print_steps(store.as_ref(), &key).await?;
    assert_eq!(report.state, FlowState::Invalid);

    // The setting is fixed; recover keeps extract (processed) and clean_a
    // (noop), and runs clean_b and report.
    let settings = Settings::new()
        .with_plain("a_rows", "0")
        .with_plain("b_rows", "42");
    let engine = ExecutionEngine::new(
        graph.clone(),
        context(&graph, timeperiod, settings),
        store.clone(),
        clusters,
        options,
    );
    let report = engine.recover().await?;
    println!("recover: {} (ran {:?})", report.state, report.steps);
    print_steps(store.as_ref(), &key).await?;
    assert_eq!(report.state, FlowState::Processed);
    Ok(())
}

// `cargo test` runs the example too (see `test = true` in Cargo.toml).
#[test]
fn example_runs() {
    main().expect("the example runs");
}
