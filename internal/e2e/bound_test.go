package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// workerGoroutineBound is the stated bound on a worker process's goroutines for
// WORKER_CONCURRENCY=k: k pool goroutines, up to 2k upstream connections (k busy, k idle)
// with 2 transport goroutines each, plus a constant for NATS, Postgres, the fetch loop, the
// heartbeat, the router, the sweeper, the webhook dispatcher and the ops server.
func workerGoroutineBound(k int) int { return 5*k + 64 }

// TestWorkerBound: with WORKER_CONCURRENCY=k and 10×k slow jobs, at most k upstream calls
// are ever open at once and the worker process's goroutines stay within the bound.
func TestWorkerBound(t *testing.T) {
	t.Parallel()
	for _, k := range []int{4, 16} {
		t.Run(fmt.Sprintf("k=%d", k), func(t *testing.T) {
			t.Parallel()
			s := newStack(t, stackOpts{noWorker: true, maxWaiting: 1024})
			up, _ := providertest.Start(t, providertest.Config{Latency: 150 * time.Millisecond})
			g, srv := newGate(t, up)
			g.open()
			s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
			key := s.newKey(nil)
			addr := freeAddr(t)
			startProc(t, "worker", addr, s.workerEnv(addr, k))
			base := "http://" + addr

			idle := metric(t, base, "go_goroutines")
			stop := make(chan struct{})
			var peakG atomic.Int64
			var sampler sync.WaitGroup
			sampler.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
					}
					if v := int64(metric(t, base, "go_goroutines")); v > peakG.Load() {
						peakG.Store(v)
					}
				}
			})
			var wg sync.WaitGroup
			for i := range 10 * k {
				wg.Go(func() {
					resp, b := s.do(http.MethodPost, "/v1/chat/completions", key.Key, chatBody("m", fmt.Sprintf("slow %d", i)))
					if resp.StatusCode != 200 {
						t.Errorf("job %d: %d %s", i, resp.StatusCode, b)
					}
				})
			}
			wg.Wait()
			close(stop)
			sampler.Wait()
			t.Logf("k=%d: idle goroutines %v, peak %d (bound %d), peak upstream calls %d of %d",
				k, idle, peakG.Load(), workerGoroutineBound(k), g.peak.Load(), g.calls.Load())
			if p := g.peak.Load(); p > int64(k) || p < int64(k)/2 {
				t.Errorf("peak concurrent upstream calls = %d, want ≤ k=%d (and near it)", p, k)
			}
			if g.calls.Load() != int64(10*k) {
				t.Errorf("upstream calls = %d, want %d", g.calls.Load(), 10*k)
			}
			if p := peakG.Load(); p > int64(workerGoroutineBound(k)) {
				t.Errorf("worker goroutines peaked at %d, above the bound 5k+64 = %d", p, workerGoroutineBound(k))
			}
		})
	}
}
