//! What every process offers: health, readiness, metrics, gRPC health and
//! reflection, graceful shutdown, trace propagation, and a start-up that is
//! safe to repeat and to race.

use std::time::Duration;

use gocommerce_proto::auth::v1::auth_service_client::AuthServiceClient;
use opentelemetry::trace::TraceId;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::catalog::{id, new_category, new_product, product_body};
use crate::helpers::{
    ADMIN_EMAIL, finished_spans, retry_after, send, spawn_app, spawn_behind_proxy, spawn_with,
    test_env,
};

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let app = spawn_app().await;
    app.customer().await;

    let healthz = app
        .http
        .get(format!("{}/healthz", app.admin_address))
        .send()
        .await
        .expect("sent");
    let readyz = app
        .http
        .get(format!("{}/readyz", app.admin_address))
        .send()
        .await
        .expect("sent");
    let gateway_readyz = app
        .request(Method::GET, "/readyz")
        .send()
        .await
        .expect("sent");
    let metrics = app
        .http
        .get(format!("{}/metrics", app.admin_address))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");

    assert_eq!(healthz.status(), StatusCode::OK);
    assert_eq!(readyz.status(), StatusCode::OK);
    let report: Value = gateway_readyz.json().await.expect("json");
    assert_eq!(report["ready"], true);
    let checks = report["checks"].as_array().expect("checks");
    for name in [
        "product-database",
        "product-reads",
        "broker",
        "auth-jwks",
        "auth-ended-sessions",
    ] {
        assert!(
            checks.iter().any(|c| c["name"] == name && c["ok"] == true),
            "{name} is checked and passes: {report}"
        );
    }
    for needle in [
        "http_server_requests_total{method=\"POST\",route=\"/v1/auth/register\",status=\"201\"}",
        "http_server_request_duration_seconds_bucket",
        "grpc_server_requests_total{code=\"Ok\",method=\"Register\",service=\"gocommerce.auth.v1.AuthService\"}",
        "grpc_server_request_duration_seconds_bucket",
        "process_resident_memory_bytes",
        "gateway_ended_sessions ",
        "gateway_ended_sessions_read_timestamp_seconds ",
        "gateway_ended_sessions_horizon_timestamp_seconds ",
    ] {
        assert!(metrics.contains(needle), "metrics contain {needle}");
    }
}

#[tokio::test]
async fn a_database_outage_is_a_503_to_retry_and_the_service_recovers_when_it_ends() {
    let (app, mut proxy) = spawn_behind_proxy("PRODUCT").await;
    let admin = app.admin_token().await;
    let category = new_category(&app, &admin, "outage", None).await;
    let body = product_body("OUT-1", "Lamp", 1999, id(&category), 3);
    let cached = format!(
        "/v1/products/{}",
        id(&new_product(&app, &admin, &body).await)
    );
    assert_eq!(
        send(&app, Method::GET, &cached, None, None).await.status(),
        StatusCode::OK
    );
    // Not in the product cache: a view goes to the database.
    let product = format!("/v1/products/{}", uuid::Uuid::new_v4());
    let before = send(&app, Method::GET, &product, None, None).await;
    assert_eq!(before.status(), StatusCode::NOT_FOUND);

    proxy.cut();
    let during = send(&app, Method::GET, &product, None, None).await;
    let from_cache = send(&app, Method::GET, &cached, None, None).await;
    // Through the pool, which waits for a connection before it gives up.
    let categories = send(&app, Method::GET, "/v1/categories", None, None).await;
    // The broken connection is gone: now the pool waits for a new one.
    let again = send(&app, Method::GET, "/v1/categories", None, None).await;
    let readyz = send(&app, Method::GET, "/readyz", None, None).await;
    proxy.restore().await;
    let after = send(&app, Method::GET, &product, None, None).await;

    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&during), Some("1"));
    let problem: Value = during.json().await.expect("problem json");
    assert_eq!(
        problem["detail"],
        "the product service is unavailable, retry later"
    );
    assert_eq!(
        from_cache.status(),
        StatusCode::OK,
        "the cache still serves"
    );
    assert_eq!(categories.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(again.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);
    let report: Value = readyz.json().await.expect("json");
    let failing: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["ok"] == false)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(failing, ["product-database", "product-reads"], "{report}");
    assert_eq!(after.status(), StatusCode::NOT_FOUND, "reads recover");
}

