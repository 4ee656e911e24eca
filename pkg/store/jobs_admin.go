package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/ids"
)

// The operator's view of jobs (GET /admin/v1/jobs, the console): every key's, with the
// channel that served each and the batch it belongs to.

// AdminJob is a job row with what only the operator sees.
type AdminJob struct {
	Job
	// ChannelID is the channel that served the job's last attempt (nil before it ended, or
	// if no channel was reached).
	ChannelID *string
	// BatchID and CustomID say which batch line the job is, if any.
	BatchID  *string
	CustomID *string
}

// JobFilter selects jobs for AdminJobs; an empty field does not filter.
type JobFilter struct {
	KeyID, Status, Model, BatchID string
	// After is the cursor: only jobs older than the job of this id.
	After string
	// Limit is the page size (at least 1).
	Limit int
}

const adminJobColumns = `, channel_id, batch_id, custom_id`

// AdminJobs returns up to f.Limit jobs of any key that f selects, newest first, without
// their response bodies; hasMore says whether more follow.
func (s *Store) AdminJobs(ctx context.Context, f JobFilter) (jobs []AdminJob, hasMore bool, err error) {
	// Only the filters given go into the query, so each combination gets its own plan
	// (the key's index serves a key filter; the primary key serves the rest, newest first).
	var where []string
	var args []any
	for _, c := range []struct{ col, v string }{
		{"key_id = ", f.KeyID}, {"status = ", f.Status}, {"model = ", f.Model}, {"batch_id = ", f.BatchID}, {"id < ", f.After},
	} {
		if c.v != "" {
			args = append(args, c.v)
			where = append(where, fmt.Sprintf("%s$%d", c.col, len(args)))
		}
	}
	q := `SELECT ` + listColumns + adminJobColumns + ` FROM jobs`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ") // constant fragments; the values are parameters
	}
	args = append(args, max(f.Limit, 1)+1)
	q += fmt.Sprintf(` ORDER BY id DESC LIMIT $%d`, len(args))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, false, fmt.Errorf("list jobs: %w", classify(err))
	}
	jobs, err = pgx.CollectRows(rows, pgx.RowToStructByPos[AdminJob])
	if err != nil {
		return nil, false, fmt.Errorf("list jobs: %w", classify(err))
	}
	if len(jobs) > max(f.Limit, 1) {
		return jobs[:len(jobs)-1], true, nil
	}
	return jobs, false, nil
}

// AdminJob returns the job id of any key, with its response body, or ErrNotFound.
func (s *Store) AdminJob(ctx context.Context, id string) (AdminJob, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+jobColumns+adminJobColumns+` FROM jobs WHERE id = $1`, id)
	if err != nil {
		return AdminJob{}, fmt.Errorf("read job %s: %w", id, classify(err))
	}
	j, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[AdminJob])
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return AdminJob{}, ErrNotFound
		}
		return AdminJob{}, fmt.Errorf("read job %s: %w", id, classify(err))
	}
	return j, nil
}

// ChannelHealth is what the jobs that ended on one channel since a time say about it.
type ChannelHealth struct {
	ChannelID     string     `json:"channel_id"`
	Jobs          int64      `json:"jobs"`
	Succeeded     int64      `json:"succeeded"`
	Failed        int64      `json:"failed"`
	LastSuccessAt *time.Time `json:"-"`
	LastFailureAt *time.Time `json:"-"`
}

// ChannelsHealth sums, per channel, the jobs created since since that have ended with a
// channel named (a job is counted on the channel of its last attempt). Job ids sort by
// creation time, so the primary key bounds the scan.
func (s *Store) ChannelsHealth(ctx context.Context, since time.Time) ([]ChannelHealth, error) {
	rows, err := s.pool.Query(ctx, `SELECT channel_id, count(*), count(*) FILTER (WHERE status = 'succeeded'),
			count(*) FILTER (WHERE status = 'failed'), max(finished_at) FILTER (WHERE status = 'succeeded'),
			max(finished_at) FILTER (WHERE status = 'failed')
		FROM jobs WHERE id >= $1 AND channel_id IS NOT NULL AND finished_at IS NOT NULL
		GROUP BY channel_id ORDER BY channel_id`, ids.NewAt("job", since))
	if err != nil {
		return nil, fmt.Errorf("channel health: %w", classify(err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ChannelHealth])
	if err != nil {
		return nil, fmt.Errorf("channel health: %w", classify(err))
	}
	return out, nil
}
