-- SearchProducts with only q: db::search in services/product/src/db.rs with
-- the default relevance sort and a page of 20 (21 rows fetched).
SELECT * FROM (SELECT p.id, p.sku, p.name, p.description, p.price, p.currency, p.category_id, p.attributes::text AS attributes, p.images, p.active, (s.on_hand - s.reserved > 0) AS in_stock, p.created_at, p.updated_at, ts_rank(p.search, websearch_to_tsquery('english', :q)) AS rank FROM products p JOIN stock s ON s.product_id = p.id WHERE TRUE AND p.active AND p.search @@ websearch_to_tsquery('english', :q)) t ORDER BY t.rank DESC, t.id LIMIT 21;
