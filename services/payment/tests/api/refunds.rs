//! Refunds: recorded at once, processed through RabbitMQ, never beyond the
//! capture.

use gocommerce_proto::payment::v1::{PaymentStatus, RefundPaymentRequest, RefundStatus};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, charge_request, spawn_app, spawn_with, usd};

async fn paid_order(app: &TestApp, amount: i64) -> Uuid {
    let order = Uuid::new_v4();
    app.charge(charge_request(order, amount, "pm_card_ok"))
        .await
        .expect("charged");
    order
}

fn refund(order: Uuid, amount: i64) -> RefundPaymentRequest {
    RefundPaymentRequest {
        order_id: order.to_string(),
        amount: usd(amount),
        reason: "customer returned the item".to_owned(),
        refund_id: Uuid::new_v4().to_string(),
    }
}

#[tokio::test]
async fn a_partial_then_a_final_refund_move_the_payment_to_refunded() {
    let app = spawn_app().await;
    let order = paid_order(&app, 1000).await;

    let first = app
        .client
        .clone()
        .refund_payment(refund(order, 400))
        .await
        .expect("accepted")
        .into_inner();

    assert_eq!(
        first.refund.expect("refund").status,
        RefundStatus::Pending as i32
    );
    assert_eq!(
        first.payment.expect("payment").status,
        PaymentStatus::RefundPending as i32
    );
    let partial = app.wait_for(order, PaymentStatus::PartiallyRefunded).await;
    assert_eq!(partial.refunded_amount, usd(400));

    app.client
        .clone()
        .refund_payment(refund(order, 600))
        .await
        .expect("accepted");

    let refunded = app.wait_for(order, PaymentStatus::Refunded).await;
    assert_eq!(refunded.refunded_amount, usd(1000));
    assert!(
        refunded
            .refunds
            .iter()
            .all(|r| r.status == RefundStatus::Succeeded as i32)
    );
    assert!(
        refunded
            .refunds
            .iter()
            .all(|r| r.processor_reference.starts_with("sim_re_"))
    );
    let events = app.events().await;
    assert_eq!(
        events.iter().filter(|e| *e == "payment.refunded").count(),
        2
    );
}

#[tokio::test]
async fn a_refund_above_what_remains_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let order = paid_order(&app, 1000).await;
    app.client
        .clone()
        .refund_payment(refund(order, 700))
        .await
        .expect("accepted");

    let too_much = app.client.clone().refund_payment(refund(order, 301)).await;

    let status = too_much.expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("exceeds"), "{}", status.message());
    let settled = app.wait_for(order, PaymentStatus::PartiallyRefunded).await;
    assert_eq!(settled.refunded_amount, usd(700));
    assert_eq!(settled.refunds.len(), 1);
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_capture() {
    let app = spawn_app().await;
    let order = paid_order(&app, 1000).await;

    let results = futures::future::join_all((0..10).map(|_| {
        let mut client = app.client.clone();
        async move { client.refund_payment(refund(order, 300)).await }
    }))
    .await;

    let accepted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, 3, "3 × 300 fit in 1000, a fourth does not");
    for result in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(result.code(), Code::FailedPrecondition);
    }
    let settled = app.wait_for(order, PaymentStatus::PartiallyRefunded).await;
    assert_eq!(settled.refunded_amount, usd(900));
}

#[tokio::test]
async fn repeating_a_refund_request_returns_the_same_refund() {
    let app = spawn_app().await;
    let order = paid_order(&app, 1000).await;
    let request = refund(order, 250);

    let first = app
        .client
        .clone()
        .refund_payment(request.clone())
        .await
        .expect("accepted")
        .into_inner();
    let second = app
        .client
        .clone()
        .refund_payment(request.clone())
        .await
        .expect("accepted")
        .into_inner();
    let reused = app
        .client
        .clone()
        .refund_payment(RefundPaymentRequest {
            amount: usd(100),
            ..request
        })
        .await;

    assert_eq!(
        first.refund.expect("refund").id,
        second.refund.expect("refund").id
    );
    assert_eq!(
        reused.expect_err("other values").code(),
        Code::FailedPrecondition
    );
    let settled = app.wait_for(order, PaymentStatus::PartiallyRefunded).await;
    assert_eq!(settled.refunded_amount, usd(250));
}

