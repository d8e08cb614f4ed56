//! Page tokens of lists read newest first by creation time and id (orders,
//! notifications, profiles): opaque to clients, the base64url of
//! `<microseconds>:<uuid>` of the last row of a page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Datelike, Utc};
use uuid::Uuid;

/// The token of the page after the row created at `at` with `id`.
pub fn token(at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()))
}

/// The time and id a token of [`token`] carries; None for anything else.
pub fn parse(token: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    let (micros, id) = text.split_once(':')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((storable(at)?, Uuid::parse_str(id).ok()?))
}

/// `at` if PostgreSQL can compare it with a stored time. Its range starts in
/// 4714 BC, chrono's long before, and a time from a client that PostgreSQL
/// refuses would be a server error rather than a bad token. No row was made
/// before the year 1, so that is the bound.
pub fn storable(at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (at.year() >= 1).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gives_back_its_time_and_id() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        let id = Uuid::new_v4();

        assert_eq!(parse(&token(at, id)), Some((at, id)));
    }

    #[test]
    fn garbage_and_times_postgres_cannot_hold_are_refused() {
        let id = Uuid::new_v4();
        let ancient = DateTime::from_timestamp(-300_000_000_000, 0).expect("a time chrono holds");

        assert_eq!(parse("!!!"), None);
        assert_eq!(parse(&URL_SAFE_NO_PAD.encode("12:not-a-uuid")), None);
        assert_eq!(parse(&URL_SAFE_NO_PAD.encode(format!("x:{id}"))), None);
        assert_eq!(parse(&token(ancient, id)), None);
    }
}
