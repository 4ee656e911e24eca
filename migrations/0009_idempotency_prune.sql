-- Idempotency keys are kept 24 h (API.md); the retention sweep deletes older ones in
-- batches, oldest first, which needs them ordered by age.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
