package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// statusUpstream answers every request with one status, counting calls.
func statusUpstream(t *testing.T, status int, retryAfter string) (*atomic.Int64, *httptest.Server) {
	t.Helper()
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, `{"error":{"message":"status %d from the test upstream","type":"server_error"}}`, status)
	}))
	t.Cleanup(srv.Close)
	return &calls, srv
}

func TestFailoverAndCooldown(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	good, goodSrv := providertest.Start(t, providertest.Config{})
	bad503, srv503 := statusUpstream(t, http.StatusServiceUnavailable, "")
	limited, srv429 := statusUpstream(t, http.StatusTooManyRequests, "30")
	s.channel(map[string]any{"name": "a-503", "provider": "openai", "base_url": srv503.URL, "models": []string{"m"}, "priority": 10})
	s.channel(map[string]any{"name": "b-ok", "provider": "openai", "base_url": goodSrv.URL + "/v1", "models": []string{"m", "n"}})
	s.channel(map[string]any{"name": "c-429", "provider": "openai", "base_url": srv429.URL, "models": []string{"n"}, "priority": 10})
	s.price("m", 1, 1)
	k := s.newKey(nil)

	// A answers 503, B answers 200: the caller gets B's answer, charged once.
	resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("m", "fail over"))
	want, _, _ := fakeAnswer("fail over")
	if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
		t.Fatalf("failover = %d %s", resp.StatusCode, b)
	}
	if bad503.Load() != 1 || good.Stats().Succeeded != 1 {
		t.Errorf("calls: A %d, B %d; want 1 and 1", bad503.Load(), good.Stats().Succeeded)
	}
	s.settled()
	var rows int
	if err := s.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM usage_ledger`).Scan(&rows); err != nil || rows != 1 {
		t.Errorf("ledger rows = %d, want 1", rows)
	}

	// C answers 429 with Retry-After: 30: it is not called again for 30 s.
	for i := range 10 {
		resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("n", fmt.Sprint("call ", i)))
		if resp.StatusCode != 200 {
			t.Fatalf("call %d = %d %s", i, resp.StatusCode, b)
		}
	}
	if n := limited.Load(); n != 1 {
		t.Errorf("the 429 channel was called %d times in 10 requests, want 1 (then cooling for 30s)", n)
	}
}

func TestChannelWithRejectedKeyIsDisabled(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	_, goodSrv := providertest.Start(t, providertest.Config{})
	calls, srv401 := statusUpstream(t, http.StatusUnauthorized, "")
	bad := s.channel(map[string]any{"name": "bad-key", "provider": "openai", "base_url": srv401.URL, "api_key": "sk-revoked-0000",
		"models": []string{"m"}, "priority": 10})
	s.channel(map[string]any{"name": "ok", "provider": "openai", "base_url": goodSrv.URL + "/v1", "models": []string{"m"}})
	k := s.newKey(nil)
	for range 3 {
		if resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("m", "hi")); resp.StatusCode != 200 {
			t.Fatalf("status %d %s, want the caller served by the other channel", resp.StatusCode, b)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("rejected channel called %d times, want 1", calls.Load())
	}
	var ch struct {
		Enabled        bool   `json:"enabled"`
		DisabledReason string `json:"disabled_reason"`
		APIKey         string `json:"api_key"`
	}
	s.admin(http.MethodGet, "/admin/v1/channels/"+bad, nil, &ch)
	if ch.Enabled || !strings.Contains(ch.DisabledReason, "rejected") || strings.Contains(ch.APIKey, "revoked-0000") {
		t.Errorf("channel = %+v, want disabled with a reason and a masked key", ch)
	}
}

// TestKeyLimitsAcrossIngresses: rpm and max_concurrency hold across two ingress processes.
func TestKeyLimitsAcrossIngresses(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{concurrency: 16})
	second, _ := s.startIngress()
	up, _ := providertest.Start(t, providertest.Config{})
	g, srv := newGate(t, up)
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	bases := []string{s.base, second}

	t.Run("rpm", func(t *testing.T) {
		k := s.newKey(map[string]any{"name": "rpm", "rpm": 60})
		s.routes(second, k.Key, "m")
		g.open()
		var ok, limited atomic.Int64
		var wg sync.WaitGroup
		for i := range 100 {
			wg.Go(func() {
				code, hdr := postTo(t, bases[i%2], k.Key, chatBody("m", "count me"))
				switch {
				case code == 200:
					ok.Add(1)
				case code == 429 && hdr.Get("Retry-After") != "":
					limited.Add(1)
				default:
					t.Errorf("status %d", code)
				}
			})
		}
		wg.Wait()
		// All 100 arrive within a second or two: 60 fit (±1 if they straddle a minute
		// boundary, where the sliding window's rounding can give one either way).
		if n := ok.Load(); n < 59 || n > 61 || n+limited.Load() != 100 {
			t.Errorf("rpm 60: %d served, %d limited; want about 60 and the rest limited", n, limited.Load())
		}
	})
}

func TestMaxConcurrencyAcrossIngresses(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{concurrency: 16})
	second, _ := s.startIngress()
	up, _ := providertest.Start(t, providertest.Config{})
	g, srv := newGate(t, up)
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	bases := []string{s.base, second}
	k := s.newKey(map[string]any{"name": "conc", "max_concurrency": 2})
	s.routes(second, k.Key, "m")
	var wg sync.WaitGroup
	codes := make([]atomic.Int64, 8)
	for i := range codes {
		wg.Go(func() {
			code, _ := postTo(t, bases[i%2], k.Key, chatBody("m", "hold"))
			codes[i].Store(int64(code))
		})
	}
	eventually(t, 10*time.Second, "two jobs held upstream", func() bool { return g.inflight.Load() == 2 })
	// The other six were refused at once; none is waiting for a slot.
	eventually(t, 10*time.Second, "six refused", func() bool {
		n := 0
		for i := range codes {
			if codes[i].Load() == 429 {
				n++
			}
		}
		return n == 6
	})
	g.open()
	wg.Wait()
	served := 0
	for i := range codes {
		if codes[i].Load() == 200 {
			served++
		}
	}
	if served != 2 || g.peak.Load() != 2 {
		t.Errorf("served %d, peak upstream %d; want 2 and 2", served, g.peak.Load())
	}
	// Slots are freed when jobs end: the key can run two more.
	for i := range 2 {
		if code, _ := postTo(t, bases[i], k.Key, chatBody("m", "again")); code != 200 {
			t.Errorf("after the first jobs ended: %d, want 200", code)
		}
	}
}

func postTo(t *testing.T, base, key string, body any) (int, http.Header) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(string(b)))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("post: %v", err)
		return 0, nil
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header
}
