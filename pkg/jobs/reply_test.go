package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
)

// TestReplyFormatFollowsJob: a worker answers a job that came in the binary form with
// binary replies (a whole answer in one message with its final), and a job that came as
// JSON — from an ingress older than the binary forms — with the header-based replies such
// an ingress reads, so workers can be upgraded before ingresses. ParseReply reads both.
func TestReplyFormatFollowsJob(t *testing.T) {
	_, nc := jobstest.NewConn(t)
	now := time.Now()
	answer := []byte(`{"id":"chatcmpl-1","choices":[]}`)
	for _, tc := range []struct {
		name     string
		encode   func(*Job) []byte
		messages int // messages of a whole answer
		headers  bool
	}{
		{"binary", func(j *Job) []byte { b, _ := j.Encode(); return b }, 1, false},
		{"json", func(j *Job) []byte { b, _ := json.Marshal(j); return b }, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			subject := "sluice.reply.test." + tc.name
			sub, err := nc.SubscribeSync(subject)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			job, err := Decode(tc.encode(&Job{ID: "job_1", KeyID: "key_1", Endpoint: EndpointChat, Model: "m",
				Body: json.RawMessage(`{"model":"m"}`), CreatedAt: now, Deadline: now.Add(time.Minute), Reply: subject}))
			if err != nil {
				t.Fatal(err)
			}
			rep := NewReplier(nc, job, 1)
			if err := rep.Finish(&Final{JobID: "job_1", Status: "succeeded", StatusCode: 200, CostUSD: 0.5}, answer); err != nil {
				t.Fatal(err)
			}
			var body []byte
			var final *Final
			for i := range tc.messages {
				m, err := sub.NextMsg(5 * time.Second)
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if got := m.Header.Get(hdrKind) != ""; got != tc.headers {
					t.Errorf("message %d has reply headers: %v, want %v", i, got, tc.headers)
				}
				r, err := ParseReply(m)
				if err != nil || r.Seq != i || r.Attempt != 1 {
					t.Fatalf("message %d: %+v, %v", i, r, err)
				}
				body = append(body, r.Data...)
				final = r.Final
			}
			if _, err := sub.NextMsg(100 * time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
				t.Errorf("more than %d messages (%v)", tc.messages, err)
			}
			if final == nil || final.Status != "succeeded" || final.CostUSD != 0.5 || final.Parts != tc.messages-1 {
				t.Errorf("final %+v, want succeeded, cost 0.5, parts %d", final, tc.messages-1)
			}
			if !bytes.Equal(body, answer) {
				t.Errorf("answer %q, want %q", body, answer)
			}
		})
	}
}
