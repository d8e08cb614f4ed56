-- GetProduct: db::find_product in services/product/src/db.rs. The id comes
-- from bench_ids (a primary-key lookup in the same statement) because
-- pgbench cannot hold a list of UUIDs.
\set n random(1, :nprod)
SELECT p.id, p.sku, p.name, p.description, p.price, p.currency, p.category_id, p.attributes::text AS attributes, p.images, p.active, (s.on_hand - s.reserved > 0) AS in_stock, p.created_at, p.updated_at FROM products p JOIN stock s ON s.product_id = p.id WHERE p.id = (SELECT id FROM bench_ids WHERE n = :n);
