-- Teams (issue 15): a team has its own budget, budget period, model allowlist, rpm and tpm;
-- a key belongs to at most one team, and a request must fit both.
CREATE TABLE teams (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    budget_usd    numeric(20, 9),
    budget_period text CHECK (budget_period IN ('daily', 'weekly', 'monthly')),
    models        text[],
    rpm           integer,
    tpm           integer,
    created_at    timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE api_keys ADD COLUMN team_id text REFERENCES teams (id) ON DELETE SET NULL;
CREATE INDEX api_keys_team_idx ON api_keys (team_id) WHERE team_id IS NOT NULL;

-- The team a job's key belonged to when the job was settled, for usage by team.
ALTER TABLE usage_ledger ADD COLUMN team_id text;
