package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/ids"
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

// listColumns is jobColumns without the response body (read as null).
var listColumns = strings.Replace(jobColumns, "response,", "NULL::json AS response,", 1)

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
	// Attempt is the delivery this is (1 for the first); it becomes the job's attempts.
	Attempt int
	// HoldsSlot is true when the job took one of its key's max_concurrency slots, which
	// the job's row frees when it ends.
	HoldsSlot bool
	// ReservedTokens is what admission counted against the key's (and its team's)
	// tokens-per-minute windows; settlement corrects the window by the reported usage.
	ReservedTokens int64 `json:",omitempty"`
	// BatchID, BatchLine and CustomID say which batch line the job is, if any.
	BatchID   string `json:",omitempty"`
	BatchLine int    `json:",omitempty"`
	CustomID  string `json:",omitempty"`
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
			(id, key_id, endpoint, model, async, status, request, metadata, webhook_url, created_at, deadline, holds_slot)
			VALUES ($1, $2, $3, $4, true, 'queued', $5, $6, $7, $8, $9, $10) RETURNING `+jobColumns,
			j.ID, j.KeyID, j.Endpoint, j.Model, nilIfEmptyJSON(j.Request), j.Metadata, webhook, j.CreatedAt, j.Deadline,
			j.HoldsSlot)
		if err != nil {
			return fmt.Errorf("insert job: %w", err)
		}
		job, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Job])
		created = err == nil
		return err
	})
	if err != nil {
		return Job{}, false, fmt.Errorf("create job %s: %w", j.ID, classify(err))
	}
	return job, created, nil
}

// Job returns the job id if it belongs to keyID, or ErrNotFound.
func (s *Store) Job(ctx context.Context, keyID, id string) (Job, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1 AND key_id = $2`, id, keyID)
	if err != nil {
		return Job{}, fmt.Errorf("read job %s: %w", id, classify(err))
	}
	return collectJob(rows, id)
}

func (s *Store) jobByID(ctx context.Context, id string) (Job, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1`, id)
	if err != nil {
		return Job{}, fmt.Errorf("read job %s: %w", id, classify(err))
	}
	return collectJob(rows, id)
}

func collectJob(rows pgx.Rows, id string) (Job, error) {
	j, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Job])
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, ErrNotFound
	}
	if err != nil {
		return Job{}, fmt.Errorf("read job %s: %w", id, classify(err))
	}
	return j, nil
}

// ExpireOverdue ends, as failed with a 504 and the error errJSON (the caller's timeout
// error: jobs.Timeout(), so the sweep's rows read like the worker's), every job still
// unfinished grace after its deadline: a safety net for jobs whose message was lost to a
// crash between insert and publish, or that ran out of deliveries. A job for which spare
// reports true is left alone (its outcome is recorded elsewhere, waiting to be settled);
// spare may be nil. It returns the ids it ended.
func (s *Store) ExpireOverdue(ctx context.Context, grace time.Duration, errJSON json.RawMessage,
	spare func(ctx context.Context, id string) bool,
) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT id FROM jobs
		WHERE finished_at IS NULL AND deadline < now() - make_interval(secs => $1) LIMIT 10000`, grace.Seconds())
	if err != nil {
		return nil, fmt.Errorf("expire overdue jobs: %w", err)
	}
	overdue, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("expire overdue jobs: %w", err)
	}
	ids := overdue[:0]
	for _, id := range overdue {
		if spare == nil || !spare(ctx, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err = s.pool.Query(ctx, `UPDATE jobs SET status = 'failed', status_code = 504, finished_at = now(),
			error = $2
		WHERE id = ANY($3) AND finished_at IS NULL AND deadline < now() - make_interval(secs => $1)
		RETURNING id`, grace.Seconds(), string(errJSON), ids)
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
//
// The rows come without their response bodies (Response is nil): an answer may be tens of
// MB, and a page of them would be held whole in memory; Job reads one with its body.
func (s *Store) ListJobs(ctx context.Context, keyID, status, after string, limit int) (jobs []Job, hasMore bool, err error) {
	rows, err := s.pool.Query(ctx, `SELECT `+listColumns+` FROM jobs
		WHERE key_id = $1 AND ($2 = '' OR status = $2) AND ($3 = '' OR id < $3) AND batch_id IS NULL
		ORDER BY id DESC LIMIT $4`, keyID, status, after, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list jobs: %w", classify(err))
	}
	jobs, err = pgx.CollectRows(rows, pgx.RowToStructByPos[Job])
	if err != nil {
		return nil, false, fmt.Errorf("list jobs: %w", classify(err))
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
		return Job{}, fmt.Errorf("cancel job %s: %w", id, classify(err))
	}
	return collectJob(rows, id)
}

// AbandonJob records that a sync caller left before its job ended. The job's row is created
// if need be — unfinished, flagged for cancellation — so that a worker that takes the job
// later records it canceled instead of running it, while a worker running it now (which
// also gets the cancel over NATS) still records what it cost.
func (s *Store) AbandonJob(ctx context.Context, j NewJob) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO jobs (id, key_id, endpoint, model, async, status, request, created_at,
			deadline, cancel_requested, holds_slot)
		VALUES ($1, $2, $3, $4, false, 'queued', $5, $6, $7, true, $8)
		ON CONFLICT (id) DO UPDATE SET cancel_requested = true WHERE jobs.finished_at IS NULL`,
		j.ID, j.KeyID, j.Endpoint, j.Model, nilIfEmptyJSON(j.Request), j.CreatedAt, j.Deadline, j.HoldsSlot)
	if err != nil {
		return fmt.Errorf("abandon job %s: %w", j.ID, classify(err))
	}
	return nil
}

// DeleteFinishedBefore removes finished jobs created before t (the retention period), at
// most batch at a time, and returns how many it removed. Job ids sort by creation time, so
// the primary key finds them, oldest first; rows another sweeper is deleting are skipped
// (SKIP LOCKED), so several workers share the work instead of repeating it. Ledger rows are
// kept: they are the bill.
func (s *Store) DeleteFinishedBefore(ctx context.Context, t time.Time, batch int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM jobs WHERE id IN (
		SELECT id FROM jobs WHERE id < $1 AND finished_at IS NOT NULL ORDER BY id LIMIT $2
		FOR UPDATE SKIP LOCKED)`, ids.NewAt("job", t), batch)
	if err != nil {
		return 0, fmt.Errorf("delete old jobs: %w", err)
	}
	return tag.RowsAffected(), nil
}

