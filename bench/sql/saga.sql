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
INSERT INTO ord.orders (id, user_id, status, currency, total, shipping_address, shipping_address_id, payment_method, next_attempt_at) VALUES (:oid, :uid, 'PENDING', 'USD', :pprice, '{"name":"Bench","line1":"1 Bench Street","city":"Springfield","postal_code":"12345","country":"US"}', :aid, 'pm_card_ok', now() + make_interval(secs => 30));
INSERT INTO ord.order_items (order_id, position, product_id, sku, name, unit_price, quantity, line_total) VALUES (:oid, 0, :pid, :psku, :pname, :pprice, 1, :pprice);
INSERT INTO ord.order_history (order_id, from_status, to_status, actor, reason) VALUES (:oid, NULL, 'PENDING', 'customer', 'placed');
SELECT pg_notify('gocommerce_order_status', :oid);
COMMIT;
-- ReserveStock in the product service.
BEGIN;
INSERT INTO prod.reservations (order_id, status) VALUES (:oid, 'reserved') ON CONFLICT (order_id) DO NOTHING;
INSERT INTO prod.reservation_items (order_id, position, product_id, quantity) VALUES (:oid, 0, :pid, 1);
UPDATE prod.stock SET reserved = reserved + 1, updated_at = now() WHERE product_id = :pid AND on_hand - reserved >= 1;
INSERT INTO prod.stock_movements (id, product_id, kind, on_hand_delta, reserved_delta, order_id, actor) VALUES (gen_random_uuid(), :pid, 'reservation', 0, 1, :oid, 'order');
COMMIT;
-- PENDING -> RESERVED, then the charge is started.
BEGIN;
SELECT status FROM ord.orders WHERE id = :oid AND status = 'PENDING' FOR UPDATE;
UPDATE ord.orders SET status = 'RESERVED', updated_at = now() WHERE id = :oid;
INSERT INTO ord.order_history (order_id, from_status, to_status, actor, reason) VALUES (:oid, 'PENDING', 'RESERVED', 'saga', 'stock reserved');
SELECT pg_notify('gocommerce_order_status', :oid);
COMMIT;
UPDATE ord.orders SET charge_started = true, updated_at = now() WHERE id = :oid AND status = 'RESERVED' AND NOT compensating AND NOT cancel_requested;
-- Charge in the payment service: the pending row, then the outcome with its event.
INSERT INTO pay.payments (id, order_id, user_id, amount, currency, method, status) VALUES (gen_random_uuid(), :oid, :uid, :pprice, 'USD', 'pm_card_ok', 'pending') ON CONFLICT (order_id) DO NOTHING;
BEGIN;
UPDATE pay.payments SET status = 'succeeded', processor_reference = 'ch_bench', attempts = attempts + 1, updated_at = now() WHERE order_id = :oid AND status = 'pending';
INSERT INTO pay.outbox (id, routing_key, content_type, payload) VALUES (gen_random_uuid(), 'payment.succeeded', 'application/json', convert_to('{"order_id":"' || :oid || '"}', 'UTF8'));
COMMIT;
UPDATE ord.orders SET payment_captured = true, updated_at = now() WHERE id = :oid;
-- CommitReservation in the product service.
BEGIN;
SELECT status FROM prod.reservations WHERE order_id = :oid FOR UPDATE;
UPDATE prod.reservations SET status = 'committed', updated_at = now() WHERE order_id = :oid;
UPDATE prod.stock SET on_hand = on_hand - 1, reserved = reserved - 1, updated_at = now() WHERE product_id = :pid;
INSERT INTO prod.stock_movements (id, product_id, kind, on_hand_delta, reserved_delta, order_id, actor) VALUES (gen_random_uuid(), :pid, 'commit', -1, -1, :oid, 'order');
COMMIT;
-- RESERVED -> PAID with the order.paid event, then the saga settles.
BEGIN;
SELECT status FROM ord.orders WHERE id = :oid AND status = 'RESERVED' FOR UPDATE;
UPDATE ord.orders SET status = 'PAID', updated_at = now() WHERE id = :oid;
INSERT INTO ord.order_history (order_id, from_status, to_status, actor, reason) VALUES (:oid, 'RESERVED', 'PAID', 'saga', 'payment captured');
INSERT INTO ord.outbox (id, routing_key, content_type, payload) VALUES (gen_random_uuid(), 'order.paid', 'application/json', convert_to('{"order_id":"' || :oid || '"}', 'UTF8'));
SELECT pg_notify('gocommerce_order_status', :oid);
COMMIT;
UPDATE ord.orders SET next_attempt_at = NULL, saga_attempts = 0 WHERE id = :oid;
