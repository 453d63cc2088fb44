-- The master key's check value: a known text sealed with the master key when the database is
-- first used, so that a gateway or a command given another key refuses to start instead of
-- failing on every merchant's request. One row at most.
CREATE TABLE key_check (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    sealed     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
