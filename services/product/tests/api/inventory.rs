//! Stock: admin adjustments with a ledger, and reservations for orders that
//! are all-or-nothing, idempotent, and never oversell.

use gocommerce_proto::common::v1::PageRequest;
use gocommerce_proto::product::v1::{
    AdjustStockRequest, ArchiveProductRequest, CommitReservationRequest, GetStockRequest,
    ListStockMovementsRequest, ReleaseStockRequest, ReservationStatus, StockMovementKind,
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, admin, anonymous, assert_status, customer, input, item, spawn_app};

fn adjust(product_id: &str, delta: i64, reason: &str) -> AdjustStockRequest {
    AdjustStockRequest {
        product_id: product_id.to_owned(),
        delta,
        reason: reason.to_owned(),
    }
}

async fn product_with_stock(app: &TestApp, stock: i64) -> String {
    let category = app
        .category("Stock", &format!("stock-{}", Uuid::new_v4().simple()), "")
        .await;
    app.product(input("Widget", 100, &category.id, stock))
        .await
        .id
}

async fn release(app: &TestApp, order_id: Uuid) -> Result<ReservationStatus, tonic::Status> {
    app.client()
        .release_stock(anonymous(ReleaseStockRequest {
            order_id: order_id.to_string(),
        }))
        .await
        .map(|r| r.into_inner().reservation.expect("reservation").status())
}

async fn commit(app: &TestApp, order_id: Uuid) -> Result<ReservationStatus, tonic::Status> {
    app.client()
        .commit_reservation(anonymous(CommitReservationRequest {
            order_id: order_id.to_string(),
        }))
        .await
        .map(|r| r.into_inner().reservation.expect("reservation").status())
}

async fn movement_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM stock_movements")
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn adjustments_are_kept_in_a_ledger_listed_newest_first_page_by_page() {
    let app = spawn_app().await;
    let id = product_with_stock(&app, 10).await;
    let mut client = app.client();

    let restocked = client
        .adjust_stock(admin(adjust(&id, 5, "restock")))
        .await
        .expect("adjusted")
        .into_inner();
    client
        .adjust_stock(admin(adjust(&id, -3, "damaged in transit")))
        .await
        .expect("adjusted");
    let first = client
        .list_stock_movements(admin(ListStockMovementsRequest {
            product_id: id.clone(),
            page: Some(PageRequest {
                page_size: 2,
                page_token: String::new(),
            }),
        }))
        .await
        .expect("listed")
        .into_inner();
    let second = client
        .list_stock_movements(admin(ListStockMovementsRequest {
            product_id: id.clone(),
            page: Some(PageRequest {
                page_size: 2,
                page_token: first.next_page_token.clone(),
            }),
        }))
        .await
        .expect("listed")
        .into_inner();

    let stock = restocked.stock.expect("stock");
    assert_eq!((stock.on_hand, stock.available), (15, 15));
    let movement = restocked.movement.expect("movement");
    assert_eq!(movement.kind, StockMovementKind::Adjustment as i32);
    assert_eq!(movement.reason, "restock");
    assert_eq!(app.stock(&id).await.on_hand, 12);
    let ledger: Vec<(i64, String)> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|m| (m.on_hand_delta, m.reason.clone()))
        .collect();
    assert_eq!(
        ledger,
        [
            (-3, "damaged in transit".to_owned()),
            (5, "restock".to_owned()),
            (10, String::new()),
        ]
    );
    assert!(second.next_page_token.is_empty(), "the last page");
    assert_status(
        client
            .list_stock_movements(admin(ListStockMovementsRequest {
                product_id: product_with_stock(&app, 1).await,
                page: Some(PageRequest {
                    page_size: 2,
                    page_token: first.next_page_token,
                }),
            }))
            .await,
        Code::InvalidArgument,
        "page_token",
    );
}

#[tokio::test]
async fn an_adjustment_below_available_stock_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    let id = product_with_stock(&app, 5).await;
    app.reserve(Uuid::new_v4(), vec![item(&id, 3)])
        .await
        .expect("reserved");
    let before = movement_count(&app).await;
    let mut client = app.client();

    let refused = client
        .adjust_stock(admin(adjust(&id, -3, "stocktake")))
        .await;

    assert_status(refused, Code::InvalidArgument, "delta");
    let stock = app.stock(&id).await;
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (5, 3, 2));
    assert_eq!(movement_count(&app).await, before);
    client
        .adjust_stock(admin(adjust(&id, -2, "stocktake")))
        .await
        .expect("down to exactly zero available");
    for (request, code, field) in [
        (adjust(&id, 0, "nothing"), Code::InvalidArgument, "delta"),
        (adjust(&id, 1, "  "), Code::InvalidArgument, "reason"),
        (
            adjust(&id, 1, &"r".repeat(501)),
            Code::InvalidArgument,
            "reason",
        ),
        (adjust("bad", 1, "x"), Code::InvalidArgument, "product_id"),
        (
            adjust(&Uuid::new_v4().to_string(), 1, "x"),
            Code::NotFound,
            "product",
        ),
        (
            adjust(&id, i64::MAX, "overflow"),
            Code::InvalidArgument,
            "delta",
        ),
    ] {
        assert_status(client.adjust_stock(admin(request)).await, code, field);
    }
}

