-- A notification the provider refused for good (an SMTP 5xx answer, a
-- webhook's 4xx, an address that cannot be written): retrying it would be
-- refused the same way, so it is not retried, dead-lettered or replayed.
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check
    CHECK (status IN ('pending', 'sent', 'failed', 'dead_lettered', 'skipped', 'refused'));
