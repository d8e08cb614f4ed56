//! The transactional outbox. A service writes an event row in the same
//! transaction as the state change it describes; the relay leases a batch of
//! pending rows, publishes them with publisher confirms and marks them sent.
//! Nothing is lost when the broker or the service is down: rows wait until
//! both are back. Delivery is at least once (a crash between publishing and
//! marking republishes), so consumers deduplicate by message id. A message
//! no queue takes (nobody subscribed yet) or that the broker refuses waits
//! with a growing delay of its own, without holding back the messages behind
//! it. Only a mandatory message counts as not taken: one that is not (an
//! event kept for the record) is dropped by the broker when nobody listens.
//!
//! Every service that emits events has this table (its own migration):
//!
//! ```sql
//! CREATE TABLE outbox (
//!     id           uuid PRIMARY KEY,
//!     routing_key  text NOT NULL,
//!     content_type text NOT NULL,
//!     payload      bytea NOT NULL,
//!     headers      jsonb NOT NULL DEFAULT '{}',
//!     created_at   timestamptz NOT NULL DEFAULT now(),
//!     published_at timestamptz,
//!     attempts     integer NOT NULL DEFAULT 0,
//!     last_error   text,
//!     next_attempt_at timestamptz NOT NULL DEFAULT now(),
//!     mandatory    boolean NOT NULL DEFAULT true,
//!     secret       boolean NOT NULL DEFAULT false
//! );
//! CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at) WHERE published_at IS NULL;
//! CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
//! ```
//!
//! Published rows are kept for `RETENTION`, so what went out and when can be
//! looked up after an incident, and then deleted by the relay (`sweep`). A
//! secret's row ([`OutboxMessage::secret`]) is kept without its payload.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::postgres::{PgArguments, PgListener};
use sqlx::query::QueryAs;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::broker::{BrokerError, Outgoing, Publisher};
use crate::{Shutdown, telemetry};

/// The relay's NOTIFY channel, as a macro so [`QUEUED`] can spell it out.
macro_rules! channel {
    () => {
        "gocommerce_outbox"
    };
}
const CHANNEL: &str = channel!();
const BATCH: i64 = 100;
const BATCH_LEN: usize = BATCH as usize;
/// How many leased rows' ids a relay remembers: those of the last few
/// batches, whose notifications may still be on their way.
const LEASED_REMEMBERED: usize = 4 * BATCH_LEN;
const POLL: Duration = Duration::from_secs(1);
/// Least time between the starts of two batches that a notification wakes.
/// Every batch costs two statements and a broker round trip; under load the
/// rows that commit meanwhile share the next one instead of each taking its
/// own, and an idle relay still starts at once. At 10 ms a relay could run
/// close to a batch per order at bench scenario 3's 200 orders/s; the cost is
/// at most 50 ms more between a commit and its publish. The README's
/// performance section has the measurements.
const MIN_BATCH_INTERVAL: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a relay holds the rows of the batch it is publishing. A batch
/// takes milliseconds, and a publish gives up after
/// [`crate::broker::CONFIRM_TIMEOUT`] and frees its rows; the lease only
/// delays rows whose relay died mid-batch.
const LEASE: Duration = Duration::from_secs(30);
/// Longest wait of a single message the broker would not take.
const MAX_MESSAGE_BACKOFF_SECS: f64 = 30.0;

/// How long a published row is kept.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// How often a relay deletes rows past their retention.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Rows per delete statement: a sweep after a busy week never holds
/// millions of row locks in one transaction.
const SWEEP_CHUNK: u64 = 5_000;

/// Content type of protobuf-encoded events.
pub const PROTOBUF: &str = "application/x-protobuf";

/// A message to publish once the surrounding transaction commits.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: Uuid,
    pub routing_key: String,
    pub content_type: String,
    pub payload: Vec<u8>,
    /// Whether a queue must take it; see [`Outgoing::mandatory`].
    pub mandatory: bool,
    /// Whether the payload holds a secret ([`crate::events::secret`]): the
    /// relay empties it when it records the message published, so the
    /// outbox keeps no usable copy.
    pub secret: bool,
}

