package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// ledgerRows are a key's ledger rows: how many, how many cache hits, and the hits' cost.
func (g *govStack) ledgerRows(keyID string) (rows, hits int, hitCost float64) {
	g.t.Helper()
	if err := g.db.Pool.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE cache_hit),
		COALESCE(sum(cost_usd) FILTER (WHERE cache_hit), 0)::float8 FROM usage_ledger WHERE key_id = $1`,
		keyID).Scan(&rows, &hits, &hitCost); err != nil {
		g.t.Fatal(err)
	}
	return rows, hits, hitCost
}

// TestResponseCache_Issue15_5: across two ingresses and two workers, a key with cache_ttl_s
// gets its second identical request (whitespace and member order aside) from the cache:
// the same answer, Sluice-Cache: hit, no upstream call, a ledger row at $0 marked as a hit;
// a stream's hit is replayed as a stream. Another key never sees the first key's entries,
// and Cache-Control: max-age=N opts a single request in.
func TestResponseCache_Issue15_5(t *testing.T) {
	t.Parallel()
	g := newGovStack(t, nil)
	g.channel(map[string]any{"provider": "fake", "base_url": "fake://", "models": []string{"m"}})
	g.price("m", 1, 1)
	k := g.newKey(map[string]any{"name": "cached", "cache_ttl_s": 300})
	other := g.newKey(map[string]any{"name": "other", "cache_ttl_s": 300})
	plain := g.newKey(map[string]any{"name": "plain"})

	send := func(i int, key, body string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		saved := g.base
		g.base = g.bases[i%2]
		defer func() { g.base = saved }()
		return g.do(http.MethodPost, "/v1/chat/completions", key, body, append([]string{"Content-Type", "application/json"}, hdr...)...)
	}
	whole := `{"model":"m","messages":[{"role":"user","content":"cache me"}]}`
	reordered := `{ "messages": [ {"content": "cache me", "role": "user"} ], "model": "m" }`
	res1, b1 := send(0, k.Key, whole)
	if res1.StatusCode != http.StatusOK || res1.Header.Get("Sluice-Cache") != "miss" {
		t.Fatalf("first call: %d %q %s", res1.StatusCode, res1.Header.Get("Sluice-Cache"), b1)
	}
	res2, b2 := send(1, k.Key, reordered)
	if res2.StatusCode != http.StatusOK || res2.Header.Get("Sluice-Cache") != "hit" || string(b2) != string(b1) {
		t.Fatalf("second call on the other ingress: %d %q %s; want a hit with %s", res2.StatusCode,
			res2.Header.Get("Sluice-Cache"), b2, b1)
	}
	// Streams are cached apart, and replayed as a stream.
	stream := `{"model":"m","stream":true,"messages":[{"role":"user","content":"cache me"}]}`
	res3, s1 := send(1, k.Key, stream)
	res4, s2 := send(0, k.Key, stream)
	if res3.Header.Get("Sluice-Cache") != "miss" || res4.Header.Get("Sluice-Cache") != "hit" ||
		res4.Header.Get("Content-Type") != "text/event-stream" || string(s1) != string(s2) {
		t.Fatalf("stream: %q then %q (%s), bodies\n%s\n%s", res3.Header.Get("Sluice-Cache"), res4.Header.Get("Sluice-Cache"),
			res4.Header.Get("Content-Type"), s1, s2)
	}
	// Another key, same request: a miss.
	if res, b := send(0, other.Key, whole); res.Header.Get("Sluice-Cache") != "miss" || res.StatusCode != http.StatusOK {
		t.Fatalf("another key's identical request: %d %q %s", res.StatusCode, res.Header.Get("Sluice-Cache"), b)
	}
	// A key without cache_ttl_s opts in per request; no-cache skips the cache.
	if res, _ := send(0, plain.Key, whole); res.Header.Get("Sluice-Cache") != "" {
		t.Errorf("an uncached key's answer says Sluice-Cache %q", res.Header.Get("Sluice-Cache"))
	}
	if res, _ := send(0, plain.Key, whole, "Cache-Control", "max-age=60"); res.Header.Get("Sluice-Cache") != "miss" {
		t.Errorf("max-age=60 first: %q", res.Header.Get("Sluice-Cache"))
	}
	if res, _ := send(1, plain.Key, whole, "Cache-Control", "max-age=60"); res.Header.Get("Sluice-Cache") != "hit" {
		t.Errorf("max-age=60 second: %q", res.Header.Get("Sluice-Cache"))
	}
	if res, _ := send(1, k.Key, whole, "Cache-Control", "no-cache"); res.Header.Get("Sluice-Cache") != "" {
		t.Errorf("no-cache: %q", res.Header.Get("Sluice-Cache"))
	}
	// The ledger: k has 2 misses (upstream, charged), 2 hits at $0, and the no-cache call.
	eventually(t, 30*time.Second, "the ledger rows", func() bool {
		rows, hits, _ := g.ledgerRows(k.ID)
		return rows == 5 && hits == 2
	})
	if _, _, cost := g.ledgerRows(k.ID); cost != 0 {
		t.Errorf("cache hits cost %v, want 0", cost)
	}
	var upstreamCalls int
	if err := g.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM usage_ledger
		WHERE key_id = $1 AND channel_id IS NOT NULL AND NOT cache_hit`, k.ID).Scan(&upstreamCalls); err != nil {
		t.Fatal(err)
	}
	if upstreamCalls != 3 {
		t.Errorf("%d upstream calls for k, want 3 (two misses and no-cache)", upstreamCalls)
	}
}
