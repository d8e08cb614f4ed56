//! The gateway's conventions: problem+json for every error, validation before
//! any backend call, body limits, rate limits, deadlines, and the OpenAPI
//! document.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{assert_problem, json_ok, retry_after, spawn_app, spawn_with, test_env};

#[tokio::test]
async fn malformed_bodies_get_400_problems_that_say_what_is_wrong() {
    let app = spawn_app().await;
    let cases = [
        (r#"{"email": "a@example.com", "#, "not valid JSON"),
        (
            r#"{"email": "a@example.com", "password": "correct horse"}"#,
            "missing field `name`",
        ),
        (
            r#"{"email": "a@example.com", "password": "correct horse", "name": "A", "role": "admin"}"#,
            "unknown field `role`",
        ),
        (
            r#"{"email": 42, "password": "correct horse", "name": "A"}"#,
            "invalid type",
        ),
        (r#"[]"#, "must be a JSON object"),
        // serde alone would build the body from an array of its fields.
        (
            r#"["b@example.com", "correct horse battery", "B"]"#,
            "must be a JSON object",
        ),
        (r#"  "a string""#, "must be a JSON object"),
    ];
    for (body, expected) in cases {
        let response = app
            .request(Method::POST, "/v1/auth/register")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("sent");

        let problem = assert_problem(response, StatusCode::BAD_REQUEST).await;
        let detail = problem["detail"].as_str().expect("detail");
        assert!(
            detail.contains(expected),
            "{body}: {detail:?} should contain {expected:?}"
        );
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;

    let response = app
        .request(Method::POST, "/v1/auth/login")
        .header("content-type", "text/plain")
        .body("email=a@example.com")
        .send()
        .await
        .expect("sent");

    assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let app = spawn_app().await;
    let huge = json!({"email": "a@example.com", "password": "x".repeat(100_000), "name": "A"});

    let response = app.post_json("/v1/auth/register", &huge).await;

    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = spawn_app().await;

    let response = app
        .request(Method::GET, "/v1/nothing-here")
        .send()
        .await
        .expect("sent");

    assert_problem(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_known_route_asked_with_another_method_is_a_405_problem_naming_the_methods() {
    let app = spawn_app().await;

    let response = app
        .request(Method::DELETE, "/v1/auth/login")
        .send()
        .await
        .expect("sent");

    let allow = response.headers().get("allow").cloned();
    assert_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_eq!(allow.as_ref().and_then(|a| a.to_str().ok()), Some("POST"));
}

#[tokio::test]
async fn auth_routes_are_rate_limited_per_client_with_retry_after() {
    let mut env = test_env();
    env.insert("GATEWAY_AUTH_RATE_PER_MINUTE".to_owned(), "5".to_owned());
    let app = spawn_with(gocommerce::Component::All, env).await;
    let body = json!({"refresh_token": "gcr_unknown"});

    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = app.post_json("/v1/auth/logout", &body).await;
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after: u64 = response.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            assert!(retry_after >= 1);
            assert_problem(response, StatusCode::TOO_MANY_REQUESTS).await;
        }
    }

    assert_eq!(&statuses[..5], &[StatusCode::NO_CONTENT; 5]);
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_backend_call_past_its_deadline_is_504_and_the_service_gives_up_too() {
    let mut env = test_env();
    // Argon2id takes far longer than a millisecond.
    env.insert("GATEWAY_BACKEND_TIMEOUT_MS".to_owned(), "1".to_owned());
    let app = spawn_with(gocommerce::Component::All, env).await;

    let response = app
        .register("late@example.com", "correct horse", "Late")
        .await;

    assert_problem(response, StatusCode::GATEWAY_TIMEOUT).await;
}

#[tokio::test]
async fn an_unreachable_backend_is_a_503_to_retry_in_a_second() {
    let mut env = test_env();
    // Nothing listens on port 9 (discard) here.
    env.insert("AUTH_URL".to_owned(), "http://127.0.0.1:9".to_owned());
    let app = spawn_with(gocommerce::Component::Gateway, env).await;

    let response = app.login("a@example.com", "correct horse").await;

    assert_eq!(retry_after(&response), Some("1"));
    let problem = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("auth service is unavailable")
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;

    let doc = openapi_document(&app).await;

    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    for (path, method) in [
        ("/v1/auth/register", "post"),
        ("/v1/auth/login", "post"),
        ("/v1/auth/refresh", "post"),
        ("/v1/auth/logout", "post"),
        ("/v1/auth/password", "post"),
        ("/v1/auth/password-reset", "post"),
        ("/v1/auth/password-reset/confirm", "post"),
        ("/v1/auth/me", "get"),
        ("/.well-known/jwks.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/openapi.json", "get"),
    ] {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
    }
    let register = &doc["paths"]["/v1/auth/register"]["post"]["responses"];
    for status in ["201", "400", "409", "413", "415", "429", "503"] {
        assert!(register[status].is_object(), "register documents {status}");
    }
    let change = &doc["paths"]["/v1/auth/password"]["post"];
    for status in ["200", "400", "401", "403", "409", "429"] {
        assert!(
            change["responses"][status].is_object(),
            "a password change documents {status}"
        );
    }
    assert_eq!(change["security"], json!([{"bearer": []}]));
    assert_eq!(
        doc["components"]["schemas"]["RegisterBody"]["additionalProperties"],
        json!(false),
        "unknown fields are refused, and the document says so"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_each_order_event_and_an_optional_cancel_body() {
    let app = spawn_app().await;

    let doc = openapi_document(&app).await;

    // A text/event-stream schema describes one event (its `event` and `data`
    // fields), as OpenAPI 3.2 and schemathesis read it; a `status` event's data
    // is a StatusEventView as JSON.
    let stream = &doc["paths"]["/v1/orders/{id}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"];
    assert_eq!(stream["$ref"], "#/components/schemas/StatusEvent");
    let kinds = doc["components"]["schemas"]["StatusEvent"]["oneOf"]
        .as_array()
        .expect("one schema per kind of event");
    assert_eq!(kinds[0]["properties"]["event"]["enum"], json!(["status"]));
    assert_eq!(
        kinds[0]["properties"]["data"]["contentMediaType"],
        "application/json"
    );
    assert_eq!(
        kinds[0]["properties"]["data"]["contentSchema"]["$ref"],
        "#/components/schemas/StatusEventView"
    );
    assert_eq!(kinds[1]["properties"]["event"]["enum"], json!(["error"]));
    let cancel = &doc["paths"]["/v1/orders/{id}/cancel"]["post"]["requestBody"];
    assert!(cancel["content"]["application/json"].is_object());
    assert_ne!(cancel["required"], json!(true), "the reason is optional");
}

async fn openapi_document(app: &crate::helpers::TestApp) -> Value {
    let response = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .expect("sent");
    json_ok(response, StatusCode::OK).await
}
