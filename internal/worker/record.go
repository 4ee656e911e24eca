package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/slots"
	"github.com/sluicehq/sluice/pkg/store"
)

// finish records the outcome, replies and acks.
func (p *Pool) finish(ctx context.Context, d *delivery, out outcome) {
	ctx = p.startSettle(ctx, d, out)
	defer endSettle(d)
	job := d.job
	var cost float64
	var applied bool
	var errJSON json.RawMessage
	if out.err != nil {
		errJSON, _ = json.Marshal(out.err)
	}
	row := job.Row(d.delivered)
	o := store.Outcome{JobID: job.ID, Status: out.status, StatusCode: out.code, ChannelID: out.channelID,
		UpstreamModel: out.upstreamModel,
		Response:      out.body, Error: errJSON, Usage: out.usage, Charge: out.charge, Job: &row}
	if p.outcomes != nil && storable(out.body) && p.finishVia(ctx, d, out, o) {
		return
	}
	record := func() error {
		return retryStore(ctx, d.log, "finish job", func(ctx context.Context) error {
			f, err := p.settle.Do(ctx, o)
			cost, applied = f.CostUSD, f.Applied
			return err
		})
	}
	err := record()
	if errors.Is(err, store.ErrPermanent) {
		// Postgres refused the content (say, an upstream answer that is not valid UTF-8).
		// Record the job without it — failed, but with the usage the upstream did report —
		// rather than leave it unrecorded.
		d.log.ErrorContext(ctx, "cannot store the job's content; recording it without", "err", err)
		out = outcome{status: store.StatusFailed, code: http.StatusBadGateway, usage: out.usage, charge: out.charge,
			channelID: out.channelID, err: jobs.UpstreamError("unstorable_answer",
				"The upstream's answer could not be stored (it is not valid UTF-8 text).")}
		errJSON, _ = json.Marshal(out.err)
		markOutcome(d, out)
		o.Status, o.StatusCode, o.Response, o.Error, o.Job.Request = out.status, out.code, nil, errJSON, nil
		err = record()
	}
	if err != nil {
		// Tell the caller now rather than let it wait for its deadline.
		_ = d.rep.Finish(&jobs.Final{JobID: job.ID, Status: store.StatusFailed, StatusCode: http.StatusServiceUnavailable,
			Error: jobs.Overloaded("unrecorded", "The job's result could not be recorded; retry the request.")}, nil)
		p.giveBack(d, err)
		return
	}
	if !applied { // someone else ended it first (a cancel, the overdue sweeper, another delivery)
		row, err := p.rec.Job(ctx, job.KeyID, job.ID)
		if err == nil {
			p.replay(ctx, d, &row)
			return
		}
	}
	if applied {
		p.metrics.usage.settled(&o, cost)
	}
	p.keys.charged(job.KeyID, cost)
	p.metrics.jobs.WithLabelValues(out.status).Inc()
	d.log.InfoContext(ctx, "job finished", "status", out.status, "status_code", out.code, "cost_usd", cost)
	f := &jobs.Final{JobID: job.ID, Status: out.status, StatusCode: out.code, Error: out.err, CostUSD: cost, Usage: out.usage}
	p.reply(ctx, d, f, out.body, job.Stream, true)
}

// finishVia makes the outcome durable on the outcomes stream, then replies and acks; a
// settler writes it to Postgres later. It returns false, having done nothing, if the stream
// cannot take it (too large for one message, or NATS refused it): the caller then settles in
// Postgres directly. A whole answer whose ingress asked for it (Job.ReplyByOutcome) is not
// replied at all: the stream republishes the stored outcome to the ingress.
func (p *Pool) finishVia(ctx context.Context, d *delivery, out outcome, o store.Outcome) bool {
	if o.Job != nil && o.Job.Async { // its row holds the request already
		j := *o.Job
		j.Request = nil
		o.Job = &j
	}
	// The cost is known once settled; the reply does not carry it (no client reads it).
	f := &jobs.Final{JobID: d.job.ID, Status: out.status, StatusCode: out.code, Error: out.err, Usage: out.usage}
	var dup, answered bool
	var err error
	p.acks.flush() // earlier jobs' acks go out with this outcome
	byOutcome := d.job.ReplyByOutcome && !d.job.Stream && d.job.Reply != ""
	if byOutcome {
		h, span := p.startAnswer(ctx, d, f) // the reply's span, open over the publish
		defer span.End()
		dup, answered, err = p.outcomes.PublishAnswer(ctx, &o, h, d.job.Reply)
	} else {
		dup, err = p.outcomes.PublishWith(ctx, &o, outcomeHeader(d.job))
	}
	if err != nil {
		if !errors.Is(err, jobs.ErrOutcomeTooLarge) {
			d.log.WarnContext(ctx, "outcomes stream refused the outcome; settling it directly", "err", err)
		}
		return false
	}
	if dup { // another delivery's outcome was published first: it stands
		p.replayEnded(ctx, d)
		return true
	}
	p.metrics.jobs.WithLabelValues(out.status).Inc()
	d.log.InfoContext(ctx, "job finished", "status", out.status, "status_code", out.code)
	switch {
	case answered: // the ingress has the stored outcome as its answer
		endSettle(d)
		p.ack(d)
	case byOutcome: // not republished after all: reply, under the span already open
		endSettle(d)
		p.sendReply(ctx, d, f, out.body, d.job.Stream, false)
	default:
		p.reply(ctx, d, f, out.body, d.job.Stream, false) // the settler announces the end
	}
	return true
}

