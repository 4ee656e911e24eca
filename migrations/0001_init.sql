-- Sluice schema, version 1.

CREATE TABLE api_keys (
    id              text PRIMARY KEY,
    name            text NOT NULL DEFAULT '',
    key_hash        bytea NOT NULL UNIQUE,          -- SHA-256 of the secret; the secret itself is never stored
    key_hint        text NOT NULL,                  -- "sk-sl-…abcd", for display
    webhook_secret  bytea NOT NULL,                 -- AES-GCM sealed with SLUICE_ENCRYPTION_KEY
    budget_usd      numeric(20, 9),                 -- NULL: no budget
    spent_usd       numeric(20, 9) NOT NULL DEFAULT 0,
    models          text[],                         -- NULL: every model
    rpm             integer,
    max_concurrency integer,
    expires_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

CREATE TABLE channels (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    provider        text NOT NULL,
    base_url        text NOT NULL DEFAULT '',
    api_key         bytea,                          -- AES-GCM sealed upstream key
    api_key_hint    text NOT NULL DEFAULT '',
    models          text[] NOT NULL DEFAULT '{}',
    model_map       jsonb NOT NULL DEFAULT '{}',
    priority        integer NOT NULL DEFAULT 0,
    weight          integer NOT NULL DEFAULT 1 CHECK (weight > 0),
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE model_prices (
    model             text PRIMARY KEY,
    input_usd_per_1m  numeric(20, 9) NOT NULL CHECK (input_usd_per_1m >= 0),
    output_usd_per_1m numeric(20, 9) NOT NULL CHECK (output_usd_per_1m >= 0),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id                text PRIMARY KEY,
    key_id            text NOT NULL REFERENCES api_keys (id),
    endpoint          text NOT NULL,
    model             text NOT NULL,
    async             boolean NOT NULL DEFAULT false,
    status            text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    attempts          integer NOT NULL DEFAULT 0,
    cancel_requested  boolean NOT NULL DEFAULT false,
    request           jsonb,
    metadata          jsonb,
    webhook_url       text,
    status_code       integer,
    response          jsonb,
    error             jsonb,
    prompt_tokens     bigint,
    completion_tokens bigint,
    cost_usd          numeric(20, 9),
    channel_id        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    deadline          timestamptz NOT NULL
);
CREATE INDEX jobs_key_id_idx ON jobs (key_id, id DESC);
CREATE INDEX jobs_unfinished_idx ON jobs (deadline) WHERE finished_at IS NULL;
CREATE INDEX jobs_finished_at_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- One row per charged job: the primary key is what makes a redelivered job cost nothing twice.
CREATE TABLE usage_ledger (
    job_id            text PRIMARY KEY,
    key_id            text NOT NULL REFERENCES api_keys (id),
    model             text NOT NULL,
    channel_id        text,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cost_usd          numeric(20, 9) NOT NULL,
    estimated         boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_ledger_key_created_idx ON usage_ledger (key_id, created_at);

CREATE TABLE idempotency_keys (
    key_id     text NOT NULL REFERENCES api_keys (id),
    idem_key   text NOT NULL,
    job_id     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, idem_key)
);
