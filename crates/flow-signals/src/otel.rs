//! [`Traces`]: each run as an OpenTelemetry trace, exported over OTLP/HTTP
//! (protobuf), behind the `otel` feature.
//!
//! The engine emits plain `tracing` spans (`flow` for the run, `step`,
//! `action` for each attempt of an action, `job` for each cluster job)
//! with their attributes as fields; [`Traces::layer`] is the
//! `tracing-opentelemetry` layer that turns flow's spans (and nothing
//! else: no events, no dependency's spans) into OpenTelemetry spans, and
//! the SDK's batch processor exports them from a thread of its own, so a
//! slow or absent collector never slows a step. [`Traces::tracer`] joins a
//! `recover`'s run span to the trace of the run it recovers, through the
//! W3C `traceparent` the flow record keeps. [`Traces::shutdown`] ends it:
//! every span exported, or given up after a timeout.

use flow_engine::RunTracer;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Where and how traces are sent (`[telemetry]` in the settings).
#[derive(Clone)]
pub struct TraceConfig {
    /// The collector's OTLP/HTTP base URL (`/v1/traces` is appended
    /// unless it ends with it).
    pub endpoint: String,
    /// Extra request headers (an `Authorization` token...): values are
    /// secrets, never shown by `Debug`.
    pub headers: Vec<(String, String)>,
    /// The `service.name` of the traces.
    pub service_name: String,
    /// How long one export, and the final flush, may take.
    pub timeout: Duration,
}

impl fmt::Debug for TraceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("TraceConfig")
            .field("endpoint", &self.endpoint)
            .field("headers", &headers)
            .field("service_name", &self.service_name)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl TraceConfig {
    /// The URL spans are posted to.
    pub fn traces_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        }
    }
}

/// The running trace export.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Builds the exporter and the batch processor (its thread starts
    /// here). Fails only on a configuration the exporter refuses (a bad
    /// URL, an invalid header). Built on a thread of its own at the
    /// exporters' lower priority, which the batch processor's and the HTTP
    /// client's threads inherit.
    pub fn start(config: &TraceConfig) -> Result<Traces, String> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    crate::lower_priority();
                    Self::build(config)
                })
                .join()
                .unwrap_or_else(|_| Err("[telemetry] the trace export did not start".to_string()))
        })
    }

    fn build(config: &TraceConfig) -> Result<Traces, String> {
        let url = config.traces_url();
        let headers: HashMap<String, String> = config.headers.iter().cloned().collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(config.timeout)
            .with_headers(headers)
            .build()
            .map_err(|e| format!("[telemetry] cannot export traces to {url}: {e}"))?;
        let exporter = ReportOnce {
            inner: exporter,
            url,
            reported: Arc::new(AtomicBool::new(false)),
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Traces { provider })
    }

    /// The layer to compose into the process's subscriber: flow's own
    /// spans become OpenTelemetry spans (events and other crates' spans
    /// do not reach it), with flow's attributes only. The layer's extras
    /// are off: each cost the engine's thread work on every span (the
    /// busy and idle times and the context activation on every poll of a
    /// step's future) and said nothing an operator reads (the source line
    /// and thread of a span, its `tracing` target).
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("flow"))
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                let target = meta.target();
                meta.is_span() && (target == "flow" || target.starts_with("flow_"))
            }))
    }

    /// What the engine joins each run's span to its trace with
    /// (`EngineOptions::tracer`).
    pub fn tracer(&self) -> Arc<dyn RunTracer> {
        Arc::new(TraceJoiner)
    }

    /// Exports the spans ended so far and waits for the export (a
    /// process running one run after another, e.g. the benchmark's
    /// repeats).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::error!(target: "flow_signals::otel", "[telemetry] traces not all exported: {e}");
        }
    }

    /// Exports what is left and stops, waiting at most `timeout` (spans
    /// not exported by then are dropped). Call it once the run's spans
    /// ended, before the process exits.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(timeout) {
            tracing::error!(target: "flow_signals::otel", "[telemetry] traces not all exported: {e}");
        }
    }
}

/// Joins a recover's run span to the stored trace and reports the run
/// span's own context.
struct TraceJoiner;

impl RunTracer for TraceJoiner {
    fn run_span(&self, span: &tracing::Span, continued: Option<&str>) -> Option<String> {
        let propagator = TraceContextPropagator::new();
        if let Some(traceparent) = continued {
            let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
            let parent = propagator.extract(&carrier);
            if parent.span().span_context().is_valid() {
                let _ = span.set_parent(parent);
            }
        }
        let context = span.context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        propagator.inject_context(&context, &mut carrier);
        carrier.remove("traceparent")
    }
}

/// The OTLP exporter, reporting its first failure on stderr (once: a
/// collector that is down must not flood the run's output); the run goes
/// on either way.
#[derive(Debug)]
struct ReportOnce<E> {
    inner: E,
    url: String,
    reported: Arc<AtomicBool>,
}

impl<E: SpanExporter> SpanExporter for ReportOnce<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            if !self.reported.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    target: "flow_signals::otel",
                    "[telemetry] traces not exported to {}: {} (later failures are not reported)",
                    flow_core::mask(&self.url),
                    flow_core::mask(&e.to_string())
                );
            }
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_appended_once() {
        let config = |endpoint: &str| TraceConfig {
            endpoint: endpoint.into(),
            headers: vec![("Authorization".into(), "Bearer s3cr3t".into())],
            service_name: "flow".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            config("http://127.0.0.1:4318").traces_url(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            config("http://c:4318/v1/traces/").traces_url(),
            "http://c:4318/v1/traces"
        );
        let shown = format!("{:?}", config("http://c"));
        assert!(
            shown.contains("Authorization") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }
}
