//! Every query of the product service; Postgres error codes become domain
//! errors here and nowhere else.

use chrono::{DateTime, Utc};
use std::sync::LazyLock;

use gocommerce_platform::db::{codes, constraint, sqlstate};
use gocommerce_platform::pipeline::{self, Pipeline};
use gocommerce_platform::row::Columns;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::error::ProductError;
use crate::input::{CategoryRef, NewProduct};
use crate::search::{Cursor, SearchQuery, Sort};

/// Maps the database errors a request can cause to what the client did wrong.
/// The functions that use it record their errors at INFO: a duplicate SKU is
/// the client's mistake, and what is internal is logged at ERROR where the
/// gRPC answer is made (`platform::error::internal`).
fn map_error(error: sqlx::Error) -> ProductError {
    let state = sqlstate(&error);
    match (state.as_deref(), constraint(&error)) {
        (Some(codes::UNIQUE_VIOLATION), Some("categories_slug_key")) => {
            ProductError::AlreadyExists("slug: another category has this slug".to_owned())
        }
        (Some(codes::UNIQUE_VIOLATION), Some("products_sku_key")) => {
            ProductError::AlreadyExists("sku: another product has this SKU".to_owned())
        }
        (Some(codes::FOREIGN_KEY_VIOLATION), Some("categories_parent_id_fkey")) => {
            ProductError::NotFound("parent_id: no such category".to_owned())
        }
        (Some(codes::FOREIGN_KEY_VIOLATION), Some("products_category_id_fkey")) => {
            ProductError::NotFound("category_id: no such category".to_owned())
        }
        (Some(codes::CHECK_VIOLATION), Some("stock_available_not_negative")) => {
            ProductError::FailedPrecondition("not enough available stock".to_owned())
        }
        (Some(codes::CHECK_VIOLATION), Some("categories_not_own_parent")) => {
            ProductError::invalid("parent_id: a category cannot be its own parent")
        }
        // 22003 numeric_value_out_of_range: a stock sum beyond bigint.
        (Some("22003"), _) => ProductError::invalid("delta: the stock would be out of range"),
        _ => ProductError::Database(error),
    }
}

