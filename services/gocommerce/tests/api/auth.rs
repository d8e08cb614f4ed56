//! Registration, login, refresh-token rotation and logout through the REST API.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, assert_problem, retry_after, spawn_app, spawn_behind_proxy};

fn unique_email() -> String {
    format!("{}@Example.com", Uuid::new_v4().simple())
}

#[tokio::test]
async fn registering_returns_201_with_the_normalised_account() {
    let app = spawn_app().await;
    let email = format!("  {}  ", unique_email());

    let response = app.register(&email, PASSWORD, "  Ada Lovelace ").await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["email"], email.trim().to_lowercase());
    assert_eq!(body["name"], "Ada Lovelace");
    assert_eq!(body["role"], "customer");
    Uuid::parse_str(body["id"].as_str().expect("id")).expect("the id is a UUID");
}

#[tokio::test]
async fn registering_while_the_user_database_is_out_is_a_503_to_retry_that_creates_no_account() {
    let (app, mut proxy) = spawn_behind_proxy("USER").await;
    let email = unique_email();

    proxy.cut();
    let response = app.register(&email, PASSWORD, "Ada").await;
    proxy.restore().await;

    assert_eq!(retry_after(&response), Some("1"));
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED,
        "no account was made"
    );
    assert_eq!(
        app.register(&email, PASSWORD, "Ada").await.status(),
        StatusCode::CREATED,
        "the email is still free once the database is back"
    );
}

#[tokio::test]
async fn registering_a_taken_email_in_any_case_is_a_409() {
    let app = spawn_app().await;
    let email = unique_email();
    assert_eq!(
        app.register(&email, PASSWORD, "Ada").await.status(),
        StatusCode::CREATED
    );

    let response = app
        .register(&email.to_uppercase(), PASSWORD, "Impostor")
        .await;

    let problem = assert_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("already exists")
    );
}

