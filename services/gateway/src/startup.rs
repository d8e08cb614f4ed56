//! Builds the gateway: backend clients, token verifier (with the poller of
//! ended sessions), rate limiter, the router with its layers, and the bound
//! listener (port 0 allowed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use gocommerce_platform::grpc::GrpcError;
use gocommerce_platform::listener::{self, BindError};
use gocommerce_platform::{Readiness, admin, metrics};
use serde::Serialize;
use tokio::net::TcpListener;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use utoipa::ToSchema;

use crate::authn::TokenVerifier;
use crate::backend::Backends;
use crate::config::GatewayConfig;
use crate::json::Json;
use crate::problem;
use crate::ratelimit::{self, KeyedLimiter};
use crate::routes::{self, auth};
use crate::sessions;

/// What every handler shares. Cloned for every request (axum's `State`), so
/// the clients sit behind one `Arc`: cloning six gRPC clients (each with its
/// URI and channel handle) was about 3% of a cached product view.
#[derive(Debug, Clone)]
pub struct AppState {
    pub backends: Arc<Backends>,
    pub verifier: Arc<TokenVerifier>,
    pub auth_limiter: Arc<KeyedLimiter>,
    pub trust_forwarded_for: bool,
    pub event_stream_max: Duration,
    pub readiness: Readiness,
    openapi: Arc<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot render the OpenAPI document: {0}")]
    OpenApi(#[from] serde_json::Error),
}

/// The gateway, built and bound, ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    port: u16,
    router: Router,
    readiness: Readiness,
}

impl Application {
    pub async fn build(config: GatewayConfig, readiness: Readiness) -> Result<Self, StartupError> {
        let backends = Arc::new(Backends::connect(&config)?);
        let verifier = Arc::new(TokenVerifier::new(&config.issuer, &config.audience));
        {
            // Ready once tokens can be verified: the JWKS has been fetched.
            let verifier = verifier.clone();
            let backends = backends.clone();
            readiness.add_check("auth-jwks", move || {
                let verifier = verifier.clone();
                let backends = backends.clone();
                Box::pin(async move {
                    if verifier.has_keys() {
                        return Ok(());
                    }
                    verifier
                        .refresh(&backends)
                        .await
                        .map_err(|s| s.message().to_owned())?;
                    if verifier.has_keys() {
                        Ok(())
                    } else {
                        Err("the auth service published no keys".to_owned())
                    }
                })
            });
        }
        {
            // And once it knows which sessions have ended, or it would let
            // their tokens through.
            let sessions = verifier.sessions().clone();
            let backends = backends.clone();
            readiness.add_check("auth-ended-sessions", move || {
                let sessions = sessions.clone();
                let backends = backends.clone();
                Box::pin(async move {
                    if sessions.is_synced() {
                        return Ok(());
                    }
                    sessions
                        .sync(&backends)
                        .await
                        .map_err(|s| s.message().to_owned())
                })
            });
        }
        sessions::spawn_poller(
            verifier.sessions().clone(),
            backends.clone(),
            config.ended_sessions_poll,
            readiness.shutdown().clone(),
        );
        let auth_limiter = ratelimit::limiter(config.auth_rate_per_minute);
        ratelimit::spawn_cleanup(auth_limiter.clone(), readiness.shutdown().clone());
        let state = AppState {
            backends,
            verifier,
            auth_limiter,
            trust_forwarded_for: config.trust_forwarded_for,
            event_stream_max: config.event_stream_max,
            readiness: readiness.clone(),
            openapi: Arc::new(crate::openapi::document().to_json()?),
        };
        let router = router(state, config.body_limit);
        let (listener, port) = listener::bind("HTTP", config.addr).await?;
        tracing::info!(port, "gateway listening");
        Ok(Self {
            listener,
            port,
            router,
            readiness,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the shutdown signal; in-flight requests finish first.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let shutdown = self.readiness.shutdown().clone();
        let listener = self.listener.tap_io(admin::set_nodelay);
        axum::serve(
            listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
    }
}

fn router(state: AppState, body_limit: usize) -> Router {
    let auth_routes = Router::new()
        .route("/v1/auth/register", post(auth::register))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/logout", post(auth::logout))
        .route("/v1/auth/logout-everywhere", post(auth::logout_everywhere))
        .route("/v1/auth/password", post(auth::change_password))
        .route(
            "/v1/auth/password-reset",
            post(auth::request_password_reset),
        )
        .route(
            "/v1/auth/password-reset/confirm",
            post(auth::confirm_password_reset),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit_auth,
        ));
    Router::new()
        .merge(auth_routes)
        .route("/v1/auth/me", get(auth::me))
        .route("/.well-known/jwks.json", get(auth::jwks))
        .merge(routes::router())
        .route("/openapi.json", get(openapi_json))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route_layer(axum::middleware::from_fn(metrics::http_middleware))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
}

/// Request ids are random (v4) UUIDs, drawn from the thread's userspace
/// generator: `MakeRequestUuid` asks the kernel (`getrandom`) for every one,
/// a system call on every request.
#[derive(Debug, Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut text = uuid::Uuid::encode_buffer();
        header::HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
            .ok()
            .map(RequestId::new)
    }
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    #[schema(example = "ok")]
    pub status: String,
}

/// Readiness and the state of each dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessView {
    pub ready: bool,
    pub checks: Vec<CheckView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckView {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Liveness: the process is running.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive", body = HealthView)))]
pub async fn healthz() -> Json<HealthView> {
    Json(HealthView {
        status: "ok".to_owned(),
    })
}

/// Readiness: the gateway can serve requests (not shutting down, token keys
/// and ended sessions loaded).
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = ReadinessView),
        (status = 503, description = "Not ready; the failing checks say why", body = ReadinessView),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.readiness.evaluate().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let view = ReadinessView {
        ready: report.ready,
        checks: report
            .checks
            .into_iter()
            .map(|c| CheckView {
                name: c.name,
                ok: c.ok,
                error: c.error,
            })
            .collect(),
    };
    (status, Json(view))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.as_str().to_owned(),
    )
}
