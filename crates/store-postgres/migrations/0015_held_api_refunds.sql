-- Whether a refund asked through a merchant API waits for a second person too, when the
-- merchant's refund authority says it would from the console (NULL or 0: the APIs refund at
-- once; 1: such a refund is reserved and held until it is decided).
ALTER TABLE merchants ADD COLUMN api_refund_approval BIGINT;

-- The held refund an approval decides, for a refund asked through a merchant API: the refund
-- row exists (in progress, its amount reserved) from the request on, and its approval row is
-- written in the same transaction. Such an approval is asked by no console user
-- (requested_by 0, requested_login 'API'). A refund is held while its approval is not
-- approved; the janitor and the books leave it alone.
ALTER TABLE refund_approvals ADD COLUMN refund_id BIGINT REFERENCES refunds (id);
CREATE UNIQUE INDEX refund_approvals_refund ON refund_approvals (refund_id);