// ---------------------------------------------------------------- categories

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CategoryRow {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub parent_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const CATEGORY: &str = "id, name, slug, parent_id, created_at, updated_at";

#[tracing::instrument(skip_all, fields(category_id = %id), err(level = "info"))]
pub async fn insert_category(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
    slug: &str,
    parent_id: Option<Uuid>,
) -> Result<CategoryRow, ProductError> {
    sqlx::query_as(&format!(
        "INSERT INTO categories (id, name, slug, parent_id) VALUES ($1, $2, $3, $4) RETURNING {CATEGORY}"
    ))
    .bind(id)
    .bind(name)
    .bind(slug)
    .bind(parent_id)
    .fetch_one(conn)
    .await
    .map_err(map_error)
}

#[tracing::instrument(skip_all, fields(category_id = %id), err)]
pub async fn find_category(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<CategoryRow>, ProductError> {
    Ok(
        sqlx::query_as(&format!("SELECT {CATEGORY} FROM categories WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

#[tracing::instrument(skip_all, fields(category_id = %id), err)]
pub async fn lock_category(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<CategoryRow>, ProductError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {CATEGORY} FROM categories WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

#[tracing::instrument(skip_all, err)]
pub async fn list_categories(conn: &mut PgConnection) -> Result<Vec<CategoryRow>, ProductError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {CATEGORY} FROM categories ORDER BY name, id"
    ))
    .fetch_all(conn)
    .await?)
}

/// Serialises changes of the tree's shape, so that two moves racing each
/// other cannot together build a cycle that neither sees alone.
#[tracing::instrument(skip_all, err)]
pub async fn lock_tree(conn: &mut PgConnection) -> Result<(), ProductError> {
    sqlx::query("SELECT pg_advisory_xact_lock(7370651216)")
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether `candidate` is `id` or one of its descendants.
#[tracing::instrument(skip_all, fields(category_id = %id), err)]
pub async fn is_in_subtree(
    conn: &mut PgConnection,
    id: Uuid,
    candidate: Uuid,
) -> Result<bool, ProductError> {
    Ok(sqlx::query_scalar(
        "WITH RECURSIVE subtree (id) AS ( \
           SELECT $1::uuid UNION SELECT c.id FROM categories c JOIN subtree s ON c.parent_id = s.id) \
         SELECT EXISTS (SELECT 1 FROM subtree WHERE id = $2)",
    )
    .bind(id)
    .bind(candidate)
    .fetch_one(conn)
    .await?)
}

#[tracing::instrument(skip_all, fields(category_id = %id), err(level = "info"))]
pub async fn update_category(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
    slug: &str,
    parent_id: Option<Uuid>,
) -> Result<CategoryRow, ProductError> {
    sqlx::query_as(&format!(
        "UPDATE categories SET name = $2, slug = $3, parent_id = $4, updated_at = now() \
         WHERE id = $1 RETURNING {CATEGORY}"
    ))
    .bind(id)
    .bind(name)
    .bind(slug)
    .bind(parent_id)
    .fetch_one(conn)
    .await
    .map_err(map_error)
}

/// Whether the category has products and whether it has subcategories.
#[tracing::instrument(skip_all, fields(category_id = %id), err)]
pub async fn category_usage(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<(bool, bool), ProductError> {
    Ok(sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM products WHERE category_id = $1), \
                EXISTS (SELECT 1 FROM categories WHERE parent_id = $1)",
    )
    .bind(id)
    .fetch_one(conn)
    .await?)
}

#[tracing::instrument(skip_all, fields(category_id = %id), err)]
pub async fn delete_category(conn: &mut PgConnection, id: Uuid) -> Result<bool, ProductError> {
    let deleted = sqlx::query("DELETE FROM categories WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map_err(|e| match sqlstate(&e).as_deref() {
            // A product or subcategory arrived after the caller's check.
            Some(codes::FOREIGN_KEY_VIOLATION) => ProductError::FailedPrecondition(
                "the category has products or subcategories".to_owned(),
            ),
            _ => ProductError::Database(e),
        })?;
    Ok(deleted.rows_affected() == 1)
}

/// The id of the category a product names, if it exists.
#[tracing::instrument(skip_all, err)]
pub async fn resolve_category(
    conn: &mut PgConnection,
    category: &CategoryRef,
) -> Result<Option<Uuid>, ProductError> {
    let query = match category {
        CategoryRef::Id(id) => {
            sqlx::query_scalar("SELECT id FROM categories WHERE id = $1").bind(*id)
        }
        CategoryRef::Slug(slug) => {
            sqlx::query_scalar("SELECT id FROM categories WHERE slug = $1").bind(slug.clone())
        }
    };
    Ok(query.fetch_optional(conn).await?)
}

/// Resolves many references at once: the ids of those that exist.
#[tracing::instrument(skip_all, err)]
pub async fn resolve_categories(
    conn: &mut PgConnection,
    ids: &[Uuid],
    slugs: &[String],
) -> Result<Vec<(Uuid, String)>, ProductError> {
    Ok(
        sqlx::query_as("SELECT id, slug FROM categories WHERE id = ANY($1) OR slug = ANY($2)")
            .bind(ids)
            .bind(slugs)
            .fetch_all(conn)
            .await?,
    )
}

// ------------------------------------------------------------------ products

/// A product as `{PRODUCT}` selects it; search results add `rank` and
/// `sort_name` after it.
#[derive(Debug, Clone)]
pub struct ProductRow {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: i64,
    pub currency: String,
    pub category_id: Uuid,
    /// The jsonb rendered by PostgreSQL, so numbers come back exactly.
    pub attributes: String,
    pub images: Vec<String>,
    pub active: bool,
    pub in_stock: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The full-text rank, only in search results.
    pub rank: f32,
    /// The name-sort key, only in search results.
    pub sort_name: String,
}

/// A [`ProductRow`] from the columns of [`PRODUCT`], read in order by
/// either driver's `Columns` (sqlx's pool or the pipelined reads).
macro_rules! product_row {
    ($columns:ident) => {
        ProductRow {
            id: $columns.next("id")?,
            sku: $columns.next("sku")?,
            name: $columns.next("name")?,
            description: $columns.next("description")?,
            price: $columns.next("price")?,
            currency: $columns.next("currency")?,
            category_id: $columns.next("category_id")?,
            attributes: $columns.next("attributes")?,
            images: $columns.next("images")?,
            active: $columns.next("active")?,
            in_stock: $columns.next("in_stock")?,
            created_at: $columns.next("created_at")?,
            updated_at: $columns.next("updated_at")?,
            rank: 0.0,
            sort_name: String::new(),
        }
    };
}

impl<'r> FromRow<'r, PgRow> for ProductRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let mut columns = Columns::new(row);
        let mut product = product_row!(columns);
        if columns.more() {
            product.rank = columns.next("rank")?;
            product.sort_name = columns.next("sort_name")?;
        }
        Ok(product)
    }
}

