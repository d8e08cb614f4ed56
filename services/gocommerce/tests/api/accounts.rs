//! Admins disabling and enabling accounts: what a disabled account can no
//! longer do, and who may disable whom.

use gocommerce_platform::Role;
use gocommerce_proto::auth::v1 as pb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::refresh;
use crate::helpers::{
    ADMIN_EMAIL, PASSWORD, TestApp, as_caller, assert_problem, release_when_waiting, spawn_app,
};
use crate::passwords::ask_for_reset;
use crate::sessions::assert_ended;

/// `PUT /v1/admin/users/{id}/<what>` with `body`, as `admin`.
async fn put_user(
    app: &TestApp,
    admin: &str,
    id: &str,
    what: &str,
    body: Value,
) -> reqwest::Response {
    app.request(Method::PUT, &format!("/v1/admin/users/{id}/{what}"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .expect("request")
}

pub async fn set_status(app: &TestApp, admin: &str, id: &str, disabled: bool) -> reqwest::Response {
    put_user(app, admin, id, "status", json!({ "disabled": disabled })).await
}

pub async fn set_role(app: &TestApp, admin: &str, id: &str, role: &str) -> reqwest::Response {
    put_user(app, admin, id, "role", json!({ "role": role })).await
}

/// The gateway refused a disabled account's token as that of an ended
/// session, and the auth service, asked directly, refused the account.
async fn assert_refused_both_ways<T: std::fmt::Debug>(
    through_gateway: reqwest::Response,
    past_gateway: Result<T, tonic::Status>,
) {
    assert_ended(through_gateway).await;
    let refused = past_gateway.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(refused.message(), "the account is disabled");
}

/// A second admin: a customer the bootstrap admin promotes, logged in
/// again. Their id and access token.
async fn second_admin(app: &TestApp, first: &str) -> (String, String) {
    let (email, _) = app.customer().await;
    let id = app.account_id(&email).await;
    assert_eq!(
        set_role(app, first, &id, "admin").await.status(),
        StatusCode::OK
    );
    let tokens: Value = app
        .login(&email, PASSWORD)
        .await
        .json()
        .await
        .expect("json");
    (
        id,
        tokens["access_token"].as_str().expect("token").to_owned(),
    )
}

/// The token's account is still an admin.
async fn assert_still_admin(app: &TestApp, token: &str) {
    let me: Value = app
        .get_with_token("/v1/auth/me", token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["role"], "admin");
}

async fn reset_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM password_resets")
        .fetch_one(&app.auth_db().await)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_disabled_account_loses_its_sessions_and_cannot_log_in_refresh_or_reset() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (email, tokens) = app.customer().await;
    let id = app.account_id(&email).await;

    // Act
    let disabled = set_status(&app, &admin, &id, true).await;

    // Assert
    assert_eq!(disabled.status(), StatusCode::OK);
    let status: Value = disabled.json().await.expect("json");
    assert_eq!(status["disabled"], true);
    assert!(status["disabled_at"].is_string(), "{status}");
    let login = assert_problem(app.login(&email, PASSWORD).await, StatusCode::FORBIDDEN).await;
    assert_eq!(login["detail"], "the account is disabled");
    // A wrong password says nothing about the account's status.
    assert_problem(
        app.login(&email, "wrong password").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_problem(
        refresh(&app, &tokens["refresh_token"]).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        ask_for_reset(&app, &email).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(reset_rows(&app).await, 0, "no reset token was sent");
}

#[tokio::test]
async fn a_session_that_outlived_the_disabling_still_cannot_refresh() {
    // Arrange: a login that checked the account just before it was disabled
    // commits its session after the revocation; here its family is revived
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (email, tokens) = app.customer().await;
    let id = app.account_id(&email).await;
    set_status(&app, &admin, &id, true).await;
    sqlx::query("UPDATE refresh_families SET revoked_at = NULL, revoke_reason = NULL")
        .execute(&app.auth_db().await)
        .await
        .expect("update");

    // Act
    let response = refresh(&app, &tokens["refresh_token"]).await;

    // Assert
    assert_problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn an_access_token_issued_before_disabling_cannot_change_the_password() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (email, tokens) = app.customer().await;
    let id = app.account_id(&email).await;
    set_status(&app, &admin, &id, true).await;
    let body = json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"});
    // Past the gateway, as from a replica that has not yet read the ended
    // sessions: the auth service checks the account itself.
    let direct = as_caller(
        pb::ChangePasswordRequest {
            user_id: id.clone(),
            current_password: PASSWORD.to_owned(),
            new_password: "a brand new passphrase".to_owned(),
            client_ip: "127.0.0.1".to_owned(),
        },
        &id,
        Role::Customer,
    );

    // Act
    let through_gateway = app
        .request(Method::POST, "/v1/auth/password")
        .bearer_auth(tokens["access_token"].as_str().expect("token"))
        .json(&body)
        .send()
        .await
        .expect("request");
    let past_gateway = app.auth_service().await.change_password(direct).await;

    // Assert
    assert_refused_both_ways(through_gateway, past_gateway).await;
    set_status(&app, &admin, &id, false).await;
    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::OK,
        "the password is unchanged"
    );
}

#[tokio::test]
async fn a_reset_token_sent_before_disabling_no_longer_works() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (email, _) = app.customer().await;
    let id = app.account_id(&email).await;
    assert_eq!(
        ask_for_reset(&app, &email).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(reset_rows(&app).await, 1);
    set_status(&app, &admin, &id, true).await;
    let spent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM password_resets WHERE used_at IS NOT NULL")
            .fetch_one(&app.auth_db().await)
            .await
            .expect("count");

    // Act: enabled again, the old token still does not come back to life
    set_status(&app, &admin, &id, false).await;
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM password_resets WHERE used_at IS NULL")
            .fetch_one(&app.auth_db().await)
            .await
            .expect("count");

    // Assert
    assert_eq!(spent, 1);
    assert_eq!(live, 0);
}

#[tokio::test]
async fn an_enabled_account_logs_in_again_and_reads_as_enabled() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (email, _) = app.customer().await;
    let id = app.account_id(&email).await;
    set_status(&app, &admin, &id, true).await;

    // Act
    let enabled = set_status(&app, &admin, &id, false).await;
    let read = app
        .get_with_token(&format!("/v1/admin/users/{id}/status"), &admin)
        .await;

    // Assert
    assert_eq!(enabled.status(), StatusCode::OK);
    assert_eq!(
        read.json::<Value>().await.expect("json"),
        json!({"disabled": false, "disabled_at": null})
    );
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn disabling_twice_keeps_the_time_it_was_first_disabled() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (email, _) = app.customer().await;
    let id = app.account_id(&email).await;

    let first: Value = set_status(&app, &admin, &id, true)
        .await
        .json()
        .await
        .expect("json");
    let second: Value = set_status(&app, &admin, &id, true)
        .await
        .json()
        .await
        .expect("json");

    assert_eq!(first["disabled_at"], second["disabled_at"]);
}

#[tokio::test]
async fn an_admin_cannot_disable_their_own_account() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let me: Value = app
        .get_with_token("/v1/auth/me", &admin)
        .await
        .json()
        .await
        .expect("json");

    let response = set_status(&app, &admin, me["id"].as_str().expect("id"), true).await;

    assert_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(
        app.get_with_token("/v1/auth/me", &app.admin_token().await)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_admin_cannot_demote_themselves_and_keeps_their_session() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let id = app.account_id(ADMIN_EMAIL).await;

    let response = set_role(&app, &admin, &id, "customer").await;

    let problem = assert_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(problem["detail"], "an admin cannot demote themselves");
    assert_still_admin(&app, &admin).await;
}

#[tokio::test]
async fn a_disabled_admin_cannot_disable_another_through_the_gateway_or_past_it() {
    // Arrange: a second admin, disabled by the first while holding a token
    let app = spawn_app().await;
    let first = app.admin_token().await;
    let first_id = app.account_id(ADMIN_EMAIL).await;
    let (second_id, second) = second_admin(&app, &first).await;
    assert_eq!(
        set_status(&app, &first, &second_id, true).await.status(),
        StatusCode::OK
    );

    // Past the gateway, as from a replica that has not yet read the ended
    // sessions: the auth service checks the caller itself.
    let direct = as_caller(
        pb::SetAccountDisabledRequest {
            user_id: first_id.clone(),
            disabled: true,
        },
        &second_id,
        Role::Admin,
    );

    // Act
    let through_gateway = set_status(&app, &second, &first_id, true).await;
    let past_gateway = app.auth_service().await.set_account_disabled(direct).await;

    // Assert
    assert_refused_both_ways(through_gateway, past_gateway).await;
    let status: Value = app
        .get_with_token(&format!("/v1/admin/users/{first_id}/status"), &first)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(status["disabled"], false);
}

#[tokio::test]
async fn only_admins_set_an_account_status_and_only_of_accounts_that_exist() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (email, tokens) = app.customer().await;
    let (other_email, other) = app.customer().await;
    let other_id = app.account_id(&other_email).await;
    let customer = tokens["access_token"].as_str().expect("token");

    // Act
    let by_customer = set_status(&app, customer, &other_id, true).await;
    let read_by_customer = app
        .get_with_token(&format!("/v1/admin/users/{other_id}/status"), customer)
        .await;
    let unknown = set_status(&app, &admin, "0190a000-0000-7000-8000-000000000000", true).await;
    let not_a_uuid = set_status(&app, &admin, "nope", true).await;
    let bad_body = app
        .request(Method::PUT, &format!("/v1/admin/users/{other_id}/status"))
        .bearer_auth(&admin)
        .json(&json!({"disabled": "yes"}))
        .send()
        .await
        .expect("request");

    // Assert
    assert_problem(by_customer, StatusCode::FORBIDDEN).await;
    assert_problem(read_by_customer, StatusCode::FORBIDDEN).await;
    assert_problem(unknown, StatusCode::NOT_FOUND).await;
    assert_problem(not_a_uuid, StatusCode::BAD_REQUEST).await;
    assert_problem(bad_body, StatusCode::BAD_REQUEST).await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
    assert_eq!(
        refresh(&app, &other["refresh_token"]).await.status(),
        StatusCode::OK,
        "nothing was disabled"
    );
}

