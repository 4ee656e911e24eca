package batches

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// What a batch runner (internal/batches) writes: a lease on the batch, its transitions, its
// progress, and the rows of lines that never ran.

// Claim leases up to n unfinished batches no runner holds (or whose runner's lease ran out),
// for lease, oldest first. Several runners claim at once without taking the same batch.
func (s *Store) Claim(ctx context.Context, n int, lease time.Duration) ([]Batch, error) {
	rows, err := s.pool.Query(ctx, `UPDATE batches SET lease_until = now() + $2::interval WHERE id IN (
			SELECT id FROM batches WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling')
				AND (lease_until IS NULL OR lease_until < now())
			ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
		RETURNING `+columns, n, lease)
	if err != nil {
		return nil, fmt.Errorf("claim batches: %w", err)
	}
	defer rows.Close()
	var bs []Batch
	for rows.Next() {
		b, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("claim batches: %w", err)
		}
		bs = append(bs, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim batches: %w", err)
	}
	return bs, nil
}

// Release gives batch id back for any runner to claim after wait.
func (s *Store) Release(ctx context.Context, id string, wait time.Duration) error {
	_, err := s.pool.Exec(ctx, `UPDATE batches SET lease_until = now() + $2::interval WHERE id = $1`, id, wait)
	return err
}

// Published records that lines [0, n) are on the stream and renews the lease; it returns the
// batch's status, so a runner publishing sees a cancel.
func (s *Store) Published(ctx context.Context, id string, n int, lease time.Duration) (string, error) {
	var st string
	err := s.pool.QueryRow(ctx, `UPDATE batches SET published = GREATEST(published, $2), lease_until = now() + $3::interval
		WHERE id = $1 RETURNING status`, id, n, lease).Scan(&st)
	if err != nil {
		return "", fmt.Errorf("batch %s: record published lines: %w", id, err)
	}
	return st, nil
}

// Validated moves a validating batch to in_progress with total lines (a cancelling one
// keeps its status, and records the total).
func (s *Store) Validated(ctx context.Context, id string, total int) error {
	_, err := s.pool.Exec(ctx, `UPDATE batches SET total = $2,
			status = CASE WHEN status = 'validating' THEN 'in_progress' ELSE status END,
			in_progress_at = CASE WHEN status = 'validating' THEN now() ELSE in_progress_at END
		WHERE id = $1 AND status IN ('validating', 'cancelling')`, id, total)
	if err != nil {
		return fmt.Errorf("batch %s: validated: %w", id, err)
	}
	return nil
}

// FailValidation ends a validating batch failed at time at, with OpenAI's errors list
// data, and queues its batch.failed webhook (see Event) if it has a webhook URL.
func (s *Store) FailValidation(ctx context.Context, b *Batch, at time.Time, errs json.RawMessage) (bool, error) {
	b.Status, b.FailedAt, b.Errors = StatusFailed, &at, errs
	var n int
	err := s.pool.QueryRow(ctx, `WITH b AS (
			UPDATE batches SET status = 'failed', failed_at = $4, errors = $2, total = $3, lease_until = NULL
			WHERE id = $1 AND status IN ('validating', 'cancelling') RETURNING id, key_id, webhook_url),
		`+eventSQL+`
		SELECT count(*) FROM b`, b.ID, errs, b.Total, at, eventBody(b)).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("batch %s: fail: %w", b.ID, err)
	}
	return n == 1, nil
}

// eventSQL inserts the event of the batch updated in CTE b (its body $5) as a finished jobs
// row with the batch's webhook URL: the jobs trigger (migration 0002) creates its delivery,
// which the webhook dispatcher signs and sends like a job's, fair by key, retried for 24 h.
// It is keyed by the batch, so a batch has one event.
const eventSQL = `ev AS (
			INSERT INTO jobs (id, key_id, endpoint, model, async, status, attempts, created_at, started_at, finished_at,
				deadline, status_code, response, webhook_url, batch_id, batch_line)
			SELECT 'job_' || substr(b.id, 7) || '_event', b.key_id, '` + EventEndpoint + `', '', false, 'succeeded', 0, now(), now(),
				now(), now(), 200, $5::json, b.webhook_url, b.id, -1
			FROM b WHERE b.webhook_url IS NOT NULL
			ON CONFLICT (id) DO NOTHING)`

// EventEndpoint is the endpoint of a batch event's jobs row; the webhook dispatcher sends
// such a row's stored body (the event) instead of a job object.
const EventEndpoint = "event"

// Counts are a batch's lines by how they ended, from their rows.
type Counts struct {
	Done, Succeeded int
	// Canceled and Expired are the lines of Done that never ran (or were cut) because the
	// batch was cancelled or expired.
	Canceled, Expired int
}

