package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Job statuses.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusCanceled  = "canceled"
)

// Job is a job row.
type Job struct {
	ID               string            `db:"id"`
	KeyID            string            `db:"key_id"`
	Endpoint         string            `db:"endpoint"`
	Model            string            `db:"model"`
	Async            bool              `db:"async"`
	Status           string            `db:"status"`
	Attempts         int               `db:"attempts"`
	CancelRequested  bool              `db:"cancel_requested"`
	Metadata         map[string]string `db:"metadata"`
	WebhookURL       *string           `db:"webhook_url"`
	StatusCode       *int              `db:"status_code"`
	Response         json.RawMessage   `db:"response"`
	Error            json.RawMessage   `db:"error"`
	PromptTokens     *int64            `db:"prompt_tokens"`
	CompletionTokens *int64            `db:"completion_tokens"`
	CostUSD          *float64          `db:"cost_usd"`
	CreatedAt        time.Time         `db:"created_at"`
	StartedAt        *time.Time        `db:"started_at"`
	FinishedAt       *time.Time        `db:"finished_at"`
	Deadline         time.Time         `db:"deadline"`
}

// Terminal reports whether the job has ended.
func (j *Job) Terminal() bool { return j.FinishedAt != nil }

const jobColumns = `id, key_id, endpoint, model, async, status, attempts, cancel_requested, metadata, webhook_url, status_code,
	response, error, prompt_tokens, completion_tokens, cost_usd::float8, created_at, started_at, finished_at, deadline`

// NewJob describes a job about to run or be queued.
type NewJob struct {
	ID         string
	KeyID      string
	Endpoint   string
	Model      string
	Async      bool
	Request    json.RawMessage
	Metadata   map[string]string
	WebhookURL string
	CreatedAt  time.Time
	Deadline   time.Time
}

