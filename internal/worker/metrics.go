package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/pkg/providers"
	"github.com/sluicehq/sluice/pkg/route"
	"github.com/sluicehq/sluice/pkg/webhook"
)

// Metrics are the worker's Prometheus collectors. Every label takes values from a fixed
// set or from configuration (channel ids, configured model names, key ids behind
// METRICS_PER_KEY), never from what a client sent.
type Metrics struct {
	jobs     *prometheus.CounterVec
	upstream *prometheus.HistogramVec
	// attempts counts upstream calls by channel and attemptOutcome.
	attempts *prometheus.CounterVec
	busy     prometheus.Gauge
	slots    prometheus.Gauge
	// overShare counts jobs returned to the queue because their key held its share of the slots.
	overShare prometheus.Counter
	// deferred counts calls held back because their channel's quota was used up.
	deferred prometheus.Counter
	// webhooks counts webhook delivery attempts by outcome.
	webhooks *prometheus.CounterVec
	// usage counts charged tokens and cost, once per settled job.
	usage *usageMetrics
}

// MetricsOptions shape the worker's metrics.
type MetricsOptions struct {
	// PerKey adds the per-API-key usage counters (METRICS_PER_KEY): a series per key.
	PerKey bool
	// KnownModelFunc says whether a model name is configured (some channel serves it); the
	// usage counters label any other name "other". Nil: every name is "other".
	KnownModelFunc func(model string) bool
}

// NewMetrics registers the worker's collectors on reg (none if reg is nil).
func NewMetrics(reg prometheus.Registerer, opts MetricsOptions) *Metrics {
	m := &Metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_worker_jobs_total", Help: "Jobs finished by this worker, by outcome.",
		}, []string{"status"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_upstream_request_duration_seconds", Help: "Upstream calls by provider and outcome.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900},
		}, []string{"provider", "outcome"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_upstream_attempts_total",
			Help: "Upstream calls by channel and outcome (ok, 429, 4xx, 5xx, first_byte, idle, timeout, canceled, reset, refused, bad_response, error).",
		}, []string{"channel_id", "outcome"}),
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
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_webhook_deliveries_total",
			Help: "Webhook delivery attempts by outcome: delivered (2xx), retrying (failed, another attempt scheduled), abandoned (given up).",
		}, []string{"outcome"}),
		usage: newUsageMetrics(opts),
	}
	for _, o := range webhook.Outcomes { // a fixed set: each series exists from the start, at 0
		m.webhooks.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.jobs, m.upstream, m.attempts, m.busy, m.slots, m.overShare, m.deferred, m.webhooks)
		m.usage.register(reg)
	}
	return m
}

// webhookAttempt counts one webhook delivery attempt (webhook.DispatcherConfig.AttemptFunc).
func (m *Metrics) webhookAttempt(outcome string) { m.webhooks.WithLabelValues(outcome).Inc() }

// attemptOutcome is the sluice_upstream_attempts_total outcome of one upstream call that
// returned err under ctx: a fixed set of names.
func attemptOutcome(ctx context.Context, err error) string {
	if err == nil {
		return "ok"
	}
	if ctx.Err() != nil { // the job ended under the call: its deadline, or a cancel or shutdown
		if errors.Is(context.Cause(ctx), ErrJobTimeout) {
			return "timeout"
		}
		return "canceled"
	}
	perr, _ := errors.AsType[*providers.Error](err)
	var ne net.Error
	switch {
	case perr != nil && perr.StatusCode == http.StatusTooManyRequests:
		return "429"
	case perr != nil && perr.StatusCode != 0:
		return fmt.Sprintf("%dxx", min(perr.StatusCode/100, 5))
	case errors.Is(err, providers.ErrFirstByte):
		return "first_byte"
	case errors.Is(err, providers.ErrIdle):
		return "idle"
	case errors.Is(err, providers.ErrBadResponse), errors.Is(err, providers.ErrTooLarge):
		return "bad_response"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, providers.ErrTruncated),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "reset"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		return "error"
	}
}

// circuitCollector reports each routed channel's circuit state, read from the router at
// each scrape (so a channel removed from the configuration drops out).
type circuitCollector struct {
	router *route.Router
	desc   *prometheus.Desc
}

func newCircuitCollector(r *route.Router) *circuitCollector {
	return &circuitCollector{router: r, desc: prometheus.NewDesc("sluice_upstream_circuit_state",
		"Circuit breaker state of each enabled channel in this worker: 0 closed, 1 half-open (the next call is a trial), 2 open.",
		[]string{"channel_id"}, nil)}
}

// circuitValue is the gauge's value for a route.Circuit state: a cooling channel (a
// Retry-After, a quota used up) has a closed circuit.
func circuitValue(state string) float64 {
	switch state {
	case route.CircuitHalfOpen:
		return 1
	case route.CircuitOpen:
		return 2
	default:
		return 0
	}
}

// Describe implements prometheus.Collector.
func (c *circuitCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *circuitCollector) Collect(ch chan<- prometheus.Metric) {
	states := map[string]string{} // Circuits lists only channels that failed or are held back
	for _, cc := range c.router.Circuits() {
		states[cc.ChannelID] = cc.State
	}
	for _, id := range c.router.ChannelIDs() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, circuitValue(states[id]), id)
	}
}

// goroutineBound is the most goroutines a worker of cfg runs (README, "How it holds its
// bounds"): 5 per slot, interactive and batch (a pool goroutine, and two upstream
// connections, busy and idle, of two transport goroutines each), plus 64 for NATS,
// Postgres, the fetch loops, heartbeats, the router, the sweeper, the ops server, the
// default 8 webhook senders and one settler; the batch runner's 2, and senders and
// settlers configured beyond those defaults, are added.
func goroutineBound(cfg Config) int {
	batch := max(1, int(math.Floor(cfg.BatchShare*float64(cfg.Concurrency))))
	return 5*(cfg.Concurrency+batch) + 64 + 2 + max(cfg.WebhookConcurrency-8, 0) + max(cfg.Settlers-1, 0)
}

// goroutineBoundGauge is sluice_goroutines_bound at n, for alerts that compare go_goroutines.
func goroutineBoundGauge(n int) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_goroutines_bound",
		Help: "The most goroutines this process is built to run with its settings (README, How it holds its bounds); compare go_goroutines."})
	g.Set(float64(n))
	return g
}
