-- Fixture of the saga baseline (run after the three migrations): one
-- category and :nprod products with ample stock, numbered in bench_ids.
INSERT INTO prod.categories (id, name, slug) VALUES (gen_random_uuid(), 'Bench', 'bench');
INSERT INTO prod.products (id, sku, name, description, price, currency, category_id)
  SELECT gen_random_uuid(), 'BENCH-' || i, 'Bench product ' || i, 'A product of the saga baseline', 1000 + i, 'USD', (SELECT id FROM prod.categories)
  FROM generate_series(1, :nprod) AS i;
INSERT INTO prod.stock (product_id, on_hand) SELECT id, 1000000000 FROM prod.products;
CREATE TABLE prod.bench_ids AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM prod.products;
ALTER TABLE prod.bench_ids ADD PRIMARY KEY (n);
