//! The order service's settings, read from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use gocommerce_platform::config::{self, ConfigError, Env, ServiceName};

#[derive(Debug, Clone)]
pub struct OrderConfig {
    pub grpc_addr: SocketAddr,
    pub database_url: String,
    pub common: config::CommonConfig,
    pub product_url: String,
    pub payment_url: String,
    pub user_url: String,
    /// Deadline of each call to another service during the saga.
    pub step_timeout: Duration,
    /// How often the recovery loop looks for orders whose saga is due.
    pub recovery_interval: Duration,
    /// How long a runner owns an order's saga before another may take over.
    pub lease: Duration,
}

impl OrderConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let step_timeout =
            Duration::from_millis(config::at_least(env, "ORDER_STEP_TIMEOUT_MS", 2000u64, 1)?);
        let lease = config::seconds(env, "ORDER_SAGA_LEASE_SECONDS", 10)?;
        if lease <= step_timeout {
            return Err(ConfigError::new(
                "ORDER_SAGA_LEASE_SECONDS",
                "must be longer than ORDER_STEP_TIMEOUT_MS",
            ));
        }
        Ok(Self {
            grpc_addr: ServiceName::Order.grpc_addr(env)?,
            database_url: ServiceName::Order.database_url(env)?,
            common: config::CommonConfig::from_env(env)?,
            product_url: ServiceName::Product.url(env)?,
            payment_url: ServiceName::Payment.url(env)?,
            user_url: ServiceName::User.url(env)?,
            step_timeout,
            recovery_interval: Duration::from_millis(config::at_least(
                env,
                "ORDER_RECOVERY_INTERVAL_MS",
                1000u64,
                1,
            )?),
            lease,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_zero_where_it_would_stall_or_spin_is_refused_by_name() {
        for name in ["ORDER_STEP_TIMEOUT_MS", "ORDER_RECOVERY_INTERVAL_MS"] {
            let env = HashMap::from([(name.to_owned(), "0".to_owned())]);

            let err = OrderConfig::from_env(&env).expect_err("zero");

            assert_eq!(err.name, name);
        }
    }
}
