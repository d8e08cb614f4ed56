//! The `ProductService` gRPC handlers: authorization, validation, and the
//! transactions around the queries in `db`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use gocommerce_platform::Caller;
use gocommerce_platform::db::{Db, Tx};
use gocommerce_platform::pipeline::Pipeline;
use gocommerce_proto::product::v1 as pb;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::cache::ProductCache;
use crate::convert;
use crate::db::{self, MovementKind, NewMovement, ProductPatch, ReservationItemRow};
use crate::error::ProductError;
use crate::input;
use crate::search::SearchQuery;

/// The actor of movements made for orders.
pub const SYSTEM: &str = "system";

/// Most ids one GetProducts may ask for.
const MAX_BATCH_IDS: usize = 100;

#[derive(Debug, Clone)]
pub struct ProductService {
    pub db: Db,
    /// Pipelined connections for the lookups of product views, when configured.
    pub reads: Option<Arc<Pipeline>>,
    pub cache: Arc<ProductCache>,
}

fn caller(metadata: &MetadataMap) -> Result<Option<Caller>, ProductError> {
    Caller::optional_from_metadata(metadata).map_err(ProductError::Status)
}

/// The admin making this call; PERMISSION_DENIED for anyone else.
pub fn require_admin(metadata: &MetadataMap) -> Result<Caller, ProductError> {
    match caller(metadata)? {
        Some(caller) if caller.is_admin() => Ok(caller),
        _ => Err(ProductError::PermissionDenied(
            "this operation is for admins only".to_owned(),
        )),
    }
}

/// Internal RPCs: peers (no caller) and admins may; a customer may not.
fn require_peer_or_admin(metadata: &MetadataMap) -> Result<(), ProductError> {
    match caller(metadata)? {
        Some(caller) if !caller.is_admin() => Err(ProductError::PermissionDenied(
            "this operation is for services and admins only".to_owned(),
        )),
        _ => Ok(()),
    }
}

fn no_product() -> ProductError {
    ProductError::NotFound("no such product".to_owned())
}

fn no_category() -> ProductError {
    ProductError::NotFound("no such category".to_owned())
}

/// The page token of ListStockMovements: the last movement's key, bound to
/// the product.
#[derive(Debug, Serialize, Deserialize)]
struct MovementToken {
    product: Uuid,
    at_micros: i64,
    id: Uuid,
}

fn parse_movement_token(
    token: &str,
    product_id: Uuid,
) -> Result<Option<(DateTime<Utc>, Uuid)>, ProductError> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || {
        ProductError::invalid(
            "page.page_token: malformed; pass back the next_page_token of a previous page",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
    let token: MovementToken = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if token.product != product_id {
        return Err(ProductError::invalid(
            "page.page_token: belongs to another product",
        ));
    }
    let at = DateTime::from_timestamp_micros(token.at_micros).ok_or_else(malformed)?;
    Ok(Some((at, token.id)))
}

/// Validated reservation items, each with its index in the request.
fn reservation_items(
    items: &[pb::ReservationItem],
) -> Result<Vec<(usize, ReservationItemRow)>, ProductError> {
    if items.is_empty() {
        return Err(ProductError::invalid(
            "items: at least one item is required",
        ));
    }
    let mut seen = HashSet::new();
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let product_id = input::uuid(&format!("items[{index}].product_id"), &item.product_id)?;
            if item.quantity < 1 {
                return Err(ProductError::invalid(format!(
                    "items[{index}].quantity: must be at least 1"
                )));
            }
            if !seen.insert(product_id) {
                return Err(ProductError::invalid(format!(
                    "items[{index}].product_id: listed twice; add up the quantities"
                )));
            }
            Ok((
                index,
                ReservationItemRow {
                    product_id,
                    quantity: item.quantity,
                },
            ))
        })
        .collect()
}

