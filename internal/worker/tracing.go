package worker

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/telemetry"
)

// SetTracer has the pool trace the jobs it runs with t (nil: tracing off, the default).
// Call it before Run.
func (p *Pool) SetTracer(t *telemetry.Tracer) {
	p.tracer = t
	p.caller.tracer = t
}

// traceJob starts the spans of one delivery: its queue wait, from the time JetStream
// stored the job to now, and the span that processes it, both children of the ingress's
// publish span (its trace context rides in the job's headers). ctx and hard come back
// carrying the process span. With tracing off they come back as they were, with ctx's span
// (a no-op one). The job's ids are on the process span: its children do not repeat them.
func (p *Pool) traceJob(ctx, hard context.Context, job *jobs.Job, md *jetstream.MsgMetadata) (context.Context, context.Context, trace.Span) {
	if !p.tracer.On() {
		return ctx, hard, trace.SpanFromContext(ctx)
	}
	parent := telemetry.Extract(ctx, job.Header)
	now := time.Now()
	stored := md.Timestamp
	if stored.IsZero() || stored.After(now) { // clocks apart: a wait of zero, not a negative one
		stored = now
	}
	_, wait := p.tracer.StartAt(parent, "queue wait", trace.SpanKindInternal, stored)
	if wait.IsRecording() {
		wait.SetAttributes(telemetry.Delivery.Int64(int64(md.NumDelivered)))
	}
	wait.End(trace.WithTimestamp(now))
	ctx, span := p.tracer.Start(parent, "process job", trace.SpanKindConsumer)
	if span.IsRecording() {
		span.SetAttributes(telemetry.JobID.String(job.ID), telemetry.KeyID.String(job.KeyID),
			telemetry.RequestID.String(job.RequestID()), telemetry.GenAIRequestModel.String(job.Model),
			telemetry.GenAIOperationName.String(telemetry.OperationName(job.Endpoint)),
			telemetry.Delivery.Int64(int64(md.NumDelivered)), telemetry.Stream.Bool(job.Stream),
			telemetry.MessagingSystem.String("nats"), telemetry.MessagingOperation.String("process"),
			telemetry.MessagingDestination.String(md.Stream))
	}
	return ctx, trace.ContextWithSpan(hard, span), span
}

// startSettle starts the span of recording d's outcome, and puts the outcome on d's process
// span. reply ends it (endSettle), or finish does when there is no reply.
func (p *Pool) startSettle(ctx context.Context, d *delivery, out outcome) context.Context {
	if !d.span.IsRecording() {
		return ctx
	}
	markOutcome(d, out)
	telemetry.Usage(d.span, out.usage)
	ctx, d.settle = p.tracer.Start(trace.ContextWithSpan(ctx, d.span), "settle", trace.SpanKindInternal)
	via := "postgres"
	if p.outcomes != nil {
		via = "stream"
	}
	d.settle.SetAttributes(telemetry.JobStatus.String(out.status), telemetry.SettleVia.String(via))
	return ctx
}

// markOutcome puts out's status on d's span (again, when the record changes it: an answer
// Postgres cannot store is recorded failed).
func markOutcome(d *delivery, out outcome) {
	if !d.span.IsRecording() {
		return
	}
	d.span.SetAttributes(telemetry.JobStatus.String(out.status), telemetry.HTTPResponseStatus.Int(out.code))
	if out.status != store.StatusSucceeded {
		d.span.SetStatus(codes.Error, out.status)
	}
}

// endSettle ends d's settle span, if one is open.
func endSettle(d *delivery) {
	if d.settle != nil {
		d.settle.End()
		d.settle = nil
	}
}

// startReply ends the settlement's span and starts the reply's, whose trace context goes in
// the final message's headers, so that the ingress's receive span follows it.
func (p *Pool) startReply(ctx context.Context, d *delivery, f *jobs.Final) trace.Span {
	endSettle(d)
	if !d.span.IsRecording() {
		return d.span
	}
	ctx, span := p.tracer.Start(trace.ContextWithSpan(ctx, d.span), "reply", trace.SpanKindProducer)
	span.SetAttributes(telemetry.JobStatus.String(f.Status), telemetry.HTTPResponseStatus.Int(f.StatusCode),
		telemetry.MessagingOperation.String("send"))
	if d.job.Reply != "" {
		d.rep.SetFinalHeader(telemetry.Inject(ctx, nil))
	}
	return span
}

