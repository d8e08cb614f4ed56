//! `/v1/categories` and `/v1/products`: the public catalog and its search,
//! the admins' category and product maintenance, stock, and the bulk import
//! of NDJSON files, streamed line by line into the product service.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::json::Json;
use axum::Router;
use axum::body::{Body, BodyDataStream};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use futures::StreamExt as _;
use gocommerce_platform::validate::{self, text};
use gocommerce_platform::{Caller, ErrorCode, Role};
use gocommerce_proto::common::v1::{Money as MoneyPb, PageRequest};
use gocommerce_proto::product::v1 as pb;
use gocommerce_proto::product::v1::import_products_request::Item;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::authn::{Admin, Authenticated};
use crate::extract::{Path, Query, ValidJson, Validate, check};
use crate::problem::{FieldError, Problem};
use crate::routes::{MAX_PRICE, Money, Price, currency_schema, rfc3339};
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/categories", get(list_categories).post(create_category))
        .route(
            "/v1/categories/{id}",
            get(get_category)
                .patch(update_category)
                .delete(delete_category),
        )
        .route("/v1/products", get(search_products).post(create_product))
        .route("/v1/products/import", post(import_products))
        .route(
            "/v1/products/{id}",
            get(get_product)
                .patch(update_product)
                .delete(archive_product),
        )
        .route("/v1/products/{id}/stock", get(get_stock))
        .route("/v1/products/{id}/stock-adjustments", post(adjust_stock))
}

#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        list_categories, get_category, create_category, update_category, delete_category,
        search_products, get_product, create_product, update_product, archive_product,
        get_stock, adjust_stock, import_products
    ),
    components(schemas(
        CategoryView, CategoryList, CreateCategoryBody, UpdateCategoryBody, ProductView,
        ProductList, CreateProductBody, UpdateProductBody, ProductSort, StockView,
        StockAdjustmentBody, ImportLine, ImportSummaryView, ImportRejectionView, Money, Price
    )),
    tags(
        (name = "catalog", description = "Categories, products, search and stock"),
    )
)]
pub struct Api;

fn backend_error(status: tonic::Status) -> Problem {
    Problem::from_status(&status, "product")
}

/// The caller of a public route: the verified caller when a token is sent
/// (a bad token is still 401), otherwise an anonymous customer. Never no
/// caller at all, because the product service shows archived products to
/// callers without identity (its peers).
#[derive(Debug, Clone, Copy)]
pub struct Viewer(pub Caller);

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let Authenticated(caller) = Authenticated::from_request_parts(parts, state).await?;
            Ok(Self(caller))
        } else {
            Ok(Self(Caller {
                user_id: Uuid::nil(),
                role: Role::Customer,
            }))
        }
    }
}

/// `Some(None)` for an explicit JSON null, `None` (by `default`) when absent.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Lower-case letters and digits in groups joined by single hyphens, at most 100.
fn slug(raw: &str) -> Result<(), String> {
    let ok = (1..=100).contains(&raw.len())
        && raw.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 100 lower-case letters and digits, in groups joined by single hyphens, such as \"science-fiction\"".to_owned())
    }
}

// ---------------------------------------------------------------- categories

/// A node of the category tree.
#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryView {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub slug: String,
    /// Null for a root category.
    #[schema(format = Uuid)]
    pub parent_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<pb::Category> for CategoryView {
    fn from(category: pb::Category) -> Self {
        Self {
            id: category.id,
            name: category.name,
            slug: category.slug,
            parent_id: Some(category.parent_id).filter(|p| !p.is_empty()),
            created_at: category.created_at.map(rfc3339).unwrap_or_default(),
            updated_at: category.updated_at.map(rfc3339).unwrap_or_default(),
        }
    }
}

fn category_view(category: Option<pb::Category>) -> Result<CategoryView, Problem> {
    category
        .map(CategoryView::from)
        .ok_or_else(|| backend_error(tonic::Status::internal("empty category")))
}

/// The whole category tree as a flat list ordered by name; build the tree
/// from `parent_id`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryList {
    pub items: Vec<CategoryView>,
    /// Always null: the tree fits on one page.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCategoryBody {
    /// 1 to 100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "Science Fiction"
    )]
    pub name: String,
    /// Unique; lower-case letters and digits joined by single hyphens.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[a-z0-9]+(?:-[a-z0-9]+)*$",
        example = "science-fiction"
    )]
    pub slug: String,
    /// The parent category; absent or null for a root.
    #[schema(format = Uuid)]
    pub parent_id: Option<Uuid>,
}

impl Validate for CreateCategoryBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check(&mut errors, "name", text(&self.name, 100, true, false));
        check(&mut errors, "slug", slug(&self.slug));
        errors
    }
}

/// Changes to a category; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCategoryBody {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[a-z0-9]+(?:-[a-z0-9]+)*$"
    )]
    pub slug: Option<String>,
    /// The new parent; null makes the category a root.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent_id: Option<Option<Uuid>>,
}

