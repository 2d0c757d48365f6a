//! Where a run's `tracing` events go: all of them to the engine's per-flow
//! and per-step log files ([`flow_engine::logging::FileLogLayer`]), and those
//! that pass `FLOW_LOG` (default `error`) to stderr as short lines naming the
//! step and action, e.g. `ERROR load.shell: exit code 1`.
//!
//! The engine's own `logging::init` would print stderr lines without the
//! step (its level filter hides the spans that name it) and with colour codes
//! even into files; this is the same file layer composed with a stderr layer
//! that fits a command line and does not tear the progress bar.

use crate::progress;
use std::fmt::Write as _;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// What reaches stderr unless `FLOW_LOG` says otherwise.
pub const DEFAULT_FILTER: &str = "error";

/// Installs the global subscriber. Call once, before the engine runs.
pub fn init() {
    let directives = std::env::var("FLOW_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_string());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        errln!("warning: FLOW_LOG={directives:?} is not a valid log filter ({e}); using \"{DEFAULT_FILTER}\"");
        EnvFilter::new(DEFAULT_FILTER)
    });
    // Spans always pass, so events below them can name their step.
    let stderr = StderrLayer {
        ansi: std::io::stderr().is_terminal(),
    }
    .with_filter(filter.or(filter_fn(|meta| meta.is_span())));
    let subscriber = tracing_subscriber::registry()
        .with(flow_engine::logging::FileLogLayer)
        .with(stderr);
    // Only fails if a subscriber is already installed, which then stays.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The names a span gives to the events below it.
#[derive(Default)]
struct Names {
    flow: Option<String>,
    step: Option<String>,
    action: Option<String>,
}

impl Visit for Names {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "flow" => self.flow = Some(value.to_string()),
            "step" => self.step = Some(value.to_string()),
            "action" => self.action = Some(value.to_string()),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, text.trim_matches('"'));
    }
}

/// An event's message followed by its other fields as ` key=value`.
struct Message(String, String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.1, " {}={value}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.1, " {}={value:?}", field.name());
        }
    }
}

/// Prints `LEVEL step.action: message` lines on stderr.
struct StderrLayer {
    ansi: bool,
}

impl<S> Layer<S> for StderrLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut names = Names::default();
        attrs.record(&mut names);
        if names.flow.is_some() || names.step.is_some() || names.action.is_some() {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(names);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let (mut flow, mut step, mut action) = (None, None, None);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(n) = span.extensions().get::<Names>() {
                    action = action.or_else(|| n.action.clone());
                    step = step.or_else(|| n.step.clone());
                    flow = flow.or_else(|| n.flow.clone());
                }
            }
        }
        let logger = match (step, action) {
            (Some(step), Some(action)) => Some(format!("{step}.{action}")),
            (Some(step), None) => Some(step),
            (None, _) => flow,
        };
        let mut message = Message(String::new(), String::new());
        event.record(&mut message);
        let level = *event.metadata().level();
        let level_text = match (self.ansi, level) {
            (true, Level::ERROR) => "\x1b[31mERROR\x1b[0m".to_string(),
            (true, Level::WARN) => "\x1b[33mWARN\x1b[0m".to_string(),
            _ => level.to_string(),
        };
        let line = match logger {
            Some(logger) => format!("{level_text} {logger}: {}{}", message.0, message.1),
            None => format!("{level_text} {}{}", message.0, message.1),
        };
        progress::print_line(&line);
    }
}
