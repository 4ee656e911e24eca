package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
)

// delivery is one JetStream delivery of a job, as handle works it.
type delivery struct {
	msg       jetstream.Msg
	job       *jobs.Job
	delivered int // NumDelivered
	rep       *jobs.Replier
	log       *slog.Logger
	span      trace.Span // the delivery's process span (tracing.go); no-op when tracing is off
	settle    trace.Span // the settlement's span while it is open; nil otherwise
}

// handle runs one delivery of a job: start it in Postgres, call upstream, record the result,
// reply, ack. Every path ends in exactly one decision of deliver.go.
// ctx is the job's context (cancelled at the end of the shutdown grace); hard is what
// recording runs under: it survives ctx, so an outcome is still recorded after a shutdown
// cancel, but ends a few seconds later, so a worker whose Postgres is away still stops (its
// unrecorded jobs go back to the queue).
func (p *Pool) handle(ctx, hard context.Context, msg jetstream.Msg) {
	// Each phase is a call that returns before the next, so that the stack under the
	// upstream call, which an in-flight job holds for as long as the upstream takes, carries
	// only this frame's few locals (see jobs/retry.go).
	ctx, hard, d, seq := p.receive(ctx, hard, msg)
	if d == nil {
		return
	}
	defer d.span.End()
	releaseShare, ok := p.takeShare(ctx, d)
	if !ok {
		return
	}
	defer releaseShare()
	defer p.held.hold(seq, msg)()
	p.metrics.busy.Inc()
	defer p.metrics.busy.Dec()

	deadline := p.runDeadline(d.job)
	// Recording may outlive the job's context (shutdown, deadline) by RecordGrace — counted
	// from now if the job arrives late — but not the worker's hard stop.
	recordCtx, cancelRecord := context.WithDeadline(hard, later(deadline, time.Now()).Add(p.cfg.Queue.RecordGrace))
	defer cancelRecord()

	// Recover panics here, at the job boundary: record an internal failure instead of losing
	// the job or taking the process down.
	defer func() {
		if r := recover(); r != nil {
			p.panicked(ctx, recordCtx, d, r)
		}
	}()

	if !p.checkIn(ctx, recordCtx, d, deadline) {
		return
	}
	out, cause := p.callUpstream(ctx, d, deadline)
	if errors.Is(cause, ErrShutdown) && p.returnAtShutdown(ctx, d) {
		return
	}
	p.finish(recordCtx, d, out)
}

// receive reads a delivery: its metadata, its job and the job's headers; it starts the
// delivery's span. A delivery it cannot read it settles, and returns a nil delivery.
func (p *Pool) receive(ctx, hard context.Context, msg jetstream.Msg) (context.Context, context.Context, *delivery, uint64) {
	md, err := msg.Metadata()
	if err != nil {
		apply(p.log, msg, p.policy.decide(situation{end: endUnreadable}))
		return ctx, hard, nil, 0
	}
	job, err := jobs.Decode(msg.Data())
	if err != nil {
		p.log.ErrorContext(ctx, "dropping malformed job", "err", err, "stream_seq", md.Sequence.Stream)
		apply(p.log, msg, p.policy.decide(situation{end: endUnreadable, delivered: int(md.NumDelivered)}))
		return ctx, hard, nil, 0
	}
	job.SetHeader(msg.Headers()) // the request id, trace context and how to answer
	ctx, hard, span := p.traceJob(ctx, hard, job, md)
	d := &delivery{msg: msg, job: job, delivered: int(md.NumDelivered), rep: jobs.NewReplier(p.nc, job, md.NumDelivered),
		log: p.jobLog(ctx, job, md.NumDelivered), span: span}
	return ctx, hard, d, md.Sequence.Stream
}

// takeShare takes a slot of the job's key's share; over it, the job goes back to the queue
// for a while, so this slot serves another key (unless the job has few deliveries to spare).
func (p *Pool) takeShare(ctx context.Context, d *delivery) (release func(), ok bool) {
	over := p.policy.decide(situation{end: endOverShare, delivered: d.delivered})
	release, ok = p.shares.take(d.job.KeyID, over.act == actSettle)
	if !ok {
		d.log.DebugContext(ctx, "key over its share of the slots; job returned to the queue", "retry_in", over.delay)
		p.metrics.overShare.Inc()
		apply(d.log, d.msg, over)
	}
	return release, ok
}

// runDeadline is when this run of job must end: its deadline, or JobTimeout after it was
// created (after now, for a batch line, whose deadline is its batch's expiry).
func (p *Pool) runDeadline(job *jobs.Job) time.Time {
	deadline := job.Deadline
	began := job.CreatedAt
	if job.Batch != "" {
		began = time.Now()
	}
	if limit := began.Add(p.cfg.Queue.JobTimeout); limit.Before(deadline) {
		deadline = limit
	}
	return deadline
}

