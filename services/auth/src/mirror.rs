//! Keeps the user service's copy of each account's role and disabled status
//! (its admin list shows and filters by them). A change's copy is sent as
//! soon as the change commits; a loop in every replica sends again whatever
//! the user service has not confirmed, so a copy lost to an outage or a
//! crash arrives late rather than never. Each copy carries the account's
//! version, so copies that arrive late, twice or out of order change nothing.

use std::time::Duration;

use gocommerce_platform::Shutdown;
use sqlx::PgPool;

use crate::db::{self, AccountRow};
use crate::error::AuthError;
use crate::profiles::Profiles;

/// How often the loop looks for unconfirmed copies: a copy that failed
/// arrives within about this long of the user service coming back.
const INTERVAL: Duration = Duration::from_secs(2);
/// How long one call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Accounts per call, the most the user service takes.
const BATCH: usize = 100;

/// Sends the accounts' state once and records what the user service
/// confirmed. After a change a failure is only logged: the loop sends again.
#[tracing::instrument(skip_all, fields(accounts = accounts.len()), err(level = "warn"))]
pub async fn push(
    pool: &PgPool,
    profiles: &Profiles,
    accounts: &[AccountRow],
) -> Result<(), AuthError> {
    send(pool, profiles, accounts).await
}

/// Sends every account whose copy is unconfirmed, a batch at a time, and
/// returns how many it sent.
async fn repair(pool: &PgPool, profiles: &Profiles) -> Result<usize, AuthError> {
    let mut sent = 0;
    loop {
        let accounts = {
            let mut conn = pool.acquire().await?;
            db::unmirrored_accounts(&mut conn, BATCH).await?
        };
        send(pool, profiles, &accounts).await?;
        sent += accounts.len();
        if accounts.len() < BATCH {
            return Ok(sent);
        }
    }
}

async fn send(
    pool: &PgPool,
    profiles: &Profiles,
    accounts: &[AccountRow],
) -> Result<(), AuthError> {
    if accounts.is_empty() {
        return Ok(());
    }
    profiles.sync_once(accounts, CALL_TIMEOUT).await?;
    let versions: Vec<_> = accounts.iter().map(|a| (a.id, a.mirror_version)).collect();
    let mut conn = pool.acquire().await?;
    db::mark_mirrored(&mut conn, &versions).await
}

/// Repairs every `INTERVAL` until the shutdown signal, which also stops a
/// repair under way. A failure is logged when it starts and when it ends,
/// not every time: the user service may be away for a while.
pub async fn run(pool: PgPool, profiles: Profiles, shutdown: Shutdown) {
    let mut failing = false;
    while !shutdown.is_triggered() {
        let repaired = tokio::select! {
            repaired = repair(&pool, &profiles) => repaired,
            () = shutdown.wait() => break,
        };
        match repaired {
            Ok(sent) => {
                if failing {
                    tracing::info!("account copies reach the user service again");
                }
                failing = false;
                if sent > 0 {
                    tracing::info!(
                        accounts = sent,
                        "sent unconfirmed account copies to the user service"
                    );
                }
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "failed to copy accounts to the user service, retrying every few seconds");
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = shutdown.wait() => {}
        }
    }
}
