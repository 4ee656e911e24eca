package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

type jobObj struct {
	ID         string            `json:"id"`
	Object     string            `json:"object"`
	Status     string            `json:"status"`
	Attempts   int               `json:"attempts"`
	Metadata   map[string]string `json:"metadata"`
	StartedAt  *int64            `json:"started_at"`
	FinishedAt *int64            `json:"finished_at"`
	Usage      *struct {
		TotalTokens int64 `json:"total_tokens"`
	} `json:"usage"`
	CostUSD  *float64 `json:"cost_usd"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Type       string `json:"type"`
		StatusCode int    `json:"status_code"`
	} `json:"error"`
}

func (s *stack) job(token, id, query string) (int, jobObj) {
	s.t.Helper()
	resp, b := s.do(http.MethodGet, "/v1/jobs/"+id+query, token, nil)
	var j jobObj
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(b, &j); err != nil {
			s.t.Fatal(err)
		}
	}
	return resp.StatusCode, j
}

func (s *stack) submit(token string, body map[string]any, hdr ...string) (int, jobObj) {
	s.t.Helper()
	resp, b := s.do(http.MethodPost, "/v1/jobs", token, body, hdr...)
	var j jobObj
	if resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, &j); err != nil {
			s.t.Fatal(err)
		}
	} else {
		s.t.Logf("submit: %d %s", resp.StatusCode, b)
	}
	return resp.StatusCode, j
}

// gate is an upstream that holds each request until released, counting calls in flight.
type gate struct {
	up       http.Handler
	release  chan struct{}
	once     sync.Once
	inflight atomic.Int64
	peak     atomic.Int64
	calls    atomic.Int64
}

// newGate serves up behind a gate on a real HTTP server; the gate opens when the test ends.
func newGate(t *testing.T, up http.Handler) (*gate, *httptest.Server) {
	t.Helper()
	g := &gate{up: up, release: make(chan struct{})}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	t.Cleanup(g.open) // runs first: handlers return, so srv.Close does not wait on them
	return g, srv
}

// open releases every held request, now and later.
func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Read the body first: net/http notices a client that went away only once it has.
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	g.calls.Add(1)
	n := g.inflight.Add(1)
	defer g.inflight.Add(-1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	select {
	case <-g.release:
	case <-r.Context().Done():
		return
	}
	g.up.ServeHTTP(w, r)
}

func TestAsyncLifecycle(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	up, _ := providertest.Start(t, providertest.Config{})
	g, srv := newGate(t, up)
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	s.price("m", 1, 1)
	k := s.newKey(nil)
	other := s.newKey(nil)

	code, j := s.submit(k.Key, map[string]any{"endpoint": "/v1/chat/completions", "body": chatBody("m", "async hello"),
		"metadata": map[string]string{"customer": "42"}})
	if code != http.StatusAccepted || j.Status != "queued" || j.Object != "job" || j.Metadata["customer"] != "42" {
		t.Fatalf("submit = %d %+v, want 202 queued with metadata", code, j)
	}
	eventually(t, 10*time.Second, "job running", func() bool { _, got := s.job(k.Key, j.ID, ""); return got.Status == "running" })
	if code, _ := s.job(other.Key, j.ID, ""); code != http.StatusNotFound {
		t.Errorf("another key reading the job: %d, want 404", code)
	}

	// A long poll returns as soon as the job ends, not when the wait does.
	done := make(chan jobObj, 1)
	began := time.Now()
	go func() { _, got := s.job(k.Key, j.ID, "?wait=30s"); done <- got }()
	time.Sleep(100 * time.Millisecond) // let the long poll start waiting before the job is released
	g.open()
	got := <-done
	if el := time.Since(began); got.Status != "succeeded" || el > 10*time.Second {
		t.Fatalf("wait returned %s after %s, want succeeded promptly", got.Status, el)
	}
	if got.Response == nil || got.Response.StatusCode != 200 || got.Usage == nil || got.CostUSD == nil || *got.CostUSD <= 0 ||
		got.Attempts != 1 || got.StartedAt == nil || got.FinishedAt == nil {
		t.Errorf("finished job = %+v, want response, usage and cost", got)
	}
	var answer chatResponse
	if err := json.Unmarshal(got.Response.Body, &answer); err != nil || answer.Choices[0].Message.Content == "" {
		t.Errorf("response body %s: %v", got.Response.Body, err)
	}

	// The list shows it, newest first, with cursor pagination.
	for range 2 {
		s.submit(k.Key, map[string]any{"endpoint": "/v1/embeddings", "body": map[string]any{"model": "m", "input": "x"}})
	}
	resp, b := s.do(http.MethodGet, "/v1/jobs?limit=2", k.Key, nil)
	var page struct {
		Data    []jobObj `json:"data"`
		HasMore bool     `json:"has_more"`
		LastID  string   `json:"last_id"`
	}
	if err := json.Unmarshal(b, &page); err != nil || resp.StatusCode != 200 || len(page.Data) != 2 || !page.HasMore {
		t.Fatalf("list = %d %s", resp.StatusCode, b)
	}
	_, b = s.do(http.MethodGet, "/v1/jobs?limit=2&after="+page.LastID, k.Key, nil)
	if err := json.Unmarshal(b, &page); err != nil || len(page.Data) != 1 || page.Data[0].ID != j.ID || page.HasMore {
		t.Errorf("second page = %s, want just the first job", b)
	}
	_, b = s.do(http.MethodGet, "/v1/jobs?status=succeeded", other.Key, nil)
	if err := json.Unmarshal(b, &page); err != nil || len(page.Data) != 0 {
		t.Errorf("another key's list = %s, want empty", b)
	}
}

func TestCancelQueuedAndRunning(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{concurrency: 1})
	up, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"hang"},
		"model_map": map[string]string{"hang": "m:hang"}})
	s.price("hang", 1, 1)
	k := s.newKey(nil)
	sub := map[string]any{"endpoint": "/v1/chat/completions", "body": chatBody("hang", "wait")}
	_, running := s.submit(k.Key, sub)
	eventually(t, 10*time.Second, "first job running", func() bool { _, j := s.job(k.Key, running.ID, ""); return j.Status == "running" })
	// The only slot is busy, so the second job stays queued.
	_, queued := s.submit(k.Key, sub)
	resp, b := s.do(http.MethodPost, "/v1/jobs/"+queued.ID+"/cancel", k.Key, nil)
	var j jobObj
	_ = json.Unmarshal(b, &j)
	if resp.StatusCode != 200 || j.Status != "canceled" {
		t.Fatalf("cancel queued = %d %s, want canceled at once", resp.StatusCode, b)
	}
	resp, _ = s.do(http.MethodPost, "/v1/jobs/"+running.ID+"/cancel", k.Key, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("cancel running = %d", resp.StatusCode)
	}
	eventually(t, 5*time.Second, "running job canceled", func() bool { _, j := s.job(k.Key, running.ID, ""); return j.Status == "canceled" })
	eventually(t, 5*time.Second, "upstream call aborted", func() bool { return up.Stats().OpenConns == 0 })
	// The slot is free again, so the canceled queued job would have been taken by now if it
	// could run: wait for the queue to drain, then check it never reached the upstream.
	eventually(t, 10*time.Second, "queue drained", func() bool { return metric(t, s.ops, "sluice_worker_busy_slots") == 0 })
	if n := up.Stats().Requests[providertest.ModeHang]; n != 1 {
		t.Errorf("upstream calls = %d, want 1 (the queued job never runs)", n)
	}
	_, q := s.job(k.Key, queued.ID, "")
	var rows int
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM usage_ledger`).Scan(&rows); err != nil || rows != 0 || q.Status != "canceled" {
		t.Errorf("ledger rows %d, queued job %s; want nothing charged and still canceled", rows, q.Status)
	}
	// Cancel of a finished job returns it unchanged.
	resp, b = s.do(http.MethodPost, "/v1/jobs/"+queued.ID+"/cancel", k.Key, nil)
	_ = json.Unmarshal(b, &j)
	if resp.StatusCode != 200 || j.Status != "canceled" {
		t.Errorf("second cancel = %d %s", resp.StatusCode, b)
	}
}

