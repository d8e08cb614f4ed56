//! Prometheus metrics: per-RPC and per-route request counts, error counts and
//! latency histograms, what the gRPC client channels see of their targets
//! (addresses, connects, calls sent again), plus the process collector of the
//! `prometheus` crate.
//! The gRPC layer and the HTTP middleware here also open the server span of
//! every request, as a child of the caller's trace context.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramVec, IntCounterVec, IntGaugeVec, TextEncoder, register_histogram_vec,
    register_int_counter_vec, register_int_gauge_vec,
};
use tracing::Instrument;

use crate::telemetry;

// Latency buckets from 1 ms to 10 s: our requests live in the low milliseconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[allow(clippy::expect_used)]
static GRPC_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "grpc_server_requests_total",
        "gRPC requests handled, by service, method and status code",
        &["service", "method", "code"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static GRPC_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "grpc_server_errors_total",
        "gRPC requests that ended with a status other than OK",
        &["service", "method", "code"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static GRPC_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "grpc_server_request_duration_seconds",
        "time to the response headers of gRPC requests",
        &["service", "method"],
        BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "http_server_requests_total",
        "HTTP requests handled, by method, route and status",
        &["method", "route", "status"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static HTTP_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "http_server_errors_total",
        "HTTP requests answered with a 5xx status",
        &["method", "route", "status"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static HTTP_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "http_server_request_duration_seconds",
        "time to the response headers of HTTP requests",
        &["method", "route"],
        BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static GRPC_CLIENT_ENDPOINTS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "grpc_client_endpoints",
        "Addresses a gRPC client spreads its calls over, by target (host:port)",
        &["target"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static GRPC_CLIENT_CONNECTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "grpc_client_connects_total",
        "Connections a gRPC client opened (ok) or failed to open (failed), by target",
        &["target", "result"]
    )
    .expect("metric registers once")
});

#[allow(clippy::expect_used)]
static GRPC_CLIENT_RESENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "grpc_client_resent_total",
        "Calls a gRPC client sent again because the server had not processed them \
         (a refused stream, or a GOAWAY before it), by target",
        &["target"]
    )
    .expect("metric registers once")
});

/// How many addresses the channels to `target` spread their calls over.
pub(crate) fn client_endpoints(target: &str, count: usize) {
    GRPC_CLIENT_ENDPOINTS
        .with_label_values(&[target])
        .set(i64::try_from(count).unwrap_or(i64::MAX));
}

/// A connect to one of `target`'s addresses, made or failed.
pub(crate) fn client_connect(target: &str, made: bool) {
    let result = if made { "ok" } else { "failed" };
    GRPC_CLIENT_CONNECTS
        .with_label_values(&[target, result])
        .inc();
}

/// A call to `target` sent again.
pub(crate) fn client_resent(target: &str) {
    GRPC_CLIENT_RESENT.with_label_values(&[target]).inc();
}

/// Every registered metric in the Prometheus text format.
pub fn encode() -> String {
    let families = prometheus::gather();
    let mut buffer = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&families, &mut buffer) {
        tracing::error!(%error, "failed to encode metrics");
    }
    String::from_utf8(buffer).unwrap_or_default()
}

/// Tower layer for tonic servers: server span (child of the caller's trace),
/// request count, error count and latency per RPC.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcServerLayer;

impl<S> tower::Layer<S> for GrpcServerLayer {
    type Service = GrpcServerMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcServerMetrics<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcServerMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = split_grpc_path(request.uri().path());
        let span = tracing::info_span!(
            "grpc request",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        telemetry::set_parent_from_headers(&span, request.headers());
        let start = Instant::now();
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let result = future.await;
                // Unary errors are "trailers-only" responses with grpc-status in
                // the headers; a missing header means the call is streaming or OK.
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                    Err(_) => tonic::Code::Internal,
                };
                tracing::Span::current().record("rpc.grpc.status_code", code as i32);
                // Unknown paths come from clients; never let them become labels.
                let (service, method) = if code == tonic::Code::Unimplemented {
                    ("unknown".to_owned(), "unknown".to_owned())
                } else {
                    (service, method)
                };
                let code_label = format!("{code:?}");
                let labels = [service.as_str(), method.as_str(), code_label.as_str()];
                GRPC_REQUESTS.with_label_values(&labels).inc();
                if code != tonic::Code::Ok {
                    GRPC_ERRORS.with_label_values(&labels).inc();
                }
                GRPC_LATENCY
                    .with_label_values(&[service.as_str(), method.as_str()])
                    .observe(start.elapsed().as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}

fn split_grpc_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default().to_owned();
    let method = parts.next().unwrap_or_default().to_owned();
    (service, method)
}

/// Axum middleware: server span (child of the caller's trace), request count,
/// error count and latency per matched route.
pub async fn http_middleware(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    // The matched route, never the raw path: ids must not become labels.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "http request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    telemetry::set_parent_from_headers(&span, request.headers());
    let start = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    let status_label = status.as_str();
    HTTP_REQUESTS
        .with_label_values(&[method.as_str(), route.as_str(), status_label])
        .inc();
    if status.is_server_error() {
        HTTP_ERRORS
            .with_label_values(&[method.as_str(), route.as_str(), status_label])
            .inc();
    }
    HTTP_LATENCY
        .with_label_values(&[method.as_str(), route.as_str()])
        .observe(start.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_split_into_service_and_method() {
        assert_eq!(
            split_grpc_path("/gocommerce.auth.v1.AuthService/Login"),
            (
                "gocommerce.auth.v1.AuthService".to_owned(),
                "Login".to_owned()
            )
        );
    }

    #[test]
    fn the_process_collector_is_exported() {
        GRPC_REQUESTS.with_label_values(&["s", "m", "Ok"]).inc();
        let text = encode();
        assert!(text.contains("grpc_server_requests_total"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
