package ingress

import (
	"context"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
)

// job reads key keyID's job id as it stands: its row in Postgres, unless the job has ended
// and its outcome is still waiting in the outcomes stream for a settler (a sync job has no
// row until then, an async job's row still reads running, and while Postgres is away there
// is no row to read). Then the pending outcome answers, as the row it will become.
func (s *Server) job(ctx context.Context, keyID, id string) (store.Job, error) {
	row, err := s.store.Job(ctx, keyID, id)
	if (err == nil && row.Terminal()) || s.outcomes == nil {
		return row, err
	}
	o, perr := s.outcomes.Pending(ctx, id)
	if perr == nil && o == nil {
		// None pending: the job has not ended, or a settler wrote it to Postgres and removed
		// it from the stream after the first read. A settler writes before it removes, so a
		// second read of the row tells.
		return s.store.Job(ctx, keyID, id)
	}
	if perr != nil || o.Job == nil || o.Job.KeyID != keyID {
		return row, err
	}
	pending := jobs.OutcomeRow(o, keyID)
	if err == nil { // the row knows what the outcome does not
		pending.Metadata, pending.WebhookURL, pending.Attempts, pending.StartedAt = row.Metadata, row.WebhookURL,
			row.Attempts, row.StartedAt
	}
	return pending, nil
}
