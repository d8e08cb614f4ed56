//! Passwords after registration: a change by the signed-in customer, and a
//! reset by email for one who forgot it.

use std::time::Duration;

use gocommerce_proto::events::v1::event_envelope::Payload;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::refresh;
use crate::helpers::{
    ADMIN_EMAIL, PASSWORD, TestApp, assert_problem, problem_fields, release_when_waiting,
    retry_after, spawn_app, wait_for_lock_waiters,
};
use crate::mailbox::{Mail, SmtpServer};
use crate::notifications::spawn_with_smtp;

const NEW_PASSWORD: &str = "a brand new passphrase";

pub async fn change_password(
    app: &TestApp,
    tokens: &Value,
    current: &str,
    new: &str,
) -> reqwest::Response {
    app.request(Method::POST, "/v1/auth/password")
        .bearer_auth(tokens["access_token"].as_str().expect("access token"))
        .json(&json!({"current_password": current, "new_password": new}))
        .send()
        .await
        .expect("request sent")
}

/// Of two answers to requests made at once, the index of the only one that
/// is `won`.
fn sole_winner(statuses: [StatusCode; 2], won: StatusCode) -> usize {
    let winners: Vec<usize> = (0..2).filter(|&i| statuses[i] == won).collect();
    assert_eq!(winners.len(), 1, "{statuses:?}");
    winners[0]
}

