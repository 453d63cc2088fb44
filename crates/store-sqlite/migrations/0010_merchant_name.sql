-- A merchant's name as its customers know it, shown on the hosted payment pages. NULL: the
-- pages show the merchant number.
ALTER TABLE merchants ADD COLUMN display_name TEXT;
