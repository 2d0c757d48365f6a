//! The benchmark harness of `flow`, run by `cargo xtask bench`.
//!
//! It measures the engine on generated flows of `identity` actions (so every
//! microsecond is engine, store and logging overhead) with the real SQLite
//! store (WAL, `synchronous` from `--synchronous`), the real local cluster and
//! per-step log files; graph load and validation of a 100,000-step flow file;
//! the `flow` binary's start-up; and the same chain and fan-out as Luigi
//! tasks. It prints a table, checks the targets of the benchmark issue and
//! writes everything as JSON so runs can be compared.
//!
//! Each shape runs in a fresh child process (the binary re-invoked with
//! `--shape`), so its peak RSS (`VmHWM`) is its own; the child prints its
//! [`Row`] as one JSON line.
//!
//! ```text
//! flow-bench [--shape NAME] [--synchronous normal|full] [--json PATH]
//! ```
//! See [`USAGE`] for the rest.
#![warn(missing_docs)]

pub mod luigi;
pub mod measure;
pub mod mongo;
pub mod report;
pub mod schedule;
pub mod shape;
pub mod signals;
pub mod slots;

pub use report::{Report, Row};
pub use shape::Shape;

use measure::{parse_synchronous, synchronous_name, Setup};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The command line help.
pub const USAGE: &str = "\
usage: flow-bench [--shape NAME] [--synchronous normal|full] [--json PATH] [options]

Without --shape, runs every shape (or those of --only), each in a fresh child
process, then Luigi on the chains and fan-outs among them (with
--luigi-python), prints the table and the targets, and writes the report as
JSON (--json PATH, and/or --out-dir DIR for DIR/bench-<UTC timestamp>.json
and DIR/latest.json).
With --shape, measures that one shape and prints its row as one JSON line.

