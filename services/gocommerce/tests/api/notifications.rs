//! Notifications from real events to a real SMTP server: the order
//! confirmation, retries and dead letters while SMTP is down, replay once it
//! is back, deduplication of redelivered events, and no event lost when the
//! broker drops the services' connections.

use std::collections::HashMap;
use std::time::Duration;

use gocommerce_platform::broker::{Broker, Outgoing, Publisher};
use gocommerce_platform::config::CommonConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_with, test_env};
use crate::mailbox::{Mail, SmtpServer};

/// The platform's environment with email going to `smtp` and short retry
/// tiers: three attempts, 200 ms then 400 ms apart.
pub fn env_with_smtp(smtp: &SmtpServer) -> HashMap<String, String> {
    let mut env = test_env();
    for (key, value) in [
        ("SMTP_URL", smtp.url()),
        ("NOTIFICATION_RETRY_DELAYS_MS", "200,400".to_owned()),
        ("NOTIFICATION_MAX_ATTEMPTS", "3".to_owned()),
        // Dead letters must outlive the slowest test.
        ("AMQP_QUEUE_EXPIRES_SECONDS", "120".to_owned()),
    ] {
        env.insert(key.to_owned(), value);
    }
    env
}

pub async fn spawn_with_smtp(smtp: &SmtpServer) -> TestApp {
    spawn_with(gocommerce::Component::All, env_with_smtp(smtp)).await
}

/// A product in stock and a customer with an address, made through the API.
pub struct Shop {
    pub admin: String,
    pub customer: String,
    pub email: String,
    pub product_id: String,
    pub address_id: String,
}

impl Shop {
    pub async fn open(app: &TestApp, stock: i64, price: i64) -> Self {
        let admin = app.admin_token().await;
        let category = post(
            app,
            &admin,
            "/v1/categories",
            &json!({"name": "Machines", "slug": format!("machines-{}", Uuid::new_v4().simple())}),
        )
        .await;
        let product = post(
            app,
            &admin,
            "/v1/products",
            &json!({
                "sku": format!("SKU-{}", Uuid::new_v4().simple()),
                "name": "Difference Engine",
                "description": "Tabulates polynomials",
                "price": {"amount": price, "currency": "USD"},
                "category_id": category["id"],
                "stock": stock,
            }),
        )
        .await;
        let (email, tokens) = app.customer().await;
        let customer = tokens["access_token"].as_str().expect("token").to_owned();
        let address = post(
            app,
            &customer,
            "/v1/users/me/addresses",
            &json!({"line1": "1 Analytical Row", "city": "London", "postal_code": "N1 9GU", "country": "GB"}),
        )
        .await;
        Self {
            admin,
            customer,
            email,
            product_id: product["id"].as_str().expect("id").to_owned(),
            address_id: address["id"].as_str().expect("id").to_owned(),
        }
    }

    /// Places an order for `quantity` with a good card; its id.
    pub async fn order(&self, app: &TestApp, quantity: i64) -> String {
        let order = post(
            app,
            &self.customer,
            "/v1/orders",
            &json!({
                "items": [{"product_id": self.product_id, "quantity": quantity}],
                "shipping_address_id": self.address_id,
                "payment_method": "pm_card_ok",
            }),
        )
        .await;
        order["id"].as_str().expect("id").to_owned()
    }
}

/// POSTs `body` and expects 2xx; the JSON answer.
pub async fn post(app: &TestApp, token: &str, path: &str, body: &Value) -> Value {
    let response = app
        .request(Method::POST, path)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("sent");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "POST {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

pub async fn get(app: &TestApp, token: &str, path: &str) -> Value {
    let response = app.get_with_token(path, token).await;
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "GET {path}: {text}");
    serde_json::from_str(&text).expect("json")
}

