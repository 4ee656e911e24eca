-- Lighter writes on the hot path (measured with `make bench`; see BENCHMARKS.md).

-- Requests and answers are stored as sent: json keeps the text, without building jsonb's
-- binary form for every job. Nothing queries inside them.
ALTER TABLE jobs ALTER COLUMN request TYPE json USING request::json,
                 ALTER COLUMN response TYPE json USING response::json;

-- Only jobs that took a max_concurrency slot need the trigger that frees it.
ALTER TABLE jobs ADD COLUMN holds_slot boolean NOT NULL DEFAULT false;
DROP TRIGGER jobs_release_slot_on_finish ON jobs;
DROP TRIGGER jobs_release_slot_on_insert ON jobs;
CREATE TRIGGER jobs_release_slot_on_finish AFTER UPDATE OF finished_at ON jobs FOR EACH ROW
    WHEN (OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL AND NEW.holds_slot)
    EXECUTE FUNCTION release_key_slot();
CREATE TRIGGER jobs_release_slot_on_insert AFTER INSERT ON jobs FOR EACH ROW
    WHEN (NEW.finished_at IS NOT NULL AND NEW.holds_slot)
    EXECUTE FUNCTION release_key_slot();

-- Retention deletes by id, whose order is creation time, through the primary key.
DROP INDEX jobs_finished_at_idx;
