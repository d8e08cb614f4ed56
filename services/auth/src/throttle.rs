//! Login throttling, kept in the database so every replica sees the same
//! counts. Failures are counted per account email and per client address; a
//! key with too many failures in the window is locked for a while. An
//! account's attempts are counted before their passwords are checked, so
//! guesses sent at once cannot all pass before the first failure is counted.
//! The rule is the same for emails with and without an account, so a lock
//! reveals nothing.

use std::time::Duration;

use chrono::Utc;
use sqlx::{PgConnection, PgPool};

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
}

impl Policy {
    /// Admits an attempt with a password before it is checked, or refuses it
    /// (`Throttled`) while the account or the client is locked. The account's
    /// attempt is counted now, as a failure until [`Policy::succeeded`] says
    /// otherwise: attempts made at once each take their own count, so no more
    /// than `per_account` of them are checked however many arrive together.
    /// The client's failures are counted after the check ([`Policy::failed`]):
    /// its attempts at once are bounded by the gateway's rate limit, and
    /// counting them ahead would refuse the users behind one address who
    /// log in at the same moment.
    /// The attempt, once admitted, must be settled; see [`Attempt`].
    pub async fn admit(
        &self,
        pool: &PgPool,
        conn: &mut PgConnection,
        keys: &Keys,
    ) -> Result<Attempt, AuthError> {
        let client = keys.client.iter().cloned().collect::<Vec<_>>();
        let mut until = db::locked_until(conn, &client).await?;
        if until.is_none() {
            until = db::take_login_attempt(
                conn,
                &keys.account,
                self.per_account,
                self.window.as_secs_f64(),
                self.lock.as_secs_f64(),
            )
            .await?;
        }
        match until {
            Some(until) => Err(AuthError::Throttled {
                retry_after: (until - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::from_secs(1)),
            }),
            None => Ok(Attempt {
                unsettled: Some((pool.clone(), keys.account.clone())),
            }),
        }
    }

    /// The admitted attempt's password was wrong: the account's count stands
    /// (and locks it at the limit) and the client's grows.
    pub async fn failed(
        &self,
        conn: &mut PgConnection,
        keys: &Keys,
        attempt: Attempt,
    ) -> Result<(), AuthError> {
        let lock = self.lock.as_secs_f64();
        db::lock_if_at_limit(conn, &keys.account, self.per_account, lock).await?;
        if let Some(client) = &keys.client {
            let window = self.window.as_secs_f64();
            db::record_login_failure(conn, client, self.per_client, window, lock).await?;
        }
        attempt.settle();
        Ok(())
    }

    /// The admitted attempt's password was right: the account starts afresh,
    /// in `conn`'s transaction; the caller settles the attempt once it
    /// commits.
    pub async fn succeeded(&self, conn: &mut PgConnection, keys: &Keys) -> Result<(), AuthError> {
        db::clear_login_failures(conn, &keys.account).await
    }
}

/// An attempt [`Policy::admit`] counted against its account, to be settled
/// by [`Policy::failed`], or by [`Attempt::settle`] once the transaction of
/// [`Policy::succeeded`] commits. One dropped unsettled is taken back: the
/// caller gave up while the password was being checked (a deadline under
/// load), or an error cut it short. Only wrong passwords lock an account.
#[must_use = "an admitted attempt is settled, or taken back when dropped"]
#[derive(Debug)]
pub struct Attempt {
    unsettled: Option<(PgPool, String)>,
}

impl Attempt {
    pub fn settle(mut self) {
        self.unsettled = None;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let Some((pool, key)) = self.unsettled.take() else {
            return;
        };
        // Dropped with its request's future, on the runtime; the count is
        // taken back on a task of its own, since a drop cannot wait.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let taken_back = async {
                let mut conn = pool.acquire().await?;
                db::uncount_login_attempt(&mut conn, &key).await
            };
            if let Err(error) = taken_back.await {
                tracing::warn!(%error, "failed to take back a login attempt left without a verdict");
            }
        });
    }
}
