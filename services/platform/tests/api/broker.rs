//! Publishing with confirms, consuming with retry tiers and dead letters, and
//! surviving a dropped connection.

use std::collections::HashMap;

use gocommerce_platform::Shutdown;
use gocommerce_platform::broker::{
    self, Broker, BrokerError, EVENTS_EXCHANGE, HandlerError, Outgoing, Publisher,
};

use crate::helpers::{
    AMQP_URL, declare, events_exchange, finish, namespaced_broker, next, silent_broker,
    spawn_consumer, unique_spec,
};

fn event(routing_key: &str, body: &str) -> Outgoing {
    Outgoing {
        exchange: EVENTS_EXCHANGE.to_owned(),
        routing_key: routing_key.to_owned(),
        message_id: uuid::Uuid::new_v4().to_string(),
        content_type: "text/plain".to_owned(),
        payload: body.as_bytes().to_vec(),
        headers: HashMap::new(),
        mandatory: true,
    }
}

#[tokio::test]
async fn a_published_event_reaches_the_queue_bound_to_its_routing_key() {
    let broker = Broker::new(AMQP_URL);
    let shutdown = Shutdown::new();
    let (spec, routing_key) = unique_spec(3);
    declare(&broker, &spec).await;
    let mut deliveries = spawn_consumer(&broker, &spec, &shutdown, |_| Ok(()));
    let message = event(&routing_key, "hello");

    Publisher::new(broker.clone())
        .publish(&message)
        .await
        .expect("confirmed");

    let delivered = next(&mut deliveries).await;
    assert_eq!(delivered.payload, b"hello");
    assert_eq!(delivered.message_id, message.message_id);
    assert_eq!(delivered.routing_key, routing_key);
    assert_eq!(delivered.attempt, 1);
    finish(&broker, &spec, &shutdown).await;
}

