-- The origins (scheme://host[:port], separated by spaces) whose browser pages may read the
-- merchant's answers (CORS), besides the gateway's own list. NULL: none.
ALTER TABLE merchants ADD COLUMN cors_origins TEXT;
