//! Categories, products, search, stock and the NDJSON import through the
//! REST API.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    TestApp, assert_problem, encode, json_ok, problem_fields as fields, send, spawn_app,
};

/// A fresh customer's access token.
async fn customer_token(app: &TestApp) -> String {
    let (_, tokens) = app.customer().await;
    tokens["access_token"].as_str().expect("token").to_owned()
}

pub(crate) async fn new_category(
    app: &TestApp,
    admin: &str,
    slug: &str,
    parent: Option<&str>,
) -> Value {
    let mut body = json!({"name": format!("Category {slug}"), "slug": slug});
    if let Some(parent) = parent {
        body["parent_id"] = json!(parent);
    }
    json_ok(
        send(
            app,
            Method::POST,
            "/v1/categories",
            Some(admin),
            Some(&body),
        )
        .await,
        StatusCode::CREATED,
    )
    .await
}

pub(crate) fn product_body(
    sku: &str,
    name: &str,
    price: i64,
    category_id: &str,
    stock: i64,
) -> Value {
    json!({
        "sku": sku,
        "name": name,
        "description": format!("All about {name}"),
        "price": {"amount": price, "currency": "USD"},
        "category_id": category_id,
        "stock": stock,
    })
}

pub(crate) async fn new_product(app: &TestApp, admin: &str, body: &Value) -> Value {
    json_ok(
        send(app, Method::POST, "/v1/products", Some(admin), Some(body)).await,
        StatusCode::CREATED,
    )
    .await
}

pub(crate) fn id(value: &Value) -> &str {
    value["id"].as_str().expect("id")
}

fn names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect()
}