#[tokio::test]
async fn the_admins_user_list_and_a_role_change_say_which_accounts_are_disabled() {
    // Arrange: two customers, one of them disabled
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (disabled_email, _) = app.customer().await;
    let (enabled_email, _) = app.customer().await;
    let disabled_id = app.account_id(&disabled_email).await;
    let status: Value = set_status(&app, &admin, &disabled_id, true)
        .await
        .json()
        .await
        .expect("json");

    // Act
    let list: Value = app
        .get_with_token("/v1/admin/users?page_size=100", &admin)
        .await
        .json()
        .await
        .expect("json");
    let promoted: Value = set_role(&app, &admin, &disabled_id, "admin")
        .await
        .json()
        .await
        .expect("json");

    // Assert
    let disabled_at = |email: &str| {
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|p| p["email"] == email)
            .unwrap_or_else(|| panic!("{email} in {list}"))["disabled_at"]
            .clone()
    };
    assert!(status["disabled_at"].is_string(), "{status}");
    assert_eq!(disabled_at(&disabled_email), status["disabled_at"]);
    assert_eq!(disabled_at(&enabled_email), Value::Null);
    assert_eq!(disabled_at(ADMIN_EMAIL), Value::Null);
    assert_eq!(promoted["disabled_at"], status["disabled_at"]);
}

