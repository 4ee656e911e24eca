package worker

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluicehq/sluice/pkg/jobs"
	"github.com/sluicehq/sluice/pkg/jobs/jobstest"
)

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// TestQueueGauges_Issue13_2: the worker's sluice_queue_pending and sluice_queue_ack_pending
// follow the jobs consumer (jobs not yet taken, jobs taken and not finished), read on a
// ticker rather than per scrape.
func TestQueueGauges_Issue13_2(t *testing.T) {
	t.Parallel()
	_, nc := jobstest.NewConn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	qcfg := jobs.QueueConfig{AckWait: time.Minute}
	if _, err := jobs.EnsureStream(ctx, js, qcfg); err != nil {
		t.Fatal(err)
	}
	cons, err := jobs.EnsureConsumer(ctx, js, qcfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.EnsureOutcomeStream(ctx, js, qcfg); err != nil {
		t.Fatal(err)
	}
	ocons, err := jobs.EnsureOutcomeConsumer(ctx, js, qcfg)
	if err != nil {
		t.Fatal(err)
	}
	pub := jobs.NewPublisher(nc, js, 5*time.Second)
	for _, id := range []string{"job_q1", "job_q2", "job_q3", "job_q4", "job_q5"} {
		if _, err := pub.Publish(ctx, &jobs.Job{ID: id, KeyID: "key_1", Endpoint: jobs.EndpointEmbeddings, Model: "m",
			Body: []byte(`{}`), CreatedAt: time.Now(), Deadline: time.Now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	// Taken, not acked. Fetch waits for both (FetchNoWait right after the publishes can find
	// the consumer not yet aware of them and return none).
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range batch.Messages() {
		n++
	}
	if n != 2 {
		t.Fatalf("fetched %d jobs, want 2", n)
	}

	g := newQueueGauges(prometheus.NewRegistry())
	wctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { watchQueue(wctx, g, cons, ocons, 20*time.Millisecond, slog.New(slog.DiscardHandler)) })
	defer func() { stop(); wg.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for gaugeValue(t, g.pending) != 3 || gaugeValue(t, g.ackPending) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("sluice_queue_pending %v, sluice_queue_ack_pending %v; want 3 and 2",
				gaugeValue(t, g.pending), gaugeValue(t, g.ackPending))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v := gaugeValue(t, g.outcomesPending); v != 0 {
		t.Errorf("sluice_outcomes_pending %v, want 0", v)
	}
}
