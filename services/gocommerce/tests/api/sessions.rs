//! Access tokens of ended sessions: the gateway refuses them as soon as the
//! session ends through it, and within a poll when it ended elsewhere; the
//! auth service lists the ended sessions a page at a time.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use gocommerce_platform::time::from_timestamp;
use gocommerce_proto::auth::v1 as pb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::accounts::{set_role, set_status};
use crate::auth::refresh;
use crate::helpers::{PASSWORD, TestApp, assert_problem, spawn_app, spawn_with, test_env};
use crate::mailbox::SmtpServer;
use crate::notifications::spawn_with_smtp;
use crate::passwords::{ask_for_reset, change_password, confirm_reset, reset_token};

const ENDED: &str = "the token's session has ended; log in again";

/// `GET /v1/auth/me` with the pair's access token.
async fn me(app: &TestApp, pair: &Value) -> reqwest::Response {
    app.get_with_token(
        "/v1/auth/me",
        pair["access_token"].as_str().expect("access token"),
    )
    .await
}

/// The gateway refused the request's token as that of an ended session.
pub async fn assert_ended(response: reqwest::Response) {
    let problem = assert_problem(response, StatusCode::UNAUTHORIZED).await;
    assert_eq!(problem["detail"], ENDED);
}

async fn login(app: &TestApp, email: &str, password: &str) -> Value {
    let response = app.login(email, password).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("token json")
}

