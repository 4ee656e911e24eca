-- Budget periods (issue 15): a key's budget may restart each day, week (from Monday) or
-- month, UTC. Spend is also kept per UTC day, so that the spend of any period is the sum of
-- at most 31 rows; the lifetime spend stays in key_spend.
ALTER TABLE api_keys ADD COLUMN budget_period text CHECK (budget_period IN ('daily', 'weekly', 'monthly'));

-- subject is a key's (or a team's) id. Settlement adds a batch's cost to one shard row of
-- the day, picked at random, as it does for key_spend.
CREATE TABLE spend_days (
    subject   text NOT NULL,
    day       date NOT NULL,
    shard     smallint NOT NULL,
    spent_usd numeric(20, 9) NOT NULL,
    PRIMARY KEY (subject, day, shard)
);