#[tokio::test]
async fn a_reservation_is_all_or_nothing_and_names_the_short_product() {
    let app = spawn_app().await;
    let plenty = product_with_stock(&app, 5).await;
    let scarce = product_with_stock(&app, 1).await;

    let refused = app
        .reserve(Uuid::new_v4(), vec![item(&plenty, 2), item(&scarce, 2)])
        .await;

    assert_status(refused, Code::FailedPrecondition, &scarce);
    assert_eq!(app.stock(&plenty).await.reserved, 0, "nothing reserved");
    assert_eq!(app.stock(&scarce).await.reserved, 0);
}

#[tokio::test]
async fn reserving_again_for_an_order_returns_the_same_reservation_and_reserves_once() {
    let app = spawn_app().await;
    let a = product_with_stock(&app, 10).await;
    let b = product_with_stock(&app, 10).await;
    let order = Uuid::new_v4();

    let first = app
        .reserve(order, vec![item(&a, 2), item(&b, 1)])
        .await
        .expect("reserved");
    let repeat = app
        .reserve(order, vec![item(&b, 1), item(&a, 2)])
        .await
        .expect("the same reservation");
    let different = app.reserve(order, vec![item(&a, 3)]).await;

    assert_eq!(first.status(), ReservationStatus::Reserved);
    assert_eq!(repeat, first);
    assert_eq!(first.items, vec![item(&a, 2), item(&b, 1)]);
    assert_eq!(app.stock(&a).await.reserved, 2);
    assert_eq!(app.stock(&b).await.reserved, 1);
    assert_status(different, Code::FailedPrecondition, "different items");
}

#[tokio::test]
async fn thirty_concurrent_reservations_of_one_unit_never_oversell_five_in_stock() {
    let app = spawn_app().await;
    let id = product_with_stock(&app, 5).await;

    let attempts = (0..30).map(|_| app.reserve(Uuid::new_v4(), vec![item(&id, 1)]));
    let results = futures::future::join_all(attempts).await;

    let succeeded = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(succeeded, 5);
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            refused.code(),
            Code::FailedPrecondition,
            "{}",
            refused.message()
        );
    }
    let stock = app.stock(&id).await;
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (5, 5, 0));
}

#[tokio::test]
async fn concurrent_orders_over_shared_products_in_opposite_orders_do_not_deadlock() {
    let app = spawn_app().await;
    let a = product_with_stock(&app, 100).await;
    let b = product_with_stock(&app, 100).await;

    let attempts = (0..20).map(|n| {
        let items = if n % 2 == 0 {
            vec![item(&a, 1), item(&b, 1)]
        } else {
            vec![item(&b, 1), item(&a, 1)]
        };
        app.reserve(Uuid::new_v4(), items)
    });
    let results = futures::future::join_all(attempts).await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(app.stock(&a).await.reserved, 20);
    assert_eq!(app.stock(&b).await.reserved, 20);
}

#[tokio::test]
async fn a_commit_takes_the_stock_for_good_and_cannot_be_released() {
    let app = spawn_app().await;
    let id = product_with_stock(&app, 5).await;
    let order = Uuid::new_v4();
    app.reserve(order, vec![item(&id, 2)])
        .await
        .expect("reserved");

    let committed = commit(&app, order).await.expect("committed");
    let again = commit(&app, order).await.expect("idempotent");

    assert_eq!(committed, ReservationStatus::Committed);
    assert_eq!(again, ReservationStatus::Committed);
    let stock = app.stock(&id).await;
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (3, 0, 3));
    assert_status(
        release(&app, order).await,
        Code::FailedPrecondition,
        "committed",
    );
    assert_status(
        app.reserve(order, vec![item(&id, 2)]).await,
        Code::FailedPrecondition,
        "committed",
    );
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM stock_movements WHERE order_id = $1 ORDER BY created_at, id",
    )
    .bind(order)
    .fetch_all(&app.pool)
    .await
    .expect("ledger");
    assert_eq!(kinds, ["reservation", "commit"]);
}

