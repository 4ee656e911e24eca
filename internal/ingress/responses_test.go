package ingress

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
	"github.com/sluicehq/sluice/pkg/store"
)

// TestResponsesRequestChecks_Issue11: POST /v1/responses refuses, with a 400 naming the
// member, what no channel can honour (previous_response_id, conversation, background) and
// a missing or malformed input; store is accepted. A good body is an ordinary job: async
// with Prefer: respond-async, and through POST /v1/jobs with endpoint /v1/responses.
func TestResponsesRequestChecks_Issue11(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	auth := []string{"Authorization", "Bearer " + testKey}
	bad := []struct{ body, param string }{
		{`{"model":"m","input":"hi","previous_response_id":"resp_1","store":true}`, "previous_response_id"},
		{`{"model":"m","input":"hi","conversation":{"id":"conv_1"}}`, "conversation"},
		{`{"model":"m","input":"hi","background":true}`, "background"},
		{`{"model":"m","input":"hi","background":"yes"}`, "background"},
		{`{"model":"m"}`, "input"},
		{`{"model":"m","input":null}`, "input"},
		{`{"model":"m","input":42}`, "input"},
		{`{"model":"m","input":[]}`, "input"},
		{`{"model":"m","input":["hi"]}`, "input[0]"},
		{`{"input":"hi"}`, "model"},
		{`{"model":"m","input":"hi","stream":"yes"}`, "stream"},
	}
	for _, tt := range bad {
		t.Run(tt.body, func(t *testing.T) {
			t.Parallel()
			res, b := hs.do(http.MethodPost, "/v1/responses", tt.body, auth...)
			wantError(t, res, b, http.StatusBadRequest, tt.param, "")
		})
	}

	res, b := hs.do(http.MethodPost, "/v1/responses", `{"model":"m","input":"hi","store":true}`,
		append(auth, "Prefer", "respond-async", "Idempotency-Key", "resp-async-1")...)
	var job struct {
		ID       string `json:"id"`
		Endpoint string `json:"endpoint"`
		Status   string `json:"status"`
	}
	if res.StatusCode != http.StatusAccepted || json.Unmarshal(b, &job) != nil || job.Endpoint != jobs.EndpointResponses ||
		job.Status != store.StatusQueued || res.Header.Get("Sluice-Job-Id") != job.ID {
		t.Fatalf("Prefer: respond-async answered %d %s (Sluice-Job-Id %q)", res.StatusCode, b, res.Header.Get("Sluice-Job-Id"))
	}
	res, b = hs.do(http.MethodPost, "/v1/jobs", `{"endpoint":"/v1/responses","body":{"model":"m","input":[{"role":"user","content":"hi"}]}}`,
		append(auth, "Idempotency-Key", "resp-async-2")...)
	if res.StatusCode != http.StatusAccepted || json.Unmarshal(b, &job) != nil || job.Endpoint != jobs.EndpointResponses {
		t.Fatalf("POST /v1/jobs answered %d %s", res.StatusCode, b)
	}
	res, b = hs.do(http.MethodPost, "/v1/jobs", `{"endpoint":"/v1/responses","body":{"model":"m","input":"hi","background":true}}`, auth...)
	wantError(t, res, b, http.StatusBadRequest, "body.background", "")
}

// TestResponsesStreamEnd_Issue11: a Responses stream that completes ends with the
// upstream's own last event, with no [DONE] after it; one that cannot complete ends in a
// response.failed event for the same response, next in sequence, carrying the error,
// never in a bare error object or a [DONE].
func TestResponsesStreamEnd_Issue11(t *testing.T) {
	t.Parallel()
	_, nc := jobstest.NewConn(t)
	created := `{"type":"response.created","sequence_number":0,"response":{"id":"resp_abc","model":"m","created_at":1700000000}}`
	delta := `{"type":"response.output_text.delta","sequence_number":1,"delta":"Hi"}`
	start := func(t *testing.T) (*answer, *httptest.ResponseRecorder) {
		s := &Server{log: slog.New(slog.DiscardHandler), nc: nc}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, jobs.EndpointResponses, nil)
		a := newAnswer(s, rec, req, &jobs.Job{ID: "job_" + strings.ReplaceAll(t.Name(), "/", "_"),
			Endpoint: jobs.EndpointResponses, Stream: true})
		a.handle(jobs.Reply{Kind: jobs.KindEvent, Attempt: 1, Seq: 0, Event: "response.created", Data: []byte(created)})
		a.handle(jobs.Reply{Kind: jobs.KindEvent, Attempt: 1, Seq: 1, Event: "response.output_text.delta", Data: []byte(delta)})
		return a, rec
	}

	t.Run("completed", func(t *testing.T) {
		a, rec := start(t)
		a.handle(jobs.Reply{Kind: jobs.KindEvent, Attempt: 1, Seq: 2, Event: "response.completed",
			Data: []byte(`{"type":"response.completed","sequence_number":2,"response":{"id":"resp_abc","status":"completed"}}`)})
		if !a.handle(jobs.Reply{Kind: jobs.KindFinal, Attempt: 1, Seq: 3, Final: &jobs.Final{Status: store.StatusSucceeded, StatusCode: 200, Parts: 3}}) {
			t.Fatal("the answer did not end")
		}
		if body := rec.Body.String(); strings.Contains(body, "[DONE]") || !strings.HasSuffix(body, "event: response.completed\ndata: "+
			`{"type":"response.completed","sequence_number":2,"response":{"id":"resp_abc","status":"completed"}}`+"\n\n") {
			t.Errorf("stream =\n%s", body)
		}
	})

	failures := map[string]func(a *answer) bool{
		"upstream failed": func(a *answer) bool {
			return a.handle(jobs.Reply{Kind: jobs.KindFinal, Attempt: 1, Seq: 2, Final: &jobs.Final{Status: store.StatusFailed,
				Error: jobs.UpstreamError("", "openai upstream: stream cut"), Parts: 2}})
		},
		"hole in the stream": func(a *answer) bool {
			return a.handle(jobs.Reply{Kind: jobs.KindEvent, Attempt: 1, Seq: 3, Data: []byte(`{}`)})
		},
	}
	for name, fail := range failures {
		t.Run(name, func(t *testing.T) {
			a, rec := start(t)
			if !fail(a) {
				t.Fatal("the answer did not end")
			}
			body := rec.Body.String()
			last := body[strings.LastIndex(strings.TrimSuffix(body, "\n\n"), "\n\n")+2:]
			name, data, _ := strings.Cut(strings.TrimSuffix(last, "\n\n"), "\n")
			var ev struct {
				Type           string `json:"type"`
				SequenceNumber int    `json:"sequence_number"`
				Response       struct {
					ID     string `json:"id"`
					Object string `json:"object"`
					Status string `json:"status"`
					Model  string `json:"model"`
					Error  struct{ Code, Message string }
				} `json:"response"`
			}
			if name != "event: response.failed" || json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &ev) != nil ||
				ev.Type != "response.failed" || ev.SequenceNumber != 2 || ev.Response.ID != "resp_abc" ||
				ev.Response.Object != "response" || ev.Response.Status != "failed" || ev.Response.Model != "m" ||
				ev.Response.Error.Message == "" || ev.Response.Error.Code == "" {
				t.Errorf("last event = %q, want a response.failed numbered 2 for resp_abc", last)
			}
			if strings.Contains(body, "[DONE]") || strings.Contains(body, "\ndata: {\"error\"") {
				t.Errorf("stream =\n%s", body)
			}
		})
	}
}
