package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// TestHangingChannelTripsItsCircuit_Issue9_0: a channel whose calls never begin to answer
// fails each within UPSTREAM_FIRST_BYTE_TIMEOUT, and after three in a row its circuit opens as
// for a 5xx: the jobs fail over to the healthy channel and the hanging one stops being called.
func TestHangingChannelTripsItsCircuit_Issue9_0(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{noWorker: true})
	s.wcfg.FirstByteTimeout = 300 * time.Millisecond
	_, stop := s.startWorker()
	defer stop()
	hangUp, hangSrv := providertest.Start(t, providertest.Config{Mix: "hang=1"})
	okUp, okSrv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"name": "hangs", "provider": "openai", "base_url": hangSrv.URL + "/v1", "models": []string{"m"}})
	s.channel(map[string]any{"name": "works", "provider": "openai", "base_url": okSrv.URL + "/v1", "models": []string{"m"}})
	k := s.newKey(nil)
	const n = 24
	for i := range n {
		if resp, b := s.do(http.MethodPost, "/v1/chat/completions", k.Key, chatBody("m", "hi")); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %s, want 200 from the healthy channel", i, resp.StatusCode, b)
		}
	}
	hung := hangUp.Stats().Requests[providertest.ModeHang]
	t.Logf("%d requests: hanging channel called %d times, healthy %d", n, hung, okUp.Stats().Succeeded)
	// Three failures open the circuit for 1 s, then 2 s, …: a few probes at most in this run,
	// against about half of n if hangs did not count.
	if hung > 5 {
		t.Errorf("the hanging channel was called %d times in %d requests, want its circuit open after 3", hung, n)
	}
	if okUp.Stats().Succeeded != n {
		t.Errorf("healthy channel answered %d, want %d", okUp.Stats().Succeeded, n)
	}
}
