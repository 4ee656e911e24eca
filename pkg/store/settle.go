package store

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/tokens"
)

// The two statements on a worker's hot path: a job's start (async jobs and redeliveries)
// and its outcome with its charge, each for many jobs at once.

// StartJob marks a job running and counts the attempt, inserting the row if this is a sync
// job seen for the first time. If the job has already ended (a redelivery after it was
// recorded, or a cancel while it was queued) it changes nothing and returns the finished job
// with started=false, so the caller can replay its answer instead of calling upstream again.
func (s *Store) StartJob(ctx context.Context, j NewJob) (job Job, started bool, err error) {
	st, err := s.StartJobs(ctx, []NewJob{j})
	if err != nil {
		return Job{}, false, err
	}
	return st[0].Job, st[0].Started, nil
}

// Started is what StartJobs did with one job: its row, and whether it was started (false:
// it had already ended, and the row is the finished job).
type Started struct {
	Job     Job
	Started bool
}

// startSQL is StartJob for a batch of jobs, given as arrays.
const startSQL = `INSERT INTO jobs AS j
		(id, key_id, endpoint, model, async, status, attempts, request, metadata, webhook_url, created_at, started_at, deadline,
			holds_slot, batch_id, batch_line, custom_id)
	SELECT id, key_id, endpoint, model, async, 'running', GREATEST(attempt, 1), request::json, metadata::jsonb,
		NULLIF(webhook_url, ''), created_at, now(), deadline, holds_slot, NULLIF(batch_id, ''), batch_line, custom_id
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::text[], $8::text[],
		$9::timestamptz[], $10::timestamptz[], $11::int[], $12::bool[], $13::text[], $14::int[], $15::text[])
		AS t(id, key_id, endpoint, model, async, request, metadata, webhook_url, created_at, deadline, attempt, holds_slot,
			batch_id, batch_line, custom_id)
	ON CONFLICT (id) DO UPDATE SET status = 'running', attempts = GREATEST(j.attempts + 1, EXCLUDED.attempts),
		started_at = COALESCE(j.started_at, now())
	WHERE j.finished_at IS NULL
	RETURNING ` + jobColumns

// StartJobs is StartJob for many jobs in one statement and one commit. It is atomic: if any
// job is rejected, nothing is written and the error is returned (the same job twice in one
// batch is such an error). The results are in the order of js.
func (s *Store) StartJobs(ctx context.Context, js []NewJob) ([]Started, error) {
	n := len(js)
	var (
		ids, keys, endpoints, models, webhooks = make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n)
		requests, metadata = make([][]byte, n), make([][]byte, n)
		async, slots       = make([]bool, n), make([]bool, n)
		created, deadlines = make([]time.Time, n), make([]time.Time, n)
		attempts           = make([]int32, n)
		batchIDs, customs  = make([]string, n), make([]*string, n)
		lines              = make([]*int32, n)
	)
	for i := range js {
		j := &js[i]
		ids[i], keys[i], endpoints[i], models[i], webhooks[i] = j.ID, j.KeyID, j.Endpoint, j.Model, j.WebhookURL
		if len(j.Request) > 0 {
			requests[i] = j.Request
		}
		if j.Metadata != nil {
			b, err := json.Marshal(j.Metadata)
			if err != nil {
				return nil, fmt.Errorf("start job %s: %w", j.ID, err)
			}
			metadata[i] = b
		}
		async[i], slots[i], created[i], deadlines[i], attempts[i] = j.Async, j.HoldsSlot, j.CreatedAt, j.Deadline, int32(j.Attempt)
		batchIDs[i], lines[i], customs[i] = batchColumns(j)
	}
	rows, err := s.pool.Query(ctx, startSQL, ids, keys, endpoints, models, async, requests, metadata, webhooks,
		created, deadlines, attempts, slots, batchIDs, lines, customs)
	if err != nil {
		return nil, fmt.Errorf("start %d jobs: %w", n, classify(err))
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Job])
	if err != nil {
		return nil, fmt.Errorf("start %d jobs: %w", n, classify(err))
	}
	byID := make(map[string]*Job, len(got))
	for i := range got {
		byID[got[i].ID] = &got[i]
	}
	out := make([]Started, n)
	for i, id := range ids {
		if row := byID[id]; row != nil {
			out[i] = Started{Job: *row, Started: true}
			continue
		}
		row, err := s.jobByID(ctx, id) // already ended: nothing was changed
		if err != nil {
			return nil, fmt.Errorf("start job %s: %w", id, classify(err))
		}
		out[i] = Started{Job: row}
	}
	return out, nil
}