func TestIdempotencyKeyRace(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	_, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	k := s.newKey(nil)
	other := s.newKey(nil)
	sub := map[string]any{"endpoint": "/v1/chat/completions", "body": chatBody("m", "once")}
	const n = 8
	var wg sync.WaitGroup
	codes := make([]int, n)
	ids := make([]string, n)
	for i := range n {
		wg.Go(func() {
			codes[i], ids[i] = func() (int, string) { c, j := s.submit(k.Key, sub, "Idempotency-Key", "order-77"); return c, j.ID }()
		})
	}
	wg.Wait()
	accepted := 0
	for i := range n {
		if ids[i] != ids[0] {
			t.Fatalf("racing submissions got jobs %v, want one", ids)
		}
		if codes[i] == http.StatusAccepted {
			accepted++
		} else if codes[i] != http.StatusOK {
			t.Errorf("status %d", codes[i])
		}
	}
	if accepted != 1 {
		t.Errorf("%d submissions answered 202, want exactly 1 (the rest 200)", accepted)
	}
	// The same Idempotency-Key from another API key is another job.
	if _, j := s.submit(other.Key, sub, "Idempotency-Key", "order-77"); j.ID == ids[0] || j.ID == "" {
		t.Errorf("another key's submission got job %q", j.ID)
	}
}

