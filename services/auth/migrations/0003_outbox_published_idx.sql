-- Published events are kept for a week and then deleted by the outbox relay
-- (gocommerce_platform::outbox::sweep); this finds them without reading the
-- whole table.
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
