-- The console: its users (argon2id password hashes, a role, and for merchant roles the one
-- merchant they belong to), their sessions (only a hash of the cookie's value is kept) and the
-- audit log of every sign-in and action.
CREATE TABLE console_users (
    id            BIGSERIAL PRIMARY KEY,
    login         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    merchant_id   BIGINT  REFERENCES merchants (id),
    -- For a merchant role, the stores it is confined to (separated by spaces); NULL: all.
    stores        TEXT,
    disabled      BIGINT  NOT NULL DEFAULT 0,
    failed_logins BIGINT  NOT NULL DEFAULT 0,
    locked_until  BIGINT,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE console_sessions (
    id_hash      TEXT    PRIMARY KEY,
    user_id      BIGINT  NOT NULL REFERENCES console_users (id),
    csrf         TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    last_seen_at BIGINT  NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);

CREATE TABLE audit_log (
    id             BIGSERIAL PRIMARY KEY,
    at             BIGINT  NOT NULL,
    user_id        BIGINT,
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
