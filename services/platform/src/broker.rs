//! RabbitMQ: one connection per process that is re-established with backoff
//! whenever it drops (lapin does not recover by itself), publishers that only
//! count a message as sent once the broker confirmed it and could route it,
//! and consumers with manual acks, bounded prefetch, retry tiers and a
//! dead-letter queue.
//!
//! Topology, declared idempotently by whoever uses it: a durable topic
//! exchange `gocommerce.events`; per consumer a quorum work queue bound to its
//! routing keys, one wait queue per retry tier whose TTL dead-letters back
//! into the work queue, and a quorum dead-letter queue `<queue>.dead` whose
//! messages carry the last failure in `x-last-error`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::Mutex;
use tracing::Instrument as _;

use crate::{Readiness, Shutdown, telemetry};

/// The topic exchange every domain event is published to.
pub const EVENTS_EXCHANGE: &str = "gocommerce.events";

const ATTEMPT_HEADER: &str = "x-attempt";
const LAST_ERROR_HEADER: &str = "x-last-error";
const ROUTING_KEY_HEADER: &str = "x-routing-key";
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker could not route the message to any queue")]
    Unroutable,
    #[error("the broker refused the message")]
    Nacked,
    #[error("the broker did not confirm the message")]
    NotConfirmed,
    #[error("the broker did not confirm within {} ms", .0.as_millis())]
    Timeout(Duration),
}

/// The process's connection to RabbitMQ, reconnected on demand.
#[derive(Clone)]
pub struct Broker {
    url: Arc<str>,
    namespace: Arc<str>,
    queue_expires: Option<Duration>,
    connection: Arc<Mutex<Option<Connection>>>,
    connected: Arc<AtomicBool>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("connected", &self.connected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker handle; nothing connects until a channel is needed.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.into(),
            namespace: "".into(),
            queue_expires: None,
            connection: Arc::default(),
            connected: Arc::default(),
        }
    }

    /// The broker of `AMQP_URL`, within `AMQP_NAMESPACE`: a prefix on every
    /// exchange and queue name, so several environments (or test runs) can
    /// share one RabbitMQ without seeing each other's messages. With
    /// `AMQP_QUEUE_EXPIRES_SECONDS`, unused queues disappear after that long,
    /// which is what throwaway environments want.
    pub fn from_config(config: &crate::config::CommonConfig) -> Self {
        Self {
            namespace: config.amqp_namespace.as_str().into(),
            queue_expires: config.amqp_queue_expires,
            ..Self::new(&config.amqp_url)
        }
    }

    /// The real name of a logical exchange or queue in this namespace.
    pub fn name(&self, logical: &str) -> String {
        if self.namespace.is_empty() {
            logical.to_owned()
        } else {
            format!("{}.{logical}", self.namespace)
        }
    }

    /// The events exchange of this namespace.
    pub fn events_exchange(&self) -> String {
        self.name(EVENTS_EXCHANGE)
    }

    /// The client-provided connection name: `gocommerce`, or
    /// `gocommerce/<namespace>` within a namespace.
    pub fn connection_name(&self) -> String {
        if self.namespace.is_empty() {
            "gocommerce".to_owned()
        } else {
            format!("gocommerce/{}", self.namespace)
        }
    }

    /// Registers a readiness check: ready while a connection is open (or can be opened).
    pub fn register_readiness(&self, readiness: &Readiness) {
        let broker = self.clone();
        readiness.add_check("broker", move || {
            let broker = broker.clone();
            Box::pin(async move { broker.channel().await.map(drop).map_err(|e| e.to_string()) })
        });
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// A new channel on the current connection, connecting first if the
    /// connection is missing or broken.
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref()
            && connection.status().connected()
        {
            match connection.create_channel().await {
                Ok(channel) => return Ok(channel),
                Err(error) => tracing::warn!(%error, "broker connection unusable, reconnecting"),
            }
        }
        self.connected.store(false, Ordering::Relaxed);
        // The name shows in the management UI and `rabbitmqctl list_connections`,
        // so an operator (or a test) can tell one environment's connections apart.
        let properties =
            ConnectionProperties::default().with_connection_name(self.connection_name().into());
        let connection = Connection::connect(&self.url, properties)
            .await
            .inspect_err(|error| tracing::warn!(%error, "cannot connect to the broker"))?;
        let channel = connection.create_channel().await?;
        tracing::info!("connected to the broker");
        *slot = Some(connection);
        self.connected.store(true, Ordering::Relaxed);
        Ok(channel)
    }

    /// Closes the connection (shutdown, or tests simulating an outage).
    pub async fn close(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            let _ = connection.close(200, "closing".into()).await;
        }
        self.connected.store(false, Ordering::Relaxed);
    }
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub message_id: String,
    pub content_type: String,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
    /// Whether some queue must take it (AMQP `mandatory`): if none does, the
    /// publish fails with [`BrokerError::Unroutable`]. Otherwise the broker
    /// drops a message nobody listens for and confirms it all the same.
    pub mandatory: bool,
}

