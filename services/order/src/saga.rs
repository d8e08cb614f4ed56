//! The placement saga: reserve stock, charge, commit the reservation, and on
//! a refusal release the stock and cancel. Each step is idempotent on the
//! other side (keyed by the order id) and recorded here before the next one
//! (a captured charge with PAID: the payment service keeps it and answers a
//! repeated charge with the same payment), so it can be repeated after a
//! timeout or a crash. A step that fails transiently schedules the order for
//! later; the recovery loop picks up every order whose time has come,
//! including those a crashed process left behind once their lease ran out.
//!
//! The order is never both cancelled and charged: a cancellation compensates
//! only until the charge has started (`charge_started`, written with
//! RESERVED) and is refunded once the order is PAID after that, and an
//! unknown charge outcome (a timeout) is asked again rather than taken for a
//! failure.

use std::time::Duration;

use gocommerce_platform::db::Db;
use gocommerce_proto::common::v1::Money;
use gocommerce_proto::payment::v1 as payment_pb;
use gocommerce_proto::payment::v1::payment_service_client::PaymentServiceClient;
use gocommerce_proto::product::v1 as product_pb;
use gocommerce_proto::product::v1::product_service_client::ProductServiceClient;
use tonic::Code;
use uuid::Uuid;

use crate::convert;
use crate::db::{self, Changes, ItemRow, OrderRow};
use crate::domain::Status;
use crate::error::OrderError;

use gocommerce_platform::grpc::Traced;

/// The actor of the saga's own transitions in the order history.
pub const SYSTEM: &str = "system";

const MAX_STEPS: usize = 12;
const MAX_RETRY_DELAY_SECS: f64 = 5.0;

#[derive(Debug, Clone)]
pub struct Saga {
    pub db: Db,
    pub product: ProductServiceClient<Traced>,
    pub payment: PaymentServiceClient<Traced>,
    pub step_timeout: Duration,
    pub lease: Duration,
}

enum Next {
    /// Another step may be due; the order must be read again.
    Continue,
    /// Another step may be due; the step's own write returned the order as
    /// it now is, so it is not read again.
    With(Box<OrderRow>),
    /// Nothing more to do now; the step changed the order.
    Stop,
    /// Nothing more to do now, and the order is as the step found it.
    Done,
}

/// Codes after which the outcome of a call is unknown or may change: ask again.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Internal
    )
}

