//! Refund processing through the task queue: RefundPayment records the
//! refund and enqueues a task in the same transaction; this consumer takes
//! the task, calls the processor, and records the outcome with its
//! `payment.refunded` event. A redelivered task finds the refund done and
//! does nothing, so a refund is paid out once. A refund whose task is gone
//! (dead-lettered while the database was away longer than the retry tiers
//! last, or lost with its queue) is queued again by [`run_sweeper`].

use std::time::Duration;

use gocommerce_platform::Shutdown;
use gocommerce_platform::broker::{HandlerError, Incoming, QueueSpec};
use gocommerce_platform::db::Db;
use gocommerce_platform::events;
use gocommerce_platform::outbox::{self, OutboxMessage};
use gocommerce_proto::common::v1::Money;
use gocommerce_proto::events::v1 as ev;
use uuid::Uuid;

use crate::db;
use crate::error::PaymentError;
use crate::processor::Processor;
use crate::service::SOURCE;

/// The routing key of refund tasks.
pub const TASK: &str = "payment.refund.requested";

pub fn queue() -> QueueSpec {
    QueueSpec {
        name: "payment.refunds".to_owned(),
        bindings: vec![TASK.to_owned()],
        unbind: Vec::new(),
        retry_delays: vec![
            Duration::from_secs(1),
            Duration::from_secs(10),
            Duration::from_secs(60),
        ],
        max_attempts: 5,
        prefetch: 8,
    }
}

/// The task message for a refund: its id, as text.
pub fn task(refund_id: Uuid) -> OutboxMessage {
    OutboxMessage {
        id: Uuid::now_v7(),
        routing_key: TASK.to_owned(),
        content_type: "text/plain".to_owned(),
        payload: refund_id.to_string().into_bytes(),
        mandatory: true,
        secret: false,
    }
}

/// How many stale refunds one sweep queues again at most.
const SWEEP_BATCH: i64 = 100;

/// Queues a task again, every `after` (at most a minute), for each refund
/// pending longer than `after`, until the shutdown signal. A refund whose
/// task is merely slow gets a second task, which finds it done.
pub async fn run_sweeper(db: Db, after: Duration, shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(after.min(Duration::from_secs(60))) => {}
            () = shutdown.wait() => return,
        }
        let swept = tokio::select! {
            swept = sweep(&db, after) => swept,
            () = shutdown.wait() => return,
        };
        match swept {
            Ok(0) => {}
            Ok(count) => tracing::warn!(count, "queued the tasks of refunds left pending again"),
            Err(error) => {
                tracing::warn!(%error, "failed to sweep pending refunds, trying again later")
            }
        }
    }
}

/// One sweep: the refunds and their tasks in one transaction.
#[tracing::instrument(skip_all, err)]
async fn sweep(db: &Db, after: Duration) -> Result<usize, PaymentError> {
    let mut tx = db.background().begin().await?;
    let stale = db::requeue_stale_refunds(&mut tx, after, SWEEP_BATCH).await?;
    for refund_id in &stale {
        outbox::enqueue(&mut tx, &task(*refund_id)).await?;
    }
    tx.commit().await?;
    Ok(stale.len())
}

pub async fn handle(db: Db, processor: Processor, message: Incoming) -> Result<(), HandlerError> {
    let refund_id = std::str::from_utf8(&message.payload)
        .ok()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| HandlerError::Reject("the task does not carry a refund id".to_owned()))?;
    process(&db, &processor, refund_id)
        .await
        .map_err(|e| match e {
            PaymentError::NotFound => HandlerError::Reject(format!("no refund {refund_id}")),
            other => HandlerError::Retry(other.to_string()),
        })
}

#[tracing::instrument(skip_all, fields(refund_id = %refund_id), err)]
async fn process(db: &Db, processor: &Processor, refund_id: Uuid) -> Result<(), PaymentError> {
    let mut tx = db.begin().await?;
    let (refund, _) = db::lock_refund(&mut tx, refund_id)
        .await?
        .ok_or(PaymentError::NotFound)?;
    if refund.status != "pending" {
        tracing::info!("refund already processed, ignoring the redelivery");
        return Ok(());
    }
    let reference = processor.refund(refund.id).await;
    let payment = db::complete_refund(&mut tx, &refund, &reference).await?;
    outbox::enqueue(
        &mut tx,
        &events::message(
            SOURCE,
            payment.id,
            ev::event_envelope::Payload::PaymentRefunded(ev::PaymentRefunded {
                payment_id: payment.id.to_string(),
                refund_id: refund.id.to_string(),
                order_id: payment.order_id.to_string(),
                user_id: payment.user_id.to_string(),
                amount: Some(Money {
                    amount: refund.amount,
                    currency: payment.currency.clone(),
                }),
                refunded_total: Some(Money {
                    amount: payment.refunded_amount,
                    currency: payment.currency.clone(),
                }),
                fully_refunded: payment.refunded_amount == payment.amount,
                reason: refund.reason.clone(),
            }),
        ),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(payment_id = %payment.id, status = payment.status, "refund processed");
    Ok(())
}
