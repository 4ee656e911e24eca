-- Per-key limits enforced across every ingress process, in Postgres (no Redis).

-- One row per admitted job of a key with max_concurrency: a lease that ends with the job.
CREATE TABLE key_slots (
    job_id     text PRIMARY KEY,
    key_id     text NOT NULL REFERENCES api_keys (id),
    expires_at timestamptz NOT NULL            -- the job's deadline plus grace: a crash cannot leak a slot
);
CREATE INDEX key_slots_key_idx ON key_slots (key_id, expires_at);

-- Requests admitted per key per minute, for the sliding-window rpm limit.
CREATE TABLE key_rate_windows (
    key_id       text NOT NULL REFERENCES api_keys (id),
    window_start timestamptz NOT NULL,
    count        integer NOT NULL,
    PRIMARY KEY (key_id, window_start)
);

-- A job that ends frees its slot, whichever path ended it (worker, cancel, sweeper, abandon).
CREATE FUNCTION release_key_slot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM key_slots WHERE job_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_release_slot_on_finish AFTER UPDATE OF finished_at ON jobs FOR EACH ROW
    WHEN (OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL)
    EXECUTE FUNCTION release_key_slot();
CREATE TRIGGER jobs_release_slot_on_insert AFTER INSERT ON jobs FOR EACH ROW
    WHEN (NEW.finished_at IS NOT NULL)
    EXECUTE FUNCTION release_key_slot();