const PRODUCT: &str = "p.id, p.sku, p.name, p.description, p.price, p.currency, p.category_id, \
     p.attributes::text AS attributes, p.images, p.active, (s.on_hand - s.reserved > 0) AS in_stock, \
     p.created_at, p.updated_at";

/// Inserts a product with its stock and the initial movement.
#[tracing::instrument(skip_all, fields(sku = %new.sku), err(level = "info"))]
pub async fn insert_product(
    conn: &mut PgConnection,
    id: Uuid,
    new: &NewProduct,
    category_id: Uuid,
    actor: &str,
) -> Result<(), ProductError> {
    sqlx::query(
        "INSERT INTO products (id, sku, name, description, price, currency, category_id, attributes, images, active) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)",
    )
    .bind(id)
    .bind(&new.sku)
    .bind(&new.name)
    .bind(&new.description)
    .bind(new.price)
    .bind(&new.currency)
    .bind(category_id)
    .bind(&new.attributes)
    .bind(&new.images)
    .bind(new.active)
    .execute(&mut *conn)
    .await
    .map_err(map_error)?;
    sqlx::query("INSERT INTO stock (product_id, on_hand) VALUES ($1, $2)")
        .bind(id)
        .bind(new.stock)
        .execute(&mut *conn)
        .await?;
    if new.stock > 0 {
        insert_movement(
            conn,
            &NewMovement {
                product_id: id,
                kind: MovementKind::Initial,
                on_hand_delta: new.stock,
                reserved_delta: 0,
                reason: "",
                order_id: None,
                actor,
            },
        )
        .await?;
    }
    Ok(())
}

/// Creates the product, or updates the one with its SKU (leaving its stock
/// alone), in one statement. True when it was created.
#[tracing::instrument(skip_all, fields(sku = %new.sku), err(level = "info"))]
pub async fn upsert_product(
    conn: &mut PgConnection,
    new: &NewProduct,
    category_id: Uuid,
    actor: &str,
) -> Result<bool, ProductError> {
    let (_, inserted): (Uuid, bool) = sqlx::query_as(
        "WITH upserted AS ( \
           INSERT INTO products (id, sku, name, description, price, currency, category_id, attributes, images, active) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10) \
           ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description, \
             price = EXCLUDED.price, currency = EXCLUDED.currency, category_id = EXCLUDED.category_id, \
             attributes = EXCLUDED.attributes, images = EXCLUDED.images, active = EXCLUDED.active, \
             updated_at = now() \
           RETURNING id, (xmax = 0) AS inserted), \
         stocked AS ( \
           INSERT INTO stock (product_id, on_hand) SELECT id, $11 FROM upserted WHERE inserted), \
         moved AS ( \
           INSERT INTO stock_movements (id, product_id, kind, on_hand_delta, reserved_delta, actor) \
           SELECT $12, id, 'initial', $11, 0, $13 FROM upserted WHERE inserted AND $11 > 0) \
         SELECT id, inserted FROM upserted",
    )
    .bind(Uuid::now_v7())
    .bind(&new.sku)
    .bind(&new.name)
    .bind(&new.description)
    .bind(new.price)
    .bind(&new.currency)
    .bind(category_id)
    .bind(&new.attributes)
    .bind(&new.images)
    .bind(new.active)
    .bind(new.stock)
    .bind(Uuid::now_v7())
    .bind(actor)
    .fetch_one(conn)
    .await
    .map_err(map_error)?;
    Ok(inserted)
}

