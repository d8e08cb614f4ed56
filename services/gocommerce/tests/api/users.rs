//! Profiles, preferences, address books and the admins' user routes through
//! the REST API.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    ADMIN_EMAIL, PASSWORD, TestApp, assert_problem, encode, json_ok, problem_fields as fields,
    send, spawn_app,
};

/// A fresh customer's access token.
async fn customer_token(app: &TestApp) -> String {
    let (_, tokens) = app.customer().await;
    tokens["access_token"].as_str().expect("token").to_owned()
}

/// Registers `email` and returns its access token.
async fn register_and_login(app: &TestApp, email: &str) -> String {
    assert_eq!(
        app.register(email, PASSWORD, "Listed Customer")
            .await
            .status(),
        StatusCode::CREATED
    );
    let tokens: Value = app.login(email, PASSWORD).await.json().await.expect("json");
    tokens["access_token"].as_str().expect("token").to_owned()
}

const HOME: &str = r#"{"name": "Ada Lovelace", "line1": "12 St James's Square", "line2": "Flat 2", "city": "London", "region": "Greater London", "postal_code": "SW1Y 4LG", "country": "GB"}"#;

fn home() -> Value {
    serde_json::from_str(HOME).expect("address json")
}

#[tokio::test]
async fn a_customer_reads_and_changes_their_own_profile() {
    let app = spawn_app().await;
    let (email, tokens) = app.customer().await;
    let token = tokens["access_token"].as_str().expect("token");

    let before = json_ok(
        send(&app, Method::GET, "/v1/users/me", Some(token), None).await,
        StatusCode::OK,
    )
    .await;
    let changed = json_ok(
        send(
            &app,
            Method::PATCH,
            "/v1/users/me",
            Some(token),
            Some(&json!({"name": "Ada King", "phone": "+4915112345678"})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let cleared = json_ok(
        send(
            &app,
            Method::PATCH,
            "/v1/users/me",
            Some(token),
            Some(&json!({"phone": ""})),
        )
        .await,
        StatusCode::OK,
    )
    .await;

    assert_eq!(before["email"], email.as_str());
    assert_eq!(before["name"], "Test Customer");
    assert_eq!(before["role"], "customer");
    assert_eq!(before["phone"], Value::Null);
    assert!(Uuid::parse_str(before["id"].as_str().expect("id")).is_ok());
    assert!(before["created_at"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(changed["name"], "Ada King");
    assert_eq!(changed["phone"], "+4915112345678");
    assert_eq!(changed["id"], before["id"]);
    assert_eq!(cleared["phone"], Value::Null);
    assert_eq!(
        cleared["name"], "Ada King",
        "an absent field stays as it is"
    );
}

#[tokio::test]
async fn the_users_me_routes_need_an_access_token() {
    let app = spawn_app().await;

    for (method, path) in [
        (Method::GET, "/v1/users/me"),
        (Method::PATCH, "/v1/users/me"),
        (Method::GET, "/v1/users/me/preferences"),
        (Method::GET, "/v1/users/me/addresses"),
        (Method::POST, "/v1/users/me/addresses"),
    ] {
        let response = send(&app, method, path, None, Some(&json!({}))).await;

        assert_problem(response, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn an_invalid_profile_change_is_a_400_naming_each_bad_field() {
    let app = spawn_app().await;
    let token = customer_token(&app).await;

    let invalid = send(
        &app,
        Method::PATCH,
        "/v1/users/me",
        Some(&token),
        Some(&json!({"name": "   ", "phone": "0151 1234"})),
    )
    .await;
    let unknown = send(
        &app,
        Method::PATCH,
        "/v1/users/me",
        Some(&token),
        Some(&json!({"email": "new@example.com"})),
    )
    .await;

    let problem = assert_problem(invalid, StatusCode::BAD_REQUEST).await;
    assert_eq!(fields(&problem), vec!["name", "phone"]);
    let problem = assert_problem(unknown, StatusCode::BAD_REQUEST).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("email")
    );
}

#[tokio::test]
async fn preferences_start_with_defaults_and_round_trip_through_put() {
    let app = spawn_app().await;
    let token = customer_token(&app).await;
    let wanted = json!({
        "channels": {"email": false, "sms": true, "push": true},
        "locale": "de-DE",
        "marketing_opt_in": true,
    });

    let defaults = json_ok(
        send(
            &app,
            Method::GET,
            "/v1/users/me/preferences",
            Some(&token),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let stored = json_ok(
        send(
            &app,
            Method::PUT,
            "/v1/users/me/preferences",
            Some(&token),
            Some(&wanted),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let read = json_ok(
        send(
            &app,
            Method::GET,
            "/v1/users/me/preferences",
            Some(&token),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;

    assert_eq!(
        defaults["channels"],
        json!({"email": true, "sms": false, "push": false})
    );
    assert_eq!(defaults["locale"], "en");
    assert_eq!(defaults["marketing_opt_in"], false);
    for view in [&stored, &read] {
        assert_eq!(view["channels"], wanted["channels"]);
        assert_eq!(view["locale"], "de-DE");
        assert_eq!(view["marketing_opt_in"], true);
    }
}

#[tokio::test]
async fn preferences_with_a_bad_locale_or_a_missing_field_are_refused() {
    let app = spawn_app().await;
    let token = customer_token(&app).await;

    let bad_locale = send(
        &app,
        Method::PUT,
        "/v1/users/me/preferences",
        Some(&token),
        Some(&json!({"channels": {"email": true, "sms": false, "push": false}, "locale": "german", "marketing_opt_in": false})),
    )
    .await;
    let missing = send(
        &app,
        Method::PUT,
        "/v1/users/me/preferences",
        Some(&token),
        Some(&json!({"locale": "en", "marketing_opt_in": false})),
    )
    .await;

    let problem = assert_problem(bad_locale, StatusCode::BAD_REQUEST).await;
    assert_eq!(fields(&problem), vec!["locale"]);
    let problem = assert_problem(missing, StatusCode::BAD_REQUEST).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("channels")
    );
}

#[tokio::test]
async fn an_address_is_added_listed_changed_made_default_and_deleted() {
    let app = spawn_app().await;
    let token = customer_token(&app).await;

    let first = json_ok(
        send(
            &app,
            Method::POST,
            "/v1/users/me/addresses",
            Some(&token),
            Some(&home()),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let second = json_ok(
        send(
            &app,
            Method::POST,
            "/v1/users/me/addresses",
            Some(&token),
            Some(&json!({"line1": "1 Rue de Rivoli", "city": "Paris", "postal_code": "75001", "country": "FR", "is_default": true})),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let list = json_ok(
        send(
            &app,
            Method::GET,
            "/v1/users/me/addresses",
            Some(&token),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let first_path = format!(
        "/v1/users/me/addresses/{}",
        first["id"].as_str().expect("id")
    );
    let changed = json_ok(
        send(
            &app,
            Method::PATCH,
            &first_path,
            Some(&token),
            Some(&json!({"city": "Westminster", "line2": ""})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let read = json_ok(
        send(&app, Method::GET, &first_path, Some(&token), None).await,
        StatusCode::OK,
    )
    .await;
    let deleted = send(&app, Method::DELETE, &first_path, Some(&token), None).await;
    let gone = send(&app, Method::GET, &first_path, Some(&token), None).await;

    assert!(Uuid::parse_str(first["id"].as_str().expect("id")).is_ok());
    for field in [
        "name",
        "line1",
        "line2",
        "city",
        "region",
        "postal_code",
        "country",
    ] {
        assert_eq!(first[field], home()[field], "{field}");
    }
    assert_eq!(
        first["is_default"], true,
        "the first address is the default"
    );
    assert_eq!(second["is_default"], true);
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], second["id"], "the default comes first");
    assert_eq!(items[1]["is_default"], false, "the default moved");
    assert_eq!(list["next_page_token"], Value::Null);
    assert_eq!(changed["city"], "Westminster");
    assert_eq!(changed["line2"], "", "an empty optional field clears it");
    assert_eq!(changed["line1"], first["line1"]);
    assert_eq!(read, changed);
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_problem(gone, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn another_customers_address_is_not_found() {
    let app = spawn_app().await;
    let owner = customer_token(&app).await;
    let other = customer_token(&app).await;
    let address = json_ok(
        send(
            &app,
            Method::POST,
            "/v1/users/me/addresses",
            Some(&owner),
            Some(&home()),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let path = format!(
        "/v1/users/me/addresses/{}",
        address["id"].as_str().expect("id")
    );

    let read = send(&app, Method::GET, &path, Some(&other), None).await;
    let changed = send(
        &app,
        Method::PATCH,
        &path,
        Some(&other),
        Some(&json!({"city": "Elsewhere"})),
    )
    .await;
    let deleted = send(&app, Method::DELETE, &path, Some(&other), None).await;

    assert_problem(read, StatusCode::NOT_FOUND).await;
    assert_problem(changed, StatusCode::NOT_FOUND).await;
    assert_problem(deleted, StatusCode::NOT_FOUND).await;
    let still_there = send(&app, Method::GET, &path, Some(&owner), None).await;
    assert_eq!(still_there.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_invalid_address_is_a_400_listing_every_bad_field() {
    let app = spawn_app().await;
    let token = customer_token(&app).await;

    let invalid = send(
        &app,
        Method::POST,
        "/v1/users/me/addresses",
        Some(&token),
        Some(&json!({"line1": " ", "city": "", "postal_code": "#12", "country": "XX"})),
    )
    .await;
    let lower_case_country = send(
        &app,
        Method::POST,
        "/v1/users/me/addresses",
        Some(&token),
        Some(&json!({"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "de"})),
    )
    .await;
    let malformed_id = send(
        &app,
        Method::GET,
        "/v1/users/me/addresses/not-a-uuid",
        Some(&token),
        None,
    )
    .await;
    let unknown_id = send(
        &app,
        Method::GET,
        &format!("/v1/users/me/addresses/{}", Uuid::new_v4()),
        Some(&token),
        None,
    )
    .await;

    let problem = assert_problem(invalid, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        fields(&problem),
        vec!["line1", "city", "postal_code", "country"]
    );
    let problem = assert_problem(lower_case_country, StatusCode::BAD_REQUEST).await;
    assert_eq!(fields(&problem), vec!["country"]);
    assert_problem(malformed_id, StatusCode::BAD_REQUEST).await;
    assert_problem(unknown_id, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn an_admin_lists_users_by_role_and_email_page_by_page() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let tag = Uuid::new_v4().simple().to_string();
    for n in 0..3 {
        register_and_login(&app, &format!("listed-{n}-{tag}@example.com")).await;
    }
    let upper_case = json_ok(
        send(
            &app,
            Method::GET,
            &format!("/v1/admin/users?email={}&page_size=2", tag.to_uppercase()),
            Some(&admin),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let page_one = json_ok(
        send(
            &app,
            Method::GET,
            &format!("/v1/admin/users?email={tag}&page_size=2"),
            Some(&admin),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let token = page_one["next_page_token"].as_str().expect("a second page");
    let page_two = json_ok(
        send(
            &app,
            Method::GET,
            &format!(
                "/v1/admin/users?email={tag}&page_size=2&page_token={}",
                encode(token)
            ),
            Some(&admin),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let admins = json_ok(
        send(
            &app,
            Method::GET,
            "/v1/admin/users?role=admin",
            Some(&admin),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;

    assert_eq!(
        upper_case["items"], page_one["items"],
        "the email filter ignores case"
    );
    let emails: Vec<&str> = page_one["items"]
        .as_array()
        .expect("items")
        .iter()
        .chain(page_two["items"].as_array().expect("items"))
        .map(|p| p["email"].as_str().expect("email"))
        .collect();
    assert_eq!(
        emails,
        vec![
            format!("listed-0-{tag}@example.com"),
            format!("listed-1-{tag}@example.com"),
            format!("listed-2-{tag}@example.com"),
        ],
        "oldest first, across two pages"
    );
    assert_eq!(page_two["next_page_token"], Value::Null);
    let admin_items = admins["items"].as_array().expect("items");
    assert!(admin_items.iter().all(|p| p["role"] == "admin"));
    assert!(admin_items.iter().any(|p| p["email"] == ADMIN_EMAIL));
}

#[tokio::test]
async fn the_user_list_refuses_customers_bad_page_sizes_and_bad_tokens() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let customer = customer_token(&app).await;

    let anonymous = send(&app, Method::GET, "/v1/admin/users", None, None).await;
    let as_customer = send(&app, Method::GET, "/v1/admin/users", Some(&customer), None).await;
    let too_big = send(
        &app,
        Method::GET,
        "/v1/admin/users?page_size=101",
        Some(&admin),
        None,
    )
    .await;
    let bad_token = send(
        &app,
        Method::GET,
        "/v1/admin/users?page_token=not-a-token",
        Some(&admin),
        None,
    )
    .await;
    let bad_role = send(
        &app,
        Method::GET,
        "/v1/admin/users?role=owner",
        Some(&admin),
        None,
    )
    .await;

    assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
    assert_problem(as_customer, StatusCode::FORBIDDEN).await;
    let problem = assert_problem(too_big, StatusCode::BAD_REQUEST).await;
    assert_eq!(fields(&problem), vec!["page_size"]);
    assert_problem(bad_token, StatusCode::BAD_REQUEST).await;
    assert_problem(bad_role, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_promoted_customer_gets_admin_access_with_their_next_token() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let email = format!("{}@example.com", Uuid::new_v4().simple());
    let before = register_and_login(&app, &email).await;
    let profile = json_ok(
        send(&app, Method::GET, "/v1/users/me", Some(&before), None).await,
        StatusCode::OK,
    )
    .await;
    let path = format!(
        "/v1/admin/users/{}/role",
        profile["id"].as_str().expect("id")
    );

    let promoted = json_ok(
        send(
            &app,
            Method::PUT,
            &path,
            Some(&admin),
            Some(&json!({"role": "admin"})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let after = app
        .login(&email, PASSWORD)
        .await
        .json::<Value>()
        .await
        .expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let admin_route = send(&app, Method::GET, "/v1/admin/users", Some(&after), None).await;
    let account = json_ok(
        send(&app, Method::GET, "/v1/auth/me", Some(&after), None).await,
        StatusCode::OK,
    )
    .await;
    let mirrored = json_ok(
        send(&app, Method::GET, "/v1/users/me", Some(&after), None).await,
        StatusCode::OK,
    )
    .await;

    assert_eq!(promoted["role"], "admin");
    assert_eq!(promoted["id"], profile["id"]);
    assert_eq!(admin_route.status(), StatusCode::OK);
    assert_eq!(account["role"], "admin", "auth holds the new role");
    assert_eq!(mirrored["role"], "admin", "the user service mirrors it");
}

#[tokio::test]
async fn role_changes_are_for_admins_about_known_users_and_known_roles() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let customer = customer_token(&app).await;
    let me = json_ok(
        send(&app, Method::GET, "/v1/users/me", Some(&customer), None).await,
        StatusCode::OK,
    )
    .await;
    let my_role = format!("/v1/admin/users/{}/role", me["id"].as_str().expect("id"));

    let self_promotion = send(
        &app,
        Method::PUT,
        &my_role,
        Some(&customer),
        Some(&json!({"role": "admin"})),
    )
    .await;
    let unknown_user = send(
        &app,
        Method::PUT,
        &format!("/v1/admin/users/{}/role", Uuid::new_v4()),
        Some(&admin),
        Some(&json!({"role": "admin"})),
    )
    .await;
    let unknown_role = send(
        &app,
        Method::PUT,
        &my_role,
        Some(&admin),
        Some(&json!({"role": "owner"})),
    )
    .await;

    assert_problem(self_promotion, StatusCode::FORBIDDEN).await;
    assert_problem(unknown_user, StatusCode::NOT_FOUND).await;
    assert_problem(unknown_role, StatusCode::BAD_REQUEST).await;
    let unchanged = json_ok(
        send(&app, Method::GET, "/v1/users/me", Some(&customer), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(unchanged["role"], "customer");
}

#[tokio::test]
async fn the_openapi_document_describes_the_user_routes_and_their_errors() {
    let app = spawn_app().await;

    let doc = json_ok(
        send(&app, Method::GET, "/openapi.json", None, None).await,
        StatusCode::OK,
    )
    .await;

    for (path, method, statuses) in [
        ("/v1/users/me", "get", &["200", "401", "404", "503"][..]),
        (
            "/v1/users/me",
            "patch",
            &["200", "400", "401", "413", "415"][..],
        ),
        (
            "/v1/users/me/preferences",
            "put",
            &["200", "400", "401"][..],
        ),
        (
            "/v1/users/me/addresses",
            "post",
            &["201", "400", "401", "409"][..],
        ),
        (
            "/v1/users/me/addresses/{id}",
            "delete",
            &["204", "400", "401", "404"][..],
        ),
        ("/v1/admin/users", "get", &["200", "400", "401", "403"][..]),
        (
            "/v1/admin/users/{id}/role",
            "put",
            &["200", "400", "401", "403", "404"][..],
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
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["CreateAddressBody"]["additionalProperties"], false);
    assert_eq!(
        schemas["UserRole"]["enum"],
        json!(["customer", "admin"]),
        "roles are an enum"
    );
}
