package ingress

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
)

// queuer stores and publishes async jobs in batches: whatever submissions are waiting when
// a batch starts go in one insert, and then onto the stream together (all sent, then all
// acks awaited), so under load one commit and about one NATS round trip accept many jobs,
// and at low load a submission waits for nothing but its own. Each submission still waits
// until its row is committed and its message stored, so a job reads "queued" from any
// process once its 202 is sent, and no 202 is sent for a job the stream does not hold.
type queuer struct {
	st  *store.Store
	pub *jobs.Publisher
	in  chan queueReq
}

type queueReq struct {
	j    store.NewJob
	job  *jobs.Job
	done chan queueRes // buffered 1
}

// queueRes is how one submission fared: not stored (dbErr), or stored but not published.
type queueRes struct {
	dbErr, pubErr error
}

const (
	maxQueueBatch = 256
	queuers       = 2 // inserts in flight at once: while one commits, the next batch fills
)

// create stores j as queued and publishes job, batched with other submissions.
func (q *queuer) create(ctx context.Context, j store.NewJob, job *jobs.Job) queueRes {
	done := make(chan queueRes, 1)
	select {
	case q.in <- queueReq{j: j, job: job, done: done}:
	case <-ctx.Done():
		return queueRes{dbErr: ctx.Err()}
	}
	return <-done // the queuer always answers
}

// run inserts batches until ctx is done. Run stops it only after the HTTP server has
// drained, so no submission is left waiting.
func (q *queuer) run(ctx context.Context) {
	batch := make([]queueReq, 0, maxQueueBatch)
	js := make([]store.NewJob, 0, maxQueueBatch)
	for {
		batch, js = batch[:0], js[:0]
		select {
		case <-ctx.Done():
			return
		case r := <-q.in:
			batch = append(batch, r)
		}
	more:
		for len(batch) < maxQueueBatch {
			select {
			case r := <-q.in:
				batch = append(batch, r)
			default:
				break more
			}
		}
		for _, r := range batch {
			js = append(js, r.j)
		}
		ictx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res := make([]queueRes, len(batch))
		if err := q.st.CreateQueuedJobs(ictx, js); err != nil {
			for i, r := range batch {
				if len(batch) == 1 {
					res[i].dbErr = err
				} else { // isolate a bad submission
					res[i].dbErr = q.st.CreateQueuedJobs(ictx, []store.NewJob{r.j})
				}
			}
		}
		cancel()
		stored := make([]*jobs.Job, 0, len(batch))
		for i, r := range batch {
			if res[i].dbErr == nil {
				stored = append(stored, r.job)
			}
		}
		errs := q.pub.PublishAll(context.Background(), stored)
		for i, r := range batch {
			if res[i].dbErr == nil {
				res[i].pubErr, errs = errs[0], errs[1:]
			}
			r.done <- res[i]
		}
	}
}
