//! gRPC plumbing shared by every service: the server (health, reflection,
//! telemetry, graceful shutdown) and client channels that carry the trace
//! context and the caller to the next service.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing_opentelemetry::OpenTelemetrySpanExt;

mod channel;
mod endpoints;

pub(crate) use channel::service_authority;
pub use channel::{H2Channel, ResponseBody};
pub use endpoints::{ChannelOptions, Dns, KeepAlive, Resolve, Resolving};

use crate::Readiness;
use crate::metrics::GrpcServerLayer;

/// The health-service name that reports liveness rather than readiness.
pub const LIVENESS: &str = "liveness";

const READINESS_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("invalid service URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
}

/// Serves `routes` plus health and reflection on `listener` until the
/// readiness' shutdown signal trips. `names` are the full gRPC service names
/// whose health status follows readiness.
pub async fn serve(
    routes: Routes,
    names: &[&'static str],
    listener: TcpListener,
    readiness: Readiness,
) -> Result<(), GrpcError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(gocommerce_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    let shutdown = readiness.shutdown().clone();
    let names: Vec<&'static str> = names.to_vec();
    let watcher = tokio::spawn(async move {
        loop {
            let ready = readiness.evaluate_serving().await.ready;
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for name in std::iter::once("").chain(names.iter().copied()) {
                reporter.set_service_status(name, status).await;
            }
            if readiness.shutdown().is_triggered() {
                reporter
                    .set_service_status(LIVENESS, ServingStatus::NotServing)
                    .await;
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(READINESS_INTERVAL) => {}
                () = readiness.shutdown().wait() => {}
            }
        }
    });

    let result = Server::builder()
        .layer(GrpcServerLayer)
        .add_routes(routes)
        .add_service(health)
        .add_service(reflection)
        // TCP_NODELAY as on the client side: HTTP/2 writes frames in pieces,
        // and Nagle would hold them for the peer's delayed ACK (40 ms).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                shutdown.drained().await;
            },
        )
        .await;
    watcher.abort();
    Ok(result?)
}

/// The largest answer a client of ours decodes. tonic's default of 4 MiB is
/// less than a page of 100 products can honestly be (descriptions, image
/// URLs and attributes at their bounds), and an answer over the limit would
/// fail the call; this bounds a peer's answer without refusing a real one.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// A channel whose calls carry the caller's trace context.
pub type Traced = InterceptedService<H2Channel, TraceContext>;

/// A lazily connecting, traced channel to another service.
pub fn traced(url: &str) -> Result<Traced, GrpcError> {
    Ok(InterceptedService::new(H2Channel::new(url)?, TraceContext))
}

/// Client interceptor: writes the current trace context into the outgoing
/// metadata so the callee's spans join the caller's trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContext;

impl tonic::service::Interceptor for TraceContext {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_trace_context(request.metadata_mut());
        Ok(request)
    }
}

/// Writes the current span's trace context into gRPC metadata.
pub fn inject_trace_context(metadata: &mut MetadataMap) {
    use opentelemetry::propagation::TextMapPropagator;
    let context = tracing::Span::current().context();
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .inject_context(&context, &mut MetadataInjector(metadata));
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The deadline a gRPC client sent (`grpc-timeout`), as the time left when
/// the request arrived.
pub fn timeout(metadata: &MetadataMap) -> Option<Duration> {
    parse_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)
}

/// A `grpc-timeout` value (digits and a unit) as a duration.
fn parse_timeout(raw: &str) -> Option<Duration> {
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.checked_mul(3600)?),
        "M" => Duration::from_secs(value.checked_mul(60)?),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let parse = |raw: &'static str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("grpc-timeout", MetadataValue::from_static(raw));
            timeout(&metadata)
        };
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("10u"), Some(Duration::from_micros(10)));
        assert_eq!(parse("x"), None);
        assert_eq!(parse("5X"), None);
        assert_eq!(timeout(&MetadataMap::new()), None);
    }
}
