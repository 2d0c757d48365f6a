//! Load and validate a flow file, walk its steps in dependency order, and
//! draw it as a Mermaid diagram.
//!
//! ```sh
//! cargo run -p flow-core --example load_flow
//! ```

use flow_core::{ActionRegistry, Settings};
use std::error::Error;
use std::path::Path;
use std::sync::Arc;

const FLOW: &str = r#"
name = "daily_report"
time_qualifier = "daily"

[[steps]]
name = "extract"
main = { action = "shell", command = "echo extracting {start_timeperiod} {end_timeperiod}" }

[[steps]]
name = "clean"
depends_on = ["extract"]
pre  = [{ action = "mkdir", path = "{settings.out}/{timeperiod}" }]
main = { action = "identity" }

[[steps]]
name = "enrich"
depends_on = ["extract"]
main = { action = "noop" }

[[steps]]
name = "report"
depends_on = ["clean", "enrich"]
retries = 2
retry_delay = "30s"
main = { action = "spark", application = "jobs/report.py", args = ["--day", "{timeperiod}"] }
"#;

/// The same flow with a dependency on a step that does not exist.
const BROKEN: &str = r#"
name = "daily_report"

[[steps]]
name = "report"
depends_on = ["extrakt"]
main = { action = "identity" }
"#;

fn main() -> Result<(), Box<dyn Error>> {
    // The built-in action types, and the settings the flow's
    // `{settings.NAME}` placeholders are checked against as it loads.
    let settings = Arc::new(Settings::new().with_plain("out", "reports"));
    let registry = ActionRegistry::builtin().checking_settings(settings);

    // `load_file(path)` reads a file; `parse` takes text and the name to
    // show in messages.
    let graph = registry.parse(FLOW, Path::new("daily_report.toml"))?;
    println!(
        "{} ({}): {} steps",
        graph.name(),
        graph.time_qualifier().as_str(),
        graph.len()
    );

    // Steps in an order where every step comes after its dependencies.
    for &index in graph.topological_order() {
        let step = graph.step(index);
        let after: Vec<&str> = graph
            .dependencies(index)
            .iter()
            .map(|&d| graph.step(d).name.as_str())
            .collect();
        println!(
            "  {:<8} main = {:<9} after {:?}",
            step.name,
            step.main.action.kind(),
            after
        );
    }

    println!("\n{}", graph.to_mermaid());

    // Errors name the file, line and column, and what is wrong.
    let error = registry
        .parse(BROKEN, Path::new("broken.toml"))
        .expect_err("an unknown dependency is refused");
    println!("refused: {error}");
    assert!(error.to_string().contains("extrakt"));
    Ok(())
}

// `cargo test` runs the example too (see `test = true` in Cargo.toml).
#[test]
fn example_runs() {
    main().expect("the example runs");
}
