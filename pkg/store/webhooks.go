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

// DeliveryClaim says which due deliveries ClaimDeliveries may take.
type DeliveryClaim struct {
	Limit int           // deliveries at most
	Lease time.Duration // how long each claimed delivery stays hidden from other claims
	// PerKey caps one key's deliveries in flight, those in Busy included; 0 for no cap.
	PerKey int
	// Busy is how many deliveries of each key the caller already has in flight.
	Busy map[string]int
}

// ClaimDeliveries claims up to c.Limit due deliveries, counts an attempt on each and pushes
// its next attempt a lease into the future. It is fair by key: it takes each key's oldest due
// delivery before any key's second (round robin, the keys in order of their oldest due
// delivery), and never more of one key than c.PerKey less what c.Busy says is in flight, so
// one key's backlog (a dead endpoint) cannot take every sender. Rows are locked with
// FOR UPDATE SKIP LOCKED, so concurrent dispatchers (in this process or others) never claim
// the same attempt; a delivery another claim holds at that moment is passed over for the
// next, not waited for. A dispatcher that dies mid-attempt loses its claims when the lease runs out. It fails
// if a key's webhook secret cannot be opened (a wrong encryption key).
func (s *Store) ClaimDeliveries(ctx context.Context, c DeliveryClaim) ([]Delivery, error) {
	if c.Limit <= 0 {
		return nil, nil
	}
	perKey := c.PerKey
	if perKey <= 0 || perKey > c.Limit {
		perKey = c.Limit
	}
	busyKeys := make([]string, 0, len(c.Busy))
	busyN := make([]int32, 0, len(c.Busy))
	for k, n := range c.Busy {
		if n > 0 {
			busyKeys, busyN = append(busyKeys, k), append(busyN, int32(min(n, perKey))) //nolint:gosec // at most perKey
		}
	}
	rows, err := s.pool.Query(ctx, `WITH RECURSIVE keys AS (
			-- The keys with pending deliveries, one index probe each (a loose index scan).
			(SELECT key_id FROM webhook_deliveries
			 WHERE delivered_at IS NULL AND gave_up_at IS NULL ORDER BY key_id LIMIT 1)
			UNION ALL
			SELECT (SELECT d.key_id FROM webhook_deliveries d
			        WHERE d.delivered_at IS NULL AND d.gave_up_at IS NULL AND d.key_id > keys.key_id
			        ORDER BY d.key_id LIMIT 1)
			FROM keys WHERE keys.key_id IS NOT NULL),
		busy AS (SELECT * FROM unnest($4::text[], $5::int[]) AS b(key_id, n)),
		cand AS (
			SELECT c.job_id, c.next_attempt_at,
				row_number() OVER (PARTITION BY k.key_id ORDER BY c.next_attempt_at, c.job_id) AS rn
			FROM keys k CROSS JOIN LATERAL (
				SELECT d.job_id, d.next_attempt_at FROM webhook_deliveries d
				WHERE d.key_id = k.key_id AND d.delivered_at IS NULL AND d.gave_up_at IS NULL
					AND d.next_attempt_at <= now()
				ORDER BY d.next_attempt_at
				LIMIT GREATEST($3 - COALESCE((SELECT n FROM busy WHERE busy.key_id = k.key_id), 0), 0)) c
			WHERE k.key_id IS NOT NULL),
		ranked AS (SELECT array_agg(job_id ORDER BY rn, next_attempt_at, job_id) AS ids FROM cand),
		due AS (
			-- Locked in that order until there are enough: one locked by another claim is
			-- passed over for the next, and each is re-checked (another claim may have just
			-- taken it). Looked up by primary key: a join would let the planner, which
			-- cannot tell how few candidates there are, scan the whole table.
			SELECT d.job_id FROM webhook_deliveries d
			WHERE d.job_id = ANY ((SELECT ids FROM ranked)::text[])
				AND d.delivered_at IS NULL AND d.gave_up_at IS NULL AND d.next_attempt_at <= now()
			ORDER BY array_position((SELECT ids FROM ranked), d.job_id)
			LIMIT $1
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
		ORDER BY c.w_created_at`, c.Limit, c.Lease.Seconds(), perKey, busyKeys, busyN)
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
