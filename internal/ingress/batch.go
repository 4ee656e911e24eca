package ingress

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/internal/batch"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
)

// queuer stores and publishes async jobs in batches (internal/batch): whatever submissions
// are waiting when a batch starts go in one insert, and then onto the stream together (all
// sent, then all acks awaited), so under load one commit and about one NATS round trip
// accept many jobs. Each submission still waits until its row is committed and its message
// stored, so a job reads "queued" from any process once its 202 is sent, and no 202 is sent
// for a job the stream does not hold.
type queuer struct {
	b *batch.Batcher[queueReq, queueRes]
}

type queueReq struct {
	j   store.NewJob
	job *jobs.Job
}

// queueRes is how one submission fared: not stored (dbErr), or stored but not published.
type queueRes struct {
	dbErr, pubErr error
}

const (
	maxQueueBatch = 256
	queuers       = 2 // inserts in flight at once: while one commits, the next batch fills
)

func newQueuer(st *store.Store, pub *jobs.Publisher) *queuer {
	write := func(ctx context.Context, reqs []queueReq) ([]queueRes, error) {
		js := make([]store.NewJob, len(reqs))
		for i, r := range reqs {
			js[i] = r.j
		}
		if err := st.CreateQueuedJobs(ctx, js); err != nil {
			return nil, err // a batch of several is retried one by one, isolating a bad one
		}
		stored := make([]*jobs.Job, len(reqs))
		for i, r := range reqs {
			stored[i] = r.job
		}
		// The publisher has its own ack timeout; a row committed must be offered to the
		// stream even if the insert used most of the batch's time.
		errs := pub.PublishAll(context.WithoutCancel(ctx), stored)
		res := make([]queueRes, len(reqs))
		for i := range res {
			res[i].pubErr = errs[i]
		}
		return res, nil
	}
	return &queuer{b: batch.New(write, batch.Options{Max: maxQueueBatch, Timeout: 10 * time.Second})}
}

// create stores j as queued and publishes job, batched with other submissions.
func (q *queuer) create(ctx context.Context, j store.NewJob, job *jobs.Job) queueRes {
	res, err := q.b.Do(ctx, queueReq{j: j, job: job})
	if err != nil {
		return queueRes{dbErr: err}
	}
	return res
}

// run inserts batches until ctx is done. Run stops it only after the HTTP server has
// drained, so no submission is left waiting.
func (q *queuer) run(ctx context.Context) { q.b.Run(ctx) }
