-- The console: its users (argon2id password hashes, a role, and for merchant roles the one
-- merchant they belong to), their sessions (only a hash of the cookie's value is kept) and the
-- audit log of every sign-in and action.
CREATE TABLE console_users (
    id            INTEGER PRIMARY KEY,
    login         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    merchant_id   INTEGER REFERENCES merchants (id),
    -- For a merchant role, the stores it is confined to (separated by spaces); NULL: all.
    stores        TEXT,
    disabled      INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until  INTEGER,
    created_at    INTEGER NOT NULL
);

CREATE TABLE console_sessions (
    id_hash      TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES console_users (id),
    csrf         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);

CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY,
    at             INTEGER NOT NULL,
    user_id        INTEGER,
    login          TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    transaction_no TEXT,
    detail         TEXT    NOT NULL,
    address        TEXT
);
CREATE INDEX audit_log_transaction ON audit_log (transaction_no) WHERE transaction_no IS NOT NULL;
CREATE INDEX audit_log_user ON audit_log (user_id, id);

-- The transactions page lists a merchant's payments newest first, a page after another.
CREATE INDEX payments_merchant_id ON payments (merchant_id, id);
