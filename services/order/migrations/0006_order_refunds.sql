-- The refunds an admin asked for, by the id the payment service knows them
-- by. A refund requested again with its idempotency key finds its row and
-- is neither sent to the payment service as a new refund nor counted twice
-- in the order's refunded_amount.
CREATE TABLE order_refunds (
    id          uuid PRIMARY KEY,
    order_id    uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    amount      bigint NOT NULL CHECK (amount > 0),
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX order_refunds_order_idx ON order_refunds (order_id);
