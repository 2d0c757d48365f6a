//! Every TOML example of the README and the book is loaded by the binary,
//! so an example cannot drift from what `flow` accepts. The markdown is
//! walked: a new ```` ```toml ```` block is covered without being listed.
//!
//! A block is
//! - a flow file when it has `[[steps]]`: `flow validate FILE` must pass;
//! - a fragment of a settings table when its first line is a comment
//!   naming the table (`# [cluster.emr.s3] ...`): it is put in that table
//!   (with the least the surrounding tables need) and loaded as below;
//! - otherwise a settings file: `flow --settings FILE validate` of a small
//!   flow must pass (the settings are read and checked as every command
//!   reads them). Environment variables it names as `"env:VAR"` are set;
//!   a relative `ca_file` it names holds a CA certificate
//!   (`tests/fixtures/smtp-ca.pem`).
//!
//! Built with the cloud features, so `[cluster.emr]` and `[cluster.dataproc]`
//! are read by their crates' own checks.

mod support;

use std::path::{Path, PathBuf};
use support::{text, Home};

/// One ```` ```toml ```` block.
struct Example {
    /// `FILE:LINE` of its first line, for messages.
    place: String,
    text: String,
}

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn toml_blocks(root: &Path, file: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(file).unwrap();
    let name = file.strip_prefix(root).unwrap().display().to_string();
    let mut examples = Vec::new();
    let mut open: Option<(usize, bool, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => open = Some((i + 2, info.trim() == "toml", String::new())),
            (Some((first, is_toml, body)), Some(_)) => {
                if *is_toml {
                    examples.push(Example {
                        place: format!("{name}:{first}"),
                        text: std::mem::take(body),
                    });
                }
                open = None;
            }
            (Some((_, _, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{name}: a code block is not closed");
    examples
}

/// What the tables around a fragment need to load.
fn surroundings(table: &str) -> &'static str {
    match table.split('.').take(2).collect::<Vec<_>>()[..] {
        ["cluster", "dataproc"] => {
            "[cluster]\nkind = \"dataproc\"\n[cluster.dataproc]\nproject = \"p\"\nregion = \"europe-west1\"\n"
        }
        ["cluster", "emr"] => "[cluster]\nkind = \"emr\"\n",
        ["cluster", "azure"] => "[cluster.azure]\ngateway = \"https://etl.azurehdinsight.net\"\n",
        _ => "",
    }
}

/// The settings file a fragment of `table` makes.
fn settings_around(table: &str, fragment: &str) -> String {
    let body: toml::Table = toml::from_str(fragment).unwrap();
    let mut value = toml::Value::Table(body);
    for key in table.rsplit('.') {
        let mut outer = toml::Table::new();
        outer.insert(key.to_string(), value);
        value = toml::Value::Table(outer);
    }
    let mut settings: toml::Table = toml::from_str(surroundings(table)).unwrap();
    merge(&mut settings, value.as_table().unwrap().clone());
    toml::to_string(&settings).unwrap()
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// The table a fragment names on its first line (`# [cluster.emr.s3] ...`).
fn fragment_table(text: &str) -> Option<&str> {
    let rest = text.lines().next()?.strip_prefix("# [")?;
    rest.split_once(']').map(|(table, _)| table)
}

/// The `VAR`s of `"env:VAR"` values.
fn env_vars(text: &str) -> Vec<String> {
    text.split("\"env:")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(var, _)| var.to_string()))
        .collect()
}

/// The relative `ca_file = "X"` paths in `text`.
fn ca_files(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("ca_file"))
        .filter_map(|rest| rest.split('"').nth(1))
        .filter(|path| !path.starts_with('/'))
        .map(str::to_string)
        .collect()
}

const SMALL_FLOW: &str = "name = \"small\"\n[[steps]]\nname = \"a\"\nmain = { action = \"shell\", command = \"true\" }\n";

/// `None` when the example loads; else why not.
fn load(example: &Example) -> Option<String> {
    let home = Home::empty();
    let is_flow = example.text.lines().any(|l| l.trim() == "[[steps]]");
    let out = if is_flow {
        home.write("flow.toml", "");
        home.write("example.toml", &example.text);
        home.flow(&["validate", "example.toml"])
    } else {
        let settings = match fragment_table(&example.text) {
            Some(table) => settings_around(table, &example.text),
            None => example.text.clone(),
        };
        home.write("flow.toml", &settings);
        home.write("small.toml", SMALL_FLOW);
        let ca = support::repo_root().join("tests/fixtures/smtp-ca.pem");
        for path in ca_files(&example.text) {
            home.write(&path, &std::fs::read_to_string(&ca).unwrap());
        }
        let mut command = home.command(&["validate", "small.toml"]);
        for var in env_vars(&example.text) {
            command.env(var, "a-value-long-enough-for-a-secret");
        }
        command.output().unwrap()
    };
    if out.status.success() {
        None
    } else {
        Some(format!(
            "--- {} ({}):\n{}{}",
            example.place,
            if is_flow { "a flow file" } else { "settings" },
            example.text,
            text(&out)
        ))
    }
}

#[test]
fn every_toml_example_of_the_readme_and_the_book_loads() {
    let root = support::repo_root();
    let examples: Vec<Example> = markdown_files(&root)
        .iter()
        .flat_map(|file| toml_blocks(&root, file))
        .collect();
    // The walk finds them: today's README and book hold nine.
    assert!(
        examples.len() >= 9,
        "only {} examples found",
        examples.len()
    );
    let failures: Vec<String> = examples.iter().filter_map(load).collect();
    assert!(
        failures.is_empty(),
        "{} of {} examples do not load:\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n")
    );
}

#[test]
fn a_fragment_is_put_in_the_table_its_first_line_names() {
    let settings = settings_around(
        "cluster.dataproc.gcs",
        "# [cluster.dataproc.gcs] GCS\nbucket = \"b\"\n[retry]\nmax_retries = 2\n",
    );
    let table: toml::Table = toml::from_str(&settings).unwrap();
    assert_eq!(
        table["cluster"]["dataproc"]["gcs"]["retry"]["max_retries"].as_integer(),
        Some(2)
    );
    assert_eq!(table["cluster"]["dataproc"]["project"].as_str(), Some("p"));
    assert_eq!(table["cluster"]["kind"].as_str(), Some("dataproc"));
    assert_eq!(fragment_table("# ./flow.toml\n"), None);
    assert_eq!(
        env_vars("uri = \"env:A\"\ntoken = \"env:B\"\n"),
        vec!["A", "B"]
    );
}
