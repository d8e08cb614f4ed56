//! The user service's settings, read from the environment.

use std::net::SocketAddr;

use gocommerce_platform::config::{self, ConfigError, Env, ServiceName};

#[derive(Debug, Clone)]
pub struct UserConfig {
    pub grpc_addr: SocketAddr,
    pub database_url: String,
    pub common: config::CommonConfig,
}

impl UserConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let common = config::CommonConfig::from_env(env)?;
        Ok(Self {
            grpc_addr: ServiceName::User.grpc_addr(env)?,
            database_url: ServiceName::User.database_url(env)?,
            common,
        })
    }
}
