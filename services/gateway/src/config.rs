//! The gateway's settings, read from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use gocommerce_platform::config::{self, ConfigError, Env, ServiceName};

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub addr: SocketAddr,
    pub auth_url: String,
    pub user_url: String,
    pub product_url: String,
    pub order_url: String,
    pub payment_url: String,
    pub notification_url: String,
    pub backend_timeout: Duration,
    /// How long an order's status stream stays open; the client reconnects.
    pub event_stream_max: Duration,
    pub body_limit: usize,
    pub auth_rate_per_minute: u32,
    pub trust_forwarded_for: bool,
    pub issuer: String,
    pub audience: String,
    /// How often the ended sessions are read from the auth service: at
    /// most this long after a session ends on another gateway (or by an
    /// admin's hand in the database), its access tokens still pass here.
    pub ended_sessions_poll: Duration,
}

impl GatewayConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let timeout_ms = config::at_least(env, "GATEWAY_BACKEND_TIMEOUT_MS", 5000u64, 1)?;
        let event_stream_seconds =
            config::at_least(env, "GATEWAY_EVENT_STREAM_MAX_SECONDS", 300u64, 1)?;
        let body_limit = config::at_least(env, "GATEWAY_BODY_LIMIT_BYTES", 64 * 1024usize, 1024)?;
        let auth_rate_per_minute = config::at_least(env, "GATEWAY_AUTH_RATE_PER_MINUTE", 60u32, 1)?;
        let ended_sessions_poll_ms =
            config::at_least(env, "GATEWAY_ENDED_SESSIONS_POLL_MS", 1000u64, 10)?;
        Ok(Self {
            addr: config::addr(env, "GATEWAY_ADDR", "0.0.0.0:8080")?,
            auth_url: ServiceName::Auth.url(env)?,
            user_url: ServiceName::User.url(env)?,
            product_url: ServiceName::Product.url(env)?,
            order_url: ServiceName::Order.url(env)?,
            payment_url: ServiceName::Payment.url(env)?,
            notification_url: ServiceName::Notification.url(env)?,
            backend_timeout: Duration::from_millis(timeout_ms),
            event_stream_max: Duration::from_secs(event_stream_seconds),
            body_limit,
            auth_rate_per_minute,
            trust_forwarded_for: config::boolean(env, "GATEWAY_TRUST_FORWARDED_FOR", false)?,
            issuer: config::string(env, "JWT_ISSUER", "gocommerce"),
            audience: config::string(env, "JWT_AUDIENCE", "gocommerce-api"),
            ended_sessions_poll: Duration::from_millis(ended_sessions_poll_ms),
        })
    }
}
