// Package batch groups concurrent requests into one write: whatever requests are waiting
// when a write starts go together (one statement, one commit, one NATS round trip), so
// under load one write serves many callers, and at low load a request waits for nothing
// but its own write. Each caller still blocks until its own request is written, so a
// durability promise made per request ("recorded before reply", "stored before 202") holds.
//
// The worker batches job starts and outcomes through it; the ingress batches async
// submissions.
package batch

import (
	"cmp"
	"context"
	"time"
)

// WriteFunc writes ins all or nothing and returns one output per input. An error fails the
// whole batch; a batch of several is then written again one by one, so one bad request
// fails alone.
type WriteFunc[I, O any] func(ctx context.Context, ins []I) ([]O, error)

// Options tune a Batcher. Zero fields take the defaults noted.
type Options struct {
	Max     int           // requests in one write (128)
	Timeout time.Duration // bound on one write, whatever its callers' contexts (15s)
}

// Batcher hands requests to the goroutines running Run.
type Batcher[I, O any] struct {
	write WriteFunc[I, O]
	opts  Options
	in    chan request[I, O]
}

type request[I, O any] struct {
	in   I
	done chan result[O] // buffered 1
}

type result[O any] struct {
	out O
	err error
}

// New returns a Batcher writing with write. Nothing is written until Run is running.
func New[I, O any](write WriteFunc[I, O], opts Options) *Batcher[I, O] {
	opts.Max = cmp.Or(opts.Max, 128)
	opts.Timeout = cmp.Or(opts.Timeout, 15*time.Second)
	return &Batcher[I, O]{write: write, opts: opts, in: make(chan request[I, O])}
}

// Do hands in to a writer and waits until it is written. It returns ctx's error if no
// writer took the request before ctx ended; once taken, it waits for the write (bounded by
// Options.Timeout).
func (b *Batcher[I, O]) Do(ctx context.Context, in I) (O, error) {
	done := make(chan result[O], 1)
	select {
	case b.in <- request[I, O]{in: in, done: done}:
	case <-ctx.Done():
		var zero O
		return zero, ctx.Err()
	}
	r := <-done // a writer that took the request always answers
	return r.out, r.err
}

// Run writes batches until ctx is done. Several goroutines may run it at once: while one
// writes, the next batch fills. Stop it only once no caller can still be in Do, or those
// callers wait until their own contexts end.
func (b *Batcher[I, O]) Run(ctx context.Context) {
	batch := make([]request[I, O], 0, b.opts.Max)
	ins := make([]I, 0, b.opts.Max)
	for {
		batch, ins = batch[:0], ins[:0]
		select {
		case <-ctx.Done():
			return
		case r := <-b.in:
			batch = append(batch, r)
		}
	more:
		for len(batch) < b.opts.Max {
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
		b.flush(batch, ins)
	}
}

// flush writes one batch under its own timeout: the callers' contexts bound how long they
// retry, not a write already under way.
func (b *Batcher[I, O]) flush(batch []request[I, O], ins []I) {
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
	defer cancel()
	outs, err := b.write(ctx, ins)
	if err != nil && len(batch) > 1 {
		for _, r := range batch { // isolate the bad request
			out, err := b.write(ctx, []I{r.in})
			var one O
			if err == nil {
				one = out[0]
			}
			r.done <- result[O]{out: one, err: err}
		}
		return
	}
	for i, r := range batch {
		if err != nil {
			r.done <- result[O]{err: err}
			continue
		}
		r.done <- result[O]{out: outs[i]}
	}
}
