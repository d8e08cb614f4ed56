//! The sessions that ended while access tokens issued for them may still be
//! unexpired: a logout, a logout everywhere, a password change or reset, a
//! disabled account, a demoted admin or a reused refresh token. Access
//! tokens are verified locally and name their session (`sid`), so the
//! gateway refuses a token of an ended session at once instead of letting
//! it run out its minutes.
//!
//! The auth service is the record: every gateway reads what ended since its
//! last read, every [`GatewayConfig::ended_sessions_poll`] and right after
//! a request of its own ended sessions, and forgets a session once all its
//! tokens have expired.
//!
//! [`GatewayConfig::ended_sessions_poll`]: crate::config::GatewayConfig

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use gocommerce_platform::Shutdown;
use gocommerce_proto::auth::v1::ListEndedSessionsRequest;
use prometheus::{IntGauge, register_int_gauge};
use uuid::Uuid;

use crate::authn::unix_now;
use crate::backend::Backends;

#[allow(clippy::expect_used)]
static REMEMBERED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gateway_ended_sessions",
        "ended sessions whose access tokens the gateway refuses until they expire"
    )
    .expect("metric registers once")
});

// An alert on `time() - this` finds a gateway that stopped reading: the
// tokens of sessions ended since pass there.
#[allow(clippy::expect_used)]
static LAST_READ: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gateway_ended_sessions_read_timestamp_seconds",
        "when the gateway last read the ended sessions from the auth service, as a Unix time"
    )
    .expect("metric registers once")
});

// Where the next read starts: the start of the oldest transaction open in
// the auth database at the last read. An alert on `time() - this` finds a
// transaction left open there, which makes every read repeat what ended
// since it began.
#[allow(clippy::expect_used)]
static HORIZON: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gateway_ended_sessions_horizon_timestamp_seconds",
        "where the gateway's next read of ended sessions starts, as a Unix time"
    )
    .expect("metric registers once")
});

/// The ended sessions this gateway knows of.
#[derive(Debug, Default)]
pub struct EndedSessions {
    /// Session id → the Unix time after which none of its tokens can pass.
    ended: RwLock<HashMap<Uuid, i64>>,
    /// Where the next read starts: `None` before the first one, which
    /// reads every session whose tokens may still be live.
    next_after: tokio::sync::Mutex<Option<prost_types::Timestamp>>,
    synced: AtomicBool,
}

impl EndedSessions {
    /// Whether the session has ended.
    pub fn contains(&self, session_id: &Uuid) -> bool {
        self.ended
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(session_id)
    }

