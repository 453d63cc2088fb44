-- A credential's previous secret after a rotation, still accepted until until_at so that its
-- users can move to the new one. kind: store (key merchant_no/store_no), app (app_id),
-- terminal (tid). The secret stays sealed for its credential, as it was.
CREATE TABLE credential_previous (
    kind     TEXT    NOT NULL,
    key      TEXT    NOT NULL,
    sealed   TEXT    NOT NULL,
    until_at BIGINT  NOT NULL,
    PRIMARY KEY (kind, key)
);