/// Publishes with confirms on a channel of its own, re-opened after errors.
#[derive(Debug, Clone)]
pub struct Publisher {
    broker: Broker,
    channel: Arc<Mutex<Option<Channel>>>,
    confirm_timeout: Duration,
}

/// Longest wait for a batch's confirms, connecting included. A broker under
/// a memory or disk alarm blocks publishers without a word; the outbox
/// would otherwise wait with it for as long as the alarm lasts.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

impl Publisher {
    pub fn new(broker: Broker) -> Self {
        Self {
            broker,
            channel: Arc::default(),
            confirm_timeout: CONFIRM_TIMEOUT,
        }
    }

    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Publishes persistently and returns once the broker confirmed it. A
    /// mandatory message no queue would take is an error, not a success.
    #[tracing::instrument(skip_all, fields(routing_key = %message.routing_key, message_id = %message.message_id), err)]
    pub async fn publish(&self, message: &Outgoing) -> Result<(), BrokerError> {
        let mut outcomes = self.publish_all(std::slice::from_ref(message)).await?;
        outcomes.pop().unwrap_or(Err(BrokerError::NotConfirmed))
    }

    /// Publishes the messages in order, then waits for all their confirms
    /// together: one wait for the broker's disk instead of one per message.
    /// The outer error means the channel failed (nothing more can be known);
    /// otherwise each message has its own outcome, in the order given.
    pub async fn publish_all(
        &self,
        messages: &[Outgoing],
    ) -> Result<Vec<Result<(), BrokerError>>, BrokerError> {
        let result = tokio::time::timeout(self.confirm_timeout, self.try_publish_all(messages))
            .await
            .unwrap_or(Err(BrokerError::Timeout(self.confirm_timeout)));
        // The channel may be dead; the next publish opens a new one.
        let channel_failed = match &result {
            Err(BrokerError::Amqp(_) | BrokerError::Timeout(_)) => true,
            Err(_) => false,
            Ok(outcomes) => outcomes
                .iter()
                .any(|o| matches!(o, Err(BrokerError::Amqp(_)))),
        };
        if channel_failed {
            self.channel.lock().await.take();
        }
        result
    }

    async fn try_publish_all(
        &self,
        messages: &[Outgoing],
    ) -> Result<Vec<Result<(), BrokerError>>, BrokerError> {
        let channel = self.channel().await?;
        let mut confirms = Vec::with_capacity(messages.len());
        for message in messages {
            confirms.push(send(&channel, message).await?);
        }
        Ok(futures::future::join_all(confirms)
            .await
            .into_iter()
            .map(|confirmation| outcome(confirmation?))
            .collect())
    }

    /// The publishing channel (in confirm mode), opened if there is none.
    async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut slot = self.channel.lock().await;
        match slot.as_ref() {
            Some(channel) if channel.status().connected() => Ok(channel.clone()),
            _ => {
                let channel = self.broker.channel().await?;
                // Consumers declare the exchange too, but a service can publish
                // before any consumer of a fresh namespace has started, and a
                // publish to a missing exchange closes the channel.
                declare_events_exchange(&self.broker, &channel).await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                *slot = Some(channel.clone());
                Ok(channel)
            }
        }
    }
}

