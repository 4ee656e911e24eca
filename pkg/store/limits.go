package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// AcquireSlot takes one of a key's max concurrent job slots for jobID until the job ends (a
// trigger frees it when the job's row is finished) or until expires. It returns false when
// the key already has max unfinished jobs. Concurrent callers for one key are serialised by a
// transaction-scoped advisory lock, so the count can never be exceeded, across any number of
// ingress processes.
func (s *Store) AcquireSlot(ctx context.Context, keyID, jobID string, max int, expires time.Time) (bool, error) {
	var ok bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, keyID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO key_slots (job_id, key_id, expires_at)
			SELECT $2, $1, $4 WHERE (SELECT count(*) FROM key_slots WHERE key_id = $1 AND expires_at > now()) < $3`,
			keyID, jobID, max, expires)
		ok = err == nil && tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("acquire slot for %s: %w", keyID, err)
	}
	return ok, nil
}

// ReleaseSlot frees a slot taken for a job that was never accepted (its publish failed).
func (s *Store) ReleaseSlot(ctx context.Context, jobID string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM key_slots WHERE job_id = $1`, jobID); err != nil {
		return fmt.Errorf("release slot of %s: %w", jobID, err)
	}
	return nil
}

// DeleteOldRateWindows drops rate windows that no longer count, and expired slots.
func (s *Store) DeleteOldRateWindows(ctx context.Context, now time.Time) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM key_rate_windows WHERE window_start < $1`, now.Add(-2*time.Minute))
	if err != nil {
		return fmt.Errorf("delete old rate windows: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM key_slots WHERE expires_at < $1`, now); err != nil {
		return fmt.Errorf("delete expired slots: %w", err)
	}
	return s.deleteOldWindows(ctx, now)
}
