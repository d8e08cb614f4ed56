//! Logs and traces. Logs go to stdout as human-readable lines or JSON
//! (`LOG_FORMAT`), filtered by `RUST_LOG`. When `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, spans are also exported over OTLP/gRPC, and the W3C trace context
//! travels with every request: HTTP headers, gRPC metadata, broker headers.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{ConfigError, Env};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("a global subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Keeps the trace exporter alive; dropping it flushes pending spans.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            // The subscriber may be gone by now; stderr is all that is left.
            eprintln!("failed to flush traces: {error}");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Pretty,
    Json,
}

/// Whether human-readable logs are coloured: only on a terminal, since
/// escape codes in a file or a log collector are noise to read and to grep,
/// and not when `NO_COLOR` is set (no-color.org).
fn colours(env: &dyn Env) -> bool {
    use std::io::IsTerminal as _;
    std::io::stdout().is_terminal() && env.var("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber: a log layer and, when configured, the
/// OpenTelemetry layer.
pub fn init(env: &dyn Env, default_service_name: &str) -> Result<TelemetryGuard, TelemetryError> {
    let format = match env.var("LOG_FORMAT").as_deref() {
        None | Some("pretty") => LogFormat::Pretty,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::new(
                "LOG_FORMAT",
                format!("expected pretty or json, got {other:?}"),
            )
            .into());
        }
    };
    let filter = match env.var("RUST_LOG") {
        None => EnvFilter::new("info"),
        Some(directives) => {
            EnvFilter::try_new(&directives).map_err(|e| ConfigError::new("RUST_LOG", e))?
        }
    };
    let service_name = crate::config::string(env, "OTEL_SERVICE_NAME", default_service_name);

    let fmt_layer = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(colours(env))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = match env.var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        None => None,
        Some(endpoint) => Some(otlp_provider(&endpoint, &service_name)?),
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("gocommerce")));

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    Ok(TelemetryGuard { provider })
}

fn otlp_provider(endpoint: &str, service_name: &str) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build())
}

/// Makes `span` a child of the trace context carried in `headers`, if any.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // An error means no OpenTelemetry layer is installed: nothing to link.
    let _ = span.set_parent(context);
}

/// Writes the current span's trace context into outgoing HTTP headers or gRPC metadata.
pub fn inject_into_headers(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// The current span's trace context as plain key/value pairs (for broker headers).
pub fn current_context_map() -> HashMap<String, String> {
    let mut map = HashMap::new();
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut map);
    map
}

/// Makes `span` a child of the trace context carried in plain key/value pairs.
pub fn set_parent_from_map(span: &tracing::Span, map: &HashMap<String, String>) {
    let context = TraceContextPropagator::new().extract(map);
    let _ = span.set_parent(context);
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
