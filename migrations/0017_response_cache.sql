-- Response cache (issue 15): a key may opt in for all its requests (cache_ttl_s), and a
-- ledger row records whether the answer came from the cache (at $0, no upstream call).
ALTER TABLE api_keys ADD COLUMN cache_ttl_s integer;
ALTER TABLE usage_ledger ADD COLUMN cache_hit boolean NOT NULL DEFAULT false;
