//! Orders end to end through the REST API: the saga, concurrency, idempotency
//! keys, recovery after a crash, the state machine, refunds and live status.

use std::time::Duration;

use gocommerce_proto::events::v1::EventEnvelope;
use gocommerce_proto::events::v1::event_envelope::Payload;
use prost::Message;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    TestApp, assert_problem, problem_fields, retry_after, spawn_app, spawn_behind_proxy,
    spawn_with, test_env, wait_for_lock_waiters,
};

/// A catalog with one product and a customer with an address.
struct Shop {
    admin: String,
    customer: String,
    category_id: String,
    product_id: String,
    address_id: String,
}

impl Shop {
    async fn open(app: &TestApp, stock: i64, price: i64) -> Self {
        let admin = app.admin_token().await;
        let category = app
            .request(Method::POST, "/v1/categories")
            .bearer_auth(&admin)
            .json(&json!({"name": "Books", "slug": format!("books-{}", Uuid::new_v4().simple())}))
            .send()
            .await
            .expect("sent");
        assert_eq!(category.status(), StatusCode::CREATED);
        let category: Value = category.json().await.expect("json");
        let category_id = category["id"].as_str().expect("id").to_owned();
        let product_id = new_product(app, &admin, &category_id, stock, price).await;
        let (_, tokens) = app.customer().await;
        let customer = tokens["access_token"].as_str().expect("token").to_owned();
        let address = app
            .request(Method::POST, "/v1/users/me/addresses")
            .bearer_auth(&customer)
            .json(&json!({"line1": "1 Analytical Row", "city": "London", "postal_code": "N1 9GU", "country": "GB"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(address.status(), StatusCode::CREATED);
        let address: Value = address.json().await.expect("json");
        Self {
            admin,
            customer,
            category_id,
            product_id,
            address_id: address["id"].as_str().expect("id").to_owned(),
        }
    }

    fn order(&self, quantity: i64, method: &str) -> Value {
        json!({
            "items": [{"product_id": self.product_id, "quantity": quantity}],
            "shipping_address_id": self.address_id,
            "payment_method": method,
        })
    }
}

async fn new_product(
    app: &TestApp,
    admin: &str,
    category_id: &str,
    stock: i64,
    price: i64,
) -> String {
    let product = app
        .request(Method::POST, "/v1/products")
        .bearer_auth(admin)
        .json(&json!({
            "sku": format!("SKU-{}", Uuid::new_v4().simple()),
            "name": "The Analytical Engine",
            "description": "Notes on a machine that weaves algebra",
            "price": {"amount": price, "currency": "USD"},
            "category_id": category_id,
            "stock": stock,
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(product.status(), StatusCode::CREATED);
    let product: Value = product.json().await.expect("json");
    product["id"].as_str().expect("id").to_owned()
}

async fn place(app: &TestApp, token: &str, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = app
        .request(Method::POST, "/v1/orders")
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("sent")
}

async fn get(app: &TestApp, token: &str, path: &str) -> Value {
    let response = app.get_with_token(path, token).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.expect("json")
}

/// Polls until the order is in `status`, for at most five seconds.
/// The id of a one-item order paid with a good card, once it is PAID.
async fn paid_order(app: &TestApp, shop: &Shop) -> String {
    let order: Value = place(app, &shop.customer, &shop.order(1, "pm_card_ok"), None)
        .await
        .json()
        .await
        .expect("json");
    let id = order["id"].as_str().expect("id").to_owned();
    wait_for(app, &shop.customer, &id, "PAID").await;
    id
}

async fn wait_for(app: &TestApp, token: &str, order_id: &str, status: &str) -> Value {
    for _ in 0..100 {
        let order = get(app, token, &format!("/v1/orders/{order_id}")).await;
        if order["status"] == status {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order {order_id} did not reach {status} within five seconds");
}

/// The statuses an order went through, from its history.
fn steps(order: &Value) -> Vec<&str> {
    order["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["to"].as_str().expect("to"))
        .collect()
}

/// The product's quantities (the response carries more fields, which these
/// tests do not judge).
async fn stock(app: &TestApp, shop: &Shop) -> Value {
    let stock = get(
        app,
        &shop.admin,
        &format!("/v1/products/{}/stock", shop.product_id),
    )
    .await;
    json!({
        "on_hand": stock["on_hand"],
        "reserved": stock["reserved"],
        "available": stock["available"],
    })
}

#[tokio::test]
async fn the_placement_answer_lists_the_items_as_reading_the_order_back_does() {
    // Arrange: two products, ordered in this order.
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 1250).await;
    let second = new_product(&app, &shop.admin, &shop.category_id, 5, 300).await;
    let body = json!({
        "items": [
            {"product_id": shop.product_id, "quantity": 1},
            {"product_id": second, "quantity": 3},
        ],
        "shipping_address_id": shop.address_id,
        "payment_method": "pm_card_ok",
    });

    // Act
    let response = place(&app, &shop.customer, &body, None).await;

    // Assert
    assert_eq!(response.status(), StatusCode::CREATED);
    let placed: Value = response.json().await.expect("json");
    let lines: Vec<(&str, i64, i64)> = placed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["product_id"].as_str().expect("product_id"),
                i["quantity"].as_i64().expect("quantity"),
                i["line_total"]["amount"].as_i64().expect("line total"),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (shop.product_id.as_str(), 1, 1250),
            (second.as_str(), 3, 900)
        ]
    );
    let read = wait_for(
        &app,
        &shop.customer,
        placed["id"].as_str().expect("id"),
        "PAID",
    )
    .await;
    assert_eq!(placed["items"], read["items"]);
    assert_eq!(placed["total"], json!({"amount": 2150, "currency": "USD"}));
}

#[tokio::test]
async fn an_order_paid_with_a_good_card_keeps_a_snapshot_of_its_prices() {
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 1250).await;

    let response = place(&app, &shop.customer, &shop.order(2, "pm_card_ok"), None).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.expect("json");
    let paid = wait_for(
        &app,
        &shop.customer,
        order["id"].as_str().expect("id"),
        "PAID",
    )
    .await;
    assert_eq!(
        paid["items"][0]["unit_price"],
        json!({"amount": 1250, "currency": "USD"})
    );
    assert_eq!(
        paid["items"][0]["line_total"],
        json!({"amount": 2500, "currency": "USD"})
    );
    assert_eq!(paid["items"][0]["name"], "The Analytical Engine");
    assert_eq!(paid["total"], json!({"amount": 2500, "currency": "USD"}));
    assert_eq!(paid["shipping_address"]["city"], "London");
    let steps: Vec<&str> = paid["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["to"].as_str().expect("to"))
        .collect();
    assert_eq!(steps, vec!["PENDING", "RESERVED", "PAID"]);
    assert_eq!(
        stock(&app, &shop).await,
        json!({"on_hand": 3, "reserved": 0, "available": 3})
    );
    let payment = get(
        &app,
        &shop.customer,
        &format!("/v1/orders/{}/payment", paid["id"].as_str().expect("id")),
    )
    .await;
    assert_eq!(payment["status"], "succeeded");
    assert_eq!(
        payment["amount"],
        json!({"amount": 2500, "currency": "USD"})
    );
}

#[tokio::test]
async fn the_order_paid_event_names_the_payment_that_paid() {
    // Arrange
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 900).await;
    let response = place(&app, &shop.customer, &shop.order(1, "pm_card_ok"), None).await;
    let order: Value = response.json().await.expect("json");
    let order_id = order["id"].as_str().expect("id");
    wait_for(&app, &shop.customer, order_id, "PAID").await;

    // Act
    let orders = app.order_db().await;
    let payload: Vec<u8> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE routing_key = 'order.paid'")
            .fetch_one(&orders)
            .await
            .expect("the order.paid event");

    // Assert
    let envelope = EventEnvelope::decode(payload.as_slice()).expect("an event envelope");
    let Some(Payload::OrderPaid(paid)) = envelope.payload else {
        panic!("order.paid carries {:?}", envelope.payload);
    };
    let payment = get(
        &app,
        &shop.customer,
        &format!("/v1/orders/{order_id}/payment"),
    )
    .await;
    assert_eq!(paid.order_id, order_id);
    assert_eq!(Some(paid.payment_id.as_str()), payment["id"].as_str());
}

#[tokio::test]
async fn fifty_concurrent_orders_for_ten_in_stock_pay_exactly_ten() {
    let app = spawn_app().await;
    let shop = Shop::open(&app, 10, 500).await;
    let body = shop.order(1, "pm_card_ok");

    let responses =
        futures::future::join_all((0..50).map(|_| place(&app, &shop.customer, &body, None))).await;

    let mut placed = Vec::new();
    for response in responses {
        match response.status() {
            StatusCode::CREATED => placed.push(response.json::<Value>().await.expect("json")),
            StatusCode::CONFLICT => {}
            other => panic!("unexpected status {other}"),
        }
    }
    let mut paid = 0;
    for order in &placed {
        let id = order["id"].as_str().expect("id");
        let settled = loop {
            let current = get(&app, &shop.customer, &format!("/v1/orders/{id}")).await;
            if matches!(current["status"].as_str(), Some("PAID" | "CANCELLED")) {
                break current;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if settled["status"] == "PAID" {
            paid += 1;
        }
    }
    assert_eq!(paid, 10);
    assert_eq!(
        stock(&app, &shop).await,
        json!({"on_hand": 0, "reserved": 0, "available": 0})
    );
}

#[tokio::test]
async fn a_declined_card_cancels_the_order_and_restores_the_stock() {
    let app = spawn_app().await;
    let shop = Shop::open(&app, 3, 900).await;

    let response = place(
        &app,
        &shop.customer,
        &shop.order(2, "pm_card_declined"),
        None,
    )
    .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.expect("json");
    let cancelled = wait_for(
        &app,
        &shop.customer,
        order["id"].as_str().expect("id"),
        "CANCELLED",
    )
    .await;
    assert!(
        cancelled["cancel_reason"]
            .as_str()
            .expect("reason")
            .contains("declined")
    );
    assert_eq!(
        stock(&app, &shop).await,
        json!({"on_hand": 3, "reserved": 0, "available": 3})
    );
}

#[tokio::test]
async fn ordering_more_than_is_in_stock_is_a_409_that_reserves_nothing() {
    let app = spawn_app().await;
    let shop = Shop::open(&app, 2, 900).await;

    let response = place(&app, &shop.customer, &shop.order(3, "pm_card_ok"), None).await;

    assert_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(
        stock(&app, &shop).await,
        json!({"on_hand": 2, "reserved": 0, "available": 2})
    );
}

#[tokio::test]
async fn an_order_placed_while_the_address_book_is_out_is_a_503_to_retry_that_reserves_nothing() {
    let (app, mut proxy) = spawn_behind_proxy("USER").await;
    let shop = Shop::open(&app, 2, 900).await;

    proxy.cut();
    let response = place(&app, &shop.customer, &shop.order(1, "pm_card_ok"), None).await;
    proxy.restore().await;

    assert_eq!(retry_after(&response), Some("1"));
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        stock(&app, &shop).await,
        json!({"on_hand": 2, "reserved": 0, "available": 2})
    );
    let orders = get(&app, &shop.customer, "/v1/orders").await;
    assert_eq!(orders["items"], json!([]));
}

#[tokio::test]
async fn twenty_concurrent_requests_with_one_key_make_one_order_and_one_charge() {
    let app = spawn_app().await;
    let shop = Shop::open(&app, 50, 700).await;
    let body = shop.order(1, "pm_card_ok");

    let responses = futures::future::join_all(
        (0..20).map(|_| place(&app, &shop.customer, &body, Some("checkout-42"))),
    )
    .await;

    let mut ids = std::collections::HashSet::new();
    for response in responses {
        assert_eq!(response.status(), StatusCode::CREATED);
        let order: Value = response.json().await.expect("json");
        ids.insert(order["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1, "one order for one key");
    let list = get(&app, &shop.customer, "/v1/orders").await;
    assert_eq!(list["items"].as_array().expect("items").len(), 1);
    assert_eq!(
        stock(&app, &shop).await["on_hand"],
        49,
        "charged and shipped from stock once"
    );
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_refused() {
    let app = spawn_app().await;
    let shop = Shop::open(&app, 50, 700).await;
    let first = place(
        &app,
        &shop.customer,
        &shop.order(1, "pm_card_ok"),
        Some("key-1"),
    )
    .await;
    assert_eq!(first.status(), StatusCode::CREATED);

    let second = place(
        &app,
        &shop.customer,
        &shop.order(2, "pm_card_ok"),
        Some("key-1"),
    )
    .await;

    let problem = assert_problem(second, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("Idempotency-Key")
    );
}

#[tokio::test]
async fn invalid_orders_are_refused_and_reserve_nothing() {
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 700).await;
    let (_, other) = app.customer().await;
    let other_address: Value = app
        .request(Method::POST, "/v1/users/me/addresses")
        .bearer_auth(other["access_token"].as_str().expect("token"))
        .json(&json!({"line1": "2 Other St", "city": "Paris", "postal_code": "75001", "country": "FR"}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let cases = [
        (
            json!({"items": [], "shipping_address_id": shop.address_id, "payment_method": "pm_card_ok"}),
            StatusCode::BAD_REQUEST,
        ),
        (shop.order(0, "pm_card_ok"), StatusCode::BAD_REQUEST),
        (shop.order(-1, "pm_card_ok"), StatusCode::BAD_REQUEST),
        (shop.order(1, "pm_card_bitcoin"), StatusCode::BAD_REQUEST),
        (
            json!({"items": [{"product_id": Uuid::new_v4(), "quantity": 1}], "shipping_address_id": shop.address_id, "payment_method": "pm_card_ok"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"items": [{"product_id": shop.product_id, "quantity": 1}], "shipping_address_id": other_address["id"], "payment_method": "pm_card_ok"}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (body, status) in cases {
        let response = place(&app, &shop.customer, &body, None).await;

        assert_problem(response, status).await;
    }
    assert_eq!(
        stock(&app, &shop).await,
        json!({"on_hand": 5, "reserved": 0, "available": 5})
    );
    let list = get(&app, &shop.customer, "/v1/orders").await;
    assert!(
        list["items"].as_array().expect("items").is_empty(),
        "nothing was recorded"
    );
}

#[tokio::test]
async fn an_order_of_only_free_products_is_refused_and_reserves_nothing() {
    // Arrange
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 0).await;

    // Act
    let response = place(&app, &shop.customer, &shop.order(1, "pm_card_ok"), None).await;

    // Assert
    let problem = assert_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("total is 0")),
        "{problem}"
    );
    assert_eq!(
        stock(&app, &shop).await,
        json!({"on_hand": 5, "reserved": 0, "available": 5})
    );
}

#[tokio::test]
async fn an_archived_product_cannot_be_ordered() {
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 700).await;
    let archived = app
        .request(Method::DELETE, &format!("/v1/products/{}", shop.product_id))
        .bearer_auth(&shop.admin)
        .send()
        .await
        .expect("sent");
    assert!(archived.status().is_success());

    let response = place(&app, &shop.customer, &shop.order(1, "pm_card_ok"), None).await;

    assert_problem(response, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn another_customers_order_is_not_found() {
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 700).await;
    let order: Value = place(&app, &shop.customer, &shop.order(1, "pm_card_ok"), None)
        .await
        .json()
        .await
        .expect("json");
    let (_, stranger) = app.customer().await;
    let stranger = stranger["access_token"].as_str().expect("token");
    let id = order["id"].as_str().expect("id");

    for path in [
        format!("/v1/orders/{id}"),
        format!("/v1/orders/{id}/payment"),
        format!("/v1/orders/{id}/events"),
    ] {
        let response = app.get_with_token(&path, stranger).await;

        assert_problem(response, StatusCode::NOT_FOUND).await;
    }
    let cancel = app
        .request(Method::POST, &format!("/v1/orders/{id}/cancel"))
        .bearer_auth(stranger)
        .send()
        .await
        .expect("sent");
    assert_problem(cancel, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn an_order_ships_is_delivered_and_is_refunded_in_parts_never_beyond_its_total() {
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 1000).await;
    let id = paid_order(&app, &shop).await;

    let shipped = admin_post(
        &app,
        &shop,
        &format!("/v1/orders/{id}/ship"),
        json!({"carrier": "UPS", "tracking_number": "1Z999"}),
        None,
    )
    .await;
    let delivered = app
        .request(Method::POST, &format!("/v1/orders/{id}/deliver"))
        .bearer_auth(&shop.admin)
        .send()
        .await
        .expect("sent");
    let partial = admin_post(
        &app,
        &shop,
        &format!("/v1/orders/{id}/refunds"),
        json!({"amount": 600, "reason": "scratched cover"}),
        None,
    )
    .await;
    let too_much = admin_post(
        &app,
        &shop,
        &format!("/v1/orders/{id}/refunds"),
        json!({"amount": 500, "reason": "again"}),
        None,
    )
    .await;
    let rest = admin_post(
        &app,
        &shop,
        &format!("/v1/orders/{id}/refunds"),
        json!({"amount": 400, "reason": "returned"}),
        None,
    )
    .await;

    assert_eq!(shipped.status(), StatusCode::OK);
    assert_eq!(delivered.status(), StatusCode::OK);
    assert_eq!(partial.status(), StatusCode::ACCEPTED);
    let refund: Value = partial.json().await.expect("json");
    assert_eq!(refund["amount"], json!({"amount": 600, "currency": "USD"}));
    assert_eq!(refund["status"], "pending");
    assert_problem(too_much, StatusCode::CONFLICT).await;
    assert_eq!(rest.status(), StatusCode::ACCEPTED);
    let order = get(&app, &shop.customer, &format!("/v1/orders/{id}")).await;
    assert_eq!(order["status"], "REFUNDED");
    assert_eq!(
        steps(&order),
        vec![
            "PENDING",
            "RESERVED",
            "PAID",
            "SHIPPED",
            "DELIVERED",
            "PARTIALLY_REFUNDED",
            "REFUNDED"
        ]
    );
    for _ in 0..100 {
        let payment = get(&app, &shop.customer, &format!("/v1/orders/{id}/payment")).await;
        if payment["status"] == "refunded" {
            assert_eq!(
                payment["refunded_amount"],
                json!({"amount": 1000, "currency": "USD"})
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the refunds were never processed");
}

/// An admin's POST to `path` with `body`, and an `Idempotency-Key` if given.
async fn admin_post(
    app: &TestApp,
    shop: &Shop,
    path: &str,
    body: Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .request(Method::POST, path)
        .bearer_auth(&shop.admin)
        .json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("sent")
}

/// Holds the row `lock` selects (by the order's id) in `db`, has the customer
/// cancel the order, and returns once the cancellation waits on that row:
/// the holder, and the cancellation's answer to come.
async fn cancel_while_held(
    app: &TestApp,
    shop: &Shop,
    id: &str,
    db: &sqlx::PgPool,
    lock: &str,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    tokio::task::JoinHandle<reqwest::Response>,
) {
    let mut holder = db.begin().await.expect("transaction");
    sqlx::query(lock)
        .bind(Uuid::parse_str(id).expect("uuid"))
        .execute(&mut *holder)
        .await
        .expect("row locked");
    let request = app
        .request(Method::POST, &format!("/v1/orders/{id}/cancel"))
        .bearer_auth(&shop.customer);
    let cancel = tokio::spawn(async move { request.send().await.expect("sent") });
    wait_for_lock_waiters(db, 1).await;
    (holder, cancel)
}

#[tokio::test]
async fn an_order_whose_cancellation_is_refunding_it_cannot_be_shipped_or_refunded() {
    // Arrange: the cancellation's refund waits on the payment's row.
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 1000).await;
    let id = paid_order(&app, &shop).await;
    let (blocker, cancel) = cancel_while_held(
        &app,
        &shop,
        &id,
        &app.payment_db().await,
        "SELECT 1 FROM payments WHERE order_id = $1 FOR UPDATE",
    )
    .await;

    // Act
    let shipped = admin_post(
        &app,
        &shop,
        &format!("/v1/orders/{id}/ship"),
        json!({"carrier": "UPS", "tracking_number": "1Z999"}),
        None,
    )
    .await;
    let refunded = admin_post(
        &app,
        &shop,
        &format!("/v1/orders/{id}/refunds"),
        json!({"amount": 100, "reason": "goodwill"}),
        None,
    )
    .await;
    blocker.rollback().await.expect("rollback");

    // Assert
    let shipped = assert_problem(shipped, StatusCode::CONFLICT).await;
    assert_eq!(shipped["detail"], "the order is being cancelled");
    assert_problem(refunded, StatusCode::CONFLICT).await;
    assert_eq!(cancel.await.expect("cancelled").status(), StatusCode::OK);
    let order = wait_for(&app, &shop.customer, &id, "CANCELLED").await;
    assert_eq!(
        order["refunded_amount"],
        json!({"amount": 1000, "currency": "USD"})
    );
    let payment = get(&app, &shop.customer, &format!("/v1/orders/{id}/payment")).await;
    assert_eq!(
        payment["refunds"].as_array().map(Vec::len),
        Some(1),
        "only the cancellation's refund was made"
    );
}

#[tokio::test]
async fn a_cancellation_body_when_given_is_a_json_object_and_bad_ones_cancel_nothing() {
    // Arrange
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 1000).await;
    let id = paid_order(&app, &shop).await;
    let cancel = |body: &'static str, content_type: &'static str| {
        app.request(Method::POST, &format!("/v1/orders/{id}/cancel"))
            .bearer_auth(&shop.customer)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    // Act
    let array = cancel(r#"["changed my mind"]"#, "application/json")
        .await
        .expect("sent");
    let text = cancel("changed my mind", "text/plain").await.expect("sent");
    let null = cancel("null", "application/json").await.expect("sent");

    // Assert
    assert_problem(array, StatusCode::BAD_REQUEST).await;
    assert_problem(text, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(
        null.status(),
        StatusCode::OK,
        "null is no reason, as no body is"
    );
    let order = wait_for(&app, &shop.customer, &id, "CANCELLED").await;
    assert_eq!(order["cancel_reason"], "cancelled by the customer");
}

#[tokio::test]
async fn a_cancellation_that_loses_the_race_to_shipping_is_refused() {
    // Arrange: the order's row is held while the customer's cancellation
    // reads it, and the admin's shipping commits first.
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 1000).await;
    let id = paid_order(&app, &shop).await;
    let orders = app.order_db().await;
    let (mut shipping, cancel) = cancel_while_held(
        &app,
        &shop,
        &id,
        &orders,
        "SELECT 1 FROM orders WHERE id = $1 FOR UPDATE",
    )
    .await;

    // Act: what shipping the order commits.
    sqlx::query("UPDATE orders SET status = 'SHIPPED', carrier = 'UPS', tracking_number = '1Z999' WHERE id = $1")
        .bind(Uuid::parse_str(&id).expect("uuid"))
        .execute(&mut *shipping)
        .await
        .expect("shipped");
    shipping.commit().await.expect("committed");
    let cancel = cancel.await.expect("answered");

    // Assert
    let problem = assert_problem(cancel, StatusCode::CONFLICT).await;
    assert_eq!(
        problem["detail"],
        "an order in status SHIPPED cannot be cancelled"
    );
    let requested: bool = sqlx::query_scalar("SELECT cancel_requested FROM orders WHERE id = $1")
        .bind(Uuid::parse_str(&id).expect("uuid"))
        .fetch_one(&orders)
        .await
        .expect("order");
    assert!(!requested, "a shipped order has no cancellation pending");
}

#[tokio::test]
async fn a_refund_repeated_with_its_idempotency_key_is_made_and_counted_once() {
    // Arrange
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 1000).await;
    let id = paid_order(&app, &shop).await;
    let path = format!("/v1/orders/{id}/refunds");
    let body = json!({"amount": 400, "reason": "scratched cover"});

    // Act
    let first = admin_post(&app, &shop, &path, body.clone(), Some("refund-1")).await;
    let again = admin_post(&app, &shop, &path, body, Some("refund-1")).await;
    let other = admin_post(
        &app,
        &shop,
        &path,
        json!({"amount": 300, "reason": "scratched cover"}),
        Some("refund-1"),
    )
    .await;

    // Assert
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.expect("json");
    let again: Value = again.json().await.expect("json");
    assert_eq!(first["id"], again["id"]);
    let problem = assert_problem(other, StatusCode::CONFLICT).await;
    assert_eq!(
        problem["detail"],
        "idempotency_key: already used for another refund of this order"
    );
    let order = get(&app, &shop.customer, &format!("/v1/orders/{id}")).await;
    assert_eq!(order["status"], "PARTIALLY_REFUNDED");
    assert_eq!(
        order["refunded_amount"],
        json!({"amount": 400, "currency": "USD"})
    );
    let payment = get(&app, &shop.customer, &format!("/v1/orders/{id}/payment")).await;
    assert_eq!(payment["refunds"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_refund_whose_answer_was_lost_is_made_once_when_asked_again_with_its_key() {
    // Arrange: the order service cannot record the refund before the
    // gateway's deadline, after the payment service made it.
    let mut env = test_env();
    env.insert("GATEWAY_BACKEND_TIMEOUT_MS".to_owned(), "1500".to_owned());
    let app = spawn_with(gocommerce::Component::All, env).await;
    let shop = Shop::open(&app, 5, 1000).await;
    let id = paid_order(&app, &shop).await;
    let path = format!("/v1/orders/{id}/refunds");
    let body = json!({"amount": 400, "reason": "scratched cover"});
    let orders = app.order_db().await;
    let mut blocker = orders.begin().await.expect("transaction");
    sqlx::query("LOCK TABLE order_history IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("history locked");
    let lost = admin_post(&app, &shop, &path, body.clone(), Some("refund-1")).await;
    blocker.rollback().await.expect("rollback");

    // Act
    let again = admin_post(&app, &shop, &path, body, Some("refund-1")).await;

    // Assert
    assert!(
        lost.status().is_server_error(),
        "the first answer is lost: {}",
        lost.status()
    );
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let order = get(&app, &shop.customer, &format!("/v1/orders/{id}")).await;
    assert_eq!(
        order["refunded_amount"],
        json!({"amount": 400, "currency": "USD"})
    );
    let payment = get(&app, &shop.customer, &format!("/v1/orders/{id}/payment")).await;
    let refunds = payment["refunds"].as_array().expect("refunds");
    assert_eq!(refunds.len(), 1, "one refund, not one per request");
    assert_eq!(
        refunds[0]["amount"],
        json!({"amount": 400, "currency": "USD"})
    );
}

#[tokio::test]
async fn an_order_partly_refunded_before_shipping_is_still_shipped_and_delivered_once() {
    // Arrange: a goodwill refund on a paid order
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 1000).await;
    let id = paid_order(&app, &shop).await;
    let refunded = admin_post(
        &app,
        &shop,
        &format!("/v1/orders/{id}/refunds"),
        json!({"amount": 100, "reason": "goodwill"}),
        None,
    )
    .await;
    assert_eq!(refunded.status(), StatusCode::ACCEPTED);
    let ship_path = format!("/v1/orders/{id}/ship");
    let deliver_path = format!("/v1/orders/{id}/deliver");
    let ship = || {
        admin_post(
            &app,
            &shop,
            &ship_path,
            json!({"carrier": "UPS", "tracking_number": "1Z999"}),
            None,
        )
    };
    let deliver = || admin_post(&app, &shop, &deliver_path, json!({}), None);

    // Act
    let early_delivery = deliver().await;
    let shipped = ship().await;
    let refunded_again = admin_post(
        &app,
        &shop,
        &format!("/v1/orders/{id}/refunds"),
        json!({"amount": 100, "reason": "late"}),
        None,
    )
    .await;
    let shipped_twice = ship().await;
    let delivered = deliver().await;
    let delivered_twice = deliver().await;

    // Assert
    assert_problem(early_delivery, StatusCode::CONFLICT).await;
    assert_eq!(shipped.status(), StatusCode::OK);
    assert_eq!(refunded_again.status(), StatusCode::ACCEPTED);
    assert_problem(shipped_twice, StatusCode::CONFLICT).await;
    assert_eq!(delivered.status(), StatusCode::OK);
    assert_problem(delivered_twice, StatusCode::CONFLICT).await;
    let order = get(&app, &shop.customer, &format!("/v1/orders/{id}")).await;
    assert_eq!(
        steps(&order),
        vec![
            "PENDING",
            "RESERVED",
            "PAID",
            "PARTIALLY_REFUNDED",
            "SHIPPED",
            "PARTIALLY_REFUNDED",
            "DELIVERED"
        ]
    );
    assert_eq!(
        order["refunded_amount"],
        json!({"amount": 200, "currency": "USD"})
    );
}

#[tokio::test]
async fn illegal_transitions_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 1000).await;
    let id = paid_order(&app, &shop).await;
    let admin_post = |path: String, body: Option<Value>| {
        let app = &app;
        let admin = shop.admin.clone();
        async move {
            let mut request = app.request(Method::POST, &path).bearer_auth(admin);
            if let Some(body) = body {
                request = request.json(&body);
            }
            request.send().await.expect("sent")
        }
    };

    // PAID: not yet shipped, so it cannot be delivered.
    assert_problem(
        admin_post(format!("/v1/orders/{id}/deliver"), None).await,
        StatusCode::CONFLICT,
    )
    .await;
    let cancelled = app
        .request(Method::POST, &format!("/v1/orders/{id}/cancel"))
        .bearer_auth(&shop.customer)
        .send()
        .await
        .expect("sent");
    assert_eq!(cancelled.status(), StatusCode::OK);
    wait_for(&app, &shop.customer, &id, "CANCELLED").await;
    let before = get(&app, &shop.customer, &format!("/v1/orders/{id}")).await;

    // CANCELLED is the end: nothing else may happen to it.
    assert_problem(
        admin_post(
            format!("/v1/orders/{id}/ship"),
            Some(json!({"carrier": "UPS", "tracking_number": "1"})),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_problem(
        admin_post(format!("/v1/orders/{id}/deliver"), None).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_problem(
        admin_post(
            format!("/v1/orders/{id}/refunds"),
            Some(json!({"amount": 1, "reason": "x"})),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    let again = app
        .request(Method::POST, &format!("/v1/orders/{id}/cancel"))
        .bearer_auth(&shop.customer)
        .send()
        .await
        .expect("sent");
    assert_problem(again, StatusCode::CONFLICT).await;

    let after = get(&app, &shop.customer, &format!("/v1/orders/{id}")).await;
    assert_eq!(before["history"], after["history"]);
    assert_eq!(
        after["refunded_amount"],
        json!({"amount": 1000, "currency": "USD"}),
        "cancelling a paid order refunds it"
    );
}

#[tokio::test]
async fn control_characters_in_a_carrier_tracking_number_or_reason_are_refused_and_change_nothing()
{
    // PostgreSQL's text cannot hold a NUL: these were 500s once an order existed.
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 1000).await;
    let id = paid_order(&app, &shop).await;
    let before = get(&app, &shop.customer, &format!("/v1/orders/{id}")).await;
    let send = |token: String, path: String, body: Value| {
        let app = &app;
        async move {
            app.request(Method::POST, &path)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("sent")
        }
    };

    let ship = send(
        shop.admin.clone(),
        format!("/v1/orders/{id}/ship"),
        json!({"carrier": "UPS", "tracking_number": "1Z\u{0}999"}),
    )
    .await;
    let ship_on_two_lines = send(
        shop.admin.clone(),
        format!("/v1/orders/{id}/ship"),
        json!({"carrier": "UPS\nDHL", "tracking_number": "1Z999"}),
    )
    .await;
    let refund = send(
        shop.admin.clone(),
        format!("/v1/orders/{id}/refunds"),
        json!({"amount": 100, "reason": "broken\u{0}"}),
    )
    .await;
    let cancel = send(
        shop.customer.clone(),
        format!("/v1/orders/{id}/cancel"),
        json!({"reason": "\u{0}changed my mind"}),
    )
    .await;

    for (response, field) in [
        (ship, "tracking_number"),
        (ship_on_two_lines, "carrier"),
        (refund, "reason"),
        (cancel, "reason"),
    ] {
        let problem = assert_problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(problem_fields(&problem), vec![field]);
        assert_eq!(
            problem["errors"][0]["message"],
            "must not contain control characters"
        );
    }
    let after = get(&app, &shop.customer, &format!("/v1/orders/{id}")).await;
    assert_eq!(after["status"], "PAID");
    assert_eq!(before["history"], after["history"]);
    assert_eq!(
        after["refunded_amount"],
        json!({"amount": 0, "currency": "USD"})
    );
}

#[tokio::test]
async fn the_order_and_payment_services_refuse_control_characters_from_any_caller() {
    // The gateway checks first; a peer calling the services directly must not
    // reach PostgreSQL with a NUL either.
    use gocommerce_platform::config::ServiceName;
    use gocommerce_platform::{Caller, Role};
    use gocommerce_proto::order::v1 as order_pb;
    use gocommerce_proto::payment::v1 as payment_pb;

    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 1000).await;
    let id = paid_order(&app, &shop).await;
    let ports = &app.running.as_ref().expect("running").ports;
    let url = |service| format!("http://127.0.0.1:{}", ports[&service]);
    let mut orders =
        order_pb::order_service_client::OrderServiceClient::connect(url(ServiceName::Order))
            .await
            .expect("order service");
    let mut payments = payment_pb::payment_service_client::PaymentServiceClient::connect(url(
        ServiceName::Payment,
    ))
    .await
    .expect("payment service");
    let mut ship = tonic::Request::new(order_pb::ShipOrderRequest {
        order_id: id.clone(),
        carrier: "UPS".to_owned(),
        tracking_number: "1Z\u{0}999".to_owned(),
    });
    Caller {
        user_id: Uuid::now_v7(),
        role: Role::Admin,
    }
    .write_to(ship.metadata_mut());

    let ship = orders.ship_order(ship).await.expect_err("refused");
    let refund = payments
        .refund_payment(payment_pb::RefundPaymentRequest {
            order_id: id.clone(),
            amount: Some(gocommerce_proto::common::v1::Money {
                amount: 100,
                currency: "USD".to_owned(),
            }),
            reason: "broken\u{0}".to_owned(),
            refund_id: Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("refused");

    assert_eq!(ship.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        ship.message(),
        "tracking_number: must not contain control characters"
    );
    assert_eq!(refund.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        refund.message(),
        "reason: must not contain control characters"
    );
    let after = get(&app, &shop.customer, &format!("/v1/orders/{id}")).await;
    assert_eq!(after["status"], "PAID");
    let payment = get(&app, &shop.customer, &format!("/v1/orders/{id}/payment")).await;
    assert_eq!(
        payment["refunded_amount"],
        json!({"amount": 0, "currency": "USD"})
    );
}

#[tokio::test]
async fn customers_cannot_ship_deliver_or_refund() {
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 1000).await;
    let order: Value = place(&app, &shop.customer, &shop.order(1, "pm_card_ok"), None)
        .await
        .json()
        .await
        .expect("json");
    let id = order["id"].as_str().expect("id");

    for (path, body) in [
        (
            format!("/v1/orders/{id}/ship"),
            json!({"carrier": "UPS", "tracking_number": "1"}),
        ),
        (
            format!("/v1/orders/{id}/refunds"),
            json!({"amount": 1, "reason": "x"}),
        ),
    ] {
        let response = app
            .request(Method::POST, &path)
            .bearer_auth(&shop.customer)
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_problem(response, StatusCode::FORBIDDEN).await;
    }
    let admin_list = app
        .get_with_token("/v1/admin/orders?status=PAID", &shop.customer)
        .await;
    assert_problem(admin_list, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn order_lists_are_newest_first_and_paginated() {
    let app = spawn_app().await;
    let shop = Shop::open(&app, 20, 100).await;
    let mut ids = Vec::new();
    let mut quantities = std::collections::HashMap::new();
    for quantity in 1..=5 {
        let order: Value = place(
            &app,
            &shop.customer,
            &shop.order(quantity, "pm_card_ok"),
            None,
        )
        .await
        .json()
        .await
        .expect("json");
        let id = order["id"].as_str().expect("id").to_owned();
        quantities.insert(id.clone(), quantity);
        ids.push(id);
    }
    ids.reverse();

    let first = get(&app, &shop.customer, "/v1/orders?page_size=3").await;
    let token = first["next_page_token"].as_str().expect("a next page");
    let second = get(
        &app,
        &shop.customer,
        &format!("/v1/orders?page_size=3&page_token={token}"),
    )
    .await;
    let admin = get(
        &app,
        &shop.admin,
        "/v1/admin/orders?status=PAID&page_size=100",
    )
    .await;

    let listed: Vec<String> = first["items"]
        .as_array()
        .expect("items")
        .iter()
        .chain(second["items"].as_array().expect("items"))
        .map(|o| o["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(listed, ids);
    for order in first["items"]
        .as_array()
        .expect("items")
        .iter()
        .chain(second["items"].as_array().expect("items"))
    {
        let id = order["id"].as_str().expect("id");
        let lines = order["items"]
            .as_array()
            .expect("each listed order has its lines");
        assert_eq!(lines.len(), 1, "{id}");
        assert_eq!(
            lines[0]["quantity"], quantities[id],
            "{id} lists its own line"
        );
        assert_eq!(lines[0]["product_id"], shop.product_id.as_str());
    }
    assert!(second["next_page_token"].is_null());
    assert_eq!(admin["items"].as_array().expect("items").len(), 5);
    let bad = app
        .get_with_token("/v1/orders?page_size=101", &shop.customer)
        .await;
    assert_problem(bad, StatusCode::BAD_REQUEST).await;
    let garbage = app
        .get_with_token("/v1/orders?page_token=nonsense", &shop.customer)
        .await;
    assert_problem(garbage, StatusCode::BAD_REQUEST).await;
    // Well formed, but of a time PostgreSQL cannot hold.
    let ancient = gocommerce_platform::page::token(
        chrono::DateTime::from_timestamp(-300_000_000_000, 0).expect("a time"),
        Uuid::nil(),
    );
    let ancient = app
        .get_with_token(&format!("/v1/orders?page_token={ancient}"), &shop.customer)
        .await;
    assert_problem(ancient, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn order_events_stream_status_changes_until_the_end() {
    let mut env = test_env();
    env.insert("ORDER_RECOVERY_INTERVAL_MS".to_owned(), "100".to_owned());
    env.insert("ORDER_STEP_TIMEOUT_MS".to_owned(), "300".to_owned());
    let app = spawn_with(gocommerce::Component::All, env).await;
    let shop = Shop::open(&app, 5, 1000).await;
    // A slow card: the placement answers before the payment does.
    let order: Value = place(&app, &shop.customer, &shop.order(1, "pm_card_slow"), None)
        .await
        .json()
        .await
        .expect("json");
    let id = order["id"].as_str().expect("id");
    assert_ne!(order["status"], "PAID");

    let response = app
        .get_with_token(&format!("/v1/orders/{id}/events"), &shop.customer)
        .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut response = response;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("\"status\":\"PAID\"") {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("PAID arrives within ten seconds")
            .expect("chunk")
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }

    assert!(text.starts_with("event: status"), "{text}");
    assert!(
        text.contains("\"status\":\"RESERVED\""),
        "the first event is the current status: {text}"
    );
    let payment = get(&app, &shop.customer, &format!("/v1/orders/{id}/payment")).await;
    assert_eq!(
        payment["status"], "succeeded",
        "charged once, not cancelled"
    );
}

#[tokio::test]
async fn an_order_events_stream_is_closed_after_its_longest_life_for_the_client_to_reconnect() {
    let mut env = test_env();
    env.insert(
        "GATEWAY_EVENT_STREAM_MAX_SECONDS".to_owned(),
        "1".to_owned(),
    );
    let app = spawn_with(gocommerce::Component::All, env).await;
    let shop = Shop::open(&app, 5, 1000).await;
    let id = &paid_order(&app, &shop).await;

    let opened = tokio::time::Instant::now();
    let mut response = app
        .get_with_token(&format!("/v1/orders/{id}/events"), &shop.customer)
        .await;
    let mut text = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = response.chunk().await.expect("chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;

    assert!(
        ended.is_ok(),
        "a PAID order's stream ends without a final status"
    );
    assert!(opened.elapsed() >= Duration::from_millis(900));
    assert!(text.starts_with("event: status"), "{text}");
    assert!(text.contains("\"status\":\"PAID\""), "{text}");
    assert!(text.contains("\"final\":false"), "{text}");
}

#[tokio::test]
async fn an_order_events_stream_ends_when_the_session_of_its_token_does() {
    // Arrange: a stream open on a paid order, which is not final
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 1000).await;
    let id = &paid_order(&app, &shop).await;
    let mut response = app
        .get_with_token(&format!("/v1/orders/{id}/events"), &shop.customer)
        .await;
    let first = tokio::time::timeout(Duration::from_secs(10), response.chunk())
        .await
        .expect("the current status arrives")
        .expect("chunk")
        .expect("the stream is open");
    assert!(String::from_utf8_lossy(&first).contains("\"status\":\"PAID\""));

    // Act
    let logout = app
        .request(Method::POST, "/v1/auth/logout-everywhere")
        .bearer_auth(&shop.customer)
        .send()
        .await
        .expect("request");

    // Assert: well before the stream's five minutes
    assert_eq!(logout.status(), StatusCode::OK);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while response.chunk().await.expect("chunk").is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream of an ended session closes");
}

#[tokio::test]
async fn an_order_left_behind_by_a_crash_is_finished_by_recovery() {
    let mut env = test_env();
    env.insert("ORDER_RECOVERY_INTERVAL_MS".to_owned(), "100".to_owned());
    let app = spawn_with(gocommerce::Component::All, env).await;
    let shop = Shop::open(&app, 5, 1000).await;
    let me: Value = get(&app, &shop.customer, "/v1/auth/me").await;
    let order_db = app.order_db().await;
    // What a process that died right after recording the orders leaves: one
    // PENDING (nothing reserved yet), one RESERVED whose charge was under way,
    // and one RESERVED whose charge the payment service had already taken.
    let stranded = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let mut reserve = Vec::new();
    for (index, id) in stranded.iter().enumerate() {
        let status = if index == 0 { "PENDING" } else { "RESERVED" };
        // One transaction, as the service writes them: the recovery loop
        // must never find the order without its items.
        let mut tx = order_db.begin().await.expect("transaction");
        sqlx::query(
            "INSERT INTO orders (id, user_id, status, currency, total, shipping_address, shipping_address_id, \
             payment_method, charge_started, next_attempt_at) VALUES ($1, $2, $3, 'USD', 1000, '{}', $4, 'pm_card_ok', \
             $5, now() - interval '1 second')",
        )
        .bind(id)
        .bind(Uuid::parse_str(me["id"].as_str().expect("id")).expect("uuid"))
        .bind(status)
        .bind(Uuid::parse_str(&shop.address_id).expect("uuid"))
        .bind(index > 0)
        .execute(&mut *tx)
        .await
        .expect("insert order");
        sqlx::query(
            "INSERT INTO order_items (order_id, position, product_id, sku, name, unit_price, quantity, line_total) \
             VALUES ($1, 0, $2, 'SKU', 'The Analytical Engine', 1000, 1, 1000)",
        )
        .bind(id)
        .bind(Uuid::parse_str(&shop.product_id).expect("uuid"))
        .execute(&mut *tx)
        .await
        .expect("insert item");
        sqlx::query("INSERT INTO order_history (order_id, to_status, actor, reason) VALUES ($1, 'PENDING', 'test', 'placed')")
            .bind(id)
            .execute(&mut *tx)
            .await
            .expect("history");
        tx.commit().await.expect("committed");
        if index > 0 {
            reserve.push(*id);
        }
    }
    // The RESERVED ones really hold their stock, as they would have.
    let ports = &app.running.as_ref().expect("running").ports;
    let url = format!(
        "http://127.0.0.1:{}",
        ports[&gocommerce_platform::config::ServiceName::Product]
    );
    let mut product =
        gocommerce_proto::product::v1::product_service_client::ProductServiceClient::connect(url)
            .await
            .expect("product service");
    for id in reserve {
        product
            .reserve_stock(gocommerce_proto::product::v1::ReserveStockRequest {
                order_id: id.to_string(),
                items: vec![gocommerce_proto::product::v1::ReservationItem {
                    product_id: shop.product_id.clone(),
                    quantity: 1,
                }],
            })
            .await
            .expect("reserved");
    }
    let mut payment =
        gocommerce_proto::payment::v1::payment_service_client::PaymentServiceClient::connect(
            format!(
                "http://127.0.0.1:{}",
                ports[&gocommerce_platform::config::ServiceName::Payment]
            ),
        )
        .await
        .expect("payment service");
    let taken = payment
        .charge(gocommerce_proto::payment::v1::ChargeRequest {
            order_id: stranded[2].to_string(),
            user_id: me["id"].as_str().expect("id").to_owned(),
            amount: Some(gocommerce_proto::common::v1::Money {
                amount: 1000,
                currency: "USD".to_owned(),
            }),
            payment_method: "pm_card_ok".to_owned(),
        })
        .await
        .expect("charged")
        .into_inner()
        .payment
        .expect("payment");

    for id in stranded {
        wait_for(&app, &shop.customer, &id.to_string(), "PAID").await;
    }

    assert_eq!(
        stock(&app, &shop).await,
        json!({"on_hand": 2, "reserved": 0, "available": 2})
    );
    let (captured, payment_id): (bool, Option<Uuid>) =
        sqlx::query_as("SELECT payment_captured, payment_id FROM orders WHERE id = $1")
            .bind(stranded[2])
            .fetch_one(&order_db)
            .await
            .expect("order row");
    assert!(captured);
    assert_eq!(
        payment_id.map(|id| id.to_string()),
        Some(taken.id),
        "the order is paid by the charge taken before the crash, not a second one"
    );
}
