-- What the retention sweep deletes by, so it scans only what it deletes.
-- Sessions (refresh families) go a week after they end, by expiry or by
-- revocation; reset tokens a day after they were sent; login failures once
-- their window has passed and any lock has ended.
CREATE INDEX refresh_families_expires_idx ON refresh_families (expires_at);
CREATE INDEX refresh_families_revoked_idx ON refresh_families (revoked_at)
    WHERE revoked_at IS NOT NULL;
CREATE INDEX password_resets_created_idx ON password_resets (created_at);
CREATE INDEX login_failures_window_idx ON login_failures (window_start);
