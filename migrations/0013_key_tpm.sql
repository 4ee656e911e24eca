-- Tokens per minute per key (issue 15), and one table of per-minute windows for every
-- rate-limited subject (a key, later a team or a channel), requests and tokens side by side.

ALTER TABLE api_keys ADD COLUMN tpm integer;

-- subject is the id of what is limited (key_…, team_…, ch_…): ids carry their kind's prefix,
-- so they never collide. tokens is what admission reserved (an estimate from the request's
-- bytes) corrected at settlement by what the upstream reported.
CREATE TABLE rate_windows (
    subject      text NOT NULL,
    window_start timestamptz NOT NULL,
    requests     integer NOT NULL DEFAULT 0,
    tokens       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, window_start)
);
