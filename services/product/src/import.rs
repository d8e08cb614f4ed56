//! ImportProducts: a client stream of products, created or updated by SKU.
//!
//! A bad message is rejected on its own and never aborts the others. Good
//! ones are validated as they arrive and written in batches: one transaction
//! per batch (a commit per product would make a large import crawl), with a
//! savepoint per product, so a product the database refuses is rolled back
//! alone, exactly as if it had its own transaction. No transaction is open
//! while waiting for the client. A broken stream first commits what arrived
//! before it, so those products stay written.

use std::collections::HashMap;

use gocommerce_proto::product::v1 as pb;
use tonic::{Request, Streaming};
use uuid::Uuid;

use crate::db;
use crate::error::ProductError;
use crate::input::{self, CategoryRef, NewProduct};
use crate::service::{ProductService, require_admin};

/// Products written per transaction.
const BATCH: usize = 500;

#[derive(Debug)]
struct Pending {
    line: u32,
    product: NewProduct,
}

#[derive(Debug, Default)]
struct Import {
    actor: String,
    batch: Vec<Pending>,
    /// Category references already looked up: the import file usually names
    /// a handful of categories thousands of times.
    categories: HashMap<CategoryRef, Option<Uuid>>,
    summary: pb::ImportProductsResponse,
}

impl Import {
    fn reject(&mut self, line: u32, reason: impl Into<String>, sku: &str) {
        self.summary.rejected.push(pb::ImportRejection {
            line,
            reason: reason.into(),
            sku: sku.trim().to_owned(),
        });
    }

    fn accept(&mut self, message: pb::ImportProductsRequest) {
        let line = message.line;
        match message.item {
            None => self.reject(line, "product: is required", ""),
            Some(pb::import_products_request::Item::ParseError(reason)) => {
                let reason = if reason.trim().is_empty() {
                    "the line could not be parsed".to_owned()
                } else {
                    reason
                };
                self.reject(line, reason, "");
            }
            Some(pb::import_products_request::Item::Product(raw)) => match input::product(&raw) {
                Ok(product) => self.batch.push(Pending { line, product }),
                Err(error) => self.reject(line, error.to_string(), &raw.sku),
            },
        }
    }
}

impl ProductService {
    pub(crate) async fn import(
        &self,
        request: Request<Streaming<pb::ImportProductsRequest>>,
    ) -> Result<pb::ImportProductsResponse, ProductError> {
        let admin = require_admin(request.metadata())?;
        let mut stream = request.into_inner();
        let mut import = Import {
            actor: admin.user_id.to_string(),
            ..Import::default()
        };
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    import.accept(message);
                    if import.batch.len() >= BATCH {
                        self.flush(&mut import).await?;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    self.flush(&mut import).await?;
                    tracing::warn!(
                        created = import.summary.created,
                        updated = import.summary.updated,
                        error = status.message(),
                        "import stream broke"
                    );
                    return Err(ProductError::Status(status));
                }
            }
        }
        self.flush(&mut import).await?;
        let mut summary = import.summary;
        summary.rejected.sort_by_key(|r| r.line);
        tracing::info!(
            created = summary.created,
            updated = summary.updated,
            rejected = summary.rejected.len(),
            "import finished"
        );
        Ok(summary)
    }

    #[tracing::instrument(skip_all, fields(size = import.batch.len()), err)]
    async fn flush(&self, import: &mut Import) -> Result<(), ProductError> {
        if import.batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        let mut ids = Vec::new();
        let mut slugs = Vec::new();
        for pending in &import.batch {
            let category = &pending.product.category;
            if import.categories.contains_key(category) {
                continue;
            }
            match category {
                CategoryRef::Id(id) if !ids.contains(id) => ids.push(*id),
                CategoryRef::Slug(slug) if !slugs.contains(slug) => slugs.push(slug.clone()),
                _ => {}
            }
        }
        if !ids.is_empty() || !slugs.is_empty() {
            let found = db::resolve_categories(&mut tx, &ids, &slugs).await?;
            for id in ids {
                let exists = found.iter().any(|(found, _)| *found == id);
                import
                    .categories
                    .insert(CategoryRef::Id(id), exists.then_some(id));
            }
            for slug in slugs {
                let id = found.iter().find(|(_, s)| *s == slug).map(|(id, _)| *id);
                import.categories.insert(CategoryRef::Slug(slug), id);
            }
        }

        let batch = std::mem::take(&mut import.batch);
        for Pending { line, product } in batch {
            let Some(category_id) = import.categories.get(&product.category).copied().flatten()
            else {
                import.reject(line, product.category.describe(), &product.sku);
                continue;
            };
            sqlx::query("SAVEPOINT import_item")
                .execute(&mut *tx)
                .await?;
            match db::upsert_product(&mut tx, &product, category_id, &import.actor).await {
                Ok(created) => {
                    sqlx::query("RELEASE SAVEPOINT import_item")
                        .execute(&mut *tx)
                        .await?;
                    if created {
                        import.summary.created += 1;
                    } else {
                        import.summary.updated += 1;
                    }
                }
                Err(ProductError::Database(error)) => return Err(ProductError::Database(error)),
                Err(refused) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT import_item")
                        .execute(&mut *tx)
                        .await?;
                    import.reject(line, refused.to_string(), &product.sku);
                }
            }
        }
        db::notify_all_changed(&mut tx).await?;
        tx.commit().await?;
        self.cache.clear();
        Ok(())
    }
}
