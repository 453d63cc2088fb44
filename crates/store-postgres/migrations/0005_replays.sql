-- The exact-replay guard: signed requests that carry no key of the merchant's, remembered by
-- a digest of their signature for a window, with the answer they got (a copy within the
-- window gets that answer again instead of acting). And the merchant's refund policy: whether
-- its refunds must carry its own refund reference (NULL: the gateway's default).
CREATE TABLE replays (
    merchant_id  BIGINT NOT NULL REFERENCES merchants (id),
    digest       TEXT   NOT NULL,
    first_at     BIGINT NOT NULL,
    status       BIGINT,
    content_type TEXT,
    body         BYTEA,
    PRIMARY KEY (merchant_id, digest)
);
CREATE INDEX replays_first_at ON replays (first_at);
ALTER TABLE merchants ADD COLUMN refund_reference_required BIGINT;
