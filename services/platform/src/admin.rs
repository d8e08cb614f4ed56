//! The admin HTTP listener every process serves: `/metrics` for Prometheus,
//! `/healthz` for liveness (the process runs) and `/readyz` for readiness.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;

use crate::{Readiness, metrics};

/// `/healthz` and `/readyz`, to merge into any router.
pub fn health_routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

/// The whole admin router.
pub fn router(readiness: Readiness) -> Router {
    health_routes(readiness).route("/metrics", get(metrics_handler))
}

/// Turns off Nagle's algorithm on an accepted HTTP connection. axum 0.8 no
/// longer does: a response written in pieces then waits for the client's
/// delayed ACK, 40 ms stalls on loopback. For `ListenerExt::tap_io`.
pub fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "failed to set TCP_NODELAY");
    }
}

/// Serves the admin router until shutdown.
pub async fn serve(listener: TcpListener, readiness: Readiness) -> std::io::Result<()> {
    let shutdown = readiness.shutdown().clone();
    axum::serve(listener.tap_io(set_nodelay), router(readiness))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let report = readiness.evaluate().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

async fn metrics_handler() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::encode(),
    )
}