/// One product with its stock by id, archived or not.
static FIND_PRODUCT: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {PRODUCT} FROM products p JOIN stock s ON s.product_id = p.id WHERE p.id = $1")
});

#[tracing::instrument(skip_all, fields(product_id = %id), err)]
pub async fn find_product(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ProductRow>, ProductError> {
    Ok(sqlx::query_as(&FIND_PRODUCT)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// [`find_product`] on the pipelined read connections.
#[tracing::instrument(skip_all, fields(product_id = %id), err)]
pub async fn read_product(reads: &Pipeline, id: Uuid) -> Result<Option<ProductRow>, ProductError> {
    let Some(row) = reads.query_opt(FIND_PRODUCT.as_str(), &[&id]).await? else {
        return Ok(None);
    };
    let mut columns = pipeline::Columns::new(&row);
    Ok(Some(product_row!(columns)))
}

#[tracing::instrument(skip_all, fields(count = ids.len()), err)]
pub async fn find_products(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<ProductRow>, ProductError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {PRODUCT} FROM products p JOIN stock s ON s.product_id = p.id WHERE p.id = ANY($1)"
        )
    });
    Ok(sqlx::query_as(&SQL).bind(ids).fetch_all(conn).await?)
}

/// Tells every replica's product cache (at commit; nothing if the
/// transaction rolls back) that these products changed.
#[tracing::instrument(skip_all, fields(count = ids.len()), err)]
pub async fn notify_changed(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), ProductError> {
    sqlx::query("SELECT pg_notify($1, id::text) FROM unnest($2::uuid[]) AS id")
        .bind(crate::cache::CHANNEL)
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Tells every replica's product cache that any product may have changed.
#[tracing::instrument(skip_all, err)]
pub async fn notify_all_changed(conn: &mut PgConnection) -> Result<(), ProductError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::cache::CHANNEL)
        .bind(crate::cache::EVERYTHING)
        .execute(conn)
        .await?;
    Ok(())
}

/// The fields of a product update; `None` leaves a field unchanged.
#[derive(Debug, Default)]
pub struct ProductPatch {
    pub sku: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<(i64, String)>,
    pub category_id: Option<Uuid>,
    pub attributes: Option<String>,
    pub images: Option<Vec<String>>,
    pub active: Option<bool>,
}

