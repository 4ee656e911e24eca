package ingress

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

// queuer inserts async jobs in batches: whatever submissions are waiting when an insert
// starts go in one statement, so under load one commit stores many jobs, and at low load a
// submission waits for nothing but its own insert. Each submission still waits until its
// row is committed, so a job reads "queued" from any process once its 202 is sent.
type queuer struct {
	st *store.Store
	in chan queueReq
}

type queueReq struct {
	j    store.NewJob
	done chan error // buffered 1
}

const (
	maxQueueBatch = 256
	queuers       = 2 // inserts in flight at once: while one commits, the next batch fills
)

// create stores j as queued, batched with other submissions.
func (q *queuer) create(ctx context.Context, j store.NewJob) error {
	done := make(chan error, 1)
	select {
	case q.in <- queueReq{j: j, done: done}:
	case <-ctx.Done():
		return ctx.Err()
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
		err := q.st.CreateQueuedJobs(ictx, js)
		if err != nil && len(batch) > 1 {
			for _, r := range batch { // isolate a bad submission
				r.done <- q.st.CreateQueuedJobs(ictx, []store.NewJob{r.j})
			}
		} else {
			for _, r := range batch {
				r.done <- err
			}
		}
		cancel()
	}
}