// CreateQueuedJob inserts an async job as queued, before it is published, so that it reads
// "queued" from any process the moment its submitter answers. With a non-empty idemKey, a
// second submission by the same key within 24 h returns the first job and created=false;
// two racing submissions get one job.
func (s *Store) CreateQueuedJob(ctx context.Context, j NewJob, idemKey string) (job Job, created bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if idemKey != "" {
			// The row lock taken by ON CONFLICT … DO UPDATE serialises racing submissions: the
			// loser waits for the winner's commit, then sees its job id.
			var jobID string
			if err := tx.QueryRow(ctx, `INSERT INTO idempotency_keys (key_id, idem_key, job_id) VALUES ($1, $2, $3)
				ON CONFLICT (key_id, idem_key) DO UPDATE
				SET job_id = CASE WHEN idempotency_keys.created_at < now() - interval '24 hours'
				                  THEN EXCLUDED.job_id ELSE idempotency_keys.job_id END,
				    created_at = CASE WHEN idempotency_keys.created_at < now() - interval '24 hours'
				                  THEN now() ELSE idempotency_keys.created_at END
				RETURNING job_id`, j.KeyID, idemKey, j.ID).Scan(&jobID); err != nil {
				return fmt.Errorf("claim idempotency key: %w", err)
			}
			if jobID != j.ID {
				rows, err := tx.Query(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1`, jobID)
				if err != nil {
					return err
				}
				job, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Job])
				return err
			}
		}
		var webhook *string
		if j.WebhookURL != "" {
			webhook = &j.WebhookURL
		}
		rows, err := tx.Query(ctx, `INSERT INTO jobs
			(id, key_id, endpoint, model, async, status, request, metadata, webhook_url, created_at, deadline)
			VALUES ($1, $2, $3, $4, true, 'queued', $5, $6, $7, $8, $9) RETURNING `+jobColumns,
			j.ID, j.KeyID, j.Endpoint, j.Model, j.Request, j.Metadata, webhook, j.CreatedAt, j.Deadline)
		if err != nil {
			return fmt.Errorf("insert job: %w", err)
		}
		job, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Job])
		created = err == nil
		return err
	})
	if err != nil {
		return Job{}, false, fmt.Errorf("create job %s: %w", j.ID, err)
	}
	return job, created, nil
}

// StartJob marks a job running and counts the attempt, inserting the row if this is a sync
// job seen for the first time. If the job has already ended (a redelivery after it was
// recorded, or a cancel while it was queued) it changes nothing and returns the finished job
// with started=false, so the caller can replay its answer instead of calling upstream again.
func (s *Store) StartJob(ctx context.Context, j NewJob) (job Job, started bool, err error) {
	rows, err := s.pool.Query(ctx, `INSERT INTO jobs
		(id, key_id, endpoint, model, async, status, attempts, request, metadata, webhook_url, created_at, started_at, deadline)
		VALUES ($1, $2, $3, $4, $5, 'running', 1, $6, $7, $8, $9, now(), $10)
		ON CONFLICT (id) DO UPDATE SET status = 'running', attempts = jobs.attempts + 1,
			started_at = COALESCE(jobs.started_at, now())
		WHERE jobs.finished_at IS NULL
		RETURNING `+jobColumns,
		j.ID, j.KeyID, j.Endpoint, j.Model, j.Async, j.Request, j.Metadata, nilIfEmpty(j.WebhookURL), j.CreatedAt, j.Deadline)
	if err != nil {
		return Job{}, false, fmt.Errorf("start job %s: %w", j.ID, classify(err))
	}
	job, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Job])
	if errors.Is(err, pgx.ErrNoRows) {
		job, err = s.jobByID(ctx, j.ID)
		return job, false, err
	}
	if err != nil {
		return Job{}, false, fmt.Errorf("start job %s: %w", j.ID, classify(err))
	}
	return job, true, nil
}

// Usage is the token count of one job.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	// Estimated is true when the upstream reported no usage and Sluice counted it itself.
	Estimated bool `json:"-"`
}

// Outcome is how a job ended.
type Outcome struct {
	JobID      string
	Status     string // succeeded, failed or canceled
	StatusCode int
	ChannelID  string
	Response   json.RawMessage // the upstream's answer (JSON), if any
	Error      json.RawMessage // the API error object, if the job failed
	// Usage is recorded and, if Charge, priced and charged to the key.
	Usage  *Usage
	Charge bool
}

// FinishJob records a job's outcome and, if o.Charge, writes its ledger row and adds its cost
// (from model_prices; 0 for an unpriced model) to the key's spend — all in one statement, so
// it is atomic. It applies at most once per job: a second call, for example from a
// redelivery, changes nothing and returns applied=false.
func (s *Store) FinishJob(ctx context.Context, o Outcome) (costUSD float64, applied bool, err error) {
	var pt, ct *int64
	estimated := false
	if o.Usage != nil {
		pt, ct, estimated = &o.Usage.PromptTokens, &o.Usage.CompletionTokens, o.Usage.Estimated
	}
	charge := o.Charge && o.Usage != nil
	var n int64
	err = s.pool.QueryRow(ctx, `WITH fin AS (
			UPDATE jobs SET status = $2, status_code = $3, response = $4, error = $5,
				prompt_tokens = $6::bigint, completion_tokens = $7::bigint, channel_id = NULLIF($8, ''),
				finished_at = now(),
				cost_usd = CASE WHEN $9::bool THEN COALESCE((
					SELECT ($6::bigint * p.input_usd_per_1m + $7::bigint * p.output_usd_per_1m) / 1000000
					FROM model_prices p WHERE p.model = jobs.model), 0) END
			WHERE id = $1 AND finished_at IS NULL
			RETURNING id, key_id, model, channel_id, prompt_tokens, completion_tokens, cost_usd),
		led AS (
			INSERT INTO usage_ledger (job_id, key_id, model, channel_id, prompt_tokens, completion_tokens, cost_usd, estimated)
			SELECT id, key_id, model, channel_id, prompt_tokens, completion_tokens, cost_usd, $10 FROM fin WHERE $9::bool
			ON CONFLICT (job_id) DO NOTHING
			RETURNING key_id, cost_usd),
		spend AS (
			UPDATE api_keys k SET spent_usd = k.spent_usd + led.cost_usd FROM led WHERE k.id = led.key_id RETURNING 1)
		SELECT (SELECT count(*) FROM fin), COALESCE((SELECT cost_usd::float8 FROM led), 0)`,
		o.JobID, o.Status, o.StatusCode, nilIfEmptyJSON(o.Response), nilIfEmptyJSON(o.Error), pt, ct, o.ChannelID,
		charge, estimated).Scan(&n, &costUSD)
	if err != nil {
		return 0, false, fmt.Errorf("finish job %s: %w", o.JobID, classify(err))
	}
	return costUSD, n == 1, nil
}

// Job returns the job id if it belongs to keyID, or ErrNotFound.
func (s *Store) Job(ctx context.Context, keyID, id string) (Job, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1 AND key_id = $2`, id, keyID)
	if err != nil {
		return Job{}, fmt.Errorf("read job %s: %w", id, err)
	}
	return collectJob(rows, id)
}

func (s *Store) jobByID(ctx context.Context, id string) (Job, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1`, id)
	if err != nil {
		return Job{}, fmt.Errorf("read job %s: %w", id, err)
	}
	return collectJob(rows, id)
}

func collectJob(rows pgx.Rows, id string) (Job, error) {
	j, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Job])
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, ErrNotFound
	}
	if err != nil {
		return Job{}, fmt.Errorf("read job %s: %w", id, err)
	}
	return j, nil
}

// ExpireOverdue ends, as failed with a 504 timeout error, every job still unfinished grace
// after its deadline: a safety net for jobs whose message was lost to a crash between insert
// and publish, or that ran out of deliveries. It returns the ids it ended.
func (s *Store) ExpireOverdue(ctx context.Context, grace time.Duration) ([]string, error) {
	rows, err := s.pool.Query(ctx, `UPDATE jobs SET status = 'failed', status_code = 504, finished_at = now(),
			error = '{"message":"the job did not finish before its deadline","type":"timeout_error","code":"job_timeout"}'
		WHERE finished_at IS NULL AND deadline < now() - make_interval(secs => $1)
		RETURNING id`, grace.Seconds())
	if err != nil {
		return nil, fmt.Errorf("expire overdue jobs: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("expire overdue jobs: %w", err)
	}
	return out, nil
}

func nilIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nilIfEmptyJSON(b json.RawMessage) any {
	if len(b) == 0 {
		return nil
	}
	return string(b) // text → jsonb; a []byte would be sent as bytea
}

// ListJobs returns up to limit of a key's jobs, newest first, optionally only those with
// status, starting after the job id after (the cursor). hasMore says whether more follow.
func (s *Store) ListJobs(ctx context.Context, keyID, status, after string, limit int) (jobs []Job, hasMore bool, err error) {
	rows, err := s.pool.Query(ctx, `SELECT `+jobColumns+` FROM jobs
		WHERE key_id = $1 AND ($2 = '' OR status = $2) AND ($3 = '' OR id < $3)
		ORDER BY id DESC LIMIT $4`, keyID, status, after, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list jobs: %w", err)
	}
	jobs, err = pgx.CollectRows(rows, pgx.RowToStructByPos[Job])
	if err != nil {
		return nil, false, fmt.Errorf("list jobs: %w", err)
	}
	if len(jobs) > limit {
		return jobs[:limit], true, nil
	}
	return jobs, false, nil
}

// canceledError is the error object of a canceled job.
const canceledError = `{"message":"the job was canceled","type":"canceled","code":"job_canceled"}`

// CancelJob cancels a key's job. A queued job ends canceled at once (it will never run); a
// running job is flagged, and the returned job still reads running until its worker aborts
// it; a finished job is returned unchanged. It returns ErrNotFound if the key has no such job.
func (s *Store) CancelJob(ctx context.Context, keyID, id string) (Job, error) {
	rows, err := s.pool.Query(ctx, `UPDATE jobs SET
			status = CASE WHEN status = 'queued' THEN 'canceled' ELSE status END,
			finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END,
			status_code = CASE WHEN status = 'queued' THEN 499 ELSE status_code END,
			error = CASE WHEN status = 'queued' THEN $3::jsonb ELSE error END,
			cancel_requested = cancel_requested OR finished_at IS NULL
		WHERE id = $1 AND key_id = $2 RETURNING `+jobColumns, id, keyID, canceledError)
	if err != nil {
		return Job{}, fmt.Errorf("cancel job %s: %w", id, err)
	}
	return collectJob(rows, id)
}

// AbandonJob records that a sync caller left before its job ended: if the job has not
// started it is stored as canceled, so no worker will run it; if it is running it is
// flagged for cancellation.
func (s *Store) AbandonJob(ctx context.Context, j NewJob) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO jobs (id, key_id, endpoint, model, async, status, request, created_at,
			deadline, finished_at, status_code, error, cancel_requested)
		VALUES ($1, $2, $3, $4, false, 'canceled', $5, $6, $7, now(), 499,
			'{"message":"the client closed the request","type":"canceled","code":"client_closed_request"}', true)
		ON CONFLICT (id) DO UPDATE SET cancel_requested = true WHERE jobs.finished_at IS NULL`,
		j.ID, j.KeyID, j.Endpoint, j.Model, j.Request, j.CreatedAt, j.Deadline)
	if err != nil {
		return fmt.Errorf("abandon job %s: %w", j.ID, classify(err))
	}
	return nil
}

// DeleteFinishedBefore removes jobs that ended before t (the retention period), in batches,
// and returns how many it removed. Ledger rows are kept: they are the bill.
func (s *Store) DeleteFinishedBefore(ctx context.Context, t time.Time, batch int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM jobs WHERE id IN (
		SELECT id FROM jobs WHERE finished_at < $1 LIMIT $2)`, t, batch)
	if err != nil {
		return 0, fmt.Errorf("delete old jobs: %w", err)
	}
	return tag.RowsAffected(), nil
}