async fn search(app: &TestApp, query: &str) -> Value {
    json_ok(
        send(
            app,
            Method::GET,
            &format!("/v1/products?{query}"),
            None,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await
}

async fn import(app: &TestApp, token: &str, body: String) -> reqwest::Response {
    app.request(Method::POST, "/v1/products/import")
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("request sent")
}

#[tokio::test]
async fn categories_are_created_listed_moved_renamed_and_deleted() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;

    let books = new_category(&app, &admin, "books", None).await;
    let poetry = new_category(&app, &admin, "poetry", Some(id(&books))).await;
    let list = json_ok(
        send(&app, Method::GET, "/v1/categories", None, None).await,
        StatusCode::OK,
    )
    .await;
    let path = format!("/v1/categories/{}", id(&poetry));
    let renamed = json_ok(
        send(
            &app,
            Method::PATCH,
            &path,
            Some(&admin),
            Some(&json!({"name": "Verse", "slug": "verse", "parent_id": null})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let read = json_ok(
        send(&app, Method::GET, &path, None, None).await,
        StatusCode::OK,
    )
    .await;
    let deleted = send(&app, Method::DELETE, &path, Some(&admin), None).await;
    let gone = send(&app, Method::GET, &path, None, None).await;

    assert_eq!(books["name"], "Category books");
    assert_eq!(books["slug"], "books");
    assert_eq!(books["parent_id"], Value::Null);
    assert_eq!(poetry["parent_id"], books["id"]);
    let slugs: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["slug"].as_str().expect("slug"))
        .collect();
    assert_eq!(slugs, vec!["books", "poetry"]);
    assert_eq!(renamed["name"], "Verse");
    assert_eq!(renamed["slug"], "verse");
    assert_eq!(renamed["parent_id"], Value::Null, "null makes it a root");
    assert_eq!(read, renamed);
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_problem(gone, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn catalog_writes_need_an_admin_token() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let customer = customer_token(&app).await;
    let books = new_category(&app, &admin, "books", None).await;
    let product = new_product(
        &app,
        &admin,
        &product_body("SKU-1", "Ledger", 500, id(&books), 3),
    )
    .await;
    let category_path = format!("/v1/categories/{}", id(&books));
    let product_path = format!("/v1/products/{}", id(&product));
    let stock_path = format!("{product_path}/stock");
    let adjust_path = format!("{product_path}/stock-adjustments");
    let body = json!({});
    let routes = [
        (Method::POST, "/v1/categories"),
        (Method::PATCH, category_path.as_str()),
        (Method::DELETE, category_path.as_str()),
        (Method::POST, "/v1/products"),
        (Method::PATCH, product_path.as_str()),
        (Method::DELETE, product_path.as_str()),
        (Method::GET, stock_path.as_str()),
        (Method::POST, adjust_path.as_str()),
        (Method::POST, "/v1/products/import"),
    ];

    for (method, path) in routes {
        let anonymous = send(&app, method.clone(), path, None, Some(&body)).await;
        let as_customer = send(&app, method.clone(), path, Some(&customer), Some(&body)).await;

        assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
        assert_problem(as_customer, StatusCode::FORBIDDEN).await;
    }
    let still_active = send(&app, Method::GET, &product_path, None, None).await;
    assert_eq!(still_active.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_taken_slug_is_409_a_malformed_one_400_and_a_busy_category_cannot_be_deleted() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let books = new_category(&app, &admin, "books", None).await;
    new_product(
        &app,
        &admin,
        &product_body("SKU-1", "Ledger", 500, id(&books), 1),
    )
    .await;

    let taken = send(
        &app,
        Method::POST,
        "/v1/categories",
        Some(&admin),
        Some(&json!({"name": "More books", "slug": "books"})),
    )
    .await;
    let malformed = send(
        &app,
        Method::POST,
        "/v1/categories",
        Some(&admin),
        Some(&json!({"name": "", "slug": "Not A Slug"})),
    )
    .await;
    let unknown_parent = send(
        &app,
        Method::POST,
        "/v1/categories",
        Some(&admin),
        Some(&json!({"name": "Orphans", "slug": "orphans", "parent_id": Uuid::new_v4()})),
    )
    .await;
    let busy = send(
        &app,
        Method::DELETE,
        &format!("/v1/categories/{}", id(&books)),
        Some(&admin),
        None,
    )
    .await;
    let unknown = send(
        &app,
        Method::PATCH,
        &format!("/v1/categories/{}", Uuid::new_v4()),
        Some(&admin),
        Some(&json!({"name": "Nothing"})),
    )
    .await;

    assert_problem(taken, StatusCode::CONFLICT).await;
    let problem = assert_problem(malformed, StatusCode::BAD_REQUEST).await;
    assert_eq!(fields(&problem), vec!["name", "slug"]);
    assert_problem(unknown_parent, StatusCode::NOT_FOUND).await;
    assert_problem(busy, StatusCode::CONFLICT).await;
    assert_problem(unknown, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_product_is_created_read_changed_archived_and_restored() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let customer = customer_token(&app).await;
    let books = new_category(&app, &admin, "books", None).await;
    let mut body = product_body("BOOK-0001", "The Analytical Engine", 2599, id(&books), 4);
    body["attributes"] = json!({"pages": 312, "binding": {"type": "hardcover"}});
    body["images"] = json!(["https://img.example.com/engine.jpg"]);

    let created = new_product(&app, &admin, &body).await;
    let path = format!("/v1/products/{}", id(&created));
    let public = json_ok(
        send(&app, Method::GET, &path, None, None).await,
        StatusCode::OK,
    )
    .await;
    let changed = json_ok(
        send(
            &app,
            Method::PATCH,
            &path,
            Some(&admin),
            Some(&json!({"name": "The Difference Engine", "price": {"amount": 1999, "currency": "EUR"}, "images": []})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let archived = send(&app, Method::DELETE, &path, Some(&admin), None).await;
    let hidden_from_customer = send(&app, Method::GET, &path, Some(&customer), None).await;
    let hidden_from_anonymous = send(&app, Method::GET, &path, None, None).await;
    let seen_by_admin = json_ok(
        send(&app, Method::GET, &path, Some(&admin), None).await,
        StatusCode::OK,
    )
    .await;
    let restored = json_ok(
        send(
            &app,
            Method::PATCH,
            &path,
            Some(&admin),
            Some(&json!({"active": true})),
        )
        .await,
        StatusCode::OK,
    )
    .await;

    assert!(Uuid::parse_str(id(&created)).is_ok());
    assert_eq!(created["sku"], "BOOK-0001");
    assert_eq!(created["name"], "The Analytical Engine");
    assert_eq!(created["description"], "All about The Analytical Engine");
    assert_eq!(created["price"], json!({"amount": 2599, "currency": "USD"}));
    assert_eq!(created["category_id"], books["id"]);
    assert_eq!(created["attributes"], body["attributes"]);
    assert_eq!(created["images"], body["images"]);
    assert_eq!(created["active"], true);
    assert_eq!(created["in_stock"], true);
    assert!(
        created["created_at"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert_eq!(public, created);
    assert_eq!(changed["name"], "The Difference Engine");
    assert_eq!(changed["price"], json!({"amount": 1999, "currency": "EUR"}));
    assert_eq!(changed["images"], json!([]));
    assert_eq!(
        changed["sku"], "BOOK-0001",
        "absent fields stay as they are"
    );
    assert_eq!(archived.status(), StatusCode::NO_CONTENT);
    assert_problem(hidden_from_customer, StatusCode::NOT_FOUND).await;
    assert_problem(hidden_from_anonymous, StatusCode::NOT_FOUND).await;
    assert_eq!(seen_by_admin["active"], false);
    assert_eq!(restored["active"], true);
}

#[tokio::test]
async fn bad_product_input_is_a_400_problem_naming_the_fields() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let books = new_category(&app, &admin, "books", None).await;
    let mut bad_money = product_body("SKU-1", "Ledger", -5, id(&books), 1);
    bad_money["price"]["currency"] = json!("XYZ");
    let mut fractional = product_body("SKU-2", "Ledger", 0, id(&books), 1);
    fractional["price"]["amount"] = json!(12.5);
    let mut several = product_body("not a sku!", " ", 100, id(&books), -1);
    several["images"] = json!(["ftp://example.com/a.png"]);

    let bad_money = send(
        &app,
        Method::POST,
        "/v1/products",
        Some(&admin),
        Some(&bad_money),
    )
    .await;
    let fractional = send(
        &app,
        Method::POST,
        "/v1/products",
        Some(&admin),
        Some(&fractional),
    )
    .await;
    let several = send(
        &app,
        Method::POST,
        "/v1/products",
        Some(&admin),
        Some(&several),
    )
    .await;
    let unknown_category = send(
        &app,
        Method::POST,
        "/v1/products",
        Some(&admin),
        Some(&product_body(
            "SKU-3",
            "Ledger",
            100,
            &Uuid::new_v4().to_string(),
            1,
        )),
    )
    .await;
    let unknown_product = send(
        &app,
        Method::GET,
        &format!("/v1/products/{}", Uuid::new_v4()),
        None,
        None,
    )
    .await;
    let malformed_id = send(&app, Method::GET, "/v1/products/42", None, None).await;

    let problem = assert_problem(bad_money, StatusCode::BAD_REQUEST).await;
    assert_eq!(fields(&problem), vec!["price.amount", "price.currency"]);
    assert!(
        problem["errors"][1]["message"]
            .as_str()
            .expect("message")
            .contains("XYZ")
    );
    assert_problem(fractional, StatusCode::BAD_REQUEST).await;
    let problem = assert_problem(several, StatusCode::BAD_REQUEST).await;
    assert_eq!(fields(&problem), vec!["sku", "name", "images[0]", "stock"]);
    assert_problem(unknown_category, StatusCode::NOT_FOUND).await;
    assert_problem(unknown_product, StatusCode::NOT_FOUND).await;
    assert_problem(malformed_id, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_duplicate_sku_is_409_on_create_and_on_change() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let books = new_category(&app, &admin, "books", None).await;
    new_product(
        &app,
        &admin,
        &product_body("SKU-1", "Ledger", 500, id(&books), 1),
    )
    .await;
    let other = new_product(
        &app,
        &admin,
        &product_body("SKU-2", "Journal", 700, id(&books), 1),
    )
    .await;

    let created = send(
        &app,
        Method::POST,
        "/v1/products",
        Some(&admin),
        Some(&product_body("SKU-1", "Copy", 100, id(&books), 1)),
    )
    .await;
    let changed = send(
        &app,
        Method::PATCH,
        &format!("/v1/products/{}", id(&other)),
        Some(&admin),
        Some(&json!({"sku": "SKU-1"})),
    )
    .await;

    assert_problem(created, StatusCode::CONFLICT).await;
    assert_problem(changed, StatusCode::CONFLICT).await;
}

/// Three products in two categories: a red apple (100, in stock), a green
/// apple (300, none in stock) and a banana (200, in stock).
async fn fruit_stand(app: &TestApp) -> (String, Value, Value) {
    let admin = app.admin_token().await;
    let apples = new_category(app, &admin, "apples", None).await;
    let bananas = new_category(app, &admin, "bananas", None).await;
    for (sku, name, price, category, stock) in [
        ("APL-RED", "Red Apple", 100, &apples, 5),
        ("APL-GRN", "Green Apple", 300, &apples, 0),
        ("BAN-BLU", "Blue Banana", 200, &bananas, 3),
    ] {
        new_product(
            app,
            &admin,
            &product_body(sku, name, price, id(category), stock),
        )
        .await;
    }
    (admin, apples, bananas)
}

#[tokio::test]
async fn search_finds_products_by_text_and_filters() {
    let app = spawn_app().await;
    let (_, apples, bananas) = fruit_stand(&app).await;

    let by_text = search(&app, "q=apple&sort=name").await;
    let in_stock_apples = search(&app, "category=apples&in_stock=true").await;
    let by_category_id = search(&app, &format!("category={}", id(&bananas))).await;
    let by_price = search(&app, "min_price=150&max_price=250&currency=USD").await;
    let cheapest_first = search(&app, "sort=price_asc").await;
    let empty_range = search(&app, "min_price=300&max_price=100").await;
    let other_currency = search(&app, "currency=EUR").await;

    assert_eq!(names(&by_text), vec!["Green Apple", "Red Apple"]);
    assert_eq!(names(&in_stock_apples), vec!["Red Apple"]);
    assert_eq!(in_stock_apples["items"][0]["category_id"], apples["id"]);
    assert_eq!(names(&by_category_id), vec!["Blue Banana"]);
    assert_eq!(names(&by_price), vec!["Blue Banana"]);
    assert_eq!(
        names(&cheapest_first),
        vec!["Red Apple", "Blue Banana", "Green Apple"]
    );
    assert!(names(&empty_range).is_empty());
    assert!(names(&other_currency).is_empty());
}

#[tokio::test]
async fn search_results_come_in_pages_until_the_token_is_null() {
    let app = spawn_app().await;
    fruit_stand(&app).await;

    let first = search(&app, "sort=price_desc&page_size=2").await;
    let token = first["next_page_token"].as_str().expect("a second page");
    let second = search(
        &app,
        &format!("sort=price_desc&page_size=2&page_token={}", encode(token)),
    )
    .await;

    assert_eq!(names(&first), vec!["Green Apple", "Blue Banana"]);
    assert_eq!(names(&second), vec!["Red Apple"]);
    assert_eq!(second["next_page_token"], Value::Null);
}

#[tokio::test]
async fn search_parameters_are_validated() {
    let app = spawn_app().await;
    let (admin, _, _) = fruit_stand(&app).await;
    let customer = customer_token(&app).await;

    for (query, field) in [
        ("page_size=101", Some("page_size")),
        ("page_size=0", Some("page_size")),
        ("currency=XYZ", Some("currency")),
        ("category=Not%20A%20Slug", Some("category")),
        ("sort=cheapest", None),
        ("min_price=-1", Some("min_price")),
        ("min_price=1.5", None),
        ("page_token=garbage", None),
        ("colour=red", None),
    ] {
        let response = send(
            &app,
            Method::GET,
            &format!("/v1/products?{query}"),
            None,
            None,
        )
        .await;

        let problem = assert_problem(response, StatusCode::BAD_REQUEST).await;
        if let Some(field) = field {
            assert_eq!(fields(&problem), vec![field], "{query}");
        }
    }
    let unknown_category = send(&app, Method::GET, "/v1/products?category=pears", None, None).await;
    assert_problem(unknown_category, StatusCode::NOT_FOUND).await;
    let archived_for_customer = send(
        &app,
        Method::GET,
        "/v1/products?include_archived=true",
        Some(&customer),
        None,
    )
    .await;
    assert_problem(archived_for_customer, StatusCode::FORBIDDEN).await;
    let archived_for_admin = send(
        &app,
        Method::GET,
        "/v1/products?include_archived=true",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(archived_for_admin.status(), StatusCode::OK);
}

#[tokio::test]
async fn archived_products_are_only_found_by_admins_who_ask_for_them() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let customer = customer_token(&app).await;
    let books = new_category(&app, &admin, "books", None).await;
    let product = new_product(
        &app,
        &admin,
        &product_body("SKU-1", "Ledger", 500, id(&books), 1),
    )
    .await;
    let archived = send(
        &app,
        Method::DELETE,
        &format!("/v1/products/{}", id(&product)),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(archived.status(), StatusCode::NO_CONTENT);

    let as_customer = json_ok(
        send(&app, Method::GET, "/v1/products", Some(&customer), None).await,
        StatusCode::OK,
    )
    .await;
    let as_admin = json_ok(
        send(
            &app,
            Method::GET,
            "/v1/products?include_archived=true",
            Some(&admin),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;

    assert!(names(&as_customer).is_empty());
    assert_eq!(names(&as_admin), vec!["Ledger"]);
}

#[tokio::test]
async fn stock_is_adjusted_and_an_adjustment_below_zero_changes_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let books = new_category(&app, &admin, "books", None).await;
    let product = new_product(
        &app,
        &admin,
        &product_body("SKU-1", "Ledger", 500, id(&books), 5),
    )
    .await;
    let stock_path = format!("/v1/products/{}/stock", id(&product));
    let adjust_path = format!("/v1/products/{}/stock-adjustments", id(&product));

    let initial = json_ok(
        send(&app, Method::GET, &stock_path, Some(&admin), None).await,
        StatusCode::OK,
    )
    .await;
    let added = json_ok(
        send(
            &app,
            Method::POST,
            &adjust_path,
            Some(&admin),
            Some(&json!({"delta": 3, "reason": "delivery"})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let below_zero = send(
        &app,
        Method::POST,
        &adjust_path,
        Some(&admin),
        Some(&json!({"delta": -9, "reason": "stocktake"})),
    )
    .await;
    let zero = send(
        &app,
        Method::POST,
        &adjust_path,
        Some(&admin),
        Some(&json!({"delta": 0, "reason": ""})),
    )
    .await;
    let unknown = send(
        &app,
        Method::POST,
        &format!("/v1/products/{}/stock-adjustments", Uuid::new_v4()),
        Some(&admin),
        Some(&json!({"delta": 1, "reason": "found one"})),
    )
    .await;
    let after = json_ok(
        send(&app, Method::GET, &stock_path, Some(&admin), None).await,
        StatusCode::OK,
    )
    .await;

    assert_eq!(initial["on_hand"], 5);
    assert_eq!(initial["reserved"], 0);
    assert_eq!(initial["available"], 5);
    assert_eq!(added["on_hand"], 8);
    assert_eq!(added["available"], 8);
    assert_eq!(added["product_id"], product["id"]);
    let problem = assert_problem(below_zero, StatusCode::BAD_REQUEST).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("below zero"),
        "{problem}"
    );
    let problem = assert_problem(zero, StatusCode::BAD_REQUEST).await;
    assert_eq!(fields(&problem), vec!["delta", "reason"]);
    assert_problem(unknown, StatusCode::NOT_FOUND).await;
    assert_eq!(
        after["on_hand"], 8,
        "the refused adjustment changed nothing"
    );
    assert_eq!(after["available"], 8);
}

#[tokio::test]
async fn an_import_writes_the_good_lines_and_reports_the_bad_ones_by_line_number() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let books = new_category(&app, &admin, "books", None).await;
    let line = |sku: &str, price: i64| {
        json!({
            "sku": sku,
            "name": format!("Imported {sku}"),
            "price": {"amount": price, "currency": "USD"},
            "category_slug": "books",
            "stock": 2,
        })
        .to_string()
    };
    let body = [
        line("IMP-1", 100),
        "{\"sku\": \"IMP-X\", \"name\": ".to_owned(),
        String::new(),
        json!({"sku": "IMP-2", "name": "Two", "price": {"amount": 200, "currency": "USD"}, "category_id": id(&books)}).to_string(),
        json!({"sku": "IMP-3", "name": "Three", "price": {"amount": 300, "currency": "USD"}, "category_slug": "no-such-category"}).to_string(),
    ]
    .join("\n");

    let summary = json_ok(import(&app, &admin, body).await, StatusCode::OK).await;
    let again = json_ok(
        import(&app, &admin, format!("{}\n", line("IMP-1", 150))).await,
        StatusCode::OK,
    )
    .await;
    let found = search(&app, "sort=name").await;

    assert_eq!(summary["created"], 2);
    assert_eq!(summary["updated"], 0);
    let rejected = summary["rejected"].as_array().expect("rejected");
    let lines: Vec<&Value> = rejected.iter().map(|r| &r["line"]).collect();
    assert_eq!(lines, vec![&json!(2), &json!(5)], "{summary}");
    assert!(
        rejected
            .iter()
            .all(|r| r["reason"].as_str().is_some_and(|s| !s.is_empty()))
    );
    assert_eq!(again["created"], 0);
    assert_eq!(again["updated"], 1);
    assert_eq!(names(&found), vec!["Imported IMP-1", "Two"]);
    assert_eq!(found["items"][0]["price"]["amount"], 150, "updated by SKU");
}

#[tokio::test]
async fn an_import_must_be_ndjson() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;

    let response = app
        .request(Method::POST, "/v1/products/import")
        .bearer_auth(&admin)
        .json(&json!({"sku": "IMP-1"}))
        .send()
        .await
        .expect("request sent");

    assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test]
async fn an_import_of_ten_thousand_lines_is_streamed_in_one_call() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    new_category(&app, &admin, "bulk", None).await;
    let description = "a sturdy thing ".repeat(30);
    let body: String = (1..=10_000)
        .map(|n| {
            let mut line = json!({
                "sku": format!("BULK-{n:05}"),
                "name": format!("Bulk item {n}"),
                "description": description,
                "price": {"amount": n, "currency": "USD"},
                "category_slug": "bulk",
            })
            .to_string();
            if n == 7_777 {
                line = "not json".to_owned();
            }
            line + "\n"
        })
        .collect();
    assert!(
        body.len() > 4 * 1024 * 1024,
        "far beyond the 64 KiB limit of JSON bodies"
    );

    let summary = json_ok(import(&app, &admin, body).await, StatusCode::OK).await;

    assert_eq!(summary["created"], 9_999);
    assert_eq!(summary["rejected"][0]["line"], 7_777);
    let page = search(&app, "category=bulk&page_size=1").await;
    assert_eq!(page["items"].as_array().expect("items").len(), 1);
}

#[tokio::test]
async fn a_full_page_of_products_at_their_largest_is_served() {
    // Arrange: a hundred products with the longest description, in
    // four-byte characters, and the most attributes: over 5 MB in protobuf.
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    new_category(&app, &admin, "large", None).await;
    let description = "\u{1D11E}".repeat(10_000);
    let attributes = json!({"notes": "x".repeat(16 * 1024 - 13)});
    let body: String = (1..=100)
        .map(|n| {
            json!({
                "sku": format!("LARGE-{n:03}"),
                "name": format!("Large item {n}"),
                "description": description,
                "price": {"amount": n, "currency": "USD"},
                "category_slug": "large",
                "attributes": attributes,
            })
            .to_string()
                + "\n"
        })
        .collect();
    let summary = json_ok(import(&app, &admin, body).await, StatusCode::OK).await;
    assert_eq!(summary["created"], 100, "{summary}");

    // Act
    let page = search(&app, "category=large&page_size=100").await;

    // Assert
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 100);
    assert!(
        items
            .iter()
            .all(|p| p["description"] == description.as_str())
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_catalog_routes_and_their_parameters() {
    let app = spawn_app().await;

    let doc = json_ok(
        send(&app, Method::GET, "/openapi.json", None, None).await,
        StatusCode::OK,
    )
    .await;

    for (path, method, statuses) in [
        (
            "/v1/categories",
            "post",
            &["201", "400", "401", "403", "409"][..],
        ),
        (
            "/v1/categories/{id}",
            "delete",
            &["204", "400", "401", "403", "404", "409"][..],
        ),
        ("/v1/products", "get", &["200", "400", "403", "404"][..]),
        (
            "/v1/products",
            "post",
            &["201", "400", "401", "403", "404", "409"][..],
        ),
        (
            "/v1/products/{id}",
            "patch",
            &["200", "400", "401", "403", "404", "409"][..],
        ),
        (
            "/v1/products/{id}/stock",
            "get",
            &["200", "400", "401", "403", "404"][..],
        ),
        (
            "/v1/products/{id}/stock-adjustments",
            "post",
            &["200", "400", "401", "403", "404"][..],
        ),
        (
            "/v1/products/import",
            "post",
            &["200", "401", "403", "413", "415"][..],
        ),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for status in statuses {
            assert!(
                responses[status].is_object(),
                "{method} {path} documents {status}"
            );
        }
    }
    let search = &doc["paths"]["/v1/products"]["get"];
    let parameter = |name: &str| {
        search["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} is documented"))
            .clone()
    };
    assert_eq!(parameter("page_size")["schema"]["maximum"], 100);
    assert_eq!(parameter("min_price")["schema"]["minimum"], 0);
    assert_eq!(
        doc["components"]["schemas"]["ProductSort"]["enum"],
        json!(["relevance", "price_asc", "price_desc", "newest", "name"])
    );
    assert!(
        doc["paths"]["/v1/products/import"]["post"]["requestBody"]["content"]
            ["application/x-ndjson"]
            .is_object()
    );
}
