//! SearchProducts: ranked full-text search, filters, sorts and keyset pages
//! that stay stable while products are added.

use std::collections::HashSet;

use gocommerce_proto::common::v1::{Money, PageRequest};
use gocommerce_proto::product::v1::{
    AdjustStockRequest, ArchiveProductRequest, Product, ProductSort, SearchProductsRequest,
    SearchProductsResponse, search_products_request,
};
use tonic::Code;

use crate::helpers::{TestApp, admin, anonymous, assert_status, customer, input, money, spawn_app};

async fn search(app: &TestApp, request: SearchProductsRequest) -> SearchProductsResponse {
    app.client()
        .search_products(anonymous(request))
        .await
        .expect("searched")
        .into_inner()
}

fn names(products: &[Product]) -> Vec<&str> {
    products.iter().map(|p| p.name.as_str()).collect()
}

fn query(q: &str) -> SearchProductsRequest {
    SearchProductsRequest {
        q: q.to_owned(),
        ..Default::default()
    }
}

fn page(size: u32, token: &str) -> Option<PageRequest> {
    Some(PageRequest {
        page_size: size,
        page_token: token.to_owned(),
    })
}

#[tokio::test]
async fn results_match_the_words_and_rank_names_above_descriptions() {
    let app = spawn_app().await;
    let home = app.category("Home", "home", "").await;
    let mut described = input("Reading light", 100, &home.id, 1);
    described.description = "A lamp with a warm glow for reading".to_owned();
    app.product(described).await;
    let mut named = input("Brass desk lamp", 100, &home.id, 1);
    named.description = "Polished brass, for desks".to_owned();
    app.product(named).await;
    let mut unrelated = input("Oak chair", 100, &home.id, 1);
    unrelated.description = "Sturdy seating".to_owned();
    app.product(unrelated).await;

    let lamps = search(&app, query("lamps")).await;
    let both = search(&app, query("lamp -brass")).await;
    let phrase = search(&app, query("\"warm glow\"")).await;
    let nothing = search(&app, query("submarine")).await;

    assert_eq!(names(&lamps.items), ["Brass desk lamp", "Reading light"]);
    assert_eq!(names(&both.items), ["Reading light"], "websearch syntax");
    assert_eq!(names(&phrase.items), ["Reading light"]);
    assert!(nothing.items.is_empty());
    assert!(lamps.next_page_token.is_empty());
}

#[tokio::test]
async fn a_category_filter_includes_every_subcategory() {
    let app = spawn_app().await;
    let home = app.category("Home", "home", "").await;
    let lighting = app.category("Lighting", "lighting", &home.id).await;
    let lamps = app.category("Lamps", "lamps", &lighting.id).await;
    let garden = app.category("Garden", "garden", "").await;
    app.product(input("Sofa", 100, &home.id, 1)).await;
    app.product(input("Ceiling light", 100, &lighting.id, 1))
        .await;
    app.product(input("Desk lamp", 100, &lamps.id, 1)).await;
    app.product(input("Spade", 100, &garden.id, 1)).await;
    let by = |category| SearchProductsRequest {
        category: Some(category),
        sort: ProductSort::Name as i32,
        ..Default::default()
    };
    use search_products_request::Category::{CategoryId, CategorySlug};

    let under_home = search(&app, by(CategoryId(home.id.clone()))).await;
    let under_lighting = search(&app, by(CategorySlug("lighting".to_owned()))).await;
    let under_garden = search(&app, by(CategoryId(garden.id.clone()))).await;

    assert_eq!(
        names(&under_home.items),
        ["Ceiling light", "Desk lamp", "Sofa"]
    );
    assert_eq!(names(&under_lighting.items), ["Ceiling light", "Desk lamp"]);
    assert_eq!(names(&under_garden.items), ["Spade"]);
    assert_status(
        app.client()
            .search_products(anonymous(by(CategorySlug("nope".to_owned()))))
            .await,
        Code::NotFound,
        "category_slug",
    );
    assert_status(
        app.client()
            .search_products(anonymous(by(CategoryId(uuid::Uuid::new_v4().to_string()))))
            .await,
        Code::NotFound,
        "category_id",
    );
}