impl Validate for UpdateCategoryBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(name) = &self.name {
            check(&mut errors, "name", text(name, 100, true, false));
        }
        if let Some(value) = &self.slug {
            check(&mut errors, "slug", slug(value));
        }
        errors
    }
}

/// Every category (public).
#[utoipa::path(
    get, path = "/v1/categories", tag = "catalog",
    responses((status = 200, description = "The category tree as a flat list", body = CategoryList))
)]
pub async fn list_categories(State(state): State<AppState>) -> Result<Json<CategoryList>, Problem> {
    let request = state.backends.request(pb::ListCategoriesRequest {}, None);
    let response = state
        .backends
        .product
        .clone()
        .list_categories(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    Ok(Json(CategoryList {
        items: response.items.into_iter().map(CategoryView::from).collect(),
        next_page_token: None,
    }))
}

/// One category (public).
#[utoipa::path(
    get, path = "/v1/categories/{id}", tag = "catalog",
    params(("id" = Uuid, Path, description = "The category")),
    responses(
        (status = 200, description = "The category", body = CategoryView),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such category", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_category(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<CategoryView>, Problem> {
    let request = state.backends.request(
        pb::GetCategoryRequest {
            category_id: id.to_string(),
        },
        None,
    );
    let response = state
        .backends
        .product
        .clone()
        .get_category(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    category_view(response.category).map(Json)
}

/// Admin: create a category.
#[utoipa::path(
    post, path = "/v1/categories", tag = "catalog",
    request_body = CreateCategoryBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The new category", body = CategoryView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such parent category", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The slug is taken", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_category(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ValidJson(body): ValidJson<CreateCategoryBody>,
) -> Result<(StatusCode, Json<CategoryView>), Problem> {
    let request = state.backends.request(
        pb::CreateCategoryRequest {
            name: body.name.trim().to_owned(),
            slug: body.slug,
            parent_id: body.parent_id.map(|p| p.to_string()).unwrap_or_default(),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .product
        .clone()
        .create_category(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    Ok((StatusCode::CREATED, Json(category_view(response.category)?)))
}

/// Admin: rename, re-slug or move a category.
#[utoipa::path(
    patch, path = "/v1/categories/{id}", tag = "catalog",
    params(("id" = Uuid, Path, description = "The category")),
    request_body = UpdateCategoryBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed category", body = CategoryView),
        (status = 400, description = "A bad field, or the new parent is the category itself or one of its descendants", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such category or parent", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The slug is taken", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_category(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<Uuid>,
    ValidJson(body): ValidJson<UpdateCategoryBody>,
) -> Result<Json<CategoryView>, Problem> {
    let request = state.backends.request(
        pb::UpdateCategoryRequest {
            category_id: id.to_string(),
            name: body.name.map(|n| n.trim().to_owned()),
            slug: body.slug,
            parent_id: body
                .parent_id
                .map(|p| p.map(|p| p.to_string()).unwrap_or_default()),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .product
        .clone()
        .update_category(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    category_view(response.category).map(Json)
}

/// Admin: delete a category that has no products and no subcategories.
#[utoipa::path(
    delete, path = "/v1/categories/{id}", tag = "catalog",
    params(("id" = Uuid, Path, description = "The category")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The category is deleted"),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such category", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The category still has products (archived ones included) or subcategories", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_category(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Problem> {
    let request = state.backends.request(
        pb::DeleteCategoryRequest {
            category_id: id.to_string(),
        },
        Some(&caller),
    );
    state
        .backends
        .product
        .clone()
        .delete_category(request)
        .await
        .map_err(backend_error)?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ products

/// A product.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    #[schema(format = Uuid)]
    pub id: String,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: Money,
    #[schema(format = Uuid)]
    pub category_id: String,
    /// Free-form attributes, exactly as given.
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// Absolute http(s) URLs in display order.
    pub images: Vec<String>,
    /// False once archived (admins only see those).
    pub active: bool,
    /// Whether any stock is available.
    pub in_stock: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<pb::Product> for ProductView {
    fn from(product: pb::Product) -> Self {
        Self {
            id: product.id,
            sku: product.sku,
            name: product.name,
            description: product.description,
            price: product.price.into(),
            category_id: product.category_id,
            attributes: serde_json::from_str(&product.attributes_json).unwrap_or_default(),
            images: product.images,
            active: product.active,
            in_stock: product.in_stock,
            created_at: product.created_at.map(rfc3339).unwrap_or_default(),
            updated_at: product.updated_at.map(rfc3339).unwrap_or_default(),
        }
    }
}

fn product_view(product: Option<pb::Product>) -> Result<ProductView, Problem> {
    product
        .map(ProductView::from)
        .ok_or_else(|| backend_error(tonic::Status::internal("empty product")))
}

/// A page of products.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductList {
    pub items: Vec<ProductView>,
    /// Pass as `page_token` (with the same query) for the next page; null on the last page.
    pub next_page_token: Option<String>,
}

const MAX_QUANTITY: i64 = 1_000_000_000;
const MAX_IMAGES: usize = 20;
const MAX_URL_CHARS: usize = 2048;

fn sku(raw: &str) -> Result<(), String> {
    let bytes = raw.as_bytes();
    let ok = (1..=64).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 64 letters, digits, dots, underscores and hyphens, starting with a letter or digit".to_owned())
    }
}

fn check_price(errors: &mut Vec<FieldError>, field: &str, price: &Price) {
    if !(0..=MAX_PRICE).contains(&price.amount) {
        errors.push(FieldError::new(
            &format!("{field}.amount"),
            format!("must be a whole number of minor units from 0 to {MAX_PRICE}"),
        ));
    }
    check(
        errors,
        &format!("{field}.currency"),
        validate::currency(&price.currency),
    );
}

/// An image URL: `http(s)://host[:port]` then printable ASCII, so the
/// documented pattern and this check agree exactly (no user info, no IPv6
/// literals: nothing a product image needs).
const IMAGE_URL_PATTERN: &str = r"^https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:[/?#][!-~]*)?$";

/// Images as every body takes them: `null`, like an absent field, is no
/// images on a new product and no change on an update.
fn images_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(IMAGE_URL_PATTERN))
                .max_length(Some(MAX_URL_CHARS)),
        )
        .max_items(Some(MAX_IMAGES))
        .build()
}

fn image_url_ok(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    url.len() <= MAX_URL_CHARS
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        && tail.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

fn check_images(errors: &mut Vec<FieldError>, images: &[String]) {
    if images.len() > MAX_IMAGES {
        errors.push(FieldError::new(
            "images",
            format!("must hold at most {MAX_IMAGES} URLs"),
        ));
    }
    for (index, url) in images.iter().enumerate() {
        if !image_url_ok(url) {
            errors.push(FieldError::new(
                &format!("images[{index}]"),
                format!(
                    "must be an absolute http(s) URL (http(s)://host[:port]/path, printable ASCII) of at most {MAX_URL_CHARS} characters"
                ),
            ));
        }
    }
}

fn attributes_json(attributes: Option<&Map<String, Value>>) -> String {
    attributes.map_or_else(|| "{}".to_owned(), |a| Value::Object(a.clone()).to_string())
}

fn money_pb(money: Price) -> MoneyPb {
    MoneyPb {
        amount: money.amount,
        currency: money.currency,
    }
}

/// A new product with its initial stock.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductBody {
    /// Unique stock-keeping unit.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        example = "BOOK-0001"
    )]
    pub sku: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "The Analytical Engine"
    )]
    pub name: String,
    /// At most 10,000 characters; empty when absent.
    #[serde(default)]
    #[schema(
        max_length = 10000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    pub description: String,
    /// `amount` from 0 to 10^12 minor units.
    pub price: Price,
    #[schema(format = Uuid)]
    pub category_id: Uuid,
    /// Free-form attributes (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
    /// At most 20 absolute http(s) URLs, in display order.
    #[schema(schema_with = images_schema)]
    pub images: Option<Vec<String>>,
    /// Initial on-hand quantity.
    #[serde(deserialize_with = "crate::extract::whole::deserialize")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub stock: i64,
}