impl Saga {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.step_timeout);
        request
    }

    /// Drives the order as far as it can go now and returns it.
    #[tracing::instrument(skip_all, fields(order_id = %id), err)]
    pub async fn drive(&self, id: Uuid) -> Result<OrderRow, OrderError> {
        self.drive_known(id, None, None).await
    }

    /// Drives an order its caller has just written: the row and the items
    /// it holds are not read again.
    #[tracing::instrument(skip_all, fields(order_id = %order.id), err)]
    pub async fn drive_placed(
        &self,
        order: OrderRow,
        items: Vec<ItemRow>,
    ) -> Result<OrderRow, OrderError> {
        self.drive_known(order.id, Some(order), Some(items)).await
    }

    async fn drive_known(
        &self,
        id: Uuid,
        mut known: Option<OrderRow>,
        items: Option<Vec<ItemRow>>,
    ) -> Result<OrderRow, OrderError> {
        // An order's items never change, so one read serves every step.
        let mut items = Items(items);
        for _ in 0..MAX_STEPS {
            let order = match known.take() {
                Some(order) => order,
                None => self.load(id).await?,
            };
            match self.step(&order, &mut items).await? {
                Next::Continue => {}
                Next::With(order) => known = Some(*order),
                Next::Stop => break,
                Next::Done => return Ok(order),
            }
        }
        self.load(id).await
    }

    async fn load(&self, id: Uuid) -> Result<OrderRow, OrderError> {
        let mut conn = self.db.acquire().await?;
        let order = db::load(&mut conn, id).await?;
        conn.keep();
        order.ok_or(OrderError::NotFound)
    }

    async fn step(&self, order: &OrderRow, items: &mut Items) -> Result<Next, OrderError> {
        match order.status() {
            Status::Pending | Status::Reserved if order.compensating => {
                self.compensate(order, items).await
            }
            Status::Pending if order.cancel_requested => {
                self.begin_compensation(order, false).await
            }
            Status::Pending => self.reserve(order, items).await,
            // Written by earlier versions, which recorded the capture apart.
            Status::Reserved if order.payment_captured => {
                self.commit(order, order.payment_id, items).await
            }
            Status::Reserved if order.cancel_requested && !order.charge_started => {
                self.begin_compensation(order, false).await
            }
            Status::Reserved => self.charge(order, items).await,
            Status::Paid if order.cancel_requested => self.refund_and_cancel(order, items).await,
            _ if order.next_attempt_at.is_some() => {
                let mut conn = self.db.acquire().await?;
                db::settle(&mut conn, order.id).await?;
                conn.keep();
                Ok(Next::Stop)
            }
            _ => Ok(Next::Done),
        }
    }

    async fn retry_later(
        &self,
        order: &OrderRow,
        what: &str,
        status: &tonic::Status,
    ) -> Result<Next, OrderError> {
        let delay = (0.2 * 2f64.powi(order.saga_attempts.min(10))).min(MAX_RETRY_DELAY_SECS);
        tracing::warn!(order_id = %order.id, step = what, code = ?status.code(), error = status.message(), retry_in_secs = delay, "saga step failed, retrying later");
        let mut conn = self.db.acquire().await?;
        db::schedule(&mut conn, order.id, delay).await?;
        conn.keep();
        Ok(Next::Stop)
    }

    async fn begin_compensation(
        &self,
        order: &OrderRow,
        out_of_stock: bool,
    ) -> Result<Next, OrderError> {
        let reason = order
            .cancel_reason
            .clone()
            .unwrap_or_else(|| "cancelled".to_owned());
        self.start_compensation(order, &reason, out_of_stock).await
    }

    async fn start_compensation(
        &self,
        order: &OrderRow,
        reason: &str,
        out_of_stock: bool,
    ) -> Result<Next, OrderError> {
        let mut conn = self.db.acquire().await?;
        db::start_compensation(&mut conn, order.id, reason, out_of_stock).await?;
        conn.keep();
        Ok(Next::Continue)
    }

    async fn reserve(&self, order: &OrderRow, items: &mut Items) -> Result<Next, OrderError> {
        let request = self.request(product_pb::ReserveStockRequest {
            order_id: order.id.to_string(),
            items: items
                .get(&self.db, order.id)
                .await?
                .iter()
                .map(|i| product_pb::ReservationItem {
                    product_id: i.product_id.to_string(),
                    quantity: i.quantity,
                })
                .collect(),
        });
        match self.product.clone().reserve_stock(request).await {
            Ok(_) => {
                // The charge comes next, so it is recorded as started with
                // the reservation: one write, durable before the charge call.
                let mut conn = self.db.acquire().await?;
                let reserved = db::transition(
                    &mut conn,
                    order.id,
                    &[Status::Pending],
                    Status::Reserved,
                    SYSTEM,
                    "stock reserved",
                    Changes {
                        start_charge: true,
                        ..Changes::default()
                    },
                    None,
                )
                .await?;
                conn.keep();
                Ok(reserved.map_or(Next::Continue, |row| Next::With(Box::new(row))))
            }
            Err(status) if transient(status.code()) => {
                self.retry_later(order, "reserve stock", &status).await
            }
            Err(status) => {
                let out_of_stock = status.code() == Code::FailedPrecondition;
                self.start_compensation(order, status.message(), out_of_stock)
                    .await
            }
        }
    }

    async fn charge(&self, order: &OrderRow, items: &mut Items) -> Result<Next, OrderError> {
        // Marked with the reservation as a rule; orders reserved by earlier
        // versions are marked here.
        if !order.charge_started {
            let mut conn = self.db.acquire().await?;
            let started = db::start_charge(&mut conn, order.id).await?;
            conn.keep();
            if !started {
                // A cancellation got there first; the next step sees it.
                return Ok(Next::Continue);
            }
        }
        let request = self.request(payment_pb::ChargeRequest {
            order_id: order.id.to_string(),
            user_id: order.user_id.to_string(),
            amount: Some(Money {
                amount: order.total,
                currency: order.currency.clone(),
            }),
            payment_method: order.payment_method.clone(),
        });
        let payment = match self.payment.clone().charge(request).await {
            Ok(response) => response.into_inner().payment.unwrap_or_default(),
            Err(status) if transient(status.code()) => {
                return self.retry_later(order, "charge", &status).await;
            }
            Err(status) => {
                return self
                    .start_compensation(
                        order,
                        &format!("payment refused: {}", status.message()),
                        false,
                    )
                    .await;
            }
        };
        match payment_pb::PaymentStatus::try_from(payment.status) {
            Ok(
                payment_pb::PaymentStatus::Succeeded
                | payment_pb::PaymentStatus::RefundPending
                | payment_pb::PaymentStatus::PartiallyRefunded
                | payment_pb::PaymentStatus::Refunded,
            ) => {
                // The capture is recorded with PAID, not before the stock is
                // committed: until then the order stays `charge_started`,
                // which no compensation touches, and a retry (or recovery)
                // asks the payment service again, which answers with this
                // same payment.
                // The payment service always names its payments by UUID.
                let payment_id = Uuid::parse_str(&payment.id).ok();
                self.commit(order, payment_id, items).await
            }
            Ok(payment_pb::PaymentStatus::Declined) => {
                self.start_compensation(
                    order,
                    &format!("payment declined: {}", payment.failure_reason),
                    false,
                )
                .await
            }
            Ok(payment_pb::PaymentStatus::Failed) => {
                self.start_compensation(
                    order,
                    &format!("payment failed: {}", payment.failure_reason),
                    false,
                )
                .await
            }
            _ => {
                let status = tonic::Status::unavailable("the charge is still being processed");
                self.retry_later(order, "charge", &status).await
            }
        }
    }

    async fn commit(
        &self,
        order: &OrderRow,
        payment_id: Option<Uuid>,
        items: &mut Items,
    ) -> Result<Next, OrderError> {
        let request = self.request(product_pb::CommitReservationRequest {
            order_id: order.id.to_string(),
        });
        match self.product.clone().commit_reservation(request).await {
            Ok(_) => {}
            Err(status) if transient(status.code()) => {
                return self.retry_later(order, "commit stock", &status).await;
            }
            Err(status) => {
                // Paid for, but the stock is gone: an operator must look.
                tracing::error!(order_id = %order.id, code = ?status.code(), error = status.message(), "cannot commit the reservation of a paid order");
                return self.retry_later(order, "commit stock", &status).await;
            }
        }
        let items = items.get(&self.db, order.id).await?;
        let changes = Changes {
            settle: !order.cancel_requested,
            captured: true,
            payment_id,
            ..Changes::default()
        };
        let event = convert::transition_event(order, Status::Paid, &changes, items, SYSTEM);
        let mut conn = self.db.acquire().await?;
        let paid = db::transition(
            &mut conn,
            order.id,
            &[Status::Reserved],
            Status::Paid,
            SYSTEM,
            "payment captured",
            changes,
            event,
        )
        .await?;
        conn.keep();
        Ok(paid.map_or(Next::Continue, |row| Next::With(Box::new(row))))
    }

    async fn compensate(&self, order: &OrderRow, items: &mut Items) -> Result<Next, OrderError> {
        let request = self.request(product_pb::ReleaseStockRequest {
            order_id: order.id.to_string(),
        });
        match self.product.clone().release_stock(request).await {
            Ok(_) => {}
            Err(status) if transient(status.code()) => {
                return self.retry_later(order, "release stock", &status).await;
            }
            Err(status) => {
                tracing::error!(order_id = %order.id, code = ?status.code(), error = status.message(), "cannot release the reservation");
                return self.retry_later(order, "release stock", &status).await;
            }
        }
        let reason = order
            .cancel_reason
            .clone()
            .unwrap_or_else(|| "cancelled".to_owned());
        let actor = if order.cancel_requested {
            "customer"
        } else {
            SYSTEM
        };
        self.cancel(
            order,
            &[Status::Pending, Status::Reserved],
            &reason,
            actor,
            Changes::default(),
            items,
        )
        .await
    }

    async fn refund_and_cancel(
        &self,
        order: &OrderRow,
        items: &mut Items,
    ) -> Result<Next, OrderError> {
        let remaining = order.total - order.refunded_amount;
        if remaining > 0 {
            let request = self.request(payment_pb::RefundPaymentRequest {
                order_id: order.id.to_string(),
                amount: Some(Money {
                    amount: remaining,
                    currency: order.currency.clone(),
                }),
                reason: "order cancelled".to_owned(),
                // The same id on every retry: the payment service refunds once.
                refund_id: Uuid::new_v5(&order.id, b"cancellation").to_string(),
            });
            match self.payment.clone().refund_payment(request).await {
                Ok(_) => {}
                Err(status) if transient(status.code()) => {
                    return self.retry_later(order, "refund", &status).await;
                }
                Err(status) => {
                    tracing::error!(order_id = %order.id, code = ?status.code(), error = status.message(), "cannot refund a cancelled paid order");
                    return self.retry_later(order, "refund", &status).await;
                }
            }
        }
        let reason = order
            .cancel_reason
            .clone()
            .unwrap_or_else(|| "cancelled".to_owned());
        self.cancel(
            order,
            &[Status::Paid],
            &reason,
            "customer",
            Changes {
                refunded_amount: Some(order.total),
                ..Changes::default()
            },
            items,
        )
        .await
    }

    async fn cancel(
        &self,
        order: &OrderRow,
        from: &[Status],
        reason: &str,
        actor: &str,
        changes: Changes,
        items: &mut Items,
    ) -> Result<Next, OrderError> {
        let items = items.get(&self.db, order.id).await?;
        let changes = Changes {
            cancel_reason: Some(reason.to_owned()),
            settle: true,
            ..changes
        };
        let event = convert::transition_event(order, Status::Cancelled, &changes, items, actor);
        let mut conn = self.db.acquire().await?;
        let cancelled = db::transition(
            &mut conn,
            order.id,
            from,
            Status::Cancelled,
            actor,
            reason,
            changes,
            event,
        )
        .await?;
        conn.keep();
        Ok(cancelled.map_or(Next::Continue, |row| Next::With(Box::new(row))))
    }
}