shapes: chain-N, recorded-chain-N, signals-chain-N, signals-single-chain-N,
        mongo-chain-N, mongo-crowded-chain-N,
        fanout-N, lattice-WxL, load-N, cli-version, cli-validate,
        catchup-N, tick-N, due-start, dataproc-slots-N
        (default: chain-1000 signals-chain-1000 signals-single-chain-1000
         recorded-chain-1000 mongo-chain-1000 mongo-crowded-chain-1000
         fanout-1000 fanout-10000 lattice-100x100
         load-100000 cli-version cli-validate catchup-1000 tick-100000
         due-start dataproc-slots-25)
        catchup-N: `flow schedule` catching up N missed hourly periods of a
        10-step flow, 8 runs at a time; tick-N: the timetable's tick with N
        finished Jobs against none; due-start: how long after a period is
        due its run starts (the scheduler shapes: src/schedule.rs).
        signals-chain-N: chain-N with every signal exporter on (webhook,
        lineage, /metrics' series, traces), posting to a loopback receiver
        (src/signals.rs), lineage events in batches of up to 100
        ([lineage] batch); signals-single-chain-N: the same with one
        lineage event per request.
        dataproc-slots-N: N jobs at once on one Dataproc cluster with N
        slots, on the contract fake and a manual clock (src/slots.rs).
        The MongoDB shapes run once on each server of FLOW_BENCH_MONGO
        (\"NAME=URI NAME=URI\", set by `cargo xtask bench`), the row named
        \"SHAPE on NAME\"; mongo-crowded-chain-N's database already holds
        100,000 step documents of the flow's earlier days.

options:
  --shape NAME            measure one shape in this process
  --synchronous MODE      SQLite synchronous setting: normal (default) or full
  --clusters N            clusters for engine shapes (default: chain 1, others 8)
  --json PATH             write the report (or, with --shape, the row) there
  --out-dir DIR           also write DIR/bench-<UTC timestamp>.json and DIR/latest.json
  --only LIST             comma-separated shapes to run instead of the default
  --flow-bin PATH         the flow binary for the cli shapes (default: next to flow-bench)
  --validate-file PATH    the file `flow validate` checks (default: a small generated one)
  --repeat N              runs of each engine and load shape, the median is
                          reported (default 3)
  --no-logs               engine shapes without log files (diagnosis only)
  --mongo-server NAME     the FLOW_BENCH_MONGO server of a MongoDB --shape
  --scratch DIR           put stores, logs and flow files under DIR/run-PID and
                          keep them (default: temporary directories, deleted
                          after each run; see bench/README.md)
  --luigi-python PATH     run the Luigi comparison with this Python (with luigi installed)
  --luigi-script PATH     default: bench/luigi_bench.py of this workspace
  --luigi-timeout SECS    limit for each Luigi run (default 900)
";

/// The parsed command line.
#[derive(Debug, Clone)]
pub struct Args {
    /// `--shape`: run this one shape (a child process does).
    pub shape: Option<Shape>,
    /// `--only`: measure only these shapes.
    pub only: Option<Vec<Shape>>,
    /// How children measure.
    pub setup: Setup,
    /// `--json`: where to write the report.
    pub json: Option<PathBuf>,
    /// `--out-dir`: where to write a time-stamped report and `latest.json`.
    pub out_dir: Option<PathBuf>,
    /// `--luigi-python`: the Python that runs the Luigi comparison.
    pub luigi_python: Option<PathBuf>,
    /// `--luigi-script`: the Luigi benchmark script.
    pub luigi_script: PathBuf,
    /// `--luigi-timeout`: the limit for each Luigi run.
    pub luigi_timeout: Duration,
}

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let default_flow = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("flow")))
            .unwrap_or_else(|| PathBuf::from("flow"));
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut parsed = Args {
            shape: None,
            only: None,
            setup: Setup {
                synchronous: flow_store_sqlite::Synchronous::Normal,
                clusters: None,
                flow_bin: default_flow,
                validate_file: None,
                no_logs: false,
                repeat: 3,
                scratch: None,
                mongo_server: None,
            },
            json: None,
            out_dir: None,
            luigi_python: None,
            luigi_script: workspace.join("bench/luigi_bench.py"),
            luigi_timeout: Duration::from_secs(900),
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.to_string());
            }
            let mut value = || {
                args.next()
                    .ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))
            };
            let number = |v: String| {
                v.parse::<u64>()
                    .map_err(|_| format!("{flag} takes a number, not '{v}'"))
            };
            match flag.as_str() {
                "--shape" => parsed.shape = Some(value()?.parse()?),
                "--synchronous" => parsed.setup.synchronous = parse_synchronous(&value()?)?,
                "--clusters" => parsed.setup.clusters = Some(number(value()?)? as usize),
                "--json" => parsed.json = Some(value()?.into()),
                "--out-dir" => parsed.out_dir = Some(value()?.into()),
                "--only" => {
                    parsed.only = Some(
                        value()?
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::parse)
                            .collect::<Result<_, _>>()?,
                    )
                }
                "--flow-bin" => parsed.setup.flow_bin = value()?.into(),
                "--validate-file" => parsed.setup.validate_file = Some(value()?.into()),
                "--no-logs" => parsed.setup.no_logs = true,
                "--scratch" => parsed.setup.scratch = Some(value()?.into()),
                "--mongo-server" => parsed.setup.mongo_server = Some(value()?),
                "--repeat" => parsed.setup.repeat = number(value()?)?.max(1) as usize,
                "--luigi-python" => parsed.luigi_python = Some(value()?.into()),
                "--luigi-script" => parsed.luigi_script = value()?.into(),
                "--luigi-timeout" => parsed.luigi_timeout = Duration::from_secs(number(value()?)?),
                _ => return Err(format!("unknown argument '{flag}'\n\n{USAGE}")),
            }
        }
        Ok(parsed)
    }
}

