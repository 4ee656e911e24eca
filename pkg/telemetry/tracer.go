package telemetry

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// instrumentation is the name of Sluice's tracer.
const instrumentation = "github.com/sluicehq/sluice"

// Tracer starts Sluice's spans. A nil *Tracer is off: its methods allocate nothing and
// return the span already in ctx (a client's remote span context, or none), whose methods do
// nothing. Callers build attributes only when span.IsRecording().
type Tracer struct {
	t trace.Tracer
}

// NewTracer returns tp's tracer, or nil (off) when tp is nil or a no-op provider.
func NewTracer(tp trace.TracerProvider) *Tracer {
	if tp == nil {
		return nil
	}
	if _, ok := tp.(noop.TracerProvider); ok {
		return nil
	}
	return &Tracer{t: tp.Tracer(instrumentation)}
}

// On reports whether t records spans (subject to sampling).
func (t *Tracer) On() bool { return t != nil }

// Start starts a span of kind named name, a child of ctx's span (or remote span context).
// Off, it returns ctx and ctx's span.
func (t *Tracer) Start(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	if t == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	return t.t.Start(ctx, name, trace.WithSpanKind(kind))
}

// StartAt is Start for a span that began at at (a wait measured after the fact).
func (t *Tracer) StartAt(ctx context.Context, name string, kind trace.SpanKind, at time.Time) (context.Context, trace.Span) {
	if t == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	return t.t.Start(ctx, name, trace.WithSpanKind(kind), trace.WithTimestamp(at))
}
