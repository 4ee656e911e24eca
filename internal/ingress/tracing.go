package ingress

import (
	"context"
	"log/slog"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/telemetry"
)

// untraced routes get no span: health probes would drown the traces that matter.
var untraced = map[string]bool{"GET /healthz": true, "GET /readyz": true}

// traced runs h in the request's server span, a child of the client's span when it sent a
// traceparent. With tracing off it only passes a client's trace context on (in ctx, to the
// job's headers and the logs), and costs nothing when there is none.
func (s *Server) traced(route string, h http.Handler) http.Handler {
	if untraced[route] {
		return h
	}
	_, path, _ := strings.Cut(route, " ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := telemetry.ExtractHTTP(r.Context(), r.Header)
		if !s.tracer.On() {
			if ctx != r.Context() {
				r = r.WithContext(ctx)
			}
			h.ServeHTTP(w, r)
			return
		}
		s.serveSpan(ctx, route, path, h, w, r)
	})
}

// serveSpan is traced's tracing-on half, apart so that its attributes do not widen the
// frame every request's goroutine carries below its handler (see the stack note in
// jobs/retry.go).
func (s *Server) serveSpan(ctx context.Context, route, path string, h http.Handler, w http.ResponseWriter, r *http.Request) {
	ctx, span := s.tracer.Start(ctx, route, trace.SpanKindServer)
	defer span.End()
	if !span.IsRecording() { // sampled out: the context still goes on
		h.ServeHTTP(w, r.WithContext(ctx))
		return
	}
	span.SetAttributes(telemetry.HTTPRequestMethod.String(r.Method), telemetry.HTTPRoute.String(path),
		telemetry.RequestID.String(w.Header().Get("X-Request-Id")))
	rec := &statusRecorder{ResponseWriter: w}
	h.ServeHTTP(rec, r.WithContext(ctx))
	span.SetAttributes(telemetry.HTTPResponseStatus.Int(rec.status))
	if rec.status >= http.StatusInternalServerError {
		span.SetStatus(codes.Error, http.StatusText(rec.status))
	}
}

// startPublish puts on job what travels with it as NATS headers, the request id and the
// trace context, and starts the span of queueing it; end that span with endSpan. With
// tracing off the trace context is the client's, if it sent one.
func (s *Server) startPublish(ctx context.Context, w http.ResponseWriter, job *jobs.Job) (context.Context, trace.Span) {
	if id := w.Header().Get("X-Request-Id"); id != "" {
		job.Header = nats.Header{jobs.HeaderRequestID: {id}}
	}
	if server := trace.SpanFromContext(ctx); server.IsRecording() {
		server.SetAttributes(telemetry.JobID.String(job.ID), telemetry.KeyID.String(job.KeyID),
			telemetry.GenAIRequestModel.String(job.Model), telemetry.GenAIOperationName.String(telemetry.OperationName(job.Endpoint)))
	}
	ctx, span := s.tracer.Start(ctx, "publish job", trace.SpanKindProducer)
	if span.IsRecording() {
		span.SetAttributes(telemetry.MessagingSystem.String("nats"), telemetry.MessagingOperation.String("send"),
			telemetry.MessagingDestination.String(jobs.StreamName))
	}
	job.Header = telemetry.Inject(ctx, job.Header)
	return ctx, span
}

// endSpan ends span, marked failed if err is not nil (its message stays out: only the kind
// of failure is recorded).
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, "publish failed")
	}
	span.End()
}

// traceReply records a job's final reply: a span under the worker's reply span (whose trace
// context rides in the message's headers), and the token usage on the request's span. The
// job's ids are on the request's span: its children do not repeat them.
func (s *Server) traceReply(ctx context.Context, m *nats.Msg, rep *jobs.Reply) {
	if !s.tracer.On() || rep.Final == nil {
		return
	}
	f := rep.Final
	server := trace.SpanFromContext(ctx)
	telemetry.Usage(server, f.Usage)
	_, span := s.tracer.Start(telemetry.Extract(ctx, m.Header), "receive reply", trace.SpanKindConsumer)
	if span.IsRecording() {
		span.SetAttributes(telemetry.JobStatus.String(f.Status), telemetry.HTTPResponseStatus.Int(f.StatusCode),
			telemetry.ReplyParts.Int(f.Parts), telemetry.MessagingOperation.String("receive"))
	}
	span.End()
}

// jobLog is the logger for lines about job jobID: each carries job_id, request_id and
// trace_id (from ctx's span context).
func (s *Server) jobLog(ctx context.Context, requestID, jobID string) *slog.Logger {
	return s.log.With(telemetry.JobAttrs(jobID, requestID, telemetry.TraceID(ctx))...)
}