/// Applies the patch; false when there is no such product.
#[tracing::instrument(skip_all, fields(product_id = %id), err(level = "info"))]
pub async fn update_product(
    conn: &mut PgConnection,
    id: Uuid,
    patch: &ProductPatch,
) -> Result<bool, ProductError> {
    let (price, currency) = patch.price.clone().unzip();
    let updated = sqlx::query(
        "UPDATE products SET sku = COALESCE($2, sku), name = COALESCE($3, name), \
           description = COALESCE($4, description), price = COALESCE($5, price), \
           currency = COALESCE($6, currency), category_id = COALESCE($7, category_id), \
           attributes = COALESCE($8::jsonb, attributes), images = COALESCE($9, images), \
           active = COALESCE($10, active), updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(&patch.sku)
    .bind(&patch.name)
    .bind(&patch.description)
    .bind(price)
    .bind(currency)
    .bind(patch.category_id)
    .bind(&patch.attributes)
    .bind(&patch.images)
    .bind(patch.active)
    .execute(conn)
    .await
    .map_err(map_error)?;
    Ok(updated.rows_affected() == 1)
}

/// Archives the product; archiving an archived one changes nothing.
#[tracing::instrument(skip_all, fields(product_id = %id), err)]
pub async fn archive_product(conn: &mut PgConnection, id: Uuid) -> Result<bool, ProductError> {
    let updated = sqlx::query(
        "UPDATE products SET active = false, \
           updated_at = CASE WHEN active THEN now() ELSE updated_at END WHERE id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// One page of a search; `limit` rows at most, ranked and ordered.
///
/// The page is cut from the matching ids and their sort keys alone, and only
/// its rows are then read whole: a word that matches 500 products ranks 500
/// search vectors but reads 21 descriptions and stock rows, not 500 (and
/// never hashes the whole stock table to join it).
#[tracing::instrument(skip_all, fields(sort = ?query.sort), err)]
pub async fn search(
    conn: &mut PgConnection,
    query: &SearchQuery,
    category_id: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ProductRow>, ProductError> {
    let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
        "SELECT {PRODUCT}, t.rank, t.sort_name FROM (SELECT * FROM (SELECT p.id, "
    ));
    match &query.q {
        Some(q) => {
            sql.push("ts_rank(p.search, websearch_to_tsquery('english', ");
            sql.push_bind(q.clone());
            sql.push(")) AS rank");
        }
        None => {
            sql.push("0::real AS rank");
        }
    }
    sql.push(", p.price, p.created_at, lower(p.name) AS sort_name FROM products p");
    if query.in_stock.is_some() {
        sql.push(" JOIN stock s ON s.product_id = p.id");
    }
    sql.push(" WHERE TRUE");
    if !query.include_archived {
        sql.push(" AND p.active");
    }
    if let Some(q) = &query.q {
        sql.push(" AND p.search @@ websearch_to_tsquery('english', ");
        sql.push_bind(q.clone());
        sql.push(")");
    }
    if let Some(category_id) = category_id {
        sql.push(" AND p.category_id IN (WITH RECURSIVE subtree (id) AS (SELECT ");
        sql.push_bind(category_id);
        sql.push(
            "::uuid UNION SELECT c.id FROM categories c JOIN subtree t ON c.parent_id = t.id) \
             SELECT id FROM subtree)",
        );
    }
    if let Some(min) = query.min_price {
        sql.push(" AND p.price >= ");
        sql.push_bind(min);
    }
    if let Some(max) = query.max_price {
        sql.push(" AND p.price <= ");
        sql.push_bind(max);
    }
    if let Some(currency) = &query.currency {
        sql.push(" AND p.currency = ");
        sql.push_bind(currency.clone());
    }
    if let Some(in_stock) = query.in_stock {
        sql.push(" AND (s.on_hand - s.reserved > 0) = ");
        sql.push_bind(in_stock);
    }
    sql.push(") t");
    match &query.after {
        None => {}
        Some(Cursor::Relevance { rank_bits, id }) => {
            let rank = f32::from_bits(*rank_bits);
            sql.push(" WHERE (t.rank < ");
            sql.push_bind(rank);
            sql.push(" OR (t.rank = ");
            sql.push_bind(rank);
            sql.push(" AND t.id > ");
            sql.push_bind(*id);
            sql.push("))");
        }
        Some(Cursor::PriceAsc { price, id }) => {
            sql.push(" WHERE (t.price, t.id) > (");
            sql.push_bind(*price);
            sql.push(", ");
            sql.push_bind(*id);
            sql.push(")");
        }
        Some(Cursor::PriceDesc { price, id }) => {
            sql.push(" WHERE (t.price, t.id) < (");
            sql.push_bind(*price);
            sql.push(", ");
            sql.push_bind(*id);
            sql.push(")");
        }
        Some(Cursor::Newest { at_micros, id }) => {
            let at = DateTime::<Utc>::from_timestamp_micros(*at_micros)
                .ok_or_else(|| ProductError::invalid("page.page_token: malformed"))?;
            sql.push(" WHERE (t.created_at, t.id) < (");
            sql.push_bind(at);
            sql.push(", ");
            sql.push_bind(*id);
            sql.push(")");
        }
        Some(Cursor::Name { name, id }) => {
            sql.push(" WHERE (t.sort_name, t.id) > (");
            sql.push_bind(name.clone());
            sql.push(", ");
            sql.push_bind(*id);
            sql.push(")");
        }
    }
    let order = match query.sort {
        Sort::Relevance => " ORDER BY t.rank DESC, t.id",
        Sort::PriceAsc => " ORDER BY t.price, t.id",
        Sort::PriceDesc => " ORDER BY t.price DESC, t.id DESC",
        Sort::Newest => " ORDER BY t.created_at DESC, t.id DESC",
        Sort::Name => " ORDER BY t.sort_name, t.id",
    };
    sql.push(order);
    sql.push(" LIMIT ");
    sql.push_bind(limit);
    sql.push(") t JOIN products p ON p.id = t.id JOIN stock s ON s.product_id = t.id");
    sql.push(order);
    Ok(sql.build_query_as().fetch_all(conn).await?)
}

// --------------------------------------------------------------------- stock

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StockRow {
    pub product_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    pub updated_at: DateTime<Utc>,
}

const STOCK: &str = "product_id, on_hand, reserved, updated_at";

#[tracing::instrument(skip_all, fields(product_id = %product_id), err)]
pub async fn find_stock(
    conn: &mut PgConnection,
    product_id: Uuid,
) -> Result<Option<StockRow>, ProductError> {
    Ok(
        sqlx::query_as(&format!("SELECT {STOCK} FROM stock WHERE product_id = $1"))
            .bind(product_id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Adds `delta` to on-hand unless available stock would go below zero; None
/// when refused (or there is no such product).
#[tracing::instrument(skip_all, fields(product_id = %product_id, delta), err(level = "info"))]
pub async fn adjust_stock(
    conn: &mut PgConnection,
    product_id: Uuid,
    delta: i64,
) -> Result<Option<StockRow>, ProductError> {
    sqlx::query_as(&format!(
        "UPDATE stock SET on_hand = on_hand + $2, updated_at = now() \
         WHERE product_id = $1 AND on_hand + $2 - reserved >= 0 RETURNING {STOCK}"
    ))
    .bind(product_id)
    .bind(delta)
    .fetch_optional(conn)
    .await
    .map_err(map_error)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovementKind {
    Initial,
    Adjustment,
    Reservation,
    Release,
    Commit,
}

impl MovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Adjustment => "adjustment",
            Self::Reservation => "reservation",
            Self::Release => "release",
            Self::Commit => "commit",
        }
    }
}

#[derive(Debug)]
pub struct NewMovement<'a> {
    pub product_id: Uuid,
    pub kind: MovementKind,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub reason: &'a str,
    pub order_id: Option<Uuid>,
    pub actor: &'a str,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MovementRow {
    pub id: Uuid,
    pub product_id: Uuid,
    pub kind: String,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub reason: String,
    pub order_id: Option<Uuid>,
    pub actor: String,
    pub created_at: DateTime<Utc>,
}

const MOVEMENT: &str =
    "id, product_id, kind, on_hand_delta, reserved_delta, reason, order_id, actor, created_at";

#[tracing::instrument(skip_all, fields(product_id = %movement.product_id, kind = movement.kind.as_str()), err)]
pub async fn insert_movement(
    conn: &mut PgConnection,
    movement: &NewMovement<'_>,
) -> Result<MovementRow, ProductError> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO stock_movements (id, product_id, kind, on_hand_delta, reserved_delta, reason, order_id, actor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {MOVEMENT}"
    ))
    .bind(Uuid::now_v7())
    .bind(movement.product_id)
    .bind(movement.kind.as_str())
    .bind(movement.on_hand_delta)
    .bind(movement.reserved_delta)
    .bind(movement.reason)
    .bind(movement.order_id)
    .bind(movement.actor)
    .fetch_one(conn)
    .await?)
}

