//! The service pool against the real PostgreSQL: connections the server
//! dropped while they sat idle are never handed to a caller.

use gocommerce_platform::db::{self, TRUSTED_IDLE};
use gocommerce_platform::testing::{ADMIN_URL, DropDatabase};
use sqlx::migrate::Migrator;
use uuid::Uuid;

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced_before_use() {
    // Arrange: a pool of one connection, whose backend is then terminated.
    let name = format!("gct_pool_{}", Uuid::new_v4().simple());
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let _database = DropDatabase(name.clone());
    let pool = db::connect_and_migrate(&url, 1, &Migrator::DEFAULT)
        .await
        .expect("pool");
    let first: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("first query");
    let admin = sqlx::PgPool::connect(ADMIN_URL)
        .await
        .expect("admin connection");
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&admin)
        .await
        .expect("terminate");
    assert!(terminated, "the backend existed");
    tokio::time::sleep(TRUSTED_IDLE * 2).await;

    // Act
    let second: Result<i32, _> = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await;

    // Assert
    let second = second.expect("the query runs on a fresh connection");
    assert_ne!(second, first);
    pool.close().await;
}
