package jobs_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/tokens"
)

// TestOutcomeWire_Issue10: an outcome survives its binary form field for field — the
// response carried byte for byte, unvalidated — and any truncation or trailing byte is refused.
func TestOutcomeWire_Issue10(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	full := store.Outcome{JobID: "job_1", Status: store.StatusSucceeded, StatusCode: 200, ChannelID: "ch_1",
		UpstreamModel: "gpt-x", Response: json.RawMessage("{\"a\": \"\xff\"}"), Error: json.RawMessage(`{"message":"m"}`),
		Usage: &tokens.Usage{PromptTokens: 12, CompletionTokens: 34, Estimated: true}, Charge: true,
		Job: &store.NewJob{ID: "job_1", KeyID: "key_1", Endpoint: jobs.EndpointChat, Model: "m", Async: true,
			Request: json.RawMessage(`{"q":1}`), Metadata: map[string]string{"a": "b", "c": ""}, WebhookURL: "https://h/x",
			CreatedAt: now, Deadline: now.Add(time.Minute), Attempt: 3, HoldsSlot: true}}
	bare := store.Outcome{JobID: "job_2", Status: store.StatusFailed, StatusCode: 502}
	for _, o := range []store.Outcome{full, bare} {
		b, err := jobs.EncodeOutcome(&o)
		if err != nil {
			t.Fatal(err)
		}
		got, err := jobs.DecodeOutcome(b)
		if err != nil {
			t.Fatalf("decode %s: %v", o.JobID, err)
		}
		if d := cmp.Diff(o, got); d != "" {
			t.Errorf("outcome %s changed on the wire (-sent +read):\n%s", o.JobID, d)
		}
		for i := range len(b) {
			if _, err := jobs.DecodeOutcome(b[:i]); err == nil {
				t.Fatalf("outcome %s cut to %d of %d bytes decoded", o.JobID, i, len(b))
			}
		}
		if _, err := jobs.DecodeOutcome(append(b, 0)); err == nil {
			t.Errorf("outcome %s with a trailing byte decoded", o.JobID)
		}
	}
}
