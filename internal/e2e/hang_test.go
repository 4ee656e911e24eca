package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// TestHungUpstreamsDoNotStarveDefaults_Issue9_0 runs the stack at its default settings (no
// tuned slot counts or timeouts) against one channel and one key, and measures healthy
// throughput alone and then beside 96 calls that hang upstream — more than the 64 slots a
// worker had by default, which they used to take whole (the seed outage: 4 requests/s). The
// healthy calls must keep at least half their throughput, and the slots must come back when
// the hung callers leave. It compares two rates measured in the same run, so a busy machine
// slows both alike.
func TestHungUpstreamsDoNotStarveDefaults_Issue9_0(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{defaults: true})
	up, srv := providertest.Start(t, providertest.Config{Latency: 5 * time.Millisecond})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"ok", "fake-hang"}})
	k := s.newKey(nil)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	t.Cleanup(client.CloseIdleConnections)
	post := func(ctx context.Context, model string) (int, error) {
		b, _ := json.Marshal(chatBody(model, "hello"))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/v1/chat/completions", bytes.NewReader(b))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+k.Key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	// healthy sends n calls from 32 clients and returns the calls per second.
	healthy := func(n int) float64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		var next atomic.Int64
		var bad atomic.Int64
		began := time.Now()
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					if code, err := post(ctx, "ok"); err != nil || code != http.StatusOK {
						bad.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if b := bad.Load(); b > 0 {
			t.Fatalf("%d of %d healthy calls failed", b, n)
		}
		return float64(n) / time.Since(began).Seconds()
	}

	healthy(64) // warm up connections and caches
	alone := healthy(400)

	const hung = 96
	hangCtx, release := context.WithCancel(context.Background())
	var hangers sync.WaitGroup
	defer func() { release(); hangers.Wait() }()
	for range hung {
		hangers.Go(func() { _, _ = post(hangCtx, "fake-hang") })
	}
	eventually(t, 60*time.Second, "the hung calls reach the upstream", func() bool {
		return up.Stats().Requests[providertest.ModeHang] >= hung
	})
	beside := healthy(400)
	t.Logf("healthy calls/s: %.0f alone, %.0f beside %d hung calls (%.0f%%)", alone, beside, hung, 100*beside/alone)
	if beside < alone/2 {
		t.Errorf("healthy throughput beside hung calls %.0f/s, want at least half of %.0f/s", beside, alone)
	}
	if busy := metric(t, s.ops, "sluice_worker_busy_slots"); busy < hung {
		t.Errorf("busy slots %v while %d calls hang, want at least %d (the test did not hang them)", busy, hung, hung)
	}

	// The hung callers leave: their upstream calls end and every slot comes back.
	release()
	hangers.Wait()
	eventually(t, 60*time.Second, "slots released", func() bool { return metric(t, s.ops, "sluice_worker_busy_slots") == 0 })
	eventually(t, 60*time.Second, "upstream connections closed", func() bool { return up.Stats().OpenConns <= 40 })
	if slots := metric(t, s.ops, "sluice_worker_slots"); slots < 1000 {
		t.Errorf("default slots %v, want thousands", slots)
	}
}
