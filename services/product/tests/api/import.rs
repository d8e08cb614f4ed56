//! ImportProducts: create or update by SKU, reject bad lines without
//! aborting the good ones, and take ten thousand products in one call.

use std::time::{Duration, Instant};

use gocommerce_proto::product::v1::{
    GetProductRequest, ImportProductsRequest, ImportProductsResponse, ProductInput,
    import_products_request, product_input,
};
use tonic::Code;

use crate::helpers::{TestApp, admin, anonymous, assert_status, customer, input, money, spawn_app};

fn line(line: u32, product: ProductInput) -> ImportProductsRequest {
    ImportProductsRequest {
        line,
        item: Some(import_products_request::Item::Product(product)),
    }
}

fn by_slug(mut product: ProductInput, slug: &str) -> ProductInput {
    product.category = Some(product_input::Category::CategorySlug(slug.to_owned()));
    product
}

async fn import(
    app: &TestApp,
    request: tonic::Request<futures::stream::Iter<std::vec::IntoIter<ImportProductsRequest>>>,
) -> Result<ImportProductsResponse, tonic::Status> {
    app.client()
        .import_products(request)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn an_import_creates_updates_and_reports_each_bad_line_without_stopping() {
    let app = spawn_app().await;
    let lamps = app.category("Lamps", "lamps", "").await;
    let existing = app.product(input("Old lamp", 100, &lamps.id, 4)).await;
    let mut renamed = by_slug(input("Renamed lamp", 150, "", 99), "lamps");
    renamed.sku = existing.sku.clone();
    let mut bad_currency = input("Bad money", 100, &lamps.id, 1);
    bad_currency.price = money(100, "XYZ");
    let bad_sku = bad_currency.sku.clone();
    let messages = vec![
        line(1, by_slug(input("New lamp", 200, "", 3), "lamps")),
        line(2, input("Another lamp", 300, &lamps.id, 0)),
        line(3, bad_currency),
        ImportProductsRequest {
            line: 4,
            item: Some(import_products_request::Item::ParseError(
                "expected value at column 1".to_owned(),
            )),
        },
        line(5, by_slug(input("Nowhere", 100, "", 1), "no-such-category")),
        line(6, renamed),
        line(7, by_slug(input("Last lamp", 400, "", 1), "lamps")),
    ];

    let summary = import(&app, admin(futures::stream::iter(messages)))
        .await
        .expect("imported");

    assert_eq!(summary.created, 3);
    assert_eq!(summary.updated, 1);
    let rejected: Vec<(u32, &str)> = summary
        .rejected
        .iter()
        .map(|r| (r.line, r.sku.as_str()))
        .collect();
    assert_eq!(
        rejected,
        [(3, bad_sku.as_str()), (4, ""), (5, rejected[2].1)]
    );
    assert!(summary.rejected[0].reason.starts_with("price.currency:"));
    assert_eq!(summary.rejected[1].reason, "expected value at column 1");
    assert!(summary.rejected[2].reason.contains("no-such-category"));
    let updated = app
        .client()
        .get_product(anonymous(GetProductRequest {
            product_id: existing.id.clone(),
        }))
        .await
        .expect("found")
        .into_inner()
        .product
        .expect("product");
    assert_eq!(updated.name, "Renamed lamp");
    assert_eq!(updated.price, money(150, "USD"));
    assert_eq!(
        app.stock(&existing.id).await.on_hand,
        4,
        "an update leaves the stock alone"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(count, 4);
}

#[tokio::test]
async fn an_import_may_archive_and_restore_by_sku() {
    let app = spawn_app().await;
    app.category("Lamps", "lamps", "").await;
    let mut archived = by_slug(input("Lamp", 100, "", 1), "lamps");
    archived.archived = true;
    let sku = archived.sku.clone();
    import(
        &app,
        admin(futures::stream::iter(vec![line(1, archived.clone())])),
    )
    .await
    .expect("imported");
    let active: bool = sqlx::query_scalar("SELECT active FROM products WHERE sku = $1")
        .bind(&sku)
        .fetch_one(&app.pool)
        .await
        .expect("product");
    assert!(!active, "created archived");

    archived.archived = false;
    let summary = import(&app, admin(futures::stream::iter(vec![line(1, archived)])))
        .await
        .expect("imported");

    assert_eq!((summary.created, summary.updated), (0, 1));
    let active: bool = sqlx::query_scalar("SELECT active FROM products WHERE sku = $1")
        .bind(&sku)
        .fetch_one(&app.pool)
        .await
        .expect("product");
    assert!(active, "restored");
}

#[tokio::test]
async fn ten_thousand_products_import_in_one_call() {
    let app = spawn_app().await;
    app.category("Bulk", "bulk", "").await;
    let messages: Vec<ImportProductsRequest> = (1..=10_000u32)
        .map(|n| {
            let mut product = by_slug(
                input(&format!("Bulk item {n}"), i64::from(n), "", 2),
                "bulk",
            );
            product.sku = format!("BULK-{n:05}");
            product.description = format!("Imported widget number {n}");
            line(n, product)
        })
        .collect();
    let started = Instant::now();

    let summary = import(&app, admin(futures::stream::iter(messages)))
        .await
        .expect("imported");

    let took = started.elapsed();
    assert_eq!(summary.created, 10_000);
    assert!(
        summary.rejected.is_empty(),
        "{:?}",
        summary.rejected.first()
    );
    assert!(took < Duration::from_secs(90), "took {took:?}");
    let (products, stocked, movements): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM products), (SELECT sum(on_hand)::bigint FROM stock), \
                (SELECT count(*) FROM stock_movements WHERE kind = 'initial')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("counts");
    assert_eq!((products, stocked, movements), (10_000, 20_000, 10_000));
}

#[tokio::test]
async fn only_admins_may_import() {
    let app = spawn_app().await;
    app.category("Lamps", "lamps", "").await;
    let messages = || vec![line(1, by_slug(input("Lamp", 100, "", 1), "lamps"))];

    assert_status(
        import(&app, customer(futures::stream::iter(messages()))).await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        import(&app, anonymous(futures::stream::iter(messages()))).await,
        Code::PermissionDenied,
        "admin",
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(count, 0);
}
