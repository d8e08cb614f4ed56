//! What the broker does to us: connections closed from the server side,
//! queues that disappear, readiness while the broker is away, replays that
//! must not chase their own tail, and a topology declared again at every start.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use gocommerce_platform::broker::{
    self, Broker, HandlerError, Incoming, Outgoing, Publisher, QueueSpec,
};
use gocommerce_platform::{Readiness, Shutdown};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::helpers::{
    AMQP_URL, declare, finish, namespaced_broker, namespaced_broker_expiring_after, next,
    spawn_consumer, unique_spec,
};

fn event(broker: &Broker, routing_key: &str, body: &str) -> Outgoing {
    Outgoing {
        exchange: broker.events_exchange(),
        routing_key: routing_key.to_owned(),
        message_id: Uuid::new_v4().to_string(),
        content_type: "text/plain".to_owned(),
        payload: body.as_bytes().to_vec(),
        headers: HashMap::new(),
        mandatory: true,
    }
}

/// Closes this broker's connections from the server side, as a broker
/// restart or an operator would; how many it closed.
async fn close_from_server(broker: &Broker) -> usize {
    let wanted = broker.connection_name();
    tokio::task::spawn_blocking(move || {
        let listed = std::process::Command::new("rabbitmqctl")
            .args(["list_connections", "pid", "client_properties", "--silent"])
            .output()
            .expect("rabbitmqctl runs");
        assert!(listed.status.success(), "{listed:?}");
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        let mut closed = 0;
        for line in listed
            .lines()
            .filter(|line| line.contains(&format!("\"{wanted}\"")))
        {
            let pid = line.split_whitespace().next().expect("pid");
            let output = std::process::Command::new("rabbitmqctl")
                .args(["close_connection", pid, "test: server-side close"])
                .output()
                .expect("rabbitmqctl runs");
            assert!(output.status.success(), "{pid}: {output:?}");
            closed += 1;
        }
        closed
    })
    .await
    .expect("rabbitmqctl finished")
}

#[tokio::test]
async fn a_message_in_flight_when_the_server_closes_the_connection_is_delivered_again() {
    // Arrange: a handler that is still working when the connection goes.
    let (broker, _) = namespaced_broker();
    let shutdown = Shutdown::new();
    let (spec, routing_key) = unique_spec(3);
    declare(&broker, &spec).await;
    let (seen, mut deliveries) = mpsc::unbounded_channel::<Incoming>();
    let (started, mut handler_started) = mpsc::unbounded_channel::<()>();
    let slow = Arc::new(AtomicBool::new(true));
    let handler_slow = slow.clone();
    tokio::spawn(broker::consume(
        broker.clone(),
        spec.clone(),
        move |incoming: Incoming| {
            let seen = seen.clone();
            let started = started.clone();
            let slow = handler_slow.clone();
            async move {
                let _ = started.send(());
                if slow.swap(false, Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                let _ = seen.send(incoming);
                Ok::<(), HandlerError>(())
            }
        },
        shutdown.clone(),
    ));
    let publisher = Publisher::new(broker.clone());
    publisher
        .publish(&event(&broker, &routing_key, "in flight"))
        .await
        .expect("confirmed");
    tokio::time::timeout(Duration::from_secs(10), handler_started.recv())
        .await
        .expect("the handler started");

    // Act
    let closed = close_from_server(&broker).await;

    // Assert: its ack was lost with the connection, so it comes again.
    assert!(closed >= 1, "the test's connection was not found");
    let first = next(&mut deliveries).await;
    let second = next(&mut deliveries).await;
    assert_eq!(first.payload, b"in flight");
    assert_eq!(second.payload, b"in flight");
    assert_eq!(second.message_id, first.message_id);
    // And the consumer and publisher both work on the new connection.
    publisher
        .publish(&event(&broker, &routing_key, "after"))
        .await
        .expect("reconnects and confirms");
    assert_eq!(next(&mut deliveries).await.payload, b"after");
    assert!(broker.is_connected());
    finish(&broker, &spec, &shutdown).await;
    broker.close().await;
}

#[tokio::test]
async fn readiness_reports_whether_the_broker_is_reachable() {
    let down = Broker::new("amqp://guest:guest@127.0.0.1:1/%2f");
    let unready = Readiness::new(Shutdown::new());
    down.register_readiness(&unready);
    let up = Broker::new(AMQP_URL);
    let ready = Readiness::new(Shutdown::new());
    up.register_readiness(&ready);

    let report_down = unready.evaluate().await;
    let report_up = ready.evaluate().await;

    assert!(!report_down.ready);
    let check = &report_down.checks[0];
    assert_eq!(check.name, "broker");
    assert!(!check.ok);
    assert!(check.error.as_deref().is_some_and(|e| !e.is_empty()));
    assert!(report_up.ready, "{report_up:?}");
    assert!(up.is_connected());
    up.close().await;
}

#[tokio::test]
async fn a_wait_queue_that_disappeared_is_declared_again_and_the_retry_goes_on() {
    // Arrange: the consumer declared the topology, then the first tier's wait
    // queue is deleted behind its back (by hand, or expired).
    let broker = Broker::new(AMQP_URL);
    let shutdown = Shutdown::new();
    let (spec, routing_key) = unique_spec(3);
    declare(&broker, &spec).await;
    let mut deliveries = spawn_consumer(&broker, &spec, &shutdown, |_| {
        Err(HandlerError::Retry("still down".to_owned()))
    });
    let publisher = Publisher::new(broker.clone());
    let warm_up = Outgoing {
        exchange: broker.events_exchange(),
        routing_key: routing_key.clone(),
        message_id: Uuid::new_v4().to_string(),
        content_type: "text/plain".to_owned(),
        payload: b"warm up".to_vec(),
        headers: HashMap::new(),
        mandatory: true,
    };
    publisher.publish(&warm_up).await.expect("confirmed");
    for _ in 0..3 {
        next(&mut deliveries).await;
    }
    let first_tier = spec.all_queues(&broker)[2].clone();
    let channel = broker.channel().await.expect("channel");
    channel
        .queue_delete(first_tier.as_str().into(), Default::default())
        .await
        .expect("deleted");

    // Act
    publisher
        .publish(&Outgoing {
            message_id: Uuid::new_v4().to_string(),
            payload: b"retry me".to_vec(),
            ..warm_up
        })
        .await
        .expect("confirmed");

    // Assert: the second attempt comes through the re-declared tier.
    let attempts: Vec<u32> = vec![
        next(&mut deliveries).await.attempt,
        next(&mut deliveries).await.attempt,
        next(&mut deliveries).await.attempt,
    ];
    assert_eq!(attempts, vec![1, 2, 3]);
    finish(&broker, &spec, &shutdown).await;
}

#[tokio::test]
async fn a_replay_moves_only_the_messages_dead_when_it_started() {
    // Arrange: everything fails, at once to the dead letters.
    let broker = Broker::new(AMQP_URL);
    let shutdown = Shutdown::new();
    let (spec, routing_key) = unique_spec(1);
    declare(&broker, &spec).await;
    let handled = Arc::new(AtomicU32::new(0));
    let counter = handled.clone();
    let _deliveries = spawn_consumer(&broker, &spec, &shutdown, move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Err(HandlerError::Retry("still broken".to_owned()))
    });
    let publisher = Publisher::new(broker.clone());
    for body in ["one", "two"] {
        publisher
            .publish(&Outgoing {
                exchange: broker.events_exchange(),
                routing_key: routing_key.clone(),
                message_id: Uuid::new_v4().to_string(),
                content_type: "text/plain".to_owned(),
                payload: body.as_bytes().to_vec(),
                headers: HashMap::new(),
                mandatory: true,
            })
            .await
            .expect("confirmed");
    }
    wait_for_dead_letters(&broker, &spec, 2).await;

    // Act: the cause is not fixed, so the replayed messages die again at once.
    let replayed = broker::replay_dead_letters(&broker, &spec, 1000)
        .await
        .expect("replay");

    // Assert
    assert_eq!(replayed, 2);
    wait_for_dead_letters(&broker, &spec, 2).await;
    assert_eq!(handled.load(Ordering::SeqCst), 4);
    finish(&broker, &spec, &shutdown).await;
}

