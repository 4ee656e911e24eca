package ingress

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
)

// TestBrokenStreamIsAClientGoneCancel_Issue9_1: when the ingress ends a stream itself — a
// reply lost because the client read too slowly, a hole in the stream, a worker that changed
// mid-way — it cancels the job as client_gone, which the worker charges for what the
// upstream produced; before, it sent a user cancel, which was free.
func TestBrokenStreamIsAClientGoneCancel_Issue9_1(t *testing.T) {
	t.Parallel()
	_, nc := jobstest.NewConn(t)
	cases := map[string]func(a *answer) bool{
		"client read too slowly": func(a *answer) bool { return a.dropped() },
		"hole in the stream": func(a *answer) bool {
			a.handle(jobs.Reply{Kind: jobs.KindEvent, Attempt: 1, Seq: 0, Data: []byte(`{"n":0}`)})
			return a.handle(jobs.Reply{Kind: jobs.KindEvent, Attempt: 1, Seq: 2, Data: []byte(`{"n":2}`)})
		},
		"worker changed mid-stream": func(a *answer) bool {
			a.handle(jobs.Reply{Kind: jobs.KindEvent, Attempt: 1, Seq: 0, Data: []byte(`{"n":0}`)})
			return a.handle(jobs.Reply{Kind: jobs.KindEvent, Attempt: 2, Seq: 0, Data: []byte(`{"n":0}`)})
		},
	}
	for name, breakIt := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			id := "job_" + strings.ReplaceAll(name, " ", "_")
			sub, err := nc.SubscribeSync("sluice.cancel." + id)
			if err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			s := &Server{log: slog.New(slog.DiscardHandler), nc: nc}
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, jobs.EndpointChat, nil)
			a := newAnswer(s, rec, req, &jobs.Job{ID: id, Endpoint: jobs.EndpointChat, Stream: true})
			if !breakIt(a) {
				t.Fatal("the answer did not end")
			}
			if strings.Contains(rec.Body.String(), "[DONE]") {
				t.Fatalf("a broken stream ended with [DONE]:\n%s", rec.Body.String())
			}
			m, err := sub.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("no cancel published: %v", err)
			}
			if string(m.Data) != jobs.CancelClientGone {
				t.Errorf("cancel reason %q, want %q (charged for what the upstream produced)", m.Data, jobs.CancelClientGone)
			}
		})
	}
}
