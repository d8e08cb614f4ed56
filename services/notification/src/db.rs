//! Every query of the notification service.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub user_id: Uuid,
    pub channel: String,
    pub status: String,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, event_id, event_type, user_id, channel, status, recipient, subject, body, \
     attempts, last_error, created_at, updated_at, sent_at";

/// The event a batch of new notifications answers.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub id: Uuid,
    pub event_type: &'a str,
    pub user_id: Uuid,
}

/// One channel's notification of an event.
pub struct NewNotification<'a> {
    pub channel: &'a str,
    pub recipient: &'a str,
    pub subject: Option<&'a str>,
    pub body: &'a str,
    /// Why it is not sent (status `skipped`); None: `pending`.
    pub skipped: Option<String>,
}

#[tracing::instrument(skip_all, fields(event_id = %event_id), err)]
pub async fn is_processed(conn: &mut PgConnection, event_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM inbox WHERE event_id = $1)")
        .bind(event_id)
        .fetch_one(conn)
        .await
}

#[tracing::instrument(skip_all, fields(event_id = %event_id), err)]
pub async fn mark_processed(
    conn: &mut PgConnection,
    event_id: Uuid,
    event_type: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO inbox (event_id, event_type) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING")
        .bind(event_id)
        .bind(event_type)
        .execute(conn)
        .await?;
    Ok(())
}

