-- Webhook deliveries, version 2.
--
-- A job with a webhook URL gets exactly one delivery row, created by a trigger in the same
-- transaction that sets its finished_at, whichever statement does it (FinishJob, CancelJob of
-- a queued job, ExpireOverdue, or any later path). Dispatchers claim due rows with
-- FOR UPDATE SKIP LOCKED and push next_attempt_at forward by a lease while they attempt them.

CREATE TABLE webhook_deliveries (
    job_id          text PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE, -- retention removes both
    key_id          text NOT NULL REFERENCES api_keys (id),                  -- whose secret signs the body
    url             text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,                              -- attempts claimed so far
    next_attempt_at timestamptz NOT NULL DEFAULT now(),                      -- due time, or the end of a claim's lease
    last_error      text,
    last_status     integer,                                                 -- NULL: no HTTP answer
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    gave_up_at      timestamptz
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;

-- search_path is pinned to the schema the migration ran in, so the trigger finds its table
-- whatever search_path the session that finishes a job has.
CREATE FUNCTION enqueue_webhook_delivery() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO webhook_deliveries (job_id, key_id, url, next_attempt_at)
    VALUES (NEW.id, NEW.key_id, NEW.webhook_url, now())
    ON CONFLICT (job_id) DO NOTHING;
    RETURN NULL;
END
$$;

-- An UPDATE trigger cannot see OLD on INSERT, hence two triggers on one function.
CREATE TRIGGER jobs_webhook_on_finish AFTER UPDATE OF finished_at ON jobs FOR EACH ROW
    WHEN (OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL AND NEW.webhook_url IS NOT NULL)
    EXECUTE FUNCTION enqueue_webhook_delivery();
CREATE TRIGGER jobs_webhook_on_insert AFTER INSERT ON jobs FOR EACH ROW
    WHEN (NEW.finished_at IS NOT NULL AND NEW.webhook_url IS NOT NULL)
    EXECUTE FUNCTION enqueue_webhook_delivery();