#[tokio::test]
async fn price_currency_and_stock_filters_narrow_the_results() {
    let app = spawn_app().await;
    let shop = app.category("Shop", "shop", "").await;
    app.product(input("Cheap", 100, &shop.id, 1)).await;
    app.product(input("Middle", 500, &shop.id, 0)).await;
    app.product(input("Dear", 1000, &shop.id, 1)).await;
    let mut euro = input("Euro", 500, &shop.id, 1);
    euro.price = money(500, "EUR");
    let euro = app.product(euro).await;
    let filtered =
        |min: Option<Money>, max: Option<Money>, in_stock: Option<bool>| SearchProductsRequest {
            min_price: min,
            max_price: max,
            in_stock,
            sort: ProductSort::Name as i32,
            ..Default::default()
        };

    let between = search(&app, filtered(money(200, ""), money(900, ""), None)).await;
    let usd_between = search(&app, filtered(money(200, "USD"), money(900, ""), None)).await;
    let at_most = search(&app, filtered(None, money(500, "USD"), None)).await;
    let inclusive = search(&app, filtered(money(1000, ""), money(1000, ""), None)).await;
    let stocked = search(&app, filtered(None, None, Some(true))).await;
    let unstocked = search(&app, filtered(None, None, Some(false))).await;

    assert_eq!(names(&between.items), ["Euro", "Middle"]);
    assert_eq!(names(&usd_between.items), ["Middle"]);
    assert_eq!(names(&at_most.items), ["Cheap", "Middle"]);
    assert_eq!(names(&inclusive.items), ["Dear"]);
    assert_eq!(names(&stocked.items), ["Cheap", "Dear", "Euro"]);
    assert_eq!(names(&unstocked.items), ["Middle"]);

    app.reserve(
        uuid::Uuid::new_v4(),
        vec![crate::helpers::item(&euro.id, 1)],
    )
    .await
    .expect("reserved");
    let sold_out = search(&app, filtered(None, None, Some(false))).await;
    assert_eq!(
        names(&sold_out.items),
        ["Euro", "Middle"],
        "reserved stock is not available"
    );
    app.client()
        .adjust_stock(admin(AdjustStockRequest {
            product_id: euro.id.clone(),
            delta: 2,
            reason: "restock".to_owned(),
        }))
        .await
        .expect("restocked");
    let restocked = search(&app, filtered(None, None, Some(true))).await;
    assert_eq!(names(&restocked.items), ["Cheap", "Dear", "Euro"]);
}

#[tokio::test]
async fn every_sort_orders_as_documented() {
    let app = spawn_app().await;
    let shop = app.category("Shop", "shop", "").await;
    for (name, price) in [
        ("banana", 300),
        ("Apple", 300),
        ("cherry", 100),
        ("Date", 200),
    ] {
        app.product(input(name, price, &shop.id, 1)).await;
    }
    let sorted = |sort: ProductSort| SearchProductsRequest {
        sort: sort as i32,
        ..Default::default()
    };

    let price_asc = search(&app, sorted(ProductSort::PriceAsc)).await;
    let price_desc = search(&app, sorted(ProductSort::PriceDesc)).await;
    let newest = search(&app, sorted(ProductSort::Newest)).await;
    let by_name = search(&app, sorted(ProductSort::Name)).await;
    let default = search(&app, sorted(ProductSort::Unspecified)).await;
    let relevance_without_text = search(&app, sorted(ProductSort::Relevance)).await;

    let prices = |r: &SearchProductsResponse| -> Vec<i64> {
        r.items
            .iter()
            .map(|p| p.price.as_ref().expect("price").amount)
            .collect()
    };
    assert_eq!(prices(&price_asc), [100, 200, 300, 300]);
    assert_eq!(prices(&price_desc), [300, 300, 200, 100]);
    assert_eq!(names(&newest.items), ["Date", "cherry", "Apple", "banana"]);
    let mut expected: Vec<&str> = names(&by_name.items);
    expected.sort_by_key(|n| n.to_lowercase());
    assert_eq!(names(&by_name.items), expected, "A to Z");
    assert_eq!(names(&default.items), names(&newest.items));
    assert_eq!(names(&relevance_without_text.items), names(&newest.items));
}

/// Pages through a search, adding products after the first page; returns
/// every id seen, in order.
async fn page_through(
    app: &TestApp,
    request: SearchProductsRequest,
    add: &impl AsyncFn(usize),
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut token = String::new();
    for round in 0.. {
        let response = search(
            app,
            SearchProductsRequest {
                page: page(3, &token),
                ..request.clone()
            },
        )
        .await;
        assert!(response.items.len() <= 3);
        seen.extend(response.items.into_iter().map(|p| p.id));
        if response.next_page_token.is_empty() {
            break;
        }
        token = response.next_page_token;
        if round < 2 {
            add(round).await;
        }
    }
    seen
}

#[tokio::test]
async fn pages_neither_repeat_nor_skip_products_when_products_are_added_between_pages() {
    let app = spawn_app().await;
    let shop = app.category("Shop", "shop", "").await;
    let mut originals = HashSet::new();
    for n in 0..8 {
        let mut new = input(&format!("Lamp {n}"), 100 * (n % 3), &shop.id, 1);
        new.description = "lamp ".repeat(n as usize + 1);
        originals.insert(app.product(new).await.id);
    }
    let add = async |round: usize| {
        for n in 0..3 {
            let mut new = input(&format!("Lamp added {round}-{n}"), 100 * n, &shop.id, 1);
            new.description = "lamp".to_owned();
            app.product(new).await;
        }
    };

    for sort in [
        ProductSort::PriceAsc,
        ProductSort::PriceDesc,
        ProductSort::Newest,
        ProductSort::Name,
        ProductSort::Relevance,
    ] {
        let seen = page_through(
            &app,
            SearchProductsRequest {
                q: "lamp".to_owned(),
                sort: sort as i32,
                ..Default::default()
            },
            &add,
        )
        .await;

        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{sort:?}: a product was repeated");
        assert!(
            originals.iter().all(|id| unique.contains(id)),
            "{sort:?}: a product was skipped"
        );
    }
}