/// Asks with the pair's access token until the gateway refuses it as the
/// token of an ended session (it reads them every second), for up to 10 s.
async fn wait_until_ended(app: &TestApp, pair: &Value) {
    let start = Instant::now();
    loop {
        let response = me(app, pair).await;
        if response.status() == StatusCode::UNAUTHORIZED {
            assert_ended(response).await;
            return;
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the token still passes after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn logging_out_refuses_that_sessions_access_token_at_once_and_no_other() {
    // Arrange: two sessions of one customer, the first token verified before
    let app = spawn_app().await;
    let (email, first) = app.customer().await;
    let second = login(&app, &email, PASSWORD).await;
    assert_eq!(me(&app, &first).await.status(), StatusCode::OK);

    // Act
    let logout = app
        .post_json(
            "/v1/auth/logout",
            &json!({"refresh_token": first["refresh_token"]}),
        )
        .await;

    // Assert
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_ended(me(&app, &first).await).await;
    assert_eq!(me(&app, &second).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn logging_out_everywhere_refuses_every_sessions_access_tokens_but_not_a_new_logins() {
    // Arrange
    let app = spawn_app().await;
    let (email, first) = app.customer().await;
    let second = login(&app, &email, PASSWORD).await;
    let (_, other) = app.customer().await;

    // Act
    let response = app
        .request(Method::POST, "/v1/auth/logout-everywhere")
        .bearer_auth(second["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("request");
    let after = login(&app, &email, PASSWORD).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    assert_ended(me(&app, &first).await).await;
    assert_ended(me(&app, &second).await).await;
    assert_eq!(me(&app, &after).await.status(), StatusCode::OK);
    assert_eq!(me(&app, &other).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_password_change_refuses_the_old_access_tokens_and_accepts_the_new_one() {
    // Arrange
    let app = spawn_app().await;
    let (email, first) = app.customer().await;
    let second = login(&app, &email, PASSWORD).await;

    // Act
    let response = change_password(&app, &first, PASSWORD, "a brand new passphrase").await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let new: Value = response.json().await.expect("json");
    assert_ended(me(&app, &first).await).await;
    assert_ended(me(&app, &second).await).await;
    assert_eq!(me(&app, &new).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_password_reset_refuses_the_accounts_access_tokens() {
    // Arrange
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let (email, tokens) = app.customer().await;
    assert_eq!(
        ask_for_reset(&app, &email).await.status(),
        StatusCode::ACCEPTED
    );
    let token = reset_token(&smtp, &email).await;

    // Act
    let confirmed = confirm_reset(&app, &token, "a brand new passphrase").await;

    // Assert
    assert_eq!(confirmed.status(), StatusCode::NO_CONTENT);
    assert_ended(me(&app, &tokens).await).await;
}

#[tokio::test]
async fn a_disabled_accounts_access_tokens_are_refused_and_work_for_nobody_after_enabling() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (email, tokens) = app.customer().await;
    let id = app.account_id(&email).await;

    // Act
    let disabled = set_status(&app, &admin, &id, true).await;
    let refused = me(&app, &tokens).await;
    let enabled = set_status(&app, &admin, &id, false).await;

    // Assert: enabling starts no ended session again
    assert_eq!(disabled.status(), StatusCode::OK);
    assert_ended(refused).await;
    assert_eq!(enabled.status(), StatusCode::OK);
    assert_ended(me(&app, &tokens).await).await;
    let after = login(&app, &email, PASSWORD).await;
    assert_eq!(me(&app, &after).await.status(), StatusCode::OK);
}

/// `GET /v1/admin/users` with the pair's access token.
async fn list_users(app: &TestApp, pair: &Value) -> reqwest::Response {
    app.get_with_token(
        "/v1/admin/users",
        pair["access_token"].as_str().expect("access token"),
    )
    .await
}

#[tokio::test]
async fn a_demoted_admin_is_refused_at_once_and_a_promoted_customer_keeps_their_session() {
    // Arrange: a customer, promoted, who logs in again as an admin
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (email, as_customer) = app.customer().await;
    let id = app.account_id(&email).await;
    assert_eq!(
        set_role(&app, &admin, &id, "admin").await.status(),
        StatusCode::OK
    );
    let as_admin = login(&app, &email, PASSWORD).await;
    assert_eq!(list_users(&app, &as_admin).await.status(), StatusCode::OK);

    // Act
    let demoted = set_role(&app, &admin, &id, "customer").await;

    // Assert: the promotion kept the customer's session; the demotion ended both
    assert_eq!(demoted.status(), StatusCode::OK);
    assert_ended(list_users(&app, &as_admin).await).await;
    assert_ended(me(&app, &as_customer).await).await;
    assert_problem(
        refresh(&app, &as_admin["refresh_token"]).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let again = login(&app, &email, PASSWORD).await;
    assert_eq!(me(&app, &again).await.status(), StatusCode::OK);
    assert_problem(list_users(&app, &again).await, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn a_promotion_ends_no_session() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (email, tokens) = app.customer().await;
    let id = app.account_id(&email).await;

    // Act
    let promoted = set_role(&app, &admin, &id, "admin").await;

    // Assert: the old token still passes, and a refresh gives an admin's
    assert_eq!(promoted.status(), StatusCode::OK);
    assert_eq!(me(&app, &tokens).await.status(), StatusCode::OK);
    let refreshed = refresh(&app, &tokens["refresh_token"]).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.expect("json");
    let account: Value = me(&app, &refreshed).await.json().await.expect("json");
    assert_eq!(account["role"], "admin");
}

#[tokio::test]
async fn a_session_ended_past_this_gateway_is_refused_within_a_poll() {
    // Arrange: a verified token, then its session ends in the auth database
    // itself, as through another gateway replica
    let app = spawn_app().await;
    let (email, tokens) = app.customer().await;
    assert_eq!(me(&app, &tokens).await.status(), StatusCode::OK);
    end_live_sessions(&app, &email).await;

    // Act and assert
    wait_until_ended(&app, &tokens).await;
}

#[tokio::test]
async fn reusing_a_refresh_token_gets_the_sessions_access_tokens_refused_at_once() {
    // Arrange: a thief refreshes first, then the owner presents the spent token
    let app = spawn_app().await;
    let (_, tokens) = app.customer().await;
    let stolen = refresh(&app, &tokens["refresh_token"]).await;
    assert_eq!(stolen.status(), StatusCode::OK);
    let stolen: Value = stolen.json().await.expect("json");
    assert_eq!(me(&app, &stolen).await.status(), StatusCode::OK);

    // Act
    let reused = refresh(&app, &tokens["refresh_token"]).await;

    // Assert
    assert_problem(reused, StatusCode::UNAUTHORIZED).await;
    assert_ended(me(&app, &stolen).await).await;
    assert_ended(me(&app, &tokens).await).await;
}

/// Ends the live sessions of the account with `email` in the auth database
/// itself, as a request through another gateway replica would.
async fn end_live_sessions(app: &TestApp, email: &str) {
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = clock_timestamp(), revoke_reason = 'test' \
         WHERE revoked_at IS NULL AND account_id = (SELECT id FROM accounts WHERE email = $1)",
    )
    .bind(email)
    .execute(&app.auth_db().await)
    .await
    .expect("revoked");
}

/// Ends `n` sessions of the account with `email` in the auth database, each
/// at the same moment; their ids.
async fn end_sessions(app: &TestApp, email: &str, n: i32, ended: &str) -> Vec<Uuid> {
    sqlx::query_scalar(&format!(
        "INSERT INTO refresh_families (id, account_id, expires_at, revoked_at, revoke_reason) \
         SELECT gen_random_uuid(), a.id, now() + interval '30 days', {ended}, 'test' \
         FROM accounts a, generate_series(1, $2) WHERE a.email = $1 RETURNING id"
    ))
    .bind(email)
    .bind(n)
    .fetch_all(&app.auth_db().await)
    .await
    .expect("sessions")
}

/// Begins ending the live sessions of the account with `email`, as a
/// logout's transaction does, and leaves the transaction open; the ended
/// session and the time its end is stamped with.
async fn begin_ending(
    db: &sqlx::PgPool,
    email: &str,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    Uuid,
    DateTime<Utc>,
) {
    let mut ending = db.begin().await.expect("begin");
    let (session, ended_at) = sqlx::query_as(
        "UPDATE refresh_families SET revoked_at = clock_timestamp(), revoke_reason = 'test' \
         WHERE revoked_at IS NULL AND account_id = (SELECT id FROM accounts WHERE email = $1) \
         RETURNING id, revoked_at",
    )
    .bind(email)
    .fetch_one(&mut *ending)
    .await
    .expect("one live session");
    (ending, session, ended_at)
}

fn listed(page: &pb::ListEndedSessionsResponse) -> Vec<Uuid> {
    page.sessions
        .iter()
        .map(|s| Uuid::parse_str(&s.id).expect("uuid"))
        .collect()
}

#[tokio::test]
async fn a_session_whose_end_commits_after_a_read_is_in_the_read_after_it() {
    // Arrange: a session being ended by a transaction still open
    let app = spawn_app().await;
    let (email, _) = app.customer().await;
    let db = app.auth_db().await;
    let (ending, session, ended_at) = begin_ending(&db, &email).await;
    let mut auth = app.auth_service().await;

    // Act: one read while it is open, the next from where that one ended
    let during = auth
        .list_ended_sessions(pb::ListEndedSessionsRequest::default())
        .await
        .expect("read")
        .into_inner();
    ending.commit().await.expect("commit");
    let after = auth
        .list_ended_sessions(pb::ListEndedSessionsRequest {
            after: during.as_of,
            after_id: String::new(),
        })
        .await
        .expect("read")
        .into_inner();

    // Assert: the first read's position is no later than the end's stamp
    assert!(!listed(&during).contains(&session), "not committed yet");
    let as_of = from_timestamp(&during.as_of.expect("as_of")).expect("a time");
    assert!(as_of <= ended_at, "{as_of} is after the end at {ended_at}");
    assert_eq!(listed(&after), [session]);
}

#[tokio::test]
async fn a_session_whose_end_commits_after_several_polls_is_refused_by_the_gateway() {
    // Arrange: a session being ended by a transaction that stays open
    // while the gateway polls a few times
    let app = spawn_app().await;
    let (email, tokens) = app.customer().await;
    let db = app.auth_db().await;
    let (ending, _, _) = begin_ending(&db, &email).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(me(&app, &tokens).await.status(), StatusCode::OK);

    // Act
    ending.commit().await.expect("commit");

    // Assert
    wait_until_ended(&app, &tokens).await;
}

#[tokio::test]
async fn a_session_past_the_first_page_of_ended_sessions_is_refused_too() {
    // Arrange: 1,000 sessions of another account end first, then this one,
    // behind the gateway's back
    let app = spawn_app().await;
    let (other, _) = app.customer().await;
    let (email, tokens) = app.customer().await;
    assert_eq!(me(&app, &tokens).await.status(), StatusCode::OK);
    end_sessions(&app, &other, 1000, "now() - interval '1 second'").await;
    end_live_sessions(&app, &email).await;

    // Act and assert
    wait_until_ended(&app, &tokens).await;
}

#[tokio::test]
async fn the_auth_service_lists_the_ended_sessions_whose_tokens_may_live_a_page_at_a_time() {
    // Arrange: 1,001 sessions that ended at one instant, one that ended
    // 20 minutes ago (its tokens have expired), and a live one
    let app = spawn_app().await;
    let (email, _) = app.customer().await;
    let mut recent = end_sessions(&app, &email, 1001, "now()").await;
    let old = end_sessions(&app, &email, 1, "now() - interval '20 minutes'").await;
    // Tokens signed with a 2 h lifetime until 3 h ago have all expired.
    sqlx::query(
        "INSERT INTO access_token_lifetimes (seconds, signed_until) \
         VALUES (7200, now() - interval '3 hours')",
    )
    .execute(&app.auth_db().await)
    .await
    .expect("an old lifetime");
    let mut auth = app.auth_service().await;

    // Act
    let first = auth
        .list_ended_sessions(pb::ListEndedSessionsRequest::default())
        .await
        .expect("first page")
        .into_inner();
    let last = first.sessions.last().expect("a session");
    let second = auth
        .list_ended_sessions(pb::ListEndedSessionsRequest {
            after: last.ended_at,
            after_id: last.id.clone(),
        })
        .await
        .expect("second page")
        .into_inner();

    // Assert: each once, in order, none too old; tokens live 15 min, and
    // twice the 30 s leeway: once for the verifier, once for the signer's clock
    assert_eq!((first.sessions.len(), first.more), (1000, true));
    assert_eq!((second.sessions.len(), second.more), (1, false));
    let mut listed: Vec<Uuid> = first
        .sessions
        .iter()
        .chain(&second.sessions)
        .map(|s| Uuid::parse_str(&s.id).expect("uuid"))
        .collect();
    assert!(listed.is_sorted(), "ordered by id at one instant");
    listed.sort();
    recent.sort();
    assert_eq!(listed, recent);
    assert!(!listed.contains(&old[0]));
    for session in first.sessions.iter().chain(&second.sessions) {
        let ended = session.ended_at.expect("ended_at");
        let expired = session.tokens_expired_at.expect("tokens_expired_at");
        assert_eq!(
            (expired.seconds - ended.seconds, expired.nanos),
            (15 * 60 + 60, ended.nanos)
        );
    }
}

#[tokio::test]
async fn after_the_token_lifetime_is_lowered_sessions_are_listed_while_older_tokens_may_live() {
    // Arrange: the shop ran with 1 h access tokens, then restarted with the
    // default 15 min; a lifetime whose tokens have all expired is on record
    let mut env = test_env();
    env.insert("ACCESS_TOKEN_TTL_SECONDS".to_owned(), "3600".to_owned());
    let before = spawn_with(gocommerce::Component::All, env.clone()).await;
    let (email, _) = before.customer().await;
    sqlx::query(
        "INSERT INTO access_token_lifetimes (seconds, signed_until) \
         VALUES (7200, now() - interval '3 hours')",
    )
    .execute(&before.auth_db().await)
    .await
    .expect("an old lifetime");
    before.stop().await;
    env.remove("ACCESS_TOKEN_TTL_SECONDS");
    let app = spawn_with(gocommerce::Component::All, env).await;
    let recent = end_sessions(&app, &email, 1, "now() - interval '20 minutes'").await;
    end_sessions(&app, &email, 1, "now() - interval '2 hours'").await;

    // Act
    let page = app
        .auth_service()
        .await
        .list_ended_sessions(pb::ListEndedSessionsRequest::default())
        .await
        .expect("read")
        .into_inner();

    // Assert: the session of 20 minutes ago is listed, remembered for 1 h
    // and twice the leeway; the lifetimes on record are the two in use
    assert_eq!(listed(&page), recent);
    let session = &page.sessions[0];
    let (ended, expired) = (
        session.ended_at.expect("ended_at"),
        session.tokens_expired_at.expect("tokens_expired_at"),
    );
    assert_eq!(expired.seconds - ended.seconds, 3600 + 60);
    let lifetimes: Vec<(i64, bool)> = sqlx::query_as(
        "SELECT seconds, signed_until > now() + interval '10 minutes' \
         FROM access_token_lifetimes ORDER BY seconds",
    )
    .fetch_all(&app.auth_db().await)
    .await
    .expect("lifetimes");
    assert_eq!(
        lifetimes,
        [(900, true), (3600, true)],
        "each recorded ahead of its signing; the expired one forgotten"
    );
}

#[tokio::test]
async fn the_auth_service_refuses_a_page_position_it_cannot_read() {
    let app = spawn_app().await;
    let mut auth = app.auth_service().await;

    let bad_id = auth
        .list_ended_sessions(pb::ListEndedSessionsRequest {
            after: None,
            after_id: "session-1".to_owned(),
        })
        .await
        .expect_err("refused");
    let bad_time = auth
        .list_ended_sessions(pb::ListEndedSessionsRequest {
            after: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            after_id: String::new(),
        })
        .await
        .expect_err("refused");

    assert_eq!(bad_id.code(), tonic::Code::InvalidArgument);
    assert_eq!(bad_id.message(), "after_id: must be a UUID");
    assert_eq!(bad_time.code(), tonic::Code::InvalidArgument);
    assert_eq!(bad_time.message(), "after: not a valid time");
}
