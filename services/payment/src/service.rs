//! The `PaymentService` gRPC handlers.

use std::time::Duration;

use gocommerce_platform::db::Db;
use gocommerce_platform::outbox::{self, OutboxMessage};
use gocommerce_platform::time::timestamp;
use gocommerce_platform::{Caller, events, grpc, validate};
use gocommerce_proto::common::v1::Money;
use gocommerce_proto::events::v1 as ev;
use gocommerce_proto::payment::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::db::{self, NewPayment, PaymentRow, RefundRow};
use crate::domain::{Method, Status as PaymentStatus, refund_status_to_proto};
use crate::error::PaymentError;
use crate::processor::{Outcome, Processor};
use crate::refunds;

pub const SOURCE: &str = "gocommerce-payment";

const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct PaymentService {
    pub db: Db,
    pub processor: Processor,
    pub stale_after: Duration,
}

fn parse_uuid(field: &str, raw: &str) -> Result<Uuid, PaymentError> {
    Uuid::parse_str(raw)
        .map_err(|_| PaymentError::InvalidArgument(format!("{field}: must be a UUID")))
}

fn parse_money(field: &str, money: Option<&Money>) -> Result<(i64, String), PaymentError> {
    let money =
        money.ok_or_else(|| PaymentError::InvalidArgument(format!("{field}: is required")))?;
    if money.amount <= 0 {
        return Err(PaymentError::InvalidArgument(format!(
            "{field}.amount: must be positive"
        )));
    }
    validate::currency(&money.currency)
        .map_err(|e| PaymentError::InvalidArgument(format!("{field}.currency: {e}")))?;
    Ok((money.amount, money.currency.clone()))
}

/// Peers (no caller) and admins may; a customer may not.
fn require_peer_or_admin(caller: Option<Caller>) -> Result<(), PaymentError> {
    match caller {
        Some(caller) if !caller.is_admin() => Err(PaymentError::PermissionDenied(
            "this operation is for services and admins only".to_owned(),
        )),
        _ => Ok(()),
    }
}

/// The payment a charge request ends with.
struct Charged {
    payment: PaymentRow,
    /// This request recorded the outcome. The payment was pending until
    /// then, and only a settled payment can be refunded, so it has no
    /// refunds to read.
    finished_here: bool,
}

impl Charged {
    /// A payment whose outcome was recorded before, or is being recorded
    /// by another request.
    fn earlier(payment: PaymentRow) -> Self {
        Self {
            payment,
            finished_here: false,
        }
    }
}

impl PaymentService {
    /// Runs the processor for a pending payment and records the outcome with
    /// its event. Detached from the request: a client that stops waiting does
    /// not stop the charge, so a retry finds its outcome.
    async fn process(
        &self,
        payment: PaymentRow,
        deadline: Option<Duration>,
    ) -> Result<Charged, PaymentError> {
        let service = self.clone();
        let worker = tokio::spawn(async move {
            let method = Method::parse(&payment.method)?;
            let (outcome, attempts) = service.processor.charge(method, deadline).await;
            // The event reads only what a payment never changes, so it is
            // built before the outcome is recorded, and written with it.
            let event = charge_event(&payment, &outcome);
            let mut conn = service.db.acquire().await?;
            let Some(done) =
                db::finish_charge(&mut conn, payment.id, &outcome, attempts, &event).await?
            else {
                // Someone else recorded an outcome first; theirs stands.
                let earlier = db::find_by_order(&mut conn, payment.order_id).await?;
                conn.keep();
                return earlier.map(Charged::earlier).ok_or(PaymentError::NotFound);
            };
            conn.keep();
            tracing::info!(payment_id = %done.id, order_id = %done.order_id, status = done.status, "charge finished");
            Ok(Charged {
                payment: done,
                finished_here: true,
            })
        });
        // Answer DEADLINE_EXCEEDED ourselves, a little before tonic would
        // cancel the call, so the caller learns the charge is still going on.
        match deadline.map(|d| d.saturating_sub(DEADLINE_MARGIN)) {
            Some(deadline) => match tokio::time::timeout(deadline, worker).await {
                Ok(joined) => joined.map_err(|e| PaymentError::Worker(e.to_string()))?,
                Err(_) => Err(PaymentError::DeadlineExceeded),
            },
            None => worker
                .await
                .map_err(|e| PaymentError::Worker(e.to_string()))?,
        }
    }