fn same_items(a: &[ReservationItemRow], b: &[ReservationItemRow]) -> bool {
    let set = |items: &[ReservationItemRow]| -> HashMap<Uuid, i32> {
        items.iter().map(|i| (i.product_id, i.quantity)).collect()
    };
    a.len() == b.len() && set(a) == set(b)
}

impl ProductService {
    /// Commits `tx` and tells every replica's cache, this one's included,
    /// that the views of `changed` products are stale. NOTIFY makes the
    /// commits of all notifying transactions in the cluster take turns (a
    /// global lock held through the WAL flush), so stock movements announce
    /// only the products whose view they change.
    async fn commit_announcing(&self, mut tx: Tx, changed: Vec<Uuid>) -> Result<(), ProductError> {
        if changed.is_empty() {
            tx.commit().await?;
            return Ok(());
        }
        db::notify_changed(&mut tx, &changed).await?;
        tx.commit().await?;
        self.cache.invalidate(changed);
        Ok(())
    }

    // ------------------------------------------------------------ categories

    async fn category_create(
        &self,
        request: Request<pb::CreateCategoryRequest>,
    ) -> Result<pb::CreateCategoryResponse, ProductError> {
        require_admin(request.metadata())?;
        let request = request.into_inner();
        let name = input::category_name(&request.name)?;
        let slug = input::slug("slug", &request.slug)?;
        let parent_id = input::optional_uuid("parent_id", &request.parent_id)?;
        let mut conn = self.db.acquire().await?;
        if let Some(parent_id) = parent_id
            && db::find_category(&mut conn, parent_id).await?.is_none()
        {
            return Err(ProductError::NotFound(
                "parent_id: no such category".to_owned(),
            ));
        }
        let category =
            db::insert_category(&mut conn, Uuid::now_v7(), &name, &slug, parent_id).await?;
        conn.keep();
        tracing::info!(category_id = %category.id, slug = %category.slug, "category created");
        Ok(pb::CreateCategoryResponse {
            category: Some(convert::category(&category)),
        })
    }

    async fn category_get(
        &self,
        request: Request<pb::GetCategoryRequest>,
    ) -> Result<pb::GetCategoryResponse, ProductError> {
        let id = input::uuid("category_id", &request.get_ref().category_id)?;
        let mut conn = self.db.acquire().await?;
        let category = db::find_category(&mut conn, id).await?;
        conn.keep();
        let category = category.ok_or_else(no_category)?;
        Ok(pb::GetCategoryResponse {
            category: Some(convert::category(&category)),
        })
    }

    async fn category_list(&self) -> Result<pb::ListCategoriesResponse, ProductError> {
        let mut conn = self.db.acquire().await?;
        let items = db::list_categories(&mut conn).await?;
        conn.keep();
        Ok(pb::ListCategoriesResponse {
            items: items.iter().map(convert::category).collect(),
        })
    }

    async fn category_update(
        &self,
        request: Request<pb::UpdateCategoryRequest>,
    ) -> Result<pb::UpdateCategoryResponse, ProductError> {
        require_admin(request.metadata())?;
        let request = request.into_inner();
        let id = input::uuid("category_id", &request.category_id)?;
        let name = request
            .name
            .as_deref()
            .map(input::category_name)
            .transpose()?;
        let slug = request
            .slug
            .as_deref()
            .map(|s| input::slug("slug", s))
            .transpose()?;
        let parent = request
            .parent_id
            .as_deref()
            .map(|p| input::optional_uuid("parent_id", p))
            .transpose()?;

        let mut tx = self.db.begin().await?;
        if parent.is_some() {
            db::lock_tree(&mut tx).await?;
        }
        let current = db::lock_category(&mut tx, id)
            .await?
            .ok_or_else(no_category)?;
        let parent_id = match parent {
            None => current.parent_id,
            Some(None) => None,
            Some(Some(parent_id)) => {
                if db::find_category(&mut tx, parent_id).await?.is_none() {
                    return Err(ProductError::NotFound(
                        "parent_id: no such category".to_owned(),
                    ));
                }
                if db::is_in_subtree(&mut tx, id, parent_id).await? {
                    return Err(ProductError::invalid(
                        "parent_id: must not be the category itself or one of its descendants",
                    ));
                }
                Some(parent_id)
            }
        };
        let category = db::update_category(
            &mut tx,
            id,
            name.as_deref().unwrap_or(&current.name),
            slug.as_deref().unwrap_or(&current.slug),
            parent_id,
        )
        .await?;
        tx.commit().await?;
        Ok(pb::UpdateCategoryResponse {
            category: Some(convert::category(&category)),
        })
    }