#[tokio::test]
async fn an_uncaptured_payment_cannot_be_refunded() {
    let app = spawn_app().await;
    let order = Uuid::new_v4();
    app.charge(charge_request(order, 1000, "pm_card_declined"))
        .await
        .expect("answered");

    let result = app.client.clone().refund_payment(refund(order, 100)).await;

    assert_eq!(
        result.expect_err("nothing captured").code(),
        Code::FailedPrecondition
    );
}

#[tokio::test]
async fn invalid_refunds_say_what_is_wrong() {
    let app = spawn_app().await;
    let order = paid_order(&app, 1000).await;
    let cases = [
        (
            RefundPaymentRequest {
                amount: usd(0),
                ..refund(order, 1)
            },
            Code::InvalidArgument,
            "amount",
        ),
        (
            RefundPaymentRequest {
                reason: "  ".to_owned(),
                ..refund(order, 1)
            },
            Code::InvalidArgument,
            "reason",
        ),
        (
            RefundPaymentRequest {
                refund_id: "x".to_owned(),
                ..refund(order, 1)
            },
            Code::InvalidArgument,
            "refund_id",
        ),
        (
            RefundPaymentRequest {
                amount: Some(gocommerce_proto::common::v1::Money {
                    amount: 5,
                    currency: "EUR".to_owned(),
                }),
                ..refund(order, 1)
            },
            Code::InvalidArgument,
            "currency",
        ),
        (refund(Uuid::new_v4(), 10), Code::NotFound, "no payment"),
    ];
    for (request, code, needle) in cases {
        let status = app
            .client
            .clone()
            .refund_payment(request)
            .await
            .expect_err("refused");

        assert_eq!(status.code(), code, "{needle}");
        assert!(
            status.message().contains(needle),
            "{needle}: {}",
            status.message()
        );
    }
}

#[tokio::test]
async fn a_refund_whose_task_was_lost_is_queued_again_and_paid_once() {
    // Arrange: what a task dead-lettered while the database was away leaves
    // behind: the refund pending and its amount reserved, with no task.
    let app = spawn_with(&[("PAYMENT_REFUND_REQUEUE_AFTER_SECONDS", "1")]).await;
    let order = paid_order(&app, 1000).await;
    let refund_id = Uuid::new_v4();
    let mut tx = app.pool.begin().await.expect("transaction");
    sqlx::query(
        "INSERT INTO refunds (id, payment_id, amount, status, reason, created_at) \
         SELECT $1, id, 300, 'pending', 'lost task', now() - interval '10 seconds' \
         FROM payments WHERE order_id = $2",
    )
    .bind(refund_id)
    .bind(order)
    .execute(&mut *tx)
    .await
    .expect("refund");
    sqlx::query(
        "UPDATE payments SET pending_refund_amount = 300, status = 'refund_pending' \
         WHERE order_id = $1",
    )
    .bind(order)
    .execute(&mut *tx)
    .await
    .expect("payment");
    tx.commit().await.expect("committed");

    // Act
    let settled = app.wait_for(order, PaymentStatus::PartiallyRefunded).await;

    // Assert
    assert_eq!(settled.refunded_amount, usd(300));
    let refund = settled.refunds.first().expect("the refund");
    assert_eq!(refund.id, refund_id.to_string());
    assert_eq!(refund.status, RefundStatus::Succeeded as i32);
    assert_eq!(
        refund.processor_reference,
        format!("sim_re_{}", refund_id.simple()),
        "the refund's id is the processor's idempotency key"
    );
    // Past two more sweeps: the done refund's task was queued once.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let events = app.events().await;
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "payment.refund.requested")
            .count(),
        1
    );
}
