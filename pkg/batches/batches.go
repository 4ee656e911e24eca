// Package batches stores batches (table batches, migration 0012) and reads their lines'
// outcomes. A batch line is a job: its row in jobs is written once, by the settler, with its
// outcome (batch_id, batch_line, custom_id say which line it is), so a 50,000-line batch
// costs 50,000 row writes in batches of up to 256, and its counts are read from those rows.
// The batch row itself is written only at its transitions and by its runner's progress
// (once per runner tick, not per line).
package batches

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Statuses of a batch (OpenAI's).
const (
	StatusValidating = "validating"
	StatusFailed     = "failed"
	StatusInProgress = "in_progress"
	StatusFinalizing = "finalizing"
	StatusCompleted  = "completed"
	StatusExpired    = "expired"
	StatusCancelling = "cancelling"
	StatusCancelled  = "cancelled"
)

// Kinds of batch: the API that made it, whose shapes it is shown in.
const (
	KindOpenAI    = "openai"
	KindAnthropic = "anthropic"
)

// ErrNotFound means no such batch (or another key's).
var ErrNotFound = errors.New("batches: not found")

// Batch is a batch row.
type Batch struct {
	ID               string
	KeyID            string
	Kind             string
	Endpoint         string
	InputFileID      string
	CompletionWindow string
	Status           string
	Metadata         map[string]string
	WebhookURL       string
	Errors           json.RawMessage // OpenAI's errors.data, for a failed validation
	Total            int
	Completed        int
	Failed           int
	Published        int
	OutputFileID     *string
	ErrorFileID      *string
	CreatedAt        time.Time
	ExpiresAt        time.Time
	InProgressAt     *time.Time
	FinalizingAt     *time.Time
	CompletedAt      *time.Time
	FailedAt         *time.Time
	ExpiredAt        *time.Time
	CancellingAt     *time.Time
	CancelledAt      *time.Time
}

// Terminal reports whether b has ended.
func (b *Batch) Terminal() bool {
	switch b.Status {
	case StatusFailed, StatusCompleted, StatusExpired, StatusCancelled:
		return true
	}
	return false
}

const columns = `id, key_id, kind, endpoint, input_file_id, completion_window, status, metadata,
	COALESCE(webhook_url, ''), errors, total, completed,
	failed, published, output_file_id, error_file_id, created_at, expires_at, in_progress_at, finalizing_at, completed_at,
	failed_at, expired_at, cancelling_at, cancelled_at`

func scan(row pgx.Row) (Batch, error) {
	var b Batch
	var md []byte
	err := row.Scan(&b.ID, &b.KeyID, &b.Kind, &b.Endpoint, &b.InputFileID, &b.CompletionWindow, &b.Status, &md,
		&b.WebhookURL, &b.Errors,
		&b.Total, &b.Completed, &b.Failed, &b.Published, &b.OutputFileID, &b.ErrorFileID, &b.CreatedAt, &b.ExpiresAt,
		&b.InProgressAt, &b.FinalizingAt, &b.CompletedAt, &b.FailedAt, &b.ExpiredAt, &b.CancellingAt, &b.CancelledAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Batch{}, ErrNotFound
	}
	if err == nil && len(md) > 0 {
		err = json.Unmarshal(md, &b.Metadata)
	}
	return b, err
}

// Store reads and writes batches. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a Store on pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Create inserts b as validating (its ID, KeyID, Kind, Endpoint, InputFileID, Metadata and
// ExpiresAt; Total if known) and returns the row.
func (s *Store) Create(ctx context.Context, b Batch) (Batch, error) {
	var md []byte
	if b.Metadata != nil {
		var err error
		if md, err = json.Marshal(b.Metadata); err != nil {
			return Batch{}, err
		}
	}
	row, err := scan(s.pool.QueryRow(ctx, `INSERT INTO batches (id, key_id, kind, endpoint, input_file_id, status, metadata,
			total, expires_at, webhook_url) VALUES ($1, $2, $3, $4, $5, 'validating', $6, $7, $8, NULLIF($9, ''))
		RETURNING `+columns,
		b.ID, b.KeyID, b.Kind, b.Endpoint, b.InputFileID, md, b.Total, b.ExpiresAt, b.WebhookURL))
	if err != nil {
		return Batch{}, fmt.Errorf("create batch: %w", err)
	}
	return row, nil
}

// Get returns batch id of key keyID ("" for any key: the admin API), or ErrNotFound.
func (s *Store) Get(ctx context.Context, keyID, id string) (Batch, error) {
	b, err := scan(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM batches WHERE id = $1 AND ($2 = '' OR key_id = $2)`,
		id, keyID))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Batch{}, fmt.Errorf("read batch %s: %w", id, err)
	}
	return b, err
}

// List returns up to limit batches of kind, of key keyID ("" for every key), newest first,
// after the batch id after; more says whether more follow.
func (s *Store) List(ctx context.Context, keyID, kind, after string, limit int) (bs []Batch, more bool, err error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM batches
		WHERE ($1 = '' OR key_id = $1) AND ($2 = '' OR kind = $2) AND ($3 = '' OR id < $3) ORDER BY id DESC LIMIT $4`,
		keyID, kind, after, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list batches: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		b, err := scan(rows)
		if err != nil {
			return nil, false, fmt.Errorf("list batches: %w", err)
		}
		bs = append(bs, b)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("list batches: %w", err)
	}
	if len(bs) > limit {
		return bs[:limit], true, nil
	}
	return bs, false, nil
}

// Cancel asks batch id of keyID ("" for any) to stop: a validating or in-progress batch
// becomes cancelling (its runner stops publishing, lines not yet started end cancelled,
// running ones finish and are charged); any other batch is returned as it is.
func (s *Store) Cancel(ctx context.Context, keyID, id string) (Batch, error) {
	_, err := s.pool.Exec(ctx, `UPDATE batches SET status = 'cancelling', cancelling_at = now(), lease_until = NULL
		WHERE id = $1 AND ($2 = '' OR key_id = $2) AND status IN ('validating', 'in_progress')`, id, keyID)
	if err != nil {
		return Batch{}, fmt.Errorf("cancel batch %s: %w", id, err)
	}
	return s.Get(ctx, keyID, id)
}

// Delete removes a finished batch (Anthropic's delete); ErrNotFound if the key has none
// such, ErrNotEnded if it is still running.
func (s *Store) Delete(ctx context.Context, keyID, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM batches WHERE id = $1 AND key_id = $2
		AND status IN ('failed', 'completed', 'expired', 'cancelled')`, id, keyID)
	if err != nil {
		return fmt.Errorf("delete batch %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		if _, err := s.Get(ctx, keyID, id); err != nil {
			return err
		}
		return ErrNotEnded
	}
	return nil
}

// ErrNotEnded means a batch cannot be deleted while it runs.
var ErrNotEnded = errors.New("batches: batch has not ended")

// Status returns batch id's status (for a worker's check at a line's pick-up).
func (s *Store) Status(ctx context.Context, id string) (string, error) {
	var st string
	err := s.pool.QueryRow(ctx, `SELECT status FROM batches WHERE id = $1`, id).Scan(&st)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return st, err
}
