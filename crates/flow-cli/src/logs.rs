//! Where a run's `tracing` events go: flow's own and other crates' `INFO`
//! and above (`logging::kept_in_files`, plus what `FLOW_LOG` asks for) to
//! the engine's per-flow and per-step log files
//! ([`flow_engine::logging::FileLogLayer`]), and those
//! that pass `FLOW_LOG` (default `error`) to stderr as short lines naming the
//! step and action, e.g. `ERROR load.shell: exit code 1`.
//!
//! The engine's own `logging::init` would print stderr lines without the
//! step (its level filter hides the spans that name it) and with colour codes
//! even into files; this is the same file layer composed with a stderr layer
//! that fits a command line and does not tear the progress bar.

use crate::progress;
use flow_engine::logging;
use std::io::IsTerminal;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// What reaches stderr unless `FLOW_LOG` says otherwise.
pub const DEFAULT_FILTER: &str = "error";

/// Installs the global subscriber. Call once, before the engine runs.
pub fn init() {
    init_with(&crate::telemetry::Telemetry::none());
}

/// [`init`], with the trace layer of `telemetry` when it exports traces.
pub fn init_with(telemetry: &crate::telemetry::Telemetry) {
    let directives = std::env::var("FLOW_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_string());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        errln!("warning: FLOW_LOG={directives:?} is not a valid log filter ({e}); using \"{DEFAULT_FILTER}\"");
        EnvFilter::new(DEFAULT_FILTER)
    });
    // The files (and the store) get flow's own events and what others log
    // at INFO and above, plus whatever FLOW_LOG asks for (e.g. a
    // dependency's debug events).
    let files = logging::FileLogLayer
        .with_filter(filter_fn(logging::kept_in_files).or(
            EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)),
        ));
    // Spans always pass, so events below them can name their step.
    let stderr = StderrLayer {
        ansi: std::io::stderr().is_terminal(),
    }
    .with_filter(filter.or(filter_fn(|meta| meta.is_span())));
    let subscriber = tracing_subscriber::registry().with(files).with(stderr);
    #[cfg(feature = "otel")]
    let subscriber = subscriber.with(telemetry.layer());
    #[cfg(not(feature = "otel"))]
    let _ = telemetry;
    // Only fails if a subscriber is already installed, which then stays.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Prints `LEVEL step.action: message` lines on stderr.
struct StderrLayer {
    ansi: bool,
}

impl<S> Layer<S> for StderrLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // The same logger names as the log files, from the tags the file
        // layer of this subscriber keeps on the spans.
        let logger = logging::logger_name(event, &ctx);
        let text = logging::event_text(event);
        let level = *event.metadata().level();
        let level_text = match (self.ansi, level) {
            (true, Level::ERROR) => "\x1b[31mERROR\x1b[0m".to_string(),
            (true, Level::WARN) => "\x1b[33mWARN\x1b[0m".to_string(),
            _ => level.to_string(),
        };
        let line = match logger {
            Some(logger) => format!("{level_text} {logger}: {text}"),
            None => format!("{level_text} {text}"),
        };
        progress::print_line(&line);
    }
}