#[tokio::test]
async fn relevance_pages_follow_the_ranking() {
    let app = spawn_app().await;
    let shop = app.category("Shop", "shop", "").await;
    for n in 1..=7 {
        let mut new = input(&format!("Item {n}"), 100, &shop.id, 1);
        new.description = format!("{} filler words here", "lamp ".repeat(n));
        app.product(new).await;
    }
    let whole = search(&app, query("lamp")).await;

    let paged = page_through(&app, query("lamp"), &async |_| {}).await;

    let whole: Vec<String> = whole.items.into_iter().map(|p| p.id).collect();
    assert_eq!(whole.len(), 7);
    assert_eq!(paged, whole, "pages continue the ranking exactly");
}

#[tokio::test]
async fn bad_pages_tokens_and_bounds_are_invalid_argument() {
    let app = spawn_app().await;
    let shop = app.category("Shop", "shop", "").await;
    for n in 0..3 {
        app.product(input(&format!("Lamp {n}"), 100, &shop.id, 1))
            .await;
    }
    let first = search(
        &app,
        SearchProductsRequest {
            page: page(1, ""),
            sort: ProductSort::PriceAsc as i32,
            ..Default::default()
        },
    )
    .await;
    assert!(!first.next_page_token.is_empty());
    let mut client = app.client();

    for (request, field) in [
        (
            SearchProductsRequest {
                page: page(101, ""),
                ..Default::default()
            },
            "page_size",
        ),
        (
            SearchProductsRequest {
                page: page(1, "not-a-token!"),
                sort: ProductSort::PriceAsc as i32,
                ..Default::default()
            },
            "page_token",
        ),
        (
            SearchProductsRequest {
                page: page(1, &first.next_page_token),
                sort: ProductSort::Name as i32,
                ..Default::default()
            },
            "page_token",
        ),
        (
            SearchProductsRequest {
                q: "lamp".to_owned(),
                page: page(1, &first.next_page_token),
                sort: ProductSort::PriceAsc as i32,
                ..Default::default()
            },
            "page_token",
        ),
        (
            SearchProductsRequest {
                min_price: money(500, ""),
                max_price: money(100, ""),
                ..Default::default()
            },
            "min_price",
        ),
        (
            SearchProductsRequest {
                min_price: money(-1, ""),
                ..Default::default()
            },
            "min_price.amount",
        ),
        (
            SearchProductsRequest {
                max_price: money(1, "XYZ"),
                ..Default::default()
            },
            "max_price.currency",
        ),
        (
            SearchProductsRequest {
                q: "x".repeat(201),
                ..Default::default()
            },
            "q",
        ),
        (
            SearchProductsRequest {
                category: Some(search_products_request::Category::CategoryId(
                    "bad".to_owned(),
                )),
                ..Default::default()
            },
            "category_id",
        ),
        (
            SearchProductsRequest {
                sort: 99,
                ..Default::default()
            },
            "sort",
        ),
    ] {
        assert_status(
            client.search_products(anonymous(request)).await,
            Code::InvalidArgument,
            field,
        );
    }
    let default_size = search(&app, SearchProductsRequest::default()).await;
    assert_eq!(default_size.items.len(), 3, "page_size 0 means the default");
}

#[tokio::test]
async fn archived_products_are_searched_only_when_an_admin_asks() {
    let app = spawn_app().await;
    let shop = app.category("Shop", "shop", "").await;
    app.product(input("Lamp on sale", 100, &shop.id, 1)).await;
    let old = app.product(input("Lamp retired", 100, &shop.id, 1)).await;
    app.client()
        .archive_product(admin(ArchiveProductRequest {
            product_id: old.id.clone(),
        }))
        .await
        .expect("archived");
    let with_archived = SearchProductsRequest {
        q: "lamp".to_owned(),
        include_archived: true,
        sort: ProductSort::Name as i32,
        ..Default::default()
    };

    let public = search(&app, query("lamp")).await;
    let for_admin = app
        .client()
        .search_products(admin(with_archived.clone()))
        .await
        .expect("admins may")
        .into_inner();
    let for_customer = app.client().search_products(customer(with_archived)).await;

    assert_eq!(names(&public.items), ["Lamp on sale"]);
    assert_eq!(names(&for_admin.items), ["Lamp on sale", "Lamp retired"]);
    assert_status(for_customer, Code::InvalidArgument, "include_archived");
}
