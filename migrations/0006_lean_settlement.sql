-- Cheaper settlement (measured with BenchmarkFinishJobsBatch and make bench; see BENCHMARKS.md).
--
-- Every settled job inserted a jobs row and a ledger row, and each insert checked its
-- foreign key to api_keys with a row lock (SELECT … FOR KEY SHARE) on the key's row — the
-- row whose spend the same statement then updates. Keys are never deleted (a key is
-- revoked, and its row stays), and a job's key id comes from an authenticated key, so the
-- check could never fail; it only cost a lock per row. The other tables keep theirs.
ALTER TABLE jobs DROP CONSTRAINT jobs_key_id_fkey;
ALTER TABLE usage_ledger DROP CONSTRAINT usage_ledger_key_id_fkey;

-- A key's spend is kept in shards: settlement adds a batch's cost to one shard row, picked
-- at random, instead of to the key's own row. Two settlers (in one worker or several)
-- used to queue on that one row lock, each waiting for the other's commit; now they only
-- meet when they pick the same shard.
CREATE TABLE key_spend (
    key_id    text NOT NULL,
    shard     smallint NOT NULL,
    spent_usd numeric(20, 9) NOT NULL,
    PRIMARY KEY (key_id, shard)
);

-- A key's spend is what api_keys.spent_usd holds plus its shards. The column stays: workers
-- from before this migration still add to it while a deployment is being upgraded (workers
-- first, then ingresses), and ingresses from before it still read it. Nothing new writes it.
CREATE FUNCTION key_spent(key text) RETURNS numeric LANGUAGE sql STABLE AS
    $$ SELECT COALESCE((SELECT spent_usd FROM api_keys WHERE id = key), 0)
            + COALESCE((SELECT sum(spent_usd) FROM key_spend WHERE key_id = key), 0) $$;