impl Validate for CreateProductBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check(&mut errors, "sku", sku(&self.sku));
        check(&mut errors, "name", text(&self.name, 200, true, false));
        check(
            &mut errors,
            "description",
            text(&self.description, 10_000, false, true),
        );
        check_price(&mut errors, "price", &self.price);
        check_images(&mut errors, self.images.as_deref().unwrap_or_default());
        if !(0..=MAX_QUANTITY).contains(&self.stock) {
            errors.push(FieldError::new(
                "stock",
                format!("must be a whole number from 0 to {MAX_QUANTITY}"),
            ));
        }
        errors
    }
}

/// Changes to a product; absent (or null) fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductBody {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    )]
    pub sku: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    #[schema(
        max_length = 10000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    pub description: Option<String>,
    pub price: Option<Price>,
    #[schema(format = Uuid)]
    pub category_id: Option<Uuid>,
    /// Replaces the whole object.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
    /// Replaces the whole list; `[]` removes every image.
    #[schema(schema_with = images_schema)]
    pub images: Option<Vec<String>>,
    /// False archives the product, true restores it.
    pub active: Option<bool>,
}

impl Validate for UpdateProductBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(value) = &self.sku {
            check(&mut errors, "sku", sku(value));
        }
        if let Some(name) = &self.name {
            check(&mut errors, "name", text(name, 200, true, false));
        }
        if let Some(description) = &self.description {
            check(
                &mut errors,
                "description",
                text(description, 10_000, false, true),
            );
        }
        if let Some(price) = &self.price {
            check_price(&mut errors, "price", price);
        }
        if let Some(images) = &self.images {
            check_images(&mut errors, images);
        }
        errors
    }
}