/// An event's notifications as one delivery found them.
#[derive(Debug, Default)]
pub struct Claims {
    /// Unsent and now this delivery's to send, until the claim runs out.
    pub claimed: Vec<NotificationRow>,
    /// The channels another delivery is sending (or recording) right now.
    pub busy: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct Found {
    #[sqlx(flatten)]
    row: NotificationRow,
    claimed: bool,
}

/// Records an event's notifications (one per channel) once and claims the
/// unsent ones for `lease`, in one statement: the new pending ones as they
/// are written, and those an earlier delivery left unsent (failed, or
/// claimed by one whose claim ran out). The rest of the event's
/// notifications are sent, skipped or someone else's.
///
/// A claim, not a row lock: no transaction (and no pooled connection) stays
/// open while the channel sends. `lease` must outlast a send.
#[tracing::instrument(skip_all, fields(event_id = %event.id, notifications = news.len()), err)]
pub async fn claim_all(
    conn: &mut PgConnection,
    event: &Event<'_>,
    news: &[NewNotification<'_>],
    lease: Duration,
) -> Result<Claims, sqlx::Error> {
    let ids: Vec<Uuid> = news.iter().map(|_| Uuid::now_v7()).collect();
    let channels: Vec<&str> = news.iter().map(|n| n.channel).collect();
    let statuses: Vec<&str> = news
        .iter()
        .map(|n| {
            if n.skipped.is_some() {
                "skipped"
            } else {
                "pending"
            }
        })
        .collect();
    let recipients: Vec<&str> = news.iter().map(|n| n.recipient).collect();
    let subjects: Vec<Option<&str>> = news.iter().map(|n| n.subject).collect();
    let bodies: Vec<&str> = news.iter().map(|n| n.body).collect();
    let errors: Vec<Option<&str>> = news.iter().map(|n| n.skipped.as_deref()).collect();
    // The CTEs share one snapshot: `retaken` cannot see what `fresh`
    // writes, and the last SELECT sees neither's changes, so each row comes
    // out once. A row another delivery committed after that snapshot is in
    // none of them: its channel is missing, and counted busy below.
    let found: Vec<Found> = sqlx::query_as(&format!(
        "WITH fresh AS ( \
           INSERT INTO notifications (id, event_id, event_type, user_id, channel, status, recipient, \
             subject, body, last_error, claimed_until) \
           SELECT id, $7, $8, $9, channel, status, recipient, subject, body, last_error, \
             CASE WHEN status = 'pending' THEN now() + make_interval(secs => $11) END \
           FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $10::text[]) \
             AS n(id, channel, status, recipient, subject, body, last_error) \
           ON CONFLICT (event_id, channel) DO NOTHING \
           RETURNING {COLUMNS}), \
         retaken AS ( \
           UPDATE notifications SET claimed_until = now() + make_interval(secs => $11) \
           WHERE event_id = $7 AND status IN ('pending', 'failed', 'dead_lettered') \
             AND (claimed_until IS NULL OR claimed_until < now()) \
           RETURNING {COLUMNS}) \
         SELECT {COLUMNS}, status = 'pending' AS claimed FROM fresh \
         UNION ALL SELECT {COLUMNS}, true FROM retaken \
         UNION ALL SELECT {COLUMNS}, false FROM notifications n \
           WHERE event_id = $7 AND NOT EXISTS (SELECT 1 FROM retaken r WHERE r.id = n.id)"
    ))
    .bind(&ids)
    .bind(&channels)
    .bind(&statuses)
    .bind(&recipients)
    .bind(&subjects)
    .bind(&bodies)
    .bind(event.id)
    .bind(event.event_type)
    .bind(event.user_id)
    .bind(&errors)
    .bind(lease.as_secs_f64())
    .fetch_all(conn)
    .await?;
    let mut claims = Claims::default();
    for channel in &channels {
        if !found.iter().any(|f| f.row.channel == *channel) {
            claims.busy.push((*channel).to_owned());
        }
    }
    for Found { row, claimed } in found {
        if claimed {
            claims.claimed.push(row);
        } else if UNSENT.contains(&row.status.as_str()) {
            claims.busy.push(row.channel);
        }
    }
    claims.claimed.sort_by(|a, b| a.channel.cmp(&b.channel));
    Ok(claims)
}

/// The statuses of a notification still to send.
const UNSENT: [&str; 3] = ["pending", "failed", "dead_lettered"];

/// Records a notification as sent; with `handled_event` (its event's type)
/// the event is marked handled too, in the same statement.
#[tracing::instrument(skip_all, fields(notification_id = %id), err)]
pub async fn mark_sent(
    conn: &mut PgConnection,
    id: Uuid,
    handled_event: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH sent AS ( \
           UPDATE notifications SET status = 'sent', attempts = attempts + 1, last_error = NULL, \
             claimed_until = NULL, sent_at = now(), updated_at = now() WHERE id = $1 \
           RETURNING event_id) \
         INSERT INTO inbox (event_id, event_type) SELECT event_id, $2 FROM sent WHERE $2 IS NOT NULL \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(id)
    .bind(handled_event)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a failed attempt; `dead` when no attempt is left.
#[tracing::instrument(skip_all, fields(notification_id = %id), err)]
pub async fn mark_failed(
    conn: &mut PgConnection,
    id: Uuid,
    error: &str,
    dead: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET status = $3, attempts = attempts + 1, last_error = $2, \
           claimed_until = NULL, updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(if dead { "dead_lettered" } else { "failed" })
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that the provider refused the notification for good: it is not
/// claimed again, so no retry, dead letter or replay sends it.
#[tracing::instrument(skip_all, fields(notification_id = %id), err)]
pub async fn mark_refused(
    conn: &mut PgConnection,
    id: Uuid,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET status = 'refused', attempts = attempts + 1, last_error = $2, \
           claimed_until = NULL, updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// A page, newest first, after the keyset position `after`.
#[tracing::instrument(skip_all, err)]
pub async fn list(
    conn: &mut PgConnection,
    user_id: Option<Uuid>,
    status: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE ($1::uuid IS NULL OR user_id = $1) \
           AND ($2::text IS NULL OR status = $2) \
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
         ORDER BY created_at DESC, id DESC LIMIT $5"
    ))
    .bind(user_id)
    .bind(status)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use gocommerce_platform::testing::{DropDatabase, migrated_database};
    use sqlx::PgPool;

    use super::*;

    const LEASE: Duration = Duration::from_secs(30);

    async fn database() -> (PgPool, DropDatabase) {
        migrated_database("gct_notification_db", &crate::startup::MIGRATOR).await
    }

    fn paid() -> Event<'static> {
        Event {
            id: Uuid::new_v4(),
            event_type: "order.paid",
            user_id: Uuid::new_v4(),
        }
    }

    /// An email to send and an SMS skipped, as an event without a phone
    /// number records them.
    fn news() -> Vec<NewNotification<'static>> {
        vec![
            NewNotification {
                channel: "email",
                recipient: "ada@example.com",
                subject: Some("Order confirmed"),
                body: "Thank you",
                skipped: None,
            },
            NewNotification {
                channel: "sms",
                recipient: "",
                subject: None,
                body: "Order confirmed",
                skipped: Some("the user has no phone number".to_owned()),
            },
        ]
    }

    async fn claim(pool: &PgPool, event: &Event<'_>) -> Claims {
        let mut conn = pool.acquire().await.expect("connection");
        claim_all(&mut conn, event, &news(), LEASE)
            .await
            .expect("claim")
    }

    fn channels(rows: &[NotificationRow]) -> Vec<&str> {
        rows.iter().map(|r| r.channel.as_str()).collect()
    }

    #[tokio::test]
    async fn the_first_delivery_records_every_channel_and_claims_only_what_it_must_send() {
        // Arrange
        let (pool, _guard) = database().await;
        let event = paid();

        // Act
        let claims = claim(&pool, &event).await;

        // Assert
        assert_eq!(channels(&claims.claimed), ["email"]);
        assert!(claims.busy.is_empty(), "{:?}", claims.busy);
        let recorded: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT channel, status, coalesce(claimed_until > now(), false) FROM notifications \
             WHERE event_id = $1 ORDER BY channel",
        )
        .bind(event.id)
        .fetch_all(&pool)
        .await
        .expect("notifications");
        let recorded: Vec<(&str, &str, bool)> = recorded
            .iter()
            .map(|(channel, status, claimed)| (channel.as_str(), status.as_str(), *claimed))
            .collect();
        assert_eq!(
            recorded,
            [("email", "pending", true), ("sms", "skipped", false)]
        );
    }

