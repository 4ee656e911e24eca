package telemetry_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/pkg/telemetry"
	"github.com/sluicehq/sluice/pkg/telemetry/oteltest"
	"github.com/sluicehq/sluice/pkg/tokens"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const clientTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestEnabled_Issue14_1(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"nothing set", nil, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, true},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"}, false},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"}, false},
		{"exporter otlp", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "otlp"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := telemetry.Enabled(func(k string) string { return tt.env[k] }); got != tt.want {
				t.Errorf("Enabled(%v) = %v, want %v", tt.env, got, tt.want)
			}
		})
	}
}

// With tracing off, the hot path's calls allocate nothing: starting and ending a span,
// asking whether it records, and injecting into a job that has no trace context.
func TestOffAllocatesNothing_Issue14_2(t *testing.T) { // not parallel: AllocsPerRun refuses a parallel test
	var tr *telemetry.Tracer // off
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		sctx, span := tr.Start(ctx, "x", trace.SpanKindServer)
		if span.IsRecording() {
			t.Fatal("off span records")
		}
		telemetry.Usage(span, &tokens.Usage{PromptTokens: 1})
		if h := telemetry.Inject(sctx, nil); h != nil {
			t.Fatal("header made without a trace context")
		}
		_ = telemetry.Extract(sctx, nil)
		span.End()
	})
	if allocs != 0 {
		t.Errorf("allocations per span with tracing off = %v, want 0", allocs)
	}
}

// A client's traceparent crosses NATS headers unchanged, tracing on or off.
func TestHeaderRoundTrip_Issue14_3(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	h.Set("Traceparent", clientTraceparent)
	h.Set("Tracestate", "vendor=1")
	ctx := telemetry.ExtractHTTP(context.Background(), h)
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsRemote() || sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("extracted %v, want the client's remote span context", sc)
	}
	nh := telemetry.Inject(ctx, nil)
	if got := nh.Get(telemetry.HeaderTraceparent); got != clientTraceparent {
		t.Errorf("traceparent = %q, want %q", got, clientTraceparent)
	}
	if got := nh.Get(telemetry.HeaderTracestate); got != "vendor=1" {
		t.Errorf("tracestate = %q, want vendor=1", got)
	}
	back := trace.SpanContextFromContext(telemetry.Extract(context.Background(), nh))
	if !back.Equal(sc) {
		t.Errorf("extracted from NATS header %v, want %v", back, sc)
	}
	if got := telemetry.TraceIDOf(telemetry.SpanContextOf(nh)); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("SpanContextOf trace id = %q", got)
	}
	bad := nats.Header{}
	bad.Set(telemetry.HeaderTraceparent, "garbage")
	if telemetry.SpanContextOf(bad).IsValid() {
		t.Error("a malformed traceparent gave a valid span context")
	}
	if got := telemetry.JobAttrs("job_1", "req_1", ""); len(got) != 6 || got[4] != "trace_id" {
		t.Errorf("JobAttrs = %v", got)
	}
}

// Setup with an endpoint exports over OTLP/HTTP, named by the default service name, and its
// shutdown flushes what is buffered.
func TestSetupExports_Issue14_4(t *testing.T) {
	rec := oteltest.NewReceiver(true)
	srv := httptest.NewServer(rec)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_SERVICE_NAME", "")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "60000") // only the shutdown flush exports
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	tp, shutdown, err := telemetry.Setup(t.Context(), "sluice-test", log)
	if err != nil {
		t.Fatal(err)
	}
	tr := telemetry.NewTracer(tp)
	if !tr.On() {
		t.Fatal("tracer off with an endpoint set")
	}
	ctx := telemetry.ExtractHTTP(context.Background(), http.Header{"Traceparent": {clientTraceparent}})
	_, span := tr.StartAt(ctx, "queue wait", trace.SpanKindInternal, time.Now().Add(-time.Second))
	telemetry.Usage(span, &tokens.Usage{PromptTokens: 7, CompletionTokens: 3})
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := rec.Spans()
	if len(spans) != 1 {
		t.Fatalf("received %d spans, want 1", len(spans))
	}
	s := spans[0]
	if s.Service != "sluice-test" || s.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || s.ParentSpanID != "00f067aa0ba902b7" {
		t.Errorf("span = %+v, want service sluice-test in the client's trace under its span", s)
	}
	if s.Attrs["gen_ai.usage.input_tokens"] != int64(7) || s.Attrs["gen_ai.usage.output_tokens"] != int64(3) {
		t.Errorf("attributes = %v, want the token counts", s.Attrs)
	}
	if s.End.Sub(s.Start) < time.Second {
		t.Errorf("span lasted %v, want at least the 1s it was started in the past", s.End.Sub(s.Start))
	}
}

func TestSetupOff_Issue14_5(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tp, shutdown, err := telemetry.Setup(t.Context(), "sluice-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if telemetry.NewTracer(tp).On() {
		t.Error("tracer on with no endpoint")
	}
	if err := shutdown(t.Context()); err != nil {
		t.Error(err)
	}
}