/// Sends one message persistently, mandatorily if it says so; the broker's
/// confirm arrives through the returned future.
async fn send(
    channel: &Channel,
    message: &Outgoing,
) -> Result<lapin::PublisherConfirm, BrokerError> {
    let mut headers = FieldTable::default();
    for (key, value) in &message.headers {
        headers.insert(
            ShortString::from(key.as_str()),
            AMQPValue::LongString(LongString::from(value.as_str())),
        );
    }
    let timestamp = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(message.content_type.as_str().into())
        .with_message_id(message.message_id.as_str().into())
        .with_type(message.routing_key.as_str().into())
        .with_timestamp(timestamp)
        .with_headers(headers);
    Ok(channel
        .basic_publish(
            message.exchange.as_str().into(),
            message.routing_key.as_str().into(),
            BasicPublishOptions {
                mandatory: message.mandatory,
                ..BasicPublishOptions::default()
            },
            &message.payload,
            properties,
        )
        .await?)
}

/// A confirm as an outcome: a message no queue would take is an error.
fn outcome(confirmation: Confirmation) -> Result<(), BrokerError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(BrokerError::Unroutable),
        Confirmation::Nack(_) => Err(BrokerError::Nacked),
        Confirmation::NotRequested => Err(BrokerError::NotConfirmed),
    }
}

/// A consumer's queues.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// The work queue, e.g. `notification.events`.
    pub name: String,
    /// Routing keys on the events exchange the queue is bound to.
    pub bindings: Vec<String>,
    /// Routing keys an earlier version bound and this one does not. Bindings
    /// of a durable queue outlive the process that made them, so declaring
    /// removes these; removing one that is not there is no error.
    pub unbind: Vec<String>,
    /// Delay of each retry tier; attempt n waits `retry_delays[min(n-1, last)]`.
    pub retry_delays: Vec<Duration>,
    /// Attempts before a message is dead-lettered.
    pub max_attempts: u32,
    /// Unacknowledged messages in flight per consumer, all handled at once.
    pub prefetch: u16,
}

impl QueueSpec {
    /// The work queue's real name in the broker's namespace.
    pub fn queue(&self, broker: &Broker) -> String {
        broker.name(&self.name)
    }

    /// The dead-letter queue's real name in the broker's namespace.
    pub fn dead_letter_queue(&self, broker: &Broker) -> String {
        format!("{}.dead", self.queue(broker))
    }

    fn wait_queue(&self, broker: &Broker, tier: usize) -> String {
        format!("{}.retry.{}", self.queue(broker), tier + 1)
    }

    /// Every queue of the spec, work queue first.
    pub fn all_queues(&self, broker: &Broker) -> Vec<String> {
        let mut queues = vec![self.queue(broker), self.dead_letter_queue(broker)];
        queues.extend((0..self.retry_delays.len()).map(|tier| self.wait_queue(broker, tier)));
        queues
    }

    /// Declares the exchange, the work queue, its bindings (and removes the
    /// retired ones), the wait queues and the dead-letter queue, on a channel
    /// of its own. Idempotent. Returns how many messages the dead-letter queue
    /// holds.
    ///
    /// With x-expires, a queue whose lease ran out is deleted at a later tick
    /// of the broker's, and declaring it meanwhile does not renew it, so it
    /// can vanish between two steps (a bind then finds no queue, and the
    /// broker closes the channel). Declared again, the queues are new and
    /// stay, so the declaration starts over on a new channel.
    pub async fn declare(&self, broker: &Broker) -> Result<u32, BrokerError> {
        let mut attempt = 1;
        loop {
            let channel = broker.channel().await?;
            match self.declare_on(broker, &channel).await {
                Err(BrokerError::Amqp(error)) if is_not_found(&error) && attempt < 3 => {
                    tracing::debug!(queue = %self.name, %error, "a queue vanished while declared, declaring again");
                    attempt += 1;
                }
                declared => return declared,
            }
        }
    }

