-- The books: each merchant's fee plan (basis points of each approved payment, rounded half up,
-- plus a fixed part in minor units), reconciliations of a day's operations against a wallet's
-- statement (one row per day and wallet, claimed by one node), and the cases they open (one per
-- wallet, operation and kind of difference, so a day run again opens nothing twice). Indexes
-- list a day's operations in the order the books page through them.
ALTER TABLE merchants ADD COLUMN fee_bps INTEGER;
ALTER TABLE merchants ADD COLUMN fee_fixed_minor INTEGER;

CREATE TABLE reconciliations (
    id            INTEGER PRIMARY KEY,
    day           TEXT    NOT NULL,
    scope         TEXT    NOT NULL,
    node          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    claimed_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    gateway_lines INTEGER NOT NULL DEFAULT 0,
    wallet_lines  INTEGER NOT NULL DEFAULT 0,
    matched       INTEGER NOT NULL DEFAULT 0,
    mismatched    INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    UNIQUE (day, scope)
);

CREATE TABLE recon_cases (
    id             INTEGER PRIMARY KEY,
    day            TEXT    NOT NULL,
    scope          TEXT    NOT NULL,
    finding        TEXT    NOT NULL,
    operation      TEXT    NOT NULL,
    number         TEXT    NOT NULL,
    transaction_no TEXT    NOT NULL,
    merchant_no    TEXT,
    gateway        TEXT,
    wallet         TEXT,
    status         TEXT    NOT NULL DEFAULT 'open',
    opened_at      INTEGER NOT NULL,
    closed_at      INTEGER,
    note           TEXT,
    UNIQUE (scope, operation, number, finding)
);
CREATE INDEX recon_cases_status ON recon_cases (status, id);

CREATE INDEX payments_booked ON payments ((COALESCE(paid_at, updated_at)), id);
CREATE INDEX refunds_booked ON refunds (updated_at, id);
CREATE INDEX cancels_booked ON cancels (updated_at, id);
