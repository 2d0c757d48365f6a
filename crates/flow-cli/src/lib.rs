//! The `flow` command line: validate and draw flow files, run them in the
//! four run modes (`run`, `recover`, `run-one`, `run-from`), show and cancel
//! runs.
//!
//! It is the one place that knows every backend: the settings file
//! (`flow.toml`, see `docs/src/reference/settings.md`) picks the store and the cluster
//! kind, and `backends.rs` builds them (cloud clusters and other stores sit
//! behind cargo features). It shows progress, maps outcomes to exit codes and
//! turns Ctrl-C/SIGTERM into a clean cancellation.
//!
//! It is not the engine: scheduling, leases, retries and logging live in
//! `flow-engine`; flow-file parsing and validation in `flow-core`. There is
//! no daemon or scheduler here either: one invocation runs one
//! `[flow, timeperiod]` and exits.
//!
//! Its library target exists for the binary and the end-to-end tests; it is
//! not an API for other programs (no semver promise). A program that runs
//! flows depends on `flow-engine` and the backend crates instead (see
//! `flow-engine`'s crate docs and docs/src/guide/library.md).

// Everything `flow` prints goes through these three macros, and they mask
// every secret value (`flow_core::mask`): summaries, errors, `status` and
// its JSON never show one. Output also ignores a closed stdout or stderr
// (`flow status | head`, a terminal that went away): a run must still finish
// its bookkeeping, release its lease and stop its jobs when nobody reads
// what it prints, so writes never panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = std::io::stdout().write_all(flow_core::mask(&text).as_bytes());
    }};
}
macro_rules! outln {
    () => {{
        use std::io::Write as _;
        let _ = std::io::stdout().write_all(b"\n");
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut text = format!($($arg)*);
        text.push('\n');
        let _ = std::io::stdout().write_all(flow_core::mask(&text).as_bytes());
    }};
}
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut text = format!($($arg)*);
        text.push('\n');
        let _ = std::io::stderr().write_all(flow_core::mask(&text).as_bytes());
    }};
}

pub mod backends;
pub mod cli;
mod commands;
pub mod exit;
mod logs;
pub mod progress;
mod renamed_keys;
pub mod settings;
mod store_uri;
mod telemetry;

use clap::Parser;
use std::process::ExitCode;

/// Parses the command line, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and exit 0; usage errors
            // exit 2, like any bad input.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match commands::execute(cli) {
        Ok(exit) => exit.into(),
        Err(e) => {
            errln!("error: {e}");
            e.exit.into()
        }
    }
}