func TestPreferRespondAsync(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	_, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	k := s.newKey(nil)
	resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("m", "later"), "Prefer", "respond-async")
	var j jobObj
	if err := json.Unmarshal(b, &j); err != nil || resp.StatusCode != http.StatusAccepted || j.Status != "queued" ||
		resp.Header.Get("Sluice-Job-Id") != j.ID {
		t.Fatalf("Prefer: respond-async = %d %s", resp.StatusCode, b)
	}
	_, got := s.job(k.Key, j.ID, "?wait=30s")
	if got.Status != "succeeded" {
		t.Errorf("job = %s, want succeeded", got.Status)
	}
}

// TestThousandQueuedJobs: 1000 async jobs on a pool of 8 all succeed, never more than 8
// upstream calls at once, and the ingress holds no goroutine per queued job.
//
// Not parallel: it counts the test process's goroutines, which other tests' stacks would
// change under it. Go runs the sequential tests before it releases the parallel ones.
func TestThousandQueuedJobs(t *testing.T) {
	s := newStack(t, stackOpts{concurrency: 8})
	up, _ := providertest.Start(t, providertest.Config{})
	g, srv := newGate(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond) // hold the slot a moment so overlap is visible
		up.ServeHTTP(w, r)
	}))
	g.open() // never block; only count
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	k := s.newKey(nil)

	// Hold the workers so the jobs stay queued while we count the ingress's goroutines.
	s.stopW()
	runtime.GC()
	before := runtime.NumGoroutine()
	ids := make([]string, 1000)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			code, j := s.submit(k.Key, map[string]any{"endpoint": "/v1/chat/completions",
				"body": chatBody("m", fmt.Sprintf("job %d", i))})
			if code != http.StatusAccepted {
				t.Errorf("submit %d: %d", i, code)
			}
			ids[i] = j.ID
		})
	}
	wg.Wait()
	s.http.CloseIdleConnections()
	var after int
	eventually(t, 5*time.Second, "ingress goroutines settle", func() bool {
		after = runtime.NumGoroutine()
		return after-before < 50
	})
	t.Logf("goroutines with 1000 queued jobs: %d before, %d after", before, after)

	// Now let a pool of 8 drain them.
	s.startWorker()
	eventually(t, 120*time.Second, "all 1000 jobs succeeded", func() bool {
		var n int
		_ = s.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM jobs WHERE status = 'succeeded'`).Scan(&n)
		return n == 1000
	})
	if p := g.peak.Load(); p > 8 || p < 2 {
		t.Errorf("peak concurrent upstream calls = %d, want 2..8", p)
	}
	if c := g.calls.Load(); c != 1000 {
		t.Errorf("upstream calls = %d, want 1000", c)
	}
}
