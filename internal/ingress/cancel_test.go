package ingress

import (
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

// TestCancelAnswer_Issue17_5: cancelling a running job answers the job as the cancel leaves
// it — cancelling until its worker ends it, then canceled — and every concurrent cancel
// answers the same; a queued job is canceled at once.
func TestCancelAnswer_Issue17_5(t *testing.T) {
	t.Parallel()
	hs := newHarness(t)
	submit := func(idem string) string {
		t.Helper()
		res, b := hs.do(http.MethodPost, "/v1/jobs",
			`{"endpoint":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}]}}`,
			"Authorization", "Bearer "+testKey, "Idempotency-Key", idem)
		var o struct{ ID string }
		if res.StatusCode != http.StatusAccepted || json.Unmarshal(b, &o) != nil {
			t.Fatalf("submit: %d %s", res.StatusCode, b)
		}
		return o.ID
	}
	cancel := func(id string) string {
		res, b := hs.do(http.MethodPost, "/v1/jobs/"+id+"/cancel", nil, "Authorization", "Bearer "+testKey)
		var o struct{ Status string }
		if res.StatusCode != http.StatusOK || json.Unmarshal(b, &o) != nil {
			t.Errorf("cancel: %d %s", res.StatusCode, b)
		}
		return o.Status
	}
	get := func(id string) string {
		_, b := hs.do(http.MethodGet, "/v1/jobs/"+id, nil, "Authorization", "Bearer "+testKey)
		var o struct{ Status string }
		_ = json.Unmarshal(b, &o)
		return o.Status
	}

	if id := submit("queued"); cancel(id) != store.StatusCanceled {
		t.Errorf("cancel of a queued job: want canceled")
	}

	// A running job: what a worker does when it takes it.
	id := submit("running")
	now := time.Now()
	if _, started, err := hs.st.StartJob(t.Context(), store.NewJob{ID: id, KeyID: hs.key.ID, Endpoint: "/v1/chat/completions",
		Model: "m", Async: true, CreatedAt: now, Deadline: now.Add(time.Minute), Attempt: 1}); err != nil || !started {
		t.Fatalf("StartJob: started=%v err=%v", started, err)
	}
	const callers = 8
	got := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { got[i] = cancel(id) })
	}
	wg.Wait()
	for i, s := range got {
		if s != statusCancelling {
			t.Errorf("concurrent cancel %d answered %q, want %q (all: %v)", i, s, statusCancelling, got)
		}
	}
	if s := get(id); s != statusCancelling {
		t.Errorf("GET after the cancel: %q, want %q", s, statusCancelling)
	}
	// The worker aborts it and records it canceled.
	if _, err := hs.st.FinishJob(t.Context(), store.Outcome{JobID: id, Status: store.StatusCanceled, StatusCode: 499,
		Error: json.RawMessage(`{"message":"the job was canceled","type":"canceled","code":"job_canceled"}`)}); err != nil {
		t.Fatal(err)
	}
	if s := cancel(id); s != store.StatusCanceled {
		t.Errorf("cancel after the job ended: %q, want canceled", s)
	}
	if s := get(id); s != store.StatusCanceled {
		t.Errorf("GET after the job ended: %q, want canceled", s)
	}
}