#[tokio::test]
async fn invalid_registrations_say_which_fields_are_wrong_and_write_nothing() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": PASSWORD, "name": "Ada"}),
            "email",
        ),
        (
            json!({"email": "ada@example.com", "password": "short", "name": "Ada"}),
            "password",
        ),
        (
            json!({"email": "ada@example.com", "password": "x".repeat(129), "name": "Ada"}),
            "password",
        ),
        (
            json!({"email": "ada@example.com", "password": PASSWORD, "name": "   "}),
            "name",
        ),
        (
            json!({"email": "ada@example.com", "password": PASSWORD, "name": "x".repeat(101)}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let response = app.post_json("/v1/auth/register", &body).await;

        let problem = assert_problem(response, StatusCode::BAD_REQUEST).await;
        let errors = problem["errors"].as_array().expect("field errors");
        assert!(
            errors.iter().any(|e| e["field"] == field),
            "{body} should report {field}: {problem}"
        );
    }
    // Nothing was written: the email is still free.
    let response = app.register("ada@example.com", PASSWORD, "Ada").await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn passwords_longer_than_72_bytes_are_compared_in_full() {
    let app = spawn_app().await;
    let email = unique_email();
    let prefix = "p".repeat(72);
    assert_eq!(
        app.register(&email, &format!("{prefix}-right"), "Ada")
            .await
            .status(),
        StatusCode::CREATED
    );

    let wrong = app.login(&email, &format!("{prefix}-wrong")).await;
    let right = app.login(&email, &format!("{prefix}-right")).await;

    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(right.status(), StatusCode::OK);
}

#[tokio::test]
async fn logging_in_returns_a_bearer_token_pair() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ada").await;

    let response = app.login(&email.to_uppercase(), PASSWORD).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert!(
        body["access_token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    assert!(
        body["refresh_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ada").await;

    let wrong_password = app.login(&email, "not the password").await;
    let unknown_email = app.login(&unique_email(), "not the password").await;

    assert_eq!(wrong_password.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_email.status(), StatusCode::UNAUTHORIZED);
    let a: Value = wrong_password.json().await.expect("json");
    let b: Value = unknown_email.json().await.expect("json");
    assert_eq!(a, b);
}

#[tokio::test]
async fn a_login_without_an_email_is_a_400_and_with_a_blank_one_a_401() {
    let app = spawn_app().await;

    let missing = app.login("", PASSWORD).await;
    let blank = app.login("\n", PASSWORD).await;

    assert_problem(missing, StatusCode::BAD_REQUEST).await;
    // The schema asks for one character at least, and a blank address is
    // wrong the way any address without an account is.
    assert_problem(blank, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn repeated_failures_lock_the_account_even_for_the_right_password() {
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ada").await;
    for _ in 0..5 {
        assert_eq!(
            app.login(&email, "wrong password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    let response = app.login(&email, PASSWORD).await;

    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS).await;
    // Another account from the same client is not locked by this one.
    let (_, tokens) = app.customer().await;
    assert!(tokens["access_token"].is_string());
}

#[tokio::test]
async fn guesses_sent_at_once_have_no_more_passwords_checked_than_guesses_one_by_one() {
    // Arrange
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ada").await;

    // Act
    let answers =
        futures::future::join_all((0..12).map(|_| app.login(&email, "wrong password"))).await;

    // Assert: five wrong passwords, then the account is locked
    let statuses: Vec<StatusCode> = answers.iter().map(reqwest::Response::status).collect();
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let locked = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, locked), (5, 7), "{statuses:?}");
    assert_problem(
        app.login(&email, PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
}

#[tokio::test]
async fn a_login_its_caller_gave_up_on_while_the_password_was_checked_does_not_count() {
    // Arrange: the password hashers are kept busy by thirty other logins, so
    // a login with a 30 ms deadline is given up on while it waits for them,
    // after its attempt was counted.
    let app = spawn_app().await;
    let email = unique_email();
    app.register(&email, PASSWORD, "Ada").await;
    let auth = app.auth_service().await;
    let login = |email: String, deadline: Option<std::time::Duration>| {
        let mut auth = auth.clone();
        async move {
            let mut request = tonic::Request::new(gocommerce_proto::auth::v1::LoginRequest {
                email,
                password: PASSWORD.to_owned(),
                client_ip: String::new(),
            });
            if let Some(deadline) = deadline {
                request.set_timeout(deadline);
            }
            auth.login(request).await.map(drop)
        }
    };
    let busy = futures::future::join_all((0..30).map(|_| login(unique_email(), None)));
    let given_up = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        login(email.clone(), Some(std::time::Duration::from_millis(30))).await
    };

    // Act
    let (_, given_up) = tokio::join!(busy, given_up);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    // Assert
    assert_eq!(
        given_up.expect_err("given up on").code(),
        tonic::Code::Cancelled
    );
    let failures: Option<i32> =
        sqlx::query_scalar("SELECT failures FROM login_failures WHERE key = $1")
            .bind(format!("account:{}", email.to_lowercase()))
            .fetch_optional(&app.auth_db().await)
            .await
            .expect("login_failures");
    assert_eq!(failures, Some(0), "counted when admitted, then taken back");
}

#[tokio::test]
async fn unknown_emails_are_locked_the_same_way_as_known_ones() {
    let app = spawn_app().await;
    let email = unique_email();
    for _ in 0..5 {
        app.login(&email, "wrong password").await;
    }

    let response = app.login(&email, "wrong password").await;

    assert_problem(response, StatusCode::TOO_MANY_REQUESTS).await;
}

pub async fn refresh(app: &crate::helpers::TestApp, token: &Value) -> reqwest::Response {
    app.post_json("/v1/auth/refresh", &json!({"refresh_token": token}))
        .await
}

#[tokio::test]
async fn a_refresh_token_is_measured_in_characters_as_the_schema_says() {
    let app = spawn_app().await;
    let longest = "é".repeat(256);
    let too_long = "é".repeat(257);

    let unknown = refresh(&app, &json!(longest)).await;
    let refused = refresh(&app, &json!(too_long)).await;

    // 256 characters (512 bytes) are within the schema's maxLength: a token
    // the server never issued, not a malformed request.
    assert_problem(unknown, StatusCode::UNAUTHORIZED).await;
    assert_problem(refused, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn refreshing_rotates_the_refresh_token() {
    let app = spawn_app().await;
    let (_, first) = app.customer().await;

    let response = refresh(&app, &first["refresh_token"]).await;

    assert_eq!(response.status(), StatusCode::OK);
    let second: Value = response.json().await.expect("json");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_ne!(second["access_token"], first["access_token"]);
    assert_eq!(second["token_type"], "Bearer");
    let me = app
        .get_with_token(
            "/v1/auth/me",
            second["access_token"].as_str().expect("token"),
        )
        .await;
    assert_eq!(me.status(), StatusCode::OK);
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_family() {
    let app = spawn_app().await;
    let (_, first) = app.customer().await;
    let second: Value = refresh(&app, &first["refresh_token"])
        .await
        .json()
        .await
        .expect("json");

    let reuse = refresh(&app, &first["refresh_token"]).await;
    let after = refresh(&app, &second["refresh_token"]).await;

    assert_problem(reuse, StatusCode::UNAUTHORIZED).await;
    assert_problem(after, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_leave_at_most_one_winner() {
    let app = spawn_app().await;
    let (_, tokens) = app.customer().await;

    let responses =
        futures::future::join_all((0..5).map(|_| refresh(&app, &tokens["refresh_token"]))).await;

    let winners: Vec<_> = responses
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .collect();
    assert!(winners.len() <= 1, "a refresh token is single use");
    for response in &responses {
        assert!(matches!(
            response.status(),
            StatusCode::OK | StatusCode::UNAUTHORIZED
        ));
    }
}

#[tokio::test]
async fn logging_out_revokes_the_session_and_is_idempotent() {
    let app = spawn_app().await;
    let (_, tokens) = app.customer().await;
    let body = json!({"refresh_token": tokens["refresh_token"]});

    let first = app.post_json("/v1/auth/logout", &body).await;
    let second = app.post_json("/v1/auth/logout", &body).await;

    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(second.status(), StatusCode::NO_CONTENT);
    assert_problem(
        refresh(&app, &tokens["refresh_token"]).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn an_expired_refresh_family_is_refused() {
    let app = spawn_app().await;
    let (_, tokens) = app.customer().await;
    let db = app.auth_db().await;
    sqlx::query("UPDATE refresh_families SET expires_at = now() - interval '1 second'")
        .execute(&db)
        .await
        .expect("update");

    let response = refresh(&app, &tokens["refresh_token"]).await;

    assert_problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn refresh_tokens_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let (_, tokens) = app.customer().await;
    let db = app.auth_db().await;

    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM refresh_tokens")
        .fetch_all(&db)
        .await
        .expect("select");

    let token = tokens["refresh_token"]
        .as_str()
        .expect("token")
        .as_bytes()
        .to_vec();
    assert!(!stored.is_empty());
    assert!(stored.iter().all(|h| h.len() == 32 && *h != token));
}

#[tokio::test]
async fn registering_records_a_user_registered_event_in_the_same_transaction() {
    let app = spawn_app().await;
    let email = unique_email();

    let response = app.register(&email, PASSWORD, "Ada").await;

    let account: Value = response.json().await.expect("json");
    let payloads: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE routing_key = 'user.registered'")
            .fetch_all(&app.auth_db().await)
            .await
            .expect("outbox");
    let envelopes: Vec<_> = payloads
        .iter()
        .map(|p| gocommerce_platform::events::decode(p).expect("an event envelope"))
        .collect();
    let mine = envelopes
        .iter()
        .find(|e| e.aggregate_id == account["id"].as_str().expect("id"))
        .expect("the new account's event");
    assert_eq!(mine.event_type, "user.registered");
    let Some(gocommerce_proto::events::v1::event_envelope::Payload::UserRegistered(user)) =
        &mine.payload
    else {
        panic!("a user.registered payload");
    };
    assert_eq!(user.email, email.to_lowercase());
}

async fn logout_everywhere(app: &crate::helpers::TestApp, token: &Value) -> reqwest::Response {
    app.request(reqwest::Method::POST, "/v1/auth/logout-everywhere")
        .bearer_auth(token.as_str().expect("token"))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn logging_out_everywhere_ends_every_session_of_the_account_and_no_other() {
    // Arrange: three sessions of one customer, one of another
    let app = spawn_app().await;
    let (email, first) = app.customer().await;
    let mut pairs = vec![first];
    for _ in 0..2 {
        pairs.push(
            app.login(&email, PASSWORD)
                .await
                .json()
                .await
                .expect("json"),
        );
    }
    let (_, other) = app.customer().await;

    // Act
    let response = logout_everywhere(&app, &pairs[1]["access_token"]).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"sessions_ended": 3})
    );
    for pair in &pairs {
        assert_problem(
            refresh(&app, &pair["refresh_token"]).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    assert_eq!(
        refresh(&app, &other["refresh_token"]).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn logging_out_everywhere_again_ends_only_the_sessions_started_since() {
    use gocommerce_platform::Role;
    use gocommerce_proto::auth::v1 as pb;

    // Arrange: every session ended once, then one more login
    let app = spawn_app().await;
    let (email, tokens) = app.customer().await;
    let first = logout_everywhere(&app, &tokens["access_token"]).await;
    let next: Value = app
        .login(&email, PASSWORD)
        .await
        .json()
        .await
        .expect("json");
    let id = app.account_id(&email).await;
    // With no session left the gateway refuses every token of the account,
    // so the service is asked directly.
    let nothing_left = crate::helpers::as_caller(
        pb::LogoutEverywhereRequest {
            user_id: id.clone(),
        },
        &id,
        Role::Customer,
    );

    // Act
    let again = logout_everywhere(&app, &next["access_token"]).await;
    let once_more = app
        .auth_service()
        .await
        .logout_everywhere(nothing_left)
        .await
        .expect("idempotent");

    // Assert
    assert_eq!(
        first.json::<Value>().await.expect("json")["sessions_ended"],
        1
    );
    assert_eq!(
        again.json::<Value>().await.expect("json")["sessions_ended"],
        1
    );
    assert_eq!(once_more.into_inner().sessions_ended, 0);
}

#[tokio::test]
async fn logging_out_everywhere_needs_an_access_token() {
    let app = spawn_app().await;

    let response = app
        .request(reqwest::Method::POST, "/v1/auth/logout-everywhere")
        .send()
        .await
        .expect("request");

    assert_problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn the_auth_service_ends_no_sessions_but_the_callers_own() {
    // A peer calling the service directly, even as an admin, must not end
    // another account's sessions.
    use gocommerce_platform::{Caller, Role};
    use gocommerce_proto::auth::v1 as pb;

    let app = spawn_app().await;
    let (email, tokens) = app.customer().await;
    let victim_id = app.account_id(&email).await;
    let mut auth = app.auth_service().await;
    let mut request = tonic::Request::new(pb::LogoutEverywhereRequest { user_id: victim_id });
    Caller {
        user_id: Uuid::now_v7(),
        role: Role::Admin,
    }
    .write_to(request.metadata_mut());

    let refused = auth.logout_everywhere(request).await.expect_err("refused");

    assert_eq!(refused.code(), tonic::Code::NotFound);
    assert_eq!(
        refresh(&app, &tokens["refresh_token"]).await.status(),
        StatusCode::OK
    );
}
