package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// TestWorkerHeldJobStack_Issue10: a job waiting on its upstream holds, in the worker
// process, its pool goroutine's stack for as long as the model takes; so its size is memory
// per in-flight job. It must stay within 8 KiB. It was 16: the attempt loop, the delivery's
// handling and http.Client.Do stacked wide frames under the upstream call (BENCHMARKS.md,
// "Stacks under the wait"). The upstream speaks h2c, as TLS upstreams speak HTTP/2,
// so the calls share a connection and each adds only the pool goroutine's growth and the
// HTTP/2 stream's writer. The pool goroutines exist, small, before any job; the growth per
// held job is read from the process's own go_memstats_stack_inuse_bytes.
func TestWorkerHeldJobStack_Issue10(t *testing.T) {
	t.Parallel()
	const k = 100
	s := newStack(t, stackOpts{noWorker: true, maxWaiting: 1024})
	up, _ := providertest.Start(t, providertest.Config{})
	g := &gate{up: up, release: make(chan struct{})} // holds every upstream call until opened
	srv := httptest.NewUnstartedServer(g)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(g.open) // runs first: handlers return, so srv.Close does not wait on them
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	key := s.newKey(nil)
	addr := freeAddr(t)
	env := s.workerEnv(addr, k)
	env["UPSTREAM_H2C"] = "true"
	startProc(t, "worker", addr, env)
	base := "http://" + addr

	time.Sleep(time.Second) // let start-up settle
	idleStack, idleG := metric(t, base, "go_memstats_stack_inuse_bytes"), metric(t, base, "go_goroutines")
	var wg sync.WaitGroup
	defer wg.Wait()
	defer g.open()
	hold := func(from, to int) {
		for i := from; i < to; i++ {
			wg.Go(func() {
				resp, b := s.do(http.MethodPost, "/v1/chat/completions", key.Key, chatBody("m", fmt.Sprintf("held %d", i)))
				if resp.StatusCode != http.StatusOK {
					t.Errorf("job %d: %d %s", i, resp.StatusCode, b)
				}
			})
		}
		for deadline := time.Now().Add(60 * time.Second); g.inflight.Load() < int64(to); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d jobs reached the upstream after 60 s", g.inflight.Load(), to)
			}
		}
	}
	hold(0, 1) // one first: concurrent first calls would each dial a connection
	hold(1, k)
	time.Sleep(200 * time.Millisecond) // the last ones' transport goroutines are up
	heldStack, heldG := metric(t, base, "go_memstats_stack_inuse_bytes"), metric(t, base, "go_goroutines")
	perJob := (heldStack - idleStack) / k
	t.Logf("%d jobs held: %.0f more goroutines, %.1f KiB more stack each", k, heldG-idleG, perJob/1024)
	// The pool goroutine grows from its first few KiB to 8 and the stream's writer takes a
	// few: measured 10.9-11.2 KiB. With the pool goroutine at 16 KiB it was 18.9-19.2.
	if limit := 15.0 * 1024; perJob > limit {
		t.Errorf("held jobs use %.1f KiB more stack each, want at most %.0f", perJob/1024, limit/1024)
	}
}
