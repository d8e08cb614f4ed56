//! Configuration from environment variables. Every value has a default that
//! works on a developer machine; a value that cannot be parsed fails at start
//! with an error naming the variable.

use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::db::{DbSettings, STARTUP_WAIT};

/// A variable was set to something that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {name}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(name: &str, reason: impl Display) -> Self {
        Self {
            name: name.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// A source of variables: the process environment, or a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|v| !v.is_empty())
    }
}

/// Reads `name`, or `default` when unset.
pub fn string(env: &dyn Env, name: &str, default: &str) -> String {
    env.var(name).unwrap_or_else(|| default.to_owned())
}

/// Reads and parses `name`, or `default` when unset.
pub fn parse<T>(env: &dyn Env, name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match env.var(name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|e| ConfigError::new(name, e)),
    }
}

/// Reads and parses `name` like [`parse`], refusing a value under `min`: a
/// zero count, timeout or interval would leave nothing to work with, fail
/// every call, or make a loop spin.
pub fn at_least<T>(env: &dyn Env, name: &str, default: T, min: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Display,
    T::Err: Display,
{
    let value = parse(env, name, default)?;
    if value < min {
        return Err(ConfigError::new(name, format!("must be at least {min}")));
    }
    Ok(value)
}

/// Reads a socket address such as `0.0.0.0:8080`.
pub fn addr(env: &dyn Env, name: &str, default: &str) -> Result<SocketAddr, ConfigError> {
    let raw = string(env, name, default);
    raw.parse()
        .map_err(|e| ConfigError::new(name, format!("{e} (expected host:port, got {raw:?})")))
}

/// Reads a duration given in whole seconds.
pub fn seconds(env: &dyn Env, name: &str, default: u64) -> Result<Duration, ConfigError> {
    parse(env, name, default).map(Duration::from_secs)
}

/// Reads a boolean: `true`/`false`/`1`/`0`.
pub fn boolean(env: &dyn Env, name: &str, default: bool) -> Result<bool, ConfigError> {
    match env.var(name).as_deref().map(str::trim) {
        None => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ConfigError::new(
            name,
            format!("expected true or false, got {other:?}"),
        )),
    }
}

/// Settings every process shares.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub admin_addr: SocketAddr,
    pub shutdown_grace: Duration,
    /// How long internal gRPC servers keep answering after the signal.
    pub shutdown_drain: Duration,
    pub database: DbSettings,
    pub amqp_url: String,
    /// Prefix of every exchange and queue name; empty for none.
    pub amqp_namespace: String,
    /// When set, unused queues are deleted by RabbitMQ after this long.
    pub amqp_queue_expires: Option<Duration>,
}

impl CommonConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let database = DbSettings {
            max_connections: at_least(env, "DATABASE_MAX_CONNECTIONS", 10u32, 1)?,
            startup_wait: seconds(env, "DATABASE_STARTUP_WAIT_SECONDS", STARTUP_WAIT.as_secs())?,
        };
        Ok(Self {
            admin_addr: addr(env, "ADMIN_ADDR", "0.0.0.0:9090")?,
            shutdown_grace: seconds(env, "SHUTDOWN_GRACE_SECONDS", 20)?,
            shutdown_drain: Duration::from_millis(parse(env, "SHUTDOWN_DRAIN_MS", 1000u64)?),
            database,
            amqp_url: string(env, "AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            amqp_namespace: string(env, "AMQP_NAMESPACE", ""),
            amqp_queue_expires: match env.var("AMQP_QUEUE_EXPIRES_SECONDS") {
                None => None,
                Some(_) => Some(Duration::from_secs(at_least(
                    env,
                    "AMQP_QUEUE_EXPIRES_SECONDS",
                    1u64,
                    1,
                )?)),
            },
        })
    }
}

/// The services that own a gRPC server, with their default ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceName {
    Auth,
    User,
    Product,
    Order,
    Payment,
    Notification,
}

