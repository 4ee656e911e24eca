package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

// settler writes job outcomes to Postgres in batches: whatever outcomes are waiting when a
// write starts go together in one transaction, so under load one commit settles many jobs
// and at low load a job waits for nothing but its own write. Each caller still blocks until
// its own outcome is durable, so "recorded before reply and ack" holds per job.
type settler struct {
	rec Recorder
	log *slog.Logger
	in  chan settleReq
}

type settleReq struct {
	ctx  context.Context
	o    store.Outcome
	done chan settleRes // buffered 1
}

type settleRes struct {
	f   store.Finished
	err error
}

// maxSettleBatch caps one transaction.
const maxSettleBatch = 128

func newSettler(rec Recorder, log *slog.Logger) *settler {
	return &settler{rec: rec, log: log, in: make(chan settleReq)}
}

// finish hands o to the settler and waits for it to be written.
func (s *settler) finish(ctx context.Context, o store.Outcome) (store.Finished, error) {
	done := make(chan settleRes, 1)
	select {
	case s.in <- settleReq{ctx: ctx, o: o, done: done}:
	case <-ctx.Done():
		return store.Finished{}, ctx.Err()
	}
	r := <-done // the settler always answers
	return r.f, r.err
}

// run settles until ctx is done. The worker stops it only after every job has returned.
func (s *settler) run(ctx context.Context) {
	batch := make([]settleReq, 0, maxSettleBatch)
	outcomes := make([]store.Outcome, 0, maxSettleBatch)
	for {
		batch, outcomes = batch[:0], outcomes[:0]
		select {
		case <-ctx.Done():
			return
		case r := <-s.in:
			batch = append(batch, r)
		}
	more:
		for len(batch) < maxSettleBatch {
			select {
			case r := <-s.in:
				batch = append(batch, r)
			default:
				break more
			}
		}
		for _, r := range batch {
			outcomes = append(outcomes, r.o)
		}
		// The batch is written under its own timeout: the waiters' contexts bound how long
		// they retry, not a write already under way.
		wctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		fs, err := s.rec.FinishJobs(wctx, outcomes)
		if err != nil && len(batch) > 1 {
			// One bad outcome aborts the batch: settle one by one so only it fails.
			for _, r := range batch {
				f, err := s.rec.FinishJobs(wctx, []store.Outcome{r.o})
				var one store.Finished
				if err == nil {
					one = f[0]
				}
				r.done <- settleRes{f: one, err: err}
			}
			cancel()
			continue
		}
		cancel()
		for i, r := range batch {
			if err != nil {
				r.done <- settleRes{err: err}
				continue
			}
			r.done <- settleRes{f: fs[i]}
		}
	}
}