/// The emails on every page of `GET /v1/admin/users` with `query`.
async fn listed_emails(app: &TestApp, admin: &str, query: &str) -> Vec<String> {
    let list: Value = app
        .get_with_token(&format!("/v1/admin/users?page_size=100&{query}"), admin)
        .await
        .json()
        .await
        .expect("json");
    assert!(list["next_page_token"].is_null(), "one page: {list}");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["email"].as_str().expect("email").to_owned())
        .collect()
}

#[tokio::test]
async fn the_admins_user_list_shows_only_disabled_or_only_enabled_accounts_when_asked() {
    // Arrange: two customers, one of them disabled
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (disabled_email, _) = app.customer().await;
    let (enabled_email, _) = app.customer().await;
    let disabled_id = app.account_id(&disabled_email).await;
    assert_eq!(
        set_status(&app, &admin, &disabled_id, true).await.status(),
        StatusCode::OK
    );

    // Act
    let disabled = listed_emails(&app, &admin, "disabled=true").await;
    let enabled = listed_emails(&app, &admin, "disabled=false").await;
    let disabled_admins = listed_emails(&app, &admin, "disabled=true&role=admin").await;
    let bad = app
        .get_with_token("/v1/admin/users?disabled=maybe", &admin)
        .await;
    assert_eq!(
        set_status(&app, &admin, &disabled_id, false).await.status(),
        StatusCode::OK
    );
    let disabled_after_enabling = listed_emails(&app, &admin, "disabled=true").await;

    // Assert: each answer right after the change, with no waiting
    assert_eq!(disabled, [disabled_email]);
    assert_eq!(
        enabled,
        [ADMIN_EMAIL.to_owned(), enabled_email],
        "everyone else, oldest first"
    );
    assert!(disabled_admins.is_empty(), "{disabled_admins:?}");
    let problem = assert_problem(bad, StatusCode::BAD_REQUEST).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("disabled")),
        "{problem}"
    );
    assert!(
        disabled_after_enabling.is_empty(),
        "{disabled_after_enabling:?}"
    );
}