/// Polls `GET path` until an item satisfies `wanted`, for at most `timeout`.
pub async fn wait_for_item(
    app: &TestApp,
    token: &str,
    path: &str,
    timeout: Duration,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let page = get(app, token, path).await;
        if let Some(item) = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|item| wanted(item))
        {
            return item.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing in {path} matched within {timeout:?}: {page:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_for_status(app: &TestApp, token: &str, order_id: &str, status: &str) -> Value {
    for _ in 0..200 {
        let order = get(app, token, &format!("/v1/orders/{order_id}")).await;
        if order["status"] == status {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order {order_id} did not reach {status} within ten seconds");
}

fn confirmation_of<'a>(order_id: &'a str, email: &'a str) -> impl Fn(&Mail) -> bool + 'a {
    move |mail| mail.to == email && mail.subject == format!("Order {order_id} confirmed")
}

#[tokio::test]
async fn a_paid_order_sends_a_confirmation_email_with_its_id_items_and_total() {
    // Arrange
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let shop = Shop::open(&app, 5, 1299).await;

    // Act
    let order_id = shop.order(&app, 2).await;

    // Assert
    wait_for_status(&app, &shop.customer, &order_id, "PAID").await;
    let mails = smtp
        .wait_for(
            1,
            Duration::from_secs(15),
            confirmation_of(&order_id, &shop.email),
        )
        .await;
    let body = &mails[0].body;
    assert!(body.contains(&order_id), "{body}");
    assert!(
        body.contains("2 x Difference Engine at USD 12.99 = USD 25.98"),
        "{body}"
    );
    assert!(body.contains("Total: USD 25.98"), "{body}");
    let listed = wait_for_item(
        &app,
        &shop.customer,
        "/v1/notifications",
        Duration::from_secs(5),
        |n| n["event_type"] == "order.paid" && n["channel"] == "email" && n["status"] != "pending",
    )
    .await;
    assert_eq!(listed["status"], "sent");
    assert_eq!(listed["recipient"], shop.email.as_str());
    assert_eq!(listed["attempts"], 1);
    assert!(listed["sent_at"].is_string());
    // No SMS or push provider is configured: recorded, not sent.
    let page = get(&app, &shop.customer, "/v1/notifications").await;
    let skipped: Vec<&Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|n| n["event_type"] == "order.paid" && n["channel"] != "email")
        .collect();
    assert_eq!(skipped.len(), 2, "{page:#}");
    for notification in skipped {
        // Off by default (push), or no provider configured: either way a reason.
        assert_eq!(notification["status"], "skipped");
        assert!(
            notification["last_error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "{notification}"
        );
    }
}

#[tokio::test]
async fn while_smtp_is_down_an_email_retries_is_dead_lettered_and_is_sent_once_after_replay() {
    // Arrange: the customer's welcome email proves SMTP works, then it goes down.
    let mut smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let shop = Shop::open(&app, 5, 1000).await;
    let email = shop.email.clone();
    smtp.wait_for(1, Duration::from_secs(15), |m| {
        m.to == email && m.subject.starts_with("Welcome")
    })
    .await;
    smtp.stop();

    // Act
    let order_id = shop.order(&app, 1).await;
    wait_for_status(&app, &shop.customer, &order_id, "PAID").await;
    let paid_at = tokio::time::Instant::now();

    // Assert: three attempts through the tiers, then the dead letters.
    let subject = format!("Order {order_id} confirmed");
    let dead = wait_for_item(
        &app,
        &shop.admin,
        "/v1/admin/notifications?status=dead_lettered",
        Duration::from_secs(20),
        |n| n["subject"] == subject.as_str(),
    )
    .await;
    // Three attempts with the 200 ms and 400 ms tiers in between.
    assert!(
        paid_at.elapsed() >= Duration::from_millis(500),
        "dead-lettered after {:?}, too soon for the retry tiers",
        paid_at.elapsed()
    );
    assert_eq!(dead["channel"], "email");
    assert_eq!(dead["event_type"], "order.paid");
    assert_eq!(dead["recipient"], shop.email.as_str());
    assert_eq!(dead["attempts"], 3);
    let reason = dead["last_error"].as_str().expect("the reason is kept");
    assert!(reason.starts_with("smtp:"), "{reason}");
    assert!(dead.get("sent_at").is_none());
    let mine = get(&app, &shop.customer, "/v1/notifications").await;
    assert!(
        mine["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|n| n["subject"] == subject.as_str() && n["status"] == "dead_lettered"),
        "the customer sees it too: {mine:#}"
    );
    // A customer may not replay.
    let refused = app
        .request(Method::POST, "/v1/admin/notifications/dead-letters/replay")
        .bearer_auth(&shop.customer)
        .json(&json!({}))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // Act: SMTP is back and an admin replays.
    smtp.restart().await;
    let replayed = post(
        &app,
        &shop.admin,
        "/v1/admin/notifications/dead-letters/replay",
        &json!({}),
    )
    .await;

    // Assert: delivered, exactly once.
    assert_eq!(replayed["replayed"], 1);
    smtp.wait_for(
        1,
        Duration::from_secs(15),
        confirmation_of(&order_id, &shop.email),
    )
    .await;
    let sent = wait_for_item(
        &app,
        &shop.admin,
        "/v1/admin/notifications?status=sent",
        Duration::from_secs(5),
        |n| n["subject"] == subject.as_str(),
    )
    .await;
    assert_eq!(sent["attempts"], 4);
    assert!(sent.get("last_error").is_none(), "{sent}");
    assert!(sent["sent_at"].is_string());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let confirmations = smtp
        .messages()
        .into_iter()
        .filter(confirmation_of(&order_id, &shop.email))
        .count();
    assert_eq!(confirmations, 1);
    let again = post(
        &app,
        &shop.admin,
        "/v1/admin/notifications/dead-letters/replay",
        &json!({}),
    )
    .await;
    assert_eq!(again["replayed"], 0, "nothing is left in the dead letters");
}

#[tokio::test]
async fn an_event_delivered_twice_sends_one_email() {
    // Arrange
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let shop = Shop::open(&app, 5, 700).await;
    let order_id = shop.order(&app, 1).await;
    smtp.wait_for(
        1,
        Duration::from_secs(15),
        confirmation_of(&order_id, &shop.email),
    )
    .await;
    let orders = sqlx::PgPool::connect(&app.env["ORDER_DATABASE_URL"])
        .await
        .expect("order database");
    let (id, content_type, payload): (Uuid, String, Vec<u8>) = sqlx::query_as(
        "SELECT id, content_type, payload FROM outbox WHERE routing_key = 'order.paid'",
    )
    .fetch_one(&orders)
    .await
    .expect("the order.paid event");
    let broker = Broker::from_config(&CommonConfig::from_env(&app.env).expect("config"));
    let publisher = Publisher::new(broker.clone());
    let duplicate = Outgoing {
        exchange: broker.events_exchange(),
        routing_key: "order.paid".to_owned(),
        message_id: id.to_string(),
        content_type,
        payload,
        headers: HashMap::new(),
        mandatory: true,
    };

    // Act: the same envelope twice more, as a redelivery would bring it.
    publisher.publish(&duplicate).await.expect("confirmed");
    publisher.publish(&duplicate).await.expect("confirmed");
    // The queue is consumed in order: once the next order's email is out,
    // the duplicates have been handled.
    let next_order = shop.order(&app, 1).await;
    smtp.wait_for(
        1,
        Duration::from_secs(15),
        confirmation_of(&next_order, &shop.email),
    )
    .await;

    // Assert
    let confirmations = smtp
        .messages()
        .into_iter()
        .filter(confirmation_of(&order_id, &shop.email))
        .count();
    assert_eq!(confirmations, 1);
    let page = get(&app, &shop.customer, "/v1/notifications?page_size=100").await;
    let recorded = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|n| n["subject"] == format!("Order {order_id} confirmed").as_str())
        .count();
    assert_eq!(recorded, 1, "{page:#}");
    // Handled once and remembered: a later redelivery stops at the inbox.
    let notifications = sqlx::PgPool::connect(&app.env["NOTIFICATION_DATABASE_URL"])
        .await
        .expect("notification database");
    let remembered: Option<String> =
        sqlx::query_scalar("SELECT event_type FROM inbox WHERE event_id = $1")
            .bind(id)
            .fetch_optional(&notifications)
            .await
            .expect("inbox");
    assert_eq!(remembered.as_deref(), Some("order.paid"));
    broker.close().await;
}

/// Closes, from the server side, every connection of this test's services
/// (named after its AMQP namespace); how many it closed.
fn close_connections(namespace: &str) -> usize {
    let wanted = format!("gocommerce/{namespace}");
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "--silent"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(listed.status.success(), "{listed:?}");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let mut closed = 0;
    // One connection a line: its pid (`<rabbit@host.1.2.3>`), a tab, its properties.
    for line in listed.lines().filter(|line| line.contains(&wanted)) {
        let pid = line.split_whitespace().next().expect("pid");
        let output = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test: connection drop"])
            .output()
            .expect("rabbitmqctl runs");
        assert!(output.status.success(), "{pid}: {output:?}");
        closed += 1;
    }
    closed
}

#[tokio::test]
async fn every_event_is_delivered_when_the_broker_drops_the_connections_under_load() {
    // Arrange
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let namespace = app.env["AMQP_NAMESPACE"].clone();
    let shop = Shop::open(&app, 100, 500).await;
    const ORDERS: usize = 12;

    // Act: a stream of orders, the connections dropped twice along the way.
    let mut placed = Vec::new();
    for i in 0..ORDERS {
        placed.push(shop.order(&app, 1).await);
        if i == 3 || i == 7 {
            let closed = tokio::task::spawn_blocking({
                let namespace = namespace.clone();
                move || close_connections(&namespace)
            })
            .await
            .expect("closed");
            assert!(closed >= 2, "only {closed} connections of this test found");
        }
    }

    // Assert: every order paid and confirmed, each exactly once.
    for id in &placed {
        wait_for_status(&app, &shop.customer, id, "PAID").await;
    }
    let email = shop.email.clone();
    let confirmed = |m: &Mail| m.to == email && m.subject.ends_with(" confirmed");
    smtp.wait_for(ORDERS, Duration::from_secs(60), confirmed)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut subjects: Vec<String> = smtp
        .messages()
        .into_iter()
        .filter(|m| confirmed(m))
        .map(|m| m.subject)
        .collect();
    subjects.sort();
    let mut expected: Vec<String> = placed
        .iter()
        .map(|id| format!("Order {id} confirmed"))
        .collect();
    expected.sort();
    assert_eq!(subjects, expected);
    // Reconnected: ready again, the broker included.
    let ready = app
        .http
        .get(format!("{}/readyz", app.admin_address))
        .send()
        .await
        .expect("sent");
    assert_eq!(ready.status(), StatusCode::OK);
    let report: Value = ready.json().await.expect("json");
    assert!(
        report["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .any(|c| c["name"] == "broker" && c["ok"] == true),
        "{report:#}"
    );
}

#[tokio::test]
async fn without_an_smtp_server_configured_emails_are_recorded_as_skipped() {
    // Arrange: no SMTP_URL.
    let app = spawn_app().await;
    let shop = Shop::open(&app, 5, 300).await;

    // Act
    let order_id = shop.order(&app, 1).await;

    // Assert
    wait_for_status(&app, &shop.customer, &order_id, "PAID").await;
    let skipped = wait_for_item(
        &app,
        &shop.admin,
        "/v1/admin/notifications?status=skipped",
        Duration::from_secs(10),
        |n| n["subject"] == format!("Order {order_id} confirmed").as_str(),
    )
    .await;
    assert_eq!(skipped["channel"], "email");
    assert_eq!(skipped["attempts"], 0);
    assert_eq!(
        skipped["last_error"],
        "channel not configured (SMTP_URL is unset)"
    );
    assert!(skipped.get("sent_at").is_none());
    assert_problem(
        app.get_with_token("/v1/admin/notifications?status=lost", &shop.admin)
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        app.get_with_token("/v1/notifications?page_size=0", &shop.customer)
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn an_email_the_server_refuses_for_good_is_not_retried_dead_lettered_or_replayed() {
    // Arrange: the server knows no mailbox for this address (550).
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let admin = app.admin_token().await;
    let refused = format!("refused-{}@example.com", Uuid::new_v4().simple());
    let (accepted, _) = app.customer().await;

    // Act
    let registered = app
        .register(&refused, "a long enough password", "Nobody")
        .await;

    // Assert
    assert_eq!(registered.status(), StatusCode::CREATED);
    let refused_welcome = |within| {
        wait_for_item(
            &app,
            &admin,
            "/v1/admin/notifications?status=refused",
            within,
            |n| n["recipient"] == refused.as_str(),
        )
    };
    let welcome = refused_welcome(Duration::from_secs(10)).await;
    assert_eq!(welcome["attempts"], 1);
    let reason = welcome["last_error"].as_str().expect("the reason is kept");
    assert!(
        reason.starts_with("smtp:") && reason.contains("550"),
        "{reason}"
    );
    // Past both retry tiers (200 ms and 400 ms): no second attempt.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = refused_welcome(Duration::from_secs(1)).await;
    assert_eq!(again["attempts"], 1);
    let replayed = post(
        &app,
        &admin,
        "/v1/admin/notifications/dead-letters/replay",
        &json!({}),
    )
    .await;
    assert_eq!(replayed["replayed"], 0, "nothing was dead-lettered");
    smtp.wait_for(1, Duration::from_secs(10), |m| {
        m.to == accepted && m.subject.starts_with("Welcome")
    })
    .await;
}