// DeleteIdempotencyKeysBefore removes Idempotency-Key bindings made before t (API.md keeps
// them 24 h), at most batch at a time, oldest first, skipping rows another sweeper holds.
func (s *Store) DeleteIdempotencyKeysBefore(ctx context.Context, t time.Time, batch int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE (key_id, idem_key) IN (
		SELECT key_id, idem_key FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2
		FOR UPDATE SKIP LOCKED)`, t, batch)
	if err != nil {
		return 0, fmt.Errorf("delete old idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Prune runs del in batches until a batch comes back short (nothing left) or budget has
// passed, and returns how many rows it deleted in all.
func Prune(ctx context.Context, budget time.Duration, batch int, del func(ctx context.Context, batch int) (int64, error)) (int64, error) {
	stop := time.Now().Add(budget)
	var total int64
	for {
		n, err := del(ctx, batch)
		total += n
		if err != nil || n < int64(batch) || time.Now().After(stop) || ctx.Err() != nil {
			return total, err
		}
	}
}

// CreateQueuedJobs inserts many async jobs (without idempotency keys) as queued in one
// statement: one round trip and one commit for the batch. It is atomic: on an error nothing
// is inserted. The rows read exactly as QueuedJob describes them.
func (s *Store) CreateQueuedJobs(ctx context.Context, js []NewJob) error {
	n := len(js)
	jobIDs, keys, endpoints, models := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	requests, metadata, webhooks := make([]*string, n), make([]*string, n), make([]*string, n)
	created, deadlines := make([]time.Time, n), make([]time.Time, n)
	slots := make([]bool, n)
	for i, j := range js {
		jobIDs[i], keys[i], endpoints[i], models[i] = j.ID, j.KeyID, j.Endpoint, j.Model
		if len(j.Request) > 0 {
			v := string(j.Request)
			requests[i] = &v
		}
		if j.Metadata != nil {
			b, err := json.Marshal(j.Metadata)
			if err != nil {
				return err
			}
			v := string(b)
			metadata[i] = &v
		}
		webhooks[i] = nilIfEmpty(j.WebhookURL)
		created[i], deadlines[i], slots[i] = j.CreatedAt, j.Deadline, j.HoldsSlot
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO jobs
		(id, key_id, endpoint, model, async, status, request, metadata, webhook_url, created_at, deadline, holds_slot)
		SELECT id, key_id, endpoint, model, true, 'queued', request::json, metadata::jsonb, webhook_url, created_at,
			deadline, holds_slot
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
			$8::timestamptz[], $9::timestamptz[], $10::bool[])
			AS t(id, key_id, endpoint, model, request, metadata, webhook_url, created_at, deadline, holds_slot)`,
		jobIDs, keys, endpoints, models, requests, metadata, webhooks, created, deadlines, slots)
	if err != nil {
		return fmt.Errorf("create %d jobs: %w", n, classify(err))
	}
	return nil
}

// QueuedJob is the row CreateQueuedJobs writes for j, without reading it back.
func QueuedJob(j *NewJob) Job {
	var webhook *string
	if j.WebhookURL != "" {
		webhook = &j.WebhookURL
	}
	// Postgres keeps microseconds; so does the row this stands for.
	return Job{ID: j.ID, KeyID: j.KeyID, Endpoint: j.Endpoint, Model: j.Model, Async: true, Status: StatusQueued,
		Metadata: j.Metadata, WebhookURL: webhook, CreatedAt: j.CreatedAt.Truncate(time.Microsecond),
		Deadline: j.Deadline.Truncate(time.Microsecond)}
}

// ForgetIdempotencyKey frees an Idempotency-Key bound to a job that was never accepted (its
// publish failed), so the client's retry with the same key makes a new job.
func (s *Store) ForgetIdempotencyKey(ctx context.Context, keyID, idemKey, jobID string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE key_id = $1 AND idem_key = $2 AND job_id = $3`,
		keyID, idemKey, jobID)
	if err != nil {
		return fmt.Errorf("forget idempotency key: %w", err)
	}
	return nil
}