/// Writes the message into the outbox within the caller's transaction, with
/// the current trace context, and wakes the relay when it commits.
#[tracing::instrument(skip_all, fields(message_id = %message.id, routing_key = %message.routing_key), err)]
pub async fn enqueue(conn: &mut PgConnection, message: &OutboxMessage) -> Result<(), sqlx::Error> {
    static SQL: LazyLock<String> =
        LazyLock::new(|| format!("WITH {} SELECT {QUEUED}", queued(None, 1)));
    bind(sqlx::query_as::<_, (bool,)>(&SQL), message)
        .fetch_one(conn)
        .await?;
    Ok(())
}

/// A data-modifying CTE named `queued` that writes a message into the
/// outbox for the row of `source` (a CTE of the same statement returning at
/// most one row), so exactly when the statement's own change happens; with
/// no source, always. Its seven parameters are numbered from `$first`; bind
/// them with [`bind`]. The statement's final SELECT must read [`QUEUED`]:
/// a CTE's SELECT runs only if something reads it, and the notification
/// wakes the relay at commit (rollback drops it with the row).
///
/// This spares a state change and its event a transaction of their own
/// (BEGIN, the change, the event, COMMIT: four round trips instead of one).
pub fn queued(source: Option<&str>, first: usize) -> String {
    let from = source.map(|s| format!(" FROM {s}")).unwrap_or_default();
    let [id, key, content_type, payload, headers, mandatory, secret] =
        std::array::from_fn::<usize, 7, _>(|i| first + i);
    format!(
        "queued AS ( \
           INSERT INTO outbox (id, routing_key, content_type, payload, headers, mandatory, \
             secret) \
           SELECT ${id}::uuid, ${key}::text, ${content_type}::text, ${payload}::bytea, \
                  ${headers}::jsonb, ${mandatory}::boolean, ${secret}::boolean{from} \
           RETURNING id)"
    )
}

/// The final SELECT's column that wakes the relay when [`queued`] wrote a
/// row (`IS NULL` only turns `pg_notify`'s void into a value). The payload
/// is the row's id, so a relay can tell a notification of a row it already
/// took from news.
pub const QUEUED: &str = concat!(
    "(SELECT pg_notify('",
    channel!(),
    "', id::text) FROM queued) IS NULL AS outbox_notified"
);

/// Binds a message to the parameters of [`queued`], with the current trace
/// context as its headers; the parameters before them must be bound first.
pub fn bind<'q, O>(
    query: QueryAs<'q, Postgres, O, PgArguments>,
    message: &'q OutboxMessage,
) -> QueryAs<'q, Postgres, O, PgArguments> {
    let headers = serde_json::to_value(telemetry::current_context_map()).unwrap_or_default();
    query
        .bind(message.id)
        .bind(&message.routing_key)
        .bind(&message.content_type)
        .bind(&message.payload)
        .bind(headers)
        .bind(message.mandatory)
        .bind(message.secret)
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
}

/// Publishes pending rows until shutdown: woken by NOTIFY at commit, and
/// polling every second as a fallback.
pub async fn run_relay(pool: PgPool, publisher: Publisher, shutdown: Shutdown) {
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(mut listener) => match listener.listen(CHANNEL).await {
            Ok(()) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "outbox relay cannot listen, polling only");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "outbox relay cannot listen, polling only");
            None
        }
    };
    let mut backoff = Duration::from_millis(100);
    let mut next_sweep = tokio::time::Instant::now();
    let mut leased = Leased::new(LEASED_REMEMBERED);
    while !shutdown.is_triggered() {
        let started = tokio::time::Instant::now();
        if started >= next_sweep {
            match sweep(&pool, RETENTION).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(deleted, "deleted published events past their retention")
                }
                Err(error) => tracing::warn!(%error, "outbox sweep failed, trying again later"),
            }
            next_sweep = started + SWEEP_INTERVAL;
        }
        let wait = match relay_leased(&pool, &publisher).await {
            Ok(ids) => {
                leased.remember(&ids);
                backoff = Duration::from_millis(100);
                if ids.len() >= BATCH_LEN {
                    Duration::ZERO
                } else {
                    POLL
                }
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis(), "outbox relay failed, retrying");
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.wait() => break,
            notified = async {
                match listener.as_mut() {
                    // A row's notification can arrive after the batch that
                    // took it; waking for it would lease nothing.
                    Some(listener) => loop {
                        match listener.recv().await {
                            Ok(notification) if !leased.is_news(notification.payload()) => {}
                            other => break other.map(drop),
                        }
                    },
                    None => std::future::pending().await,
                }
            } => {
                if notified.is_err() {
                    // The listener reconnects by itself on the next recv.
                    tokio::time::sleep(backoff).await;
                } else {
                    tokio::time::sleep_until(started + MIN_BATCH_INTERVAL).await;
                    // Every commit that wrote a row notifies, and the next
                    // batch takes all their rows: the notifications already
                    // here would each start an empty transaction.
                    if let Some(listener) = listener.as_mut() {
                        while listener.next_buffered().is_some() {}
                    }
                }
            }
        }
    }
}

