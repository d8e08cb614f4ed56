//! Deletes what the auth service no longer needs, so its tables do not grow
//! with every login for as long as the shop runs: sessions a week after they
//! end (kept that long so an incident can still be traced to them), reset
//! tokens a day after they were sent, and login-failure counts that no longer
//! count. Every replica sweeps; the deletes are idempotent, so they only
//! share the work.

use std::time::Duration;

use gocommerce_platform::Shutdown;
use sqlx::{PgConnection, PgPool};

use crate::db;
use crate::error::AuthError;

/// How long a session (a refresh family and its tokens) is kept after it
/// expired or was revoked.
pub const SESSION_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// How long a reset token is kept after it was sent: it stops working after
/// 30 minutes, and the hourly cap on sending them needs the last hour's.
pub const RESET_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How often the loop sweeps.
const INTERVAL: Duration = Duration::from_secs(10 * 60);
/// Rows per delete statement: a sweep after a long outage never holds many
/// locks or one long transaction.
const CHUNK: i64 = 1_000;

/// How many rows one sweep deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub sessions: u64,
    pub password_resets: u64,
    pub login_failures: u64,
}

/// Deletes the sessions, reset tokens and login failures past their
/// retention; `failure_window` is login throttling's counting window.
#[tracing::instrument(skip_all, err)]
pub async fn sweep(pool: &PgPool, failure_window: Duration) -> Result<Swept, AuthError> {
    let mut conn = pool.acquire().await?;
    Ok(Swept {
        sessions: drain(&mut conn, Table::Sessions, failure_window).await?,
        password_resets: drain(&mut conn, Table::PasswordResets, failure_window).await?,
        login_failures: drain(&mut conn, Table::LoginFailures, failure_window).await?,
    })
}

#[derive(Debug, Clone, Copy)]
enum Table {
    Sessions,
    PasswordResets,
    LoginFailures,
}

/// Deletes a table's rows past their retention, a chunk per statement.
async fn drain(
    conn: &mut PgConnection,
    table: Table,
    failure_window: Duration,
) -> Result<u64, AuthError> {
    let mut deleted = 0;
    loop {
        let chunk = match table {
            Table::Sessions => db::delete_ended_sessions(conn, SESSION_RETENTION, CHUNK).await?,
            Table::PasswordResets => {
                db::delete_old_password_resets(conn, RESET_RETENTION, CHUNK).await?
            }
            Table::LoginFailures => {
                db::delete_stale_login_failures(conn, failure_window, CHUNK).await?
            }
        };
        deleted += chunk;
        if chunk < CHUNK.unsigned_abs() {
            return Ok(deleted);
        }
    }
}

/// Sweeps at start and then every ten minutes until the shutdown signal,
/// which also stops a sweep under way. A failed sweep (the database away,
/// say) is logged and tried again next time.
pub async fn run(pool: PgPool, failure_window: Duration, shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        // A sweep waiting on a database that is away must not hold up the
        // shutdown.
        let swept = tokio::select! {
            swept = sweep(&pool, failure_window) => swept,
            () = shutdown.wait() => break,
        };
        match swept {
            Ok(swept) if swept == Swept::default() => {}
            Ok(swept) => tracing::info!(
                sessions = swept.sessions,
                password_resets = swept.password_resets,
                login_failures = swept.login_failures,
                "deleted auth records past their retention"
            ),
            Err(error) => tracing::warn!(%error, "auth retention sweep failed, trying again later"),
        }
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = shutdown.wait() => {}
        }
    }
}