/// The ledger rows of an order: (product, kind, on-hand delta, reserved
/// delta, actor), by product and then in the order they were written.
async fn ledger(app: &TestApp, order_id: Uuid) -> Vec<(String, String, i64, i64, String)> {
    sqlx::query_as(
        "SELECT product_id::text, kind, on_hand_delta, reserved_delta, actor \
         FROM stock_movements WHERE order_id = $1 ORDER BY product_id, id",
    )
    .bind(order_id)
    .fetch_all(&app.pool)
    .await
    .expect("ledger")
}

#[tokio::test]
async fn every_item_of_a_settled_order_has_its_reservation_and_its_commit_or_release_in_the_ledger()
{
    // Arrange
    let app = spawn_app().await;
    let mut ids = [
        product_with_stock(&app, 10).await,
        product_with_stock(&app, 10).await,
    ];
    ids.sort();
    let [a, b] = ids;
    let (kept, returned) = (Uuid::new_v4(), Uuid::new_v4());
    for order in [kept, returned] {
        app.reserve(order, vec![item(&b, 3), item(&a, 2)])
            .await
            .expect("reserved");
    }

    // Act
    commit(&app, kept).await.expect("committed");
    release(&app, returned).await.expect("released");

    // Assert
    let row = |id: &str, kind: &str, on_hand: i64, reserved: i64| {
        (
            id.to_owned(),
            kind.to_owned(),
            on_hand,
            reserved,
            "system".to_owned(),
        )
    };
    assert_eq!(
        ledger(&app, kept).await,
        [
            row(&a, "reservation", 0, 2),
            row(&a, "commit", -2, -2),
            row(&b, "reservation", 0, 3),
            row(&b, "commit", -3, -3),
        ]
    );
    assert_eq!(
        ledger(&app, returned).await,
        [
            row(&a, "reservation", 0, 2),
            row(&a, "release", 0, -2),
            row(&b, "reservation", 0, 3),
            row(&b, "release", 0, -3),
        ]
    );
    let stock = (app.stock(&a).await, app.stock(&b).await);
    assert_eq!((stock.0.on_hand, stock.0.reserved), (8, 0));
    assert_eq!((stock.1.on_hand, stock.1.reserved), (7, 0));
}

#[tokio::test]
async fn a_release_returns_the_stock_once_and_cannot_be_committed() {
    let app = spawn_app().await;
    let id = product_with_stock(&app, 5).await;
    let order = Uuid::new_v4();
    app.reserve(order, vec![item(&id, 4)])
        .await
        .expect("reserved");

    let released = release(&app, order).await.expect("released");
    let again = release(&app, order).await.expect("idempotent");

    assert_eq!(released, ReservationStatus::Released);
    assert_eq!(again, ReservationStatus::Released);
    let stock = app.stock(&id).await;
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (5, 0, 5));
    assert_status(
        commit(&app, order).await,
        Code::FailedPrecondition,
        "released",
    );
    assert_status(
        app.reserve(order, vec![item(&id, 4)]).await,
        Code::FailedPrecondition,
        "released",
    );
}

#[tokio::test]
async fn releasing_an_order_never_reserved_leaves_a_tombstone_against_late_reservations() {
    let app = spawn_app().await;
    let id = product_with_stock(&app, 5).await;
    let order = Uuid::new_v4();

    let tombstone = app
        .client()
        .release_stock(anonymous(ReleaseStockRequest {
            order_id: order.to_string(),
        }))
        .await
        .expect("released")
        .into_inner()
        .reservation
        .expect("reservation");
    let late = app.reserve(order, vec![item(&id, 1)]).await;

    assert_eq!(tombstone.status(), ReservationStatus::Released);
    assert!(tombstone.items.is_empty());
    assert_status(late, Code::FailedPrecondition, "released");
    assert_eq!(app.stock(&id).await.reserved, 0);
    assert_status(
        commit(&app, Uuid::new_v4()).await,
        Code::NotFound,
        "reservation",
    );
}