/// Runs `flow-bench` with `args`; the error is for stderr.
pub fn run(args: Args) -> Result<(), String> {
    match args.shape {
        Some(shape) => {
            let row = measure::measure(shape, &args.setup).map_err(|e| format!("{shape}: {e}"))?;
            let line = serde_json::to_string(&row).map_err(|e| e.to_string())?;
            if let Some(path) = &args.json {
                write_file(path, &line)?;
            }
            println!("{line}");
            Ok(())
        }
        None => run_all(&args),
    }
}

/// Runs every shape in a child, then Luigi; prints and writes the report.
fn run_all(args: &Args) -> Result<(), String> {
    let shapes: Vec<Shape> = match &args.only {
        Some(list) => list.clone(),
        None => shape::DEFAULT_SHAPES
            .iter()
            .map(|s| s.parse().expect("default shapes parse"))
            .collect(),
    };
    let now = chrono::Utc::now();
    let mut report = Report {
        timestamp: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: report::Machine::describe(),
        synchronous: synchronous_name(args.setup.synchronous).into(),
        ..Report::default()
    };
    let mut failures = Vec::new();
    // Children keep their directories under this run's scratch directory,
    // which is left in place: deleting thousands of files makes creating
    // files nearby slow for minutes on some filesystems (bench/README.md),
    // which would skew the next run.
    let mut setup = args.setup.clone();
    let scratch_run = match &args.setup.scratch {
        Some(dir) => {
            let run = dir.join(format!("run-{}", std::process::id()));
            std::fs::create_dir_all(&run)
                .map_err(|e| format!("cannot create {}: {e}", run.display()))?;
            setup.scratch = Some(run.clone());
            Some(run)
        }
        None => None,
    };
    let args = &Args {
        setup,
        ..args.clone()
    };
    if let Some(run) = &scratch_run {
        report.scratch = args.setup.scratch.as_ref().map(|d| d.display().to_string());
        report.file_create_us = file_create_us(run);
    }
    for shape in shapes {
        let needs_flow = matches!(
            shape,
            Shape::CliVersion | Shape::CliValidate | Shape::Catchup(_) | Shape::DueStart
        );
        if needs_flow && !args.setup.flow_bin.exists() {
            eprintln!(
                "flow-bench: skipping {shape}: no flow binary at {} (build it or pass --flow-bin)",
                args.setup.flow_bin.display()
            );
            continue;
        }
        let servers: Vec<Option<String>> = match shape {
            Shape::MongoChain { .. } => {
                let servers = mongo::servers()?;
                if servers.is_empty() {
                    eprintln!(
                        "flow-bench: {shape} failed: no MongoDB server in {} (`cargo xtask bench` starts them)",
                        mongo::SERVERS_ENV
                    );
                    failures.push(shape.to_string());
                }
                servers.into_iter().map(|(name, _)| Some(name)).collect()
            }
            _ => vec![None],
        };
        for server in servers {
            let name = match &server {
                Some(server) => format!("{shape} on {server}"),
                None => shape.to_string(),
            };
            eprintln!("flow-bench: running {name} ...");
            match run_child(shape, server.as_deref(), args) {
                Ok(row) => {
                    eprintln!("flow-bench: {name}: {}", report::ms(row.wall_ms));
                    report.rows.push(row);
                }
                Err(e) => {
                    eprintln!("flow-bench: {name} failed: {e}");
                    failures.push(name);
                }
            }
        }
    }
    if let Some(python) = &args.luigi_python {
        // Luigi runs the chains and fan-outs that were measured.
        let comparable = report
            .rows
            .iter()
            .filter_map(|r| match r.shape.parse::<Shape>() {
                Ok(Shape::Chain(n)) => Some(("chain", n)),
                Ok(Shape::Fanout(n)) => Some(("fanout", n)),
                _ => None,
            });
        for (mode, steps) in comparable.collect::<Vec<_>>() {
            eprintln!(
                "flow-bench: running Luigi {mode}-{steps} (limit {} s) ...",
                args.luigi_timeout.as_secs()
            );
            let run = luigi::run(python, &args.luigi_script, mode, steps, args.luigi_timeout);
            eprintln!(
                "flow-bench: Luigi {}: {}",
                run.shape,
                run.wall_ms
                    .filter(|_| run.status == "ok")
                    .map_or_else(|| run.status.clone(), report::ms)
            );
            report.luigi.push(run);
        }
    }
    if let Some(run) = &scratch_run {
        eprintln!(
            "flow-bench: kept {} ({}); delete it a few minutes before the next run, not right before",
            run.display(),
            disk_usage(run)
        );
    }
    report.attach_luigi();
    report.check_targets();
    print!("{}", report.render());

    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    if let Some(path) = &args.json {
        write_file(path, &json)?;
    }
    if let Some(dir) = &args.out_dir {
        let stamped = dir.join(format!("bench-{}.json", now.format("%Y%m%dT%H%M%SZ")));
        write_file(&stamped, &json)?;
        write_file(&dir.join("latest.json"), &json)?;
        println!("\nreport: {}", stamped.display());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("shapes failed: {}", failures.join(", ")))
    }
}

