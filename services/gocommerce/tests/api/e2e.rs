//! The whole platform through the REST API only, the way a shop uses it: a
//! customer registers, browses, orders and is told by email at every step,
//! while an admin runs the catalog and the fulfilment; one trace follows the
//! order from the gateway through the services and RabbitMQ to the email.

use std::time::Duration;

use opentelemetry::trace::TraceId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, finished_spans};
use crate::mailbox::SmtpServer;
use crate::notifications::{get, post, spawn_with_smtp, wait_for_item, wait_for_status};

/// The finished spans of `trace_id` as `name` or `name[routing_key]` (the
/// consumer's spans say which event they handled), once every one of `wanted`
/// is among them (spans end when their work does, the consumer's last), for
/// at most ten seconds.
async fn trace_spans(trace_id: TraceId, wanted: &[&str]) -> Vec<String> {
    let collect = || -> Vec<String> {
        finished_spans()
            .into_iter()
            .filter(|s| s.span_context.trace_id() == trace_id)
            .map(|s| {
                match s
                    .attributes
                    .iter()
                    .find(|kv| kv.key.as_str() == "routing_key")
                {
                    Some(kv) => format!("{}[{}]", s.name, kv.value),
                    None => s.name.to_string(),
                }
            })
            .collect()
    };
    for _ in 0..100 {
        let names = collect();
        if wanted
            .iter()
            .all(|w| names.iter().any(|n| n.starts_with(w)))
        {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    collect()
}

#[tokio::test]
async fn a_customer_registers_browses_orders_and_is_notified_through_shipping_delivery_and_refund()
{
    // The platform, with email going to a real SMTP server.
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;

    // A customer registers and logs in.
    let email = format!("ada-{}@example.com", Uuid::new_v4().simple());
    let registered = app.register(&email, PASSWORD, "Ada Lovelace").await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let login = app.login(&email, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let login: Value = login.json().await.expect("json");
    let customer = login["access_token"].as_str().expect("token").to_owned();
    smtp.wait_for(1, Duration::from_secs(15), |m| {
        m.to == email && m.subject == "Welcome to GoCommerce, Ada Lovelace"
    })
    .await;

    // The bootstrap admin fills the catalog.
    let admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(admin.status(), StatusCode::OK);
    let admin: Value = admin.json().await.expect("json");
    let admin = admin["access_token"].as_str().expect("token").to_owned();
    let slug = format!("engines-{}", Uuid::new_v4().simple());
    let category = post(
        &app,
        &admin,
        "/v1/categories",
        &json!({"name": "Engines", "slug": slug}),
    )
    .await;
    let product = post(
        &app,
        &admin,
        "/v1/products",
        &json!({
            "sku": format!("ENG-{}", Uuid::new_v4().simple()),
            "name": "Analytical Engine",
            "description": "A general-purpose mechanical computer",
            "price": {"amount": 1299, "currency": "USD"},
            "category_id": category["id"],
            "stock": 10,
        }),
    )
    .await;
    let product_id = product["id"].as_str().expect("id").to_owned();

    // The customer browses and searches.
    let categories = get(&app, &customer, "/v1/categories").await;
    assert!(
        categories["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|c| c["slug"] == slug.as_str()),
        "{categories:#}"
    );
    let found = get(
        &app,
        &customer,
        &format!("/v1/products?q=analytical&category={slug}"),
    )
    .await;
    let hits: Vec<&str> = found["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["id"].as_str().expect("id"))
        .collect();
    assert_eq!(hits, vec![product_id.as_str()], "{found:#}");
    let shown = get(&app, &customer, &format!("/v1/products/{product_id}")).await;
    assert_eq!(shown["name"], "Analytical Engine");
    assert_eq!(shown["price"], json!({"amount": 1299, "currency": "USD"}));
    assert_eq!(shown["in_stock"], true);

    // ... adds an address and places an order, traced from the first byte.
    let address = post(
        &app,
        &customer,
        "/v1/users/me/addresses",
        &json!({"line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"}),
    )
    .await;
    let trace_hex = Uuid::new_v4().simple().to_string();
    let placed = app
        .request(Method::POST, "/v1/orders")
        .bearer_auth(&customer)
        .header("traceparent", format!("00-{trace_hex}-00f067aa0ba902b7-01"))
        .json(&json!({
            "items": [{"product_id": product_id, "quantity": 2}],
            "shipping_address_id": address["id"],
            "payment_method": "pm_card_ok",
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(placed.status(), StatusCode::CREATED);
    let placed: Value = placed.json().await.expect("json");
    let order_id = placed["id"].as_str().expect("id").to_owned();

    // It is paid, and the confirmation arrives and is listed.
    let paid = wait_for_status(&app, &customer, &order_id, "PAID").await;
    assert_eq!(paid["total"], json!({"amount": 2598, "currency": "USD"}));
    let confirmation = smtp
        .wait_for(1, Duration::from_secs(15), |m| {
            m.to == email && m.subject == format!("Order {order_id} confirmed")
        })
        .await;
    assert!(
        confirmation[0]
            .body
            .contains("2 x Analytical Engine at USD 12.99 = USD 25.98"),
        "{}",
        confirmation[0].body
    );
    assert!(confirmation[0].body.contains("Total: USD 25.98"));
    let listed = wait_for_item(
        &app,
        &customer,
        "/v1/notifications",
        Duration::from_secs(5),
        |n| n["event_type"] == "order.paid" && n["channel"] == "email" && n["status"] != "pending",
    )
    .await;
    assert_eq!(listed["status"], "sent");
    assert_eq!(listed["recipient"], email.as_str());
    assert_eq!(
        listed["subject"],
        format!("Order {order_id} confirmed").as_str()
    );

    // One trace: gateway, order, product and payment, the event through
    // RabbitMQ, and the notification service that consumed it.
    let trace_id = TraceId::from_hex(&trace_hex).expect("hex");
    let wanted = [
        "POST /v1/orders",
        "gocommerce.order.v1.OrderService/PlaceOrder",
        "gocommerce.product.v1.ProductService/",
        "gocommerce.payment.v1.PaymentService/Charge",
        "order.paid publish",
        "notification.events receive[order.paid]",
    ];
    let spans = trace_spans(trace_id, &wanted).await;
    for wanted in wanted {
        assert!(
            spans.iter().any(|n| n.starts_with(wanted)),
            "no {wanted:?} span in the order's trace: {spans:?}"
        );
    }

    // The admin ships, delivers and refunds it; each step is told.
    let shipped = post(
        &app,
        &admin,
        &format!("/v1/orders/{order_id}/ship"),
        &json!({"carrier": "Royal Mail", "tracking_number": "RM123456789GB"}),
    )
    .await;
    assert_eq!(shipped["status"], "SHIPPED");
    let delivered = post(
        &app,
        &admin,
        &format!("/v1/orders/{order_id}/deliver"),
        &json!({}),
    )
    .await;
    assert_eq!(delivered["status"], "DELIVERED");
    let refund = post(
        &app,
        &admin,
        &format!("/v1/orders/{order_id}/refunds"),
        &json!({"amount": 2598, "reason": "returned"}),
    )
    .await;
    assert_eq!(refund["amount"], json!({"amount": 2598, "currency": "USD"}));
    let expected = [
        ("order.shipped", format!("Order {order_id} shipped")),
        ("order.delivered", format!("Order {order_id} delivered")),
        (
            "payment.refunded",
            format!("Refund of USD 25.98 for order {order_id}"),
        ),
    ];
    for (event_type, subject) in &expected {
        let mails = smtp
            .wait_for(1, Duration::from_secs(15), |m| {
                m.to == email && m.subject == *subject
            })
            .await;
        assert_eq!(mails.len(), 1, "{subject}");
        if *event_type == "order.shipped" {
            assert!(mails[0].body.contains("RM123456789GB"), "{}", mails[0].body);
        }
        let listed = wait_for_item(
            &app,
            &customer,
            "/v1/notifications",
            Duration::from_secs(5),
            |n| {
                n["event_type"] == *event_type
                    && n["channel"] == "email"
                    && n["status"] != "pending"
            },
        )
        .await;
        assert_eq!(listed["status"], "sent", "{listed}");
        assert_eq!(listed["subject"], subject.as_str());
    }
    let refunded = wait_for_status(&app, &customer, &order_id, "REFUNDED").await;
    assert_eq!(refunded["status"], "REFUNDED");

    // The customer's list holds exactly their emails, newest first, and the
    // admin sees them among everyone's sent notifications.
    let mine = get(&app, &customer, "/v1/notifications?page_size=100").await;
    let emails: Vec<&str> = mine["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|n| n["channel"] == "email")
        .map(|n| n["event_type"].as_str().expect("event type"))
        .collect();
    assert_eq!(
        emails,
        vec![
            "payment.refunded",
            "order.delivered",
            "order.shipped",
            "order.paid",
            "user.registered"
        ]
    );
    assert!(mine["next_page_token"].is_null());
    // Page by page, the same list: nothing twice, nothing missed.
    let everything: Vec<Value> = mine["items"].as_array().expect("items").clone();
    let mut paged: Vec<Value> = Vec::new();
    let mut path = "/v1/notifications?page_size=3".to_owned();
    loop {
        let page = get(&app, &customer, &path).await;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        paged.extend(items.iter().cloned());
        match page["next_page_token"].as_str() {
            Some(token) => path = format!("/v1/notifications?page_size=3&page_token={token}"),
            None => break,
        }
    }
    let ids = |list: &[Value]| -> Vec<String> {
        list.iter()
            .map(|n| n["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(ids(&paged), ids(&everything));
    let all_sent = get(
        &app,
        &admin,
        "/v1/admin/notifications?status=sent&page_size=100",
    )
    .await;
    let sent_to_customer = all_sent["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|n| n["recipient"] == email.as_str())
        .count();
    assert_eq!(sent_to_customer, 5, "{all_sent:#}");
    let forbidden = app
        .get_with_token("/v1/admin/notifications", &customer)
        .await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
}
