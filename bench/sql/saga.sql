-- One order placed and driven to PAID: the transactions the order saga and
-- the product and payment services issue for a one-item order, reconstructed
-- from services/{order,product,payment}/src/db.rs. The three services'
-- tables live in schemas ord, prod and pay of one database so that one
-- pgbench client can play a whole saga.
\set n random(1, :nprod)
SELECT gen_random_uuid() AS oid, gen_random_uuid() AS uid, gen_random_uuid() AS aid \gset
-- Placement: the order service prices the items (GetProducts).
SELECT p.id AS pid, p.sku AS psku, p.name AS pname, p.price AS pprice FROM prod.products p JOIN prod.stock s ON s.product_id = p.id WHERE p.id = (SELECT id FROM prod.bench_ids WHERE n = :n) \gset
BEGIN;
WITH inserted AS (INSERT INTO ord.orders (id, user_id, status, currency, total, shipping_address, shipping_address_id, payment_method, next_attempt_at) VALUES (:oid, :uid, 'PENDING', 'USD', :pprice, '{"name":"Bench","line1":"1 Bench Street","city":"Springfield","postal_code":"12345","country":"US"}', :aid, 'pm_card_ok', now() + make_interval(secs => 30)) RETURNING *), lines AS (INSERT INTO ord.order_items (order_id, position, product_id, sku, name, unit_price, quantity, line_total) SELECT :oid, (ordinality - 1)::int, product_id, sku, name, unit_price, quantity, line_total FROM UNNEST(ARRAY[:pid]::uuid[], ARRAY[:psku]::text[], ARRAY[:pname]::text[], ARRAY[:pprice]::bigint[], ARRAY[1]::int[], ARRAY[:pprice]::bigint[]) WITH ORDINALITY AS i(product_id, sku, name, unit_price, quantity, line_total, ordinality)), recorded AS (INSERT INTO ord.order_history (order_id, from_status, to_status, actor, reason) SELECT id, NULL, 'PENDING', 'customer', 'order placed' FROM inserted RETURNING order_id) SELECT inserted.*, (SELECT pg_notify('gocommerce_order_status', order_id::text) FROM recorded) IS NULL AS notified FROM inserted;
WITH inserted AS (INSERT INTO ord.outbox (id, routing_key, content_type, payload) VALUES (gen_random_uuid(), 'order.created', 'application/json', convert_to('{"order_id":"' || :oid || '"}', 'UTF8')) RETURNING id) SELECT pg_notify('gocommerce_outbox', '') FROM inserted;
COMMIT;
-- ReserveStock in the product service.
BEGIN;
INSERT INTO prod.reservations (order_id, status) VALUES (:oid, 'reserved') ON CONFLICT (order_id) DO NOTHING;
UPDATE prod.stock SET reserved = reserved + 1, updated_at = now() WHERE product_id = :pid AND on_hand - reserved >= 1;
WITH items AS (INSERT INTO prod.reservation_items (order_id, position, product_id, quantity) VALUES (:oid, 1, :pid, 1)) INSERT INTO prod.stock_movements (id, product_id, kind, on_hand_delta, reserved_delta, reason, order_id, actor) VALUES (gen_random_uuid(), :pid, 'reservation', 0, 1, '', :oid, 'system');
COMMIT;
-- PENDING -> RESERVED with the charge marked started, its history row and
-- the watchers' notification: one statement (db.rs `transition`).
WITH previous AS (SELECT id, status FROM ord.orders WHERE id = :oid AND status = ANY('{PENDING}') FOR UPDATE), changed AS (UPDATE ord.orders o SET status = 'RESERVED', cancel_reason = COALESCE(NULL, o.cancel_reason), carrier = COALESCE(NULL, o.carrier), tracking_number = COALESCE(NULL, o.tracking_number), shipped_at = CASE WHEN false THEN now() ELSE o.shipped_at END, delivered_at = CASE WHEN false THEN now() ELSE o.delivered_at END, refunded_amount = COALESCE(NULL, o.refunded_amount), next_attempt_at = CASE WHEN false THEN NULL ELSE o.next_attempt_at END, charge_started = o.charge_started OR (true AND NOT o.compensating AND NOT o.cancel_requested), payment_captured = o.payment_captured OR false, payment_id = COALESCE(NULL, o.payment_id), updated_at = now() FROM previous p WHERE o.id = p.id RETURNING o.*, p.status AS previous_status), recorded AS (INSERT INTO ord.order_history (order_id, from_status, to_status, actor, reason) SELECT id, previous_status, 'RESERVED', 'system', 'stock reserved' FROM changed RETURNING order_id) SELECT changed.*, (SELECT pg_notify('gocommerce_order_status', order_id::text) FROM recorded) IS NULL AS notified FROM changed;
-- Charge in the payment service: the pending row, then the outcome with its event.
INSERT INTO pay.payments (id, order_id, user_id, amount, currency, method, status) VALUES (gen_random_uuid(), :oid, :uid, :pprice, 'USD', 'pm_card_ok', 'pending') ON CONFLICT (order_id) DO NOTHING;
BEGIN;
UPDATE pay.payments SET status = 'succeeded', processor_reference = 'ch_bench', attempts = attempts + 1, updated_at = now() WHERE order_id = :oid AND status = 'pending';
WITH inserted AS (INSERT INTO pay.outbox (id, routing_key, content_type, payload) VALUES (gen_random_uuid(), 'payment.succeeded', 'application/json', convert_to('{"order_id":"' || :oid || '"}', 'UTF8')) RETURNING id) SELECT pg_notify('gocommerce_outbox', '') FROM inserted;
COMMIT;
-- CommitReservation in the product service.
BEGIN;
WITH r AS (SELECT order_id, status, created_at, updated_at FROM prod.reservations WHERE order_id = :oid FOR UPDATE) SELECT r.*, ARRAY(SELECT product_id FROM prod.reservation_items i WHERE i.order_id = r.order_id ORDER BY position) AS products, ARRAY(SELECT quantity FROM prod.reservation_items i WHERE i.order_id = r.order_id ORDER BY position) AS quantities FROM r;
UPDATE prod.stock SET reserved = reserved - 1, on_hand = on_hand - 1, updated_at = now() WHERE product_id = :pid RETURNING on_hand - reserved;
WITH moved AS (INSERT INTO prod.stock_movements (id, product_id, kind, on_hand_delta, reserved_delta, reason, order_id, actor) VALUES (gen_random_uuid(), :pid, 'commit', -1, -1, '', :oid, 'system')) UPDATE prod.reservations SET status = 'committed', updated_at = now() WHERE order_id = :oid RETURNING order_id, status, created_at, updated_at;
COMMIT;
-- RESERVED -> PAID with the capture, history, notification and the
-- order.paid event; the saga settles in the same statement.
BEGIN;
WITH previous AS (SELECT id, status FROM ord.orders WHERE id = :oid AND status = ANY('{RESERVED}') FOR UPDATE), changed AS (UPDATE ord.orders o SET status = 'PAID', cancel_reason = COALESCE(NULL, o.cancel_reason), carrier = COALESCE(NULL, o.carrier), tracking_number = COALESCE(NULL, o.tracking_number), shipped_at = CASE WHEN false THEN now() ELSE o.shipped_at END, delivered_at = CASE WHEN false THEN now() ELSE o.delivered_at END, refunded_amount = COALESCE(NULL, o.refunded_amount), next_attempt_at = CASE WHEN true THEN NULL ELSE o.next_attempt_at END, charge_started = o.charge_started OR (false AND NOT o.compensating AND NOT o.cancel_requested), payment_captured = o.payment_captured OR true, payment_id = COALESCE(gen_random_uuid(), o.payment_id), updated_at = now() FROM previous p WHERE o.id = p.id RETURNING o.*, p.status AS previous_status), recorded AS (INSERT INTO ord.order_history (order_id, from_status, to_status, actor, reason) SELECT id, previous_status, 'PAID', 'system', 'payment captured' FROM changed RETURNING order_id) SELECT changed.*, (SELECT pg_notify('gocommerce_order_status', order_id::text) FROM recorded) IS NULL AS notified FROM changed;
WITH inserted AS (INSERT INTO ord.outbox (id, routing_key, content_type, payload) VALUES (gen_random_uuid(), 'order.paid', 'application/json', convert_to('{"order_id":"' || :oid || '"}', 'UTF8')) RETURNING id) SELECT pg_notify('gocommerce_outbox', '') FROM inserted;
COMMIT;