impl ServiceName {
    pub const ALL: [ServiceName; 6] = [
        Self::Auth,
        Self::User,
        Self::Product,
        Self::Order,
        Self::Payment,
        Self::Notification,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::User => "user",
            Self::Product => "product",
            Self::Order => "order",
            Self::Payment => "payment",
            Self::Notification => "notification",
        }
    }

    fn env_prefix(self) -> &'static str {
        match self {
            Self::Auth => "AUTH",
            Self::User => "USER",
            Self::Product => "PRODUCT",
            Self::Order => "ORDER",
            Self::Payment => "PAYMENT",
            Self::Notification => "NOTIFICATION",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Self::Auth => 50051,
            Self::User => 50052,
            Self::Product => 50053,
            Self::Order => 50054,
            Self::Payment => 50055,
            Self::Notification => 50056,
        }
    }

    /// `<SVC>_GRPC_ADDR`: where this service's server listens.
    pub fn grpc_addr(self, env: &dyn Env) -> Result<SocketAddr, ConfigError> {
        let name = format!("{}_GRPC_ADDR", self.env_prefix());
        addr(env, &name, &format!("0.0.0.0:{}", self.default_port()))
    }

    /// `<SVC>_URL`: where other processes reach this service.
    pub fn url(self, env: &dyn Env) -> Result<String, ConfigError> {
        let name = format!("{}_URL", self.env_prefix());
        let url = string(
            env,
            &name,
            &format!("http://127.0.0.1:{}", self.default_port()),
        );
        if let Err(reason) = crate::grpc::service_authority(&url) {
            return Err(ConfigError::new(&name, format!("{reason}, got {url:?}")));
        }
        Ok(url)
    }

    /// `<SVC>_DATABASE_URL`: this service's own database.
    pub fn database_url(self, env: &dyn Env) -> Result<String, ConfigError> {
        let name = format!("{}_DATABASE_URL", self.env_prefix());
        let url = string(
            env,
            &name,
            &format!(
                "postgres://postgres@127.0.0.1:5432/gocommerce_{}",
                self.as_str()
            ),
        );
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::new(
                &name,
                "expected a postgres:// URL".to_owned(),
            ));
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_value_under_its_minimum_is_refused_by_name() {
        assert_eq!(at_least(&env(&[]), "N", 5u32, 1).expect("the default"), 5);
        assert_eq!(
            at_least(&env(&[("N", "1")]), "N", 5u32, 1).expect("the minimum"),
            1
        );
        let err = at_least(&env(&[("N", "0")]), "N", 5u32, 1).expect_err("under it");
        assert_eq!(err.to_string(), "invalid value for N: must be at least 1");
        // RabbitMQ refuses an x-expires of 0, and the consumers would retry
        // their declarations forever.
        let err = CommonConfig::from_env(&env(&[("AMQP_QUEUE_EXPIRES_SECONDS", "0")]))
            .expect_err("no lease");
        assert_eq!(err.name, "AMQP_QUEUE_EXPIRES_SECONDS");
    }

    #[test]
    fn defaults_work_without_any_variable() {
        let config = CommonConfig::from_env(&env(&[])).expect("defaults are valid");
        assert_eq!(config.admin_addr.port(), 9090);
        assert_eq!(config.shutdown_grace, Duration::from_secs(20));
        assert_eq!(config.database, DbSettings::new(10));
        assert_eq!(config.database.startup_wait, Duration::from_secs(60));
        assert_eq!(
            ServiceName::Product
                .database_url(&env(&[]))
                .expect("default"),
            "postgres://postgres@127.0.0.1:5432/gocommerce_product"
        );
        assert_eq!(
            ServiceName::Order.url(&env(&[])).expect("default"),
            "http://127.0.0.1:50054"
        );
    }

    #[test]
    fn a_laptop_can_have_a_missing_database_fail_the_start_at_once() {
        let config = CommonConfig::from_env(&env(&[("DATABASE_STARTUP_WAIT_SECONDS", "0")]))
            .expect("zero is allowed");
        assert_eq!(config.database.startup_wait, Duration::ZERO);

        let err = CommonConfig::from_env(&env(&[("DATABASE_STARTUP_WAIT_SECONDS", "1m")]))
            .expect_err("seconds only");
        assert_eq!(err.name, "DATABASE_STARTUP_WAIT_SECONDS");
    }

    #[test]
    fn a_bad_value_names_the_variable() {
        let err = CommonConfig::from_env(&env(&[("SHUTDOWN_GRACE_SECONDS", "soon")]))
            .expect_err("not a number");
        assert!(err.to_string().contains("SHUTDOWN_GRACE_SECONDS"), "{err}");

        let err = ServiceName::Auth
            .grpc_addr(&env(&[("AUTH_GRPC_ADDR", "localhost")]))
            .expect_err("no port");
        assert!(err.to_string().contains("AUTH_GRPC_ADDR"), "{err}");

        for url in [
            "https://product:50053",
            "product:50053",
            "http://product:50053/v1",
        ] {
            let err = ServiceName::Product
                .url(&env(&[("PRODUCT_URL", url)]))
                .expect_err("not a plain http:// service URL");
            assert!(err.to_string().contains("PRODUCT_URL"), "{err}");
        }

        let err = ServiceName::User
            .database_url(&env(&[("USER_DATABASE_URL", "mysql://x")]))
            .expect_err("wrong scheme");
        assert!(err.to_string().contains("USER_DATABASE_URL"), "{err}");

        let err = boolean(&env(&[("FLAG", "yes")]), "FLAG", false).expect_err("not a bool");
        assert!(err.to_string().contains("FLAG"), "{err}");
    }
}
