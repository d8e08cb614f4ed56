//! Charges: one per order, whatever the retries, with an outcome for every
//! test token.

use std::time::Duration;

use gocommerce_proto::payment::v1::{ChargeRequest, PaymentStatus};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{as_customer, charge_request, spawn_app, usd};

#[tokio::test]
async fn a_good_card_is_captured_once_and_announced() {
    let app = spawn_app().await;
    let order = Uuid::new_v4();

    let payment = app
        .charge(charge_request(order, 2599, "pm_card_ok"))
        .await
        .expect("charged");

    assert_eq!(payment.status, PaymentStatus::Succeeded as i32);
    assert_eq!(payment.amount, usd(2599));
    assert!(payment.processor_reference.starts_with("sim_ch_"));
    assert_eq!(payment.attempts, 1);
    assert_eq!(app.events().await, vec!["payment.succeeded"]);
}

#[tokio::test]
async fn a_declined_card_is_not_retried() {
    let app = spawn_app().await;

    let payment = app
        .charge(charge_request(Uuid::new_v4(), 1000, "pm_card_declined"))
        .await
        .expect("answered");

    assert_eq!(payment.status, PaymentStatus::Declined as i32);
    assert_eq!(payment.failure_reason, "card declined");
    assert_eq!(payment.attempts, 1);
    assert_eq!(app.events().await, vec!["payment.failed"]);
}

#[tokio::test]
async fn transient_processor_errors_are_retried_then_fail() {
    let app = spawn_app().await;

    let payment = app
        .charge(charge_request(Uuid::new_v4(), 1000, "pm_card_error"))
        .await
        .expect("answered");

    assert_eq!(payment.status, PaymentStatus::Failed as i32);
    assert_eq!(payment.attempts, 3);
    assert!(payment.failure_reason.contains("after 3 attempts"));
}

#[tokio::test]
async fn a_slow_processor_times_out_the_caller_but_the_charge_completes_once() {
    let app = spawn_app().await;
    let order = Uuid::new_v4();
    let request = charge_request(order, 1500, "pm_card_slow");
    let mut timed = tonic::Request::new(request.clone());
    timed.set_timeout(Duration::from_millis(200));

    let first = app.client.clone().charge(timed).await;

    assert_eq!(first.expect_err("too slow").code(), Code::DeadlineExceeded);
    let settled = app.wait_for(order, PaymentStatus::Succeeded).await;
    let again = app.charge(request).await.expect("answered");
    assert_eq!(again.id, settled.id);
    assert_eq!(again.status, PaymentStatus::Succeeded as i32);
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(payments, 1);
    assert_eq!(app.events().await, vec!["payment.succeeded"]);
}

#[tokio::test]
async fn concurrent_charges_of_one_order_charge_once() {
    let app = spawn_app().await;
    let order = Uuid::new_v4();
    let request = charge_request(order, 4200, "pm_card_ok");

    let results = futures::future::join_all((0..20).map(|_| app.charge(request.clone()))).await;

    let ids: std::collections::HashSet<String> = results
        .into_iter()
        .map(|r| r.expect("answered").id)
        .collect();
    assert_eq!(ids.len(), 1, "every caller sees the same payment");
    let settled = app.wait_for(order, PaymentStatus::Succeeded).await;
    assert_eq!(settled.attempts, 1, "the processor was called once");
    assert_eq!(app.events().await, vec!["payment.succeeded"]);
}

#[tokio::test]
async fn recharging_an_order_with_other_terms_is_refused() {
    let app = spawn_app().await;
    let order = Uuid::new_v4();
    app.charge(charge_request(order, 1000, "pm_card_ok"))
        .await
        .expect("charged");

    let other_amount = app.charge(charge_request(order, 999, "pm_card_ok")).await;
    let other_method = app
        .charge(charge_request(order, 1000, "pm_card_declined"))
        .await;

    assert_eq!(
        other_amount.expect_err("refused").code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        other_method.expect_err("refused").code(),
        Code::FailedPrecondition
    );
}

#[tokio::test]
async fn invalid_charges_say_what_is_wrong_and_write_nothing() {
    let app = spawn_app().await;
    let good = charge_request(Uuid::new_v4(), 1000, "pm_card_ok");
    let cases = [
        (
            ChargeRequest {
                payment_method: "pm_card_gold".to_owned(),
                ..good.clone()
            },
            "payment_method",
        ),
        (
            ChargeRequest {
                amount: usd(0),
                ..good.clone()
            },
            "amount",
        ),
        (
            ChargeRequest {
                amount: usd(-5),
                ..good.clone()
            },
            "amount",
        ),
        (
            ChargeRequest {
                amount: Some(gocommerce_proto::common::v1::Money {
                    amount: 100,
                    currency: "XYZ".to_owned(),
                }),
                ..good.clone()
            },
            "currency",
        ),
        (
            ChargeRequest {
                amount: None,
                ..good.clone()
            },
            "amount",
        ),
        (
            ChargeRequest {
                order_id: "42".to_owned(),
                ..good.clone()
            },
            "order_id",
        ),
    ];
    for (request, field) in cases {
        let status = app.charge(request).await.expect_err("refused");

        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(payments, 0);
}

#[tokio::test]
async fn customers_cannot_charge_and_see_only_their_own_payments() {
    let app = spawn_app().await;
    let order = Uuid::new_v4();
    let mut request = charge_request(order, 1000, "pm_card_ok");
    let owner = Uuid::new_v4();
    request.user_id = owner.to_string();
    app.charge(request.clone())
        .await
        .expect("a peer may charge");
    let get = gocommerce_proto::payment::v1::GetPaymentRequest {
        order_id: order.to_string(),
    };

    let charge = app.client.clone().charge(as_customer(owner, request)).await;
    let own = app
        .client
        .clone()
        .get_payment(as_customer(owner, get.clone()))
        .await;
    let other = app
        .client
        .clone()
        .get_payment(as_customer(Uuid::new_v4(), get))
        .await;

    assert_eq!(
        charge.expect_err("customers may not charge").code(),
        Code::PermissionDenied
    );
    assert!(own.is_ok());
    assert_eq!(other.expect_err("not theirs").code(), Code::NotFound);
}

#[tokio::test]
async fn a_charge_left_pending_by_a_crash_is_finished_by_the_next_attempt() {
    let app = spawn_app().await;
    let order = Uuid::new_v4();
    let request = charge_request(order, 700, "pm_card_ok");
    sqlx::query(
        "INSERT INTO payments (id, order_id, user_id, amount, currency, method, status, updated_at) \
         VALUES ($1, $2, $3, 700, 'USD', 'pm_card_ok', 'pending', now() - interval '1 hour')",
    )
    .bind(Uuid::new_v4())
    .bind(order)
    .bind(Uuid::parse_str(&request.user_id).expect("uuid"))
    .execute(&app.pool)
    .await
    .expect("a pending payment whose worker died");

    let payment = app.charge(request).await.expect("answered");

    assert_eq!(payment.status, PaymentStatus::Succeeded as i32);
}
