//! Every query of the payment service; Postgres error codes become domain
//! errors here and nowhere else.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use gocommerce_platform::db::{codes, constraint, sqlstate};
use gocommerce_platform::outbox::{self, OutboxMessage};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Status;
use crate::error::PaymentError;
use crate::processor::Outcome;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub method: String,
    pub status: String,
    pub processor_reference: Option<String>,
    pub failure_reason: Option<String>,
    pub attempts: i32,
    pub refunded_amount: i64,
    pub pending_refund_amount: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PaymentRow {
    pub fn status(&self) -> Status {
        Status::parse(&self.status)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundRow {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub amount: i64,
    pub status: String,
    pub reason: String,
    pub processor_reference: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const PAYMENT: &str = "id, order_id, user_id, amount, currency, method, status, processor_reference, \
     failure_reason, attempts, refunded_amount, pending_refund_amount, created_at, updated_at";
const REFUND: &str = "id, payment_id, amount, status, reason, processor_reference, failure_reason, created_at, updated_at";

pub struct NewPayment<'a> {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub currency: &'a str,
    pub method: &'a str,
}

/// Inserts a pending payment, or returns the order's existing one: the unique
/// order id makes concurrent charges of one order meet on a single row.
#[tracing::instrument(skip_all, fields(order_id = %new.order_id), err)]
pub async fn insert_or_get(
    conn: &mut PgConnection,
    new: &NewPayment<'_>,
) -> Result<(PaymentRow, bool), PaymentError> {
    let inserted: Option<PaymentRow> = sqlx::query_as(&format!(
        "INSERT INTO payments (id, order_id, user_id, amount, currency, method, status) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending') ON CONFLICT (order_id) DO NOTHING RETURNING {PAYMENT}"
    ))
    .bind(Uuid::now_v7())
    .bind(new.order_id)
    .bind(new.user_id)
    .bind(new.amount)
    .bind(new.currency)
    .bind(new.method)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = inserted {
        return Ok((row, true));
    }
    let existing = find_by_order(conn, new.order_id)
        .await?
        .ok_or(PaymentError::NotFound)?;
    Ok((existing, false))
}

/// Claims a pending payment whose worker stopped answering, so a retry
/// finishes what a crash interrupted. None when someone else holds it.
#[tracing::instrument(skip_all, fields(payment_id = %id), err)]
pub async fn claim_stale(
    conn: &mut PgConnection,
    id: Uuid,
    stale_secs: f64,
) -> Result<Option<PaymentRow>, PaymentError> {
    Ok(sqlx::query_as(&format!(
        "UPDATE payments SET updated_at = now() WHERE id = $1 AND status = 'pending' \
         AND updated_at < now() - make_interval(secs => $2) RETURNING {PAYMENT}"
    ))
    .bind(id)
    .bind(stale_secs)
    .fetch_optional(conn)
    .await?)
}

/// Records the processor's answer on a still-pending payment, with its
/// event, in one statement: the event is written exactly when the answer is.
#[tracing::instrument(skip_all, fields(payment_id = %id), err)]
pub async fn finish_charge(
    conn: &mut PgConnection,
    id: Uuid,
    outcome: &Outcome,
    attempts: u32,
    event: &OutboxMessage,
) -> Result<Option<PaymentRow>, PaymentError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH changed AS ( \
               UPDATE payments SET status = $2, processor_reference = $3, failure_reason = $4, \
                 attempts = attempts + $5, updated_at = now() \
               WHERE id = $1 AND status = 'pending' RETURNING {PAYMENT}), \
             {} \
             SELECT changed.*, {} FROM changed",
            outbox::queued(Some("changed"), 6),
            outbox::QUEUED
        )
    });
    let (status, reference, reason) = match outcome {
        Outcome::Captured { reference } => (Status::Succeeded, Some(reference.as_str()), None),
        Outcome::Declined { reason } => (Status::Declined, None, Some(reason.as_str())),
        Outcome::Failed { reason } => (Status::Failed, None, Some(reason.as_str())),
    };
    let query = sqlx::query_as(&SQL)
        .bind(id)
        .bind(status.as_str())
        .bind(reference)
        .bind(reason)
        .bind(i32::try_from(attempts).unwrap_or(i32::MAX));
    Ok(outbox::bind(query, event).fetch_optional(conn).await?)
}

#[tracing::instrument(skip_all, fields(order_id = %order_id), err)]
pub async fn find_by_order(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<PaymentRow>, PaymentError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PAYMENT} FROM payments WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(conn)
    .await?)
}

#[tracing::instrument(skip_all, fields(order_id = %order_id), err)]
pub async fn lock_by_order(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<PaymentRow>, PaymentError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PAYMENT} FROM payments WHERE order_id = $1 FOR UPDATE"
    ))
    .bind(order_id)
    .fetch_optional(conn)
    .await?)
}

