//! Per-client rate limiting (GCRA, via governor) for the routes that attract
//! abuse: the auth routes. Over the limit a client gets 429 with
//! `Retry-After`. The limit is per gateway replica.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::extract::client_ip;
use crate::problem::Problem;
use crate::startup::AppState;

pub type KeyedLimiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

/// A limiter allowing `per_minute` requests a minute per client, in bursts of
/// up to a quarter of that (at least 5). A client's ordinary session (log
/// in, refresh, log out, log in again) comes in a burst: with a tenth, six
/// at the default, the README's walk-through pasted into a shell met 429
/// at its eighth auth request. The sustained rate, which is what bounds a
/// password sprayer, is the same either way.
pub fn limiter(per_minute: u32) -> Arc<KeyedLimiter> {
    let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new((per_minute.get() / 4).max(5)).unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimiter::keyed(
        Quota::per_minute(per_minute).allow_burst(burst),
    ))
}

/// Forgets idle clients now and then, so the table does not grow forever.
pub fn spawn_cleanup(limiter: Arc<KeyedLimiter>, shutdown: gocommerce_platform::Shutdown) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
                () = shutdown.wait() => break,
            }
        }
    });
}

pub async fn limit_auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let ip = client_ip(&parts, state.trust_forwarded_for);
    if let Err(not_until) = state.auth_limiter.check_key(&ip) {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        tracing::info!(client = %ip, "auth rate limit hit");
        return Problem::too_many_requests(
            wait.as_secs() + 1,
            "too many requests from this client, retry later",
        )
        .into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed_at_once(limiter: &KeyedLimiter, client: IpAddr) -> usize {
        (0..1000)
            .take_while(|_| limiter.check_key(&client).is_ok())
            .count()
    }

    #[test]
    fn a_client_may_make_a_quarter_of_its_minute_at_once_and_others_are_counted_apart() {
        let limiter = limiter(60);
        let ada = IpAddr::from([192, 0, 2, 1]);
        let grace = IpAddr::from([192, 0, 2, 2]);

        assert_eq!(allowed_at_once(&limiter, ada), 15);
        assert_eq!(allowed_at_once(&limiter, grace), 15);
    }

    #[test]
    fn a_low_limit_still_allows_a_burst_of_five() {
        assert_eq!(
            allowed_at_once(&limiter(5), IpAddr::from([192, 0, 2, 1])),
            5
        );
    }
}
