package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// RateLimits are a subject's requests- and tokens-per-minute limits; nil is no limit.
type RateLimits struct {
	RPM *int
	TPM *int
}

// Any reports whether either limit is set.
func (l RateLimits) Any() bool { return l.RPM != nil || l.TPM != nil }

// RateState is a subject's sliding one-minute window after TakeRate.
type RateState struct {
	// OK is true when the request was admitted and counted.
	OK bool
	// Requests and Tokens are what the window holds (after this request, if OK): the
	// previous minute's counts weighted by how much of it still overlaps, plus this minute's.
	Requests, Tokens int64
	// Reset is how long until this minute's window ends and its counts start to decay.
	Reset time.Duration
	// Wait is how long until a refused request would fit (at least a second).
	Wait time.Duration
	// OverRPM is true when a refusal was for requests (else for tokens).
	OverRPM bool
}

// takeRateSQL counts one request and $5 tokens in subject $1's window starting $2 if both
// limits ($3 requests, $4 tokens per minute; NULL for none) still hold, with the previous
// window weighted by $6. The conditional upsert re-checks against the locked row, so
// concurrent callers on any number of processes can never push a window past its limits.
const takeRateSQL = `WITH prev AS (
		SELECT COALESCE(sum(requests), 0)::float8 * $6::float8 AS r, COALESCE(sum(tokens), 0)::float8 * $6::float8 AS t
		FROM rate_windows WHERE subject = $1 AND window_start = $2::timestamptz - interval '1 minute'),
	cur AS (
		SELECT COALESCE(sum(requests), 0) AS r, COALESCE(sum(tokens), 0) AS t
		FROM rate_windows WHERE subject = $1 AND window_start = $2),
	ins AS (
		INSERT INTO rate_windows AS w (subject, window_start, requests, tokens)
		SELECT $1, $2, 1, $5::bigint FROM prev
		WHERE ($3::int IS NULL OR floor(prev.r) + 1 <= $3) AND ($4::int IS NULL OR floor(prev.t) + $5::bigint <= $4)
		ON CONFLICT (subject, window_start) DO UPDATE SET requests = w.requests + 1, tokens = w.tokens + EXCLUDED.tokens
		WHERE ($3::int IS NULL OR floor((SELECT r FROM prev)) + w.requests + 1 <= $3)
			AND ($4::int IS NULL OR floor((SELECT t FROM prev)) + w.tokens + $5::bigint <= $4)
		RETURNING requests, tokens)
	SELECT EXISTS (SELECT 1 FROM ins), floor(prev.r)::bigint + COALESCE((SELECT requests FROM ins), cur.r)::bigint,
		floor(prev.t)::bigint + COALESCE((SELECT tokens FROM ins), cur.t)::bigint
	FROM prev, cur`

// TakeRate counts one request of tokens (an admission estimate) against subject's limits
// in a sliding one-minute window, if it fits both. A refused request is not counted. It
// holds across any number of processes: the window is a Postgres row.
func (s *Store) TakeRate(ctx context.Context, subject string, lim RateLimits, tokens int64, now time.Time) (RateState, error) {
	cur := now.UTC().Truncate(time.Minute)
	overlap := 1 - float64(now.Sub(cur))/float64(time.Minute) // share of the previous window still in view
	var st RateState
	err := s.pool.QueryRow(ctx, takeRateSQL, subject, cur, lim.RPM, lim.TPM, tokens, overlap).
		Scan(&st.OK, &st.Requests, &st.Tokens)
	if err != nil {
		return RateState{}, fmt.Errorf("count request for %s: %w", subject, err)
	}
	st.Reset = cur.Add(time.Minute).Sub(now)
	if !st.OK {
		// The counts are this statement's snapshot: a request refused by the locked row (a
		// concurrent one took the last place) may see room in them. Without a tpm limit it
		// can only have been the rpm.
		st.OverRPM = lim.RPM != nil && (lim.TPM == nil || st.Requests+1 > int64(*lim.RPM))
		// Simple bound: by the next window boundary at the latest the window has moved on.
		st.Wait = max(st.Reset, time.Second)
	}
	return st, nil
}

// ReturnRate takes back a request TakeRate counted (of tokens) at now, when a later check
// refused it.
func (s *Store) ReturnRate(ctx context.Context, subject string, tokens int64, now time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE rate_windows SET requests = GREATEST(requests - 1, 0),
		tokens = GREATEST(tokens - $3, 0) WHERE subject = $1 AND window_start = $2`,
		subject, now.UTC().Truncate(time.Minute), tokens)
	if err != nil {
		return fmt.Errorf("return request of %s: %w", subject, err)
	}
	return nil
}

// deleteOldWindows drops rate windows that no longer count.
func (s *Store) deleteOldWindows(ctx context.Context, now time.Time) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM rate_windows WHERE window_start < $1`, now.Add(-2*time.Minute)); err != nil {
		return fmt.Errorf("delete old rate windows: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM channel_slots WHERE expires_at < $1`, now); err != nil {
		return fmt.Errorf("delete expired channel slots: %w", err)
	}
	return nil
}

// AdjustRate adds delta tokens (negative to give some back, never below zero) to subject's
// window of now: a call's reported usage replacing the estimate TakeRate counted.
func (s *Store) AdjustRate(ctx context.Context, subject string, delta int64, now time.Time) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO rate_windows AS w (subject, window_start, tokens)
		VALUES ($1, $2, GREATEST($3::bigint, 0))
		ON CONFLICT (subject, window_start) DO UPDATE SET tokens = GREATEST(w.tokens + $3::bigint, 0)`,
		subject, now.UTC().Truncate(time.Minute), delta)
	if err != nil {
		return fmt.Errorf("adjust window of %s: %w", subject, err)
	}
	return nil
}

// AcquireChannelSlot takes one of a channel's max calls in flight for callID until
// ReleaseChannelSlot or until expires (a worker that dies mid-call cannot leak it). It
// returns false when the channel has max calls in flight, across every worker: concurrent
// callers for one channel are serialised by a transaction-scoped advisory lock.
func (s *Store) AcquireChannelSlot(ctx context.Context, channelID, callID string, max int, expires time.Time) (bool, error) {
	var ok bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, channelID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO channel_slots (call_id, channel_id, expires_at)
			SELECT $2, $1, $4 WHERE (SELECT count(*) FROM channel_slots WHERE channel_id = $1 AND expires_at > now()) < $3`,
			channelID, callID, max, expires)
		ok = err == nil && tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("acquire slot of channel %s: %w", channelID, err)
	}
	return ok, nil
}

// ReleaseChannelSlot frees the slot AcquireChannelSlot took for callID.
func (s *Store) ReleaseChannelSlot(ctx context.Context, callID string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM channel_slots WHERE call_id = $1`, callID); err != nil {
		return fmt.Errorf("release channel slot %s: %w", callID, err)
	}
	return nil
}
