-- relayd shared state, schema 3: a pin's end travels with it.
-- `relayd policy pin --until` makes a pin that ends; without this column
-- the other instances would take it as a pin until unpinned.

ALTER TABLE learned_actions ADD COLUMN until timestamptz;  -- a pin's end; NULL: until unpinned
ALTER TABLE learned_actions ADD CHECK (until IS NULL OR action = 'pin');
