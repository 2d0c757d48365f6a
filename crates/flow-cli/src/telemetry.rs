//! `[telemetry]`: trace export for the run commands, started before the
//! log subscriber (whose layer it adds) and shut down before the process
//! exits. Without the `otel` feature, or without `otlp_endpoint`, it is
//! nothing: no layer, no tracer, no thread.

use crate::exit::CliError;
use crate::settings::SettingsFile;
use std::sync::Arc;

/// The trace export of this process, if `[telemetry]` configures one.
pub struct Telemetry {
    #[cfg(feature = "otel")]
    traces: Option<flow_signals::otel::Traces>,
    #[cfg(feature = "otel")]
    timeout: std::time::Duration,
}

impl Telemetry {
    /// None configured.
    pub fn none() -> Telemetry {
        Telemetry {
            #[cfg(feature = "otel")]
            traces: None,
            #[cfg(feature = "otel")]
            timeout: std::time::Duration::ZERO,
        }
    }

    /// Starts the export `settings` ask for (settings without the `otel`
    /// feature were refused when they were loaded).
    pub fn start(settings: &SettingsFile) -> Result<Telemetry, CliError> {
        #[cfg(feature = "otel")]
        if let Some(config) = settings.telemetry()? {
            let traces = flow_signals::otel::Traces::start(&config).map_err(CliError::bad_input)?;
            return Ok(Telemetry {
                traces: Some(traces),
                timeout: config.timeout,
            });
        }
        let _ = settings;
        Ok(Telemetry::none())
    }

    /// The layer the log subscriber adds, if traces are exported.
    #[cfg(feature = "otel")]
    pub fn layer<S>(&self) -> Option<impl tracing_subscriber::Layer<S> + Send + Sync>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        self.traces.as_ref().map(|t| t.layer())
    }

    /// What joins each run's span to its trace (`EngineOptions::tracer`).
    pub fn tracer(&self) -> Option<Arc<dyn flow_engine::RunTracer>> {
        #[cfg(feature = "otel")]
        if let Some(traces) = &self.traces {
            return Some(traces.tracer());
        }
        None
    }

    /// Exports the spans left, waiting at most the export timeout. Call it
    /// after the engine is dropped (its spans then ended).
    pub fn shutdown(&self) {
        #[cfg(feature = "otel")]
        if let Some(traces) = &self.traces {
            traces.shutdown(self.timeout);
        }
    }
}