#[tokio::test]
async fn every_answer_carries_a_fresh_request_id_and_a_callers_own_is_kept() {
    let app = spawn_app().await;
    let request_id = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };

    let first = app
        .request(Method::GET, "/readyz")
        .send()
        .await
        .expect("sent");
    let second = app
        .request(Method::GET, "/v1/no-such-route")
        .send()
        .await
        .expect("sent");
    let own = app
        .request(Method::GET, "/readyz")
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("sent");

    let first = request_id(&first).expect("an id on a success");
    let second = request_id(&second).expect("an id on an error");
    for id in [&first, &second] {
        let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
        assert_eq!(parsed.get_version(), Some(uuid::Version::Random), "{id}");
    }
    assert_ne!(first, second, "each request has its own id");
    assert_eq!(request_id(&own).as_deref(), Some("trace-me-42"));
}

#[tokio::test]
async fn readiness_turns_false_as_soon_as_shutdown_starts() {
    let app = spawn_app().await;

    app.shutdown.trigger();
    let response = app
        .http
        .get(format!("{}/readyz", app.admin_address))
        .send()
        .await;

    // Either the listener already answers 503, or it has closed.
    if let Ok(response) = response {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test]
async fn in_flight_requests_finish_during_graceful_shutdown() {
    let app = spawn_app().await;
    // One HTTP/2 connection, accepted before shutdown starts, carries every
    // request: what is in flight on it must be answered, not reset.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let warm_up = client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(warm_up.status(), StatusCode::OK);
    let requests = (0..4).map(|i| {
        client
            .post(format!("{}/v1/auth/register", app.address))
            .json(&serde_json::json!({
                "email": format!("graceful{i}@example.com"),
                "password": "correct horse",
                "name": "Grace",
            }))
            .send()
    });
    let shutdown = app.shutdown.clone();

    // Four Argon2id hashes, two at a time, take well over 20 ms.
    let (responses, ()) = tokio::join!(futures::future::join_all(requests), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        shutdown.trigger();
    });

    for response in responses {
        assert_eq!(response.expect("answered").status(), StatusCode::CREATED);
    }
    let env = app.env.clone();
    app.stop().await;
    crate::helpers::drop_databases(&env);
}

#[tokio::test]
async fn grpc_servers_serve_health_and_reflection() {
    let app = spawn_app().await;
    let url = format!("http://127.0.0.1:{}", app.auth_port.expect("auth runs"));
    let channel = tonic::transport::Endpoint::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut health = HealthClient::new(channel.clone());

    let mut statuses = Vec::new();
    for service in ["", "gocommerce.auth.v1.AuthService", "liveness"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health answers");
        statuses.push(response.into_inner().status);
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".to_owned(),
        })
        .await;

    assert_eq!(statuses, vec![ServingStatus::Serving as i32; 3]);
    assert_eq!(
        unknown.expect_err("unknown service").code(),
        tonic::Code::NotFound
    );
    let reflection = tonic_reflection_list(channel).await;
    assert!(
        reflection.contains(&"gocommerce.auth.v1.AuthService".to_owned()),
        "{reflection:?}"
    );
}

