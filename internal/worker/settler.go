package worker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/slots"
	"github.com/sluicehq/sluice/pkg/store"
)

// settler writes the outcomes stream to Postgres: it takes whatever outcomes are waiting
// (up to max), writes them in one FinishJobs statement, and only then acks them, so an
// outcome is removed from the stream once Postgres holds it. Writing is idempotent (the
// first outcome of a job applies, once), so a redelivered or duplicate outcome changes
// nothing. While Postgres is away it retries the same batch, keeping its messages alive with
// progress acks; the outcomes wait in the stream meanwhile, however many there are.
type settler struct {
	cons    jetstream.Consumer
	finish  func(ctx context.Context, os []store.Outcome) ([]store.Finished, error)
	nc      *nats.Conn
	keys    *keyCheck
	usage   *usageMetrics // nil: not counted
	log     *slog.Logger
	max     int           // outcomes per write
	budget  int           // bytes of outcomes per write (at least one outcome, whatever its size)
	wait    time.Duration // longest pull when the stream is empty
	linger  time.Duration // how long the second pull waits to fill a batch
	ackWait time.Duration // the consumer's AckWait
}

// run settles until ctx ends. Messages it holds then are redelivered after AckWait.
func (s *settler) run(ctx context.Context) {
	for ctx.Err() == nil {
		msgs := s.next(ctx)
		if len(msgs) > 0 {
			s.settle(ctx, msgs)
		}
	}
}

// next waits up to s.wait for one outcome, then takes every other one already waiting, up
// to s.max and s.budget bytes: a batch is whatever arrived while the last one was written.
func (s *settler) next(ctx context.Context) []jetstream.Msg {
	fctx, cancel := context.WithTimeout(ctx, s.wait)
	b, err := s.cons.Fetch(1, jetstream.FetchContext(fctx))
	var msgs []jetstream.Msg
	if err == nil {
		for m := range b.Messages() {
			msgs = append(msgs, m)
		}
	}
	cancel() // only after the batch is drained
	if err != nil || len(msgs) == 0 {
		if err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "fetch outcomes", "err", err)
			slots.Sleep(ctx, time.Second) // NATS away: don't spin
		}
		return nil
	}
	if s.max > 1 {
		// The rest: whatever is there or comes within the linger, up to max and s.budget
		// bytes (the server stops short of the budget).
		if b, err := s.cons.Fetch(s.max-1, jetstream.FetchMaxBytes(max(s.budget-len(msgs[0].Data()), 1<<20)),
			jetstream.FetchMaxWait(max(s.linger, time.Millisecond))); err == nil {
			for m := range b.Messages() {
				msgs = append(msgs, m)
			}
		}
	}
	return msgs
}

// settle writes msgs' outcomes and acks them.
func (s *settler) settle(ctx context.Context, msgs []jetstream.Msg) {
	outs := make([]store.Outcome, 0, len(msgs))
	seen := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		o, err := jobs.DecodeOutcome(m.Data())
		if err != nil {
			s.log.ErrorContext(ctx, "dropping malformed outcome", "err", err, "subject", m.Subject())
			_ = m.Term()
			continue
		}
		if seen[o.JobID] { // a redelivery beside its original: one write settles both
			continue
		}
		seen[o.JobID] = true
		outs = append(outs, o)
	}
	fins, err := s.write(ctx, msgs, outs)
	if err != nil { // only when ctx ended: the outcomes stay in the stream
		return
	}
	for i, f := range fins {
		if !f.Applied {
			continue // settled before (a redelivery), or the job was ended another way first
		}
		o := &outs[i]
		s.usage.settled(o, f.CostUSD)
		job := o.Job
		if job != nil {
			s.keys.charged(job.KeyID, f.CostUSD)
		}
		if job != nil && job.Async { // long polls and webhooks read Postgres: tell them now
			_ = s.nc.Publish(jobs.DonePrefix+o.JobID, nil)
		}
	}
	for _, m := range msgs {
		if err := m.Ack(); err != nil {
			s.log.WarnContext(ctx, "ack outcome", "err", err) // redelivered, then a no-op
		}
	}
}

// write settles outs, retrying while Postgres is away until ctx ends. A batch Postgres
// refuses for its content is written one by one; an outcome refused alone is recorded
// without its content, as the direct path does.
func (s *settler) write(ctx context.Context, msgs []jetstream.Msg, outs []store.Outcome) ([]store.Finished, error) {
	fins, err := s.retry(ctx, msgs, outs)
	if !errors.Is(err, store.ErrPermanent) {
		return fins, err
	}
	fins = make([]store.Finished, len(outs))
	for i := range outs {
		f, err := s.retry(ctx, msgs, outs[i:i+1])
		if errors.Is(err, store.ErrPermanent) {
			outcomeLog(s.log, msgs, outs[i].JobID).ErrorContext(ctx, "cannot store the job's content; recording it without", "err", err)
			outs[i] = unstorable(outs[i])
			f, err = s.retry(ctx, msgs, outs[i:i+1])
		}
		if err != nil {
			if errors.Is(err, store.ErrPermanent) {
				outcomeLog(s.log, msgs, outs[i].JobID).ErrorContext(ctx, "cannot record outcome; dropping it", "err", err)
				continue
			}
			return nil, err
		}
		fins[i] = f[0]
	}
	return fins, nil
}

// retry runs FinishJobs on outs until it succeeds, fails permanently or ctx ends, sending
// progress acks for msgs so they are not redelivered while Postgres is away.
func (s *settler) retry(ctx context.Context, msgs []jetstream.Msg, outs []store.Outcome) ([]store.Finished, error) {
	delay := 100 * time.Millisecond
	progressed := time.Now()
	for {
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		fins, err := s.finish(wctx, outs)
		cancel()
		if err == nil || errors.Is(err, store.ErrPermanent) || ctx.Err() != nil {
			return fins, err
		}
		s.log.WarnContext(ctx, "settle outcomes: postgres unavailable; retrying", "outcomes", len(outs), "err", err,
			"retry_in", delay)
		if time.Since(progressed) > s.ackWait/4 {
			for _, m := range msgs {
				_ = m.InProgress()
			}
			progressed = time.Now()
		}
		slots.Sleep(ctx, delay)
		delay = min(delay*2, 5*time.Second, max(s.ackWait/4, 100*time.Millisecond))
	}
}

// unstorable is o recorded without the content Postgres refused (an upstream answer that is
// not valid UTF-8 text): failed, with the usage the upstream did report, still charged.
func unstorable(o store.Outcome) store.Outcome {
	e := jobs.UpstreamError("unstorable_answer", "The upstream's answer could not be stored (it is not valid UTF-8 text).")
	b, _ := json.Marshal(e)
	o.Status, o.StatusCode, o.Response, o.Error = store.StatusFailed, http.StatusBadGateway, nil, b
	if o.Job != nil {
		j := *o.Job
		j.Request = nil
		o.Job = &j
	}
	return o
}