/// How search results are ordered: `relevance` (the default with `q`),
/// `price_asc`, `price_desc`, `newest` (the default without `q`) or `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductSort {
    Relevance,
    PriceAsc,
    PriceDesc,
    Newest,
    Name,
}

impl ProductSort {
    fn to_proto(self) -> pb::ProductSort {
        match self {
            Self::Relevance => pb::ProductSort::Relevance,
            Self::PriceAsc => pb::ProductSort::PriceAsc,
            Self::PriceDesc => pb::ProductSort::PriceDesc,
            Self::Newest => pb::ProductSort::Newest,
            Self::Name => pb::ProductSort::Name,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Search text over name and description (web search syntax: words,
    /// "quoted phrases", -excluded).
    #[param(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub q: Option<String>,
    /// A category id or slug; its subcategories are included.
    #[param(
        max_length = 100,
        pattern = "^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[a-z0-9]+(?:-[a-z0-9]+)*)$"
    )]
    pub category: Option<String>,
    /// Lowest price in minor units, inclusive. Above `max_price`, nothing matches.
    #[param(minimum = 0)]
    pub min_price: Option<i64>,
    /// Highest price in minor units, inclusive.
    #[param(minimum = 0)]
    pub max_price: Option<i64>,
    /// Only products priced in this ISO 4217 currency.
    #[param(
        schema_with = currency_schema
    )]
    pub currency: Option<String>,
    /// True: only products in stock; false: only those out of stock.
    pub in_stock: Option<bool>,
    pub sort: Option<ProductSort>,
    /// Admins only: archived products too.
    pub include_archived: Option<bool>,
    /// 1 to 100; 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
    /// The `next_page_token` of the previous page of the same search.
    #[param(max_length = 200)]
    pub page_token: Option<String>,
}

/// A hyphenated UUID names a category by id; anything else is a slug.
fn category_filter(raw: &str) -> pb::search_products_request::Category {
    use pb::search_products_request::Category;
    if raw.len() == 36 && Uuid::try_parse(raw).is_ok() {
        Category::CategoryId(raw.to_ascii_lowercase())
    } else {
        Category::CategorySlug(raw.to_owned())
    }
}

impl Validate for SearchQuery {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(q) = &self.q {
            check(&mut errors, "q", text(q, 200, false, false));
        }
        if let Some(category) = &self.category {
            let is_id = category.len() == 36 && Uuid::try_parse(category).is_ok();
            if !is_id && slug(category).is_err() {
                errors.push(FieldError::new(
                    "category",
                    "must be a category id (UUID) or slug",
                ));
            }
        }
        for (field, bound) in [("min_price", self.min_price), ("max_price", self.max_price)] {
            if bound.is_some_and(|b| b < 0) {
                errors.push(FieldError::new(field, "must not be negative"));
            }
        }
        if let Some(currency) = &self.currency {
            check(&mut errors, "currency", validate::currency(currency));
        }
        if self
            .page_size
            .is_some_and(|size| !(1..=100).contains(&size))
        {
            errors.push(FieldError::new("page_size", "must be 1 to 100"));
        }
        if self
            .page_token
            .as_ref()
            .is_some_and(|token| token.len() > 200)
        {
            errors.push(FieldError::new(
                "page_token",
                "must be at most 200 characters",
            ));
        }
        errors
    }
}

