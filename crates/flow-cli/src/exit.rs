//! Exit codes, and the error type every command returns.
//!
//! Each failure carries the code it exits with, so the decision "is this bad
//! input or a failed flow?" is made where the failure is understood, not in
//! one big match at the end.

use std::fmt;
use std::process::ExitCode;

/// The documented exit codes of `flow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what was asked; a run's steps all completed.
    Success,
    /// The flow failed: a step failed, no cluster launched, or the store
    /// failed mid-run.
    FlowFailed,
    /// Bad input (flow file, settings, arguments) or a refused mode
    /// (precondition failed, lease held by another engine). Nothing was
    /// written.
    BadInput,
    /// The run was cancelled by SIGINT or SIGTERM and wound down cleanly.
    Cancelled,
    /// The steps completed, but a cluster the run launched could not be
    /// terminated: it may still be up and billing. Not 0, so schedulers
    /// notice; not 1, because the flow's work is done.
    ClustersLeftUp,
    /// A second Ctrl-C: the lease was released and local jobs killed, and
    /// the process exited at once.
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::FlowFailed => 1,
            Exit::BadInput => 2,
            Exit::Cancelled => 3,
            Exit::ClustersLeftUp => 4,
            Exit::Interrupted => 130,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// The exit-code table shown by `flow --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success (for a run: every step it ran completed)
  1    the flow failed: a step failed, no cluster launched, the store failed mid-run,
       or a log line could not be written
  2    bad input (flow file, settings, arguments) or a refused mode (blocked step,
       nothing to recover, flow being run by another engine); nothing was written
  3    cancelled by Ctrl-C (SIGINT) or SIGTERM
  4    the steps completed, but a cluster the run launched could not be terminated
       (it may still be up and billing; flow clusters --terminate-orphans retries)
  130  a second Ctrl-C: lease released, local jobs killed, exited at once

SettingsFile: --settings FILE, else $FLOW_SETTINGS, else ./flow.toml if it exists,
else built-in defaults (store and logs under the per-user XDG directories).
Log level on stderr: $FLOW_LOG (default \"error\"); log files get flow's events and other crates' INFO and above, plus what $FLOW_LOG adds.";

/// A command's failure: the message for stderr and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    /// Bad input or a refused mode (exit 2).
    pub fn bad_input(message: impl Into<String>) -> Self {
        CliError {
            exit: Exit::BadInput,
            message: message.into(),
        }
    }

    /// The flow or the store failed (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            exit: Exit::FlowFailed,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Line and column (1-based) of byte `offset` in `text`, for messages that
/// editors can jump to.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("abc\ndef", 5), (2, 2));
        assert_eq!(line_col("abc\n", 4), (2, 1));
    }
}
