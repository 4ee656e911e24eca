package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/secret"
)

// ErrStaleAttempt means a delivery attempt's result came too late to record: its lease ran
// out and the delivery was claimed again, or it has already ended. The call changed nothing.
var ErrStaleAttempt = errors.New("store: stale webhook attempt")

// Delivery is one claimed webhook attempt: everything needed to render, sign and send it.
// Rows are created by a trigger (migrations/0002_webhooks.sql) when a job with a webhook URL
// ends, in the same transaction as its terminal state.
type Delivery struct {
	Job       Job           // the job as it is now, to render the body from
	URL       string        // the job's webhook URL
	Secret    secret.Secret // the key's webhook signing secret
	Attempt   int           // this attempt's number, from 1
	CreatedAt time.Time     // when the job ended and the delivery was created
}

// deliveryRow is Delivery as it comes from Postgres, by position: the job's columns, then the
// delivery's own.
type deliveryRow struct {
	Job
	URL             string
	Attempts        int
	DeliveryCreated time.Time
	SealedSecret    []byte
}

// ClaimDeliveries claims up to limit deliveries that are due, oldest due first, counts an
// attempt on each and pushes its next attempt lease into the future. It is one statement
// with FOR UPDATE SKIP LOCKED, so concurrent dispatchers (in this process or others) never
// claim the same attempt; a dispatcher that dies mid-attempt loses its claims when the lease
// runs out. It fails if a key's webhook secret cannot be opened (a wrong encryption key).
func (s *Store) ClaimDeliveries(ctx context.Context, limit int, lease time.Duration) ([]Delivery, error) {
	rows, err := s.pool.Query(ctx, `WITH due AS (
			SELECT job_id FROM webhook_deliveries
			WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now()
			ORDER BY next_attempt_at LIMIT $1
			FOR UPDATE SKIP LOCKED),
		claimed AS (
			UPDATE webhook_deliveries d SET attempts = d.attempts + 1,
				next_attempt_at = now() + make_interval(secs => $2)
			FROM due WHERE d.job_id = due.job_id
			RETURNING d.job_id AS w_job_id, d.key_id AS w_key_id, d.url AS w_url, d.attempts AS w_attempts,
				d.created_at AS w_created_at)
		SELECT `+jobColumns+`, c.w_url, c.w_attempts, c.w_created_at,
			(SELECT k.webhook_secret FROM api_keys k WHERE k.id = c.w_key_id)
		FROM claimed c JOIN jobs ON jobs.id = c.w_job_id
		ORDER BY c.w_created_at`, limit, lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("claim webhook deliveries: %w", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[deliveryRow])
	if err != nil {
		return nil, fmt.Errorf("claim webhook deliveries: %w", err)
	}
	out := make([]Delivery, 0, len(got))
	for _, r := range got {
		sec, err := s.sealer.Open(r.SealedSecret)
		if err != nil {
			return nil, fmt.Errorf("open webhook secret of key %s: %w", r.KeyID, err)
		}
		out = append(out, Delivery{Job: r.Job, URL: r.URL, Secret: secret.Secret(sec), Attempt: r.Attempts,
			CreatedAt: r.DeliveryCreated})
	}
	return out, nil
}

// MarkDelivered records that the receiver accepted the job with HTTP status. It counts even
// when the attempt's lease had run out, since the receiver has the body; a delivery that has
// already ended is left as it is.
func (s *Store) MarkDelivered(ctx context.Context, jobID string, status int) error {
	_, err := s.pool.Exec(ctx, `UPDATE webhook_deliveries SET delivered_at = now(), last_status = $2, last_error = NULL
		WHERE job_id = $1 AND delivered_at IS NULL`, jobID, status)
	if err != nil {
		return fmt.Errorf("mark webhook of job %s delivered: %w", jobID, err)
	}
	return nil
}

// MarkFailed records that attempt failed, with the receiver's HTTP status (0 if none) and
// an error text, and makes the delivery due again at next. It returns ErrStaleAttempt if the
// delivery has moved on to a later attempt or has ended.
func (s *Store) MarkFailed(ctx context.Context, jobID string, attempt, status int, errText string, next time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE webhook_deliveries SET next_attempt_at = $5, last_status = NULLIF($3, 0),
			last_error = $4
		WHERE job_id = $1 AND attempts = $2 AND delivered_at IS NULL AND gave_up_at IS NULL`,
		jobID, attempt, status, truncate(errText, 1000), next)
	if err != nil {
		return fmt.Errorf("mark webhook of job %s failed: %w", jobID, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrStaleAttempt
	}
	return nil
}

// GiveUp ends a delivery without success after its last attempt (the dispatcher gives up
// 24 h after the delivery was created), recording that attempt's status and error. It
// returns ErrStaleAttempt if the delivery has moved on to a later attempt or has ended.
func (s *Store) GiveUp(ctx context.Context, jobID string, attempt, status int, errText string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE webhook_deliveries SET gave_up_at = now(), last_status = NULLIF($3, 0),
			last_error = $4
		WHERE job_id = $1 AND attempts = $2 AND delivered_at IS NULL AND gave_up_at IS NULL`,
		jobID, attempt, status, truncate(errText, 1000))
	if err != nil {
		return fmt.Errorf("give up webhook of job %s: %w", jobID, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrStaleAttempt
	}
	return nil
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 { // s[n] continues a sequence: back up to its start
		n--
	}
	return s[:n]
}