async fn tonic_reflection_list(channel: tonic::transport::Channel) -> Vec<String> {
    use gocommerce_proto_reflection::*;
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("message")
        .expect("one response");
    match response.message_response {
        Some(server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

mod gocommerce_proto_reflection {
    pub use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    pub use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_request, server_reflection_response,
    };
}

#[tokio::test]
async fn the_signing_key_survives_a_restart() {
    let env = test_env();
    let first = spawn_with(gocommerce::Component::All, env.clone()).await;
    let jwks_before: Value = first
        .request(Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let (email, _) = first.customer().await;
    first.stop().await;

    let second = spawn_with(gocommerce::Component::All, env).await;
    let jwks_after: Value = second
        .request(Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");

    assert_eq!(jwks_before, jwks_after);
    assert_eq!(
        second
            .login(&email, crate::helpers::PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_bootstrap_admin_is_created_once_and_is_an_admin() {
    let env = test_env();
    spawn_with(gocommerce::Component::All, env.clone())
        .await
        .stop()
        .await;

    let app = spawn_with(gocommerce::Component::All, env).await;
    let token = app.admin_token().await;
    let me: Value = app
        .get_with_token("/v1/auth/me", &token)
        .await
        .json()
        .await
        .expect("json");
    let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE email = $1")
        .bind(ADMIN_EMAIL)
        .fetch_one(&app.auth_db().await)
        .await
        .expect("count");

    assert_eq!(me["role"], "admin");
    assert_eq!(admins, 1);
}

#[tokio::test]
async fn replicas_starting_together_on_a_new_database_agree_on_one_signing_key() {
    let env = test_env();
    let mut a = env.clone();
    let mut b = env;
    a.insert("GATEWAY_ADDR".to_owned(), "127.0.0.1:0".to_owned());
    b.insert("GATEWAY_ADDR".to_owned(), "127.0.0.1:0".to_owned());

    let (first, second) = tokio::join!(
        spawn_with(gocommerce::Component::All, a),
        spawn_with(gocommerce::Component::All, b)
    );

    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM signing_keys")
        .fetch_one(&first.auth_db().await)
        .await
        .expect("count");
    assert_eq!(keys, 1);
    drop(second);
}

#[tokio::test]
async fn one_trace_spans_the_gateway_and_the_auth_service() {
    let app = spawn_app().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");

    let response = app
        .request(Method::POST, "/v1/auth/register")
        .header("traceparent", traceparent)
        .json(&serde_json::json!({"email": "traced@example.com", "password": "correct horse", "name": "T"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);

    let wanted = TraceId::from_hex(trace_id).expect("hex");
    let spans: Vec<_> = finished_spans()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == wanted)
        .map(|s| s.name.to_string())
        .collect();
    assert!(
        spans.iter().any(|n| n == "POST /v1/auth/register"),
        "{spans:?}"
    );
    assert!(
        spans
            .iter()
            .any(|n| n == "gocommerce.auth.v1.AuthService/Register"),
        "{spans:?}"
    );
}

#[tokio::test]
async fn services_refuse_role_changes_from_non_admins() {
    let app = spawn_app().await;
    let (_, tokens) = app.customer().await;
    let me: Value = app
        .get_with_token(
            "/v1/auth/me",
            tokens["access_token"].as_str().expect("token"),
        )
        .await
        .json()
        .await
        .expect("json");
    let user_id = me["id"].as_str().expect("id").to_owned();
    let url = format!("http://127.0.0.1:{}", app.auth_port.expect("auth"));
    let mut client = AuthServiceClient::connect(url).await.expect("connects");
    let admin_id = app.account_id(crate::helpers::ADMIN_EMAIL).await;
    let request = |caller_id: &str, role: &str| {
        let mut request = tonic::Request::new(gocommerce_proto::auth::v1::SetUserRoleRequest {
            user_id: user_id.clone(),
            role: gocommerce_proto::auth::v1::Role::Admin as i32,
        });
        request
            .metadata_mut()
            .insert("x-gocommerce-user-id", caller_id.parse().expect("ascii"));
        request
            .metadata_mut()
            .insert("x-gocommerce-role", role.parse().expect("ascii"));
        request
    };

    let as_customer = client.set_user_role(request(&user_id, "customer")).await;
    // The metadata says admin, the account does not: the service checks it.
    let posing = client.set_user_role(request(&user_id, "admin")).await;
    let anonymous = client
        .set_user_role(gocommerce_proto::auth::v1::SetUserRoleRequest {
            user_id: user_id.clone(),
            role: 2,
        })
        .await;
    let as_admin = client.set_user_role(request(&admin_id, "admin")).await;

    assert_eq!(
        as_customer.expect_err("customer").code(),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        anonymous.expect_err("anonymous").code(),
        tonic::Code::Unauthenticated
    );
    let posing = posing.expect_err("posing");
    assert_eq!(posing.code(), tonic::Code::PermissionDenied);
    assert_eq!(posing.message(), "the caller is no longer an admin");
    let account = as_admin
        .expect("admin may")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(account.role, gocommerce_proto::auth::v1::Role::Admin as i32);
}

#[tokio::test]
async fn a_configured_signing_key_is_used_instead_of_a_generated_one() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .expect("pem");
    let mut env = test_env();
    env.insert("JWT_SIGNING_KEY".to_owned(), pem.to_string());
    let app = spawn_with(gocommerce::Component::All, env).await;

    let jwks: Value = app
        .request(Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");

    let x = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        key.verifying_key().to_bytes(),
    );
    assert_eq!(jwks["keys"].as_array().expect("keys").len(), 1);
    assert_eq!(jwks["keys"][0]["x"], x);
    let (_, tokens) = app.customer().await;
    let header = jsonwebtoken::decode_header(tokens["access_token"].as_str().expect("token"))
        .expect("header");
    assert_eq!(header.kid.as_deref(), jwks["keys"][0]["kid"].as_str());
}

/// Starts `component` with `env`, expecting the start to fail; the error
/// with its causes. What the start created before it failed is dropped.
async fn refused_start(
    component: gocommerce::Component,
    env: &std::collections::HashMap<String, String>,
) -> String {
    let result = gocommerce::start(
        component,
        env,
        gocommerce_platform::Readiness::new(gocommerce_platform::Shutdown::new()),
    )
    .await;
    crate::helpers::drop_databases(env);
    format!("{:#}", result.expect_err("the start is refused"))
}

#[tokio::test]
async fn all_in_one_process_with_several_threads_per_component_serves_a_customer() {
    // One thread per component, the default, runs each on a current-thread
    // runtime; more run each on a multi-thread runtime of its own.
    let mut env = test_env();
    env.insert("COMPONENT_THREADS".to_owned(), "2".to_owned());
    let app = spawn_with(gocommerce::Component::All, env).await;

    let (email, tokens) = app.customer().await;
    let me = app
        .get_with_token(
            "/v1/auth/me",
            tokens["access_token"].as_str().expect("token"),
        )
        .await;

    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["email"], email.as_str());
}

#[tokio::test]
async fn all_in_one_process_refuses_zero_threads_per_component_by_name() {
    let mut env = test_env();
    env.insert("COMPONENT_THREADS".to_owned(), "0".to_owned());

    let error = refused_start(gocommerce::Component::All, &env).await;

    assert!(error.contains("COMPONENT_THREADS"), "{error}");
}

#[tokio::test]
async fn a_malformed_signing_key_stops_the_start_with_a_clear_error() {
    let mut env = test_env();
    env.insert("JWT_SIGNING_KEY".to_owned(), "not a key".to_owned());

    let error = refused_start(gocommerce::Component::Auth, &env).await;

    assert!(error.contains("JWT_SIGNING_KEY"), "{error}");
}

#[tokio::test]
async fn a_component_failing_to_start_in_all_stops_the_start_with_its_error() {
    // In `all` the component is built on a runtime of its own, which the
    // failed start must put down without blocking this one.
    let mut env = test_env();
    env.insert("JWT_SIGNING_KEY".to_owned(), "not a key".to_owned());

    let error = refused_start(gocommerce::Component::All, &env).await;

    assert!(error.contains("JWT_SIGNING_KEY"), "{error}");
}
