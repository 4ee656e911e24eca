package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/sluicehq/sluice/internal/worker"
)

// govStack is a stack of two ingresses and two workers (each run in-process, as its own
// process would be: nothing is shared between them but Postgres and NATS), serving the fake
// model "m". bases are the ingresses' URLs.
type govStack struct {
	*stack
	bases [2]string
}

// newGovStack starts the stack; every process reads the time from clock, and the
// ingresses cache no keys (so a test sees each settled charge at the next request).
func newGovStack(t *testing.T, clock *testClock) *govStack {
	t.Helper()
	tune := func(*worker.PoolConfig) {}
	if clock != nil {
		tune = func(c *worker.PoolConfig) { c.Now = clock.Now }
	}
	s := newStack(t, stackOpts{noWorker: true, tune: tune})
	s.startWorker()
	s.startWorker()
	g := &govStack{stack: s}
	s.icfg.KeyCacheTTL = 0
	s.icfg.CacheMaxBytes, s.icfg.CacheMaxTTL, s.icfg.CacheMaxEntryBytes = 16<<20, time.Hour, 256<<10
	if clock != nil {
		s.clock = clock.Now
	}
	g.bases[0], _ = s.startIngress()
	g.bases[1], _ = s.startIngress()
	return g
}

// testClock is the real time moved forward by an offset the test sets.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *testClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// TestBudgetPeriod_Issue15_2: a key's daily budget restarts at the next UTC day (the clock
// of every process is moved, nothing sleeps), its lifetime spend stays visible, and the
// admin API shows the current period's spend.
func TestBudgetPeriod_Issue15_2(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	g := newGovStack(t, clock)
	g.channel(map[string]any{"provider": "fake", "base_url": "fake://", "models": []string{"m"}})
	g.price("m", 1000, 1000) // $0.001 a token: one call spends the budget
	k := g.newKey(map[string]any{"name": "daily", "budget_usd": 0.01, "budget_period": "daily"})
	if res, b := g.chat(0, k.Key, "spend it"); res.StatusCode != http.StatusOK {
		t.Fatalf("first call: %d %s", res.StatusCode, b)
	}
	var obj map[string]any
	eventually(t, 30*time.Second, "the charge settled", func() bool {
		obj = nil
		g.admin(http.MethodGet, "/admin/v1/keys/"+k.ID, nil, &obj)
		return obj["period_spent_usd"].(float64) > 0 && obj["spent_usd"].(float64) > 0 // read apart
	})
	if obj["budget_period"] != "daily" || obj["spent_usd"] != obj["period_spent_usd"] || obj["period_start"] == nil {
		t.Errorf("key object %v", obj)
	}
	for i := range 2 {
		res, b := g.chat(i, k.Key, "again")
		if _, code, _ := apiErr(t, b); res.StatusCode != http.StatusTooManyRequests || code != "insufficient_quota" {
			t.Fatalf("over budget on ingress %d: %d %s", i, res.StatusCode, b)
		}
	}
	clock.advance(24 * time.Hour) // the next UTC day: a new period
	for i := range 2 {
		if res, b := g.chat(i, k.Key, "a new day"); res.StatusCode != http.StatusOK {
			t.Fatalf("after the rollover, ingress %d: %d %s", i, res.StatusCode, b)
		}
	}
	obj = nil
	g.admin(http.MethodGet, "/admin/v1/keys/"+k.ID, nil, &obj)
	if lifetime := obj["spent_usd"].(float64); lifetime <= 0.01 && obj["period_spent_usd"].(float64) >= lifetime {
		t.Errorf("after the rollover: %v; want the lifetime spend above this period's", obj)
	}
}

// channel adds a channel and waits until both ingresses serve its models (the admin change
// reaches the other ingress by a NATS announcement).
func (g *govStack) channel(body map[string]any) string {
	g.t.Helper()
	id := g.stack.channel(body)
	k := g.newKey(map[string]any{"name": "models-probe"})
	for _, base := range g.bases {
		eventually(g.t, 30*time.Second, "the channel's models on "+base, func() bool {
			saved := g.base
			g.base = base
			defer func() { g.base = saved }()
			res, b := g.do(http.MethodGet, "/v1/models", k.Key, nil)
			for _, m := range body["models"].([]string) {
				if res.StatusCode != http.StatusOK || !strings.Contains(string(b), `"`+m+`"`) {
					return false
				}
			}
			return true
		})
	}
	return id
}

// chat sends a chat completion to ingress i (mod 2).
func (g *govStack) chat(i int, key, text string, hdr ...string) (*http.Response, []byte) {
	g.t.Helper()
	saved := g.base
	g.base = g.bases[i%2]
	defer func() { g.base = saved }()
	return g.do(http.MethodPost, "/v1/chat/completions", key, chatBody("m", text), hdr...)
}

// windowTokens is what the key's current rate windows hold, in tokens.
func (g *govStack) windowTokens(subject string) int64 {
	g.t.Helper()
	var n int64
	if err := g.db.Pool.QueryRow(context.Background(),
		`SELECT COALESCE(sum(tokens), 0) FROM rate_windows WHERE subject = $1`, subject).Scan(&n); err != nil {
		g.t.Fatal(err)
	}
	return n
}

