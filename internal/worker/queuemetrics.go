package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// queueWatchEvery is how often the worker reads its consumers' state for the queue gauges:
// an autoscaler's resolution, and one small JetStream request per worker, however often
// /metrics is scraped.
const queueWatchEvery = 5 * time.Second

// queueGauges are the queue's state as JetStream reports it, the same from every worker.
type queueGauges struct {
	pending, ackPending, outcomesPending prometheus.Gauge
}

func newQueueGauges(reg prometheus.Registerer) *queueGauges {
	g := &queueGauges{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_queue_pending",
			Help: "Jobs in the queue no worker has taken yet (the sluice-workers consumer's pending count)."}),
		ackPending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_queue_ack_pending",
			Help: "Jobs taken by workers and not yet finished, across all workers (the consumer's ack-pending count)."}),
		outcomesPending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_outcomes_pending",
			Help: "Job outcomes not yet written to Postgres (the sluice-settlers consumer's pending plus ack-pending)."}),
	}
	if reg != nil {
		reg.MustRegister(g.pending, g.ackPending, g.outcomesPending)
	}
	return g
}

// watchQueue sets g from the jobs consumer's (and, if not nil, the outcomes consumer's)
// info every interval until ctx ends. A failed read leaves the last values.
func watchQueue(ctx context.Context, g *queueGauges, jobs, outcomes jetstream.Consumer, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		read(ctx, jobs, func(i *jetstream.ConsumerInfo) {
			g.pending.Set(float64(i.NumPending))
			g.ackPending.Set(float64(i.NumAckPending))
		}, log)
		if outcomes != nil {
			read(ctx, outcomes, func(i *jetstream.ConsumerInfo) {
				g.outcomesPending.Set(float64(i.NumPending) + float64(i.NumAckPending))
			}, log)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// read fetches c's info, within a few seconds, and passes it to set.
func read(ctx context.Context, c jetstream.Consumer, set func(*jetstream.ConsumerInfo), log *slog.Logger) {
	ictx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	info, err := c.Info(ictx)
	if err != nil {
		if ctx.Err() == nil {
			log.DebugContext(ctx, "queue metrics: consumer info", "err", err)
		}
		return
	}
	set(info)
}
