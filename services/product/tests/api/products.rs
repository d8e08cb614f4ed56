//! Products: creation with stock, validation, updates, archiving, and who
//! sees archived products.

use gocommerce_proto::product::v1::{
    ArchiveProductRequest, GetProductRequest, GetProductsRequest, ImageList,
    ListStockMovementsRequest, ProductInput, StockMovementKind, UpdateProductRequest,
    product_input,
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{admin, anonymous, assert_status, customer, input, money, spawn_app};

fn get(id: &str) -> GetProductRequest {
    GetProductRequest {
        product_id: id.to_owned(),
    }
}

fn update(id: &str) -> UpdateProductRequest {
    UpdateProductRequest {
        product_id: id.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_created_product_keeps_its_fields_and_its_initial_stock() {
    let app = spawn_app().await;
    let lamps = app.category("Lamps", "lamps", "").await;
    let attributes =
        r#"{"watts": 9007199254740993, "size": {"h": 40, "w": 12.5}, "tags": ["desk"]}"#;
    let mut new = input("Desk lamp", 4999, &lamps.id, 7);
    new.description = "A lamp for desks".to_owned();
    new.attributes_json = attributes.to_owned();
    new.images = vec![
        "https://cdn.example.com/lamp-1.jpg".to_owned(),
        "http://cdn.example.com/lamp-2.jpg".to_owned(),
    ];

    let response = app
        .client()
        .create_product(admin(gocommerce_proto::product::v1::CreateProductRequest {
            product: Some(new.clone()),
        }))
        .await
        .expect("created")
        .into_inner();

    let product = response.product.expect("product");
    let stock = response.stock.expect("stock");
    assert_eq!(product.sku, new.sku);
    assert_eq!(product.name, "Desk lamp");
    assert_eq!(product.price, money(4999, "USD"));
    assert_eq!(product.category_id, lamps.id);
    assert_eq!(product.images, new.images);
    assert!(product.active);
    assert!(product.in_stock);
    let stored: serde_json::Value =
        serde_json::from_str(&product.attributes_json).expect("json object");
    assert_eq!(stored["size"]["w"], 12.5);
    assert!(
        product.attributes_json.contains("9007199254740993"),
        "integers beyond 2^53 survive exactly: {}",
        product.attributes_json
    );
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (7, 0, 7));
    let movements = app
        .client()
        .list_stock_movements(admin(ListStockMovementsRequest {
            product_id: product.id.clone(),
            page: None,
        }))
        .await
        .expect("listed")
        .into_inner()
        .items;
    assert_eq!(movements.len(), 1);
    assert_eq!(movements[0].kind, StockMovementKind::Initial as i32);
    assert_eq!(movements[0].on_hand_delta, 7);

    let fetched = app
        .client()
        .get_product(anonymous(get(&product.id)))
        .await
        .expect("public")
        .into_inner()
        .product
        .expect("product");
    assert_eq!(fetched, product);
}

#[tokio::test]
async fn a_product_may_name_its_category_by_slug_and_starts_with_no_attributes() {
    let app = spawn_app().await;
    app.category("Lamps", "lamps", "").await;
    let mut new = input("Floor lamp", 100, "", 0);
    new.category = Some(product_input::Category::CategorySlug("lamps".to_owned()));

    let product = app.product(new).await;

    assert_eq!(product.attributes_json, "{}");
    assert!(!product.in_stock, "created with no stock");
}

#[tokio::test]
async fn a_taken_sku_is_already_exists() {
    let app = spawn_app().await;
    let lamps = app.category("Lamps", "lamps", "").await;
    let first = app.product(input("Lamp", 100, &lamps.id, 1)).await;
    let mut again = input("Other lamp", 200, &lamps.id, 1);
    again.sku = first.sku.clone();

    assert_status(app.create(again).await, Code::AlreadyExists, "sku");
    let second = app.product(input("Second", 100, &lamps.id, 1)).await;
    assert_status(
        app.client()
            .update_product(admin(UpdateProductRequest {
                sku: Some(first.sku.clone()),
                ..update(&second.id)
            }))
            .await,
        Code::AlreadyExists,
        "sku",
    );
}

#[tokio::test]
async fn bad_product_input_is_invalid_argument_naming_the_field() {
    let app = spawn_app().await;
    let lamps = app.category("Lamps", "lamps", "").await;
    let good = || input("Lamp", 100, &lamps.id, 1);
    type Breaker = fn(&mut ProductInput);
    let cases: Vec<(Breaker, &str)> = vec![
        (|p| p.sku = String::new(), "sku"),
        (|p| p.sku = "x".repeat(65), "sku"),
        (|p| p.name = "  ".to_owned(), "name"),
        (|p| p.description = "d".repeat(10_001), "description"),
        (|p| p.price = None, "price"),
        (|p| p.price = money(-1, "USD"), "price.amount"),
        (|p| p.price = money(100, "XYZ"), "price.currency"),
        (|p| p.price = money(100, "usd"), "price.currency"),
        (|p| p.category = None, "category_id"),
        (
            |p| p.category = Some(product_input::Category::CategoryId("nope".to_owned())),
            "category_id",
        ),
        (
            |p| p.attributes_json = "[1, 2]".to_owned(),
            "attributes_json",
        ),
        (
            |p| p.attributes_json = "{not json".to_owned(),
            "attributes_json",
        ),
        (
            |p| p.images = vec!["ftp://example.com/a.png".to_owned()],
            "images[0]",
        ),
        (
            |p| {
                p.images = vec![
                    "https://ok.example/a.png".to_owned(),
                    "/relative.png".to_owned(),
                ]
            },
            "images[1]",
        ),
        (
            |p| p.images = vec!["https://ok.example/a.png".to_owned(); 21],
            "images",
        ),
        (|p| p.stock = -1, "stock"),
    ];

    for (breaker, field) in cases {
        let mut bad = good();
        breaker(&mut bad);
        assert_status(app.create(bad).await, Code::InvalidArgument, field);
    }
    let mut unknown = good();
    unknown.category = Some(product_input::Category::CategoryId(
        Uuid::new_v4().to_string(),
    ));
    assert_status(app.create(unknown).await, Code::NotFound, "category_id");
    let mut unknown_slug = good();
    unknown_slug.category = Some(product_input::Category::CategorySlug("nope".to_owned()));
    assert_status(
        app.create(unknown_slug).await,
        Code::NotFound,
        "category_slug",
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(count, 0, "nothing half-written");
    assert_status(
        app.client().get_product(anonymous(get("nope"))).await,
        Code::InvalidArgument,
        "product_id",
    );
    assert_status(
        app.client()
            .get_product(anonymous(get(&Uuid::new_v4().to_string())))
            .await,
        Code::NotFound,
        "product",
    );
}

#[tokio::test]
async fn an_update_changes_only_the_fields_that_are_set() {
    let app = spawn_app().await;
    let lamps = app.category("Lamps", "lamps", "").await;
    let chairs = app.category("Chairs", "chairs", "").await;
    let mut new = input("Lamp", 100, &lamps.id, 3);
    new.description = "Bright".to_owned();
    new.images = vec!["https://cdn.example.com/a.jpg".to_owned()];
    let product = app.product(new).await;
    let mut client = app.client();

    let renamed = client
        .update_product(admin(UpdateProductRequest {
            name: Some("Chair".to_owned()),
            price: money(250, "EUR"),
            category_id: Some(chairs.id.clone()),
            attributes_json: Some(r#"{"legs": 4}"#.to_owned()),
            ..update(&product.id)
        }))
        .await
        .expect("updated")
        .into_inner()
        .product
        .expect("product");
    let imageless = client
        .update_product(admin(UpdateProductRequest {
            images: Some(ImageList { urls: vec![] }),
            ..update(&product.id)
        }))
        .await
        .expect("updated")
        .into_inner()
        .product
        .expect("product");

    assert_eq!(renamed.name, "Chair");
    assert_eq!(renamed.price, money(250, "EUR"));
    assert_eq!(renamed.category_id, chairs.id);
    assert_eq!(renamed.attributes_json, r#"{"legs": 4}"#);
    assert_eq!(renamed.description, "Bright", "unset stays unchanged");
    assert_eq!(renamed.sku, product.sku);
    assert_eq!(renamed.images, product.images);
    assert!(
        imageless.images.is_empty(),
        "an empty list removes the images"
    );
    assert_eq!(imageless.name, "Chair");

    let archived = client
        .update_product(admin(UpdateProductRequest {
            active: Some(false),
            ..update(&product.id)
        }))
        .await
        .expect("archived")
        .into_inner()
        .product
        .expect("product");
    assert!(!archived.active);
    let restored = client
        .update_product(admin(UpdateProductRequest {
            active: Some(true),
            ..update(&product.id)
        }))
        .await
        .expect("restored")
        .into_inner()
        .product
        .expect("product");
    assert!(restored.active);

    for (request, code, field) in [
        (
            UpdateProductRequest {
                price: money(-5, "USD"),
                ..update(&product.id)
            },
            Code::InvalidArgument,
            "price.amount",
        ),
        (
            UpdateProductRequest {
                images: Some(ImageList {
                    urls: vec!["mailto:x@example.com".to_owned()],
                }),
                ..update(&product.id)
            },
            Code::InvalidArgument,
            "images[0]",
        ),
        (
            UpdateProductRequest {
                category_id: Some(Uuid::new_v4().to_string()),
                ..update(&product.id)
            },
            Code::NotFound,
            "category_id",
        ),
        (
            UpdateProductRequest {
                name: Some("x".to_owned()),
                ..update(&Uuid::new_v4().to_string())
            },
            Code::NotFound,
            "product",
        ),
        (update("bad"), Code::InvalidArgument, "product_id"),
    ] {
        assert_status(client.update_product(admin(request)).await, code, field);
    }
}

#[tokio::test]
async fn archived_products_are_hidden_from_customers_but_kept_for_admins_and_peers() {
    let app = spawn_app().await;
    let lamps = app.category("Lamps", "lamps", "").await;
    let product = app.product(input("Lamp", 100, &lamps.id, 3)).await;
    let mut client = app.client();
    let archive = || {
        admin(ArchiveProductRequest {
            product_id: product.id.clone(),
        })
    };

    let archived = client
        .archive_product(archive())
        .await
        .expect("archived")
        .into_inner()
        .product
        .expect("product");
    let again = client
        .archive_product(archive())
        .await
        .expect("archiving is idempotent")
        .into_inner()
        .product
        .expect("product");

    assert!(!archived.active);
    assert_eq!(again.updated_at, archived.updated_at);
    assert_status(
        client.get_product(customer(get(&product.id))).await,
        Code::NotFound,
        "product",
    );
    assert_status(
        client.get_product(anonymous(get(&product.id))).await,
        Code::NotFound,
        "product",
    );
    let for_admin = client
        .get_product(admin(get(&product.id)))
        .await
        .expect("admins see it")
        .into_inner()
        .product
        .expect("product");
    assert!(!for_admin.active);
    let for_peer = client
        .get_products(anonymous(GetProductsRequest {
            product_ids: vec![product.id.clone(), Uuid::new_v4().to_string()],
        }))
        .await
        .expect("peers see it")
        .into_inner()
        .products;
    assert_eq!(for_peer.len(), 1, "unknown ids are simply absent");
    assert_eq!(for_peer[0].id, product.id);
    assert!(!for_peer[0].active);
    assert_status(
        client
            .archive_product(admin(ArchiveProductRequest {
                product_id: Uuid::new_v4().to_string(),
            }))
            .await,
        Code::NotFound,
        "product",
    );
}

#[tokio::test]
async fn get_products_is_internal_and_bounded() {
    let app = spawn_app().await;
    let mut client = app.client();
    let ids = |n: usize| {
        (0..n)
            .map(|_| Uuid::new_v4().to_string())
            .collect::<Vec<_>>()
    };

    assert_status(
        client
            .get_products(customer(GetProductsRequest {
                product_ids: ids(1),
            }))
            .await,
        Code::PermissionDenied,
        "",
    );
    assert_status(
        client
            .get_products(anonymous(GetProductsRequest {
                product_ids: ids(101),
            }))
            .await,
        Code::InvalidArgument,
        "product_ids",
    );
    assert_status(
        client
            .get_products(anonymous(GetProductsRequest {
                product_ids: vec![Uuid::new_v4().to_string(), "bad".to_owned()],
            }))
            .await,
        Code::InvalidArgument,
        "product_ids[1]",
    );
    let found = client
        .get_products(admin(GetProductsRequest {
            product_ids: ids(100),
        }))
        .await
        .expect("a hundred is allowed")
        .into_inner()
        .products;
    assert!(found.is_empty());
}

#[tokio::test]
async fn customers_may_not_write_products() {
    let app = spawn_app().await;
    let lamps = app.category("Lamps", "lamps", "").await;
    let product = app.product(input("Lamp", 100, &lamps.id, 3)).await;
    let mut client = app.client();

    assert_status(
        client
            .create_product(customer(
                gocommerce_proto::product::v1::CreateProductRequest {
                    product: Some(input("Mine", 1, &lamps.id, 1)),
                },
            ))
            .await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        client
            .update_product(customer(UpdateProductRequest {
                price: money(1, "USD"),
                ..update(&product.id)
            }))
            .await,
        Code::PermissionDenied,
        "admin",
    );
    assert_status(
        client
            .archive_product(customer(ArchiveProductRequest {
                product_id: product.id.clone(),
            }))
            .await,
        Code::PermissionDenied,
        "admin",
    );
    let unchanged = client
        .get_product(customer(get(&product.id)))
        .await
        .expect("still public")
        .into_inner()
        .product
        .expect("product");
    assert_eq!(unchanged.price, money(100, "USD"));
}
