package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
	"github.com/sluicehq/sluice/pkg/telemetry/oteltest"
)

// The client's trace: the W3C example ids.
const (
	clientTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID  = "00f067aa0ba902b7"
	// tracedPrompt is in the prompt, and so in the fake upstream's echoed answer: it must be
	// in no span.
	tracedPrompt = "zebra4711 quartz prompt text"
)

// TestTraceAcrossQueue_Issue14_6: a chat completion with a client's traceparent, through a
// real ingress process and a real worker process that export to an in-process OTLP
// receiver, yields one trace in the client's trace id: the ingress's server and publish
// spans, the worker's queue wait, process span, one client span per upstream attempt (the
// first channel answers 503, the second 200), its settlement and reply, and the ingress's
// receipt of the reply, each in its parent's place, with the GenAI attributes and the token
// counts. No export holds the prompt (nor the answer, which echoes it) or the API key. The
// worker's log line about the job carries its job_id, request_id and trace_id.
func TestTraceAcrossQueue_Issue14_6(t *testing.T) {
	t.Parallel()
	rec := oteltest.NewReceiver(true)
	sink := httptest.NewServer(rec)
	t.Cleanup(sink.Close)
	otelEnv := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": sink.URL, "OTEL_BSP_SCHEDULE_DELAY": "100"}

	s := newStack(t, stackOpts{noWorker: true})
	_, up := providertest.Start(t, providertest.Config{})
	ingAddr := freeAddr(t)
	ienv := map[string]string{"DATABASE_URL": s.db.URL, "NATS_URL": s.nats.URL, "SLUICE_ADMIN_TOKEN": adminToken,
		"SLUICE_ENCRYPTION_KEY": s.db.EncryptionKey, "INGRESS_ADDR": ingAddr, "CHANNEL_REFRESH": "1s",
		"SHUTDOWN_GRACE": "5s", "LOG_LEVEL": "info"}
	for k, v := range otelEnv {
		ienv[k] = v
	}
	startProc(t, "ingress", ingAddr, ienv)
	s.base = "http://" + ingAddr // the in-process ingress stays idle

	failing := s.channel(map[string]any{"name": "failing", "provider": "openai", "base_url": up.URL + "/v1",
		"models": []string{"traced"}, "model_map": map[string]string{"traced": "gpt-x:503"}, "priority": 10})
	healthy := s.channel(map[string]any{"name": "healthy", "provider": "openai", "base_url": up.URL + "/v1",
		"models": []string{"traced"}, "model_map": map[string]string{"traced": "gpt-x:ok"}, "priority": 1})
	key := s.newKey(nil)
	wAddr := freeAddr(t)
	wenv := s.workerEnv(wAddr, 4)
	wenv["LOG_LEVEL"] = "info"
	for k, v := range otelEnv {
		wenv[k] = v
	}
	work := startProc(t, "worker", wAddr, wenv)

	resp, body := s.do(http.MethodPost, "/v1/chat/completions", key.Key, chatBody("traced", tracedPrompt),
		"Traceparent", "00-"+clientTraceID+"-"+clientSpanID+"-01", "Tracestate", "client=1", "X-Request-Id", "req-trace-e2e-1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	jobID := resp.Header.Get("Sluice-Job-Id")

	// The ingress's last span (the request's) ends after the reply's receipt.
	var spans []oteltest.Span
	eventually(t, 60*time.Second, "the trace's spans from both processes", func() bool {
		spans = inTrace(rec.Spans(), clientTraceID)
		return hasSpan(spans, "sluice-ingress", "POST /v1/chat/completions") && hasSpan(spans, "sluice-ingress", "receive reply") &&
			hasSpan(spans, "sluice-worker", "process job") && hasSpan(spans, "sluice-worker", "reply")
	})
	byName := map[string][]oteltest.Span{}
	for _, sp := range spans {
		t.Logf("%s %q %s span %s parent %s %v", sp.Service, sp.Name, sp.Kind, sp.SpanID, sp.ParentSpanID, sp.Attrs)
		byName[sp.Name] = append(byName[sp.Name], sp)
	}
	one := func(service, name string) oteltest.Span {
		t.Helper()
		got := byName[name]
		if len(got) != 1 || got[0].Service != service {
			t.Fatalf("spans named %q: %+v, want one from %s", name, got, service)
		}
		return got[0]
	}
	childOf := func(child, parent oteltest.Span) {
		t.Helper()
		if child.ParentSpanID != parent.SpanID {
			t.Errorf("%q (%s) has parent %s, want %q's span %s", child.Name, child.Service, child.ParentSpanID,
				parent.Name, parent.SpanID)
		}
	}
	server := one("sluice-ingress", "POST /v1/chat/completions")
	if server.ParentSpanID != clientSpanID || server.Kind != "SPAN_KIND_SERVER" {
		t.Errorf("server span: parent %s kind %s, want the client's span %s, SERVER", server.ParentSpanID, server.Kind, clientSpanID)
	}
	wantAttrs(t, server, map[string]any{"gen_ai.request.model": "traced", "gen_ai.operation.name": "chat",
		"http.response.status_code": int64(200), "sluice.job.id": jobID, "sluice.request.id": "req-trace-e2e-1"})
	publish := one("sluice-ingress", "publish job")
	childOf(publish, server)
	wait := one("sluice-worker", "queue wait")
	childOf(wait, publish)
	process := one("sluice-worker", "process job")
	childOf(process, publish)
	wantAttrs(t, process, map[string]any{"sluice.job.id": jobID, "sluice.request.id": "req-trace-e2e-1",
		"sluice.job.status": "succeeded", "gen_ai.request.model": "traced"})
	if wait.End.After(process.Start.Add(time.Millisecond)) {
		t.Errorf("queue wait ends at %v, after the job's processing began at %v", wait.End, process.Start)
	}
	attempts := byName["chat gpt-x:503"]
	attempts = append(attempts, byName["chat gpt-x:ok"]...)
	if len(attempts) != 2 {
		t.Fatalf("upstream attempt spans: %+v, want one on each channel", attempts)
	}
	for i, want := range []map[string]any{
		{"sluice.attempt": int64(1), "sluice.channel.id": failing, "http.response.status_code": int64(503),
			"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-x:503", "error.type": "5xx"},
		{"sluice.attempt": int64(2), "sluice.channel.id": healthy, "http.response.status_code": int64(200),
			"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-x:ok"},
	} {
		a := attempts[i]
		childOf(a, process)
		if a.Kind != "SPAN_KIND_CLIENT" {
			t.Errorf("attempt %d kind %s, want CLIENT", i+1, a.Kind)
		}
		wantAttrs(t, a, want)
	}
	for _, sp := range []oteltest.Span{attempts[1], process, server} {
		in, _ := sp.Attrs["gen_ai.usage.input_tokens"].(int64)
		out, _ := sp.Attrs["gen_ai.usage.output_tokens"].(int64)
		if in <= 0 || out <= 0 {
			t.Errorf("%q tokens in/out = %v/%v, want both counted", sp.Name, sp.Attrs["gen_ai.usage.input_tokens"],
				sp.Attrs["gen_ai.usage.output_tokens"])
		}
	}
	childOf(one("sluice-worker", "settle"), process)
	reply := one("sluice-worker", "reply")
	childOf(reply, process)
	childOf(one("sluice-ingress", "receive reply"), reply) // through the reply message's headers

	raw := rec.Raw()
	for _, secret := range []string{"zebra4711", tracedPrompt, key.Key} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("an export holds %q", secret)
		}
	}
	if bytes.Contains(body, []byte("zebra4711")) == false {
		t.Errorf("the answer does not echo the prompt (%s): the search above proves nothing", body)
	}

	line := logLine(t, work.out.String(), "job finished", jobID)
	for k, want := range map[string]string{"job_id": jobID, "request_id": "req-trace-e2e-1", "trace_id": clientTraceID} {
		if line[k] != want {
			t.Errorf("worker log line %v: %s = %v, want %q", line, k, line[k], want)
		}
	}
}

// inTrace returns the spans of trace id.
func inTrace(spans []oteltest.Span, id string) []oteltest.Span {
	var out []oteltest.Span
	for _, s := range spans {
		if s.TraceID == id {
			out = append(out, s)
		}
	}
	return out
}

func hasSpan(spans []oteltest.Span, service, name string) bool {
	for _, s := range spans {
		if s.Service == service && s.Name == name {
			return true
		}
	}
	return false
}

func wantAttrs(t *testing.T, s oteltest.Span, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if s.Attrs[k] != v {
			t.Errorf("%q (%s): %s = %#v, want %#v", s.Name, s.Service, k, s.Attrs[k], v)
		}
	}
}

// logLine returns the JSON log line of out whose msg is msg and job_id is jobID.
func logLine(t *testing.T, out, msg, jobID string) map[string]any {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg && m["job_id"] == jobID {
			return m
		}
	}
	t.Fatalf("no log line %q about job %s in:\n%s", msg, jobID, out)
	return nil
}
