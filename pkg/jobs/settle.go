package jobs

import (
	"context"
	"time"
)

// batcher writes to Postgres in batches: whatever requests are waiting when a write starts
// go together in one statement and one commit, so under load one commit serves many jobs,
// and at low load a request waits for nothing but its own write. Each caller still blocks
// until its own write is durable, so "recorded before reply and ack" holds per job. The
// worker runs one for job outcomes (FinishJobs) and one for job starts (StartJobs).
type batcher[I, O any] struct {
	write func(ctx context.Context, in []I) ([]O, error) // all or nothing, one O per I
	in    chan batchReq[I, O]
}

type batchReq[I, O any] struct {
	ctx  context.Context
	in   I
	done chan batchRes[O] // buffered 1
}

type batchRes[O any] struct {
	out O
	err error
}

// maxBatch caps one transaction.
const maxBatch = 128

func newBatcher[I, O any](write func(context.Context, []I) ([]O, error)) *batcher[I, O] {
	return &batcher[I, O]{write: write, in: make(chan batchReq[I, O])}
}

// do hands in to a writer and waits for it to be written.
func (b *batcher[I, O]) do(ctx context.Context, in I) (O, error) {
	done := make(chan batchRes[O], 1)
	select {
	case b.in <- batchReq[I, O]{ctx: ctx, in: in, done: done}:
	case <-ctx.Done():
		var zero O
		return zero, ctx.Err()
	}
	r := <-done // the writer always answers
	return r.out, r.err
}

// run writes batches until ctx is done. The worker stops it only after every job has
// returned. Several may run at once: while one commits, the next batch fills.
func (b *batcher[I, O]) run(ctx context.Context) {
	batch := make([]batchReq[I, O], 0, maxBatch)
	ins := make([]I, 0, maxBatch)
	for {
		batch, ins = batch[:0], ins[:0]
		select {
		case <-ctx.Done():
			return
		case r := <-b.in:
			batch = append(batch, r)
		}
	more:
		for len(batch) < maxBatch {
			select {
			case r := <-b.in:
				batch = append(batch, r)
			default:
				break more
			}
		}
		for _, r := range batch {
			ins = append(ins, r.in)
		}
		// The batch is written under its own timeout: the waiters' contexts bound how long
		// they retry, not a write already under way.
		wctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		outs, err := b.write(wctx, ins)
		if err != nil && len(batch) > 1 {
			// One bad request aborts the batch: write one by one so only it fails.
			for _, r := range batch {
				out, err := b.write(wctx, []I{r.in})
				var one O
				if err == nil {
					one = out[0]
				}
				r.done <- batchRes[O]{out: one, err: err}
			}
			cancel()
			continue
		}
		cancel()
		for i, r := range batch {
			if err != nil {
				r.done <- batchRes[O]{err: err}
				continue
			}
			r.done <- batchRes[O]{out: outs[i]}
		}
	}
}
