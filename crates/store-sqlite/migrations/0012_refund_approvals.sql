-- Who may refund from the console, per merchant: NULL or 'immediate' (whoever may act),
-- 'approval' (a refund above approval_threshold_minor, or any without a threshold, waits for
-- a second person), 'disabled' (the merchant's staff cannot refund).
ALTER TABLE merchants ADD COLUMN refund_authority TEXT;
ALTER TABLE merchants ADD COLUMN approval_threshold_minor INTEGER;

-- Refunds asked for in the console that wait for a second person. form_key is the rendered
-- form's key: posted twice, one request; the refund made on approval carries it as its
-- reference (console-KEY), so an approval carried out twice refunds once.
CREATE TABLE refund_approvals (
    id              INTEGER PRIMARY KEY,
    payment_id      INTEGER NOT NULL REFERENCES payments (id),
    merchant_id     INTEGER NOT NULL REFERENCES merchants (id),
    transaction_no  TEXT    NOT NULL,
    amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
    currency        TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    form_key        TEXT    NOT NULL UNIQUE,
    requested_by    INTEGER NOT NULL,
    requested_login TEXT    NOT NULL,
    requested_at    INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    decided_by      INTEGER,
    decided_login   TEXT,
    decided_at      INTEGER,
    decision_reason TEXT,
    outcome         TEXT
);
CREATE INDEX refund_approvals_waiting ON refund_approvals (state, merchant_id, id);
CREATE INDEX refund_approvals_payment ON refund_approvals (payment_id, id);

-- The dashboard totals a day of payments by hour.
CREATE INDEX payments_created ON payments (created_at);
