-- The payment that paid for the order, recorded when the charge is
-- captured, so that order.paid can name it (a receipt or a refund refers to
-- the payment, not the order). Orders paid before this column stay NULL.
ALTER TABLE orders ADD COLUMN payment_id uuid;
