//! Product views the cache does not hold come from the database over the
//! pipelined read connections: many at once each show their own product,
//! a view still works after the database ended those connections, and with
//! the connections turned off views are read through the pool.

use futures::future::join_all;
use sqlx::PgPool;

use crate::helpers::{input, spawn_app_with};

const READS: &str = "gocommerce-product-reads";
const CACHE_OFF: (&str, &str) = ("PRODUCT_CACHE_TTL_MS", "0");

/// The backends of the service's pipelined reads in its own database.
async fn read_backends(pool: &PgPool, database: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
    )
    .bind(READS)
    .bind(database)
    .fetch_all(pool)
    .await
    .expect("pg_stat_activity")
}

#[tokio::test]
async fn many_views_at_once_with_the_cache_off_each_show_their_own_product() {
    let app = spawn_app_with(&[CACHE_OFF]).await;
    let category = app.category("Lamps", "lamps", "").await;
    let mut created = Vec::new();
    for n in 0..40 {
        created.push(
            app.product(input(&format!("Lamp {n}"), 1000 + n, &category.id, n))
                .await,
        );
    }

    let views = join_all(created.iter().map(|product| app.view(&product.id))).await;

    for (product, viewed) in created.iter().zip(views) {
        let viewed = viewed.expect("viewed");
        assert_eq!(
            (&viewed.id, &viewed.name, &viewed.price, viewed.in_stock),
            (&product.id, &product.name, &product.price, product.in_stock)
        );
    }
    assert_eq!(read_backends(&app.pool, &app.database).await.len(), 2);
}

#[tokio::test]
async fn a_view_after_the_database_ended_the_read_connections_is_still_served() {
    let app = spawn_app_with(&[CACHE_OFF, ("PRODUCT_READ_CONNECTIONS", "1")]).await;
    let category = app.category("Lamps", "lamps", "").await;
    let product = app.product(input("Desk lamp", 4999, &category.id, 3)).await;
    app.view(&product.id).await.expect("first view");
    let before = read_backends(&app.pool, &app.database).await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int4[]) AS pid")
        .bind(&before)
        .execute(&app.pool)
        .await
        .expect("terminate");

    let viewed = app.view(&product.id).await;

    assert_eq!(viewed.expect("served").name, "Desk lamp");
    let after = read_backends(&app.pool, &app.database).await;
    assert_eq!(after.len(), 1);
    assert!(!before.contains(&after[0]), "{before:?} {after:?}");
}

#[tokio::test]
async fn with_the_read_connections_off_views_are_read_through_the_pool() {
    let app = spawn_app_with(&[CACHE_OFF, ("PRODUCT_READ_CONNECTIONS", "0")]).await;
    let category = app.category("Lamps", "lamps", "").await;
    let product = app.product(input("Desk lamp", 4999, &category.id, 3)).await;

    let viewed = app.view(&product.id).await;

    assert_eq!(viewed.expect("served").name, "Desk lamp");
    assert!(read_backends(&app.pool, &app.database).await.is_empty());
}
