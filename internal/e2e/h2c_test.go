package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// TestH2C: with INGRESS_H2C a client may speak HTTP/2 without TLS to the ingress, and with
// UPSTREAM_H2C the worker speaks it to an http:// upstream, so concurrent calls share one
// upstream connection instead of one each.
func TestH2C(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{h2c: true, concurrency: 16})
	up, err := providertest.New(providertest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var h1, h2 atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 {
			h2.Add(1)
		} else {
			h1.Add(1)
		}
		up.ServeHTTP(w, r)
	}))
	srv.Config.ConnState = up.ConnState
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(func() { up.Close(); srv.Close() })
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "api_key": "sk-up",
		"models": []string{"gpt-4o-mini"}})
	k := s.newKey(nil)

	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: tr}
	t.Cleanup(client.CloseIdleConnections)
	const calls = 16
	errs := make(chan string, calls+1)
	call := func() {
		b, _ := json.Marshal(chatBody("gpt-4o-mini", "over one connection"))
		req, _ := http.NewRequest(http.MethodPost, s.base+"/v1/chat/completions", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+k.Key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			errs <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		var got chatResponse
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || json.Unmarshal(body, &got) != nil ||
			len(got.Choices) != 1 {
			errs <- resp.Proto + " " + resp.Status + " " + string(body)
		}
	}
	// One call first: concurrent first calls each dial, before any connection exists to share.
	call()
	var wg sync.WaitGroup
	for range calls - 1 {
		wg.Go(call)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("call through h2c: %s", e)
	}
	if h2.Load() != calls || h1.Load() != 0 {
		t.Errorf("upstream saw %d HTTP/2 and %d HTTP/1 requests, want %d and 0", h2.Load(), h1.Load(), calls)
	}
	if n := up.Stats().TotalConns; n > 2 {
		t.Errorf("%d upstream connections for %d calls, want 1 (2 at most)", n, calls)
	}
}
