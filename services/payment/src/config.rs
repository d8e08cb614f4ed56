//! The payment service's settings, read from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use gocommerce_platform::config::{self, ConfigError, Env, ServiceName};

#[derive(Debug, Clone)]
pub struct PaymentConfig {
    pub grpc_addr: SocketAddr,
    pub database_url: String,
    pub common: config::CommonConfig,
    /// Processor calls for a charge that keeps failing transiently.
    pub processor_attempts: u32,
    /// Wait before the first retry of a transient failure; doubles each time.
    pub processor_backoff: Duration,
    /// A charge left PENDING this long (its worker died) is taken over.
    pub stale_after: Duration,
    /// A refund left pending this long has its task queued again.
    pub refund_requeue_after: Duration,
}

impl PaymentConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let common = config::CommonConfig::from_env(env)?;
        let processor_attempts = config::at_least(env, "PAYMENT_PROCESSOR_ATTEMPTS", 3u32, 1)?;
        Ok(Self {
            grpc_addr: ServiceName::Payment.grpc_addr(env)?,
            database_url: ServiceName::Payment.database_url(env)?,
            common,
            processor_attempts,
            processor_backoff: Duration::from_millis(config::parse(
                env,
                "PAYMENT_PROCESSOR_BACKOFF_MS",
                50u64,
            )?),
            stale_after: Duration::from_secs(config::at_least(
                env,
                "PAYMENT_STALE_AFTER_SECONDS",
                30u64,
                1,
            )?),
            refund_requeue_after: Duration::from_secs(config::at_least(
                env,
                "PAYMENT_REFUND_REQUEUE_AFTER_SECONDS",
                300u64,
                1,
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_zero_where_it_would_stall_or_spin_is_refused_by_name() {
        for name in [
            "PAYMENT_STALE_AFTER_SECONDS",
            "PAYMENT_PROCESSOR_ATTEMPTS",
            "PAYMENT_REFUND_REQUEUE_AFTER_SECONDS",
        ] {
            let env = HashMap::from([(name.to_owned(), "0".to_owned())]);

            let err = PaymentConfig::from_env(&env).expect_err("zero");

            assert_eq!(err.name, name);
        }
    }
}
