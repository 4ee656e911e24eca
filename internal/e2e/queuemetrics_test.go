package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/providers/providertest"
)

// TestQueueMetricsExported_Issue13_2: a running worker exports the queue gauges an
// autoscaler reads (sluice_queue_pending, sluice_queue_ack_pending) beside its slots, and
// the ingress the publish-ack latency histogram, one observation per accepted job.
func TestQueueMetricsExported_Issue13_2(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOpts{})
	_, srv := providertest.Start(t, providertest.Config{})
	s.channel(map[string]any{"provider": "openai", "base_url": srv.URL + "/v1", "models": []string{"m"}})
	s.price("m", 1, 2)
	key := s.newKey(nil)
	c := &http.Client{Timeout: 20 * time.Second}
	for i, kind := range []string{"sync", "async", "sync"} {
		if r := loadRequest(c, s.base, key.Key, kind, i); r.err != nil || (r.code != http.StatusOK && r.code != http.StatusAccepted) {
			t.Fatalf("%s request: %d %s %v", kind, r.code, r.body, r.err)
		}
	}
	if n := metric(t, s.base, `sluice_ingress_publish_ack_seconds_count{result="ok"}`); n < 3 {
		t.Errorf("sluice_ingress_publish_ack_seconds_count{result=\"ok\"} = %v, want at least 3", n)
	}
	eventually(t, 20*time.Second, "the queue gauges to show an empty queue", func() bool {
		return metric(t, s.ops, "sluice_queue_pending") == 0 && metric(t, s.ops, "sluice_queue_ack_pending") == 0
	})
	if metric(t, s.ops, "sluice_worker_slots") != float64(s.wcfg.Concurrency) {
		t.Errorf("sluice_worker_slots = %v, want %d", metric(t, s.ops, "sluice_worker_slots"), s.wcfg.Concurrency)
	}
	_ = metric(t, s.ops, "sluice_worker_busy_slots")
	_ = metric(t, s.ops, "sluice_outcomes_pending")
}