    async fn charge(&self, request: Request<pb::ChargeRequest>) -> Result<Charged, PaymentError> {
        require_peer_or_admin(
            Caller::optional_from_metadata(request.metadata()).map_err(status_error)?,
        )?;
        let deadline = grpc::timeout(request.metadata());
        let request = request.into_inner();
        let order_id = parse_uuid("order_id", &request.order_id)?;
        let user_id = parse_uuid("user_id", &request.user_id)?;
        let (amount, currency) = parse_money("amount", request.amount.as_ref())?;
        Method::parse(&request.payment_method)?;

        let mut conn = self.db.acquire().await?;
        let (payment, inserted) = db::insert_or_get(
            &mut conn,
            &NewPayment {
                order_id,
                user_id,
                amount,
                currency: &currency,
                method: &request.payment_method,
            },
        )
        .await?;
        conn.keep();
        if inserted {
            return self.process(payment, deadline).await;
        }
        if payment.amount != amount
            || payment.currency != currency
            || payment.method != request.payment_method
        {
            return Err(PaymentError::FailedPrecondition(
                "this order was already charged with a different amount, currency or method"
                    .to_owned(),
            ));
        }
        if payment.status() != PaymentStatus::Pending {
            return Ok(Charged::earlier(payment));
        }
        // Still pending: someone is charging it, unless they died.
        let mut conn = self.db.acquire().await?;
        let stale = db::claim_stale(&mut conn, payment.id, self.stale_after.as_secs_f64()).await?;
        conn.keep();
        match stale {
            Some(claimed) => {
                tracing::warn!(payment_id = %claimed.id, "taking over a stale pending charge");
                self.process(claimed, deadline).await
            }
            None => Ok(Charged::earlier(payment)),
        }
    }

    async fn view(&self, payment: &PaymentRow) -> Result<pb::Payment, PaymentError> {
        let mut conn = self.db.acquire().await?;
        let refunds = db::refunds_of(&mut conn, payment.id).await?;
        conn.keep();
        Ok(payment_to_proto(payment, &refunds))
    }

    async fn refund(
        &self,
        request: Request<pb::RefundPaymentRequest>,
    ) -> Result<(RefundRow, PaymentRow), PaymentError> {
        require_peer_or_admin(
            Caller::optional_from_metadata(request.metadata()).map_err(status_error)?,
        )?;
        let request = request.into_inner();
        let order_id = parse_uuid("order_id", &request.order_id)?;
        let refund_id = parse_uuid("refund_id", &request.refund_id)?;
        let money = request
            .amount
            .as_ref()
            .ok_or_else(|| PaymentError::InvalidArgument("amount: is required".to_owned()))?;
        if money.amount <= 0 {
            return Err(PaymentError::InvalidArgument(
                "amount: must be positive".to_owned(),
            ));
        }
        validate::text(&request.reason, 500, true, false)
            .map_err(|message| PaymentError::InvalidArgument(format!("reason: {message}")))?;
        let reason = request.reason.trim();

        let mut tx = self.db.begin().await?;
        let payment = db::lock_by_order(&mut tx, order_id)
            .await?
            .ok_or(PaymentError::NotFound)?;
        if !money.currency.is_empty() && money.currency != payment.currency {
            return Err(PaymentError::InvalidArgument(format!(
                "amount.currency: the payment is in {}",
                payment.currency
            )));
        }
        if let Some(existing) = db::find_refund(&mut tx, refund_id).await? {
            if existing.payment_id == payment.id
                && existing.amount == money.amount
                && existing.reason == reason
            {
                return Ok((existing, payment));
            }
            return Err(PaymentError::FailedPrecondition(
                "refund_id: already used for another refund".to_owned(),
            ));
        }
        if !payment.status().captured() {
            return Err(PaymentError::FailedPrecondition(format!(
                "the payment is {} and has nothing to refund",
                payment.status
            )));
        }
        let remaining = payment.amount - payment.refunded_amount - payment.pending_refund_amount;
        if money.amount > remaining {
            return Err(PaymentError::FailedPrecondition(format!(
                "amount: {} exceeds the {remaining} that remains to refund",
                money.amount
            )));
        }
        let (refund, payment) =
            db::insert_refund(&mut tx, refund_id, &payment, money.amount, reason).await?;
        outbox::enqueue(&mut tx, &refunds::task(refund.id)).await?;
        tx.commit().await?;
        tracing::info!(refund_id = %refund.id, order_id = %order_id, amount = refund.amount, "refund requested");
        Ok((refund, payment))
    }
}

fn status_error(status: Status) -> PaymentError {
    PaymentError::PermissionDenied(status.message().to_owned())
}