// panicked records a job whose handling panicked as an internal failure.
func (p *Pool) panicked(ctx, recordCtx context.Context, d *delivery, r any) {
	d.log.ErrorContext(ctx, "job panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	p.finish(recordCtx, d, failed(jobs.NewError(500, "internal_error", "", "Internal error while running the job.")))
}

// callUpstream runs the job's upstream attempts under its deadline, cancellable by a
// cancel request, and returns how it ended and why its context ended, if it did.
func (p *Pool) callUpstream(ctx context.Context, d *delivery, deadline time.Time) (outcome, error) {
	jctx, cancelJob := context.WithCancelCause(ctx)
	jctx, cancelDeadline := context.WithDeadlineCause(jctx, deadline, ErrJobTimeout)
	unregister := p.held.run(d.job.ID, cancelJob)
	defer func() { // also on a panic, which handle's recover turns into a failure
		cancelDeadline()
		cancelJob(nil)
		unregister()
	}()
	out := p.caller.run(jctx, d.log, d.job, d.rep)
	return out, context.Cause(jctx)
}

// returnAtShutdown puts a job the shutdown interrupted back on the queue when nothing of
// it reached the caller yet, so that another worker runs the whole job; it reports whether
// it did.
func (p *Pool) returnAtShutdown(ctx context.Context, d *delivery) bool {
	dec := p.policy.decide(situation{end: endShutdown, delivered: d.delivered, sent: d.rep.Sent()})
	if dec.act == actSettle {
		return false
	}
	d.log.InfoContext(ctx, "returning job to the queue at shutdown")
	apply(d.log, d.msg, dec)
	return true
}

// checkIn does what comes before a delivery's upstream call: it replays an outcome or an
// answer an earlier delivery recorded, marks the job running where it must, and ends the
// job that was cancelled, is past its deadline, or whose key is refused. It returns true
// when the job is to be run; otherwise it has settled the delivery. It is apart from
// handle so that what it holds (a job row, the checks' temporaries) is not on the stack
// under the upstream call, which every in-flight job holds (see jobs/retry.go).
func (p *Pool) checkIn(ctx, recordCtx context.Context, d *delivery, deadline time.Time) bool {
	job := d.job
	cancelled := p.held.cancelledBefore(job.ID)
	if d.delivered > 1 && p.outcomes != nil {
		// An earlier delivery may have recorded its outcome and died before acking: answer
		// from that outcome rather than call upstream again.
		if o, err := p.outcomes.Pending(recordCtx, job.ID); err == nil && o != nil {
			d.log.InfoContext(ctx, "job's outcome already recorded; replaying it", "status", o.Status)
			p.replayOutcome(ctx, d, o)
			return false
		}
	}
	var row store.Job
	// A sync job on its first delivery has no row yet and no earlier result: its row is
	// written once, with its outcome, which keeps one Postgres write on the hot path. Async
	// jobs (their row exists and must read "running") and redeliveries check in first.
	if job.Async || d.delivered > 1 || cancelled {
		var started bool
		err := retryStore(recordCtx, d.log, "start job", func(ctx context.Context) error {
			st, err := p.start.Do(ctx, job.Row(d.delivered))
			row, started = st.Job, st.Started
			return err
		})
		if err != nil {
			p.giveBack(d, err)
			return false
		}
		if !started { // already ended: a redelivery after recording, or cancelled while queued
			d.log.InfoContext(ctx, "job already finished; replaying its answer", "status", row.Status)
			p.replay(ctx, d, &row)
			return false
		}
	}
	if row.CancelRequested || cancelled { // cancelled while no worker held it
		p.finish(recordCtx, d, failedAs(store.StatusCanceled, jobs.Canceled()))
		return false
	}
	if job.Batch != "" && p.batchState != nil {
		if o := p.batchRefusal(recordCtx, job, time.Now()); o != nil {
			p.finish(recordCtx, d, *o)
			return false
		}
	}
	if !time.Now().Before(deadline) {
		p.finish(recordCtx, d, timedOut(nil, ""))
		return false
	}
	kctx, cancelKey := context.WithTimeout(recordCtx, 2*time.Second)
	now := time.Now
	if p.cfg.Now != nil {
		now = p.cfg.Now
	}
	refused := p.keys.refuse(kctx, job.KeyID, now())
	cancelKey()
	if refused != nil { // revoked, expired, gone or over budget while the job was queued
		d.log.InfoContext(ctx, "job refused at pick-up", "code", refused.Code)
		p.finish(recordCtx, d, failed(refused))
		return false
	}
	return true
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// giveBack settles a delivery whose start or outcome Postgres did not take.
func (p *Pool) giveBack(d *delivery, err error) {
	dec := p.policy.decide(situation{end: endStoreFailed, delivered: d.delivered, permanent: errors.Is(err, store.ErrPermanent)})
	if dec.act == actTerm {
		d.log.Error("cannot record job; dropping it", "err", err)
	} else {
		d.log.Warn("cannot record job; returning it to the queue", "err", err)
	}
	apply(d.log, d.msg, dec)
}