/// Search the catalog (public): full text, filters, sorting and pages.
#[utoipa::path(
    get, path = "/v1/products", tag = "catalog",
    params(SearchQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of matching products", body = ProductList),
        (status = 400, description = "A bad parameter, or a malformed page token or one from another search", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "An access token was sent and is not valid", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "include_archived from a caller who is not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such category", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn search_products(
    State(state): State<AppState>,
    Viewer(caller): Viewer,
    Query(query): Query<SearchQuery>,
) -> Result<Json<ProductList>, Problem> {
    let include_archived = query.include_archived.unwrap_or(false);
    if include_archived && !caller.is_admin() {
        return Err(Problem::new(
            ErrorCode::PermissionDenied,
            "include_archived is for admins only",
        ));
    }
    if query
        .min_price
        .zip(query.max_price)
        .is_some_and(|(min, max)| min > max)
    {
        // An empty range is a valid question with an empty answer.
        return Ok(Json(ProductList {
            items: Vec::new(),
            next_page_token: None,
        }));
    }
    let currency = query.currency.unwrap_or_default();
    let bound = |amount: Option<i64>, default: Option<i64>| {
        amount.or(default).map(|amount| MoneyPb {
            amount,
            currency: currency.clone(),
        })
    };
    // A currency alone still filters: as a lower bound of zero.
    let min_default = (!currency.is_empty()).then_some(0);
    let request = state.backends.request(
        pb::SearchProductsRequest {
            q: query.q.unwrap_or_default(),
            category: query.category.as_deref().map(category_filter),
            min_price: bound(query.min_price, min_default),
            max_price: bound(query.max_price, None),
            in_stock: query.in_stock,
            sort: query
                .sort
                .map_or(pb::ProductSort::Unspecified, ProductSort::to_proto)
                as i32,
            page: Some(PageRequest {
                page_size: query.page_size.unwrap_or(0),
                page_token: query.page_token.unwrap_or_default(),
            }),
            include_archived,
        },
        Some(&caller),
    );
    let response = state
        .backends
        .product
        .clone()
        .search_products(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    Ok(Json(ProductList {
        items: response.items.into_iter().map(ProductView::from).collect(),
        next_page_token: Some(response.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// One product (public; archived ones only for admins).
#[utoipa::path(
    get, path = "/v1/products/{id}", tag = "catalog",
    params(("id" = Uuid, Path, description = "The product")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "An access token was sent and is not valid", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product, or it is archived", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_product(
    State(state): State<AppState>,
    Viewer(caller): Viewer,
    Path(id): Path<Uuid>,
) -> Result<Json<ProductView>, Problem> {
    let request = state.backends.request(
        pb::GetProductRequest {
            product_id: id.to_string(),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .product
        .clone()
        .get_product(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    product_view(response.product).map(Json)
}

/// Admin: create a product with its initial stock.
#[utoipa::path(
    post, path = "/v1/products", tag = "catalog",
    request_body = CreateProductBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The new product", body = ProductView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such category", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The SKU is taken", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_product(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ValidJson(body): ValidJson<CreateProductBody>,
) -> Result<(StatusCode, Json<ProductView>), Problem> {
    let request = state.backends.request(
        pb::CreateProductRequest {
            product: Some(pb::ProductInput {
                sku: body.sku,
                name: body.name.trim().to_owned(),
                description: body.description,
                price: Some(money_pb(body.price)),
                category: Some(pb::product_input::Category::CategoryId(
                    body.category_id.to_string(),
                )),
                attributes_json: attributes_json(body.attributes.as_ref()),
                images: body.images.unwrap_or_default(),
                stock: body.stock,
                archived: false,
            }),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .product
        .clone()
        .create_product(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    Ok((StatusCode::CREATED, Json(product_view(response.product)?)))
}

/// Admin: change a product; `active: false` archives it, `true` restores it.
#[utoipa::path(
    patch, path = "/v1/products/{id}", tag = "catalog",
    params(("id" = Uuid, Path, description = "The product")),
    request_body = UpdateProductBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed product", body = ProductView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product or category", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The SKU is taken", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_product(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<Uuid>,
    ValidJson(body): ValidJson<UpdateProductBody>,
) -> Result<Json<ProductView>, Problem> {
    let request = state.backends.request(
        pb::UpdateProductRequest {
            product_id: id.to_string(),
            sku: body.sku,
            name: body.name.map(|n| n.trim().to_owned()),
            description: body.description,
            price: body.price.map(money_pb),
            category_id: body.category_id.map(|c| c.to_string()),
            attributes_json: body.attributes.as_ref().map(|a| attributes_json(Some(a))),
            images: body.images.map(|urls| pb::ImageList { urls }),
            active: body.active,
        },
        Some(&caller),
    );
    let response = state
        .backends
        .product
        .clone()
        .update_product(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    product_view(response.product).map(Json)
}

/// Admin: archive a product. It is hidden from customers but kept, because
/// orders refer to it; `PATCH` with `active: true` restores it. Idempotent.
#[utoipa::path(
    delete, path = "/v1/products/{id}", tag = "catalog",
    params(("id" = Uuid, Path, description = "The product")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The product is archived"),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn archive_product(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Problem> {
    let request = state.backends.request(
        pb::ArchiveProductRequest {
            product_id: id.to_string(),
        },
        Some(&caller),
    );
    state
        .backends
        .product
        .clone()
        .archive_product(request)
        .await
        .map_err(backend_error)?;
    Ok(StatusCode::NO_CONTENT)
}

// --------------------------------------------------------------------- stock

/// Stock of one product.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockView {
    #[schema(format = Uuid)]
    pub product_id: String,
    /// Physically held.
    pub on_hand: i64,
    /// Held for orders not yet paid or cancelled.
    pub reserved: i64,
    /// `on_hand - reserved`; never below zero.
    pub available: i64,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

fn stock_view(stock: Option<pb::Stock>) -> Result<StockView, Problem> {
    let stock = stock.ok_or_else(|| backend_error(tonic::Status::internal("empty stock")))?;
    Ok(StockView {
        product_id: stock.product_id,
        on_hand: stock.on_hand,
        reserved: stock.reserved,
        available: stock.available,
        updated_at: stock.updated_at.map(rfc3339),
    })
}

/// Admin: a product's stock.
#[utoipa::path(
    get, path = "/v1/products/{id}/stock", tag = "catalog",
    params(("id" = Uuid, Path, description = "The product")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "On-hand, reserved and available quantities", body = StockView),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_stock(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<Uuid>,
) -> Result<Json<StockView>, Problem> {
    let request = state.backends.request(
        pb::GetStockRequest {
            product_id: id.to_string(),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .product
        .clone()
        .get_stock(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    stock_view(response.stock).map(Json)
}

/// A non-zero whole number within ±10^9: the two ranges, since OpenAPI has no
/// "not zero" a fuzzer understands.
fn delta_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{
        KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
    };
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(min))
            .maximum(Some(max))
    };
    let one_of = OneOfBuilder::new()
        .item(range(-MAX_QUANTITY, -1))
        .item(range(1, MAX_QUANTITY))
        .description(Some(
            "Added to the on-hand quantity; negative removes. Not zero.",
        ))
        .build();
    Schema::OneOf(one_of)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustmentBody {
    /// Added to the on-hand quantity; negative removes. Not zero.
    #[serde(deserialize_with = "crate::extract::whole::deserialize")]
    #[schema(schema_with = delta_schema, example = 10)]
    pub delta: i64,
    /// Why, for the ledger.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "stocktake"
    )]
    pub reason: String,
}

impl Validate for StockAdjustmentBody {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.delta == 0 || !(-MAX_QUANTITY..=MAX_QUANTITY).contains(&self.delta) {
            errors.push(FieldError::new(
                "delta",
                format!("must be a non-zero whole number from -{MAX_QUANTITY} to {MAX_QUANTITY}"),
            ));
        }
        check(&mut errors, "reason", text(&self.reason, 500, true, false));
        errors
    }
}

/// Admin: add or remove stock; recorded in the product's ledger.
#[utoipa::path(
    post, path = "/v1/products/{id}/stock-adjustments", tag = "catalog",
    params(("id" = Uuid, Path, description = "The product")),
    request_body = StockAdjustmentBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new stock", body = StockView),
        (status = 400, description = "A bad field, or available stock would go below zero (nothing changes)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn adjust_stock(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<Uuid>,
    ValidJson(body): ValidJson<StockAdjustmentBody>,
) -> Result<Json<StockView>, Problem> {
    let request = state.backends.request(
        pb::AdjustStockRequest {
            product_id: id.to_string(),
            delta: body.delta,
            reason: body.reason.trim().to_owned(),
        },
        Some(&caller),
    );
    let response = state
        .backends
        .product
        .clone()
        .adjust_stock(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    stock_view(response.stock).map(Json)
}

// -------------------------------------------------------------------- import

/// The largest import body, and the longest line in it.
const IMPORT_MAX_BYTES: u64 = 64 * 1024 * 1024;
const IMPORT_MAX_LINE_BYTES: usize = 1024 * 1024;
/// An import writes each product in its own transaction: 10,000 lines need
/// far longer than an ordinary call.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(300);
const NDJSON: &str = "application/x-ndjson";

/// One line of an import file: a product, created or (by SKU) updated.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportLine {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        example = "BOOK-0001"
    )]
    pub sku: String,
    #[schema(min_length = 1, max_length = 200, example = "The Analytical Engine")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 10000)]
    pub description: String,
    pub price: Price,
    /// The category by id; give this or `category_slug`.
    #[schema(format = Uuid)]
    pub category_id: Option<Uuid>,
    /// The category by slug; give this or `category_id`.
    #[schema(example = "science-fiction")]
    pub category_slug: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
    #[schema(schema_with = images_schema)]
    pub images: Option<Vec<String>>,
    /// Initial stock of a new product (0 when absent); ignored on updates.
    #[serde(default, deserialize_with = "crate::extract::whole::option")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub stock: Option<i64>,
    /// False: archived (created archived, or archived on update). True when absent.
    pub active: Option<bool>,
}

impl Validate for ImportLine {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check(&mut errors, "sku", sku(&self.sku));
        check(&mut errors, "name", text(&self.name, 200, true, false));
        check(
            &mut errors,
            "description",
            text(&self.description, 10_000, false, true),
        );
        check_price(&mut errors, "price", &self.price);
        match (&self.category_id, &self.category_slug) {
            (Some(_), None) => {}
            (None, Some(value)) => {
                check(&mut errors, "category_slug", slug(value));
            }
            _ => errors.push(FieldError::new(
                "category_id",
                "give exactly one of category_id and category_slug",
            )),
        }
        check_images(&mut errors, self.images.as_deref().unwrap_or_default());
        if self.stock.is_some_and(|s| !(0..=MAX_QUANTITY).contains(&s)) {
            errors.push(FieldError::new(
                "stock",
                format!("must be a whole number from 0 to {MAX_QUANTITY}"),
            ));
        }
        errors
    }
}

impl ImportLine {
    fn into_input(self) -> pb::ProductInput {
        let category = match (self.category_id, self.category_slug) {
            (Some(id), _) => pb::product_input::Category::CategoryId(id.to_string()),
            (None, slug) => pb::product_input::Category::CategorySlug(slug.unwrap_or_default()),
        };
        pb::ProductInput {
            sku: self.sku,
            name: self.name.trim().to_owned(),
            description: self.description,
            price: Some(money_pb(self.price)),
            category: Some(category),
            attributes_json: attributes_json(self.attributes.as_ref()),
            images: self.images.unwrap_or_default(),
            stock: self.stock.unwrap_or(0),
            archived: !self.active.unwrap_or(true),
        }
    }
}

/// A line that was not imported.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportRejectionView {
    /// 1-based line number in the body.
    pub line: u32,
    /// What was wrong with it.
    pub reason: String,
    /// The line's SKU, when it could be read.
    pub sku: Option<String>,
}

/// What an import did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportSummaryView {
    pub created: u32,
    pub updated: u32,
    /// In line order.
    pub rejected: Vec<ImportRejectionView>,
}

/// What a line of the body becomes: a product, a rejection the service
/// reports in its summary, or nothing for a blank line.
fn parse_line(bytes: &[u8]) -> Option<Item> {
    let Ok(line) = std::str::from_utf8(bytes) else {
        return Some(Item::ParseError("the line is not valid UTF-8".to_owned()));
    };
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let product = match serde_json::from_str::<ImportLine>(line) {
        Ok(product) => product,
        Err(e) => return Some(Item::ParseError(format!("not a valid product line: {e}"))),
    };
    let errors = product.validate();
    if errors.is_empty() {
        Some(Item::Product(product.into_input()))
    } else {
        let reasons: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        Some(Item::ParseError(reasons.join("; ")))
    }
}

/// Splits the request body into import messages as it arrives, one per
/// non-blank line, so a large file is never held in memory whole.
struct LineSplitter {
    body: BodyDataStream,
    partial: Vec<u8>,
    /// The current line passed the line limit; the rest of it is skipped.
    too_long: bool,
    line: u32,
    read: u64,
    ready: VecDeque<pb::ImportProductsRequest>,
    finished: bool,
    /// Why the body stopped early, for the response.
    failure: Arc<Mutex<Option<Problem>>>,
}

impl LineSplitter {
    fn push(&mut self, mut chunk: &[u8]) {
        while let Some(at) = chunk.iter().position(|b| *b == b'\n') {
            self.append(&chunk[..at]);
            self.end_line();
            chunk = &chunk[at + 1..];
        }
        self.append(chunk);
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.too_long {
            return;
        }
        if self.partial.len() + bytes.len() > IMPORT_MAX_LINE_BYTES {
            self.too_long = true;
            self.partial = Vec::new();
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self) {
        self.line = self.line.saturating_add(1);
        let item = if self.too_long {
            Some(Item::ParseError(format!(
                "the line is longer than {IMPORT_MAX_LINE_BYTES} bytes"
            )))
        } else {
            parse_line(&self.partial)
        };
        self.partial.clear();
        self.too_long = false;
        if let Some(item) = item {
            self.ready.push_back(pb::ImportProductsRequest {
                line: self.line,
                item: Some(item),
            });
        }
    }

    fn fail(&mut self, problem: Problem) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(problem);
        self.ready.clear();
        self.finished = true;
    }

    async fn next_message(mut self) -> Option<(pb::ImportProductsRequest, Self)> {
        loop {
            if let Some(message) = self.ready.pop_front() {
                return Some((message, self));
            }
            if self.finished {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    self.read += chunk.len() as u64;
                    if self.read > IMPORT_MAX_BYTES {
                        self.fail(too_large());
                    } else {
                        self.push(&chunk);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "failed to read an import body");
                    self.fail(Problem::new(
                        ErrorCode::InvalidArgument,
                        "the body could not be read to its end",
                    ));
                }
                None => {
                    if self.too_long || !self.partial.is_empty() {
                        self.end_line();
                    }
                    self.finished = true;
                }
            }
        }
    }
}

fn too_large() -> Problem {
    Problem::with_status(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "Payload too large",
        format!(
            "an import body may be at most {} MiB; split the file",
            IMPORT_MAX_BYTES / 1024 / 1024
        ),
    )
}

/// Admin: create or update (by SKU) many products from an NDJSON body, one
/// `ImportLine` object per line, up to 64 MiB. Bad lines do not stop the
/// import: each is reported with its line number, and the good ones are
/// written, each on its own.
#[utoipa::path(
    post, path = "/v1/products/import", tag = "catalog",
    request_body(content = String, content_type = "application/x-ndjson", description = "One ImportLine JSON object per line; blank lines are skipped"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many products were created and updated, and which lines were rejected and why", body = ImportSummaryView),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 64 MiB (lines before the limit may have been imported)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/x-ndjson", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn import_products(
    State(state): State<AppState>,
    Admin(caller): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportSummaryView>, Problem> {
    let is_ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(NDJSON));
    if !is_ndjson {
        return Err(Problem::with_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "the body must be NDJSON with Content-Type: application/x-ndjson",
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > IMPORT_MAX_BYTES) {
        return Err(too_large());
    }
    let failure = Arc::new(Mutex::new(None));
    let splitter = LineSplitter {
        body: body.into_data_stream(),
        partial: Vec::new(),
        too_long: false,
        line: 0,
        read: 0,
        ready: VecDeque::new(),
        finished: false,
        failure: failure.clone(),
    };
    let messages = futures::stream::unfold(splitter, LineSplitter::next_message);
    let mut request = state.backends.request(messages, Some(&caller));
    request.set_timeout(state.backends.timeout().max(IMPORT_TIMEOUT));
    let response = state
        .backends
        .product
        .clone()
        .import_products(request)
        .await
        .map_err(backend_error)?
        .into_inner();
    if let Some(problem) = failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        return Err(problem);
    }
    Ok(Json(ImportSummaryView {
        created: response.created,
        updated: response.updated,
        rejected: response
            .rejected
            .into_iter()
            .map(|r| ImportRejectionView {
                line: r.line,
                reason: r.reason,
                sku: Some(r.sku).filter(|s| !s.is_empty()),
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splitter() -> LineSplitter {
        LineSplitter {
            body: Body::empty().into_data_stream(),
            partial: Vec::new(),
            too_long: false,
            line: 0,
            read: 0,
            ready: VecDeque::new(),
            finished: false,
            failure: Arc::default(),
        }
    }

    const GOOD: &str = r#"{"sku":"A-1","name":"A","price":{"amount":100,"currency":"USD"},"category_slug":"books"}"#;

    #[test]
    fn image_urls_are_absolute_http_urls_of_printable_ascii() {
        for good in [
            "https://img.example.com/a.png",
            "http://cdn-1.example.com:8080/x?y=1#z",
            "https://example.com",
        ] {
            assert!(image_url_ok(good), "{good}");
        }
        for bad in [
            "",
            "ftp://example.com/a.png",
            "https://",
            "https:///a.png",
            "https://user@example.com/a.png",
            "https://example.com:/a.png",
            "https://example.com/a b.png",
            "https://example.com/\u{85}",
            "HTTPS://example.com/a.png",
        ] {
            assert!(!image_url_ok(bad), "{bad}");
        }
    }

    #[test]
    fn the_documented_currency_pattern_lists_exactly_the_accepted_codes() {
        assert_eq!(
            crate::routes::CURRENCY_PATTERN,
            format!("^(?:{})$", validate::CURRENCIES.join("|"))
        );
    }

    #[test]
    fn lines_split_across_chunks_keep_their_line_numbers() {
        let mut lines = splitter();
        let body = format!("{GOOD}\n\nnot json\r\n{GOOD}");
        let (first, second) = body.as_bytes().split_at(30);

        lines.push(first);
        lines.push(second);
        lines.end_line();

        let got: Vec<(u32, bool)> = lines
            .ready
            .iter()
            .map(|m| (m.line, matches!(m.item, Some(Item::Product(_)))))
            .collect();
        assert_eq!(got, vec![(1, true), (3, false), (4, true)]);
    }

    #[test]
    fn an_invalid_line_becomes_a_rejection_naming_the_field() {
        let line = r#"{"sku":"A-1","name":"A","price":{"amount":-1,"currency":"XYZ"},"category_slug":"books"}"#;

        let item = parse_line(line.as_bytes());

        let Some(Item::ParseError(reason)) = item else {
            panic!("expected a rejection, got {item:?}");
        };
        assert!(reason.contains("price.amount"), "{reason}");
        assert!(reason.contains("price.currency"), "{reason}");
    }

    #[test]
    fn an_overlong_line_is_rejected_without_being_kept() {
        let mut lines = splitter();

        lines.push(&vec![b'x'; IMPORT_MAX_LINE_BYTES + 1]);
        lines.push(format!("\n{GOOD}\n").as_bytes());

        assert!(matches!(
            lines.ready[0].item,
            Some(Item::ParseError(ref reason)) if reason.contains("longer")
        ));
        assert_eq!(lines.ready[1].line, 2);
        assert!(lines.partial.is_empty());
    }

    #[test]
    fn slugs_are_lower_case_groups_joined_by_single_hyphens() {
        for good in ["books", "science-fiction", "a1-b2"] {
            assert!(slug(good).is_ok(), "{good}");
        }
        for bad in ["", "Books", "-books", "books-", "sci--fi", "sci fi"] {
            assert!(slug(bad).is_err(), "{bad:?}");
        }
    }
}
