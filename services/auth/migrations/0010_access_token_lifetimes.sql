-- The access-token lifetimes (ACCESS_TOKEN_TTL_SECONDS) auth processes sign
-- with, and until when each may still sign with it: a process records its
-- own ahead of time and again before that runs out. Ended sessions are
-- listed for as long as the longest lifetime whose tokens may still be
-- live, so lowering the setting does not let the tokens signed before the
-- change outlive their session's end.
CREATE TABLE access_token_lifetimes (
    seconds      bigint PRIMARY KEY CHECK (seconds > 0),
    signed_until timestamptz NOT NULL
);