fn money(amount: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount,
        currency: currency.to_owned(),
    })
}

/// The charge's event. It reads only what a payment never changes (ids,
/// amount, method) and the outcome.
fn charge_event(payment: &PaymentRow, outcome: &Outcome) -> OutboxMessage {
    let payload = match outcome {
        Outcome::Captured { reference } => {
            ev::event_envelope::Payload::PaymentSucceeded(ev::PaymentSucceeded {
                payment_id: payment.id.to_string(),
                order_id: payment.order_id.to_string(),
                user_id: payment.user_id.to_string(),
                amount: money(payment.amount, &payment.currency),
                method: payment.method.clone(),
                processor_reference: reference.clone(),
            })
        }
        Outcome::Declined { reason } | Outcome::Failed { reason } => {
            ev::event_envelope::Payload::PaymentFailed(ev::PaymentFailed {
                payment_id: payment.id.to_string(),
                order_id: payment.order_id.to_string(),
                user_id: payment.user_id.to_string(),
                amount: money(payment.amount, &payment.currency),
                method: payment.method.clone(),
                reason: reason.clone(),
                declined: matches!(outcome, Outcome::Declined { .. }),
            })
        }
    };
    events::message(SOURCE, payment.id, payload)
}

pub fn refund_to_proto(refund: &RefundRow, payment: &PaymentRow) -> pb::Refund {
    pb::Refund {
        id: refund.id.to_string(),
        payment_id: refund.payment_id.to_string(),
        order_id: payment.order_id.to_string(),
        amount: money(refund.amount, &payment.currency),
        status: refund_status_to_proto(&refund.status) as i32,
        reason: refund.reason.clone(),
        processor_reference: refund.processor_reference.clone().unwrap_or_default(),
        failure_reason: refund.failure_reason.clone().unwrap_or_default(),
        created_at: Some(timestamp(refund.created_at)),
        updated_at: Some(timestamp(refund.updated_at)),
    }
}

pub fn payment_to_proto(payment: &PaymentRow, refunds: &[RefundRow]) -> pb::Payment {
    pb::Payment {
        id: payment.id.to_string(),
        order_id: payment.order_id.to_string(),
        user_id: payment.user_id.to_string(),
        amount: money(payment.amount, &payment.currency),
        status: payment.status().to_proto() as i32,
        method: payment.method.clone(),
        processor_reference: payment.processor_reference.clone().unwrap_or_default(),
        failure_reason: payment.failure_reason.clone().unwrap_or_default(),
        refunded_amount: money(payment.refunded_amount, &payment.currency),
        refunds: refunds
            .iter()
            .map(|r| refund_to_proto(r, payment))
            .collect(),
        attempts: u32::try_from(payment.attempts).unwrap_or(0),
        created_at: Some(timestamp(payment.created_at)),
        updated_at: Some(timestamp(payment.updated_at)),
    }
}

#[tonic::async_trait]
impl pb::payment_service_server::PaymentService for PaymentService {
    async fn charge(
        &self,
        request: Request<pb::ChargeRequest>,
    ) -> Result<Response<pb::ChargeResponse>, Status> {
        let charged = PaymentService::charge(self, request).await?;
        let payment = if charged.finished_here {
            payment_to_proto(&charged.payment, &[])
        } else {
            self.view(&charged.payment).await?
        };
        Ok(Response::new(pb::ChargeResponse {
            payment: Some(payment),
        }))
    }

    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        let caller = Caller::optional_from_metadata(request.metadata())?;
        let order_id = parse_uuid("order_id", &request.get_ref().order_id)?;
        let mut conn = self.db.acquire().await.map_err(PaymentError::from)?;
        let payment = db::find_by_order(&mut conn, order_id).await?;
        conn.keep();
        let payment = payment
            .filter(|p| caller.is_none_or(|c| c.may_access(p.user_id)))
            .ok_or(PaymentError::NotFound)?;
        Ok(Response::new(pb::GetPaymentResponse {
            payment: Some(self.view(&payment).await?),
        }))
    }

    async fn refund_payment(
        &self,
        request: Request<pb::RefundPaymentRequest>,
    ) -> Result<Response<pb::RefundPaymentResponse>, Status> {
        let (refund, payment) = PaymentService::refund(self, request).await?;
        Ok(Response::new(pb::RefundPaymentResponse {
            refund: Some(refund_to_proto(&refund, &payment)),
            payment: Some(self.view(&payment).await?),
        }))
    }
}