/// The order's items, read at most once per drive.
struct Items(Option<Vec<ItemRow>>);

impl Items {
    async fn get(&mut self, database: &Db, id: Uuid) -> Result<&[ItemRow], OrderError> {
        if self.0.is_none() {
            let mut conn = database.acquire().await?;
            self.0 = Some(db::items(&mut conn, id).await?);
            conn.keep();
        }
        Ok(self.0.as_deref().unwrap_or_default())
    }
}

/// Finds orders whose saga is due and drives them, until shutdown. After a
/// crash an order is picked up at most one lease plus one interval after
/// the process (or another replica) runs again.
pub async fn run_recovery(saga: Saga, interval: Duration, shutdown: gocommerce_platform::Shutdown) {
    let mut rounds: u64 = 0;
    while !shutdown.is_triggered() {
        rounds += 1;
        let claimed = async {
            let mut conn = saga.db.acquire().await?;
            let ids = db::claim_due(&mut conn, 32, saga.lease.as_secs_f64()).await?;
            conn.keep();
            Ok::<_, OrderError>(ids)
        }
        .await;
        match claimed {
            Ok(ids) => {
                let runs = ids.into_iter().map(|id| {
                    let saga = saga.clone();
                    async move {
                        if let Err(error) = saga.drive(id).await {
                            tracing::warn!(order_id = %id, %error, "recovery could not drive the order");
                        }
                    }
                });
                futures::future::join_all(runs).await;
            }
            Err(error) => tracing::warn!(%error, "recovery could not claim orders"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.wait() => break,
        }
        // Idempotency keys expire after a day; a sweep now and then suffices.
        if rounds % 600 == 1
            && let Ok(mut conn) = saga.db.background().acquire().await
            && let Err(error) = db::expire_keys(&mut conn).await
        {
            tracing::warn!(%error, "cannot expire idempotency keys");
        }
    }
}
