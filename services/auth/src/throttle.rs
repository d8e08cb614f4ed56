//! Login throttling, kept in the database so every replica sees the same
//! counts. Failures are counted per account email and per client address; a
//! key with too many failures in the window is locked for a while. The rule is
//! the same for emails with and without an account, so a lock reveals nothing.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgConnection;

use crate::db;
use crate::error::AuthError;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub per_account: i32,
    pub per_client: i32,
    pub window: Duration,
    pub lock: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            per_account: 5,
            per_client: 20,
            window: Duration::from_secs(15 * 60),
            lock: Duration::from_secs(15 * 60),
        }
    }
}

pub fn account_key(email: &str) -> String {
    format!("account:{email}")
}

pub fn client_key(client: &str) -> String {
    format!("client:{client}")
}

/// What one attempt with a password is counted under: the account's email
/// and, when the gateway passed it on, the client's address.
#[derive(Debug, Clone)]
pub struct Keys {
    pub account: String,
    pub client: Option<String>,
}

impl Keys {
    pub fn new(email: &str, client_ip: &str) -> Self {
        Self {
            account: account_key(email),
            client: (!client_ip.is_empty()).then(|| client_key(client_ip)),
        }
    }

    pub fn all(&self) -> Vec<String> {
        std::iter::once(self.account.clone())
            .chain(self.client.clone())
            .collect()
    }
}

impl Policy {
    /// `Throttled` while the account or the client is locked.
    pub async fn check(&self, conn: &mut PgConnection, keys: &[String]) -> Result<(), AuthError> {
        match db::locked_until(conn, keys).await? {
            Some(until) => Err(AuthError::Throttled {
                retry_after: (until - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::from_secs(1)),
            }),
            None => Ok(()),
        }
    }

    pub async fn record_failure(
        &self,
        conn: &mut PgConnection,
        keys: &Keys,
    ) -> Result<(), AuthError> {
        let window = self.window.as_secs_f64();
        let lock = self.lock.as_secs_f64();
        db::record_login_failure(conn, &keys.account, self.per_account, window, lock).await?;
        if let Some(client) = &keys.client {
            db::record_login_failure(conn, client, self.per_client, window, lock).await?;
        }
        Ok(())
    }
}
