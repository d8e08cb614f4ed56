//! The notification service's settings, read from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use gocommerce_platform::config::{self, ConfigError, Env, ServiceName};

#[derive(Debug, Clone)]
pub struct NotificationConfig {
    pub grpc_addr: SocketAddr,
    pub database_url: String,
    pub common: config::CommonConfig,
    pub user_url: String,
    /// `smtp://host:port`; none: email is recorded as skipped.
    pub smtp_url: Option<String>,
    pub smtp_from: String,
    pub sms_webhook_url: Option<String>,
    pub push_webhook_url: Option<String>,
    /// A shop's page for choosing a new password, linked from reset emails.
    pub password_reset_url: Option<String>,
    /// Deliveries of one event before it is dead-lettered.
    pub max_attempts: u32,
    /// The retry tiers' delays.
    pub retry_delays: Vec<Duration>,
}

fn url(env: &dyn Env, name: &str, schemes: &[&str]) -> Result<Option<String>, ConfigError> {
    match env.var(name) {
        None => Ok(None),
        Some(url) if schemes.iter().any(|s| url.starts_with(&format!("{s}://"))) => Ok(Some(url)),
        Some(url) => Err(ConfigError::new(
            name,
            format!("expected a {} URL, got {url:?}", schemes.join(" or ")),
        )),
    }
}

impl NotificationConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let max_attempts = config::at_least(env, "NOTIFICATION_MAX_ATTEMPTS", 4u32, 1)?;
        let raw_delays = config::string(env, "NOTIFICATION_RETRY_DELAYS_MS", "1000,10000,60000");
        let retry_delays = raw_delays
            .split(',')
            .map(|d| d.trim().parse::<u64>().map(Duration::from_millis))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                ConfigError::new(
                    "NOTIFICATION_RETRY_DELAYS_MS",
                    format!("{e} in {raw_delays:?}"),
                )
            })?;
        if retry_delays.is_empty() {
            return Err(ConfigError::new(
                "NOTIFICATION_RETRY_DELAYS_MS",
                "needs at least one delay",
            ));
        }
        Ok(Self {
            grpc_addr: ServiceName::Notification.grpc_addr(env)?,
            database_url: ServiceName::Notification.database_url(env)?,
            common: config::CommonConfig::from_env(env)?,
            user_url: ServiceName::User.url(env)?,
            smtp_url: url(env, "SMTP_URL", &["smtp"])?,
            smtp_from: config::string(env, "SMTP_FROM", "GoCommerce <no-reply@gocommerce.local>"),
            sms_webhook_url: url(env, "SMS_WEBHOOK_URL", &["http", "https"])?,
            push_webhook_url: url(env, "PUSH_WEBHOOK_URL", &["http", "https"])?,
            password_reset_url: url(env, "PASSWORD_RESET_URL", &["http", "https"])?,
            max_attempts,
            retry_delays,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn retries_default_to_four_attempts_over_growing_tiers() {
        let config = NotificationConfig::from_env(&env(&[])).expect("defaults work");
        assert_eq!(config.max_attempts, 4);
        assert_eq!(
            config.retry_delays,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60)
            ]
        );
        assert_eq!(config.smtp_url, None);
    }

    #[test]
    fn bad_retry_settings_and_urls_name_their_variable() {
        for (name, value) in [
            ("NOTIFICATION_RETRY_DELAYS_MS", "100,soon"),
            ("NOTIFICATION_RETRY_DELAYS_MS", ""),
            ("NOTIFICATION_MAX_ATTEMPTS", "0"),
            ("NOTIFICATION_MAX_ATTEMPTS", "many"),
            ("SMTP_URL", "mail.example.com:25"),
            ("SMS_WEBHOOK_URL", "ftp://sms"),
            ("PASSWORD_RESET_URL", "shop.example/reset"),
        ] {
            let result = NotificationConfig::from_env(&env(&[(name, value)]));
            // An empty variable counts as unset: the default applies.
            if value.is_empty() {
                assert!(result.is_ok(), "{name}={value:?}");
                continue;
            }
            let error = result.expect_err(value);
            assert_eq!(error.name, name, "{name}={value:?}");
        }
        let config = NotificationConfig::from_env(&env(&[
            ("NOTIFICATION_RETRY_DELAYS_MS", "200, 400"),
            ("SMTP_URL", "smtp://127.0.0.1:2525"),
        ]))
        .expect("valid");
        assert_eq!(
            config.retry_delays,
            vec![Duration::from_millis(200), Duration::from_millis(400)]
        );
    }
}
