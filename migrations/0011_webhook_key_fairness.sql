-- Webhook deliveries are claimed fairly by key (issue 9 item 9): a claim walks the keys that
-- have pending deliveries (a loose index scan over key_id) and takes each key's oldest due
-- ones, up to what the dispatcher lets that key have in flight. This index serves both the
-- walk and each key's due deliveries, so a claim costs a few index probes per key however
-- deep one key's backlog is; it replaces the index on next_attempt_at alone, which only the
-- old oldest-first claim used.
CREATE INDEX webhook_deliveries_key_due_idx ON webhook_deliveries (key_id, next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
DROP INDEX webhook_deliveries_due_idx;