    async fn declare_on(&self, broker: &Broker, channel: &Channel) -> Result<u32, BrokerError> {
        declare_events_exchange(broker, channel).await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let mut base = FieldTable::default();
        if let Some(expires) = broker.queue_expires {
            let millis = i64::try_from(expires.as_millis()).unwrap_or(i64::MAX);
            base.insert("x-expires".into(), AMQPValue::LongLongInt(millis));
        }
        let mut quorum = base.clone();
        quorum.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        let work_queue = self.queue(broker);
        channel
            .queue_declare(work_queue.as_str().into(), durable, quorum.clone())
            .await?;
        for key in &self.bindings {
            channel
                .queue_bind(
                    work_queue.as_str().into(),
                    broker.events_exchange().as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        for key in &self.unbind {
            channel
                .queue_unbind(
                    work_queue.as_str().into(),
                    broker.events_exchange().as_str().into(),
                    key.as_str().into(),
                    FieldTable::default(),
                )
                .await?;
        }
        for (tier, delay) in self.retry_delays.iter().enumerate() {
            let mut arguments = base.clone();
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            arguments.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(work_queue.as_str().into()),
            );
            channel
                .queue_declare(
                    self.wait_queue(broker, tier).as_str().into(),
                    durable,
                    arguments,
                )
                .await?;
        }
        let dead = channel
            .queue_declare(
                self.dead_letter_queue(broker).as_str().into(),
                durable,
                quorum,
            )
            .await?;
        Ok(dead.message_count())
    }
}

/// Declares the events exchange of the broker's namespace. Idempotent.
pub async fn declare_events_exchange(
    broker: &Broker,
    channel: &Channel,
) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            broker.events_exchange().as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// A delivered message as a handler sees it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The routing key it was first published with (the event type).
    pub routing_key: String,
    pub message_id: String,
    pub payload: Vec<u8>,
    /// 1 for the first delivery through the retry tiers.
    pub attempt: u32,
    /// The broker delivered it before and got no ack (a consumer stopped or
    /// lost its channel while handling it).
    pub redelivered: bool,
}

/// How a handler failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandlerError {
    /// Worth another try later (a dependency is down).
    #[error("{0}")]
    Retry(String),
    /// Will never succeed (a malformed message): straight to the dead letters.
    #[error("{0}")]
    Reject(String),
}

