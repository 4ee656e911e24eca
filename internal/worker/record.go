package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/slots"
	"github.com/sluicehq/sluice/pkg/store"
)

// finish records the outcome, replies and acks.
func (p *Pool) finish(ctx context.Context, d *delivery, out outcome) {
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
	p.keys.charged(job.KeyID, cost)
	p.metrics.jobs.WithLabelValues(out.status).Inc()
	d.log.InfoContext(ctx, "job finished", "status", out.status, "status_code", out.code, "cost_usd", cost)
	f := &jobs.Final{JobID: job.ID, Status: out.status, StatusCode: out.code, Error: out.err, CostUSD: cost, Usage: out.usage}
	p.reply(ctx, d, f, out.body, job.Stream)
}

// replay answers a job that has already ended from its stored row.
func (p *Pool) replay(ctx context.Context, d *delivery, row *store.Job) {
	f := jobs.FinalFromJob(row)
	var body json.RawMessage
	if row.Status == store.StatusSucceeded {
		body = row.Response
	}
	p.reply(ctx, d, f, body, len(body) == 0)
}

// reply sends the body (for non-stream answers) and the final message, announces the end
// of an async job (long polls and webhooks wait for it), and acks. The result is already in
// Postgres, so a lost reply or ack loses nothing: a redelivery replays the stored result.
func (p *Pool) reply(ctx context.Context, d *delivery, f *jobs.Final, body json.RawMessage, stream bool) {
	if stream {
		body = nil
	}
	if err := d.rep.Finish(f, body); err != nil {
		d.log.WarnContext(ctx, "reply", "err", err)
	}
	if d.job.Async {
		if b, err := json.Marshal(f); err == nil {
			_ = p.nc.Publish(jobs.DonePrefix+f.JobID, b)
		}
	}
	apply(d.log, d.msg, p.policy.decide(situation{end: endRecorded, delivered: d.delivered}))
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
