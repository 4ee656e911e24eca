-- Channel rate limits (issue 15): an upstream account's requests and tokens per minute, and
-- max_concurrency now held across every worker. Windows are in rate_windows under the
-- channel's id; calls in flight are leases, one row per call, which a worker deletes when
-- the call returns and which expire if the worker dies first.
ALTER TABLE channels ADD COLUMN rpm integer, ADD COLUMN tpm integer;

CREATE TABLE channel_slots (
    call_id    text PRIMARY KEY,
    channel_id text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX channel_slots_channel_idx ON channel_slots (channel_id, expires_at);
