package ingress

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/store"
)

// The fuzz tests run their seeds (here and in testdata/fuzz) with every `go test`; explore with
//
//	go test -run='^$' -fuzz=FuzzParseRequest -fuzztime=60s ./internal/ingress/
//
// and commit what they find to testdata/fuzz/<FuzzName>/ once it is fixed.

// fuzzEndpoints are the routes parseRequest validates, and one it must refuse.
var fuzzEndpoints = []string{jobs.EndpointChat, jobs.EndpointCompletions, jobs.EndpointEmbeddings,
	jobs.EndpointMessages, "/v1/images/generations"}

// fuzzBodies are valid bodies of each endpoint; testdata/fuzz holds the edge cases.
var fuzzBodies = []string{
	`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
	`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],` +
		`"stream":true,"stream_options":{"include_usage":true},"temperature":0.2}`,
	`{"model":"gpt-3.5-turbo-instruct","prompt":["Say this is a test"],"max_tokens":7,"stream":false}`,
	`{"model":"text-embedding-3-small","input":["first","second"],"encoding_format":"float"}`,
	`{"model":"claude-x","max_tokens":1024,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true}`,
}

// FuzzParseRequest: parseRequest never panics, refuses only with a 4xx *jobs.APIError, and
// what it accepts is what the upstream will read — the same model and the same stream flag.
func FuzzParseRequest(f *testing.F) {
	for _, b := range fuzzBodies {
		f.Add([]byte(b), true)
		f.Add([]byte(b), false)
	}
	f.Fuzz(func(t *testing.T, body []byte, allowStream bool) {
		for _, ep := range fuzzEndpoints {
			p, err := parseRequest(ep, body, allowStream)
			if err != nil {
				e, ok := errors.AsType[*jobs.APIError](err)
				if !ok {
					t.Fatalf("%s: error %T (%v) is not a *jobs.APIError", ep, err, err)
				}
				if e.Status < 400 || e.Status > 499 || e.Type == "" || e.Message == "" {
					t.Fatalf("%s: error %+v, want a 4xx with a type and a message", ep, e)
				}
				continue
			}
			checkParsed(t, ep, body, allowStream, p)
		}
	})
}

// checkParsed checks an accepted body against how the worker and upstream will read it.
func checkParsed(t *testing.T, ep string, body []byte, allowStream bool, p *parsed) {
	t.Helper()
	if ep == fuzzEndpoints[len(fuzzEndpoints)-1] {
		t.Fatalf("accepted a body for the unknown endpoint %s", ep)
	}
	if strings.TrimSpace(p.model) == "" {
		t.Fatalf("%s: accepted a blank model", ep)
	}
	if p.stream && (!allowStream || ep == jobs.EndpointEmbeddings) {
		t.Fatalf("%s: accepted stream=true with allowStream=%v", ep, allowStream)
	}
	if !bytes.Equal(p.body, bytes.TrimSpace(body)) || !json.Valid(p.body) {
		t.Fatalf("%s: forwarded body %q, want the valid JSON %q", ep, p.body, bytes.TrimSpace(body))
	}
	// The worker reads the body as an object to set the upstream's model name (setModel), and
	// a pass-through upstream reads fields by their exact, case-sensitive names.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(p.body, &fields); err != nil {
		t.Fatalf("%s: accepted a body the worker cannot read as an object: %v", ep, err)
	}
	var model string
	if err := json.Unmarshal(fields["model"], &model); err != nil || model != p.model {
		t.Fatalf("%s: routed as model %q, but the upstream reads \"model\" as %s", ep, p.model, fields["model"])
	}
	if upstream := string(fields["stream"]) == "true"; upstream != p.stream {
		t.Fatalf("%s: validated as stream=%v, but the upstream reads \"stream\" as %s", ep, p.stream, fields["stream"])
	}
}

const fuzzKey = "sk-sl-fuzzfuzzfuzzfuzzfuzz"

var (
	fuzzSrvOnce sync.Once
	fuzzSrv     http.Handler
)

// fuzzHandler is the ingress's HTTP handler with no NATS or Postgres behind it: the key is
// cached (so authenticating reads nothing) and no model has a channel (so every valid
// request stops at admission with a 404 before anything is published or stored).
func fuzzHandler() http.Handler {
	fuzzSrvOnce.Do(func() {
		log := slog.New(slog.DiscardHandler)
		s := &Server{cfg: Config{Common: cli.Common{JobTimeout: time.Minute}}, log: log, router: route.NewRouter(nil, nil, log),
			keys: &keyCache{ttl: 24 * time.Hour, m: map[string]cachedKey{}}, maxBody: 8 << 10, waiting: make(chan struct{}, 1)}
		s.metrics = newMetrics(prometheus.NewRegistry(), func() float64 { return 0 })
		s.keys.put(fuzzKey, store.Key{ID: "key_fuzz", Name: "fuzz"}, time.Now())
		fuzzSrv = s.Handler()
	})
	return fuzzSrv
}

// FuzzHandler drives the request path of every job route — authentication, body limits,
// content type, Prefer: respond-async, parsing, and the POST /v1/jobs envelope — through
// the real handler, and checks every answer is a well-formed 4xx error in the route's shape.
func FuzzHandler(f *testing.F) {
	routes := []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/jobs", "/v1/responses"}
	for i, b := range fuzzBodies {
		f.Add(uint8(i), "application/json", "", []byte(b))
		f.Add(uint8(4), "application/json; charset=utf-8", "respond-async",
			[]byte(`{"endpoint":"/v1/chat/completions","body":`+b+`,"metadata":{"a":"b"},"timeout_s":60}`))
	}
	f.Add(uint8(0), "text/plain", "", []byte(`{}`))
	f.Add(uint8(5), "application/json", "", []byte(`{"model":"m","input":[{"role":"user","content":"x"}],"stream":true}`))
	f.Add(uint8(5), "application/json", "respond-async", []byte(`{"model":"m","input":"x","previous_response_id":"resp_1"}`))
	f.Add(uint8(1), "application/vnd.api+json", "wait, respond-async", []byte(`{"model":"m","prompt":"x","stream":true}`))
	f.Fuzz(func(t *testing.T, route uint8, contentType, prefer string, body []byte) {
		path := routes[int(route)%len(routes)]
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fuzzKey)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if prefer != "" {
			req.Header.Set("Prefer", prefer)
		}
		rec := httptest.NewRecorder()
		fuzzHandler().ServeHTTP(rec, req)
		res := rec.Result()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode < 400 || res.StatusCode > 499 {
			t.Fatalf("POST %s = %d %s, want a 4xx (no channel serves any model)", path, res.StatusCode, b)
		}
		if res.Header.Get("X-Request-Id") == "" || res.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("POST %s: headers %v, want X-Request-Id and JSON", path, res.Header)
		}
		var e struct {
			Type  string `json:"type"`
			Error struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Error.Type == "" || e.Error.Message == "" {
			t.Fatalf("POST %s: body %s is not an API error", path, b)
		}
		if anthropic := e.Type == "error"; anthropic != (path == jobs.EndpointMessages) {
			t.Fatalf("POST %s: error %s in the wrong shape for the route", path, b)
		}
	})
}

// FuzzStreamAnswer feeds a stream's reply messages to answer.handle in any order, with
// gaps, duplicates and redeliveries (as NATS loss, reconnects and worker crashes produce
// them), and checks that a stream which ends with [DONE] carries every event of the attempt
// that finished, in order: a stream with a hole must end with an error, never as complete.
func FuzzStreamAnswer(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 0, 2, 2, 0})          // events 0, 1, final: complete
	f.Add([]byte{2, 0, 0})                            // no events, final
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0, 1, 1, 2, 2, 1}) // attempt 1 starts, attempt 2 takes over
	f.Add([]byte{0, 1, 0, 2, 2, 0})                   // event 0 lost in transit
	f.Add([]byte{2, 1, 0})                            // the only event lost
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 2, 0}) // a duplicate
	f.Fuzz(func(t *testing.T, msgs []byte) {
		log := slog.New(slog.DiscardHandler)
		s := &Server{log: log}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, jobs.EndpointChat, nil)
		a := newAnswer(s, rec, req, &jobs.Job{ID: "job_fuzz", Endpoint: jobs.EndpointChat, Stream: true})
		ended := false
		var last jobs.Reply
		for i := 0; i+2 < len(msgs) && !ended; i += 3 {
			rep := jobs.Reply{Kind: jobs.KindEvent, Seq: int(msgs[i+1] % 8), Attempt: 1 + int(msgs[i+2]%3)}
			rep.Data = fmt.Appendf(nil, `{"n":"%d.%d"}`, rep.Attempt, rep.Seq)
			if msgs[i]%3 == 2 {
				rep.Kind, rep.Data = jobs.KindFinal, nil
				rep.Final = &jobs.Final{JobID: "job_fuzz", Status: store.StatusSucceeded, StatusCode: 200, Parts: rep.Seq}
			}
			ended, last = a.handle(rep), rep
		}
		out := rec.Body.String()
		if !strings.Contains(out, "data: [DONE]") {
			return // an error, or unfinished
		}
		if !ended || last.Kind != jobs.KindFinal {
			t.Fatalf("[DONE] written before the final message:\n%s", out)
		}
		var want []string
		for seq := range last.Seq {
			want = append(want, fmt.Sprintf(`{"n":"%d.%d"}`, last.Attempt, seq))
		}
		if len(want) == 0 {
			want = []string{`{"choices":[]}`}
		}
		var got []string
		for line := range strings.Lines(out) {
			if data, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok && data != "[DONE]" {
				got = append(got, data)
			}
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("stream ended with [DONE] carrying events %v, want %v (attempt %d)", got, want, last.Attempt)
		}
	})
}

// FuzzAPI sends any method, path, query, headers and body to every route — the admin API
// as well as /v1 — through the real handler on real Postgres and JetStream, and checks that
// no input gets a 5xx and that every error is a well-formed API error with an X-Request-Id,
// and the properties of issue 9 items 11 (bad Idempotency-Key or path id: a 4xx, never
// retryable), 13 (no job with a webhook the SSRF guard refuses) and 14 (an unknown model
// is 404 model_not_found, whatever the key's allowlist) in api_fuzz_test.go.
// The seeds (testdata/fuzz/FuzzAPI) are the inputs of issue 17 (items 1-5) and issue 9
// (items 11, 13, 14). header holds "Name: value" lines. The /v1 keys a seed may name
// (testBlockedKey, testAllowKey) have rpm 0, so a request that passes validation ends in a
// 429 before it is published and nothing ever waits on a worker.
func FuzzAPI(f *testing.F) {
	hs := newHarness(f)
	hs.srv.keys.forget(hs.key.ID) // testKey could publish sync jobs that no worker answers
	f.Add(http.MethodGet, "/admin/v1/keys", "Authorization: Bearer "+testAdminToken, []byte(nil))
	f.Add(http.MethodPost, "/v1/chat/completions", "Authorization: Bearer "+testBlockedKey,
		[]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	f.Fuzz(func(t *testing.T, method, target, header string, body []byte) {
		if !strings.HasPrefix(target, "/") {
			return
		}
		req, err := http.NewRequest(method, "http://sluice.test"+target, bytes.NewReader(body))
		if err != nil || req.URL.Host != "sluice.test" {
			return // not a request line a server would hand to a handler
		}
		req.RequestURI = target
		for line := range strings.Lines(header) {
			name, value, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ":")
			if name = strings.TrimSpace(name); name != "" {
				req.Header.Add(name, strings.TrimSpace(value))
			}
		}
		rec := httptest.NewRecorder()
		hs.h.ServeHTTP(rec, req)
		res := rec.Result()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode >= 500 {
			t.Fatalf("%s %q = %d %s, want no 5xx", method, target, res.StatusCode, b)
		}
		a := decodeAnswer(res, b)
		checkBadInput(t, req, a)              // issue 9 item 11
		checkWebhookAccepted(t, req, body, a) // issue 9 item 13
		if res.StatusCode < 400 {
			return
		}
		if res.Header.Get("X-Request-Id") == "" || res.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s %q = %d: headers %v, want X-Request-Id and JSON", method, target, res.StatusCode, res.Header)
		}
		if method == http.MethodHead {
			return
		}
		var e struct {
			Type  string `json:"type"`
			Error struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Error.Type == "" || e.Error.Message == "" {
			t.Fatalf("%s %q = %d: body %s is not an API error", method, target, res.StatusCode, b)
		}
		checkModelAnswer(t, hs, req, a) // issue 9 item 14
	})
}