/// `email` logs in with `now` and no longer with `before`.
async fn assert_password_is(app: &TestApp, email: &str, now: &str, before: &str) {
    assert_problem(app.login(email, before).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(app.login(email, now).await.status(), StatusCode::OK);
}

/// `email` still logs in with [`PASSWORD`], and the session of `tokens` lives.
async fn assert_untouched(app: &TestApp, email: &str, tokens: &Value) {
    assert_eq!(app.login(email, PASSWORD).await.status(), StatusCode::OK);
    assert_eq!(
        refresh(app, &tokens["refresh_token"]).await.status(),
        StatusCode::OK,
        "the session lives"
    );
}

async fn stored_hash(app: &TestApp, email: &str) -> String {
    sqlx::query_scalar("SELECT password_hash FROM accounts WHERE email = $1")
        .bind(email.to_lowercase())
        .fetch_one(&app.auth_db().await)
        .await
        .expect("the account")
}

#[tokio::test]
async fn changing_the_password_ends_every_session_and_only_the_new_password_logs_in() {
    // Arrange: one customer signed in twice
    let app = spawn_app().await;
    let (email, first) = app.customer().await;
    let second: Value = app
        .login(&email, PASSWORD)
        .await
        .json()
        .await
        .expect("json");

    // Act
    let response = change_password(&app, &first, PASSWORD, NEW_PASSWORD).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let fresh: Value = response.json().await.expect("json");
    assert_eq!(fresh["token_type"], "Bearer");
    for ended in [&first, &second] {
        assert_problem(
            refresh(&app, &ended["refresh_token"]).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    assert_eq!(
        refresh(&app, &fresh["refresh_token"]).await.status(),
        StatusCode::OK,
        "the answer is a live session"
    );
    assert_password_is(&app, &email, NEW_PASSWORD, PASSWORD).await;
}

#[tokio::test]
async fn a_wrong_current_password_is_a_403_that_changes_nothing_and_counts_toward_the_lockout() {
    // Arrange
    let app = spawn_app().await;
    let (email, tokens) = app.customer().await;
    let before = stored_hash(&app, &email).await;

    // Act: five wrong guesses, then the right password
    let mut wrong = Vec::new();
    for _ in 0..5 {
        wrong.push(change_password(&app, &tokens, "not my password", NEW_PASSWORD).await);
    }
    let locked_change = change_password(&app, &tokens, PASSWORD, NEW_PASSWORD).await;
    let locked_login = app.login(&email, PASSWORD).await;

    // Assert
    for response in wrong {
        let problem = assert_problem(response, StatusCode::FORBIDDEN).await;
        assert_eq!(
            problem["detail"],
            "current_password: is not the account's password"
        );
    }
    // Five failures lock the account for changes and logins alike, as five
    // failed logins do: an access token is no way to guess the password.
    for locked in [locked_change, locked_login] {
        assert!(retry_after(&locked).is_some());
        assert_problem(locked, StatusCode::TOO_MANY_REQUESTS).await;
    }
    assert_eq!(stored_hash(&app, &email).await, before);
    assert_eq!(
        refresh(&app, &tokens["refresh_token"]).await.status(),
        StatusCode::OK,
        "the session is not ended by a failed change"
    );
}

#[tokio::test]
async fn a_new_password_too_short_or_too_long_is_refused_naming_the_field() {
    // Arrange
    let app = spawn_app().await;
    let (email, tokens) = app.customer().await;
    let before = stored_hash(&app, &email).await;
    let too_long = "é".repeat(129);
    let cases = [
        (PASSWORD, "short", "new_password"),
        (PASSWORD, too_long.as_str(), "new_password"),
        ("", NEW_PASSWORD, "current_password"),
    ];

    for (current, new, field) in cases {
        // Act
        let response = change_password(&app, &tokens, current, new).await;

        // Assert
        let problem = assert_problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            problem_fields(&problem),
            [field],
            "{current:?} to {new:?}: {problem}"
        );
    }
    let unknown_field = app
        .request(Method::POST, "/v1/auth/password")
        .bearer_auth(tokens["access_token"].as_str().expect("token"))
        .json(
            &json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "email": "x@y.z"}),
        )
        .send()
        .await
        .expect("request sent");
    assert_problem(unknown_field, StatusCode::BAD_REQUEST).await;
    assert_eq!(stored_hash(&app, &email).await, before);
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn setting_the_same_password_again_ends_every_other_session() {
    let app = spawn_app().await;
    let (email, tokens) = app.customer().await;

    let response = change_password(&app, &tokens, PASSWORD, PASSWORD).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_problem(
        refresh(&app, &tokens["refresh_token"]).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn changing_a_password_needs_an_access_token() {
    let app = spawn_app().await;

    let response = app
        .post_json(
            "/v1/auth/password",
            &json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        )
        .await;

    assert!(response.headers().contains_key("www-authenticate"));
    assert_problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn of_two_changes_made_at_once_one_wins_and_only_its_password_logs_in() {
    // Arrange
    let app = spawn_app().await;
    let (email, tokens) = app.customer().await;
    let candidates = ["first new passphrase", "second new passphrase"];

    // Act
    let (a, b) = tokio::join!(
        change_password(&app, &tokens, PASSWORD, candidates[0]),
        change_password(&app, &tokens, PASSWORD, candidates[1]),
    );

    // Assert: the loser either met the winner's write (409) or, starting
    // after it, a current password that no longer is (403) or, reaching the
    // gateway after the winner's answer, a session that has ended (401).
    let statuses = [a.status(), b.status()];
    let winner = sole_winner(statuses, StatusCode::OK);
    assert!(
        matches!(
            statuses[1 - winner],
            StatusCode::CONFLICT | StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED
        ),
        "{statuses:?}"
    );
    assert_password_is(&app, &email, candidates[winner], candidates[1 - winner]).await;
}

#[tokio::test]
async fn the_auth_service_changes_no_password_but_the_callers_own() {
    // The gateway always names the caller; a peer calling the service
    // directly must not reach another account either.
    use gocommerce_platform::{Caller, Role};
    use gocommerce_proto::auth::v1 as pb;

    let app = spawn_app().await;
    let (victim_email, victim) = app.customer().await;
    let victim_id = app.account_id(&victim_email).await;
    let mut auth = app.auth_service().await;
    let mut request = tonic::Request::new(pb::ChangePasswordRequest {
        user_id: victim_id,
        current_password: PASSWORD.to_owned(),
        new_password: NEW_PASSWORD.to_owned(),
        client_ip: String::new(),
    });
    // Even an admin: nobody sets a password they then know.
    Caller {
        user_id: Uuid::now_v7(),
        role: Role::Admin,
    }
    .write_to(request.metadata_mut());

    let refused = auth.change_password(request).await.expect_err("refused");

    assert_eq!(refused.code(), tonic::Code::NotFound);
    assert_untouched(&app, &victim_email, &victim).await;
}

#[tokio::test]
async fn changing_the_password_records_a_password_changed_event_in_the_same_transaction() {
    let app = spawn_app().await;
    let (email, tokens) = app.customer().await;

    let response = change_password(&app, &tokens, PASSWORD, NEW_PASSWORD).await;

    assert_eq!(response.status(), StatusCode::OK);
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE routing_key = 'user.password_changed'",
    )
    .fetch_all(&app.auth_db().await)
    .await
    .expect("outbox");
    let changed: Vec<_> = payloads
        .iter()
        .map(|p| gocommerce_platform::events::decode(p).expect("an event envelope"))
        .filter_map(|e| match e.payload {
            Some(Payload::UserPasswordChanged(p)) => Some(p),
            _ => None,
        })
        .filter(|p| p.email == email.to_lowercase())
        .collect();
    assert_eq!(changed.len(), 1);
}

#[tokio::test]
async fn a_password_change_is_emailed_even_to_a_customer_who_turned_email_off() {
    // Arrange: a customer who wants no email, SMS or push at all
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let (email, tokens) = app.customer().await;
    let token = tokens["access_token"].as_str().expect("token");
    let quiet = json!({
        "channels": {"email": false, "sms": false, "push": false},
        "locale": "en",
        "marketing_opt_in": false,
    });
    let stored = crate::helpers::send(
        &app,
        Method::PUT,
        "/v1/users/me/preferences",
        Some(token),
        Some(&quiet),
    )
    .await;
    assert_eq!(stored.status(), StatusCode::OK);

    // Act
    let changed = crate::helpers::send(
        &app,
        Method::POST,
        "/v1/auth/password",
        Some(token),
        Some(&json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"})),
    )
    .await;

    // Assert: a change they did not make must reach them
    assert_eq!(changed.status(), StatusCode::OK);
    let mails = smtp
        .wait_for(1, Duration::from_secs(15), |mail| {
            mail.to == email && mail.subject == "Your GoCommerce password was changed"
        })
        .await;
    assert!(mails[0].body.contains(&email), "{}", mails[0].body);
    assert!(
        mails[0]
            .body
            .contains("every session signed in with the old password was ended"),
        "{}",
        mails[0].body
    );
}

pub async fn ask_for_reset(app: &TestApp, email: &str) -> reqwest::Response {
    app.post_json("/v1/auth/password-reset", &json!({"email": email}))
        .await
}

pub async fn confirm_reset(app: &TestApp, token: &str, new: &str) -> reqwest::Response {
    app.post_json(
        "/v1/auth/password-reset/confirm",
        &json!({"token": token, "new_password": new}),
    )
    .await
}

/// How many reset tokens were sent to the account with `email`: the auth
/// database keeps each one's hash.
async fn reset_tokens_sent(app: &TestApp, email: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM password_resets r JOIN accounts a ON a.id = r.account_id \
         WHERE a.email = $1",
    )
    .bind(email)
    .fetch_one(&app.auth_db().await)
    .await
    .expect("count")
}

/// The token in a reset email: its line of its own.
fn token_in(mail: &Mail) -> String {
    mail.body
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("gcp_"))
        .unwrap_or_else(|| panic!("a token in {}", mail.body))
        .to_owned()
}

/// The one reset token emailed to `email`, read off the email: the outbox
/// keeps no copy once it went out.
pub async fn reset_token(smtp: &SmtpServer, email: &str) -> String {
    let mails = smtp
        .wait_for(1, Duration::from_secs(15), |mail| {
            mail.to == email && mail.subject == "Reset your GoCommerce password"
        })
        .await;
    assert_eq!(mails.len(), 1, "one reset email to {email}");
    token_in(&mails[0])
}

#[tokio::test]
async fn the_emailed_reset_token_sets_a_new_password_once_and_ends_every_session() {
    // Arrange
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let (email, tokens) = app.customer().await;

    // Act
    let asked = ask_for_reset(&app, &email).await;
    let mails = smtp
        .wait_for(1, Duration::from_secs(15), |mail| {
            mail.to == email && mail.subject == "Reset your GoCommerce password"
        })
        .await;
    let token = token_in(&mails[0]);
    let confirmed = confirm_reset(&app, &token, NEW_PASSWORD).await;
    let again = confirm_reset(&app, &token, "yet another passphrase").await;

    // Assert
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    assert_eq!(confirmed.status(), StatusCode::NO_CONTENT);
    assert_problem(again, StatusCode::UNAUTHORIZED).await;
    assert_problem(
        refresh(&app, &tokens["refresh_token"]).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_password_is(&app, &email, NEW_PASSWORD, PASSWORD).await;
    smtp.wait_for(1, Duration::from_secs(15), |mail| {
        mail.to == email && mail.subject == "Your GoCommerce password was changed"
    })
    .await;
}

#[tokio::test]
async fn the_notification_record_of_a_reset_email_keeps_everything_but_the_token() {
    // Arrange
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let (email, _) = app.customer().await;

    // Act
    ask_for_reset(&app, &email).await;
    let mails = smtp
        .wait_for(1, Duration::from_secs(15), |mail| {
            mail.to == email && mail.subject == "Reset your GoCommerce password"
        })
        .await;
    let (status, recorded): (String, String) = sqlx::query_as(
        "SELECT status, body FROM notifications \
         WHERE event_type = 'user.password_reset_requested' AND recipient = $1",
    )
    .bind(&email)
    .fetch_one(&app.notification_db().await)
    .await
    .expect("the record");

    // Assert: the email carried the token, the record has the rest of it
    let token = token_in(&mails[0]);
    assert_eq!(status, "sent");
    assert!(!recorded.contains(&token), "{recorded}");
    // The mail's body as received ends with the transport's line break.
    assert_eq!(
        recorded.trim_end(),
        mails[0].body.replace(&token, "[redacted]").trim_end(),
        "only the token is missing"
    );
}

#[tokio::test]
async fn the_auth_outbox_keeps_a_reset_event_without_its_token_once_it_went_out() {
    // Arrange
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let (email, tokens) = app.customer().await;

    // Act: a reset emailed, and a password change for comparison
    ask_for_reset(&app, &email).await;
    reset_token(&smtp, &email).await;
    change_password(&app, &tokens, PASSWORD, NEW_PASSWORD).await;
    smtp.wait_for(1, Duration::from_secs(15), |mail| {
        mail.to == email && mail.subject == "Your GoCommerce password was changed"
    })
    .await;

    // Assert: both went out and stay on record (the relay records a publish
    // a moment after the broker confirmed it); only the reset's payload,
    // which held the token, is gone
    let db = app.auth_db().await;
    let mut kept: Vec<(String, Vec<u8>)> = Vec::new();
    for _ in 0..100 {
        kept = sqlx::query_as(
            "SELECT routing_key, payload FROM outbox \
             WHERE routing_key IN ('user.password_reset_requested', 'user.password_changed') \
               AND published_at IS NOT NULL ORDER BY routing_key",
        )
        .fetch_all(&db)
        .await
        .expect("outbox");
        if kept.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kept.len(), 2, "{kept:?}");
    let (changed, reset) = (&kept[0], &kept[1]);
    assert_eq!(reset.0, "user.password_reset_requested");
    assert!(reset.1.is_empty(), "the reset event's payload is emptied");
    assert!(!changed.1.is_empty(), "other events keep theirs");
}

#[tokio::test]
async fn a_reset_for_an_email_without_an_account_is_answered_the_same_and_sends_nothing() {
    let app = spawn_app().await;
    let email = format!("{}@example.com", Uuid::new_v4().simple());

    let response = ask_for_reset(&app, &email).await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(reset_tokens_sent(&app, &email).await, 0);
}

#[tokio::test]
async fn asking_again_within_a_minute_sends_no_second_token() {
    let app = spawn_app().await;
    let (email, _) = app.customer().await;

    let first = ask_for_reset(&app, &email).await;
    let second = ask_for_reset(&app, &email).await;

    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    assert_eq!(reset_tokens_sent(&app, &email).await, 1);
}

/// Logs in with the right password while `change` commits to the account:
/// the account's row is held from before the login until the change is
/// written, so the change commits after the login checked the password and
/// before it could write a session. The login's answer, and how many
/// sessions the account has.
async fn log_in_while(app: &TestApp, email: &str, change: &str) -> (reqwest::Response, i64) {
    let db = app.auth_db().await;
    let mut held = db.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM accounts WHERE email = $1 FOR UPDATE")
        .bind(email)
        .execute(&mut *held)
        .await
        .expect("account locked");
    let (login, ()) = tokio::join!(app.login(email, PASSWORD), async {
        wait_for_lock_waiters(&db, 1).await;
        sqlx::query(change)
            .bind(email)
            .execute(&mut *held)
            .await
            .expect("changed");
        held.commit().await.expect("committed");
    });
    let sessions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_families f JOIN accounts a ON a.id = f.account_id \
         WHERE a.email = $1",
    )
    .bind(email)
    .fetch_one(&db)
    .await
    .expect("sessions");
    (login, sessions)
}

#[tokio::test]
async fn a_login_under_way_when_the_password_changes_starts_no_session() {
    // Arrange
    let app = spawn_app().await;
    let (email, _) = app.customer().await;

    // Act: the new password's hash is the admin's, as good as any
    let (login, sessions) = log_in_while(
        &app,
        &email,
        &format!(
            "UPDATE accounts SET password_hash = \
               (SELECT password_hash FROM accounts WHERE email = '{ADMIN_EMAIL}') \
             WHERE email = $1"
        ),
    )
    .await;

    // Assert
    assert_problem(login, StatusCode::UNAUTHORIZED).await;
    assert_eq!(sessions, 1, "only the session app.customer() started");
}

#[tokio::test]
async fn a_login_under_way_when_the_account_is_disabled_starts_no_session() {
    // Arrange
    let app = spawn_app().await;
    let (email, _) = app.customer().await;

    // Act
    let (login, sessions) = log_in_while(
        &app,
        &email,
        "UPDATE accounts SET disabled_at = now() WHERE email = $1",
    )
    .await;

    // Assert
    assert_problem(login, StatusCode::FORBIDDEN).await;
    assert_eq!(sessions, 1, "only the session app.customer() started");
}

#[tokio::test]
async fn requests_made_at_once_send_one_reset_token() {
    // Arrange: a lock on the table holds every request's insert until two
    // of them wait on a lock, so none commits before the others have checked
    let app = spawn_app().await;
    let (email, _) = app.customer().await;
    let db = app.auth_db().await;
    let mut blocker = db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE password_resets IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");

    // Act
    let (responses, ()) = tokio::join!(
        futures::future::join_all((0..8).map(|_| ask_for_reset(&app, &email))),
        release_when_waiting(&db, blocker, 2)
    );

    // Assert
    assert!(responses.iter().all(|r| r.status() == StatusCode::ACCEPTED));
    assert_eq!(reset_tokens_sent(&app, &email).await, 1);
}

#[tokio::test]
async fn at_most_five_reset_tokens_are_sent_an_hour() {
    // Arrange: each token is made two minutes older after it is sent, so the
    // one-a-minute rule never applies
    let app = spawn_app().await;
    let (email, _) = app.customer().await;
    let db = app.auth_db().await;
    let age = |by: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query(
                "UPDATE password_resets SET created_at = created_at - $1::interval, \
                 expires_at = expires_at - $1::interval",
            )
            .bind(by)
            .execute(&db)
            .await
            .expect("update");
        }
    };
    for _ in 0..5 {
        ask_for_reset(&app, &email).await;
        age("2 minutes").await;
    }

    // Act
    let sixth = ask_for_reset(&app, &email).await;
    let sent_within_the_hour = reset_tokens_sent(&app, &email).await;
    age("1 hour").await;
    ask_for_reset(&app, &email).await;

    // Assert
    assert_eq!(sixth.status(), StatusCode::ACCEPTED);
    assert_eq!(sent_within_the_hour, 5);
    assert_eq!(
        reset_tokens_sent(&app, &email).await,
        6,
        "an hour later one more goes out"
    );
}

