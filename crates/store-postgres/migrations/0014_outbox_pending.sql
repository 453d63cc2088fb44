-- Pending notifications by merchant and due time, for the lease: it lists the merchants with
-- work (one probe each) and reads only the first due rows of those below their limit, so its
-- cost no longer grows with the backlog of a merchant whose receiver is slow.
CREATE INDEX outbox_pending ON outbox (merchant_id, next_attempt_at, id) WHERE status = 'pending';
