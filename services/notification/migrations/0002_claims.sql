-- A delivery claims the notifications it is about to send for a while
-- instead of holding a row lock (and a pooled connection) across the send:
-- one that dies mid-send leaves them to the next delivery once the claim runs
-- out. NULL: nobody is sending it.
ALTER TABLE notifications ADD COLUMN claimed_until timestamptz;