#[tokio::test]
async fn replays_go_on_finding_nothing_while_their_expired_queues_are_deleted() {
    // Arrange: RabbitMQ deletes a queue whose x-expires lease ran out at a
    // tick of its own, seconds later, and declaring the queue meanwhile does
    // not renew it, so a spec's expired queues can vanish between two steps
    // of a replay (a bind after the work queue's declaration, the count after
    // the dead-letter queue's). Twenty specs, each replayed over and over
    // from the end of its lease until past the broker's tick (about five
    // seconds after the queues were made, on RabbitMQ 3.10), make that likely.
    let (broker, _) = namespaced_broker_expiring_after("1");
    let specs: Vec<QueueSpec> = (0..20).map(|_| unique_spec(1).0).collect();
    for spec in &specs {
        declare(&broker, spec).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Act
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    let replays = futures::future::join_all(specs.iter().map(|spec| {
        let broker = broker.clone();
        async move {
            let mut outcomes = Vec::new();
            while tokio::time::Instant::now() < until {
                outcomes.push(broker::replay_dead_letters(&broker, spec, 10).await);
            }
            outcomes
        }
    }))
    .await;

    // Assert
    for outcome in replays.into_iter().flatten() {
        assert_eq!(outcome.expect("a replay that found nothing"), 0);
    }
    let shutdown = Shutdown::new();
    for spec in &specs {
        finish(&broker, spec, &shutdown).await;
    }
}

async fn wait_for_dead_letters(broker: &Broker, spec: &QueueSpec, count: u32) {
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the dead-letter queue never held {count} messages");
}

#[tokio::test]
async fn the_topology_is_declared_idempotently_with_quorum_work_and_dead_letter_queues() {
    let (broker, namespace) = namespaced_broker();
    let (spec, _) = unique_spec(3);

    // Declared at every start: twice must be as good as once.
    declare(&broker, &spec).await;
    declare(&broker, &spec).await;

    let listed = tokio::task::spawn_blocking(|| {
        std::process::Command::new("rabbitmqctl")
            .args(["list_queues", "name", "type", "durable", "--silent"])
            .output()
            .expect("rabbitmqctl runs")
    })
    .await
    .expect("listed");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let queue = |name: &str| -> Vec<String> {
        listed
            .lines()
            .map(|line| line.split_whitespace().map(str::to_owned).collect())
            .find(|fields: &Vec<String>| fields.first().is_some_and(|n| n == name))
            .unwrap_or_else(|| panic!("no queue {name} in {listed}"))
    };
    let work = spec.queue(&broker);
    assert!(work.starts_with(&namespace));
    assert_eq!(queue(&work)[1..], ["quorum", "true"]);
    assert_eq!(
        queue(&spec.dead_letter_queue(&broker))[1..],
        ["quorum", "true"]
    );
    for wait in &spec.all_queues(&broker)[2..] {
        assert_eq!(queue(wait)[2], "true", "{wait} is durable");
    }
    finish(&broker, &spec, &Shutdown::new()).await;
    broker.close().await;
}
