//! The product cache behind GetProduct: a write through this service is
//! visible to the next read at once, and views are served from memory only
//! while nothing has changed them.

use gocommerce_proto::product::v1::{
    AdjustStockRequest, ArchiveProductRequest, CommitReservationRequest, Product,
    ReleaseStockRequest, UpdateProductRequest,
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, admin, anonymous, input, item, spawn_app};

async fn cached_product(app: &TestApp, stock: i64) -> Product {
    let category = app.category("Lamps", "lamps", "").await;
    let product = app
        .product(input("Desk lamp", 4999, &category.id, stock))
        .await;
    // The first read fills the cache.
    app.view(&product.id).await.expect("visible");
    product
}

#[tokio::test]
async fn a_renamed_product_is_served_with_its_new_name_at_once() {
    let app = spawn_app().await;
    let product = cached_product(&app, 5).await;

    app.client()
        .update_product(admin(UpdateProductRequest {
            product_id: product.id.clone(),
            name: Some("Reading lamp".to_owned()),
            ..Default::default()
        }))
        .await
        .expect("updated");

    assert_eq!(
        app.view(&product.id).await.expect("visible").name,
        "Reading lamp"
    );
}

#[tokio::test]
async fn an_archived_product_disappears_from_views_at_once() {
    let app = spawn_app().await;
    let product = cached_product(&app, 5).await;

    app.client()
        .archive_product(admin(ArchiveProductRequest {
            product_id: product.id.clone(),
        }))
        .await
        .expect("archived");

    let error = app.view(&product.id).await.expect_err("hidden");
    assert_eq!(error.code(), Code::NotFound);
}

#[tokio::test]
async fn reserving_and_releasing_the_last_unit_flips_in_stock_at_once() {
    let app = spawn_app().await;
    let product = cached_product(&app, 1).await;
    assert!(product.in_stock);
    let order_id = Uuid::new_v4();

    app.reserve(order_id, vec![item(&product.id, 1)])
        .await
        .expect("reserved");
    let reserved = app.view(&product.id).await.expect("visible");
    app.client()
        .release_stock(anonymous(ReleaseStockRequest {
            order_id: order_id.to_string(),
        }))
        .await
        .expect("released");
    let released = app.view(&product.id).await.expect("visible");

    assert!(!reserved.in_stock, "the last unit is reserved");
    assert!(released.in_stock, "the unit is back");
}

#[tokio::test]
async fn in_stock_follows_availability_through_partial_reservations_commits_and_releases() {
    // Arrange: two units, each reserved by its own order.
    let app = spawn_app().await;
    let product = cached_product(&app, 2).await;
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let release = |order_id: Uuid| ReleaseStockRequest {
        order_id: order_id.to_string(),
    };
    let commit = |order_id: Uuid| CommitReservationRequest {
        order_id: order_id.to_string(),
    };

    // Act
    app.reserve(first, vec![item(&product.id, 1)])
        .await
        .expect("first reserved");
    let one_left = app.view(&product.id).await.expect("visible");
    app.reserve(second, vec![item(&product.id, 1)])
        .await
        .expect("second reserved");
    let none_left = app.view(&product.id).await.expect("visible");
    app.client()
        .commit_reservation(anonymous(commit(first)))
        .await
        .expect("first committed");
    let one_sold = app.view(&product.id).await.expect("visible");
    app.client()
        .release_stock(anonymous(release(second)))
        .await
        .expect("second released");
    let one_back = app.view(&product.id).await.expect("visible");

    // Assert
    assert!(one_left.in_stock, "one unit is still available");
    assert!(!none_left.in_stock, "both units are reserved");
    assert!(
        !one_sold.in_stock,
        "one unit sold, the other still reserved"
    );
    assert!(one_back.in_stock, "the released unit is available again");
}

#[tokio::test]
async fn restocking_a_sold_out_product_shows_it_in_stock_at_once() {
    let app = spawn_app().await;
    let category = app.category("Lamps", "lamps", "").await;
    let product = app.product(input("Desk lamp", 4999, &category.id, 0)).await;
    assert!(!app.view(&product.id).await.expect("visible").in_stock);

    app.client()
        .adjust_stock(admin(AdjustStockRequest {
            product_id: product.id.clone(),
            delta: 3,
            reason: "delivery".to_owned(),
        }))
        .await
        .expect("adjusted");

    assert!(app.view(&product.id).await.expect("visible").in_stock);
}

async fn rename_behind_the_service(app: &TestApp, id: &str, name: &str, announce: bool) {
    let id = Uuid::parse_str(id).expect("uuid");
    let mut tx = app.pool.begin().await.expect("transaction");
    sqlx::query("UPDATE products SET name = $2 WHERE id = $1")
        .bind(id)
        .bind(name)
        .execute(&mut *tx)
        .await
        .expect("updated");
    if announce {
        // What another replica's write sends with its transaction.
        sqlx::query("SELECT pg_notify('product_changed', $1)")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .expect("notified");
    }
    tx.commit().await.expect("committed");
}

#[tokio::test]
async fn repeated_views_are_served_from_memory_while_nothing_announced_a_change() {
    let app = spawn_app().await;
    let product = cached_product(&app, 5).await;

    rename_behind_the_service(&app, &product.id, "Changed silently", false).await;
    let served = app.view(&product.id).await.expect("visible");

    assert_eq!(served.name, "Desk lamp", "the view came from memory");
}

#[tokio::test]
async fn a_change_announced_by_another_replica_is_seen_promptly() {
    let app = spawn_app().await;
    let product = cached_product(&app, 5).await;

    rename_behind_the_service(&app, &product.id, "Renamed elsewhere", true).await;

    // The notification travels asynchronously; it arrives within
    // milliseconds, the bound here only keeps a slow machine from failing.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let name = app.view(&product.id).await.expect("visible").name;
        if name == "Renamed elsewhere" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still served {name:?} 10 s after the change was announced"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
