//! Refund processing through the task queue: RefundPayment records the
//! refund and enqueues a task in the same transaction; this consumer takes
//! the task, calls the processor, and records the outcome with its
//! `payment.refunded` event. A redelivered task finds the refund done and
//! does nothing, so a refund is paid out once.

use std::time::Duration;

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
    let reference = processor.refund().await;
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
