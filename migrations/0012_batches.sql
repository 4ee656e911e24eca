-- Files and batches (issue 12): uploaded JSONL files, stored as 1 MiB bytea chunks, and
-- batches run by Sluice itself, each line a job on the SLUICE_BATCH_LINES stream.
CREATE TABLE files (
    id         text PRIMARY KEY,
    key_id     text NOT NULL,
    purpose    text NOT NULL,
    filename   text NOT NULL,
    bytes      bigint NOT NULL DEFAULT 0,
    lines      integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX files_key_idx ON files (key_id, id DESC);

-- A file's content, in order. A chunk is at most 1 MiB, so neither an upload nor a download
-- ever holds more than one chunk of it.
CREATE TABLE file_chunks (
    file_id text NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    seq     integer NOT NULL,
    data    bytea NOT NULL,
    PRIMARY KEY (file_id, seq)
);

CREATE TABLE batches (
    id                text PRIMARY KEY,
    key_id            text NOT NULL,
    -- openai (/v1/batches) or anthropic (/v1/messages/batches): the shapes it is shown in.
    kind              text NOT NULL DEFAULT 'openai',
    endpoint          text NOT NULL,
    input_file_id     text NOT NULL,
    completion_window text NOT NULL DEFAULT '24h',
    status            text NOT NULL CHECK (status IN ('validating', 'failed', 'in_progress', 'finalizing',
                          'completed', 'expired', 'cancelling', 'cancelled')),
    metadata          jsonb,
    -- Where batch.completed / failed / expired / cancelled is POSTed (signed like job
    -- webhooks): the batch's event is a jobs row (endpoint 'event', batch_line -1) whose
    -- webhook delivery the jobs' trigger creates, in the statement that ends the batch.
    webhook_url       text,
    errors            jsonb,
    total             integer NOT NULL DEFAULT 0,
    completed         integer NOT NULL DEFAULT 0,
    failed            integer NOT NULL DEFAULT 0,
    -- Lines published to the stream so far: where a runner that took over resumes.
    published         integer NOT NULL DEFAULT 0,
    output_file_id    text,
    error_file_id     text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    in_progress_at    timestamptz,
    finalizing_at     timestamptz,
    completed_at      timestamptz,
    failed_at         timestamptz,
    expired_at        timestamptz,
    cancelling_at     timestamptz,
    cancelled_at      timestamptz,
    -- The batch runner (in some worker) holding the batch until then.
    lease_until       timestamptz,
    notified          boolean NOT NULL DEFAULT false
);
CREATE INDEX batches_key_idx ON batches (key_id, id DESC);
CREATE INDEX batches_active_idx ON batches (lease_until)
    WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling');

-- A batch line's job row is written once, with its outcome (as a sync job's), and says which
-- line of which batch it is; the output files are read from these rows in line order.
ALTER TABLE jobs ADD COLUMN batch_id text, ADD COLUMN batch_line integer, ADD COLUMN custom_id text;
CREATE INDEX jobs_batch_idx ON jobs (batch_id, batch_line) WHERE batch_id IS NOT NULL;