/// A product's movements, newest first, after the (created_at, id) cursor.
#[tracing::instrument(skip_all, fields(product_id = %product_id), err)]
pub async fn list_movements(
    conn: &mut PgConnection,
    product_id: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<MovementRow>, ProductError> {
    let (at, id) = after.unzip();
    Ok(sqlx::query_as(&format!(
        "SELECT {MOVEMENT} FROM stock_movements WHERE product_id = $1 \
           AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(product_id)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

// -------------------------------------------------------------- reservations

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReservationRow {
    pub order_id: Uuid,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReservationItemRow {
    pub product_id: Uuid,
    pub quantity: i32,
}

const RESERVATION: &str = "order_id, status, created_at, updated_at";

/// Inserts the order's reservation in `status`; None when the order already
/// has one. A concurrent insert for the same order waits for ours to finish.
#[tracing::instrument(skip_all, fields(order_id = %order_id), err)]
pub async fn insert_reservation(
    conn: &mut PgConnection,
    order_id: Uuid,
    status: &str,
) -> Result<Option<ReservationRow>, ProductError> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO reservations (order_id, status) VALUES ($1, $2) \
         ON CONFLICT (order_id) DO NOTHING RETURNING {RESERVATION}"
    ))
    .bind(order_id)
    .bind(status)
    .fetch_optional(conn)
    .await?)
}

/// Locks the order's reservation and reads its items in the order they were
/// requested, in one statement. The items come from the statement's snapshot
/// even after a wait for the lock: they are written with the reservation and
/// never change, so a reservation this statement sees has all of them.
#[tracing::instrument(skip_all, fields(order_id = %order_id), err)]
pub async fn lock_reservation(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<(ReservationRow, Vec<ReservationItemRow>)>, ProductError> {
    let row: Option<LockedReservation> = sqlx::query_as(&format!(
        "WITH r AS (SELECT {RESERVATION} FROM reservations WHERE order_id = $1 FOR UPDATE) \
         SELECT r.*, \
           ARRAY(SELECT product_id FROM reservation_items i \
                 WHERE i.order_id = r.order_id ORDER BY position) AS products, \
           ARRAY(SELECT quantity FROM reservation_items i \
                 WHERE i.order_id = r.order_id ORDER BY position) AS quantities \
         FROM r"
    ))
    .bind(order_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| {
        let items = row
            .products
            .into_iter()
            .zip(row.quantities)
            .map(|(product_id, quantity)| ReservationItemRow {
                product_id,
                quantity,
            })
            .collect();
        (row.reservation, items)
    }))
}

#[derive(sqlx::FromRow)]
struct LockedReservation {
    #[sqlx(flatten)]
    reservation: ReservationRow,
    products: Vec<Uuid>,
    quantities: Vec<i32>,
}

/// Settles the reservation, committed or released, and records each item's
/// movement out of reserved stock (and, committed, out of on-hand stock), in
/// one statement.
#[tracing::instrument(skip_all, fields(order_id = %order_id, commit), err)]
pub async fn settle_reservation(
    conn: &mut PgConnection,
    order_id: Uuid,
    items: &[ReservationItemRow],
    commit: bool,
    actor: &str,
) -> Result<ReservationRow, ProductError> {
    let (kind, on_hand, status) = if commit {
        (MovementKind::Commit, -1_i64, "committed")
    } else {
        (MovementKind::Release, 0, "released")
    };
    let (ids, products, quantities) = movement_columns(items);
    Ok(sqlx::query_as(&format!(
        "WITH moved AS ( \
           INSERT INTO stock_movements \
             (id, product_id, kind, on_hand_delta, reserved_delta, reason, order_id, actor) \
           SELECT id, product_id, $4, quantity * $5, -quantity, '', $1, $6 \
           FROM unnest($2::uuid[], $3::uuid[], $7::int[]) AS m (id, product_id, quantity)) \
         UPDATE reservations SET status = $8, updated_at = now() WHERE order_id = $1 \
         RETURNING {RESERVATION}"
    ))
    .bind(order_id)
    .bind(ids)
    .bind(products)
    .bind(kind.as_str())
    .bind(on_hand)
    .bind(actor)
    .bind(quantities)
    .bind(status)
    .fetch_one(conn)
    .await?)
}

/// The items as `unnest` columns: a new movement id, the product and the
/// quantity of each.
fn movement_columns(items: &[ReservationItemRow]) -> (Vec<Uuid>, Vec<Uuid>, Vec<i32>) {
    (
        items.iter().map(|_| Uuid::now_v7()).collect(),
        items.iter().map(|i| i.product_id).collect(),
        items.iter().map(|i| i.quantity).collect(),
    )
}

/// Records the reservation's items and each one's movement into reserved
/// stock, in one statement.
#[tracing::instrument(skip_all, fields(order_id = %order_id), err)]
pub async fn record_reservation(
    conn: &mut PgConnection,
    order_id: Uuid,
    items: &[ReservationItemRow],
    actor: &str,
) -> Result<(), ProductError> {
    let (ids, products, quantities) = movement_columns(items);
    sqlx::query(
        "WITH items AS ( \
           INSERT INTO reservation_items (order_id, position, product_id, quantity) \
           SELECT $1, ordinality, product_id, quantity \
           FROM unnest($3::uuid[], $4::int[]) WITH ORDINALITY AS i (product_id, quantity, ordinality)) \
         INSERT INTO stock_movements \
           (id, product_id, kind, on_hand_delta, reserved_delta, reason, order_id, actor) \
         SELECT id, product_id, $5, 0, quantity, '', $1, $6 \
         FROM unnest($2::uuid[], $3::uuid[], $4::int[]) AS m (id, product_id, quantity)",
    )
    .bind(order_id)
    .bind(ids)
    .bind(products)
    .bind(quantities)
    .bind(MovementKind::Reservation.as_str())
    .bind(actor)
    .execute(conn)
    .await?;
    Ok(())
}

/// Reserves `quantity` of an active product if that much is available. The
/// condition and the increment are one statement, so concurrent reservations
/// never oversell: the second waits for the first's row lock, then re-checks.
/// Returns the stock still available afterwards, or None if nothing was reserved.
#[tracing::instrument(skip_all, fields(product_id = %product_id, quantity), err(level = "info"))]
pub async fn reserve(
    conn: &mut PgConnection,
    product_id: Uuid,
    quantity: i64,
) -> Result<Option<i64>, ProductError> {
    sqlx::query_scalar(
        "UPDATE stock s SET reserved = s.reserved + $2, updated_at = now() FROM products p \
         WHERE s.product_id = $1 AND p.id = s.product_id AND p.active \
           AND s.on_hand - s.reserved >= $2 \
         RETURNING s.on_hand - s.reserved",
    )
    .bind(product_id)
    .bind(quantity)
    .fetch_optional(conn)
    .await
    .map_err(map_error)
}

/// Why a product cannot be reserved: its name, whether it is active, and its
/// available stock; None when it does not exist.
#[tracing::instrument(skip_all, fields(product_id = %product_id), err)]
pub async fn availability(
    conn: &mut PgConnection,
    product_id: Uuid,
) -> Result<Option<(String, bool, i64)>, ProductError> {
    Ok(sqlx::query_as(
        "SELECT p.name, p.active, s.on_hand - s.reserved FROM products p \
         JOIN stock s ON s.product_id = p.id WHERE p.id = $1",
    )
    .bind(product_id)
    .fetch_optional(conn)
    .await?)
}

/// Moves reserved quantities out: back to available stock (release), or out
/// of on-hand stock for good (commit). Returns the stock available afterwards.
#[tracing::instrument(skip_all, fields(product_id = %product_id, quantity, commit), err(level = "info"))]
pub async fn unreserve(
    conn: &mut PgConnection,
    product_id: Uuid,
    quantity: i64,
    commit: bool,
) -> Result<i64, ProductError> {
    let on_hand_delta = if commit { quantity } else { 0 };
    sqlx::query_scalar(
        "UPDATE stock SET reserved = reserved - $2, on_hand = on_hand - $3, updated_at = now() \
         WHERE product_id = $1 RETURNING on_hand - reserved",
    )
    .bind(product_id)
    .bind(quantity)
    .bind(on_hand_delta)
    .fetch_one(conn)
    .await
    .map_err(map_error)
}