// usageOf is the total tokens of a chat completion's usage.
func usageOf(t *testing.T, b []byte) int64 {
	t.Helper()
	var v struct {
		Usage struct {
			Total int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.Usage.Total == 0 {
		t.Fatalf("no usage in %s", b)
	}
	return v.Usage.Total
}

// TestKeyTPM_Issue15_1: a key's tokens-per-minute limit holds across two ingresses and two
// workers: admission counts an estimate from the request's bytes, settlement replaces it
// with the reported usage, and a request over the limit is a 429 rate_limit_exceeded with
// Retry-After and the x-ratelimit-* headers.
func TestKeyTPM_Issue15_1(t *testing.T) {
	t.Parallel()
	g := newGovStack(t, nil)
	g.channel(map[string]any{"provider": "fake", "base_url": "fake://", "models": []string{"m"}})
	const tpm = 400
	k := g.newKey(map[string]any{"name": "tpm", "tpm": tpm, "rpm": 1000})
	start := time.Now()
	var admitted, used int64
	refused := false
	for i := range 100 {
		res, b := g.chat(i, k.Key, "please count these words for the limit, all of them")
		if res.StatusCode == http.StatusTooManyRequests {
			if _, code, _ := apiErr(t, b); code != "rate_limit_exceeded" {
				t.Fatalf("429 code %q: %s", code, b)
			}
			if ra, err := strconv.Atoi(res.Header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("Retry-After %q on a 429", res.Header.Get("Retry-After"))
			}
			if res.Header.Get("X-Ratelimit-Remaining-Tokens") == "" || res.Header.Get("X-Ratelimit-Limit-Tokens") != "400" {
				t.Errorf("x-ratelimit headers on the 429: %v", res.Header)
			}
			refused = true
			break
		}
		if res.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, res.StatusCode, b)
		}
		if got := res.Header.Get("X-Ratelimit-Limit-Tokens"); got != "400" {
			t.Errorf("X-Ratelimit-Limit-Tokens %q, want 400", got)
		}
		admitted++
		used += usageOf(t, b)
		// Wait for the settlement to correct the window, so the next admission sees it.
		eventually(t, 30*time.Second, "settlement of the window", func() bool { return g.windowTokens(k.ID) == used })
	}
	if !refused {
		t.Fatalf("no 429 after %d requests of a key with tpm %d", admitted, tpm)
	}
	// The window slides: in the test's time at most tpm per minute plus one request's worth.
	allow := int64(float64(tpm)*(1+time.Since(start).Minutes())) + 30
	if used > allow || used < tpm/2 {
		t.Errorf("admitted %d requests using %d tokens; tpm %d", admitted, used, tpm)
	}
	t.Logf("admitted %d requests, %d tokens, before the 429", admitted, used)
}

// TestRateLimitHeadersOpenAISDK_Issue15_1: the official openai-go/v3 client reads the
// x-ratelimit-* headers from the raw response.
func TestRateLimitHeadersOpenAISDK_Issue15_1(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	s.channel(map[string]any{"provider": "fake", "base_url": "fake://", "models": []string{"m"}})
	k := s.newKey(map[string]any{"name": "hdr", "tpm": 10000, "rpm": 50})
	client := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(k.Key), option.WithMaxRetries(0))
	for i := range 2 {
		var raw *http.Response
		_, err := client.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{Model: "m",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		h := raw.Header
		if h.Get("x-ratelimit-limit-requests") != "50" || h.Get("x-ratelimit-remaining-requests") != fmt.Sprint(49-i) {
			t.Errorf("call %d: requests limit %q remaining %q, want 50 and %d", i, h.Get("x-ratelimit-limit-requests"),
				h.Get("x-ratelimit-remaining-requests"), 49-i)
		}
		if h.Get("x-ratelimit-limit-tokens") != "10000" {
			t.Errorf("call %d: tokens limit %q", i, h.Get("x-ratelimit-limit-tokens"))
		}
		rem, err := strconv.Atoi(h.Get("x-ratelimit-remaining-tokens"))
		if err != nil || rem >= 10000 || rem < 9000 {
			t.Errorf("call %d: remaining tokens %q", i, h.Get("x-ratelimit-remaining-tokens"))
		}
		for _, name := range []string{"x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"} {
			if d, err := time.ParseDuration(h.Get(name)); err != nil || d <= 0 || d > time.Minute {
				t.Errorf("call %d: %s %q", i, name, h.Get(name))
			}
		}
	}
	// Over the limit the SDK sees a 429 with the headers and Retry-After.
	k2 := s.newKey(map[string]any{"name": "tight", "rpm": 1})
	c2 := openai.NewClient(option.WithBaseURL(s.base+"/v1"), option.WithAPIKey(k2.Key), option.WithMaxRetries(0))
	params := openai.ChatCompletionNewParams{Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	if _, err := c2.Chat.Completions.New(t.Context(), params); err != nil {
		t.Fatal(err)
	}
	var raw *http.Response
	_, err := c2.Chat.Completions.New(t.Context(), params, option.WithResponseInto(&raw))
	var apiErr *openai.Error
	if !asError(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second call of an rpm-1 key: %v", err)
	}
	if raw.Header.Get("x-ratelimit-remaining-requests") != "0" || raw.Header.Get("retry-after") == "" {
		t.Errorf("429 headers: %v", raw.Header)
	}
}
