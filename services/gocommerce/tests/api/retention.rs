//! What the auth service forgets, and when: sessions a week after they end,
//! reset tokens a day after they were sent, login failures once they no
//! longer count. Everything younger stays.

use std::time::Duration;

use gocommerce_auth::retention::{self, Swept};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::refresh;
use crate::helpers::{PASSWORD, TestApp, assert_problem, spawn_app};

/// Login throttling's counting window, as the service's default policy has it.
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Logs `email` in `n` times: one session each, oldest first.
async fn sessions(app: &TestApp, email: &str, n: usize) -> Vec<Value> {
    let mut pairs = Vec::new();
    for _ in 0..n {
        let response = app.login(email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        pairs.push(response.json().await.expect("token json"));
    }
    pairs
}

/// The session (refresh family) ids of the account with `email`, oldest first.
async fn family_ids(db: &PgPool, email: &str) -> Vec<Uuid> {
    sqlx::query_scalar(
        "SELECT f.id FROM refresh_families f JOIN accounts a ON a.id = f.account_id \
         WHERE a.email = $1 ORDER BY f.created_at, f.id",
    )
    .bind(email)
    .fetch_all(db)
    .await
    .expect("families")
}

async fn set(db: &PgPool, sql: &str, id: Uuid) {
    sqlx::query(sql).bind(id).execute(db).await.expect("update");
}

#[tokio::test]
async fn sessions_are_deleted_a_week_after_they_expire_or_are_revoked() {
    // Arrange: five sessions of one customer, four of them ended some time ago
    let app = spawn_app().await;
    let db = app.auth_db().await;
    let (email, _) = app.customer().await;
    let pairs = sessions(&app, &email, 4).await;
    let ids = family_ids(&db, &email).await;
    assert_eq!(ids.len(), 5);
    let expired_long_ago =
        "UPDATE refresh_families SET expires_at = now() - interval '8 days' WHERE id = $1";
    let revoked_long_ago =
        "UPDATE refresh_families SET revoked_at = now() - interval '8 days' WHERE id = $1";
    let expired_lately =
        "UPDATE refresh_families SET expires_at = now() - interval '6 days' WHERE id = $1";
    let revoked_lately =
        "UPDATE refresh_families SET revoked_at = now() - interval '6 days' WHERE id = $1";
    set(&db, expired_long_ago, ids[0]).await;
    set(&db, revoked_long_ago, ids[1]).await;
    set(&db, expired_lately, ids[2]).await;
    set(&db, revoked_lately, ids[3]).await;

    // Act
    retention::sweep(&db, FAILURE_WINDOW).await.expect("sweep");

    // Assert: the two ended over a week ago are gone with their tokens
    assert_eq!(family_ids(&db, &email).await, ids[2..].to_vec());
    let orphans: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE family_id = ANY($1)")
            .bind(&ids[..2])
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(orphans, 0);
    // A deleted session's token is as dead as it was; the live one works.
    assert_problem(
        refresh(&app, &pairs[0]["refresh_token"]).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        refresh(&app, &pairs[3]["refresh_token"]).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn reset_tokens_are_deleted_a_day_after_they_were_sent() {
    // Arrange
    let app = spawn_app().await;
    let db = app.auth_db().await;
    let (email, _) = app.customer().await;
    let account = app.account_id(&email).await;
    for (hash, age) in [(b"old", "25 hours"), (b"new", "23 hours")] {
        sqlx::query(
            "INSERT INTO password_resets (token_hash, account_id, created_at, expires_at) \
             VALUES ($1, $2::uuid, now() - $3::interval, now() - $3::interval + interval '30 minutes')",
        )
        .bind(&hash[..])
        .bind(&account)
        .bind(age)
        .execute(&db)
        .await
        .expect("insert");
    }

    // Act
    retention::sweep(&db, FAILURE_WINDOW).await.expect("sweep");

    // Assert
    let left: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM password_resets")
        .fetch_all(&db)
        .await
        .expect("resets");
    assert_eq!(left, [b"new".to_vec()]);
}

#[tokio::test]
async fn login_failures_are_deleted_once_their_window_has_passed_and_no_lock_holds() {
    // Arrange
    let app = spawn_app().await;
    let db = app.auth_db().await;
    for (key, window_start, locked_until) in [
        ("passed", "16 minutes", None),
        ("passed, lock ended", "40 minutes", Some("-10 minutes")),
        ("passed, still locked", "16 minutes", Some("5 minutes")),
        ("counting", "5 minutes", None),
    ] {
        sqlx::query(
            "INSERT INTO login_failures (key, failures, window_start, locked_until) \
             VALUES ($1, 3, now() - $2::interval, now() + $3::interval)",
        )
        .bind(key)
        .bind(window_start)
        .bind(locked_until)
        .execute(&db)
        .await
        .expect("insert");
    }

    // Act
    retention::sweep(&db, FAILURE_WINDOW).await.expect("sweep");
    let again = retention::sweep(&db, FAILURE_WINDOW).await.expect("sweep");

    // Assert
    let mut left: Vec<String> = sqlx::query_scalar("SELECT key FROM login_failures")
        .fetch_all(&db)
        .await
        .expect("failures");
    left.sort();
    assert_eq!(left, ["counting", "passed, still locked"]);
    assert_eq!(again, Swept::default(), "nothing is left to delete");
}