// Outcome is how a job ended.
type Outcome struct {
	JobID      string
	Status     string // succeeded, failed or canceled
	StatusCode int
	ChannelID  string
	// UpstreamModel is the model name the channel was called with, which is priced first
	// (the job's model, its alias, is the fallback); "" when no upstream was called.
	UpstreamModel string
	Response      json.RawMessage // the upstream's answer (JSON), if any
	Error         json.RawMessage // the API error object, if the job failed
	// Usage is recorded and, if Charge, priced and charged to the key.
	Usage  *tokens.Usage
	Charge bool
	// CacheHit marks an answer served from the response cache: its usage is recorded at $0.
	CacheHit bool
	// Job, if set, describes the job so that its row is created if it does not exist yet (a
	// sync job finishing on its first delivery has no row until now).
	Job *NewJob
}

// Finished is what FinishJob did.
type Finished struct {
	// Applied is false when the job had already ended (nothing changed, nothing charged).
	Applied bool
	CostUSD float64
}

// FinishJob records a job's outcome and, if o.Charge, writes its ledger row and adds its cost
// (from model_prices; 0 for an unpriced model) to the key's spend — atomically, in one
// statement. It applies at most once per job: a second call, for example from a
// redelivery, changes nothing and returns Applied=false. It returns ErrNotFound if o.Job is
// nil and the job has no row.
func (s *Store) FinishJob(ctx context.Context, o Outcome) (Finished, error) {
	fs, err := s.FinishJobs(ctx, []Outcome{o})
	if err != nil {
		return Finished{}, err
	}
	return fs[0], nil
}

