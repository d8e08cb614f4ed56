//! Every query of the notification service.

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

/// Records an event's notifications (one per channel) once, in one
/// statement: a redelivered event finds them already there.
#[tracing::instrument(skip_all, fields(event_id = %event.id, notifications = news.len()), err)]
pub async fn insert_all(
    conn: &mut PgConnection,
    event: &Event<'_>,
    news: &[NewNotification<'_>],
) -> Result<(), sqlx::Error> {
    if news.is_empty() {
        return Ok(());
    }
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
    sqlx::query(
        "INSERT INTO notifications (id, event_id, event_type, user_id, channel, status, recipient, subject, body, last_error) \
         SELECT id, $7, $8, $9, channel, status, recipient, subject, body, last_error \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $10::text[]) \
           AS n(id, channel, status, recipient, subject, body, last_error) \
         ON CONFLICT (event_id, channel) DO NOTHING",
    )
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
    .execute(conn)
    .await?;
    Ok(())
}

/// The event's notifications still to send (never the sent or skipped ones).
#[tracing::instrument(skip_all, fields(event_id = %event_id), err)]
pub async fn unsent(
    conn: &mut PgConnection,
    event_id: Uuid,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE event_id = $1 \
         AND status IN ('pending', 'failed', 'dead_lettered') ORDER BY channel"
    ))
    .bind(event_id)
    .fetch_all(conn)
    .await
}

/// Locks one unsent notification for sending, within the caller's
/// transaction. `Claim::Busy` when another delivery holds it right now (a
/// second replica got the same event); `Claim::Done` when it needs no sending.
#[tracing::instrument(skip_all, fields(notification_id = %id), err)]
pub async fn claim(conn: &mut PgConnection, id: Uuid) -> Result<Claim, sqlx::Error> {
    let row: Option<NotificationRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE id = $1 \
         AND status IN ('pending', 'failed', 'dead_lettered') FOR UPDATE SKIP LOCKED"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return Ok(Claim::Claimed(Box::new(row)));
    }
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM notifications WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match status.as_deref() {
        Some("pending" | "failed" | "dead_lettered") => Claim::Busy,
        _ => Claim::Done,
    })
}

/// The outcome of `claim`.
#[derive(Debug)]
pub enum Claim {
    Claimed(Box<NotificationRow>),
    Busy,
    Done,
}

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
             sent_at = now(), updated_at = now() WHERE id = $1 RETURNING event_id) \
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
        "UPDATE notifications SET status = $3, attempts = attempts + 1, last_error = $2, updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(if dead { "dead_lettered" } else { "failed" })
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