/// Mean microseconds to create an empty file under `dir`, over as many files
/// as the chain creates (fewer can miss a slow stretch of the inode table).
fn file_create_us(dir: &Path) -> Option<f64> {
    let dir = dir.join("calibrate");
    std::fs::create_dir_all(&dir).ok()?;
    const FILES: usize = 1000;
    let started = std::time::Instant::now();
    for i in 0..FILES {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("f{i}.log")))
            .ok()?;
    }
    Some(started.elapsed().as_secs_f64() * 1e6 / FILES as f64)
}

/// Size of the files under `dir`, for humans.
fn disk_usage(dir: &Path) -> String {
    fn walk(dir: &Path, files: &mut u64, bytes: &mut u64) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => walk(&entry.path(), files, bytes),
                Ok(m) => {
                    *files += 1;
                    *bytes += m.len();
                }
                Err(_) => {}
            }
        }
    }
    let (mut files, mut bytes) = (0, 0);
    walk(dir, &mut files, &mut bytes);
    format!("{files} files, {:.1} MB", bytes as f64 / 1e6)
}

/// Re-invokes this binary with `--shape` and reads the row it prints.
fn run_child(shape: Shape, server: Option<&str>, args: &Args) -> Result<Row, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find flow-bench itself: {e}"))?;
    let mut command = Command::new(exe);
    command
        .args(["--shape", &shape.to_string()])
        .args(["--synchronous", synchronous_name(args.setup.synchronous)])
        .arg("--flow-bin")
        .arg(&args.setup.flow_bin);
    if let Some(n) = args.setup.clusters {
        command.args(["--clusters", &n.to_string()]);
    }
    if let Some(file) = &args.setup.validate_file {
        command.arg("--validate-file").arg(file);
    }
    if args.setup.no_logs {
        command.arg("--no-logs");
    }
    if let Some(dir) = &args.setup.scratch {
        command.arg("--scratch").arg(dir);
    }
    command.args(["--repeat", &args.setup.repeat.to_string()]);
    if let Some(server) = server {
        command.args(["--mongo-server", server]);
    }
    let out = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    if !out.status.success() {
        return Err(format!("child exited with {}", out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or("the child printed no row")?;
    serde_json::from_str(line).map_err(|e| format!("unreadable row '{line}': {e}"))
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, format!("{text}\n"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_flags() {
        let a = parse(&[
            "--shape",
            "chain-20",
            "--synchronous",
            "full",
            "--clusters",
            "3",
        ])
        .unwrap();
        assert_eq!(a.shape, Some(Shape::Chain(20)));
        assert_eq!(a.setup.synchronous, flow_store_sqlite::Synchronous::Full);
        assert_eq!(a.setup.clusters, Some(3));
        let a = parse(&["--only", "load-10,cli-version"]).unwrap();
        assert_eq!(a.only, Some(vec![Shape::Load(10), Shape::CliVersion]));
        assert!(parse(&["--synchronous", "off"]).is_err());
        assert!(parse(&["--shape"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