// finishSQL records a batch of outcomes in one statement — creating a job's row if it has
// none yet (a sync job on its first delivery) — writes their ledger rows and adds their cost
// to each key's spend once per key. A job row is only changed while unfinished and the
// ledger is keyed by job id, so it applies at most once per job. The outcomes arrive as arrays.
const finishSQL = `WITH input AS (
		SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
			$8::text[], $9::bool[], $10::bool[], $11::text[], $12::text[], $13::text[], $14::text[], $15::timestamptz[],
			$16::timestamptz[], $17::int[], $18::bool[], $20::text[], $23::bigint[], $25::bool[], $26::text[], $27::int[],
			$28::text[])
		AS t(id, status, status_code, response, error, pt, ct, channel_id, charge, estimated, key_id, endpoint, model,
			request, created_at, deadline, attempt, holds_slot, upstream_model, reserved, cache_hit, batch_id, batch_line,
			custom_id)),
	priced AS (
		-- The upstream model's price, else the alias's, else the configured unpriced price.
		SELECT input.*, CASE WHEN input.cache_hit THEN 0 WHEN input.charge THEN
			COALESCE((input.pt * COALESCE(pu.input_usd_per_1m, pa.input_usd_per_1m, $21::numeric)
				+ input.ct * COALESCE(pu.output_usd_per_1m, pa.output_usd_per_1m, $22::numeric)) / 1000000, 0) END AS cost
		FROM input LEFT JOIN model_prices pu ON pu.model = NULLIF(input.upstream_model, '')
			LEFT JOIN model_prices pa ON pa.model = input.model),
	fin AS (
		INSERT INTO jobs AS j (id, key_id, endpoint, model, async, status, attempts, request, created_at, started_at,
			deadline, status_code, response, error, prompt_tokens, completion_tokens, channel_id, finished_at, cost_usd,
			holds_slot, batch_id, batch_line, custom_id)
		SELECT id, key_id, endpoint, model, false, status, GREATEST(attempt, 1), request::json, created_at, created_at,
			deadline, status_code, response::json, error::jsonb, pt, ct, NULLIF(channel_id, ''), now(), cost, holds_slot,
			NULLIF(batch_id, ''), batch_line, custom_id
		FROM priced
		ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, status_code = EXCLUDED.status_code,
			response = EXCLUDED.response, error = EXCLUDED.error, prompt_tokens = EXCLUDED.prompt_tokens,
			completion_tokens = EXCLUDED.completion_tokens, channel_id = EXCLUDED.channel_id, finished_at = now(),
			cost_usd = EXCLUDED.cost_usd
		WHERE j.finished_at IS NULL
		RETURNING j.id, j.key_id, j.model, j.channel_id, j.prompt_tokens, j.completion_tokens, j.cost_usd),
	led AS (
		INSERT INTO usage_ledger (job_id, key_id, model, channel_id, prompt_tokens, completion_tokens, cost_usd, estimated,
			team_id, cache_hit)
		SELECT fin.id, fin.key_id, fin.model, fin.channel_id, fin.prompt_tokens, fin.completion_tokens, fin.cost_usd,
			priced.estimated, (SELECT k.team_id FROM api_keys k WHERE k.id = fin.key_id), priced.cache_hit
		FROM fin JOIN priced ON priced.id = fin.id WHERE priced.charge
		ON CONFLICT (job_id) DO NOTHING
		RETURNING job_id, key_id, cost_usd, team_id),
	spend AS (
		-- One shard row per key (see migration 0006), in key order so that two batches on
		-- the same shard take their row locks in the same order and cannot deadlock.
		INSERT INTO key_spend AS ks (key_id, shard, spent_usd)
		SELECT key_id, $19, sum(cost_usd) FROM led GROUP BY key_id HAVING sum(cost_usd) > 0 ORDER BY key_id
		ON CONFLICT (key_id, shard) DO UPDATE SET spent_usd = ks.spent_usd + EXCLUDED.spent_usd RETURNING 1),
	days AS (
		-- The same per UTC day of $24 (now), for budget periods (migration 0014).
		INSERT INTO spend_days AS sd (subject, day, shard, spent_usd)
		-- A team's spend is kept the same way, under its id.
		SELECT subject, ($24::timestamptz AT TIME ZONE 'UTC')::date, $19, sum(cost_usd)
		FROM (SELECT key_id AS subject, cost_usd FROM led UNION ALL
			SELECT team_id, cost_usd FROM led WHERE team_id IS NOT NULL) s
		GROUP BY subject HAVING sum(cost_usd) > 0 ORDER BY subject
		ON CONFLICT (subject, day, shard) DO UPDATE SET spent_usd = sd.spent_usd + EXCLUDED.spent_usd RETURNING 1),
	corrections AS (
		-- Tokens admission reserved against a tokens-per-minute window, less what was used.
		-- The key's window and its team's.
		SELECT subject, sum(delta) AS delta FROM (
			SELECT unnest(ARRAY[priced.key_id, (SELECT k.team_id FROM api_keys k WHERE k.id = priced.key_id)]) AS subject,
				COALESCE(priced.pt, 0) + COALESCE(priced.ct, 0) - priced.reserved AS delta
			FROM fin JOIN priced ON priced.id = fin.id WHERE priced.reserved > 0) d
		WHERE subject IS NOT NULL GROUP BY subject),
	rates AS (
		-- Each correction goes to the window of $24 (now); a job that used fewer tokens than
		-- reserved gives the difference back (never below zero).
		INSERT INTO rate_windows AS w (subject, window_start, tokens)
		SELECT subject, date_trunc('minute', $24::timestamptz), GREATEST(delta, 0) FROM corrections ORDER BY subject
		ON CONFLICT (subject, window_start) DO UPDATE
			SET tokens = GREATEST(w.tokens + (SELECT delta FROM corrections c WHERE c.subject = w.subject), 0)
		RETURNING 1)
	SELECT fin.id, COALESCE(led.cost_usd::float8, 0) FROM fin LEFT JOIN led ON led.job_id = fin.id`

// spendShards is how many rows a key's spend is spread over (migration 0006). Two batches
// settling at once wait for each other only when they pick the same shard: 1 in 16.
const spendShards = 16

