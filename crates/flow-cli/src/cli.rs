//! The command line, as clap sees it. Parsing only: no file is read and no
//! backend is touched here, so `flow --version` and `flow --help` are instant.

use crate::exit::EXIT_CODES_HELP;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::num::NonZeroUsize;
use std::path::PathBuf;

/// Runs workflows of steps on clusters, one [flow, timeperiod] at a time.
///
/// FLOW is a flow file (a path ending in .toml or containing '/') or a flow
/// name, looked up as FLOWS_DIR/NAME.toml where FLOWS_DIR is the settings'
/// `flows_directory`.
#[derive(Debug, Parser)]
#[command(name = "flow", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The settings file (flow.toml). Default: ./flow.toml if it exists,
    /// otherwise built-in defaults.
    #[arg(long, global = true, env = "FLOW_SETTINGS", value_name = "FILE")]
    pub settings: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check flow files: syntax, action types and arguments, placeholders,
    /// step names, dependencies and cycles.
    Validate {
        /// Flow files (or flow names) to check.
        #[arg(required = true, value_name = "FLOW")]
        files: Vec<String>,
    },
    /// Print a flow's DAG.
    Graph {
        #[arg(value_name = "FLOW")]
        flow: String,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Fresh run: forget the flow's previous step records and run every step.
    Run {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        window: Window,
    },
    /// After a failure or a crash: keep processed/noop steps, run the rest.
    Recover {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        window: Window,
    },
    /// Run one step alone, on one cluster; its dependencies must be complete.
    RunOne {
        #[command(flatten)]
        target: Target,
        /// The step to run.
        #[arg(long, value_name = "STEP")]
        step: String,
        #[command(flatten)]
        window: Window,
    },
    /// Run a step, every step derived from it, and every unfinished step.
    RunFrom {
        #[command(flatten)]
        target: Target,
        /// The step to start from.
        #[arg(long, value_name = "STEP")]
        step: String,
        #[command(flatten)]
        window: Window,
    },
    /// Run one unit of work for a scheduler and answer one JSON object on
    /// stdout: outcome (processed, noop, invalid), run id, the run mode
    /// chosen and why. Without FLOW, the unit is read as JSON from stdin.
    ///
    /// A managed unit (the default) runs run_mode_nominal unless the flow
    /// record stores run_mode_recovery (the viewer's run-mode button), unless
    /// --run-mode asks otherwise. A freerun unit runs run_mode_run_one or
    /// run_mode_run_from on --step. Exit codes: 0 processed or noop, 1
    /// invalid, 2 bad unit (nothing written), 3 cancelled, 4 clusters left up.
    Drive(DriveArgs),
    /// Run the timetable of flows with a `[schedule]` section: a Job per
    /// period, its managed run started when the period closes (plus lag),
    /// failed runs retried in recovery mode with backoff, missed periods
    /// caught up oldest first. Any number of `flow schedule` processes may
    /// share a store; each Job runs once. SIGTERM or Ctrl-C: no new runs,
    /// running ones get the settings' cancel_grace to finish, then are
    /// cancelled.
    Schedule {
        /// Flow files (or names in the flows directory), each with
        /// `[schedule]`; every flow one depends on must be among them.
        #[arg(required = true, value_name = "FLOW")]
        flows: Vec<String>,
        /// Managed runs at once, in this process. Default: the settings'
        /// `[schedule] concurrency`, else 4.
        #[arg(long, value_name = "N")]
        concurrency: Option<NonZeroUsize>,
        /// Exit 0 once no Job can make progress any more (every Job up to
        /// now finished, or blocked by a skipped upstream Job).
        #[arg(long)]
        until_caught_up: bool,
        /// How often to look for due Jobs at least (also after every run
        /// that ends, and when the next period falls due).
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
        poll: std::time::Duration,
    },
    /// Show a scheduled flow's timetable: each period's Job state, failures,
    /// latest run, and what an unstarted Job waits for.
    Jobs {
        #[arg(value_name = "FLOW")]
        flow: String,
        /// Periods at or after this one.
        #[arg(long, value_name = "T")]
        from: Option<String>,
        /// Periods before this one.
        #[arg(long, value_name = "T")]
        to: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Mark a scheduled flow's Job skipped (no managed run will start for
    /// it) and cancel its flow's unfinished steps.
    Skip {
        #[command(flatten)]
        target: Target,
    },
    /// Send a finished Job back through a managed (nominal) run; with
    /// --cascade, also the finished Jobs that depend on it, directly or
    /// not (found by the upstreams their Jobs record in the store, and by
    /// the flows directory's files).
    Reprocess {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        cascade: bool,
    },
    /// Show a flow run's state and its steps' states, attempts and timings;
    /// without --timeperiod, list the flow's runs.
    Status {
        /// A flow file, a flow name in the flows directory, or a flow name as
        /// stored.
        #[arg(value_name = "FLOW")]
        flow: String,
        #[arg(long, value_name = "T")]
        timeperiod: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Mark every unfinished step of a flow that is not running `canceled`
    /// (and the flow `invalid`), cancelling jobs a dead run left running.
    Cancel {
        #[command(flatten)]
        target: Target,
    },
    /// Undo a processed step: run the rollbacks of its actions, newest
    /// first, and put it back to `embryo` so `recover` runs it again.
    Rollback {
        #[command(flatten)]
        target: Target,
        /// The step to undo.
        #[arg(long, value_name = "STEP")]
        step: String,
        /// Also undo the step's processed dependants (first, in reverse
        /// dependency order); without it, they make the rollback refused.
        #[arg(long)]
        cascade: bool,
    },
    /// List a flow's runs (one per engine invocation), newest first: mode,
    /// host and user, start, duration, outcome and the steps each ran.
    History {
        /// A flow file, a flow name in the flows directory, or a flow name as
        /// stored.
        #[arg(value_name = "FLOW")]
        flow: String,
        /// Only this timeperiod's runs.
        #[arg(long, value_name = "T")]
        timeperiod: Option<String>,
        /// At most this many runs (1 or more).
        #[arg(long, value_name = "N")]
        limit: Option<NonZeroUsize>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a flow run's log lines as recorded in the store, in the log
    /// files' format; --follow keeps printing while the flow runs.
    Logs {
        #[arg(value_name = "FLOW")]
        flow: String,
        #[arg(long, value_name = "T")]
        timeperiod: String,
        /// Only this step's lines.
        #[arg(long, value_name = "STEP")]
        step: Option<String>,
        /// Only this run's lines (a run id from `flow history`).
        #[arg(long, value_name = "RUN")]
        run: Option<String>,
        /// Keep printing new lines until the running flow's run ends.
        #[arg(long)]
        follow: bool,
    },
    /// List the clusters runs launched or reused, as recorded in the store;
    /// with --terminate-orphans, terminate those whose run is no longer
    /// alive (its lease is stale).
    Clusters {
        /// Only this flow's clusters.
        #[arg(value_name = "FLOW")]
        flow: Option<String>,
        /// Only this timeperiod's (with FLOW).
        #[arg(long, value_name = "T")]
        timeperiod: Option<String>,
        /// Terminate every recorded cluster that may be up and whose flow is
        /// not being run (its lease is stale or released), and record it.
        #[arg(long)]
        terminate_orphans: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve the workflow viewer: a web page with each flow run's live DAG,
    /// step details and logs, and buttons for the run modes.
    ///
    /// Shows the flows given as arguments and every flow file in the
    /// settings' `flows_directory`. Runs started from the page execute in
    /// this process, through the store's lease like `flow run`.
    Serve {
        /// Flow files (or flow names in the flows directory) to show, in
        /// addition to the flows directory's.
        #[arg(value_name = "FLOW")]
        flows: Vec<String>,
        /// The address to listen on. Default: the settings' `[serve] bind`,
        /// else 127.0.0.1:8080. A non-loopback address needs `[serve]
        /// token`; port 0 picks a free port.
        #[arg(long, value_name = "ADDR")]
        bind: Option<std::net::SocketAddr>,
    },
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// `flow drive`'s unit, as flags.
#[derive(Debug, Args)]
pub struct DriveArgs {
    /// The flow file or name; omit it to read the unit as JSON from stdin.
    #[arg(value_name = "FLOW")]
    pub flow: Option<String>,
    /// The timeperiod to process (with FLOW).
    #[arg(long, value_name = "T")]
    pub timeperiod: Option<String>,
    #[command(flatten)]
    pub window: Window,
    /// managed (a scheduler's run) or freerun (the user's); default: from
    /// --run-mode, else managed.
    #[arg(long, value_enum)]
    pub kind: Option<UnitKind>,
    /// run_mode_nominal or run_mode_recovery (managed: overrides the stored
    /// and default modes), run_mode_run_one or run_mode_run_from (freerun);
    /// the run_mode_ prefix may be left out.
    #[arg(long, value_name = "MODE")]
    pub run_mode: Option<String>,
    /// The step of a freerun unit.
    #[arg(long, value_name = "STEP")]
    pub step: Option<String>,
}

/// The two groups of run modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// nominal or recovery: moves the scheduler's Job.
    Managed,
    /// run_one or run_from: the user's, invisible to the Job.
    Freerun,
}

/// Which flow run a command is about.
#[derive(Debug, Args)]
pub struct Target {
    #[arg(value_name = "FLOW")]
    pub flow: String,
    /// The timeperiod to process: YYYYMMDDHH, e.g. 2026112800 for a daily
    /// flow.
    #[arg(long, value_name = "T")]
    pub timeperiod: String,
}

/// The processing window and the cluster count of a run.
#[derive(Debug, Args)]
pub struct Window {
    /// Inclusive start of the window. Default: the timeperiod (for recover,
    /// run-one and run-from: the stored run's window, if any).
    #[arg(long, value_name = "S")]
    pub start_timeperiod: Option<String>,
    /// Exclusive end of the window; must be after its start. Default: the
    /// period after the timeperiod.
    #[arg(long, value_name = "E")]
    pub end_timeperiod: Option<String>,
    /// How many clusters a full run spawns. Default: the settings'
    /// `number_of_clusters` (1).
    #[arg(long, value_name = "N")]
    pub clusters: Option<NonZeroUsize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz dot.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_run_one() {
        let cli = Cli::try_parse_from([
            "flow",
            "run-one",
            "f.toml",
            "--timeperiod",
            "2026112800",
            "--step",
            "b",
        ])
        .unwrap();
        match cli.command {
            Command::RunOne { target, step, .. } => {
                assert_eq!(target.flow, "f.toml");
                assert_eq!(step, "b");
            }
            other => panic!("{other:?}"),
        }
    }
}
