-- tillgate schema, version 1. Times are UTC milliseconds since the Unix epoch; money is integer
-- minor units with its ISO 4217 currency beside it.

CREATE TABLE merchants (
    id          INTEGER PRIMARY KEY,
    merchant_no TEXT    NOT NULL UNIQUE,
    zone        TEXT    NOT NULL,
    sandbox     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

CREATE TABLE stores (
    id           INTEGER PRIMARY KEY,
    merchant_id  INTEGER NOT NULL REFERENCES merchants (id),
    store_no     TEXT    NOT NULL,
    token_sealed TEXT    NOT NULL,
    UNIQUE (merchant_id, store_no)
);

CREATE TABLE payments (
    id               INTEGER PRIMARY KEY,
    transaction_no   TEXT    NOT NULL UNIQUE,
    merchant_id      INTEGER NOT NULL REFERENCES merchants (id),
    merchant_no      TEXT    NOT NULL,
    store_no         TEXT    NOT NULL,
    reference        TEXT    NOT NULL,
    amount_minor     INTEGER NOT NULL CHECK (amount_minor > 0),
    currency         TEXT    NOT NULL,
    settle_currency  TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    refunded_minor   INTEGER NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    reserved_minor   INTEGER NOT NULL DEFAULT 0 CHECK (reserved_minor >= 0),
    cancel_in_flight TEXT,
    description      TEXT,
    notify_url       TEXT,
    vendor           TEXT,
    fingerprint      TEXT    NOT NULL,
    pay_fingerprint  TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    paid_at          INTEGER,
    version          INTEGER NOT NULL DEFAULT 0,
    -- The last line of defence of atomic refund admission: the database itself refuses a row
    -- whose refunds exceed its amount.
    CHECK (refunded_minor + reserved_minor <= amount_minor),
    UNIQUE (merchant_id, reference)
);

CREATE TABLE refunds (
    id               INTEGER PRIMARY KEY,
    refund_no        TEXT    NOT NULL UNIQUE,
    payment_id       INTEGER NOT NULL REFERENCES payments (id),
    merchant_id      INTEGER NOT NULL REFERENCES merchants (id),
    refund_reference TEXT,
    amount_minor     INTEGER NOT NULL CHECK (amount_minor > 0),
    currency         TEXT    NOT NULL,
    state            INTEGER NOT NULL,
    fingerprint      TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX refunds_merchant_reference ON refunds (merchant_id, refund_reference)
    WHERE refund_reference IS NOT NULL;
CREATE INDEX refunds_payment ON refunds (payment_id);

CREATE TABLE cancels (
    id          INTEGER PRIMARY KEY,
    cancel_no   TEXT    NOT NULL UNIQUE,
    payment_id  INTEGER NOT NULL REFERENCES payments (id),
    merchant_id INTEGER NOT NULL REFERENCES merchants (id),
    kind        TEXT    NOT NULL,
    state       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX cancels_payment ON cancels (payment_id);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    payment_id INTEGER NOT NULL REFERENCES payments (id),
    at         INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    detail     TEXT    NOT NULL
);
CREATE INDEX events_payment ON events (payment_id, id);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    merchant_id     INTEGER NOT NULL REFERENCES merchants (id),
    payment_id      INTEGER NOT NULL REFERENCES payments (id),
    topic           TEXT    NOT NULL,
    target_url      TEXT    NOT NULL,
    snapshot        TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
