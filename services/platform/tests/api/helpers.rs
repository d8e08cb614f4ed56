//! Unique queue names, a message collector, fresh databases.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gocommerce_platform::Shutdown;
use gocommerce_platform::broker::{self, Broker, HandlerError, Incoming, QueueSpec};
use gocommerce_platform::config::CommonConfig;
use gocommerce_platform::testing::{ADMIN_URL, DropDatabase};
use tokio::sync::mpsc;
use uuid::Uuid;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A spec whose queue and routing key no other test uses.
pub fn unique_spec(max_attempts: u32) -> (QueueSpec, String) {
    let id = Uuid::new_v4().simple().to_string();
    let routing_key = format!("test.{id}");
    let spec = QueueSpec {
        name: format!("test.{id}"),
        bindings: vec![routing_key.clone()],
        unbind: Vec::new(),
        retry_delays: vec![Duration::from_millis(50), Duration::from_millis(100)],
        max_attempts,
        prefetch: 10,
    };
    (spec, routing_key)
}

/// Starts a consumer whose handler answers with `outcome(attempt)` and
/// reports every delivery it sees.
pub fn spawn_consumer(
    broker: &Broker,
    spec: &QueueSpec,
    shutdown: &Shutdown,
    outcome: impl Fn(&Incoming) -> Result<(), HandlerError> + Send + Sync + 'static,
) -> mpsc::UnboundedReceiver<Incoming> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let outcome = Arc::new(outcome);
    let handler = move |incoming: Incoming| {
        let sender = sender.clone();
        let outcome = outcome.clone();
        async move {
            let result = outcome(&incoming);
            let _ = sender.send(incoming);
            result
        }
    };
    tokio::spawn(broker::consume(
        broker.clone(),
        spec.clone(),
        handler,
        shutdown.clone(),
    ));
    receiver
}

/// The next delivery, or a panic after ten seconds.
pub async fn next(receiver: &mut mpsc::UnboundedReceiver<Incoming>) -> Incoming {
    tokio::time::timeout(Duration::from_secs(10), receiver.recv())
        .await
        .expect("a delivery within ten seconds")
        .expect("the consumer is running")
}

/// Declares the spec's queues (as the consumer would) before publishing.
pub async fn declare(broker: &Broker, spec: &QueueSpec) {
    spec.declare(broker).await.expect("topology");
}

/// A broker whose events exchange is declared, with no queue of the
/// caller's bound to it.
pub async fn events_exchange() -> Broker {
    let broker = Broker::new(AMQP_URL);
    let channel = broker.channel().await.expect("channel");
    gocommerce_platform::broker::declare_events_exchange(&broker, &channel)
        .await
        .expect("exchange");
    broker
}

/// A broker in a namespace of its own, so its connection can be told apart
/// from every other test's (its name is `gocommerce/<namespace>`) and nothing
/// in it exists yet.
pub fn namespaced_broker() -> (Broker, String) {
    namespaced_broker_expiring_after("120")
}

/// A [`namespaced_broker`] whose queues expire after `seconds` unused.
pub fn namespaced_broker_expiring_after(seconds: &str) -> (Broker, String) {
    let namespace = format!("test-{}", Uuid::new_v4().simple());
    let env: HashMap<String, String> = HashMap::from([
        ("AMQP_URL".to_owned(), AMQP_URL.to_owned()),
        ("AMQP_NAMESPACE".to_owned(), namespace.clone()),
        ("AMQP_QUEUE_EXPIRES_SECONDS".to_owned(), seconds.to_owned()),
    ]);
    let config = CommonConfig::from_env(&env).expect("config");
    (Broker::from_config(&config), namespace)
}

/// A fresh database with an outbox table, and the guard that drops it.
pub async fn outbox_database() -> (sqlx::PgPool, DropDatabase) {
    let name = format!("gct_platform_{}", Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(ADMIN_URL).await.expect("postgres");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&admin)
        .await
        .expect("create database");
    let pool = sqlx::PgPool::connect(&format!("postgres://postgres@127.0.0.1:5432/{name}"))
        .await
        .expect("connect");
    sqlx::raw_sql(
        "CREATE TABLE outbox (
            id uuid PRIMARY KEY, routing_key text NOT NULL, content_type text NOT NULL,
            payload bytea NOT NULL, headers jsonb NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz,
            attempts integer NOT NULL DEFAULT 0, last_error text,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            mandatory boolean NOT NULL DEFAULT true,
            secret boolean NOT NULL DEFAULT false)",
    )
    .execute(&pool)
    .await
    .expect("outbox table");
    (pool, DropDatabase(name))
}

/// Stops the test's consumer and deletes its queues, so runs leave nothing behind.
pub async fn finish(broker: &Broker, spec: &QueueSpec, shutdown: &Shutdown) {
    shutdown.trigger();
    let channel = broker.channel().await.expect("channel");
    for queue in spec.all_queues(broker) {
        let _ = channel
            .queue_delete(
                queue.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    }
}

/// A queue of its own bound to a fresh routing key, with a consumer that
/// takes every message and hands it over on `deliveries`.
pub struct Subscribed {
    pub broker: Broker,
    pub shutdown: Shutdown,
    pub spec: QueueSpec,
    pub routing_key: String,
    pub deliveries: mpsc::UnboundedReceiver<Incoming>,
}

pub async fn subscribed() -> Subscribed {
    let broker = Broker::new(AMQP_URL);
    let shutdown = Shutdown::new();
    let (spec, routing_key) = unique_spec(3);
    declare(&broker, &spec).await;
    let deliveries = spawn_consumer(&broker, &spec, &shutdown, |_| Ok(()));
    Subscribed {
        broker,
        shutdown,
        spec,
        routing_key,
        deliveries,
    }
}

impl Subscribed {
    pub async fn next(&mut self) -> Incoming {
        next(&mut self.deliveries).await
    }

    /// The message ids of the next `count` deliveries, in the order they
    /// came, after checking that no other delivery follows within 300 ms:
    /// an event that went out twice fails the test here.
    pub async fn exactly(&mut self, count: usize) -> Vec<String> {
        let mut delivered = Vec::with_capacity(count);
        for _ in 0..count {
            delivered.push(self.next().await.message_id);
        }
        let extra = tokio::time::timeout(Duration::from_millis(300), self.next()).await;
        assert_eq!(
            extra.ok().map(|m| m.message_id),
            None,
            "an event went out twice"
        );
        delivered
    }

    pub async fn finish(&self) {
        finish(&self.broker, &self.spec, &self.shutdown).await;
    }
}

/// A broker address that accepts connections and never answers, as a broker
/// blocked by a resource alarm looks to a client.
pub async fn silent_broker() -> Broker {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Broker::new(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
}
