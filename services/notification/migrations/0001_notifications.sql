-- Notifications (one per event and channel) and the inbox of handled events.

CREATE TABLE notifications (
    id         uuid PRIMARY KEY,
    event_id   uuid NOT NULL,
    event_type text NOT NULL,
    user_id    uuid NOT NULL,
    channel    text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    status     text NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'dead_lettered', 'skipped')),
    recipient  text NOT NULL,
    subject    text,
    body       text NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz,
    -- One notification per event and channel, however often the event comes.
    CONSTRAINT notifications_event_channel_key UNIQUE (event_id, channel)
);
CREATE INDEX notifications_user_idx ON notifications (user_id, created_at DESC, id DESC);
CREATE INDEX notifications_status_idx ON notifications (status, created_at DESC, id DESC);
CREATE INDEX notifications_created_idx ON notifications (created_at DESC, id DESC);

-- Events fully handled: a redelivery finds its id here and does nothing.
CREATE TABLE inbox (
    event_id     uuid PRIMARY KEY,
    event_type   text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