#[tokio::test]
async fn reservations_refuse_bad_items_archived_and_unknown_products() {
    let app = spawn_app().await;
    let id = product_with_stock(&app, 5).await;
    let archived = product_with_stock(&app, 5).await;
    app.client()
        .archive_product(admin(ArchiveProductRequest {
            product_id: archived.clone(),
        }))
        .await
        .expect("archived");
    let unknown = Uuid::new_v4().to_string();
    let order = Uuid::new_v4;

    assert_status(
        app.reserve(order(), vec![item(&id, 1), item(&archived, 1)])
            .await,
        Code::FailedPrecondition,
        &archived,
    );
    assert_status(
        app.reserve(order(), vec![item(&id, 1), item(&unknown, 1)])
            .await,
        Code::NotFound,
        "items[1].product_id",
    );
    assert_status(
        app.reserve(order(), vec![]).await,
        Code::InvalidArgument,
        "items",
    );
    assert_status(
        app.reserve(order(), vec![item(&id, 0)]).await,
        Code::InvalidArgument,
        "items[0].quantity",
    );
    assert_status(
        app.reserve(order(), vec![item(&id, 1), item(&id, 2)]).await,
        Code::InvalidArgument,
        "items[1].product_id",
    );
    assert_status(
        app.reserve(order(), vec![item("bad", 1)]).await,
        Code::InvalidArgument,
        "items[0].product_id",
    );
    assert_status(
        app.client()
            .reserve_stock(anonymous(
                gocommerce_proto::product::v1::ReserveStockRequest {
                    order_id: "bad".to_owned(),
                    items: vec![item(&id, 1)],
                },
            ))
            .await,
        Code::InvalidArgument,
        "order_id",
    );
    assert_status(
        app.client()
            .reserve_stock(customer(
                gocommerce_proto::product::v1::ReserveStockRequest {
                    order_id: order().to_string(),
                    items: vec![item(&id, 1)],
                },
            ))
            .await,
        Code::PermissionDenied,
        "",
    );
    assert_status(
        app.client()
            .release_stock(customer(ReleaseStockRequest {
                order_id: order().to_string(),
            }))
            .await,
        Code::PermissionDenied,
        "",
    );
    assert_status(
        app.client()
            .commit_reservation(customer(CommitReservationRequest {
                order_id: order().to_string(),
            }))
            .await,
        Code::PermissionDenied,
        "",
    );
    assert_eq!(app.stock(&id).await.reserved, 0);
    assert_eq!(app.stock(&archived).await.reserved, 0);
}

#[tokio::test]
async fn only_admins_read_or_adjust_stock() {
    let app = spawn_app().await;
    let id = product_with_stock(&app, 5).await;
    let mut client = app.client();

    assert_status(
        client
            .get_stock(customer(GetStockRequest {
                product_id: id.clone(),
            }))
            .await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        client
            .get_stock(anonymous(GetStockRequest {
                product_id: id.clone(),
            }))
            .await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        client
            .adjust_stock(customer(adjust(&id, 100, "mine")))
            .await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        client
            .list_stock_movements(customer(ListStockMovementsRequest {
                product_id: id.clone(),
                page: None,
            }))
            .await,
        Code::PermissionDenied,
        "admin",
    );
    assert_eq!(app.stock(&id).await.on_hand, 5);
}

#[tokio::test]
async fn concurrent_repeats_of_one_order_reserve_only_once() {
    let app = spawn_app().await;
    let id = product_with_stock(&app, 10).await;
    let order = Uuid::new_v4();

    let attempts = (0..10).map(|_| app.reserve(order, vec![item(&id, 3)]));
    let results = futures::future::join_all(attempts).await;

    let reservations: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every repeat answers"))
        .collect();
    assert!(reservations.iter().all(|r| *r == reservations[0]));
    let stock = app.stock(&id).await;
    assert_eq!((stock.reserved, stock.available), (3, 7));
    let movements: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stock_movements WHERE order_id = $1")
            .bind(order)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(movements, 1);
}

#[tokio::test]
async fn stock_of_an_unknown_product_is_not_found_and_a_malformed_id_is_invalid() {
    let app = spawn_app().await;
    let mut client = app.client();
    let unknown = Uuid::new_v4().to_string();

    assert_status(
        client
            .get_stock(admin(GetStockRequest {
                product_id: unknown.clone(),
            }))
            .await,
        Code::NotFound,
        "product",
    );
    assert_status(
        client
            .list_stock_movements(admin(ListStockMovementsRequest {
                product_id: unknown,
                page: None,
            }))
            .await,
        Code::NotFound,
        "product",
    );
    assert_status(
        client
            .get_stock(admin(GetStockRequest {
                product_id: "12".to_owned(),
            }))
            .await,
        Code::InvalidArgument,
        "product_id",
    );
    assert_status(
        client
            .list_stock_movements(admin(ListStockMovementsRequest {
                product_id: Uuid::new_v4().to_string(),
                page: Some(PageRequest {
                    page_size: 101,
                    page_token: String::new(),
                }),
            }))
            .await,
        Code::InvalidArgument,
        "page_size",
    );
}