#[tracing::instrument(skip_all, fields(payment_id = %payment_id), err)]
pub async fn refunds_of(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<Vec<RefundRow>, PaymentError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {REFUND} FROM refunds WHERE payment_id = $1 ORDER BY created_at, id"
    ))
    .bind(payment_id)
    .fetch_all(conn)
    .await?)
}

#[tracing::instrument(skip_all, fields(refund_id = %id), err)]
pub async fn find_refund(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<RefundRow>, PaymentError> {
    Ok(
        sqlx::query_as(&format!("SELECT {REFUND} FROM refunds WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Records a pending refund and reserves its amount on the payment. The
/// CHECK on the payment refuses any refund beyond the capture, even when two
/// requests race.
///
/// A reused refund id is the caller's mistake, recorded at INFO (what is
/// internal is logged at ERROR where the gRPC answer is made).
#[tracing::instrument(skip_all, fields(refund_id = %id, payment_id = %payment.id), err(level = "info"))]
pub async fn insert_refund(
    conn: &mut PgConnection,
    id: Uuid,
    payment: &PaymentRow,
    amount: i64,
    reason: &str,
) -> Result<(RefundRow, PaymentRow), PaymentError> {
    let refund: RefundRow = sqlx::query_as(&format!(
        "INSERT INTO refunds (id, payment_id, amount, status, reason) VALUES ($1, $2, $3, 'pending', $4) \
         RETURNING {REFUND}"
    ))
    .bind(id)
    .bind(payment.id)
    .bind(amount)
    .bind(reason)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| match sqlstate(&e).as_deref() {
        Some(codes::UNIQUE_VIOLATION) => {
            PaymentError::FailedPrecondition("refund_id: already used for another refund".to_owned())
        }
        _ => PaymentError::Database(e),
    })?;
    let payment: PaymentRow = sqlx::query_as(&format!(
        "UPDATE payments SET pending_refund_amount = pending_refund_amount + $2, \
         status = 'refund_pending', updated_at = now() WHERE id = $1 RETURNING {PAYMENT}"
    ))
    .bind(payment.id)
    .bind(amount)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| {
        if constraint(&e) == Some("payments_refunds_within_capture") {
            PaymentError::FailedPrecondition("amount: exceeds what remains to refund".to_owned())
        } else {
            PaymentError::Database(e)
        }
    })?;
    Ok((refund, payment))
}

/// A pending refund with its payment, both locked for processing.
#[tracing::instrument(skip_all, fields(refund_id = %id), err)]
pub async fn lock_refund(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(RefundRow, PaymentRow)>, PaymentError> {
    let Some(refund): Option<RefundRow> = sqlx::query_as(&format!(
        "SELECT {REFUND} FROM refunds WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let payment: PaymentRow = sqlx::query_as(&format!(
        "SELECT {PAYMENT} FROM payments WHERE id = $1 FOR UPDATE"
    ))
    .bind(refund.payment_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some((refund, payment)))
}

/// Marks up to `limit` refunds pending for longer than `after` (since they
/// were made or last queued again) as queued again now, and returns them;
/// refunds a worker holds are skipped.
#[tracing::instrument(skip_all, err)]
pub async fn requeue_stale_refunds(
    conn: &mut PgConnection,
    after: std::time::Duration,
    limit: i64,
) -> Result<Vec<Uuid>, PaymentError> {
    Ok(sqlx::query_scalar(
        "UPDATE refunds SET requeued_at = now() WHERE id IN ( \
           SELECT id FROM refunds \
           WHERE status = 'pending' \
             AND COALESCE(requeued_at, created_at) < now() - make_interval(secs => $1) \
           ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING id",
    )
    .bind(after.as_secs_f64())
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Marks a refund done and moves its amount from pending to refunded.
#[tracing::instrument(skip_all, fields(refund_id = %refund.id), err)]
pub async fn complete_refund(
    conn: &mut PgConnection,
    refund: &RefundRow,
    reference: &str,
) -> Result<PaymentRow, PaymentError> {
    sqlx::query(
        "UPDATE refunds SET status = 'succeeded', processor_reference = $2, updated_at = now() WHERE id = $1",
    )
    .bind(refund.id)
    .bind(reference)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_as(&format!(
        "UPDATE payments SET refunded_amount = refunded_amount + $2, \
           pending_refund_amount = pending_refund_amount - $2, \
           status = CASE \
             WHEN refunded_amount + $2 = amount THEN 'refunded' \
             WHEN pending_refund_amount - $2 > 0 THEN 'refund_pending' \
             ELSE 'partially_refunded' END, \
           updated_at = now() \
         WHERE id = $1 RETURNING {PAYMENT}"
    ))
    .bind(refund.payment_id)
    .bind(refund.amount)
    .fetch_one(conn)
    .await?)
}
