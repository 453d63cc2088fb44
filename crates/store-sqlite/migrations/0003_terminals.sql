-- tillgate schema, version 3: POS terminals, the commands sent to them, handshake nonces, and
-- merchant request keys that must stay unique forever (YabandPay's request_id).

CREATE TABLE terminals (
    id            INTEGER PRIMARY KEY,
    merchant_id   INTEGER NOT NULL REFERENCES merchants (id),
    tid           TEXT    NOT NULL UNIQUE,
    secret_sealed TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    online_node   TEXT,
    last_seen_at  INTEGER
);

CREATE TABLE terminal_commands (
    id          INTEGER PRIMARY KEY,
    command_id  TEXT    NOT NULL UNIQUE,
    tid         TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    payment_id  INTEGER NOT NULL REFERENCES payments (id),
    cancel_id   INTEGER,
    payload     TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'open',
    outcome     TEXT,
    message     TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX terminal_commands_open ON terminal_commands (tid, state);

CREATE TABLE terminal_nonces (
    id    INTEGER PRIMARY KEY,
    tid   TEXT    NOT NULL,
    nonce TEXT    NOT NULL,
    at    INTEGER NOT NULL,
    UNIQUE (tid, nonce)
);

CREATE TABLE request_keys (
    id          INTEGER PRIMARY KEY,
    scope       TEXT    NOT NULL,
    request_key TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (scope, request_key)
);

-- The janitor's look-ups of operations still waiting for the wallet.
CREATE INDEX payments_pending ON payments (updated_at) WHERE state = 'pending';
CREATE INDEX refunds_in_progress ON refunds (updated_at) WHERE state = 1;
CREATE INDEX cancels_in_progress ON cancels (updated_at) WHERE state = 1;