    async fn category_delete(
        &self,
        request: Request<pb::DeleteCategoryRequest>,
    ) -> Result<pb::DeleteCategoryResponse, ProductError> {
        require_admin(request.metadata())?;
        let id = input::uuid("category_id", &request.get_ref().category_id)?;
        let mut tx = self.db.begin().await?;
        db::lock_category(&mut tx, id)
            .await?
            .ok_or_else(no_category)?;
        let (has_products, has_children) = db::category_usage(&mut tx, id).await?;
        if has_products {
            return Err(ProductError::FailedPrecondition(
                "the category has products (archived ones count); move them first".to_owned(),
            ));
        }
        if has_children {
            return Err(ProductError::FailedPrecondition(
                "the category has subcategories; move or delete them first".to_owned(),
            ));
        }
        db::delete_category(&mut tx, id).await?;
        tx.commit().await?;
        tracing::info!(category_id = %id, "category deleted");
        Ok(pb::DeleteCategoryResponse {})
    }

    // -------------------------------------------------------------- products

    async fn product_create(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<pb::CreateProductResponse, ProductError> {
        let admin = require_admin(request.metadata())?;
        let request = request.into_inner();
        let new = input::product(
            request
                .product
                .as_ref()
                .ok_or_else(|| ProductError::invalid("product: is required"))?,
        )?;
        let mut tx = self.db.begin().await?;
        let category_id = db::resolve_category(&mut tx, &new.category)
            .await?
            .ok_or_else(|| ProductError::NotFound(new.category.describe()))?;
        let id = Uuid::now_v7();
        db::insert_product(&mut tx, id, &new, category_id, &admin.user_id.to_string()).await?;
        let product = db::find_product(&mut tx, id)
            .await?
            .ok_or_else(no_product)?;
        let stock = db::find_stock(&mut tx, id).await?.ok_or_else(no_product)?;
        tx.commit().await?;
        tracing::info!(product_id = %id, sku = %product.sku, "product created");
        Ok(pb::CreateProductResponse {
            product: Some(convert::product(&product)),
            stock: Some(convert::stock(&stock)),
        })
    }

    async fn product_get(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<pb::GetProductResponse, ProductError> {
        // Public: the gateway sends no caller for anonymous visitors, so only
        // an admin sees archived products here (peers use GetProducts).
        let admin = caller(request.metadata())?.is_some_and(|c| c.is_admin());
        let id = input::uuid("product_id", &request.get_ref().product_id)?;
        let product = match self.cache.get(id) {
            Some(product) => product,
            None => {
                let ticket = self.cache.ticket();
                let row = match &self.reads {
                    Some(reads) => db::read_product(reads, id).await?,
                    None => {
                        let mut conn = self.db.acquire().await?;
                        let row = db::find_product(&mut conn, id).await?;
                        conn.keep();
                        row
                    }
                };
                let row = row.ok_or_else(no_product)?;
                let product = convert::product(&row);
                self.cache.store(ticket, id, &product);
                product
            }
        };
        if !(product.active || admin) {
            return Err(no_product());
        }
        Ok(pb::GetProductResponse {
            product: Some(product),
        })
    }

    async fn product_batch(
        &self,
        request: Request<pb::GetProductsRequest>,
    ) -> Result<pb::GetProductsResponse, ProductError> {
        require_peer_or_admin(request.metadata())?;
        let raw = &request.get_ref().product_ids;
        if raw.len() > MAX_BATCH_IDS {
            return Err(ProductError::invalid(format!(
                "product_ids: at most {MAX_BATCH_IDS} ids"
            )));
        }
        let ids = raw
            .iter()
            .enumerate()
            .map(|(index, id)| input::uuid(&format!("product_ids[{index}]"), id))
            .collect::<Result<HashSet<_>, _>>()?;
        if ids.is_empty() {
            return Ok(pb::GetProductsResponse { products: vec![] });
        }
        let ids: Vec<Uuid> = ids.into_iter().collect();
        let mut conn = self.db.acquire().await?;
        let products = db::find_products(&mut conn, &ids).await?;
        conn.keep();
        Ok(pb::GetProductsResponse {
            products: products.iter().map(convert::product).collect(),
        })
    }

    async fn product_update(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> Result<pb::UpdateProductResponse, ProductError> {
        require_admin(request.metadata())?;
        let request = request.into_inner();
        let id = input::uuid("product_id", &request.product_id)?;
        let category = request
            .category_id
            .as_deref()
            .map(|c| input::uuid("category_id", c))
            .transpose()?;
        let patch = ProductPatch {
            sku: request.sku.as_deref().map(input::sku).transpose()?,
            name: request
                .name
                .as_deref()
                .map(input::product_name)
                .transpose()?,
            description: request
                .description
                .as_deref()
                .map(input::description)
                .transpose()?,
            price: request
                .price
                .as_ref()
                .map(|p| input::price("price", Some(p)))
                .transpose()?,
            category_id: category,
            attributes: request
                .attributes_json
                .as_deref()
                .map(input::attributes)
                .transpose()?,
            images: request
                .images
                .as_ref()
                .map(|list| input::images(&list.urls))
                .transpose()?,
            active: request.active,
        };
        let mut tx = self.db.begin().await?;
        if let Some(category_id) = category
            && db::find_category(&mut tx, category_id).await?.is_none()
        {
            return Err(ProductError::NotFound(
                "category_id: no such category".to_owned(),
            ));
        }
        if !db::update_product(&mut tx, id, &patch).await? {
            return Err(no_product());
        }
        let product = db::find_product(&mut tx, id)
            .await?
            .ok_or_else(no_product)?;
        db::notify_changed(&mut tx, &[id]).await?;
        tx.commit().await?;
        self.cache.invalidate([id]);
        Ok(pb::UpdateProductResponse {
            product: Some(convert::product(&product)),
        })
    }

    async fn product_archive(
        &self,
        request: Request<pb::ArchiveProductRequest>,
    ) -> Result<pb::ArchiveProductResponse, ProductError> {
        require_admin(request.metadata())?;
        let id = input::uuid("product_id", &request.get_ref().product_id)?;
        let mut tx = self.db.begin().await?;
        if !db::archive_product(&mut tx, id).await? {
            return Err(no_product());
        }
        let product = db::find_product(&mut tx, id)
            .await?
            .ok_or_else(no_product)?;
        db::notify_changed(&mut tx, &[id]).await?;
        tx.commit().await?;
        self.cache.invalidate([id]);
        tracing::info!(product_id = %id, "product archived");
        Ok(pb::ArchiveProductResponse {
            product: Some(convert::product(&product)),
        })
    }

    async fn product_search(
        &self,
        request: Request<pb::SearchProductsRequest>,
    ) -> Result<pb::SearchProductsResponse, ProductError> {
        let admin = caller(request.metadata())?.is_some_and(|c| c.is_admin());
        let query = SearchQuery::parse(request.get_ref(), admin)?;
        let mut conn = self.db.acquire().await?;
        let category_id = match &query.category {
            None => None,
            Some(category) => Some(
                db::resolve_category(&mut conn, category)
                    .await?
                    .ok_or_else(|| ProductError::NotFound(category.describe()))?,
            ),
        };
        let size = query.page_size as usize;
        let mut rows = db::search(&mut conn, &query, category_id, size as i64 + 1).await?;
        conn.keep();
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last().map(|r| query.next_token(r)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::SearchProductsResponse {
            items: rows.iter().map(convert::product).collect(),
            next_page_token,
        })
    }

    // ----------------------------------------------------------------- stock

    async fn stock_get(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<pb::GetStockResponse, ProductError> {
        require_admin(request.metadata())?;
        let id = input::uuid("product_id", &request.get_ref().product_id)?;
        let mut conn = self.db.acquire().await?;
        let stock = db::find_stock(&mut conn, id).await?;
        conn.keep();
        let stock = stock.ok_or_else(no_product)?;
        Ok(pb::GetStockResponse {
            stock: Some(convert::stock(&stock)),
        })
    }

    async fn stock_adjust(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<pb::AdjustStockResponse, ProductError> {
        let admin = require_admin(request.metadata())?;
        let request = request.into_inner();
        let id = input::uuid("product_id", &request.product_id)?;
        if request.delta == 0 {
            return Err(ProductError::invalid("delta: must not be zero"));
        }
        let reason = input::reason(&request.reason)?;
        let mut tx = self.db.begin().await?;
        let Some(stock) = db::adjust_stock(&mut tx, id, request.delta).await? else {
            let stock = db::find_stock(&mut tx, id).await?.ok_or_else(no_product)?;
            return Err(ProductError::invalid(format!(
                "delta: available stock would go below zero ({} available)",
                stock.on_hand - stock.reserved
            )));
        };
        let actor = admin.user_id.to_string();
        let movement = db::insert_movement(
            &mut tx,
            &NewMovement {
                product_id: id,
                kind: MovementKind::Adjustment,
                on_hand_delta: request.delta,
                reserved_delta: 0,
                reason: &reason,
                order_id: None,
                actor: &actor,
            },
        )
        .await?;
        db::notify_changed(&mut tx, &[id]).await?;
        tx.commit().await?;
        self.cache.invalidate([id]);
        tracing::info!(product_id = %id, delta = request.delta, "stock adjusted");
        Ok(pb::AdjustStockResponse {
            stock: Some(convert::stock(&stock)),
            movement: Some(convert::movement(&movement)),
        })
    }

    async fn stock_movements(
        &self,
        request: Request<pb::ListStockMovementsRequest>,
    ) -> Result<pb::ListStockMovementsResponse, ProductError> {
        require_admin(request.metadata())?;
        let request = request.into_inner();
        let id = input::uuid("product_id", &request.product_id)?;
        let (size, token) = input::page(request.page.as_ref())?;
        let after = parse_movement_token(&token, id)?;
        let mut conn = self.db.acquire().await?;
        db::find_stock(&mut conn, id)
            .await?
            .ok_or_else(no_product)?;
        let size = size as usize;
        let mut rows = db::list_movements(&mut conn, id, after, size as i64 + 1).await?;
        conn.keep();
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|m| {
                    let token = MovementToken {
                        product: id,
                        at_micros: m.created_at.timestamp_micros(),
                        id: m.id,
                    };
                    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListStockMovementsResponse {
            items: rows.iter().map(convert::movement).collect(),
            next_page_token,
        })
    }

    // ---------------------------------------------------------- reservations

    async fn reserve(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<pb::ReserveStockResponse, ProductError> {
        require_peer_or_admin(request.metadata())?;
        let request = request.into_inner();
        let order_id = input::uuid("order_id", &request.order_id)?;
        let items = reservation_items(&request.items)?;
        let rows: Vec<ReservationItemRow> = items.iter().map(|(_, i)| i.clone()).collect();

        let mut tx = self.db.begin().await?;
        let Some(reservation) = db::insert_reservation(&mut tx, order_id, "reserved").await? else {
            let (existing, existing_items) = db::lock_reservation(&mut tx, order_id)
                .await?
                .ok_or_else(|| ProductError::NotFound("no reservation".to_owned()))?;
            tx.commit().await?;
            return match existing.status.as_str() {
                "reserved" if same_items(&existing_items, &rows) => Ok(pb::ReserveStockResponse {
                    reservation: Some(convert::reservation(&existing, &existing_items)),
                }),
                "reserved" => Err(ProductError::FailedPrecondition(
                    "order_id: the order already has a reservation with different items".to_owned(),
                )),
                status => Err(ProductError::FailedPrecondition(format!(
                    "order_id: the order's reservation was {status}"
                ))),
            };
        };
        // Row locks taken in product-id order: two reservations sharing
        // products never wait for each other in a cycle.
        let mut ordered = items.clone();
        ordered.sort_by_key(|(_, item)| item.product_id);
        // Only a product whose last units were reserved changes its view.
        let mut sold_out = Vec::new();
        for (index, item) in &ordered {
            let quantity = i64::from(item.quantity);
            if let Some(available) = db::reserve(&mut tx, item.product_id, quantity).await? {
                if in_stock_flipped(available + quantity, available) {
                    sold_out.push(item.product_id);
                }
                continue;
            }
            // Dropping the transaction rolls back every earlier item.
            return Err(match db::availability(&mut tx, item.product_id).await? {
                None => ProductError::NotFound(format!(
                    "items[{index}].product_id: no product {}",
                    item.product_id
                )),
                Some((name, false, _)) => ProductError::FailedPrecondition(format!(
                    "items[{index}]: {name} ({}) is no longer sold",
                    item.product_id
                )),
                Some((name, true, available)) => ProductError::FailedPrecondition(format!(
                    "items[{index}]: not enough stock of {name} ({}): {available} available, {quantity} requested",
                    item.product_id
                )),
            });
        }
        db::record_reservation(&mut tx, order_id, &rows, SYSTEM).await?;
        self.commit_announcing(tx, sold_out).await?;
        tracing::info!(order_id = %order_id, items = rows.len(), "stock reserved");
        Ok(pb::ReserveStockResponse {
            reservation: Some(convert::reservation(&reservation, &rows)),
        })
    }

    /// Releases (or, with `commit`, commits) the order's reservation.
    async fn settle(
        &self,
        metadata: &MetadataMap,
        raw_order_id: &str,
        commit: bool,
    ) -> Result<pb::Reservation, ProductError> {
        require_peer_or_admin(metadata)?;
        let order_id = input::uuid("order_id", raw_order_id)?;
        let mut tx = self.db.begin().await?;
        if !commit
            && let Some(tombstone) = db::insert_reservation(&mut tx, order_id, "released").await?
        {
            tx.commit().await?;
            tracing::info!(order_id = %order_id, "release tombstone written");
            return Ok(convert::reservation(&tombstone, &[]));
        }
        let (reservation, items) = db::lock_reservation(&mut tx, order_id)
            .await?
            .ok_or_else(|| ProductError::NotFound("no reservation for this order".to_owned()))?;
        let (done, refused) = if commit {
            ("committed", "released")
        } else {
            ("released", "committed")
        };
        if reservation.status == done {
            tx.commit().await?;
            return Ok(convert::reservation(&reservation, &items));
        }
        if reservation.status == refused {
            return Err(ProductError::FailedPrecondition(format!(
                "the order's reservation was already {refused}"
            )));
        }
        let mut ordered = items.clone();
        ordered.sort_by_key(|item| item.product_id);
        // A commit takes the units out of on-hand and reserved stock alike,
        // so availability stays; a release can bring a sold-out product back.
        let mut back_in_stock = Vec::new();
        for item in &ordered {
            let quantity = i64::from(item.quantity);
            let available = db::unreserve(&mut tx, item.product_id, quantity, commit).await?;
            let before = if commit {
                available
            } else {
                available - quantity
            };
            if in_stock_flipped(before, available) {
                back_in_stock.push(item.product_id);
            }
        }
        let reservation = db::settle_reservation(&mut tx, order_id, &items, commit, SYSTEM).await?;
        self.commit_announcing(tx, back_in_stock).await?;
        tracing::info!(order_id = %order_id, status = done, "reservation settled");
        Ok(convert::reservation(&reservation, &items))
    }
}

#[tonic::async_trait]
impl pb::product_service_server::ProductService for ProductService {
    async fn create_category(
        &self,
        request: Request<pb::CreateCategoryRequest>,
    ) -> Result<Response<pb::CreateCategoryResponse>, Status> {
        Ok(Response::new(self.category_create(request).await?))
    }

    async fn get_category(
        &self,
        request: Request<pb::GetCategoryRequest>,
    ) -> Result<Response<pb::GetCategoryResponse>, Status> {
        Ok(Response::new(self.category_get(request).await?))
    }

    async fn list_categories(
        &self,
        _request: Request<pb::ListCategoriesRequest>,
    ) -> Result<Response<pb::ListCategoriesResponse>, Status> {
        Ok(Response::new(self.category_list().await?))
    }

    async fn update_category(
        &self,
        request: Request<pb::UpdateCategoryRequest>,
    ) -> Result<Response<pb::UpdateCategoryResponse>, Status> {
        Ok(Response::new(self.category_update(request).await?))
    }

    async fn delete_category(
        &self,
        request: Request<pb::DeleteCategoryRequest>,
    ) -> Result<Response<pb::DeleteCategoryResponse>, Status> {
        Ok(Response::new(self.category_delete(request).await?))
    }

    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        Ok(Response::new(self.product_create(request).await?))
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        Ok(Response::new(self.product_get(request).await?))
    }

    async fn get_products(
        &self,
        request: Request<pb::GetProductsRequest>,
    ) -> Result<Response<pb::GetProductsResponse>, Status> {
        Ok(Response::new(self.product_batch(request).await?))
    }

    async fn update_product(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::UpdateProductResponse>, Status> {
        Ok(Response::new(self.product_update(request).await?))
    }

    async fn archive_product(
        &self,
        request: Request<pb::ArchiveProductRequest>,
    ) -> Result<Response<pb::ArchiveProductResponse>, Status> {
        Ok(Response::new(self.product_archive(request).await?))
    }

    async fn search_products(
        &self,
        request: Request<pb::SearchProductsRequest>,
    ) -> Result<Response<pb::SearchProductsResponse>, Status> {
        Ok(Response::new(self.product_search(request).await?))
    }

    async fn import_products(
        &self,
        request: Request<Streaming<pb::ImportProductsRequest>>,
    ) -> Result<Response<pb::ImportProductsResponse>, Status> {
        Ok(Response::new(self.import(request).await?))
    }

    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        Ok(Response::new(self.stock_get(request).await?))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        Ok(Response::new(self.stock_adjust(request).await?))
    }

    async fn list_stock_movements(
        &self,
        request: Request<pb::ListStockMovementsRequest>,
    ) -> Result<Response<pb::ListStockMovementsResponse>, Status> {
        Ok(Response::new(self.stock_movements(request).await?))
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        Ok(Response::new(self.reserve(request).await?))
    }

    async fn release_stock(
        &self,
        request: Request<pb::ReleaseStockRequest>,
    ) -> Result<Response<pb::ReleaseStockResponse>, Status> {
        let reservation = self
            .settle(request.metadata(), &request.get_ref().order_id, false)
            .await?;
        Ok(Response::new(pb::ReleaseStockResponse {
            reservation: Some(reservation),
        }))
    }

    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        let reservation = self
            .settle(request.metadata(), &request.get_ref().order_id, true)
            .await?;
        Ok(Response::new(pb::CommitReservationResponse {
            reservation: Some(reservation),
        }))
    }
}

/// Whether a stock movement from `before` to `after` available units changes
/// the product's `in_stock`, the only part of its view that stock decides.
fn in_stock_flipped(before: i64, after: i64) -> bool {
    (before > 0) != (after > 0)
}
