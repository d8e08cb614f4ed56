-- When a pending refund's task was last queued again (see refunds::sweep): a
-- task that was dead-lettered, or lost with its queue, would otherwise leave
-- the refund pending, and its amount reserved, for good.
ALTER TABLE refunds ADD COLUMN requeued_at timestamptz;
CREATE INDEX refunds_pending_idx ON refunds (created_at) WHERE status = 'pending';
