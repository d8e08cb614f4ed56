//! The transactional outbox: rows appear with their transaction, are
//! published once both database and broker are there, and wait otherwise.

use gocommerce_platform::Shutdown;
use gocommerce_platform::broker::{Broker, Publisher};
use gocommerce_platform::outbox::{self, OutboxMessage};
use uuid::Uuid;

use crate::helpers::{
    AMQP_URL, declare, events_exchange, finish, next, outbox_database, silent_broker,
    spawn_consumer, subscribed, unique_spec,
};

fn message(routing_key: &str) -> OutboxMessage {
    OutboxMessage {
        id: Uuid::new_v4(),
        routing_key: routing_key.to_owned(),
        content_type: "text/plain".to_owned(),
        payload: b"state changed".to_vec(),
        mandatory: true,
        secret: false,
    }
}

async fn pending(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
        .expect("count")
}

/// The rows not recorded as published once none are left, or after `secs`
/// seconds: a running relay records a batch a moment after it went out.
async fn pending_after(pool: &sqlx::PgPool, secs: u64) -> i64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let left = pending(pool).await;
        if left == 0 || tokio::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Enqueues the event in a transaction of its own and commits it.
async fn commit(pool: &sqlx::PgPool, event: &OutboxMessage) {
    let mut tx = pool.begin().await.expect("tx");
    outbox::enqueue(&mut tx, event).await.expect("enqueued");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_rolled_back_transaction_leaves_no_event() {
    let (pool, _database) = outbox_database().await;
    let mut tx = pool.begin().await.expect("tx");

    outbox::enqueue(&mut tx, &message("test.rollback"))
        .await
        .expect("enqueued");
    tx.rollback().await.expect("rollback");

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_committed_event_is_published_and_marked_sent() {
    let (pool, _database) = outbox_database().await;
    let mut queue = subscribed().await;
    tokio::spawn(outbox::run_relay(
        pool.clone(),
        Publisher::new(queue.broker.clone()),
        queue.shutdown.clone(),
    ));
    let event = message(&queue.routing_key);

    commit(&pool, &event).await;

    let delivered = queue.next().await;
    assert_eq!(delivered.message_id, event.id.to_string());
    assert_eq!(delivered.payload, b"state changed");
    assert_eq!(pending_after(&pool, 1).await, 0);
    queue.finish().await;
}

#[tokio::test]
async fn a_secrets_payload_goes_out_whole_and_is_then_emptied_from_the_outbox() {
    let (pool, _database) = outbox_database().await;
    let mut queue = subscribed().await;
    let secret = OutboxMessage {
        secret: true,
        ..message(&queue.routing_key)
    };
    let plain = message(&queue.routing_key);
    commit(&pool, &secret).await;
    commit(&pool, &plain).await;

    tokio::spawn(outbox::run_relay(
        pool.clone(),
        Publisher::new(queue.broker.clone()),
        queue.shutdown.clone(),
    ));
    let delivered = [queue.next().await, queue.next().await];
    assert_eq!(pending_after(&pool, 5).await, 0);

    assert!(
        delivered.iter().all(|d| d.payload == b"state changed"),
        "both delivered whole"
    );
    let kept: Vec<(Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT id, payload FROM outbox WHERE published_at IS NOT NULL")
            .fetch_all(&pool)
            .await
            .expect("rows");
    let payload = |id| {
        kept.iter()
            .find(|(row, _)| *row == id)
            .map(|(_, p)| p.clone())
            .expect("the row is kept")
    };
    assert!(payload(secret.id).is_empty(), "the secret is gone");
    assert_eq!(payload(plain.id), b"state changed");
    queue.finish().await;
}

#[tokio::test]
async fn events_wait_while_the_broker_is_unreachable_and_go_out_once_it_is_back() {
    let (pool, _database) = outbox_database().await;
    let (spec, routing_key) = unique_spec(3);
    commit(&pool, &message(&routing_key)).await;
    // Nothing listens on port 1.
    let down = Publisher::new(Broker::new("amqp://guest:guest@127.0.0.1:1/%2f"));

    let failed = outbox::relay_batch(&pool, &down).await;

    assert!(failed.is_err());
    assert_eq!(pending(&pool).await, 1);
    let last_error: Option<String> = sqlx::query_scalar("SELECT last_error FROM outbox")
        .fetch_one(&pool)
        .await
        .expect("row");
    assert!(last_error.is_some());

    let broker = Broker::new(AMQP_URL);
    let shutdown = Shutdown::new();
    declare(&broker, &spec).await;
    let mut deliveries = spawn_consumer(&broker, &spec, &shutdown, |_| Ok(()));
    let published = outbox::relay_batch(&pool, &Publisher::new(broker.clone()))
        .await
        .expect("published");

    assert_eq!(published, 1);
    assert_eq!(pending(&pool).await, 0);
    assert_eq!(next(&mut deliveries).await.payload, b"state changed");
    finish(&broker, &spec, &shutdown).await;
}

#[tokio::test]
async fn events_a_stalled_broker_did_not_confirm_are_due_again_at_once() {
    // Arrange
    let (pool, _database) = outbox_database().await;
    commit(&pool, &message("test.stalled")).await;
    let stalled = Publisher::new(silent_broker().await)
        .with_confirm_timeout(std::time::Duration::from_millis(300));

    // Act
    let failed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        outbox::relay_batch(&pool, &stalled),
    )
    .await
    .expect("the relay gives up by itself");

    // Assert: not left leased for the next 30 s.
    assert!(failed.is_err(), "{failed:?}");
    let (due, last_error): (bool, Option<String>) = sqlx::query_as(
        "SELECT next_attempt_at <= now(), last_error FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(&pool)
    .await
    .expect("the event is still pending");
    assert!(
        due,
        "the event waits for its lease instead of being retried"
    );
    assert!(last_error.is_some_and(|e| e.contains("confirm")));
}

#[tokio::test]
async fn an_event_nobody_takes_waits_without_holding_back_the_next_ones() {
    let (pool, _database) = outbox_database().await;
    let mut queue = subscribed().await;
    let mut tx = pool.begin().await.expect("tx");
    outbox::enqueue(&mut tx, &message("nobody.subscribed.yet"))
        .await
        .expect("enqueued");
    outbox::enqueue(&mut tx, &message(&queue.routing_key))
        .await
        .expect("enqueued");
    tx.commit().await.expect("commit");

    outbox::relay_batch(&pool, &Publisher::new(queue.broker.clone()))
        .await
        .expect("relayed");

    assert_eq!(queue.next().await.payload, b"state changed");
    let (routing_key, last_error, waits): (String, Option<String>, bool) = sqlx::query_as(
        "SELECT routing_key, last_error, next_attempt_at > now() FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(&pool)
    .await
    .expect("the unroutable event is still pending");
    assert_eq!(routing_key, "nobody.subscribed.yet");
    assert!(last_error.is_some_and(|e| e.contains("route")));
    assert!(waits, "it is retried later, not in a hot loop");
    queue.finish().await;
}

#[tokio::test]
async fn an_event_nobody_took_a_thousand_times_still_waits_and_its_batch_is_recorded_once() {
    // Arrange: an event refused for days, beside one that goes out.
    let (pool, _database) = outbox_database().await;
    let mut queue = subscribed().await;
    commit(&pool, &message("nobody.subscribed.ever")).await;
    sqlx::query("UPDATE outbox SET attempts = 1100")
        .execute(&pool)
        .await
        .expect("attempts");
    commit(&pool, &message(&queue.routing_key)).await;

    // Act
    let relayed = outbox::relay_batch(&pool, &Publisher::new(queue.broker.clone())).await;

    // Assert
    assert!(relayed.is_ok(), "{relayed:?}");
    assert_eq!(queue.next().await.payload, b"state changed");
    assert_eq!(
        pending(&pool).await,
        1,
        "the other event is recorded as sent"
    );
    let (attempts, wait): (i32, f64) = sqlx::query_as(
        "SELECT attempts, extract(epoch FROM next_attempt_at - now())::float8 \
         FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(&pool)
    .await
    .expect("the refused event");
    assert_eq!(attempts, 1101);
    assert!(
        wait > 0.0 && wait <= 30.0,
        "waits its longest backoff: {wait}"
    );
    queue.finish().await;
}

#[tokio::test]
async fn an_event_for_the_record_that_nobody_takes_is_published_not_retried() {
    // Arrange
    let (pool, _database) = outbox_database().await;
    let broker = events_exchange().await;
    let event = OutboxMessage {
        mandatory: false,
        ..message("nobody.subscribed.ever")
    };
    commit(&pool, &event).await;

    // Act
    outbox::relay_batch(&pool, &Publisher::new(broker))
        .await
        .expect("relayed");

    // Assert
    let (published, last_error): (bool, Option<String>) =
        sqlx::query_as("SELECT published_at IS NOT NULL, last_error FROM outbox")
            .fetch_one(&pool)
            .await
            .expect("the event's row");
    assert!(
        published,
        "the event waits for a subscriber it does not need"
    );
    assert_eq!(last_error, None);
}

#[tokio::test]
async fn a_relay_under_a_stream_of_commits_publishes_each_event_once_and_records_them_all() {
    // Arrange: commits keep coming while the relay runs, so notifications
    // arrive while a batch is out and the batches wait for one another.
    let (pool, _database) = outbox_database().await;
    let mut queue = subscribed().await;
    let relay = tokio::spawn(outbox::run_relay(
        pool.clone(),
        Publisher::new(queue.broker.clone()),
        queue.shutdown.clone(),
    ));

    // Act
    let mut committed = Vec::new();
    for _ in 0..30 {
        committed.extend(commit_events(&pool, &queue.routing_key, 5).await);
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
    }

    // Assert
    let delivered = queue.exactly(committed.len()).await;
    assert_eq!(delivered, committed, "every event once, in commit order");
    assert_eq!(
        pending_after(&pool, 5).await,
        0,
        "a published row was not recorded"
    );
    queue.finish().await;
    relay.await.expect("the relay stops");
}

/// Commits `count` events to `routing_key`, one transaction each; their ids
/// in commit order.
async fn commit_events(pool: &sqlx::PgPool, routing_key: &str, count: usize) -> Vec<String> {
    let mut committed = Vec::with_capacity(count);
    for _ in 0..count {
        let event = message(routing_key);
        commit(pool, &event).await;
        committed.push(event.id.to_string());
    }
    committed
}

#[tokio::test]
async fn a_batch_goes_out_in_commit_order() {
    // Arrange
    let (pool, _database) = outbox_database().await;
    let mut queue = subscribed().await;
    let committed = commit_events(&pool, &queue.routing_key, 40).await;

    // Act
    let relayed = outbox::relay_batch(&pool, &Publisher::new(queue.broker.clone()))
        .await
        .expect("relayed");

    // Assert
    assert_eq!(relayed, 40);
    assert_eq!(queue.exactly(committed.len()).await, committed);
    queue.finish().await;
}

#[tokio::test]
async fn relays_side_by_side_publish_every_event_once() {
    // Arrange
    let (pool, _database) = outbox_database().await;
    let mut queue = subscribed().await;
    let mut committed = commit_events(&pool, &queue.routing_key, 300).await;

    // Act: two relays at once, each until nothing is due.
    let relay = |publisher: Publisher| {
        let pool = pool.clone();
        async move {
            while outbox::relay_batch(&pool, &publisher)
                .await
                .expect("relayed")
                > 0
            {}
        }
    };
    tokio::join!(
        relay(Publisher::new(queue.broker.clone())),
        relay(Publisher::new(queue.broker.clone()))
    );

    // Assert
    let mut delivered = queue.exactly(committed.len()).await;
    assert_eq!(pending(&pool).await, 0);
    delivered.sort();
    committed.sort();
    assert_eq!(delivered, committed, "every event exactly once");
    queue.finish().await;
}

#[tokio::test]
async fn published_events_are_deleted_after_their_retention_and_unpublished_ones_never() {
    // Arrange: by age and state, as a week of traffic leaves them.
    let (pool, _database) = outbox_database().await;
    let rows = [
        ("published long ago", Some("8 days"), "8 days"),
        ("published lately", Some("1 day"), "1 day"),
        ("never published", None, "30 days"),
    ];
    for (routing_key, published_ago, created_ago) in rows {
        sqlx::query(
            "INSERT INTO outbox (id, routing_key, content_type, payload, created_at, published_at) \
             VALUES ($1, $2, 'text/plain', '', now() - $3::interval, now() - $4::interval)",
        )
        .bind(Uuid::new_v4())
        .bind(routing_key)
        .bind(created_ago)
        .bind(published_ago)
        .execute(&pool)
        .await
        .expect("row");
    }

    // Act
    let deleted = outbox::sweep(&pool, outbox::RETENTION)
        .await
        .expect("swept");

    // Assert
    assert_eq!(deleted, 1);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT routing_key FROM outbox ORDER BY routing_key")
            .fetch_all(&pool)
            .await
            .expect("rows");
    assert_eq!(left, ["never published", "published lately"]);
}

#[tokio::test]
async fn a_running_relay_sweeps_events_past_their_retention() {
    // Arrange
    let (pool, _database) = outbox_database().await;
    sqlx::query(
        "INSERT INTO outbox (id, routing_key, content_type, payload, published_at) \
         VALUES ($1, 'published.long.ago', 'text/plain', '', now() - interval '8 days')",
    )
    .bind(Uuid::new_v4())
    .execute(&pool)
    .await
    .expect("row");
    let shutdown = Shutdown::new();

    // Act
    tokio::spawn(outbox::run_relay(
        pool.clone(),
        Publisher::new(Broker::new(AMQP_URL)),
        shutdown.clone(),
    ));

    // Assert
    let mut rows = 1_i64;
    for _ in 0..100 {
        rows = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .expect("count");
        if rows == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    shutdown.trigger();
    assert_eq!(rows, 0, "the relay deleted the old event when it started");
}