// startAnswer starts the span of a reply that is the outcome's own publication
// (finishVia): a child of d's process span beside the settlement's, which stays open over
// the publish. It returns the outcome message's headers (outcomeHeader's) carrying the
// span's trace context, so that the ingress's receive span follows it, and has a final
// reply sent instead carry it too. With tracing off the span is a no-op.
func (p *Pool) startAnswer(ctx context.Context, d *delivery, f *jobs.Final) (nats.Header, trace.Span) {
	h := outcomeHeader(d.job)
	if !d.span.IsRecording() {
		return h, noopSpan
	}
	ctx, span := p.tracer.Start(trace.ContextWithSpan(ctx, d.span), "reply", trace.SpanKindProducer)
	span.SetAttributes(telemetry.JobStatus.String(f.Status), telemetry.HTTPResponseStatus.Int(f.StatusCode),
		telemetry.MessagingOperation.String("send"))
	d.rep.SetFinalHeader(telemetry.Inject(ctx, nil))
	return telemetry.Inject(ctx, h), span
}

// noopSpan is a span that records nothing.
var noopSpan = trace.SpanFromContext(context.Background())

// startAttempt starts the client span of upstream attempt n (1, 2, …) of job on rt.
func (c *caller) startAttempt(ctx context.Context, job *jobs.Job, rt *route.Target, n int) (context.Context, trace.Span) {
	if !c.tracer.On() || !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, trace.SpanFromContext(ctx)
	}
	op := telemetry.OperationName(job.Endpoint)
	ctx, span := c.tracer.Start(ctx, op+" "+rt.UpstreamModel, trace.SpanKindClient)
	span.SetAttributes(telemetry.GenAIOperationName.String(op),
		telemetry.GenAIProviderName.String(telemetry.ProviderName(rt.Channel.Provider)),
		telemetry.GenAIRequestModel.String(rt.UpstreamModel), telemetry.ChannelID.String(rt.Channel.ID),
		telemetry.Attempt.Int(n))
	return ctx, span
}

// endAttempt ends an attempt's span with what came back: the status, the tokens, and the
// kind of failure (never its message, which may quote the request).
func endAttempt(span trace.Span, res *providers.Result, err error) {
	if !span.IsRecording() {
		return
	}
	defer span.End()
	if res != nil {
		if res.StatusCode != 0 {
			span.SetAttributes(telemetry.HTTPResponseStatus.Int(res.StatusCode))
		}
		telemetry.Usage(span, res.Usage)
	}
	if err == nil {
		return
	}
	label := "error"
	if perr, ok := errors.AsType[*providers.Error](err); ok {
		label = outcomeLabel(perr)
		if perr.StatusCode != 0 {
			span.SetAttributes(telemetry.HTTPResponseStatus.Int(perr.StatusCode))
		}
	}
	span.SetAttributes(telemetry.ErrorType.String(label))
	span.SetStatus(codes.Error, label)
}

// outcomeHeader is what an outcome's message carries of its job's headers: the request id
// and the trace context, which the settler's log lines about it show (outcomeLog).
func outcomeHeader(job *jobs.Job) nats.Header {
	var h nats.Header
	for _, k := range [...]string{jobs.HeaderRequestID, telemetry.HeaderTraceparent} {
		if v := job.Header.Get(k); v != "" {
			if h == nil {
				h = make(nats.Header, 3) // and the message id
			}
			h[k] = []string{v}
		}
	}
	return h
}

// outcomeLog is the logger for lines about job jobID's outcome, one of msgs: each carries
// job_id, request_id and trace_id (from the outcome message's headers).
func outcomeLog(log *slog.Logger, msgs []jetstream.Msg, jobID string) *slog.Logger {
	var h nats.Header
	for _, m := range msgs {
		if jobs.OutcomeJobID(m.Subject()) == jobID {
			h = m.Headers()
			break
		}
	}
	return log.With(telemetry.JobAttrs(jobID, h.Get(jobs.HeaderRequestID), telemetry.TraceIDOf(telemetry.SpanContextOf(h)))...)
}
