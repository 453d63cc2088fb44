-- tillgate schema, version 2: notifications that are never lost, unified-API apps, and the
-- dialect-owned facts kept with payments, refunds and cancels.

ALTER TABLE merchants ADD COLUMN notify_schedule TEXT;

ALTER TABLE payments ADD COLUMN dialect TEXT NOT NULL DEFAULT 'pockyt';
ALTER TABLE payments ADD COLUMN extra TEXT;
ALTER TABLE refunds ADD COLUMN notify_url TEXT;
ALTER TABLE refunds ADD COLUMN extra TEXT;
CREATE INDEX refunds_merchant_no ON refunds (merchant_id, refund_no);
ALTER TABLE cancels ADD COLUMN notify_url TEXT;
ALTER TABLE cancels ADD COLUMN extra TEXT;

CREATE TABLE apps (
    id            INTEGER PRIMARY KEY,
    merchant_id   INTEGER NOT NULL REFERENCES merchants (id),
    app_id        TEXT    NOT NULL UNIQUE,
    secret_sealed TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

ALTER TABLE outbox ADD COLUMN dialect TEXT NOT NULL DEFAULT 'pockyt';
ALTER TABLE outbox ADD COLUMN leased_until INTEGER;
ALTER TABLE outbox ADD COLUMN last_attempt_at INTEGER;
ALTER TABLE outbox ADD COLUMN delivered_at INTEGER;
CREATE INDEX outbox_payment ON outbox (payment_id, id);

CREATE TABLE notification_attempts (
    id            INTEGER PRIMARY KEY,
    outbox_id     INTEGER NOT NULL REFERENCES outbox (id),
    attempt       INTEGER NOT NULL,
    at            INTEGER NOT NULL,
    http_status   INTEGER,
    response_head TEXT    NOT NULL,
    latency_ms    INTEGER NOT NULL,
    error         TEXT
);
CREATE INDEX notification_attempts_outbox ON notification_attempts (outbox_id, id);
