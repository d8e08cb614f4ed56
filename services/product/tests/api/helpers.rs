//! Starts the product service on a free port with a fresh database, and
//! speaks to it as an admin, a customer, an anonymous visitor or a peer.

use std::collections::HashMap;

use gocommerce_platform::{Caller, Readiness, Role, Shutdown};
use gocommerce_product::{Application, ProductConfig};
use gocommerce_proto::common::v1::Money;
use gocommerce_proto::product::v1::product_service_client::ProductServiceClient;
use gocommerce_proto::product::v1::{
    Category, CreateCategoryRequest, CreateProductRequest, GetProductRequest, GetStockRequest,
    Product, ProductInput, Reservation, ReservationItem, ReserveStockRequest, Stock, product_input,
};
use tonic::transport::Channel;
use uuid::Uuid;

pub struct TestApp {
    pub client: ProductServiceClient<Channel>,
    pub pool: sqlx::PgPool,
    pub database: String,
    shutdown: Shutdown,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
        gocommerce_platform::testing::drop_databases(vec![self.database.clone()]);
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// [`spawn_app`] with these settings besides (or instead of) the defaults.
pub async fn spawn_app_with(settings: &[(&str, &str)]) -> TestApp {
    let database = format!("gct_product_{}", Uuid::new_v4().simple());
    let env: HashMap<String, String> = [
        ("PRODUCT_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        (
            "PRODUCT_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:5432/{database}"),
        ),
        ("DATABASE_MAX_CONNECTIONS", "8".to_owned()),
    ]
    .into_iter()
    .chain(settings.iter().map(|&(k, v)| (k, v.to_owned())))
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let shutdown = Shutdown::new();
    let app = Application::build(
        ProductConfig::from_env(&env).expect("config"),
        Readiness::new(shutdown.clone()),
    )
    .await
    .expect("product service starts");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    let client = ProductServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connects");
    let pool = sqlx::PgPool::connect(&env["PRODUCT_DATABASE_URL"])
        .await
        .expect("database");
    TestApp {
        client,
        pool,
        database,
        shutdown,
    }
}

fn with_role<T>(role: Role, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    Caller {
        user_id: Uuid::new_v4(),
        role,
    }
    .write_to(request.metadata_mut());
    request
}

/// A request from an admin, as the gateway sends it.
pub fn admin<T>(message: T) -> tonic::Request<T> {
    with_role(Role::Admin, message)
}

/// A request from a signed-in customer, as the gateway sends it.
pub fn customer<T>(message: T) -> tonic::Request<T> {
    with_role(Role::Customer, message)
}

/// A request without caller metadata: an anonymous visitor through the
/// gateway, or a peer service.
pub fn anonymous<T>(message: T) -> tonic::Request<T> {
    tonic::Request::new(message)
}

pub fn money(amount: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount,
        currency: currency.to_owned(),
    })
}

/// A valid product input with a unique SKU.
pub fn input(name: &str, price: i64, category_id: &str, stock: i64) -> ProductInput {
    ProductInput {
        sku: format!("SKU-{}", Uuid::new_v4().simple()),
        name: name.to_owned(),
        description: String::new(),
        price: money(price, "USD"),
        category: Some(product_input::Category::CategoryId(category_id.to_owned())),
        attributes_json: String::new(),
        images: vec![],
        stock,
        archived: false,
    }
}

pub fn item(product_id: &str, quantity: i32) -> ReservationItem {
    ReservationItem {
        product_id: product_id.to_owned(),
        quantity,
    }
}

impl TestApp {
    pub fn client(&self) -> ProductServiceClient<Channel> {
        self.client.clone()
    }

    /// GetProduct as an anonymous visitor sees it.
    pub async fn view(&self, id: &str) -> Result<Product, tonic::Status> {
        self.client()
            .get_product(anonymous(GetProductRequest {
                product_id: id.to_owned(),
            }))
            .await
            .map(|r| r.into_inner().product.expect("product"))
    }

    pub async fn category(&self, name: &str, slug: &str, parent_id: &str) -> Category {
        self.client()
            .create_category(admin(CreateCategoryRequest {
                name: name.to_owned(),
                slug: slug.to_owned(),
                parent_id: parent_id.to_owned(),
            }))
            .await
            .expect("category created")
            .into_inner()
            .category
            .expect("category")
    }

    pub async fn create(&self, input: ProductInput) -> Result<Product, tonic::Status> {
        self.client()
            .create_product(admin(CreateProductRequest {
                product: Some(input),
            }))
            .await
            .map(|r| r.into_inner().product.expect("product"))
    }

    pub async fn product(&self, input: ProductInput) -> Product {
        self.create(input).await.expect("product created")
    }

    pub async fn stock(&self, product_id: &str) -> Stock {
        self.client()
            .get_stock(admin(GetStockRequest {
                product_id: product_id.to_owned(),
            }))
            .await
            .expect("stock")
            .into_inner()
            .stock
            .expect("stock")
    }

    /// ReserveStock as the order service calls it: without caller metadata.
    pub async fn reserve(
        &self,
        order_id: Uuid,
        items: Vec<ReservationItem>,
    ) -> Result<Reservation, tonic::Status> {
        self.client()
            .reserve_stock(anonymous(ReserveStockRequest {
                order_id: order_id.to_string(),
                items,
            }))
            .await
            .map(|r| r.into_inner().reservation.expect("reservation"))
    }
}

/// Asserts a gRPC error's code and that its message mentions `text`.
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    text: &str,
) {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().contains(text),
        "{:?} should mention {text:?}",
        status.message()
    );
}