    /// Resolves once the session has ended, as this gateway learns it
    /// (checked every second); never for a token without a session.
    pub async fn wait_until_ended(&self, session: Option<Uuid>) {
        let Some(id) = session else {
            return std::future::pending().await;
        };
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            ticks.tick().await;
            if self.contains(&id) {
                return;
            }
        }
    }

    /// Whether a read has succeeded: until then, tokens of sessions that
    /// ended before this gateway started would pass.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Reads the sessions that ended since the last read, page by page, and
    /// forgets those whose tokens have all expired. Reads run one at a time.
    // No `err` here: the poller says once that reads fail, not every second.
    #[tracing::instrument(skip_all)]
    pub async fn sync(&self, backends: &Backends) -> Result<(), tonic::Status> {
        let mut next_after = self.next_after.lock().await;
        let mut after = *next_after;
        let mut after_id = String::new();
        // Where the next read starts: the earliest of the pages' `as_of`. A
        // session whose end commits between two pages, stamped before the
        // first page's last, is after the first page's `as_of`.
        let mut horizon: Option<prost_types::Timestamp> = None;
        loop {
            let page = backends
                .auth
                .clone()
                .list_ended_sessions(backends.request(
                    ListEndedSessionsRequest {
                        after,
                        after_id: after_id.clone(),
                    },
                    None,
                ))
                .await?
                .into_inner();
            self.remember(&page.sessions);
            horizon = [horizon, page.as_of]
                .into_iter()
                .flatten()
                .min_by_key(|at| (at.seconds, at.nanos));
            let last = page.sessions.last();
            match last {
                Some(last) if page.more => {
                    after = last.ended_at;
                    after_id.clone_from(&last.id);
                }
                _ => {
                    *next_after = horizon;
                    if let Some(at) = horizon {
                        HORIZON.set(at.seconds);
                    }
                    break;
                }
            }
        }
        drop(next_after);
        let now = unix_now();
        let remembered = self.forget_expired(now);
        self.synced.store(true, Ordering::Release);
        REMEMBERED.set(i64::try_from(remembered).unwrap_or(i64::MAX));
        LAST_READ.set(now);
        Ok(())
    }

    /// [`Self::sync`] after a request that ended sessions, so this gateway
    /// refuses their tokens before it answers. A failure is only logged:
    /// the request itself succeeded, and the next poll reads them.
    pub async fn catch_up(&self, backends: &Backends) {
        if let Err(status) = self.sync(backends).await {
            tracing::warn!(error = %status.message(), "failed to read ended sessions after ending some");
        }
    }

    fn remember(&self, sessions: &[gocommerce_proto::auth::v1::EndedSession]) {
        if sessions.is_empty() {
            return;
        }
        let mut ended = self
            .ended
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for session in sessions {
            let Ok(id) = Uuid::parse_str(&session.id) else {
                tracing::warn!(session_id = %session.id, "auth listed an ended session whose id is not a UUID");
                continue;
            };
            // Without a time, kept for as long as any: it is forgotten only
            // when the service says its tokens have expired.
            let until = session
                .tokens_expired_at
                .as_ref()
                .map_or(i64::MAX, |at| at.seconds.saturating_add(1));
            ended.insert(id, until);
        }
    }

    /// Forgets the sessions whose tokens have all expired; how many remain.
    fn forget_expired(&self, now: i64) -> usize {
        let mut ended = self
            .ended
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ended.retain(|_, until| *until > now);
        ended.len()
    }
}

/// Reads the ended sessions every `interval` until the shutdown signal.
pub fn spawn_poller(
    sessions: Arc<EndedSessions>,
    backends: Arc<Backends>,
    interval: Duration,
    shutdown: Shutdown,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                _ = ticks.tick() => {}
            }
            // The error is logged once when reads start failing, not every
            // second while auth is away.
            match sessions.sync(&backends).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("reading ended sessions again");
                }
                Ok(()) => {}
                Err(status) if !failing => {
                    failing = true;
                    tracing::warn!(error = %status.message(), "failed to read ended sessions; tokens of sessions ending meanwhile pass until it works again");
                }
                Err(_) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use gocommerce_proto::auth::v1::EndedSession;

    use super::*;

    fn ended(id: Uuid, expired_at: Option<i64>) -> EndedSession {
        EndedSession {
            id: id.to_string(),
            ended_at: None,
            tokens_expired_at: expired_at
                .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        }
    }

    #[test]
    fn a_session_is_remembered_until_its_tokens_have_expired() {
        let sessions = EndedSessions::default();
        let (soon, later, unknown) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        sessions.remember(&[ended(soon, Some(1_000)), ended(later, Some(2_000))]);

        sessions.forget_expired(1_000);
        let at_first = (sessions.contains(&soon), sessions.contains(&later));
        sessions.forget_expired(1_001);

        assert_eq!(at_first, (true, true), "kept through its last second");
        assert!(!sessions.contains(&soon));
        assert!(sessions.contains(&later));
        assert!(!sessions.contains(&unknown));
    }

    #[test]
    fn a_session_without_an_expiry_is_kept_and_a_malformed_id_is_skipped() {
        let sessions = EndedSessions::default();
        let id = Uuid::new_v4();
        let malformed = EndedSession {
            id: "not-a-uuid".to_owned(),
            ..ended(id, Some(1))
        };

        sessions.remember(&[malformed, ended(id, None)]);
        let remaining = sessions.forget_expired(i64::MAX - 1);

        assert_eq!(remaining, 1);
        assert!(sessions.contains(&id));
    }
}
