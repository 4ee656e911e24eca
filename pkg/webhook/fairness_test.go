package webhook

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/store/storetest"
)

// endedWithWebhook makes n ended jobs of key whose webhook is hook: n due deliveries.
func endedWithWebhook(t *testing.T, st *store.Store, keyID, hook string, n int) {
	t.Helper()
	for range n {
		now := time.Now()
		j, created, err := st.CreateQueuedJob(t.Context(), store.NewJob{ID: ids.New("job"), KeyID: keyID,
			Endpoint: "/v1/chat/completions", Model: "m", Request: json.RawMessage(`{"model":"m"}`), WebhookURL: hook,
			CreatedAt: now, Deadline: now.Add(time.Hour)}, "")
		if err != nil || !created {
			t.Fatalf("CreateQueuedJob: created=%v err=%v", created, err)
		}
		if _, err := st.CancelJob(t.Context(), keyID, j.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWebhookKeyFairness_Issue9_9: one key's endpoint hangs (it answers only when the test
// ends) with a backlog older than everyone else's deliveries. The other key's deliveries are
// all delivered promptly, while the hung key holds at most its cap of senders; before the
// cap and the fair claim, its backlog took all 8 senders until AttemptTimeout.
func TestWebhookKeyFairness_Issue9_9(t *testing.T) {
	t.Parallel()
	const perKey, hungN, goodN = 2, 24, 12
	db := storetest.New(t)

	release := make(chan struct{})
	var hungNow, hungPeak atomic.Int64
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hungNow.Add(1)
		defer hungNow.Add(-1)
		for p := hungPeak.Load(); n > p && !hungPeak.CompareAndSwap(p, n); p = hungPeak.Load() {
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(hung.Close)
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(healthy.Close)

	hk, _, err := db.Store.CreateKey(t.Context(), store.KeyParams{Name: "hung"})
	if err != nil {
		t.Fatal(err)
	}
	gk, _, err := db.Store.CreateKey(t.Context(), store.KeyParams{Name: "good"})
	if err != nil {
		t.Fatal(err)
	}
	endedWithWebhook(t, db.Store, hk.ID, hung.URL, hungN) // the oldest: first in line
	endedWithWebhook(t, db.Store, gk.ID, healthy.URL, goodN)

	// An attempt outlives the test, as a dead endpoint's would hold a sender for its timeout.
	d := NewDispatcher(DispatcherConfig{AllowPrivate: true, PerKey: perKey, AttemptTimeout: 10 * time.Minute},
		db.Store, nil, slog.New(slog.NewTextHandler(t.Output(), nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	t.Cleanup(func() { // before the servers close (cleanups run last first)
		cancel()
		close(release)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("dispatcher did not stop within 30s")
		}
	})

	count := func(q string, args ...any) int {
		t.Helper()
		var n int
		if err := db.Pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for count(`SELECT count(*) FROM webhook_deliveries WHERE key_id = $1 AND delivered_at IS NOT NULL`, gk.ID) < goodN {
		if time.Now().After(deadline) {
			t.Fatalf("the good key's deliveries: %d of %d delivered after 30s; the hung key holds %d senders",
				count(`SELECT count(*) FROM webhook_deliveries WHERE key_id = $1 AND delivered_at IS NOT NULL`, gk.ID),
				goodN, hungNow.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The hung key is served too, up to its cap: it is capped, not starved.
	for hungNow.Load() < perKey {
		if time.Now().After(deadline) {
			t.Fatalf("the hung key's endpoint has %d attempts in flight, want its cap of %d", hungNow.Load(), perKey)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p := hungPeak.Load(); p > perKey {
		t.Errorf("the hung key held %d senders at once, want at most %d", p, perKey)
	}
	if n := count(`SELECT count(*) FROM webhook_deliveries WHERE key_id = $1 AND attempts > 0`, hk.ID); n > perKey {
		t.Errorf("%d of the hung key's deliveries were claimed, want at most %d (the rest wait their turn)", n, perKey)
	}
}