// replayEnded answers a job whose outcome was recorded by an earlier delivery: from the
// outcomes stream if it is not settled yet, else from Postgres.
func (p *Pool) replayEnded(ctx context.Context, d *delivery) {
	if o, err := p.outcomes.Pending(ctx, d.job.ID); err == nil && o != nil {
		p.replayOutcome(ctx, d, o)
		return
	}
	var row store.Job
	err := retryStore(ctx, d.log, "read ended job", func(ctx context.Context) error {
		var err error
		row, err = p.rec.Job(ctx, d.job.KeyID, d.job.ID)
		return err
	})
	if err == nil && !row.Terminal() {
		err = fmt.Errorf("job %s: an outcome was published but is neither pending nor settled", d.job.ID)
	}
	if err != nil {
		p.giveBack(d, err)
		return
	}
	p.replay(ctx, d, &row)
}

// replayOutcome answers a job from its outcome still in the outcomes stream: as the row it
// will become. Its settler announces the end.
func (p *Pool) replayOutcome(ctx context.Context, d *delivery, o *store.Outcome) {
	row := jobs.OutcomeRow(o, d.job.KeyID)
	p.replayRow(ctx, d, &row, false)
}

// storable reports whether Postgres can store body as it is (valid UTF-8: the response
// column is json text). Others take the direct path, which records them without the content
// and tells the caller so.
func storable(body []byte) bool { return utf8.Valid(body) }

// replay answers a job that has already ended from its stored row.
func (p *Pool) replay(ctx context.Context, d *delivery, row *store.Job) {
	p.replayRow(ctx, d, row, true)
}

// replayRow replies a job's recorded end; announce as for reply.
func (p *Pool) replayRow(ctx context.Context, d *delivery, row *store.Job, announce bool) {
	f := jobs.FinalFromJob(row)
	var body json.RawMessage
	if row.Status == store.StatusSucceeded {
		body = row.Response
	}
	p.reply(ctx, d, f, body, len(body) == 0, announce)
}

// reply sends the body (for non-stream answers) and the final message, announces the end
// of an async job if announce (long polls and webhooks wait for it; when the outcome went to
// the outcomes stream its settler announces it once Postgres has it), and acks. The result is
// already durable (in Postgres or the outcomes stream), so a lost reply or ack loses
// nothing: a redelivery replays the recorded result.
func (p *Pool) reply(ctx context.Context, d *delivery, f *jobs.Final, body json.RawMessage, stream, announce bool) {
	defer p.startReply(ctx, d, f).End()
	p.sendReply(ctx, d, f, body, stream, announce)
}

// sendReply is reply without its span.
func (p *Pool) sendReply(ctx context.Context, d *delivery, f *jobs.Final, body json.RawMessage, stream, announce bool) {
	if stream {
		body = nil
	}
	if err := d.rep.Finish(f, body); err != nil {
		d.log.WarnContext(ctx, "reply", "err", err)
	}
	if d.job.Async && announce {
		if b, err := json.Marshal(f); err == nil {
			_ = p.nc.Publish(jobs.DonePrefix+f.JobID, b)
		}
	}
	p.ack(d)
}

// ack acks d, whose outcome is recorded: within a few milliseconds, with this process's
// next NATS message (acks.go).
func (p *Pool) ack(d *delivery) {
	if dec := p.policy.decide(situation{end: endRecorded, delivered: d.delivered}); dec.act != actAck {
		apply(d.log, d.msg, dec)
		return
	}
	p.acks.add(d.msg)
}

// retryStore runs fn until it succeeds, fails permanently, or ctx ends, backing off between
// tries, so a Postgres restart delays jobs instead of losing them.
func retryStore(ctx context.Context, log *slog.Logger, what string, fn func(context.Context) error) error {
	delay := 100 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := fn(cctx)
		cancel()
		if err == nil || errors.Is(err, store.ErrPermanent) || errors.Is(err, store.ErrNotFound) {
			return err
		}
		log.WarnContext(ctx, what+": postgres unavailable; retrying", "err", err, "retry_in", delay)
		slots.Sleep(ctx, delay)
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		delay = min(delay*2, 5*time.Second)
	}
}
