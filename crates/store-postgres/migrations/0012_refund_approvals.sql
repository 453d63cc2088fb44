-- Who may refund from the console, per merchant: NULL or 'immediate' (whoever may act),
-- 'approval' (a refund above approval_threshold_minor, or any without a threshold, waits for
-- a second person), 'disabled' (the merchant's staff cannot refund).
ALTER TABLE merchants ADD COLUMN refund_authority TEXT;
ALTER TABLE merchants ADD COLUMN approval_threshold_minor BIGINT;

-- Refunds asked for in the console that wait for a second person. form_key is the rendered
-- form's key: posted twice, one request; the refund made on approval carries it as its
-- reference (console-KEY), so an approval carried out twice refunds once.
CREATE TABLE refund_approvals (
    id              BIGSERIAL PRIMARY KEY,
    payment_id      BIGINT  NOT NULL REFERENCES payments (id),
    merchant_id     BIGINT  NOT NULL REFERENCES merchants (id),
    transaction_no  TEXT    NOT NULL,
    amount_minor    BIGINT  NOT NULL CHECK (amount_minor > 0),
    currency        TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    form_key        TEXT    NOT NULL UNIQUE,
    requested_by    BIGINT  NOT NULL,
    requested_login TEXT    NOT NULL,
    requested_at    BIGINT  NOT NULL,
    state           TEXT    NOT NULL,
    decided_by      BIGINT,
    decided_login   TEXT,
    decided_at      BIGINT,
    decision_reason TEXT,
    outcome         TEXT
);
CREATE INDEX refund_approvals_waiting ON refund_approvals (state, merchant_id, id);
CREATE INDEX refund_approvals_payment ON refund_approvals (payment_id, id);

-- The dashboard totals a day of payments by hour.
CREATE INDEX payments_created ON payments (created_at);