#[tokio::test]
async fn an_expired_reset_token_is_refused_and_changes_nothing() {
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let (email, tokens) = app.customer().await;
    ask_for_reset(&app, &email).await;
    let token = reset_token(&smtp, &email).await;
    sqlx::query("UPDATE password_resets SET expires_at = now() - interval '1 second'")
        .execute(&app.auth_db().await)
        .await
        .expect("update");

    let response = confirm_reset(&app, &token, NEW_PASSWORD).await;

    assert_problem(response, StatusCode::UNAUTHORIZED).await;
    assert_untouched(&app, &email, &tokens).await;
}

#[tokio::test]
async fn a_reset_lifts_the_lockout_that_failed_logins_put_on_the_account() {
    // Arrange: an account locked by five wrong passwords
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let (email, _) = app.customer().await;
    for _ in 0..5 {
        app.login(&email, "wrong password").await;
    }
    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    ask_for_reset(&app, &email).await;
    let token = reset_token(&smtp, &email).await;

    // Act
    let confirmed = confirm_reset(&app, &token, NEW_PASSWORD).await;

    // Assert
    assert_eq!(confirmed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.login(&email, NEW_PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_bad_token_or_new_password_is_refused_and_leaves_the_token_usable() {
    // Arrange
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let (email, _) = app.customer().await;
    ask_for_reset(&app, &email).await;
    let token = reset_token(&smtp, &email).await;

    // Act
    let made_up = confirm_reset(&app, &format!("gcp_{}", "A".repeat(43)), NEW_PASSWORD).await;
    let not_a_token = confirm_reset(&app, "nope", NEW_PASSWORD).await;
    let empty = confirm_reset(&app, "", NEW_PASSWORD).await;
    let short = confirm_reset(&app, &token, "short").await;
    let good = confirm_reset(&app, &token, NEW_PASSWORD).await;

    // Assert
    assert_problem(made_up, StatusCode::UNAUTHORIZED).await;
    assert_problem(not_a_token, StatusCode::UNAUTHORIZED).await;
    let empty = assert_problem(empty, StatusCode::BAD_REQUEST).await;
    assert_eq!(problem_fields(&empty), ["token"]);
    let short = assert_problem(short, StatusCode::BAD_REQUEST).await;
    assert_eq!(problem_fields(&short), ["new_password"]);
    assert_eq!(good.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn one_reset_token_used_twice_at_once_sets_one_password() {
    // Arrange
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let (email, _) = app.customer().await;
    ask_for_reset(&app, &email).await;
    let token = reset_token(&smtp, &email).await;
    let candidates = ["first new passphrase", "second new passphrase"];

    // Act
    let (a, b) = tokio::join!(
        confirm_reset(&app, &token, candidates[0]),
        confirm_reset(&app, &token, candidates[1]),
    );

    // Assert
    let statuses = [a.status(), b.status()];
    let winner = sole_winner(statuses, StatusCode::NO_CONTENT);
    assert_eq!(statuses[1 - winner], StatusCode::UNAUTHORIZED);
    assert_password_is(&app, &email, candidates[winner], candidates[1 - winner]).await;
}

#[tokio::test]
async fn a_reset_token_sent_before_a_password_change_no_longer_works() {
    // Arrange
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(&smtp).await;
    let (email, tokens) = app.customer().await;
    ask_for_reset(&app, &email).await;
    let token = reset_token(&smtp, &email).await;
    let changed = change_password(&app, &tokens, PASSWORD, NEW_PASSWORD).await;
    assert_eq!(changed.status(), StatusCode::OK);

    // Act
    let response = confirm_reset(&app, &token, "yet another passphrase").await;

    // Assert
    assert_problem(response, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        app.login(&email, NEW_PASSWORD).await.status(),
        StatusCode::OK
    );
}
