package worker

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the worker's Prometheus collectors.
type Metrics struct {
	jobs     *prometheus.CounterVec
	upstream *prometheus.HistogramVec
	busy     prometheus.Gauge
	slots    prometheus.Gauge
	// overShare counts jobs returned to the queue because their key held its share of the slots.
	overShare prometheus.Counter
	// deferred counts calls held back because their channel's quota was used up.
	deferred prometheus.Counter
}

// NewMetrics registers the worker's collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_worker_jobs_total", Help: "Jobs finished by this worker, by outcome.",
		}, []string{"status"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_upstream_request_duration_seconds", Help: "Upstream calls by provider and outcome.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900},
		}, []string{"provider", "outcome"}),
		busy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_worker_busy_slots", Help: "Jobs this worker is running now.",
		}),
		slots: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_worker_slots", Help: "WORKER_CONCURRENCY of this worker.",
		}),
		overShare: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_worker_over_share_total",
			Help: "Jobs returned to the queue because their API key held its share (WORKER_KEY_SHARE) of the slots.",
		}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_worker_channel_deferrals_total",
			Help: "Upstream calls held back because their channel's rpm, tpm or max_concurrency (across workers) was used up.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.jobs, m.upstream, m.busy, m.slots, m.overShare, m.deferred)
	}
	return m
}
