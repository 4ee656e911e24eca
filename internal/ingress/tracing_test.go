package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/telemetry"
	"github.com/sluicehq/sluice/pkg/tokens"
)

const (
	testTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	testTraceparent = "00-" + testTraceID + "-00f067aa0ba902b7-01"
	// workerTraceparent stands for the worker's reply span in the reply's headers.
	workerTraceparent = "00-" + testTraceID + "-b7ad6b7169203331-01"
)

// jobHeaders answers the harness's sync jobs with a success reporting usage, whose final
// message carries finalHeader, and returns a func giving the headers of the jobs published.
func jobHeaders(t *testing.T, hs *harness, finalHeader nats.Header) func() []nats.Header {
	t.Helper()
	var mu sync.Mutex
	var got []nats.Header
	nc := hs.srv.nc
	sub, err := nc.Subscribe("sluice.jobs.>", func(m *nats.Msg) {
		job, err := jobs.Decode(m.Data)
		if err != nil || job.Reply == "" {
			return
		}
		mu.Lock()
		got = append(got, m.Header)
		mu.Unlock()
		rep := jobs.NewReplier(nc, job, 1)
		rep.SetFinalHeader(finalHeader)
		_ = rep.Finish(&jobs.Final{JobID: job.ID, Status: store.StatusSucceeded, StatusCode: http.StatusOK,
			Usage: &tokens.Usage{PromptTokens: 11, CompletionTokens: 4}}, []byte(`{"id":"x","choices":[]}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() []nats.Header {
		mu.Lock()
		defer mu.Unlock()
		return append([]nats.Header(nil), got...)
	}
}

// With tracing off, the request id always travels with the job, and a client's trace
// context too when it sent one; without one, no trace header is written.
func TestJobHeadersTracingOff_Issue14_7(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	headers := jobHeaders(t, hs, nil)
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	res, b := hs.do(http.MethodPost, "/v1/chat/completions", body, "Authorization", "Bearer "+testKey,
		"Traceparent", testTraceparent, "Tracestate", "client=1", "X-Request-Id", "req-off-1")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, b)
	}
	res, b = hs.do(http.MethodPost, "/v1/chat/completions", body, "Authorization", "Bearer "+testKey)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, b)
	}
	got := headers()
	if len(got) != 2 {
		t.Fatalf("saw %d jobs, want 2", len(got))
	}
	if tp, ts, id := got[0].Get("traceparent"), got[0].Get("tracestate"), got[0].Get(jobs.HeaderRequestID); tp != testTraceparent ||
		ts != "client=1" || id != "req-off-1" {
		t.Errorf("first job's headers %v, want the client's traceparent, tracestate and request id", got[0])
	}
	if tp, id := got[1].Get("traceparent"), got[1].Get(jobs.HeaderRequestID); tp != "" || id != res.Header.Get("X-Request-Id") || id == "" {
		t.Errorf("second job's headers %v, want no traceparent and the request id %q", got[1], res.Header.Get("X-Request-Id"))
	}
}

// With tracing on, the request's server span continues the client's, the job carries the
// publish span's context, and the reply's receipt is a span under the worker's reply span
// named in the final message's headers; the token counts go on the request's span.
func TestSpansTracingOn_Issue14_8(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	hs.srv.tracer = telemetry.NewTracer(tp)
	headers := jobHeaders(t, hs, nats.Header{"traceparent": {workerTraceparent}})
	res, b := hs.do(http.MethodPost, "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer "+testKey, "Traceparent", testTraceparent, "X-Request-Id", "req-on-1")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, b)
	}
	spans := map[string]tracetest.SpanStub{}
	deadline := time.Now().Add(10 * time.Second)
	for len(spans) < 3 && time.Now().Before(deadline) { // the server span ends as the handler returns
		for _, s := range exp.GetSpans() {
			spans[s.Name] = s
		}
		time.Sleep(10 * time.Millisecond)
	}
	server, publish, receive := spans["POST /v1/chat/completions"], spans["publish job"], spans["receive reply"]
	if server.Parent.SpanID().String() != "00f067aa0ba902b7" || server.SpanContext.TraceID().String() != testTraceID ||
		server.SpanKind != trace.SpanKindServer {
		t.Errorf("server span %+v, want a SERVER child of the client's span", server)
	}
	if publish.Parent.SpanID() != server.SpanContext.SpanID() {
		t.Errorf("publish span's parent %s, want the server span %s", publish.Parent.SpanID(), server.SpanContext.SpanID())
	}
	if receive.Parent.SpanID().String() != "b7ad6b7169203331" || !receive.Parent.IsRemote() {
		t.Errorf("receive span's parent %v, want the worker's reply span from the reply's headers", receive.Parent)
	}
	want := "00-" + testTraceID + "-" + publish.SpanContext.SpanID().String() + "-01"
	if got := headers(); len(got) != 1 || got[0].Get("traceparent") != want || got[0].Get(jobs.HeaderRequestID) != "req-on-1" {
		t.Errorf("job headers %v, want traceparent %s and the request id", got, want)
	}
	attrs := map[string]any{}
	for _, kv := range server.Attributes {
		attrs[string(kv.Key)] = kv.Value.AsInterface()
	}
	for k, v := range map[string]any{"gen_ai.usage.input_tokens": int64(11), "gen_ai.usage.output_tokens": int64(4),
		"gen_ai.request.model": "m", "http.response.status_code": int64(200), "sluice.request.id": "req-on-1"} {
		if attrs[k] != v {
			t.Errorf("server span %s = %#v, want %#v", k, attrs[k], v)
		}
	}
}

// A log line about a job carries job_id, request_id and trace_id.
func TestJobLogLine_Issue14_9(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	s := &Server{log: slog.New(slog.NewJSONHandler(&buf, nil))}
	ctx := telemetry.ExtractHTTP(context.Background(), http.Header{"Traceparent": {testTraceparent}})
	s.jobLog(ctx, "req-log-1", "job_log_1").WarnContext(ctx, "record abandoned job", "err", "x")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	for k, want := range map[string]string{"job_id": "job_log_1", "request_id": "req-log-1", "trace_id": testTraceID} {
		if line[k] != want {
			t.Errorf("log line %s: %s = %v, want %q", buf.Bytes(), k, line[k], want)
		}
	}
}
