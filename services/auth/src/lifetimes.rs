//! Records the access-token lifetime this process signs with, ahead of
//! time (migration 0010), so that the ended sessions are listed for as long
//! as any of their tokens may live: also those signed with a longer
//! lifetime by another replica, or before `ACCESS_TOKEN_TTL_SECONDS` was
//! lowered.

use std::time::Duration;

use chrono::Utc;
use gocommerce_platform::{Shutdown, token};
use sqlx::PgPool;

use crate::db;
use crate::error::AuthError;

/// How far ahead a record reaches. It is renewed every `RENEW`, so a record
/// stays ahead of the signing while the process runs, and outlasts a crash.
const AHEAD: Duration = Duration::from_secs(15 * 60);
const RENEW: Duration = Duration::from_secs(5 * 60);

/// How long past its `exp` an access token may still pass a verifier, in
/// seconds: the verifiers' clock-skew leeway, and as much again for the
/// signer's clock, which may run that far ahead of the database's and stamp
/// a later `exp` (a token signed further ahead fails its `nbf` check).
pub fn margin() -> i64 {
    i64::try_from(token::LEEWAY_SECONDS)
        .unwrap_or(i64::MAX)
        .saturating_mul(2)
}

/// Records that this process may sign tokens living `ttl` for the next
/// `AHEAD`, and forgets the lifetimes whose tokens have all expired.
pub async fn record(pool: &PgPool, ttl: Duration) -> Result<(), AuthError> {
    let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let until = Utc::now() + chrono::Duration::from_std(AHEAD).unwrap_or(chrono::Duration::MAX);
    let mut conn = pool.acquire().await?;
    db::record_access_lifetime(&mut conn, seconds, until, margin()).await
}

/// Renews the record every `RENEW` until the shutdown signal. A failure is
/// logged and tried again at the next renewal; the record reaches far
/// enough ahead to cover two missed ones.
pub async fn run(pool: PgPool, ttl: Duration, shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RENEW) => {}
            () = shutdown.wait() => return,
        }
        let recorded = tokio::select! {
            recorded = record(&pool, ttl) => recorded,
            () = shutdown.wait() => return,
        };
        if let Err(error) = recorded {
            tracing::warn!(%error, "failed to record the access-token lifetime, trying again later");
        }
    }
}
