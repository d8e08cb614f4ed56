//! The product service's settings, read from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use gocommerce_platform::config::{self, ConfigError, Env, ServiceName};

#[derive(Debug, Clone)]
pub struct ProductConfig {
    pub grpc_addr: SocketAddr,
    pub database_url: String,
    /// Connections that product lookups share, pipelined (platform's
    /// `pipeline`); zero sends them through the pool instead.
    pub read_connections: usize,
    /// How long a product view may be served from memory; zero turns the cache off.
    pub cache_ttl: Duration,
    /// Most product views kept in memory.
    pub cache_capacity: usize,
    pub common: config::CommonConfig,
}

impl ProductConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let common = config::CommonConfig::from_env(env)?;
        Ok(Self {
            grpc_addr: ServiceName::Product.grpc_addr(env)?,
            database_url: ServiceName::Product.database_url(env)?,
            read_connections: config::parse(env, "PRODUCT_READ_CONNECTIONS", 2usize)?,
            cache_ttl: Duration::from_millis(config::parse(
                env,
                "PRODUCT_CACHE_TTL_MS",
                30_000u64,
            )?),
            cache_capacity: config::parse(env, "PRODUCT_CACHE_CAPACITY", 50_000usize)?,
            common,
        })
    }
}
