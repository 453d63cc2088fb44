-- A store's default currency (ISO 4217 code): what an add that names no currency or settle
-- currency is in. NULL: USD.
ALTER TABLE stores ADD COLUMN default_currency TEXT;