    #[tokio::test]
    async fn a_second_delivery_while_the_first_is_sending_claims_nothing_and_finds_the_channel_busy()
     {
        // Arrange
        let (pool, _guard) = database().await;
        let event = paid();
        claim(&pool, &event).await;

        // Act
        let second = claim(&pool, &event).await;

        // Assert
        assert!(second.claimed.is_empty(), "{:?}", second.claimed);
        assert_eq!(second.busy, ["email"]);
    }

    #[tokio::test]
    async fn deliveries_racing_on_a_new_event_send_each_notification_once() {
        // Arrange
        let (pool, _guard) = database().await;
        let event = paid();

        // Act: eight deliveries of one event at once, as replicas would.
        let claims = deliver_at_once(&pool, event, 8).await;

        // Assert: one email claimed in all; every other delivery retries,
        // since it finds the email busy. One whose snapshot came before the
        // winner's commit sees no row at all, so it counts the skipped SMS
        // busy too: it cannot tell, and a retry finds it skipped.
        let claimed: usize = claims.iter().map(|c| c.claimed.len()).sum();
        assert_eq!(claimed, 1);
        for losing in claims.iter().filter(|c| c.claimed.is_empty()) {
            assert!(
                losing.busy.iter().any(|c| c == "email"),
                "{:?}",
                losing.busy
            );
            assert!(losing.busy.iter().all(|c| c == "email" || c == "sms"));
        }
    }

    async fn deliver_at_once(pool: &PgPool, event: Event<'static>, n: usize) -> Vec<Claims> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { claim(&pool, &event).await })
            })
            .collect();
        let mut claims = Vec::with_capacity(n);
        for task in tasks {
            claims.push(task.await.expect("delivery"));
        }
        claims
    }

    #[tokio::test]
    async fn a_sent_notification_is_never_claimed_again_and_a_failed_one_is() {
        // Arrange
        let (pool, _guard) = database().await;
        let (sent, failed) = (paid(), paid());
        let mut conn = pool.acquire().await.expect("connection");
        let first = claim(&pool, &sent).await;
        mark_sent(&mut conn, first.claimed[0].id, Some("order.paid"))
            .await
            .expect("sent");
        let first = claim(&pool, &failed).await;
        mark_failed(&mut conn, first.claimed[0].id, "smtp: refused", false)
            .await
            .expect("failed");

        // Act
        let after_sent = claim(&pool, &sent).await;
        let after_failed = claim(&pool, &failed).await;

        // Assert
        assert!(after_sent.claimed.is_empty() && after_sent.busy.is_empty());
        assert_eq!(channels(&after_failed.claimed), ["email"]);
        assert_eq!(after_failed.claimed[0].status, "failed");
        assert_eq!(after_failed.claimed[0].attempts, 1);
        let sent_row: (String, Option<DateTime<Utc>>, bool) = sqlx::query_as(
            "SELECT status, sent_at, claimed_until IS NULL FROM notifications \
             WHERE event_id = $1 AND channel = 'email'",
        )
        .bind(sent.id)
        .fetch_one(&pool)
        .await
        .expect("the sent email");
        assert_eq!(sent_row.0, "sent");
        assert!(sent_row.1.is_some() && sent_row.2);
        assert!(is_processed(&mut conn, sent.id).await.expect("inbox"));
    }

    #[tokio::test]
    async fn a_claim_that_ran_out_is_taken_by_the_next_delivery() {
        // Arrange: a delivery claimed the email and died.
        let (pool, _guard) = database().await;
        let event = paid();
        claim(&pool, &event).await;
        sqlx::query(
            "UPDATE notifications SET claimed_until = now() - interval '1 second' \
             WHERE event_id = $1",
        )
        .bind(event.id)
        .execute(&pool)
        .await
        .expect("run the claim out");

        // Act
        let next = claim(&pool, &event).await;

        // Assert
        assert_eq!(channels(&next.claimed), ["email"]);
        assert!(next.busy.is_empty());
    }
}