// FinishJobs is FinishJob for many jobs in one statement, so one round trip and one commit
// (one fsync) settle them all, and each key's spend is updated once (in one shard row). It is atomic: if
// any outcome is rejected, nothing is written and the error is returned; callers then settle
// the jobs one by one to isolate the bad one. The same job twice in one batch is such an error.
func (s *Store) FinishJobs(ctx context.Context, os []Outcome) ([]Finished, error) {
	n := len(os)
	var (
		jobIDs, statuses, channels, keys, endpoints, models = make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n)
		upstreamModels            = make([]string, n)
		codes, attempts           = make([]int32, n), make([]int32, n)
		responses, errs, requests = make([][]byte, n), make([][]byte, n), make([][]byte, n)
		pts, cts                  = make([]*int64, n), make([]*int64, n)
		charges, estimated, slots = make([]bool, n), make([]bool, n), make([]bool, n)
		created, deadlines        = make([]time.Time, n), make([]time.Time, n)
		reserved                  = make([]int64, n)
		hits                      = make([]bool, n)
		batchIDs, customs         = make([]string, n), make([]*string, n)
		lines                     = make([]*int32, n)
	)
	text := func(b json.RawMessage) []byte { // sent as text; nil is NULL
		if len(b) == 0 {
			return nil
		}
		return b
	}
	for i := range os {
		o := &os[i]
		j := o.Job
		if j == nil {
			row, err := s.jobByID(ctx, o.JobID)
			if err != nil {
				return nil, err
			}
			j = &NewJob{KeyID: row.KeyID, Endpoint: row.Endpoint, Model: row.Model, CreatedAt: row.CreatedAt,
				Deadline: row.Deadline}
		}
		jobIDs[i], statuses[i], codes[i], channels[i] = o.JobID, o.Status, int32(o.StatusCode), o.ChannelID
		upstreamModels[i] = o.UpstreamModel
		responses[i], errs[i], requests[i] = text(o.Response), text(o.Error), text(j.Request)
		if o.Usage != nil {
			pts[i], cts[i], estimated[i] = &o.Usage.PromptTokens, &o.Usage.CompletionTokens, o.Usage.Estimated
		}
		charges[i] = o.Charge && o.Usage != nil
		keys[i], endpoints[i], models[i] = j.KeyID, j.Endpoint, j.Model
		created[i], deadlines[i], attempts[i], slots[i] = j.CreatedAt, j.Deadline, int32(j.Attempt), j.HoldsSlot
		reserved[i], hits[i] = j.ReservedTokens, o.CacheHit
		batchIDs[i], lines[i], customs[i] = batchColumns(j)
	}
	rows, err := s.pool.Query(ctx, finishSQL, jobIDs, statuses, codes, responses, errs, pts, cts, channels, charges,
		estimated, keys, endpoints, models, requests, created, deadlines, attempts, slots, int16(rand.IntN(spendShards)),
		upstreamModels, s.unpricedIn, s.unpricedOut, reserved, time.Now(), hits, batchIDs, lines, customs)
	if err != nil {
		return nil, fmt.Errorf("finish %d jobs: %w", n, classify(err))
	}
	applied := map[string]float64{}
	for rows.Next() {
		var id string
		var cost float64
		if err := rows.Scan(&id, &cost); err != nil {
			rows.Close()
			return nil, fmt.Errorf("finish %d jobs: %w", n, err)
		}
		applied[id] = cost
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("finish %d jobs: %w", n, classify(err))
	}
	out := make([]Finished, n)
	for i, id := range jobIDs {
		cost, ok := applied[id]
		out[i] = Finished{Applied: ok, CostUSD: cost}
	}
	return out, nil
}

// batchColumns are j's batch_id, batch_line and custom_id: "" (NULL), nil, nil for a job
// that is no batch line.
func batchColumns(j *NewJob) (string, *int32, *string) {
	if j.BatchID == "" {
		return "", nil, nil
	}
	line, custom := int32(j.BatchLine), j.CustomID
	return j.BatchID, &line, &custom
}
