package worker

import (
	"context"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sourcegraph/conc/pool"

	"github.com/sluicehq/sluice/pkg/batches"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/slots"
	"github.com/sluicehq/sluice/pkg/store"
)

// Batch lines (jobs with a Batch) come from a consumer of their own into slots of their own
// (BatchShare of Concurrency, beside it): interactive jobs keep all of theirs, so a large
// batch drains beside them, never in front. A line runs like a sync job (its row is written
// once, with its outcome), with two differences: its batch's state is checked at pick-up
// (a cancelled or expired batch's line ends without an upstream call, uncharged), and its
// deadline is its batch's expiry, each run bounded by JobTimeout from its pick-up.

// SetBatches makes the pool run batch lines from cons, checking each line's batch with
// status (cached for a second per batch). Call it before Run.
func (p *Pool) SetBatches(cons jetstream.Consumer, status func(ctx context.Context, id string) (string, error)) {
	p.batchCons = cons
	p.batchState = &batchState{lookup: status, m: map[string]batchNote{}}
}

// batchSlots is how many slots batch lines have: BatchShare of Concurrency, at least 1; 0
// without a batch consumer.
func (p *Pool) batchSlots() int {
	if p.batchCons == nil {
		return 0
	}
	return max(1, int(math.Floor(p.cfg.BatchShare*float64(p.cfg.Concurrency))))
}

// runBatchLines fetches batch lines into their own free slots until ctx ends. (Sharing the
// interactive slots would not do: the interactive fetch loop asks for every idle slot at
// once and holds them through its long poll, so batch lines would get a slot only between
// its polls.)
func (p *Pool) runBatchLines(ctx, workCtx, hardCtx context.Context, wp *pool.Pool, free slots.Free) {
	for free.Take(ctx) {
		k := 1 + free.TakeIdle()
		n := p.fetchFrom(ctx, p.batchCons, k, func(msg jetstream.Msg) {
			wp.Go(func() {
				defer free.Put(1)
				p.handle(workCtx, hardCtx, msg)
			})
		})
		free.Put(k - n)
	}
}

// batchRefusal is how a batch line must end without running, or nil if it may run.
func (p *Pool) batchRefusal(ctx context.Context, job *jobs.Job, now time.Time) *outcome {
	st := p.batchState.status(ctx, job.Batch, now)
	switch {
	case st == batches.StatusCancelling || st == batches.StatusCancelled:
		o := failedAs(store.StatusCanceled, jobs.NewError(jobs.StatusClientClosed, "batch_error", "batch_cancelled",
			"The batch was cancelled before this request ran."))
		return &o
	case st == batches.StatusExpired || !now.Before(job.Deadline):
		o := failed(jobs.NewError(http.StatusRequestTimeout, "batch_error", "batch_expired",
			"This request could not be executed before the completion window expired."))
		return &o
	}
	return nil
}

// batchState caches batches' statuses for a second.
type batchState struct {
	lookup func(ctx context.Context, id string) (string, error)
	mu     sync.Mutex
	m      map[string]batchNote
}

type batchNote struct {
	status string
	at     time.Time
}

// status is batch id's status; "" if it cannot be read now (the line runs: it was admitted).
func (b *batchState) status(ctx context.Context, id string, now time.Time) string {
	b.mu.Lock()
	n, ok := b.m[id]
	b.mu.Unlock()
	if ok && now.Sub(n.at) < time.Second {
		return n.status
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := b.lookup(ctx, id)
	if err != nil && st == "" {
		if ok {
			return n.status
		}
		return ""
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.m) >= 10_000 {
		clear(b.m)
	}
	b.m[id] = batchNote{status: st, at: now}
	return st
}