/// Consumes `spec`'s work queue until shutdown, reconnecting with backoff
/// whenever the connection drops. Each message is acked only after the
/// handler succeeded or the message was safely moved to a wait or dead-letter
/// queue, so a crash at any point redelivers it rather than losing it.
pub async fn consume<H, F>(broker: Broker, spec: QueueSpec, handler: H, shutdown: Shutdown)
where
    H: Fn(Incoming) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), HandlerError>> + Send,
{
    let publisher = Publisher::new(broker.clone());
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_triggered() {
        // consume_once watches the signal itself, so that the messages
        // being handled when it trips are finished and acked.
        let outcome = consume_once(&broker, &spec, &handler, &publisher, &shutdown).await;
        match outcome {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(error) => {
                tracing::warn!(queue = %spec.name, %error, retry_in_ms = backoff.as_millis(), "consumer cannot use the broker, retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.wait() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn consume_once<H, F>(
    broker: &Broker,
    spec: &QueueSpec,
    handler: &H,
    publisher: &Publisher,
    shutdown: &Shutdown,
) -> Result<(), BrokerError>
where
    H: Fn(Incoming) -> F,
    F: Future<Output = Result<(), HandlerError>>,
{
    let subscribe = async {
        spec.declare(broker).await?;
        let channel = broker.channel().await?;
        channel
            .basic_qos(spec.prefetch, BasicQosOptions::default())
            .await?;
        let deliveries = channel
            .basic_consume(
                spec.queue(broker).as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, BrokerError>((channel, deliveries))
    };
    // The channel is held while consuming: dropping its last handle closes it.
    let (_channel, mut deliveries) = tokio::select! {
        subscribed = subscribe => subscribed?,
        () = shutdown.wait() => return Ok(()),
    };
    tracing::info!(queue = %spec.name, "consuming");
    // Up to `prefetch` deliveries are handled at once: handlers wait on
    // databases, peers and SMTP, so one at a time would cap a consumer at
    // the inverse of one message's latency. Each is acked on its own.
    let limit = usize::from(spec.prefetch.max(1));
    let mut in_flight = futures::stream::FuturesUnordered::new();
    // Set when no more deliveries are taken. Handlers already running finish
    // either way; after a break their acks fail and the broker delivers
    // those messages again.
    let mut stopped: Option<Stop> = None;
    loop {
        tokio::select! {
            next = deliveries.next(), if stopped.is_none() && in_flight.len() < limit => match next {
                Some(Ok(delivery)) => in_flight.push(settle(
                    delivery, broker, spec, handler, publisher,
                )),
                Some(Err(error)) => stopped = Some(Stop::Broken(error.into())),
                // The broker cancelled us or the connection closed.
                None => stopped = Some(Stop::Broken(BrokerError::NotConfirmed)),
            },
            Some(settled) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(error) = settled
                    && !matches!(stopped, Some(Stop::Broken(_)))
                {
                    stopped = Some(Stop::Broken(error));
                }
            },
            () = shutdown.wait(), if stopped.is_none() => stopped = Some(Stop::Shutdown),
        }
        if in_flight.is_empty() {
            match stopped.take() {
                Some(Stop::Shutdown) => return Ok(()),
                Some(Stop::Broken(error)) => return Err(error),
                None => {}
            }
        }
    }
}

/// The reason a panicking handler gives its message.
fn panicked(panic: &(dyn std::any::Any + Send)) -> String {
    let said = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    format!("the handler panicked: {said}")
}

/// Why a consumer stopped taking deliveries.
enum Stop {
    Shutdown,
    Broken(BrokerError),
}

/// Runs the handler on one delivery, then acks it, or moves it to a wait or
/// the dead-letter queue (or, if that fails, puts it back).
async fn settle<H, F>(
    delivery: lapin::message::Delivery,
    broker: &Broker,
    spec: &QueueSpec,
    handler: &H,
    publisher: &Publisher,
) -> Result<(), BrokerError>
where
    H: Fn(Incoming) -> F,
    F: Future<Output = Result<(), HandlerError>>,
{
    let incoming = incoming(&delivery);
    let span = tracing::info_span!(
        "consume",
        otel.name = %format_args!("{} receive", spec.name),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.destination.name = %spec.name,
        messaging.message.id = %incoming.message_id,
        routing_key = %incoming.routing_key,
        attempt = incoming.attempt,
    );
    telemetry::set_parent_from_map(&span, &string_headers(&delivery.properties));
    // Instrumented rather than entered: many deliveries are in flight on
    // one task, and an entered span would leak into the others' polls.
    async move {
        // A handler that panics would take the consumer down with it, and
        // the process would stay ready while consuming nothing; the message
        // that caused it would come back after every restart. It is
        // dead-lettered instead, with the panic as its reason.
        let result = std::panic::AssertUnwindSafe(handler(incoming.clone()))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(HandlerError::Reject(panicked(panic.as_ref()))));
        match result {
            Ok(()) => {
                delivery.acker.ack(BasicAckOptions::default()).await?;
            }
            Err(error) => {
                let (target, attempt) = match &error {
                    HandlerError::Retry(_) if incoming.attempt < spec.max_attempts => {
                        let tier = usize::try_from(incoming.attempt - 1)
                            .unwrap_or(usize::MAX)
                            .min(spec.retry_delays.len().saturating_sub(1));
                        (spec.wait_queue(broker, tier), incoming.attempt + 1)
                    }
                    _ => (spec.dead_letter_queue(broker), incoming.attempt),
                };
                let dead = target == spec.dead_letter_queue(broker);
                if dead {
                    tracing::error!(queue = %spec.name, %error, attempt, "message dead-lettered");
                } else {
                    tracing::warn!(queue = %spec.name, %error, attempt, "message failed, retrying later");
                }
                let mut headers = string_headers(&delivery.properties);
                headers.insert(ATTEMPT_HEADER.to_owned(), attempt.to_string());
                headers.insert(LAST_ERROR_HEADER.to_owned(), error.to_string());
                headers.insert(ROUTING_KEY_HEADER.to_owned(), incoming.routing_key.clone());
                let outgoing = Outgoing {
                    exchange: String::new(),
                    routing_key: target,
                    message_id: incoming.message_id.clone(),
                    content_type: content_type(&delivery.properties),
                    payload: delivery.data.clone(),
                    headers,
                    mandatory: true,
                };
                let mut moved = publisher.publish(&outgoing).await;
                if matches!(moved, Err(BrokerError::Unroutable)) {
                    // The wait or dead-letter queue is gone (deleted by hand or
                    // expired through x-expires): declare it again, then retry.
                    spec.declare(broker).await?;
                    moved = publisher.publish(&outgoing).await;
                }
                match moved {
                    Ok(()) => {
                        delivery.acker.ack(BasicAckOptions::default()).await?;
                    }
                    Err(move_error) => {
                        // Not moved: put it back rather than lose it.
                        tracing::warn!(%move_error, "cannot move the failed message, requeueing it");
                        delivery
                            .acker
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..BasicNackOptions::default()
                            })
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Moves up to `limit` messages from `spec`'s dead-letter queue back to its
/// work queue with a fresh attempt count. Returns how many moved.
#[tracing::instrument(skip_all, fields(queue = %spec.name, limit), err)]
pub async fn replay_dead_letters(
    broker: &Broker,
    spec: &QueueSpec,
    limit: u32,
) -> Result<u32, BrokerError> {
    // Only what is dead already: a replayed message that fails again and
    // comes back during the replay is not moved a second time. The count
    // comes from the declaration itself, not from a passive declare after
    // it, between which an expired queue could vanish (see `declare`).
    let waiting = spec.declare(broker).await?;
    let channel = broker.channel().await?;
    let limit = limit.min(waiting);
    let publisher = Publisher::new(broker.clone());
    let mut moved = 0;
    while moved < limit {
        let got = channel
            .basic_get(
                spec.dead_letter_queue(broker).as_str().into(),
                BasicGetOptions::default(),
            )
            .await;
        let message = match got {
            Ok(Some(message)) => message,
            Ok(None) => break,
            // Expired since it was declared, with whatever it held.
            Err(error) if is_not_found(&error) => break,
            Err(error) => return Err(error.into()),
        };
        let delivery = message.delivery;
        let mut headers = string_headers(&delivery.properties);
        headers.insert(ATTEMPT_HEADER.to_owned(), "1".to_owned());
        let published = publisher
            .publish(&Outgoing {
                exchange: String::new(),
                routing_key: spec.queue(broker),
                message_id: delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                content_type: content_type(&delivery.properties),
                payload: delivery.data.clone(),
                headers,
                mandatory: true,
            })
            .await;
        if let Err(error) = published {
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await?;
            return Err(error);
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
        moved += 1;
    }
    Ok(moved)
}

/// Whether the broker answered that the queue (or exchange) does not exist.
fn is_not_found(error: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

fn incoming(delivery: &lapin::message::Delivery) -> Incoming {
    let headers = string_headers(&delivery.properties);
    let attempt = headers
        .get(ATTEMPT_HEADER)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // After a retry the routing key is the work queue's; the header keeps the original.
    let routing_key = headers
        .get(ROUTING_KEY_HEADER)
        .cloned()
        .unwrap_or_else(|| delivery.routing_key.to_string());
    Incoming {
        routing_key,
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        payload: delivery.data.clone(),
        attempt,
        redelivered: delivery.redelivered,
    }
}

fn content_type(properties: &BasicProperties) -> String {
    properties.content_type().as_ref().map_or_else(
        || "application/octet-stream".to_owned(),
        ToString::to_string,
    )
}

/// The string-valued headers of a message (trace context, attempt, errors).
fn string_headers(properties: &BasicProperties) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Some(headers) = properties.headers() {
        for (key, value) in headers.inner() {
            let value = match value {
                AMQPValue::LongString(s) => s.to_string(),
                AMQPValue::ShortString(s) => s.to_string(),
                _ => continue,
            };
            map.insert(key.to_string(), value);
        }
    }
    map
}
