package ingress

import (
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/pkg/jobs"
)

// TestKeyQueueCap_Issue9_2: a key with KEY_MAX_QUEUED jobs in the queue gets a 429
// rate_limit_exceeded with Retry-After for the next one (its own limit, not the gateway's
// 503), and the refused job is not left queued.
func TestKeyQueueCap_Issue9_2(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	js, err := jetstream.New(hs.srv.nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.EnsureStream(t.Context(), js, jobs.QueueConfig{MaxJobs: 10_000, MaxQueuedPerKey: 2,
		JobTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	submit := func(idem string) (*http.Response, []byte) {
		return hs.do(http.MethodPost, "/v1/jobs",
			`{"endpoint":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}]}}`,
			"Authorization", "Bearer "+testKey, "Idempotency-Key", idem)
	}
	for _, idem := range []string{"one", "two"} {
		if res, b := submit(idem); res.StatusCode != http.StatusAccepted {
			t.Fatalf("job %s under the cap: %d %s", idem, res.StatusCode, b)
		}
	}
	res, b := submit("three")
	wantError(t, res, b, http.StatusTooManyRequests, "", "rate_limit_exceeded")
	if res.Header.Get("Retry-After") == "" {
		t.Errorf("no Retry-After on the key's queue cap")
	}
	id := res.Header.Get("Sluice-Job-Id")
	if id == "" {
		t.Fatal("no Sluice-Job-Id on the refused job")
	}
	row, err := hs.st.Job(t.Context(), hs.key.ID, id)
	if err != nil {
		t.Fatal(err)
	}
	if row.Status != "failed" {
		t.Errorf("refused job %s is %s, want failed", id, row.Status)
	}
}