/// Deletes the rows published more than `retention` ago, a chunk per
/// statement; returns how many it deleted.
#[tracing::instrument(skip_all, err)]
pub async fn sweep(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let chunk = sqlx::query(
            "DELETE FROM outbox WHERE id IN ( \
               SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => $1) LIMIT $2)",
        )
        .bind(retention.as_secs_f64())
        .bind(i64::try_from(SWEEP_CHUNK).unwrap_or(i64::MAX))
        .execute(pool)
        .await?
        .rows_affected();
        deleted += chunk;
        if chunk < SWEEP_CHUNK {
            return Ok(deleted);
        }
    }
}

#[derive(sqlx::FromRow)]
struct Pending {
    id: Uuid,
    routing_key: String,
    content_type: String,
    payload: Vec<u8>,
    headers: serde_json::Value,
    created_at: chrono::DateTime<chrono::Utc>,
    mandatory: bool,
}

/// The ids of the rows the latest batches leased, up to a bound: their
/// notifications are not news.
#[derive(Debug)]
struct Leased {
    ids: HashSet<Uuid>,
    order: VecDeque<Uuid>,
    capacity: usize,
}

impl Leased {
    fn new(capacity: usize) -> Self {
        Self {
            ids: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    fn remember(&mut self, ids: &[Uuid]) {
        for &id in ids {
            if self.ids.insert(id) {
                self.order.push_back(id);
            }
        }
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
    }

    /// Whether a notification may name a row no batch has taken yet: any
    /// payload but the id of a row leased lately (an older writer notified
    /// with an empty one).
    fn is_news(&self, payload: &str) -> bool {
        Uuid::parse_str(payload).map_or(true, |id| !self.ids.contains(&id))
    }
}

/// Publishes up to one batch of due rows in order; returns how many rows it
/// handled (published or postponed), so a full batch means "go on".
pub async fn relay_batch(pool: &PgPool, publisher: &Publisher) -> Result<i64, RelayError> {
    let ids = relay_leased(pool, publisher).await?;
    Ok(i64::try_from(ids.len()).unwrap_or(i64::MAX))
}

/// [`relay_batch`], returning the ids of the rows it handled.
///
/// The batch is leased, not locked: one statement moves the rows' next
/// attempt `LEASE` ahead and returns them, and one more records the outcome.
/// No transaction stays open while the broker confirms, and an idle poll is
/// a single statement. A relay that dies mid-batch leaves its rows to the
/// next relay once the lease runs out; they go out again (at least once).
#[tracing::instrument(skip_all, err)]
async fn relay_leased(pool: &PgPool, publisher: &Publisher) -> Result<Vec<Uuid>, RelayError> {
    // Each statement takes a pooled connection of its own: none is held
    // while the broker confirms.
    // SKIP LOCKED lets several replicas lease side by side without waiting.
    let mut rows: Vec<Pending> = sqlx::query_as(
        "UPDATE outbox o SET next_attempt_at = now() + make_interval(secs => $2) \
         FROM (SELECT id FROM outbox WHERE published_at IS NULL AND next_attempt_at <= now() \
               ORDER BY created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) due \
         WHERE o.id = due.id \
         RETURNING o.id, o.routing_key, o.content_type, o.payload, o.headers, o.created_at, \
                   o.mandatory",
    )
    .bind(BATCH)
    .bind(LEASE.as_secs_f64())
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // RETURNING keeps no order; events go out oldest first.
    rows.sort_by_key(|row| (row.created_at, row.id));
    let mut spans = Vec::with_capacity(rows.len());
    let mut messages = Vec::with_capacity(rows.len());
    for row in &rows {
        let headers: HashMap<String, String> =
            serde_json::from_value(row.headers.clone()).unwrap_or_default();
        let span = tracing::info_span!(
            "outbox publish",
            otel.name = %format_args!("{} publish", row.routing_key),
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.message.id = %row.id,
        );
        telemetry::set_parent_from_map(&span, &headers);
        messages.push(Outgoing {
            exchange: publisher.broker().events_exchange(),
            routing_key: row.routing_key.clone(),
            message_id: row.id.to_string(),
            content_type: row.content_type.clone(),
            payload: row.payload.clone(),
            // The publish span's context, so consumers join the producer's trace.
            headers: {
                let _entered = span.enter();
                let mut headers = headers;
                headers.extend(telemetry::current_context_map());
                headers
            },
            mandatory: row.mandatory,
        });
        spans.push(span);
    }
    // Sent in order, confirmed together; each span lasts until its confirm.
    // A channel that broke (before sending or before a confirm) stops the
    // relay: those rows are due again at once, for when the broker is back.
    let (outcomes, mut broken) = match publisher.publish_all(&messages).await {
        Ok(outcomes) => (outcomes, None),
        Err(error) => (Vec::new(), Some(error)),
    };
    let mut published = Vec::with_capacity(rows.len());
    let mut refused = Vec::new();
    let mut unsent = Vec::new();
    let mut outcomes = outcomes.into_iter();
    for (row, span) in rows.iter().zip(&spans) {
        let _entered = span.enter();
        match outcomes.next() {
            Some(Ok(())) => published.push(row.id),
            Some(Err(error @ (BrokerError::Unroutable | BrokerError::Nacked))) => {
                // This message's own problem: it waits, the others go on.
                tracing::warn!(message_id = %row.id, routing_key = %row.routing_key, %error, "event not accepted, will retry it");
                refused.push((row.id, error.to_string()));
            }
            Some(Err(error)) => {
                unsent.push(row.id);
                broken.get_or_insert(error);
            }
            None => unsent.push(row.id),
        }
    }
    if !published.is_empty() {
        sqlx::query(
            "UPDATE outbox SET published_at = now(), attempts = attempts + 1, \
               payload = CASE WHEN secret THEN ''::bytea ELSE payload END \
             WHERE id = ANY($1)",
        )
        .bind(&published)
        .execute(pool)
        .await?;
    }
    // After the published ones are recorded, so that nothing here can send
    // them again. The exponent is bounded: 2^1024 is out of float8's range,
    // and a message refused for days gets there.
    for (id, error) in refused {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2, \
             next_attempt_at = now() + make_interval(secs => least(power(2, least(attempts, 16)), $3)) \
             WHERE id = $1",
        )
        .bind(id)
        .bind(error)
        .bind(MAX_MESSAGE_BACKOFF_SECS)
        .execute(pool)
        .await?;
    }
    if let Some(error) = broken {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = now() \
             WHERE id = ANY($1)",
        )
        .bind(&unsent)
        .bind(error.to_string())
        .execute(pool)
        .await?;
        return Err(error.into());
    }
    Ok(rows.into_iter().map(|row| row.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_of_a_row_leased_lately_is_not_news_and_anything_else_is() {
        // Arrange
        let taken: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let mut leased = Leased::new(4);

        // Act
        leased.remember(&taken);

        // Assert
        for id in &taken {
            assert!(!leased.is_news(&id.to_string()), "{id} was leased");
        }
        assert!(leased.is_news(&Uuid::new_v4().to_string()), "another row");
        assert!(leased.is_news(""), "an older writer's empty payload");
        assert!(leased.is_news("not an id"));
    }

    #[test]
    fn only_the_latest_leased_rows_are_remembered() {
        // Arrange
        let first = Uuid::new_v4();
        let later: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        let mut leased = Leased::new(4);
        leased.remember(&[first]);

        // Act
        leased.remember(&later);
        leased.remember(&later[..1]);

        // Assert
        assert!(
            leased.is_news(&first.to_string()),
            "the oldest is forgotten"
        );
        assert!(later.iter().all(|id| !leased.is_news(&id.to_string())));
        assert_eq!(leased.order.len(), 4);
        assert_eq!(leased.ids.len(), 4);
    }
}