#[tokio::test]
async fn a_broker_that_never_answers_fails_the_publish_after_the_confirm_timeout() {
    // Arrange
    let timeout = std::time::Duration::from_millis(300);
    let publisher = Publisher::new(silent_broker().await).with_confirm_timeout(timeout);

    // Act
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        publisher.publish(&event("test.silent", "waiting")),
    )
    .await
    .expect("the publish gives up by itself");

    // Assert
    assert!(
        matches!(result, Err(BrokerError::Timeout(t)) if t == timeout),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_message_no_queue_takes_is_a_failed_publish() {
    let broker = events_exchange().await;
    let publisher = Publisher::new(broker.clone());

    let result = publisher
        .publish(&event("nobody.listens.here", "lost?"))
        .await;

    assert!(matches!(result, Err(BrokerError::Unroutable)), "{result:?}");
}

#[tokio::test]
async fn a_message_that_need_not_be_taken_is_confirmed_when_no_queue_takes_it() {
    // Arrange
    let broker = events_exchange().await;
    let for_the_record = Outgoing {
        mandatory: false,
        ..event("nobody.listens.here", "for the record")
    };

    // Act
    let result = Publisher::new(broker.clone())
        .publish(&for_the_record)
        .await;

    // Assert
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_publisher_publishes_in_a_namespace_where_no_consumer_has_declared_anything() {
    // Arrange: a service's first event after a fresh start, before any consumer ran.
    let (broker, _) = namespaced_broker();
    let first = Outgoing {
        exchange: broker.events_exchange(),
        mandatory: false,
        ..event("user.registered", "first")
    };

    // Act
    let result = Publisher::new(broker.clone()).publish(&first).await;

    // Assert
    assert!(result.is_ok(), "{result:?}");
    let channel = broker.channel().await.expect("channel");
    channel
        .exchange_delete(
            broker.events_exchange().as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .expect("the exchange was declared");
}

#[tokio::test]
async fn declaring_again_removes_the_bindings_a_spec_retired() {
    // Arrange: the queue as an earlier version declared it, with two bindings.
    let broker = Broker::new(AMQP_URL);
    let shutdown = Shutdown::new();
    let (mut spec, kept) = unique_spec(3);
    let retired = format!("{kept}.retired");
    spec.bindings.push(retired.clone());
    declare(&broker, &spec).await;

    // Act: this version binds one and retires the other (and one it never bound).
    spec.bindings.retain(|key| key != &retired);
    spec.unbind = vec![retired.clone(), format!("{kept}.never.bound")];
    declare(&broker, &spec).await;

    // Assert
    let publisher = Publisher::new(broker.clone());
    let unbound = publisher
        .publish(&event(&retired, "for the old binding"))
        .await;
    assert!(
        matches!(unbound, Err(BrokerError::Unroutable)),
        "{unbound:?}"
    );
    publisher
        .publish(&event(&kept, "still bound"))
        .await
        .expect("the kept binding still routes");
    finish(&broker, &spec, &shutdown).await;
}

#[tokio::test]
async fn a_failing_message_retries_through_the_tiers_then_is_dead_lettered_with_its_reason() {
    let broker = Broker::new(AMQP_URL);
    let shutdown = Shutdown::new();
    let (spec, routing_key) = unique_spec(3);
    declare(&broker, &spec).await;
    let mut deliveries = spawn_consumer(&broker, &spec, &shutdown, |_| {
        Err(HandlerError::Retry("smtp server unreachable".to_owned()))
    });

    Publisher::new(broker.clone())
        .publish(&event(&routing_key, "retry me"))
        .await
        .expect("confirmed");

    let attempts: Vec<u32> = vec![
        next(&mut deliveries).await.attempt,
        next(&mut deliveries).await.attempt,
        next(&mut deliveries).await.attempt,
    ];
    assert_eq!(attempts, vec![1, 2, 3]);
    let dead = wait_for_dead_letter(&broker, &spec).await;
    assert_eq!(dead.data, b"retry me");
    let headers = dead.properties.headers().clone().expect("headers");
    let last_error = headers
        .inner()
        .get("x-last-error")
        .expect("the reason travels with the dead letter");
    let lapin::types::AMQPValue::LongString(last_error) = last_error else {
        panic!("x-last-error is a string, got {last_error:?}");
    };
    assert_eq!(last_error.to_string(), "smtp server unreachable");
    // No fourth attempt.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), deliveries.recv())
            .await
            .is_err()
    );
    finish(&broker, &spec, &shutdown).await;
}

#[tokio::test]
async fn a_rejected_message_is_dead_lettered_without_retries() {
    let broker = Broker::new(AMQP_URL);
    let shutdown = Shutdown::new();
    let (spec, routing_key) = unique_spec(5);
    declare(&broker, &spec).await;
    let mut deliveries = spawn_consumer(&broker, &spec, &shutdown, |_| {
        Err(HandlerError::Reject("not a valid envelope".to_owned()))
    });

    Publisher::new(broker.clone())
        .publish(&event(&routing_key, "garbage"))
        .await
        .expect("confirmed");

    assert_eq!(next(&mut deliveries).await.attempt, 1);
    let dead = wait_for_dead_letter(&broker, &spec).await;
    assert_eq!(dead.data, b"garbage");
    finish(&broker, &spec, &shutdown).await;
}

#[tokio::test]
async fn a_message_whose_handler_panics_is_dead_lettered_and_the_consumer_goes_on() {
    // Arrange
    let broker = Broker::new(AMQP_URL);
    let shutdown = Shutdown::new();
    let (spec, routing_key) = unique_spec(5);
    declare(&broker, &spec).await;
    let mut deliveries = spawn_consumer(&broker, &spec, &shutdown, |incoming| {
        if incoming.payload == b"boom" {
            panic!("a bug in the handler");
        }
        Ok(())
    });
    let publisher = Publisher::new(broker.clone());

    // Act
    publisher
        .publish(&event(&routing_key, "boom"))
        .await
        .expect("confirmed");
    publisher
        .publish(&event(&routing_key, "fine"))
        .await
        .expect("confirmed");

    // Assert
    let dead = wait_for_dead_letter(&broker, &spec).await;
    assert_eq!(dead.data, b"boom");
    let headers = dead.properties.headers().clone().expect("headers");
    let reason = headers.inner().get("x-last-error").expect("a reason");
    let lapin::types::AMQPValue::LongString(reason) = reason else {
        panic!("x-last-error is a string, got {reason:?}");
    };
    assert!(
        reason
            .to_string()
            .starts_with("the handler panicked: a bug in the handler"),
        "{reason}"
    );
    assert_eq!(next(&mut deliveries).await.payload, b"fine");
    finish(&broker, &spec, &shutdown).await;
}

#[tokio::test]
async fn replayed_dead_letters_are_delivered_again_once_the_cause_is_fixed() {
    let broker = Broker::new(AMQP_URL);
    let shutdown = Shutdown::new();
    let (spec, routing_key) = unique_spec(1);
    declare(&broker, &spec).await;
    let fixed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler_fixed = fixed.clone();
    let mut deliveries = spawn_consumer(&broker, &spec, &shutdown, move |_| {
        if handler_fixed.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err(HandlerError::Retry("down".to_owned()))
        }
    });
    Publisher::new(broker.clone())
        .publish(&event(&routing_key, "eventually"))
        .await
        .expect("confirmed");
    next(&mut deliveries).await;
    wait_until_dead_letters(&broker, &spec, 1).await;

    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let replayed = broker::replay_dead_letters(&broker, &spec, 100)
        .await
        .expect("replay");

    assert_eq!(replayed, 1);
    let again = next(&mut deliveries).await;
    assert_eq!(again.payload, b"eventually");
    assert_eq!(again.attempt, 1);
    assert_eq!(
        again.routing_key, routing_key,
        "the original routing key survives"
    );
    wait_until_dead_letters(&broker, &spec, 0).await;
    finish(&broker, &spec, &shutdown).await;
}

#[tokio::test]
async fn publisher_and_consumer_recover_after_the_connection_drops() {
    let broker = Broker::new(AMQP_URL);
    let shutdown = Shutdown::new();
    let (spec, routing_key) = unique_spec(3);
    declare(&broker, &spec).await;
    let mut deliveries = spawn_consumer(&broker, &spec, &shutdown, |_| Ok(()));
    let publisher = Publisher::new(broker.clone());
    publisher
        .publish(&event(&routing_key, "before"))
        .await
        .expect("confirmed");
    assert_eq!(next(&mut deliveries).await.payload, b"before");

    broker.close().await;
    assert!(!broker.is_connected());
    publisher
        .publish(&event(&routing_key, "after"))
        .await
        .expect("reconnects and confirms");

    assert_eq!(next(&mut deliveries).await.payload, b"after");
    assert!(broker.is_connected());
    finish(&broker, &spec, &shutdown).await;
}

async fn wait_for_dead_letter(
    broker: &Broker,
    spec: &broker::QueueSpec,
) -> lapin::message::Delivery {
    let channel = broker.channel().await.expect("channel");
    for _ in 0..100 {
        if let Some(message) = channel
            .basic_get(
                spec.dead_letter_queue(broker).as_str().into(),
                Default::default(),
            )
            .await
            .expect("get")
        {
            message
                .delivery
                .acker
                .ack(Default::default())
                .await
                .expect("ack");
            return message.delivery;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("nothing was dead-lettered within five seconds");
}

async fn wait_until_dead_letters(broker: &Broker, spec: &broker::QueueSpec, count: u32) {
    let channel = broker.channel().await.expect("channel");
    for _ in 0..100 {
        let queue = channel
            .queue_declare(
                spec.dead_letter_queue(broker).as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("queue exists");
        if queue.message_count() == count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the dead-letter queue never held {count} messages");
}

#[tokio::test]
async fn a_consumer_handles_as_many_messages_at_once_as_its_prefetch() {
    let broker = Broker::new(AMQP_URL);
    let shutdown = Shutdown::new();
    let (spec, routing_key) = unique_spec(3);
    declare(&broker, &spec).await;
    let prefetch = usize::from(spec.prefetch);
    // Every handler waits until all of them have started: handled one at a
    // time, the first would wait forever and nothing would be acked.
    let all_started = std::sync::Arc::new(tokio::sync::Barrier::new(prefetch));
    let (handled, mut handled_rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = move |incoming: broker::Incoming| {
        let all_started = all_started.clone();
        let handled = handled.clone();
        async move {
            all_started.wait().await;
            let _ = handled.send(incoming.message_id);
            Ok(())
        }
    };
    tokio::spawn(broker::consume(
        broker.clone(),
        spec.clone(),
        handler,
        shutdown.clone(),
    ));
    let publisher = Publisher::new(broker.clone());

    for n in 0..prefetch {
        publisher
            .publish(&event(&routing_key, &n.to_string()))
            .await
            .expect("confirmed");
    }

    for _ in 0..prefetch {
        tokio::time::timeout(std::time::Duration::from_secs(20), handled_rx.recv())
            .await
            .expect("every handler got past the barrier together")
            .expect("handled");
    }
    finish(&broker, &spec, &shutdown).await;
}