#[tokio::test]
async fn an_account_copy_the_user_service_missed_is_sent_again() {
    // Arrange: a customer whose profile still says "admin", as if the copy
    // of a demotion had been lost with the user service away, and auth
    // knowing the copy was never confirmed
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (email, _) = app.customer().await;
    let id: Uuid = app.account_id(&email).await.parse().expect("uuid");
    sqlx::query("UPDATE profiles SET role = 'admin', account_version = 0 WHERE id = $1")
        .bind(id)
        .execute(&app.user_db().await)
        .await
        .expect("stale copy");
    let auth_db = app.auth_db().await;
    sqlx::query("UPDATE accounts SET mirror_version = mirror_version + 1 WHERE id = $1")
        .bind(id)
        .execute(&auth_db)
        .await
        .expect("unconfirmed");
    assert_eq!(
        listed_emails(&app, &admin, "role=admin").await,
        [ADMIN_EMAIL.to_owned(), email.clone()],
        "the stale copy shows"
    );

    // Act: wait for auth's loop, which looks every two seconds
    let mut admins = Vec::new();
    for _ in 0..100 {
        admins = listed_emails(&app, &admin, "role=admin").await;
        if admins.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Assert
    assert_eq!(admins, [ADMIN_EMAIL.to_owned()], "the copy was repaired");
    let (mirror, mirrored): (i64, i64) =
        sqlx::query_as("SELECT mirror_version, mirrored_version FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_one(&auth_db)
            .await
            .expect("versions");
    assert_eq!(mirrored, mirror, "and auth knows it arrived");
}

#[tokio::test]
async fn the_auth_service_reads_many_accounts_for_admins_only_and_at_most_a_page() {
    // Arrange
    let app = spawn_app().await;
    let (email, _) = app.customer().await;
    let id = app.account_id(&email).await;
    let admin_id = app.account_id(ADMIN_EMAIL).await;
    let mut auth = app.auth_service().await;
    let ask = |ids: Vec<String>, role: Role| {
        as_caller(pb::GetAccountsRequest { user_ids: ids }, &admin_id, role)
    };
    let unknown = Uuid::new_v4().to_string();

    // Act
    let read = auth
        .get_accounts(ask(vec![id.clone(), unknown], Role::Admin))
        .await
        .expect("read")
        .into_inner();
    let as_customer = auth
        .get_accounts(ask(vec![id.clone()], Role::Customer))
        .await
        .expect_err("refused");
    let too_many = auth
        .get_accounts(ask(vec![id.clone(); 101], Role::Admin))
        .await
        .expect_err("refused");
    let not_an_id = auth
        .get_accounts(ask(vec!["me".to_owned()], Role::Admin))
        .await
        .expect_err("refused");

    // Assert
    assert_eq!(read.accounts.len(), 1, "unknown ids are left out");
    assert_eq!(read.accounts[0].id, id);
    assert_eq!(read.accounts[0].email, email);
    assert_eq!(as_customer.code(), tonic::Code::PermissionDenied);
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
    assert_eq!(too_many.message(), "user_ids: at most 100");
    assert_eq!(not_an_id.code(), tonic::Code::InvalidArgument);
    assert_eq!(not_an_id.message(), "user_ids: must be UUIDs");
}

#[tokio::test]
async fn a_demoted_admin_changes_no_role_and_disables_nobody_through_the_gateway_or_past_it() {
    // Arrange: a second admin, demoted by the first while holding a token
    let app = spawn_app().await;
    let first = app.admin_token().await;
    let first_id = app.account_id(ADMIN_EMAIL).await;
    let (second_id, second) = second_admin(&app, &first).await;
    assert_eq!(
        set_role(&app, &first, &second_id, "customer")
            .await
            .status(),
        StatusCode::OK
    );
    let direct_role = as_caller(
        pb::SetUserRoleRequest {
            user_id: first_id.clone(),
            role: pb::Role::Customer as i32,
        },
        &second_id,
        Role::Admin,
    );
    let direct_status = as_caller(
        pb::SetAccountDisabledRequest {
            user_id: first_id.clone(),
            disabled: true,
        },
        &second_id,
        Role::Admin,
    );
    let mut auth = app.auth_service().await;

    // Act
    let through_gateway = set_role(&app, &second, &first_id, "customer").await;
    let role_past_gateway = auth.set_user_role(direct_role).await;
    let status_past_gateway = auth.set_account_disabled(direct_status).await;

    // Assert
    assert_ended(through_gateway).await;
    for refused in [
        role_past_gateway.expect_err("refused"),
        status_past_gateway.expect_err("refused"),
    ] {
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert_eq!(refused.message(), "the caller is no longer an admin");
    }
    assert_still_admin(&app, &first).await;
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    // Arrange: a lock on the accounts table holds each demotion's update
    // until both requests wait on a lock, so neither commits before the
    // other has checked its caller
    let app = spawn_app().await;
    let first = app.admin_token().await;
    let first_id = app.account_id(ADMIN_EMAIL).await;
    let (second_id, second) = second_admin(&app, &first).await;
    let db = app.auth_db().await;
    let mut blocker = db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE accounts IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");

    // Act
    let ((a, b), ()) = tokio::join!(
        async {
            tokio::join!(
                set_role(&app, &first, &second_id, "customer"),
                set_role(&app, &second, &first_id, "customer"),
            )
        },
        release_when_waiting(&db, blocker, 2)
    );

    // Assert
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::FORBIDDEN]);
    let admins: i64 =
        sqlx::query_scalar("SELECT count(*) FROM accounts WHERE id = ANY($1) AND role = 'admin'")
            .bind([
                Uuid::parse_str(&first_id).expect("uuid"),
                Uuid::parse_str(&second_id).expect("uuid"),
            ])
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(admins, 1);
}