// LineCounts counts batch id's lines that have ended. A line redelivered mid-run has a row
// that reads running (store.StartJobs): it does not count until it ends.
func (s *Store) LineCounts(ctx context.Context, id string) (Counts, error) {
	var c Counts
	err := s.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'),
			count(*) FILTER (WHERE status = 'canceled'), count(*) FILTER (WHERE error->>'code' = 'batch_expired')
		FROM jobs WHERE batch_id = $1 AND batch_line >= 0 AND finished_at IS NOT NULL`, id).Scan(&c.Done, &c.Succeeded, &c.Canceled, &c.Expired)
	if err != nil {
		return Counts{}, fmt.Errorf("batch %s: count lines: %w", id, err)
	}
	return c, nil
}

// SaveCounts records live request counts.
func (s *Store) SaveCounts(ctx context.Context, id string, c Counts) error {
	_, err := s.pool.Exec(ctx, `UPDATE batches SET completed = $2, failed = $3 WHERE id = $1`, id, c.Succeeded,
		c.Done-c.Succeeded)
	return err
}

// Finalizing moves a batch to finalizing (its output files are being written).
func (s *Store) Finalizing(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `UPDATE batches SET status = 'finalizing', finalizing_at = COALESCE(finalizing_at, now())
		WHERE id = $1 AND status = 'in_progress'`, id)
	return err
}

// Finish ends b with status (completed, cancelled or expired) at time at, with its files
// and counts, and queues its webhook (see Event) if it has a webhook URL, in one statement.
// It reports whether it ended b (false: it had ended already).
func (s *Store) Finish(ctx context.Context, b *Batch, status string, at time.Time, outFile, errFile *string, c Counts) (bool, error) {
	b.Status, b.OutputFileID, b.ErrorFileID, b.Completed, b.Failed = status, outFile, errFile, c.Succeeded, c.Done-c.Succeeded
	switch status {
	case StatusCompleted:
		b.CompletedAt = &at
	case StatusCancelled:
		b.CancelledAt = &at
	case StatusExpired:
		b.ExpiredAt = &at
	}
	var n int
	err := s.pool.QueryRow(ctx, `WITH b AS (
			UPDATE batches SET status = $2, output_file_id = $3, error_file_id = $6, completed = $7, failed = $8,
				lease_until = NULL,
				completed_at = CASE WHEN $2 = 'completed' THEN $4::timestamptz END,
				cancelled_at = CASE WHEN $2 = 'cancelled' THEN $4::timestamptz END,
				expired_at = CASE WHEN $2 = 'expired' THEN $4::timestamptz END
			WHERE id = $1 AND status IN ('in_progress', 'finalizing', 'cancelling') RETURNING id, key_id, webhook_url),
		`+eventSQL+`
		SELECT count(*) FROM b`, b.ID, status, outFile, at, eventBody(b), errFile, c.Succeeded, c.Done-c.Succeeded).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("batch %s: finish: %w", b.ID, err)
	}
	return n == 1, nil
}

// EndMissing writes, for each line in [from, to) of b that has no row, a row ending it
// uncharged with status (failed or canceled), HTTP status code and error errJSON: lines never
// published (a cancel while publishing) or lost. A line whose row exists is left as it is,
// and a delivery of the line afterwards finds it ended and does not run it.
func (s *Store) EndMissing(ctx context.Context, b *Batch, from, to int, status string, code int, errJSON []byte) error {
	if from >= to {
		return nil
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO jobs (id, key_id, endpoint, model, async, status, attempts, created_at,
			finished_at, deadline, status_code, error, batch_id, batch_line)
		SELECT 'job_' || substr($1, 7) || '_' || n, $2, $3, '', false, $4, 0, now(), now(), $5, $6, $7::jsonb, $1, n
		FROM generate_series($8::int, $9::int - 1) AS n
		ON CONFLICT (id) DO NOTHING`, b.ID, b.KeyID, b.Endpoint, status, b.ExpiresAt, code, errJSON, from, to)
	if err != nil {
		return fmt.Errorf("batch %s: end lines %d..%d: %w", b.ID, from, to, err)
	}
	return nil
}

// Line is one line's outcome, as its row holds it.
type Line struct {
	N          int
	JobID      string
	CustomID   *string
	Status     string
	StatusCode *int
	Response   json.RawMessage
	Error      json.RawMessage
}

// Lines returns up to limit of batch id's ended lines from line from on, in line order.
func (s *Store) Lines(ctx context.Context, id string, from, limit int) ([]Line, error) {
	rows, err := s.pool.Query(ctx, `SELECT batch_line, id, custom_id, status, status_code, response, error FROM jobs
		WHERE batch_id = $1 AND batch_line >= $2 AND finished_at IS NOT NULL ORDER BY batch_line LIMIT $3`, id, from, limit)
	if err != nil {
		return nil, fmt.Errorf("batch %s: read lines: %w", id, err)
	}
	defer rows.Close()
	var ls []Line
	for rows.Next() {
		var l Line
		if err := rows.Scan(&l.N, &l.JobID, &l.CustomID, &l.Status, &l.StatusCode, &l.Response, &l.Error); err != nil {
			return nil, fmt.Errorf("batch %s: read lines: %w", id, err)
		}
		ls = append(ls, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("batch %s: read lines: %w", id, err)
	}
	return ls, nil
}
