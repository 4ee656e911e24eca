package worker

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/telemetry"
)

// jobLog is the logger of one delivery: every line it writes carries the job's ids
// (telemetry.JobAttrs' keys, then the key, the model and the delivery's number). The trace
// id is the delivery's span's, or the one the job's headers carry when tracing is off.
//
// The attributes are written out when a line is, not when the logger is made. slog's With
// formats them at once, which was 8 % of the worker's CPU at c=64, for lines that most jobs
// never write (BENCHMARKS.md, "Stacks under the wait").
func (p *Pool) jobLog(ctx context.Context, job *jobs.Job, delivered uint64) *slog.Logger {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		sc = telemetry.SpanContextOf(job.Header)
	}
	return slog.New(&jobHandler{base: p.log.Handler(), jobID: job.ID, requestID: job.RequestID(), keyID: job.KeyID,
		model: job.Model, sc: sc, delivered: delivered})
}

// jobHandler adds a job's attributes to each record before its base handler writes it, as
// if the base had been given them by WithAttrs.
type jobHandler struct {
	base                           slog.Handler
	jobID, requestID, keyID, model string
	sc                             trace.SpanContext
	delivered                      uint64
}

func (h *jobHandler) attrs() []slog.Attr {
	return []slog.Attr{slog.String("job_id", h.jobID), slog.String("request_id", h.requestID),
		slog.String("trace_id", telemetry.TraceIDOf(h.sc)), slog.String("key_id", h.keyID), slog.String("model", h.model),
		slog.Uint64("attempt", h.delivered)}
}

func (h *jobHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.base.Enabled(ctx, level)
}

func (h *jobHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(h.attrs()...)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return h.base.Handle(ctx, out)
}

func (h *jobHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return h.base.WithAttrs(h.attrs()).WithAttrs(as)
}

func (h *jobHandler) WithGroup(name string) slog.Handler {
	return h.base.WithAttrs(h.attrs()).WithGroup(name)
}
